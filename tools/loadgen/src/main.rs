//! `kiln-loadgen`: pushes real profiles to `/ingest` (or the Connect push API) from many
//! threads, each request under another series label, and reports accepted and refused requests,
//! latency percentiles and — given the server's pid — its CPU per accepted profile and peak RSS.
//! It speaks the Pyroscope API only, so it loads Kiln and Grafana Pyroscope alike.
//!
//! The shape of a fleet: several fixtures (`--file`, repeated) pushed for every series and time
//! slot, slots spread over a past window (`--spread 24h`, 10 s each, the pprof's own time
//! rewritten to the slot as an agent stamps it), and optionally stacks that churn (`--churn`).
//!
//! Tenants: `--tenants N` spreads the series over tenants `t0`…`tN-1` (series `s` belongs to
//! `t{s % N}`), named by `X-Scope-OrgID`, or with `--key-file` by each tenant's API key. With
//! `--window S` every request also carries `w=<index of the S-second window it was sent in>`
//! and the JSON summary counts, per tenant and window, the requests acknowledged and when the
//! last acknowledgement came: what a crash test compares with what the server still answers.
//!
//! With `--day`, it instead pushes one series' worth of a whole day (8,640 profiles stamped
//! 10 s apart) as fast as it can, to measure disk use per profiled core per day; add
//! `--strip-lines` to push the same profile without file and line numbers, to measure what
//! keeping lines costs, and `--vary-values` to vary each push's values as a real program's
//! profiles vary.

mod bodies;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bodies::Fixture;
use clap::Parser;

/// Length of a time slot: one agent push interval.
const SLOT_S: u64 = 10;

#[derive(Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:4040")]
    url: String,
    /// Profile to replay, `PATH` or `PATH@APP`; repeat to rotate several. `.jfr` files are sent
    /// with format=jfr, `.txt`/`.folded` as folded, anything else as pprof (gzip'd or not).
    #[arg(long = "file", default_value = "testdata/go-cpu.pb.gz")]
    files: Vec<String>,
    /// Application name sent as `name=APP{pod=…}` (Kiln strips a `.cpu`-style suffix; Grafana
    /// Pyroscope keeps the whole name as service_name for pprof and JFR).
    #[arg(long, default_value = "loadgen.cpu")]
    app: String,
    /// Distinct series (values of the `pod` label).
    #[arg(long, default_value_t = 200)]
    series: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    concurrency: u64,
    /// How long to push.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The server's pid, to report its CPU and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Target requests per second across all connections (0: as fast as the server answers).
    /// A fixed rate compares CPU per request fairly: a saturated server also burns CPU waiting.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Spread requests over this past window (e.g. 24h, 90m, 3600s) in 10 s slots: each series
    /// walks every slot once, in a scattered order, before any slot repeats. Without it, every
    /// request carries the start time.
    #[arg(long, value_parser = parse_duration)]
    spread: Option<u64>,
    /// Fraction of function names renamed per churn variant (0: none). A request's variant
    /// follows its series and time slot, so distinct stacks grow over the day.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Churn variants per day (each series moves to the next one every 24h/VARIANTS).
    #[arg(long, default_value_t = 24)]
    churn_variants: u32,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Push one day of one series (8,640 profiles 10 s apart) instead.
    #[arg(long)]
    day: bool,
    /// With `--day`: that many series (pods `day`, `day-1`, …) pushing side by side, one
    /// profile each per 10 s slot, as that many profiled cores do; what is stored once per data
    /// directory (journals, sled's segments) is then shared as in a real deployment.
    #[arg(long, default_value_t = 1, requires = "day")]
    day_series: u64,
    /// Push through the Connect API (`push.v1.PusherService/Push`, protobuf) instead of /ingest.
    #[arg(long)]
    connect: bool,
    /// Remove line numbers, function start lines and file names from the profile before pushing.
    #[arg(long)]
    strip_lines: bool,
    /// With `--day`: draw every push's sample counts around the fixture's (Poisson), as a
    /// sampling profiler's counts differ from one interval to the next and rare stacks come
    /// and go, instead of replaying the fixture's values.
    #[arg(long, requires = "day")]
    vary_values: bool,
    /// Spread the series over this many tenants, `t0`…`tN-1` (0: no tenant is named).
    #[arg(long, default_value_t = 0)]
    tenants: usize,
    /// API keys, one a line: line k is tenant `tk`'s, sent as `Authorization: Bearer`. Without
    /// it, tenants are named with `X-Scope-OrgID`.
    #[arg(long, requires = "tenants")]
    key_file: Option<PathBuf>,
    /// Label every request `w=<window>`, its send time in windows of this many seconds since the
    /// start, and count acknowledgements per tenant and window in the JSON summary (0: off).
    #[arg(long, default_value_t = 0)]
    window: u64,
    /// Send `.jfr` files as raw bodies. By default they go as the official Java agent sends
    /// them: a multipart form with the recording gzip'd in its `jfr` part.
    #[arg(long)]
    jfr_raw: bool,
}

/// How a request names its tenant.
enum TenantAuth {
    None,
    /// `X-Scope-OrgID: tK`.
    OrgId(Vec<String>),
    /// `Authorization: Bearer KEY` of tenant tK.
    Keys(Vec<String>),
}

impl TenantAuth {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        if args.tenants == 0 {
            return Ok(Self::None);
        }
        let Some(path) = &args.key_file else {
            return Ok(Self::OrgId(
                (0..args.tenants).map(|k| format!("t{k}")).collect(),
            ));
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let keys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if keys.len() < args.tenants {
            bail!(
                "{} holds {} keys for {} tenants",
                path.display(),
                keys.len(),
                args.tenants
            );
        }
        Ok(Self::Keys(keys))
    }

    /// The header of series `series`'s tenant, if any.
    fn header(&self, series: u64) -> Option<(&'static str, String)> {
        match self {
            Self::None => None,
            Self::OrgId(names) => Some((
                "X-Scope-OrgID",
                names[(series % names.len() as u64) as usize].clone(),
            )),
            Self::Keys(keys) => Some((
                "Authorization",
                format!("Bearer {}", keys[(series % keys.len() as u64) as usize]),
            )),
        }
    }
}

/// `24h`, `90m`, `3600s`, `1d` or plain seconds → seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'h')) => (&s[..i], 3_600),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 's')) => (&s[..i], 1),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 24h, 90m or 3600s"))?;
    if n * mult < SLOT_S {
        return Err(format!("{s:?} is shorter than one {SLOT_S} s slot"));
    }
    Ok(n * mult)
}

/// A Connect push body for series `pod`.
fn connect_body(profile: &[u8], metric: &str, service: &str, pod: &str) -> Vec<u8> {
    use kiln_pprof::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
    use prost::Message;
    PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                LabelPair::new("__name__", metric),
                LabelPair::new("service_name", service),
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

/// The service name in an `/ingest` app name, without a profile-type suffix.
fn service_of(app: &str) -> &str {
    const SUFFIXES: &[&str] = &[
        "cpu",
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
        "goroutines",
        "wall",
        "itimer",
    ];
    match app.rsplit_once('.') {
        Some((base, s)) if SUFFIXES.contains(&s) => base,
        _ => app,
    }
}

/// `(utime + stime in clock ticks, VmRSS kB, VmHWM kB)` of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((cpu, field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// What one request came to.
enum Outcome {
    Accepted,
    /// An HTTP status other than 2xx.
    Status(u16),
    /// No answer (connection refused or reset, timeout).
    Io,
}

/// What a request is: which fixture, series and time slot.
struct Plan {
    fixture: usize,
    series: u64,
    from: u64,
}

/// Maps the `i`-th request to its fixture, series and slot. Fixtures turn fastest (every series
/// sends each of them for a slot, as one agent pushes several profile types), then series; each
/// series visits the slots of the spread window in a scattered order (a stride coprime with
/// their number, offset per series), so a short run still covers the whole window and no
/// `(series, slot, fixture)` repeats before every slot has been used.
struct Planner {
    fixtures: u64,
    series: u64,
    /// First slot's start (unix s) and number of slots; `None`: everything at `start`.
    window: Option<(u64, u64, u64)>,
    start: u64,
}

impl Planner {
    fn new(fixtures: usize, series: u64, spread_s: Option<u64>, now: u64) -> Self {
        let window = spread_s.map(|spread| {
            let slots = (spread / SLOT_S).max(1);
            let first = (now / SLOT_S - slots) * SLOT_S;
            let mut stride = ((slots as f64 * 0.618) as u64) | 1;
            while gcd(stride, slots) != 1 {
                stride += 1;
            }
            (first, slots, stride % slots.max(1))
        });
        Self {
            fixtures: fixtures as u64,
            series: series.max(1),
            window,
            start: now,
        }
    }

    fn plan(&self, i: u64) -> Plan {
        let fixture = (i % self.fixtures) as usize;
        let j = i / self.fixtures;
        let series = j % self.series;
        let round = j / self.series;
        let from = match self.window {
            None => self.start,
            Some((first, slots, stride)) => {
                let slot = (round.wrapping_mul(stride) + bodies::mix(series)) % slots;
                first + slot * SLOT_S
            }
        };
        Plan {
            fixture,
            series,
            from,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The churn variant of a series at a time: each series moves to the next variant every
/// 24h/variants, series offset from each other.
fn variant(series: u64, from: u64, variants: u32) -> u32 {
    let variants = u64::from(variants.max(1));
    let period = (86_400 / variants).max(SLOT_S);
    ((from / period + series) % variants) as u32
}

struct Pusher<'a> {
    args: &'a Args,
    tenants: &'a TenantAuth,
    fixtures: &'a [Fixture],
    agent: ureq::Agent,
    /// The first refusal's or failure's answer, printed once.
    first_error: &'a Mutex<Option<String>>,
}

impl Pusher<'_> {
    /// Pushes `plan`'s profile under series label `pod` (and `w=window`, when given).
    fn push(&self, plan: &Plan, name_app: Option<&str>, pod: &str, window: Option<u64>) -> Outcome {
        let f = &self.fixtures[plan.fixture];
        let v = variant(plan.series, plan.from, self.args.churn_variants);
        let body = f.body(plan.series, v, plan.from, SLOT_S);
        let app = name_app.unwrap_or(&f.app);
        let tenant = self.tenants.header(plan.series);
        let with_tenant = |req: ureq::RequestBuilder<ureq::typestate::WithBody>| match &tenant {
            Some((name, value)) => req.header(*name, value),
            None => req,
        };
        let labels = match window {
            Some(w) => format!("pod={pod},w={w}"),
            None => format!("pod={pod}"),
        };
        let result = if self.args.connect {
            with_tenant(
                self.agent
                    .post(format!("{}/push.v1.PusherService/Push", self.args.url))
                    .header("Content-Type", "application/proto"),
            )
            .send(&connect_body(&body, f.metric, service_of(app), pod)[..])
        } else {
            with_tenant(self.agent.post(format!("{}/ingest", self.args.url)))
                .query("name", format!("{app}{{{labels}}}"))
                .query("format", f.format)
                .query(
                    "spyName",
                    if f.format == "jfr" {
                        "javaspy"
                    } else {
                        "gospy"
                    },
                )
                .query("from", plan.from.to_string())
                .query("until", (plan.from + SLOT_S).to_string())
                .header("Content-Type", &f.content_type)
                .send(&body[..])
        };
        match result {
            Ok(mut resp) if resp.status().is_success() => {
                // Read the answer whole so the connection goes back to the pool.
                let _ = resp.body_mut().read_to_vec();
                Outcome::Accepted
            }
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    let text = resp
                        .body_mut()
                        .read_to_string()
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect::<String>();
                    *first = Some(format!("HTTP {status}: {}", text.trim()));
                }
                Outcome::Status(status)
            }
            Err(e) => {
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(format!("no answer: {e}"));
                }
                Outcome::Io
            }
        }
    }
}

/// Requests of one tenant sent in one window.
#[derive(Default, Clone, Copy)]
struct WindowTally {
    acked: u64,
    /// Refused by status (counted, not stored).
    refused: u64,
    /// No answer: may or may not have been stored.
    unanswered: u64,
    /// When the last acknowledgement of this window arrived (unix ms).
    last_ack_unix_ms: u64,
}

#[derive(Default)]
struct Tally {
    /// Per (tenant index, window), with `--window`.
    windows: BTreeMap<(usize, u64), WindowTally>,
    accepted: u64,
    /// Accepted requests per fixture.
    by_fixture: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    io: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, fixture: usize, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Accepted => {
                self.accepted += 1;
                if self.by_fixture.len() <= fixture {
                    self.by_fixture.resize(fixture + 1, 0);
                }
                self.by_fixture[fixture] += 1;
                self.latencies.push(took);
            }
            Outcome::Status(s) => *self.statuses.entry(s).or_default() += 1,
            Outcome::Io => self.io += 1,
        }
    }

    /// Counts an outcome of a request of `tenant` sent in `window`.
    fn add_window(&mut self, tenant: usize, window: u64, outcome: &Outcome) {
        let w = self.windows.entry((tenant, window)).or_default();
        match outcome {
            Outcome::Accepted => {
                w.acked += 1;
                w.last_ack_unix_ms = unix_ms();
            }
            Outcome::Status(_) => w.refused += 1,
            Outcome::Io => w.unanswered += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        for (k, o) in other.windows {
            let w = self.windows.entry(k).or_default();
            w.acked += o.acked;
            w.refused += o.refused;
            w.unanswered += o.unanswered;
            w.last_ack_unix_ms = w.last_ack_unix_ms.max(o.last_ack_unix_ms);
        }
        self.accepted += other.accepted;
        if self.by_fixture.len() < other.by_fixture.len() {
            self.by_fixture.resize(other.by_fixture.len(), 0);
        }
        for (i, n) in other.by_fixture.into_iter().enumerate() {
            self.by_fixture[i] += n;
        }
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.io += other.io;
        self.latencies.extend(other.latencies);
    }

    fn status(&self, s: u16) -> u64 {
        self.statuses.get(&s).copied().unwrap_or(0)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.files.is_empty() {
        bail!("give at least one --file");
    }
    if args.connect && args.window > 0 {
        bail!("--window labels /ingest pushes only, not --connect");
    }
    let tenants = TenantAuth::from_args(&args)?;
    let fixtures = args
        .files
        .iter()
        .map(|spec| {
            Fixture::load(
                spec,
                &args.app,
                args.churn,
                args.churn_variants,
                args.strip_lines,
                args.vary_values,
            )
            .and_then(|f| {
                if f.format == "jfr" && !args.jfr_raw {
                    f.sent_as_java_agent()
                } else {
                    Ok(f)
                }
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.connect {
        if let Some(f) = fixtures.iter().find(|f| !f.is_pprof()) {
            bail!(
                "--connect pushes pprof only; {} is {}",
                f.path.display(),
                f.format
            );
        }
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let first_error = Mutex::new(None);
    let pusher = Pusher {
        args: &args,
        tenants: &tenants,
        fixtures: &fixtures,
        agent: agent.clone(),
        first_error: &first_error,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    if args.day {
        let start = (now - 86_400) / 10 * 10;
        let t0 = Instant::now();
        let series = args.day_series.max(1);
        for i in 0..8_640u64 {
            for s in 0..series {
                let plan = Plan {
                    fixture: 0,
                    series: s,
                    from: start + i * 10,
                };
                let pod = match s {
                    0 => "day".to_string(),
                    s => format!("day-{s}"),
                };
                if !matches!(
                    pusher.push(&plan, Some("loadgen-day.cpu"), &pod, None),
                    Outcome::Accepted
                ) {
                    bail!(
                        "push {i} of series {s} failed: {}",
                        first_error.lock().unwrap().take().unwrap_or_default()
                    );
                }
            }
        }
        println!(
            "pushed {} profiles (one day of {series} series) in {:.1}s",
            8_640 * series,
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let planner = Planner::new(fixtures.len(), args.series, args.spread, now);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Tally::default());
    let before = args.pid.and_then(proc_stats);
    let peak_rss = AtomicU64::new(before.map(|b| b.1).unwrap_or(0));
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    std::thread::scope(|s| {
        for _ in 0..args.concurrency {
            let (pusher, planner, next, stop, total) = (&pusher, &planner, &next, &stop, &total);
            // Each connection sends its share of the rate on a fixed schedule.
            let interval = (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
            s.spawn(move || {
                let mut local = Tally::default();
                let mut due = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        due += interval;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let plan = planner.plan(next.fetch_add(1, Ordering::Relaxed));
                    let pod = format!("pod-{}", plan.series);
                    let t = Instant::now();
                    let window =
                        (args.window > 0).then(|| started.elapsed().as_secs() / args.window);
                    let outcome = pusher.push(&plan, None, &pod, window);
                    if let Some(w) = window {
                        let tenant = (plan.series % args.tenants.max(1) as u64) as usize;
                        local.add_window(tenant, w, &outcome);
                    }
                    let unanswered = matches!(outcome, Outcome::Io);
                    local.add(plan.fixture, outcome, t.elapsed());
                    if unanswered {
                        // The server is down (or restarting): do not spin on refused connects.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                total.lock().unwrap().merge(local);
            });
        }
        if let Some(pid) = args.pid {
            let (stop, peak) = (&stop, &peak_rss);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((_, rss, _)) = proc_stats(pid) {
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
    let mut tally = total.into_inner().unwrap();
    tally.latencies.sort();
    let lat = &tally.latencies;
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let n = tally.accepted;
    let refused = tally.status(429) + tally.status(503) + tally.status(413);
    let other_status: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| !matches!(s, 429 | 503 | 413))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{n} profiles accepted in {elapsed:.1}s = {:.0} profiles/s over {} series × {} fixture(s){}; \
         latency of accepted p50 {:?} p99 {:?}",
        n as f64 / elapsed,
        args.series,
        fixtures.len(),
        args.spread
            .map(|s| format!(", spread over {s} s"))
            .unwrap_or_default(),
        pct(0.5),
        pct(0.99)
    );
    println!(
        "refused: {refused} (429: {}, 503: {}, 413: {}); other HTTP errors: {other_status} {:?}; no answer: {}",
        tally.status(429),
        tally.status(503),
        tally.status(413),
        tally
            .statuses
            .iter()
            .filter(|(s, _)| !matches!(s, 429 | 503 | 413))
            .collect::<BTreeMap<_, _>>(),
        tally.io
    );
    if let Some(e) = first_error.lock().unwrap().as_ref() {
        println!("first refusal or error: {e}");
    }
    let mut server = None;
    if let (Some(pid), Some((cpu0, _, _))) = (args.pid, before) {
        if let Some((cpu1, rss, hwm)) = proc_stats(pid) {
            let ticks = 100.0; // USER_HZ on Linux
            let cpu_s = (cpu1 - cpu0) as f64 / ticks;
            let peak = peak_rss.load(Ordering::Relaxed).max(rss);
            let per_profile_ms = if n > 0 {
                cpu_s * 1000.0 / n as f64
            } else {
                0.0
            };
            println!(
                "server: {:.0}% CPU ({:.2} cores), {per_profile_ms:.3} ms CPU per accepted profile, \
                 peak RSS {} MB (VmHWM {} MB)",
                cpu_s / elapsed * 100.0,
                cpu_s / elapsed,
                peak / 1024,
                hwm / 1024
            );
            server = Some((cpu_s, per_profile_ms, peak, hwm));
        }
    }
    if let Some(path) = &args.json {
        let fixtures_json: Vec<serde_json::Value> = fixtures
            .iter()
            .enumerate()
            .map(|(i, f)| {
                serde_json::json!({
                    "file": f.path.display().to_string(),
                    "app": f.app,
                    "format": f.format,
                    "accepted": tally.by_fixture.get(i).copied().unwrap_or(0),
                    "totals_per_profile": f.totals.iter().cloned().collect::<BTreeMap<_, _>>(),
                })
            })
            .collect();
        let mut j = serde_json::json!({
            "seconds": elapsed,
            "series": args.series,
            "spread_s": args.spread,
            "churn": args.churn,
            "accepted": n,
            "accepted_per_s": n as f64 / elapsed,
            "refused_429": tally.status(429),
            "refused_503": tally.status(503),
            "refused_413": tally.status(413),
            "other_http_errors": other_status,
            "no_answer": tally.io,
            "p50_ms": pct(0.5).as_secs_f64() * 1000.0,
            "p99_ms": pct(0.99).as_secs_f64() * 1000.0,
            "fixtures": fixtures_json,
            "tenants": args.tenants,
            "started_unix_ms": started_unix_ms,
        });
        if args.window > 0 {
            let mut by_tenant = serde_json::Map::new();
            for ((tenant, window), w) in &tally.windows {
                let name = if args.tenants > 0 {
                    format!("t{tenant}")
                } else {
                    "default".to_string()
                };
                let entry = by_tenant
                    .entry(name)
                    .or_insert_with(|| serde_json::json!({}));
                entry[window.to_string()] = serde_json::json!({
                    "acked": w.acked,
                    "refused": w.refused,
                    "unanswered": w.unanswered,
                    "last_ack_unix_ms": w.last_ack_unix_ms,
                });
            }
            j["window_s"] = args.window.into();
            j["windows"] = by_tenant.into();
        }
        if let Some((cpu_s, per_profile_ms, peak, hwm)) = server {
            j["server_cpu_s"] = cpu_s.into();
            j["server_cpu_ms_per_profile"] = per_profile_ms.into();
            j["server_peak_rss_kb"] = peak.into();
            j["server_vmhwm_kb"] = hwm.into();
        }
        std::fs::write(path, format!("{j}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("3600"), Ok(3_600));
        assert!(parse_duration("5s").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn every_series_walks_every_slot_before_repeating() {
        let now = 1_700_000_005;
        let p = Planner::new(3, 5, Some(86_400), now);
        let mut seen = std::collections::HashSet::new();
        for i in 0..(3 * 5 * 8_640) {
            let plan = p.plan(i);
            assert!(plan.from < now && plan.from >= now - 86_400 - SLOT_S);
            assert_eq!(plan.from % SLOT_S, 0);
            assert!(seen.insert((plan.fixture, plan.series, plan.from)));
        }
        // Consecutive requests of one series land far apart in the window.
        let (a, b) = (p.plan(0).from, p.plan(15).from);
        assert!(a.abs_diff(b) > 3_600, "{a} {b}");
        // Without a spread, everything carries the start time.
        assert_eq!(Planner::new(1, 5, None, now).plan(7).from, now);
    }

    #[test]
    fn variants_follow_series_and_time() {
        assert_eq!(variant(0, 0, 24), 0);
        assert_eq!(variant(0, 3_600, 24), 1);
        assert_eq!(variant(1, 0, 24), 1);
        assert_eq!(variant(0, 86_400, 24), 0);
        assert_eq!(variant(3, 5, 1), 0);
    }

    #[test]
    fn tenants_follow_the_series_by_org_id_or_key() {
        let mut args = Args::parse_from(["loadgen", "--tenants", "3"]);
        let org = TenantAuth::from_args(&args).unwrap();
        assert_eq!(org.header(4), Some(("X-Scope-OrgID", "t1".to_string())));
        let path = std::env::temp_dir().join(format!("loadgen-keys-{}", std::process::id()));
        std::fs::write(
            &path, "k0
k1
",
        )
        .unwrap();
        args.key_file = Some(path.clone());
        let short = TenantAuth::from_args(&args).err().unwrap().to_string();
        assert!(short.contains("2 keys for 3 tenants"), "{short}");
        std::fs::write(
            &path,
            "k0
k1
k2
",
        )
        .unwrap();
        let keys = TenantAuth::from_args(&args).unwrap();
        assert_eq!(
            keys.header(5),
            Some(("Authorization", "Bearer k2".to_string()))
        );
        std::fs::remove_file(&path).unwrap();
        args.tenants = 0;
        assert!(TenantAuth::from_args(&args).unwrap().header(1).is_none());
    }

    #[test]
    fn window_tallies_merge() {
        let mut a = Tally::default();
        a.add_window(1, 0, &Outcome::Accepted);
        a.add_window(1, 0, &Outcome::Status(429));
        let mut b = Tally::default();
        b.add_window(1, 0, &Outcome::Accepted);
        b.add_window(1, 0, &Outcome::Io);
        b.add_window(2, 3, &Outcome::Accepted);
        a.merge(b);
        let w = a.windows[&(1, 0)];
        assert_eq!((w.acked, w.refused, w.unanswered), (2, 1, 1));
        assert!(w.last_ack_unix_ms > 0);
        assert_eq!(a.windows[&(2, 3)].acked, 1);
    }

    #[test]
    fn service_names() {
        assert_eq!(service_of("loadgen.cpu"), "loadgen");
        assert_eq!(service_of("loadgen"), "loadgen");
        assert_eq!(service_of("my.app"), "my.app");
    }
}
