//! A native Kiln decoder plugin: Linux `perf script` output → CPU profiles.
//!
//! Build with `cargo build --release -p kiln-perf-script`, drop
//! `target/release/libkiln_perf_script.so` into the daemon's plugins directory, then push with
//! `POST /ingest?name=myapp.cpu&format=perf-script`.
//!
//! Each sample is a header line (`comm pid [cpu] time: period event:`) followed by indented frame
//! lines (`address symbol+offset (dso)`), leaf first, and a blank line. Every sample counts once;
//! `include_comm` (default true) puts the command name at the root, as `stackcollapse-perf` does.

use kiln_plugin_api::abi::FromConfig;
use kiln_plugin_api::{
    DecodeError, Decoder, Frame, IngestMeta, Profile, ProfileMeta, ProfileType, Sample,
};
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerfScriptDecoder {
    /// Put the command name at the root of each stack.
    pub include_comm: bool,
}

impl Default for PerfScriptDecoder {
    fn default() -> Self {
        Self { include_comm: true }
    }
}

impl FromConfig for PerfScriptDecoder {
    fn from_config(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(json).map_err(|e| format!("perf-script config: {e}"))
    }
}

/// `symbol+0x1f` → `symbol`; `[unknown]` stays.
fn symbol(frame_line: &str) -> Option<&str> {
    let mut parts = frame_line.trim().splitn(2, char::is_whitespace);
    let _address = parts.next()?;
    let rest = parts.next()?.trim();
    let rest = match rest.rfind(" (") {
        Some(i) if rest.ends_with(')') => &rest[..i],
        _ => rest,
    };
    let name = match rest.rfind("+0x") {
        Some(i) => &rest[..i],
        None => rest,
    };
    Some(name.trim()).filter(|n| !n.is_empty())
}

impl Decoder for PerfScriptDecoder {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let text = std::str::from_utf8(body)
            .map_err(|e| DecodeError::Malformed(format!("perf script is not UTF-8: {e}")))?;
        let mut frames: Vec<Frame> = Vec::new();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut stacks: HashMap<Vec<u32>, i64> = HashMap::new();
        let mut intern = |name: &str| -> u32 {
            *ids.entry(name.to_string()).or_insert_with(|| {
                frames.push(Frame::named(name));
                frames.len() as u32 - 1
            })
        };
        let mut current: Option<(String, Vec<String>)> = None;
        let mut flush = |sample: Option<(String, Vec<String>)>,
                         stacks: &mut HashMap<Vec<u32>, i64>| {
            if let Some((comm, leaf_first)) = sample {
                let mut stack: Vec<u32> = Vec::with_capacity(leaf_first.len() + 1);
                if self.include_comm {
                    stack.push(intern(&comm));
                }
                stack.extend(leaf_first.iter().rev().map(|f| intern(f)));
                if !stack.is_empty() {
                    *stacks.entry(stack).or_default() += 1;
                }
            }
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                flush(current.take(), &mut stacks);
            } else if line.starts_with(char::is_whitespace) {
                let Some((_, frames)) = current.as_mut() else {
                    return Err(DecodeError::Malformed(format!(
                        "line {}: a frame line before any sample header",
                        n + 1
                    )));
                };
                let name = symbol(line).ok_or_else(|| {
                    DecodeError::Malformed(format!(
                        "line {}: expected `address symbol (dso)`",
                        n + 1
                    ))
                })?;
                frames.push(name.to_string());
            } else {
                flush(current.take(), &mut stacks);
                let comm = line.split_whitespace().next().unwrap_or("").to_string();
                if !line.contains(':') {
                    return Err(DecodeError::Malformed(format!(
                        "line {}: not a perf script sample header",
                        n + 1
                    )));
                }
                current = Some((comm, Vec::new()));
            }
        }
        flush(current.take(), &mut stacks);
        if stacks.is_empty() {
            return Ok(Vec::new());
        }
        let name = meta.type_suffix.as_deref().unwrap_or("cpu");
        let profile_type = ProfileType::well_known(name)
            .unwrap_or_else(|| ProfileType::well_known("cpu").expect("cpu"));
        let mut samples: Vec<Sample> = stacks
            .into_iter()
            .map(|(stack, value)| Sample { stack, value })
            .collect();
        samples.sort_by(|a, b| a.stack.cmp(&b.stack));
        Ok(vec![Profile {
            labels: meta.labels.clone(),
            profile_type,
            start_ns: meta.start_ns,
            end_ns: meta.end_ns,
            frames,
            samples,
            meta: ProfileMeta {
                spy_name: "perf".into(),
                sample_rate: meta.sample_rate.unwrap_or(0),
            },
        }])
    }
}

kiln_plugin_api::export_plugin!(decoder, "perf-script", "0.1.0", PerfScriptDecoder);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::Labels;

    #[test]
    fn parses_the_fixture() {
        let body = include_bytes!("../testdata/perf-script.txt");
        let meta = IngestMeta {
            labels: Labels::from_pairs([("service_name", "app")]),
            ..Default::default()
        };
        let p = &PerfScriptDecoder::default().decode(body, &meta).unwrap()[0];
        p.validate().unwrap();
        let stacks: Vec<(String, i64)> = p
            .samples
            .iter()
            .map(|s| (p.stack_names(s).collect::<Vec<_>>().join(";"), s.value))
            .collect();
        assert!(
            stacks.contains(&("myapp;_start;main;compute_hash;sha256_block".into(), 2)),
            "{stacks:?}"
        );
        assert!(
            stacks.contains(&(
                "swapper;secondary_startup_64;cpu_idle;native_safe_halt".into(),
                1
            )),
            "{stacks:?}"
        );
        assert_eq!(p.total(), 4);
    }

    #[test]
    fn refuses_frames_without_a_header() {
        let err = PerfScriptDecoder::default()
            .decode(b"\t55d0a1 main+0x1 (/bin/x)\n", &IngestMeta::default())
            .unwrap_err();
        assert!(err.to_string().contains("line 1"));
        assert!(PerfScriptDecoder::from_config(r#"{"bogus": 1}"#)
            .unwrap_err()
            .contains("bogus"));
    }
}
