//! `[metrics_rules]` end to end: a real Prometheus scrapes the daemon's `/metrics` every
//! second while profiles with known CPU are pushed, and PromQL over the rule's metric must
//! give back the pushed CPU.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{agent, enc, Daemon};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const METRIC: &str = "kiln_profile_cpu_seconds_total";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Prometheus on `port` with its data in `dir`, scraping `target` every second if given;
/// `extra` flags added.
struct Prometheus {
    url: String,
    child: Child,
}

impl Prometheus {
    fn start(dir: &Path, target: Option<&str>, port: u16, extra: &[&str]) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install it (apt-get install -y prometheus) to run this test"
        );
        let config = dir.join("prometheus.yml");
        let scrape = target.map_or(String::new(), |target| {
            format!(
                "scrape_configs:\n  - job_name: kiln\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            )
        });
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{scrape}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent()
            .get(format!("{}/-/ready", p.url))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The value of the one series `promql` gives at `time`, if any.
    fn query(&self, promql: &str, time: f64) -> Option<f64> {
        let mut r = agent()
            .get(format!(
                "{}/api/v1/query?query={}&time={time:.3}",
                self.url,
                enc(promql)
            ))
            .call()
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["status"], "success", "{body}");
        let result = body["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "{promql}: {body}");
        result.first().map(|s| {
            assert_eq!(s["metric"]["env"], "prod", "{body}");
            assert_eq!(s["metric"]["service_name"], "mr", "{body}");
            s["value"][1].as_str().unwrap().parse().unwrap()
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_rate_over_a_rule_matches_the_pushed_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "[metrics_rules.cpu]\nquery = 'mr.cpu{env=\"prod\"}'\ngroup_by = [\"env\"]\n",
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let prom = Prometheus::start(
        dir.path(),
        Some(d.url.trim_start_matches("http://")),
        free_port(),
        &[],
    );

    // 10 pushes a second of 10 samples at 100 Hz: one CPU-second per second, paced on the
    // wall clock. Each push is logged with the time it was acknowledged.
    let mut pushed: Vec<(f64, f64)> = Vec::new();
    let start = Instant::now();
    let pushes = 200;
    for k in 0..pushes {
        let due = start + Duration::from_millis(100 * k);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let until = now() as u64;
        // Another environment and another app do not count.
        for name in [
            "mr.cpu{env=prod,pod=a}",
            "mr.cpu{env=dev}",
            "other.cpu{env=prod}",
        ] {
            let (status, msg) = d.ingest(
                &format!(
                    "name={}&sampleRate=100&from={}&until={until}&format=folded",
                    enc(name),
                    until - 10
                ),
                "text/plain",
                b"main;work 6\nmain;idle 4\n",
            );
            assert_eq!(status, 200, "{msg}");
        }
        pushed.push((now(), 0.1));
    }
    let end = now();
    // Let Prometheus scrape past the last push.
    std::thread::sleep(Duration::from_secs(3));

    let total: f64 = pushed.iter().map(|p| p.1).sum();
    let scraped = prom
        .query(METRIC, now())
        .expect("the rule's series was scraped");
    assert!(
        (scraped - total).abs() < 1e-6,
        "counter {scraped} != pushed {total}"
    );

    // The rate over a 10 s window inside the push period against what was pushed in it.
    let at = end - 2.0;
    let window = 10.0;
    let pushed_in: f64 = pushed
        .iter()
        .filter(|(t, _)| *t > at - window && *t <= at)
        .map(|p| p.1)
        .sum();
    let expected = pushed_in / window;
    let rate = prom
        .query(&format!("rate({METRIC}[10s])"), at)
        .expect("rate has a value");
    assert!(
        (rate - expected).abs() <= 0.05 * expected,
        "rate({METRIC}[10s]) = {rate}, pushed {expected} CPU-s/s"
    );
    let increase = prom
        .query(&format!("increase({METRIC}[10s])"), at)
        .expect("increase has a value");
    assert!(
        (increase - pushed_in).abs() <= 0.05 * pushed_in,
        "increase({METRIC}[10s]) = {increase}, pushed {pushed_in} CPU-s"
    );
}

#[test]
fn remote_write_delivers_the_rule_counters_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics_rules.cpu]\nquery = 'mr.cpu{{env=\"prod\"}}'\ngroup_by = [\"env\"]\n\
             [metrics_remote_write]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n\
             interval = \"1s\"\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    // Prometheus does not scrape Kiln here: what it holds came by remote write.
    let prom = Prometheus::start(
        dir.path(),
        None,
        port,
        &["--web.enable-remote-write-receiver"],
    );

    let until = now() as u64;
    for pod in 0..20 {
        for name in [
            format!("mr.cpu{{env=prod,pod=p{pod}}}"),
            "mr.cpu{env=dev}".into(),
        ] {
            let (status, msg) = d.ingest(
                &format!(
                    "name={}&sampleRate=100&from={}&until={until}&format=folded",
                    enc(&name),
                    until - 10
                ),
                "text/plain",
                b"main;work 6\nmain;idle 4\n",
            );
            assert_eq!(status, 200, "{msg}");
        }
    }
    // 20 pushes of 10 samples at 100 Hz in env=prod: 2 CPU-seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = prom.query(METRIC, now());
        if value.is_some_and(|v| (v - 2.0).abs() < 1e-6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus holds {value:?} for {METRIC}, want 2.0 by remote write"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("kiln_metrics_remote_writes_total{outcome=\"ok\"}"),
        "{metrics}"
    );
}
