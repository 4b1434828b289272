//! Grafana Pyroscope's Connect push API, in protobuf and JSON, gzip'd or not.

mod common;

use base64::Engine;
use common::{agent, enc, testdata, Daemon};
use prost::Message;

use kiln_pprof::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.into(),
        value: value.into(),
    }
}

fn post(d: &Daemon, content_type: &str, gzip: bool, body: Vec<u8>) -> (u16, String) {
    let mut req = agent()
        .post(format!("{}/push.v1.PusherService/Push", d.url))
        .header("Content-Type", content_type);
    let body = if gzip {
        req = req.header("Content-Encoding", "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        gz.finish().unwrap()
    } else {
        body
    };
    let mut resp = req.send(&body[..]).unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn protobuf_and_json_pushes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    // The fixture restamped to now: Connect pushes carry no window, the pprof's time places them.
    let raw = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let raw = kiln_pprof::gunzip_if_needed(&raw, 1 << 30).unwrap();
    let mut profile = kiln_pprof::proto::Profile::decode(&raw[..]).unwrap();
    profile.time_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        - 20_000_000_000;
    let cpu = profile.encode_to_vec();
    let req = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                label("__name__", "process_cpu"),
                label("service_name", "connect-app"),
                label("__delta__", "false"),
                label("region", "eu"),
            ],
            samples: vec![RawSample {
                raw_profile: cpu.clone(),
                id: "x".into(),
            }],
        }],
    };
    let (s, m) = post(&d, "application/proto", true, req.encode_to_vec());
    assert_eq!(s, 200, "{m}");
    let json = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "connect-json"}, {"name": "__name__", "value": "process_cpu"}],
        "samples": [{"ID": "734FD599-6865-419E-9475-932762D8F469",
                     "rawProfile": base64::engine::general_purpose::STANDARD.encode(&cpu)}]
    }]});
    let (s, m) = post(&d, "application/json", false, json.to_string().into_bytes());
    assert_eq!(s, 200, "{m}");
    for app in ["connect-app", "connect-json"] {
        let r = d.get_json(&format!(
            "/render?query={}&from=now-1h&until=now%2B1m",
            enc(&format!("{app}.cpu"))
        ));
        assert_eq!(r["flamebearer"]["numTicks"], 1017, "{app}");
    }
    // Reserved labels are not series labels.
    let labels = d.get_json(&format!("/labels?query={}", enc("connect-app.cpu")));
    assert!(labels.as_array().unwrap().iter().any(|l| l == "region"));
    assert!(!labels.as_array().unwrap().iter().any(|l| l == "__delta__"));
}

#[test]
fn bad_pushes_get_connect_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let (s, m) = post(&d, "application/proto", false, vec![0xff, 0xff, 0xff]);
    assert_eq!(s, 400);
    assert!(m.contains("invalid_argument"), "{m}");
    let (s, m) = post(&d, "application/json", false, b"{\"series\": 5}".to_vec());
    assert_eq!(s, 400, "{m}");
    let bad = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![label("service_name", "x")],
            samples: vec![RawSample {
                raw_profile: b"not a profile".to_vec(),
                id: String::new(),
            }],
        }],
    };
    let (s, m) = post(&d, "application/proto", false, bad.encode_to_vec());
    assert_eq!(s, 400);
    assert!(m.contains("raw_profile"), "{m}");
}
