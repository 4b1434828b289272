//! Request bodies: real fixtures, loaded once, turned into a small pool of precomputed bodies,
//! and stamped per request with the request's time at the cost of a memory copy.
//!
//! Grafana Pyroscope files a pprof by its `time_nanos` (the request's `from` is only a fallback
//! when the field is unset), so a profile pushed for a past time slot must carry that time
//! inside. Re-encoding and re-compressing a pprof per request would cost the load generator about
//! as much CPU as the server spends decoding it, so each body is prepared once:
//!
//! - the pprof is decoded, `time_nanos` and `duration_nanos` are cleared (so they are absent from
//!   the encoding), and it is compressed as a gzip member whose deflate stream ends with a sync
//!   flush (byte-aligned, not final);
//! - per request, one final *stored* deflate block is appended holding the two fields, followed
//!   by the gzip trailer (CRC-32 continued from the prefix's, total length).
//!
//! Protobuf keeps the last value of a scalar field, and the two fields were removed from the
//! prefix, so every decoder reads the appended values; the gzip stream is one ordinary member.
//!
//! With churn, a fraction of function names is renamed in each of `variants` deterministic
//! variants; a request's variant follows its series and time slot, so the distinct stacks of a
//! series grow over the day the way deploys make them grow.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use kiln_pprof::proto;
use prost::Message;

/// One fixture as the generator pushes it.
pub struct Fixture {
    /// The file it came from.
    pub path: PathBuf,
    /// Application name sent in `name=` (may carry a `.type` suffix).
    pub app: String,
    /// `format=` query parameter.
    pub format: &'static str,
    /// Pyroscope's `__name__` for a Connect push of this profile.
    pub metric: &'static str,
    /// For a pprof: each sample type (`type:unit`) and the sum of its values in one profile,
    /// to check what a server returns against what it accepted.
    pub totals: Vec<(String, i64)>,
    /// `Content-Type` of the request.
    pub content_type: String,
    body: Body,
}

/// The multipart boundary of a JFR sent as the Java agent sends it.
const BOUNDARY: &str = "kiln-loadgen-7d1f0c";

enum Body {
    /// Sent as is (JFR, collapsed text): their time comes from `from`/`until`.
    Static(Arc<Vec<u8>>),
    /// A pprof per churn variant, stamped per request.
    Pprof(Vec<StampedPprof>),
    /// A pprof per churn variant whose values are varied per request, then encoded and
    /// compressed for it.
    Varied(Vec<proto::Profile>),
}

/// A gzip'd pprof missing its time fields and its last deflate block (see the module docs).
struct StampedPprof {
    /// Gzip header and a sync-flushed, non-final deflate stream of the encoded profile.
    prefix: Vec<u8>,
    /// CRC-32 of the uncompressed profile so far.
    crc: crc32fast::Hasher,
    /// Uncompressed length so far.
    len: u32,
}

impl StampedPprof {
    fn new(raw: &[u8]) -> anyhow::Result<Self> {
        // Gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
        let mut prefix = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(raw)?;
        // A sync flush: everything so far is emitted, ending on a byte boundary, not final.
        enc.flush()?;
        prefix.extend_from_slice(enc.get_ref());
        let mut crc = crc32fast::Hasher::new();
        crc.update(raw);
        Ok(Self {
            prefix,
            crc,
            len: u32::try_from(raw.len()).context("profile larger than 4 GiB")?,
        })
    }

    /// The gzip'd pprof with `time_nanos` and `duration_nanos` set.
    fn stamp(&self, time_nanos: i64, duration_nanos: i64) -> Vec<u8> {
        let mut tail = Vec::with_capacity(24);
        for (tag, v) in [(9u64, time_nanos), (10, duration_nanos)] {
            prost::encoding::encode_key(tag as u32, prost::encoding::WireType::Varint, &mut tail);
            prost::encoding::encode_varint(v as u64, &mut tail);
        }
        let mut out = Vec::with_capacity(self.prefix.len() + tail.len() + 13);
        out.extend_from_slice(&self.prefix);
        // Final stored block: BFINAL=1, BTYPE=00, padding to the byte; LEN, NLEN; the bytes.
        let n = tail.len() as u16;
        out.push(0x01);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(&tail);
        let mut crc = self.crc.clone();
        crc.update(&tail);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&(self.len.wrapping_add(tail.len() as u32)).to_le_bytes());
        out
    }
}

impl Fixture {
    /// Loads `spec` (`PATH` or `PATH@APP`), preparing `variants` churned copies of a pprof.
    /// With `strip_lines`, source locations are removed (every line 0, no file, no start line);
    /// with `vary_values`, every request's sample values differ ([`vary_values`]).
    pub fn load(
        spec: &str,
        default_app: &str,
        churn: f64,
        variants: u32,
        strip_lines: bool,
        vary_values: bool,
    ) -> anyhow::Result<Self> {
        let (path, app) = match spec.rsplit_once('@') {
            Some((p, a)) if !a.is_empty() && !a.contains('/') => (p, a),
            _ => (spec, default_app),
        };
        let path = PathBuf::from(path);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let format = format_of(&path);
        let mut totals = Vec::new();
        let (metric, body) = if format == "pprof" {
            let mut profile = decode_pprof(&bytes)
                .with_context(|| format!("{} is not a pprof profile", path.display()))?;
            if strip_lines {
                for f in &mut profile.function {
                    f.filename = 0;
                    f.start_line = 0;
                }
                for l in &mut profile.location {
                    for line in &mut l.line {
                        line.line = 0;
                    }
                }
            }
            let metric = pyroscope_metric(&profile);
            totals = sample_totals(&profile);
            let variants = if churn > 0.0 { variants.max(1) } else { 1 };
            let mut pool = Vec::with_capacity(variants as usize);
            for v in 0..variants {
                let mut p = profile.clone();
                if churn > 0.0 {
                    rename_functions(&mut p, churn, v);
                }
                p.time_nanos = 0;
                p.duration_nanos = 0;
                pool.push(p);
            }
            if vary_values {
                (metric, Body::Varied(pool))
            } else {
                let stamped = pool
                    .iter()
                    .map(|p| StampedPprof::new(&p.encode_to_vec()))
                    .collect::<anyhow::Result<_>>()?;
                (metric, Body::Pprof(stamped))
            }
        } else {
            if vary_values {
                bail!(
                    "{}: values are varied in pprof profiles only",
                    path.display()
                );
            }
            let metric = if format == "jfr" { "process_cpu" } else { "" };
            (metric, Body::Static(Arc::new(bytes)))
        };
        Ok(Self {
            path,
            app: app.to_string(),
            format,
            metric,
            totals,
            content_type: "application/octet-stream".into(),
            body,
        })
    }

    /// A JFR recording as the official Java agent sends it: a multipart form whose `jfr` part
    /// is the recording gzip'd (the agent's default), instead of the raw recording.
    pub fn sent_as_java_agent(mut self) -> anyhow::Result<Self> {
        let Body::Static(raw) = &self.body else {
            bail!("{} is not sent as is", self.path.display());
        };
        let gzipped = if raw.starts_with(&[0x1f, 0x8b]) {
            raw.to_vec()
        } else {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(raw)?;
            gz.finish()?
        };
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"jfr\"; filename=\"jfr\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&gzipped);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        self.body = Body::Static(Arc::new(body));
        self.content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        Ok(self)
    }

    /// The body for a request of series `series` and churn variant `variant` at `from` (unix
    /// seconds) lasting `duration_s`. Varied values differ per series as well as per push.
    pub fn body(&self, series: u64, variant: u32, from: u64, duration_s: u64) -> Arc<Vec<u8>> {
        match &self.body {
            Body::Static(b) => b.clone(),
            Body::Pprof(pool) => Arc::new(pool[variant as usize % pool.len()].stamp(
                (from as i64) * 1_000_000_000,
                (duration_s as i64) * 1_000_000_000,
            )),
            Body::Varied(pool) => {
                let mut p = pool[variant as usize % pool.len()].clone();
                vary_values(
                    &mut p,
                    mix(from ^ (u64::from(variant) << 40) ^ (series << 48)),
                );
                p.time_nanos = (from as i64) * 1_000_000_000;
                p.duration_nanos = (duration_s as i64) * 1_000_000_000;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&p.encode_to_vec())
                    .expect("writing to memory does not fail");
                Arc::new(gz.finish().expect("writing to memory does not fail"))
            }
        }
    }

    /// Whether its time is stamped into the body (else only `from`/`until` carry it).
    pub fn is_pprof(&self) -> bool {
        matches!(self.body, Body::Pprof(_) | Body::Varied(_))
    }
}

/// The `format=` parameter for a file, by its name.
fn format_of(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".jfr") || name.ends_with(".jfr.gz") {
        "jfr"
    } else if name.ends_with(".txt") || name.ends_with(".folded") || name.ends_with(".collapsed") {
        "folded"
    } else {
        "pprof"
    }
}

fn decode_pprof(bytes: &[u8]) -> anyhow::Result<proto::Profile> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
        out
    } else {
        bytes.to_vec()
    };
    let p = proto::Profile::decode(&raw[..])?;
    if p.sample_type.is_empty() {
        bail!("no sample types");
    }
    Ok(p)
}

/// Each sample type as `type:unit` with the sum of its values.
fn sample_totals(p: &proto::Profile) -> Vec<(String, i64)> {
    let s = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    p.sample_type
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let sum = p.sample.iter().filter_map(|x| x.value.get(i)).sum();
            (format!("{}:{}", s(t.r#type), s(t.unit)), sum)
        })
        .collect()
}

/// Grafana Pyroscope's `__name__` for a pprof's sample types (as its `/ingest` derives it).
fn pyroscope_metric(p: &proto::Profile) -> &'static str {
    let names: Vec<&str> = p
        .sample_type
        .iter()
        .filter_map(|t| p.string_table.get(t.r#type as usize).map(String::as_str))
        .collect();
    if names.contains(&"wall") {
        return "wall";
    }
    for st in names {
        if st.contains("cpu") {
            return "process_cpu";
        }
        if st.contains("alloc_") || st.contains("inuse_") || st == "space" || st == "objects" {
            return "memory";
        }
        if st.contains("mutex_") || st == "contentions" || st == "delay" {
            return "mutex";
        }
        if st.contains("block_") {
            return "block";
        }
        if st.contains("goroutine") {
            return "goroutines";
        }
    }
    "process_cpu"
}

/// A deterministic 64-bit mix (splitmix64's finalizer).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Varies each sample's values as a sampling profiler's counts vary from one interval to the
/// next: a replayed profile repeats its values exactly, which compresses as no program's
/// profiles do. Each sample's first value (a count, for a CPU profile) is drawn from a Poisson
/// distribution whose mean is the fixture's count, so a stack seen once per interval is absent
/// from about a third of them; the other values scale with it (CPU time stays its count times
/// the period), and samples drawn at zero are left out.
fn vary_values(p: &mut proto::Profile, seed: u64) {
    let mut draws = 0u64;
    let mut uniform = || {
        draws += 1;
        // 53 random bits in (0, 1].
        ((mix(seed.wrapping_add(draws)) >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    p.sample.retain_mut(|s| {
        let Some(&first) = s.value.first() else {
            return true;
        };
        if first <= 0 {
            return true;
        }
        let mean = first as f64;
        let drawn = if mean > 30.0 {
            // Normal approximation (Box–Muller).
            let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            (mean + mean.sqrt() * z).round().max(0.0) as i64
        } else {
            // Knuth's method: count uniform draws until their product falls below e^-mean.
            let (limit, mut product, mut k) = ((-mean).exp(), 1.0, -1i64);
            while product > limit {
                product *= uniform();
                k += 1;
            }
            k
        };
        for v in &mut s.value {
            *v = (*v as i128 * drawn as i128 / first as i128) as i64;
        }
        drawn > 0
    });
}

/// Renames a `fraction` of the functions (chosen by a hash of function id and variant) to
/// `name'v<variant>`, as a new build of the program would change some of them.
fn rename_functions(p: &mut proto::Profile, fraction: f64, variant: u32) {
    let threshold = (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let functions = std::mem::take(&mut p.function);
    p.function = functions
        .into_iter()
        .map(|mut f| {
            if mix(f.id ^ (u64::from(variant) << 40)) <= threshold {
                let old = p
                    .string_table
                    .get(f.name as usize)
                    .cloned()
                    .unwrap_or_default();
                p.string_table.push(format!("{old}'v{variant}"));
                f.name = p.string_table.len() as i64 - 1;
                f.system_name = f.name;
            }
            f
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata")
            .join(name)
    }

    #[test]
    fn stamped_body_is_one_gzip_member_with_the_new_time() {
        let f = Fixture::load(
            fixture("go-cpu.pb.gz").to_str().unwrap(),
            "a",
            0.0,
            1,
            false,
            false,
        )
        .unwrap();
        let original = decode_pprof(&std::fs::read(fixture("go-cpu.pb.gz")).unwrap()).unwrap();
        let body = f.body(0, 0, 1_700_000_000, 10);
        // A single-member decoder must read it whole (the CRC and length are checked).
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .unwrap();
        let p = proto::Profile::decode(&raw[..]).unwrap();
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 10_000_000_000);
        assert_eq!(p.sample, original.sample);
        assert_eq!(p.function, original.function);
        assert_eq!(f.metric, "process_cpu");
        assert_eq!(f.format, "pprof");
        let ns = f
            .totals
            .iter()
            .find(|t| t.0 == "cpu:nanoseconds")
            .unwrap()
            .1;
        let samples = f.totals.iter().find(|t| t.0 == "samples:count").unwrap().1;
        assert!(ns > 0 && samples > 0 && ns % samples == 0, "{ns} {samples}");
    }

    #[test]
    fn churn_renames_some_functions_per_variant() {
        let path = fixture("go-cpu.pb.gz");
        let f = Fixture::load(path.to_str().unwrap(), "a", 0.2, 4, false, false).unwrap();
        let names = |v: u32| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&f.body(0, v, 1, 10)[..])
                .read_to_end(&mut raw)
                .unwrap();
            let p = proto::Profile::decode(&raw[..]).unwrap();
            p.function
                .iter()
                .map(|f| p.string_table[f.name as usize].clone())
                .collect::<Vec<_>>()
        };
        let (a, b) = (names(0), names(1));
        let renamed = a.iter().filter(|n| n.ends_with("'v0")).count();
        assert!(
            renamed > 0 && renamed < a.len() / 2,
            "{renamed} of {}",
            a.len()
        );
        assert_ne!(a, b);
        assert_eq!(a, names(4), "variants are a fixed pool");
    }

    #[test]
    fn varied_values_differ_per_request_and_keep_cpu_time_a_multiple_of_the_period() {
        let path = fixture("go-cpu.pb.gz");
        let f = Fixture::load(path.to_str().unwrap(), "a", 0.0, 1, false, true).unwrap();
        let original = decode_pprof(&std::fs::read(&path).unwrap()).unwrap();
        let profile = |from: u64| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&f.body(0, 0, from, 10)[..])
                .read_to_end(&mut raw)
                .unwrap();
            proto::Profile::decode(&raw[..]).unwrap()
        };
        let (a, b) = (profile(1_000), profile(1_010));
        assert_eq!(a.time_nanos, 1_000_000_000_000);
        assert_eq!(a.function, original.function);
        assert_ne!(a.sample, b.sample, "each push's values differ");
        assert_eq!(a.sample, profile(1_000).sample, "deterministic");
        // Counts of 1 (most of a 10 s CPU profile's stacks) drawn at zero leave their stacks
        // out; the others keep their stack, cpu time staying count × period.
        let original_count: i64 = original.sample.iter().map(|s| s.value[0]).sum();
        let count: i64 = a.sample.iter().map(|s| s.value[0]).sum();
        assert!(
            a.sample.len() * 10 < original.sample.len() * 8
                && a.sample.len() * 2 > original.sample.len(),
            "{} of {} stacks",
            a.sample.len(),
            original.sample.len()
        );
        assert!(
            (count - original_count).abs() * 10 < original_count,
            "{count} against {original_count} samples in all"
        );
        for s in &a.sample {
            let o = original
                .sample
                .iter()
                .find(|o| o.location_id == s.location_id)
                .expect("a stack of the fixture");
            assert!(s.value[0] >= 1, "{:?} from {:?}", s.value, o.value);
            assert_eq!(
                s.value[1],
                s.value[0] * original.period,
                "cpu time is count × period"
            );
        }
        assert!(Fixture::load(
            fixture("java-jdk.jfr").to_str().unwrap(),
            "a",
            0.0,
            1,
            false,
            true
        )
        .is_err());
    }

    #[test]
    fn formats_and_apps_from_the_spec() {
        let f = Fixture::load(
            &format!("{}@java-app", fixture("java-jdk.jfr").display()),
            "a",
            0.0,
            1,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            (f.format, f.app.as_str(), f.is_pprof()),
            ("jfr", "java-app", false)
        );
        let raw = f.body(0, 0, 1, 10);
        let f = f.sent_as_java_agent().unwrap();
        assert!(f.content_type.starts_with("multipart/form-data; boundary="));
        let form = f.body(0, 0, 1, 10);
        assert!(form.len() < raw.len() / 2, "the recording is gzip'd");
        let start = form.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let end = form.len() - format!("\r\n--{BOUNDARY}--\r\n").len();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&form[start..end])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(&unzipped, raw.as_ref());
        let f = Fixture::load(
            fixture("go-heap.pb.gz").to_str().unwrap(),
            "a",
            0.0,
            1,
            false,
            false,
        )
        .unwrap();
        assert_eq!((f.metric, f.app.as_str()), ("memory", "a"));
    }
}
