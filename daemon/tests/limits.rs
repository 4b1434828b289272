//! Limits end to end: each refusal's status and body name the limit, nothing of a refused
//! push is stored, refusals and truncations show in `/metrics`, and a client trickling its
//! headers or body is cut off while others are served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent, enc, Daemon};
use serde_json::Value;

/// A daemon with `limits` as the `[limits]` table (and whatever else `limits` holds).
fn daemon(dir: &Path, limits: &str) -> Daemon {
    let config = dir.join("kiln.toml");
    std::fs::write(&config, format!("[limits]\n{limits}")).unwrap();
    Daemon::start(dir, &["--config", config.to_str().unwrap()])
}

/// Pushes folded `body` as `name` for `tenant`: status, `Retry-After`, body.
fn push(d: &Daemon, tenant: &str, name: &str, body: &str) -> (u16, Option<String>, String) {
    let mut r = agent()
        .post(format!(
            "{}/ingest?name={}&from=now-10s&until=now",
            d.url,
            enc(name)
        ))
        .header("X-Scope-OrgID", tenant)
        .send(body.as_bytes())
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        retry,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn folded(d: &Daemon, tenant: &str, query: &str) -> String {
    let mut r = agent()
        .get(format!(
            "{}/render?query={}&from=now-1h&until=now&format=collapsed",
            d.url,
            enc(query)
        ))
        .header("X-Scope-OrgID", tenant)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.body_mut().read_to_string().unwrap()
}

fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"].as_str().unwrap_or_default().to_string()
}

fn metrics(d: &Daemon) -> String {
    let (s, m) = d.get("/metrics");
    assert_eq!(s, 200);
    m
}

#[test]
fn ingest_rate_refuses_with_429_and_retry_after_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(
        dir.path(),
        "ingest_bytes_per_second = 10\ningest_burst_bytes = 100\n[limits.tenants.big]\ningest_burst_bytes = 100000\n",
    );
    let line = format!("main;{} 1\n", "x".repeat(60));
    let (s, _, b) = push(&d, "small", "rate.cpu", &line);
    assert_eq!(s, 200, "{b}");
    let (s, retry, b) = push(&d, "small", "rate.cpu", &line.replace('x', "y"));
    assert_eq!(s, 429, "{b}");
    assert_eq!(error_of(&b), "limits.ingest_bytes_per_second");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=10).contains(&secs), "{secs}");
    assert!(!folded(&d, "small", "rate.cpu{}").contains("yyy"));
    // Another tenant has its own bucket, and its override.
    for _ in 0..3 {
        assert_eq!(push(&d, "big", "rate.cpu", &line).0, 200);
    }
    // Connect: resource_exhausted.
    let mut r = agent()
        .post(format!("{}/push.v1.PusherService/Push", d.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", "small")
        .send(format!("{{\"series\": []{}}}", " ".repeat(80)).as_bytes())
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["code"], "resource_exhausted");
    let m = metrics(&d);
    assert!(
        m.contains(
            r#"kiln_limit_refused_total{limit="limits.ingest_bytes_per_second",tenant="small"} 2"#
        ),
        "{m}"
    );
}

#[test]
fn max_series_refuses_new_series_and_accepts_existing_ones_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path(), "max_series = 2\n");
    assert_eq!(push(&d, "t", "a.cpu", "main 1\n").0, 200);
    assert_eq!(push(&d, "t", "b.cpu", "main 1\n").0, 200);
    let (s, _, b) = push(&d, "t", "c.cpu", "main 1\n");
    assert_eq!(s, 429, "{b}");
    assert_eq!(error_of(&b), "limits.max_series");
    assert!(b.contains("existing ones accepted"), "{b}");
    assert_eq!(push(&d, "t", "a.cpu", "main 2\n").0, 200);
    // Per tenant: another tenant starts from zero.
    assert_eq!(push(&d, "u", "c.cpu", "main 1\n").0, 200);
    d.restart();
    assert_eq!(push(&d, "t", "c.cpu", "main 1\n").0, 429);
    assert_eq!(push(&d, "t", "b.cpu", "main 1\n").0, 200);
    assert_eq!(folded(&d, "t", "c.cpu{}").trim(), "");
}

#[test]
fn max_series_frees_the_series_of_a_deleted_app() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), "max_series = 2\n");
    assert_eq!(push(&d, "t", "a.cpu", "main 1\n").0, 200);
    assert_eq!(push(&d, "t", "b.cpu", "main 1\n").0, 200);
    assert_eq!(push(&d, "t", "c.cpu", "main 1\n").0, 429);
    let r = agent()
        .delete(format!("{}/api/apps", d.url))
        .header("X-Scope-OrgID", "t")
        .force_send_body()
        .send(r#"{"name":"a.cpu"}"#.as_bytes())
        .unwrap();
    assert_eq!(r.status(), 200);
    // a's series is gone: c takes its place, and then the tenant is full again.
    let (s, _, b) = push(&d, "t", "c.cpu", "main 1\n");
    assert_eq!(s, 200, "{b}");
    assert!(folded(&d, "t", "c.cpu{}").contains("main 1"));
    assert_eq!(push(&d, "t", "a.cpu", "main 1\n").0, 429);
    assert_eq!(push(&d, "t", "b.cpu", "main 2\n").0, 200);
}

#[test]
fn labels_and_samples_past_their_limits_are_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(
        dir.path(),
        "max_label_name_length = 12\nmax_label_value_length = 8\nmax_label_count = 3\nmax_samples_per_profile = 2\n",
    );
    for (name, body, limit) in [
        (
            "l.cpu{k=valuetoolong}",
            "main 1\n",
            "limits.max_label_value_length",
        ),
        (
            "l.cpu{a_very_long_name=v}",
            "main 1\n",
            "limits.max_label_name_length",
        ),
        ("l.cpu{a=1,b=2,c=3}", "main 1\n", "limits.max_label_count"),
        ("l.cpu", "a 1\nb 1\nc 1\n", "limits.max_samples_per_profile"),
    ] {
        let (s, _, b) = push(&d, "anonymous", name, body);
        assert_eq!((s, error_of(&b)), (400, limit.to_string()), "{name}: {b}");
    }
    assert_eq!(folded(&d, "anonymous", "l.cpu{}").trim(), "");
    assert_eq!(push(&d, "anonymous", "l.cpu{a=1,b=2}", "a 1\nb 1\n").0, 200);
    let m = metrics(&d);
    assert!(
        m.contains(
            r#"kiln_limit_refused_total{limit="limits.max_label_count",tenant="anonymous"} 1"#
        ),
        "{m}"
    );
}

#[test]
fn deep_stacks_are_truncated_under_a_marker_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), "max_stack_depth = 3\n");
    let (s, _, b) = push(&d, "anonymous", "deep.cpu", "a;b;c;d;e 5\nx;y 2\n");
    assert_eq!(s, 200, "{b}");
    let tree = folded(&d, "anonymous", "deep.cpu{}");
    assert!(tree.contains("[truncated];d;e 5"), "{tree}");
    assert!(tree.contains("x;y 2"), "{tree}");
    let m = metrics(&d);
    assert!(
        m.contains(r#"kiln_stacks_truncated_total{tenant="anonymous"} 1"#),
        "{m}"
    );
}

#[test]
fn a_query_past_query_timeout_gets_503_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // A timeout below the timer's 1 ms resolution, and a query that cannot finish within it:
    // 50,000 distinct stacks to merge and render (a query of a tiny profile can answer before
    // the timer first fires).
    let d = daemon(dir.path(), "query_timeout = \"1ms\"\n");
    let wide: String = (0..50_000)
        .map(|i| format!("main;f{};g{} 1\n", i % 97, i))
        .collect();
    assert_eq!(push(&d, "anonymous", "q.cpu", &wide).0, 200);
    let (s, b) = d.get(&format!(
        "/render?query={}&from=now-1h&until=now",
        enc("q.cpu{}")
    ));
    assert_eq!(
        (s, error_of(&b)),
        (503, "limits.query_timeout".to_string()),
        "{b}"
    );
    assert!(b.contains("limits.query_timeout"), "{b}");
    // Not a query: unaffected.
    assert_eq!(d.get("/healthz").0, 200);
}

/// Reads until the peer closes (Ok) or `within` passes (Err).
fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(got),
        }
    }
    Err(())
}

#[test]
fn slowloris_clients_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(
        dir.path(),
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n",
    );
    let addr = d.url.trim_start_matches("http://").to_string();

    // Headers, one byte every 200 ms: closed within the timeout (and some slack).
    let mut slow = TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    let trickle = std::thread::spawn({
        let mut w = slow.try_clone().unwrap();
        move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: kiln\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n"
            {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    // Meanwhile a normal client is served.
    assert_eq!(d.get("/healthz").0, 200);
    let got = closed_within(&mut slow, Duration::from_secs(5)).expect("slow headers not cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    trickle.join().unwrap();

    // A body promised and trickled: 408 naming the limit, then closed.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /ingest?name=slow.cpu HTTP/1.1\r\nHost: kiln\r\nContent-Length: 100\r\n\r\nmain 1",
    )
    .unwrap();
    let got = closed_within(&mut slow, Duration::from_secs(5)).expect("slow body not cut off");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("limits.body_read_timeout"), "{text}");
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(folded(&d, "anonymous", "slow.cpu{}").trim(), "");

    // On the Connect API: a Connect error.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    let got = closed_within(&mut slow, Duration::from_secs(5)).expect("slow body not cut off");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("deadline_exceeded"), "{text}");
}
