//! The Connect querier API (`/querier.v1.QuerierService/*`) on bad input: malformed bodies are
//! `invalid_argument`, an unknown profile type is an empty answer, and `max_nodes` above
//! `server.max_nodes` is clamped and said. Grafana's own client is tested in
//! compat/grafana-client.

mod common;

use common::{agent, enc, multipart, testdata, Daemon};
use serde_json::{json, Value};

const SMS: &str = "/querier.v1.QuerierService/SelectMergeStacktraces";

fn post(
    d: &Daemon,
    method: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Option<String>, Vec<u8>) {
    let mut r = agent()
        .post(format!("{}{method}", d.url))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let clamped = r
        .headers()
        .get("kiln-max-nodes-clamped")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        clamped,
        r.body_mut().read_to_vec().unwrap(),
    )
}

fn post_json(d: &Daemon, method: &str, body: &Value) -> (u16, Option<String>, Value) {
    let (status, clamped, bytes) = post(d, method, "application/json", body.to_string().as_bytes());
    (status, clamped, serde_json::from_slice(&bytes).unwrap())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn assert_invalid(status: u16, body: &[u8], what: &str) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("{what}: not JSON"));
    assert_eq!(status, 400, "{what}: {v}");
    assert_eq!(v["code"], "invalid_argument", "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

#[test]
fn bad_input_unknown_types_and_max_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let now = now_ms() / 1000;
    let (body, ct) = multipart(&std::fs::read(testdata("go-cpu.pb.gz")).unwrap(), None);
    let (status, text) = d.ingest(
        &format!(
            "name={}&from={}&until={}",
            enc("querier-app.cpu{env=ci}"),
            now - 10,
            now
        ),
        &ct,
        &body,
    );
    assert_eq!(status, 200, "{text}");
    let (start, end) = (now_ms() - 3_600_000, now_ms() + 60_000);

    // Malformed bodies: protobuf, JSON, and well-formed messages that make no sense.
    let (status, _, body) = post(&d, SMS, "application/proto", b"\xff\xff\xff\xff");
    assert_invalid(status, &body, "garbage protobuf");
    let (status, _, body) = post(&d, SMS, "application/json", b"{\"start\": [");
    assert_invalid(status, &body, "truncated JSON");
    let (status, _, body) = post(&d, SMS, "application/json", b"{\"start\": \"soon\"}");
    assert_invalid(status, &body, "a non-integer int64");
    let (status, _, v) = post_json(
        &d,
        SMS,
        &json!({"labelSelector": "{}", "start": start.to_string(), "end": end.to_string()}),
    );
    assert_invalid(status, v.to_string().as_bytes(), "no profile type");
    let (status, _, v) = post_json(
        &d,
        SMS,
        &json!({"profileTypeID": "process_cpu:samples:count:cpu:nanoseconds",
                "labelSelector": "{service_name=", "start": start.to_string(), "end": end.to_string()}),
    );
    assert_invalid(status, v.to_string().as_bytes(), "unclosed selector");
    let (status, _, v) = post_json(
        &d,
        SMS,
        &json!({"profileTypeID": "process_cpu:samples:count:cpu:nanoseconds",
                "start": end.to_string(), "end": start.to_string()}),
    );
    assert_invalid(status, v.to_string().as_bytes(), "start after end");
    let (status, _, body) = post(&d, SMS, "text/plain", b"hello");
    assert_invalid(status, &body, "unsupported content type");

    // An unknown profile type: an empty answer.
    let (status, clamped, v) = post_json(
        &d,
        SMS,
        &json!({"profileTypeID": "nope:nope:count:nope:count", "labelSelector": "{}",
                "start": start.to_string(), "end": end.to_string()}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["flamegraph"]["total"], "0", "{v}");
    assert_eq!(clamped, None);
    let (status, _, v) = post_json(
        &d,
        "/querier.v1.QuerierService/SelectSeries",
        &json!({"profileTypeID": "nope:nope:count:nope:count", "labelSelector": "{}",
                "start": start.to_string(), "end": end.to_string(), "step": 15}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["series"].as_array().is_none_or(|s| s.is_empty()), "{v}");

    // The real type: data, and a max_nodes above the cap is clamped to server.max_nodes.
    let ty = "process_cpu:samples:count:cpu:nanoseconds";
    let (status, clamped, v) = post_json(
        &d,
        SMS,
        &json!({"profileTypeID": ty, "labelSelector": "{service_name=\"querier-app\"}",
                "start": start.to_string(), "end": end.to_string(), "maxNodes": "100000000"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["flamegraph"]["total"], "0", "{v}");
    assert_eq!(clamped.as_deref(), Some("8192"));
    let (status, clamped, v) = post_json(
        &d,
        SMS,
        &json!({"profileTypeID": ty, "labelSelector": "{service_name=\"querier-app\"}",
                "start": start.to_string(), "end": end.to_string(), "maxNodes": "5"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(clamped, None);
    assert!(
        v["flamegraph"]["names"].as_array().unwrap().len() <= 7,
        "{v}"
    );
}

/// `SelectSeries` grouped by two labels: one series per combination that exists, each with
/// both labels (an absent one left out), its points summing to that combination's total, and
/// all of them summing to the ungrouped total. `limit` keeps the largest.
#[test]
fn select_series_groups_by_several_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let now = now_ms() / 1000;
    let (body, ct) = multipart(&std::fs::read(testdata("go-cpu.pb.gz")).unwrap(), None);
    // (env, region) combinations, pushed this many times each: prod/eu ×3, prod/us ×2,
    // dev/eu ×1, and one push with no region.
    let pushes = [
        ("env=prod,region=eu", 3),
        ("env=prod,region=us", 2),
        ("env=dev,region=eu", 1),
        ("env=dev", 1),
    ];
    for (labels, times) in pushes {
        for i in 0..times {
            let (status, text) = d.ingest(
                &format!(
                    "name={}&from={}&until={}",
                    enc(&format!("grouped.cpu{{{labels}}}")),
                    now - 100 + i * 10,
                    now - 90 + i * 10
                ),
                &ct,
                &body,
            );
            assert_eq!(status, 200, "{text}");
        }
    }
    let ty = "process_cpu:samples:count:cpu:nanoseconds";
    let (start, end) = (now_ms() - 3_600_000, now_ms() + 60_000);
    let series = |group_by: Value, limit: Option<i64>| -> Vec<(Vec<(String, String)>, f64)> {
        let mut req = json!({"profileTypeID": ty, "labelSelector": "{service_name=\"grouped\"}",
            "start": start.to_string(), "end": end.to_string(), "step": 10, "groupBy": group_by});
        if let Some(l) = limit {
            req["limit"] = json!(l.to_string());
        }
        let (status, _, v) = post_json(&d, "/querier.v1.QuerierService/SelectSeries", &req);
        assert_eq!(status, 200, "{v}");
        let mut out: Vec<_> = v["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let labels: Vec<(String, String)> = s["labels"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|l| {
                        (
                            l["name"].as_str().unwrap().to_string(),
                            l["value"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let total = s["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["value"].as_f64().unwrap())
                    .sum::<f64>();
                (labels, total)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let all = series(json!([]), None);
    assert_eq!(all.len(), 1, "{all:?}");
    let one_push = all[0].1 / 7.0;
    assert!(one_push > 0.0);

    let grouped = series(json!(["env", "region"]), None);
    let pair = |e: &str, r: Option<&str>| {
        let mut l = vec![("env".to_string(), e.to_string())];
        if let Some(r) = r {
            l.push(("region".to_string(), r.to_string()));
        }
        l
    };
    let expected = [
        (pair("dev", None), 1.0),
        (pair("dev", Some("eu")), 1.0),
        (pair("prod", Some("eu")), 3.0),
        (pair("prod", Some("us")), 2.0),
    ];
    assert_eq!(grouped.len(), expected.len(), "{grouped:?}");
    for ((labels, total), (want_labels, pushes)) in grouped.iter().zip(&expected) {
        assert_eq!(labels, want_labels);
        assert!(
            (total - pushes * one_push).abs() < 1e-6 * total.max(1.0),
            "{labels:?}: {total} against {pushes} pushes of {one_push}"
        );
    }
    let sum: f64 = grouped.iter().map(|g| g.1).sum();
    assert!((sum - all[0].1).abs() < 1e-6 * sum, "{sum} vs {}", all[0].1);

    // limit 2: the two largest combinations.
    let top = series(json!(["env", "region"]), Some(2));
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(top[0].0, pair("prod", Some("eu")));
    assert_eq!(top[1].0, pair("prod", Some("us")));
}
