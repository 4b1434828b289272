//! `kiln-loadgen`: pushes a real profile to `/ingest` from many threads, each request under
//! another series label, and reports requests/s, latency percentiles and — given the daemon's
//! pid — its CPU use and peak RSS.
//!
//! With `--day`, it instead pushes one series' worth of a whole day (8,640 profiles stamped
//! 10 s apart) as fast as it can, to measure disk use per profiled core per day; add
//! `--strip-lines` to push the same profile without file and line numbers, to measure what
//! keeping lines costs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Daemon URL.
    #[arg(long, default_value = "http://127.0.0.1:4040")]
    url: String,
    /// Profile to replay (gzip'd pprof).
    #[arg(long, default_value = "testdata/go-cpu.pb.gz")]
    file: PathBuf,
    /// Distinct series (values of the `pod` label).
    #[arg(long, default_value_t = 200)]
    series: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    concurrency: u64,
    /// How long to push.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The daemon's pid, to report its CPU and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Target requests per second across all connections (0: as fast as the daemon answers).
    /// A fixed rate compares CPU per request fairly: a saturated daemon also burns CPU waiting.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Push one day of one series (8,640 profiles 10 s apart) instead.
    #[arg(long)]
    day: bool,
    /// Push through the Connect API (`push.v1.PusherService/Push`, protobuf) instead of /ingest.
    #[arg(long)]
    connect: bool,
    /// Remove line numbers, function start lines and file names from the profile before pushing.
    #[arg(long)]
    strip_lines: bool,
}

/// The profile without source locations: every line 0, no file, no start line.
fn strip_lines(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use prost::Message;
    let raw = kiln_pprof::gunzip_if_needed(body, 1 << 30)?;
    let mut p = kiln_pprof::proto::Profile::decode(&raw[..])?;
    for f in &mut p.function {
        f.filename = 0;
        f.start_line = 0;
    }
    for l in &mut p.location {
        for line in &mut l.line {
            line.line = 0;
        }
    }
    Ok(p.encode_to_vec())
}

/// A Connect push body for series `pod`.
fn connect_body(profile: &[u8], pod: &str) -> Vec<u8> {
    use kiln_pprof::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
    use prost::Message;
    PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                LabelPair::new("__name__", "process_cpu"),
                LabelPair::new("service_name", "loadgen"),
                LabelPair::new("pod", pod),
            ],
            samples: vec![RawSample {
                raw_profile: profile.to_vec(),
                id: String::new(),
            }],
        }],
    }
    .encode_to_vec()
}

/// `(utime + stime in clock ticks, RSS in kB)` of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut body =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if args.strip_lines {
        body = strip_lines(&body)?;
    }
    let body = Arc::new(body);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let push = |agent: &ureq::Agent, name: &str, from: u64| -> anyhow::Result<()> {
        if args.connect {
            let pod = name
                .split("pod=")
                .nth(1)
                .unwrap_or("x")
                .trim_end_matches('}');
            let resp = agent
                .post(format!("{}/push.v1.PusherService/Push", args.url))
                .header("Content-Type", "application/proto")
                .send(&connect_body(&body, pod)[..])?;
            if !resp.status().is_success() {
                bail!("status {}", resp.status());
            }
            return Ok(());
        }
        let resp = agent
            .post(format!("{}/ingest", args.url))
            .query("name", name)
            .query("format", "pprof")
            .query("spyName", "gospy")
            .query("from", from.to_string())
            .query("until", (from + 10).to_string())
            .header("Content-Type", "application/octet-stream")
            .send(&body[..])?;
        if !resp.status().is_success() {
            bail!("status {}", resp.status());
        }
        Ok(())
    };
    if args.day {
        let start = (now - 86_400) / 10 * 10;
        let t0 = Instant::now();
        for i in 0..8_640u64 {
            push(&agent, "loadgen-day.cpu{pod=day}", start + i * 10)?;
        }
        println!(
            "pushed 8640 profiles (one day of one series) in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let before = args.pid.and_then(proc_stats);
    let peak_rss = Arc::new(AtomicU64::new(before.map(|b| b.1).unwrap_or(0)));
    let started = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..args.concurrency {
            let (stop, done, errors, latencies, agent) = (
                stop.clone(),
                done.clone(),
                errors.clone(),
                latencies.clone(),
                agent.clone(),
            );
            let push = &push;
            let series = args.series;
            // Each connection sends its share of the rate on a fixed schedule.
            let interval = (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
            s.spawn(move || {
                let mut local = Vec::new();
                let mut i = worker;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        next += interval;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let name = format!("loadgen.cpu{{pod=pod-{}}}", i % series);
                    let t = Instant::now();
                    match push(&agent, &name, now) {
                        Ok(()) => {
                            local.push(t.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += args.concurrency;
                }
                latencies.lock().unwrap().extend(local);
            });
        }
        if let Some(pid) = args.pid {
            let (stop, peak) = (stop.clone(), peak_rss.clone());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((_, rss)) = proc_stats(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{n} profiles in {elapsed:.1}s = {:.0} profiles/s over {} series, {} errors; latency p50 {:?} p99 {:?}",
        n as f64 / elapsed,
        args.series,
        errors.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99)
    );
    if let (Some(pid), Some((cpu0, _))) = (args.pid, before) {
        if let Some((cpu1, _)) = proc_stats(pid) {
            let ticks = 100.0; // USER_HZ on Linux
            println!(
                "daemon: {:.0}% CPU ({:.2} cores), peak RSS {} MB",
                (cpu1 - cpu0) as f64 / ticks / elapsed * 100.0,
                (cpu1 - cpu0) as f64 / ticks / elapsed,
                peak_rss.load(Ordering::Relaxed) / 1024
            );
        }
    }
    Ok(())
}
