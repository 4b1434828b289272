//! `top-functions`: a Kiln sink plugin. For every profile a pipeline stores it computes the
//! functions with the most self value and writes one JSON line per profile:
//!
//! ```json
//! {"service":"checkout","type":"cpu","labels":{"env":"prod"},"start_ns":…,"end_ns":…,
//!  "total":1234,"top":[{"function":"main.hash","self":800,"share":0.648}]}
//! ```
//!
//! Lines are appended to `/data/<file>` when the sandbox grants a directory, and POSTed
//! (`application/x-ndjson`, one request per batch) to `webhook` when set and allow-listed.
//!
//! Options: `top` (default 10), `file` (default `top-functions.jsonl`), `webhook` (none).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

wit_bindgen::generate!({ path: "../../wit", world: "sink" });

use kiln::plugin::host::{self, LogLevel};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    top: usize,
    file: String,
    webhook: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            top: 10,
            file: "top-functions.jsonl".into(),
            webhook: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    service: &'a str,
    #[serde(rename = "type")]
    profile_type: &'a str,
    labels: HashMap<&'a str, &'a str>,
    start_ns: i64,
    end_ns: i64,
    total: i64,
    top: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    function: &'a str,
    #[serde(rename = "self")]
    self_value: i64,
    share: f64,
}

thread_local! {
    static OPTIONS: RefCell<Options> = RefCell::new(Options::default());
}

/// The top `n` functions of `p` by self value (ties by name, so output is stable).
fn top_functions(p: &Profile, n: usize) -> Vec<Entry<'_>> {
    let mut by_function: HashMap<&str, i64> = HashMap::new();
    for s in &p.samples {
        if let Some(&leaf) = s.stack.last() {
            *by_function
                .entry(p.frames[leaf as usize].function.as_str())
                .or_default() += s.value;
        }
    }
    let total: i64 = p.samples.iter().map(|s| s.value).sum();
    let mut entries: Vec<(&str, i64)> = by_function.into_iter().collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    entries
        .into_iter()
        .take(n)
        .map(|(function, self_value)| Entry {
            function,
            self_value,
            share: if total == 0 {
                0.0
            } else {
                self_value as f64 / total as f64
            },
        })
        .collect()
}

fn to_line(p: &Profile, n: usize) -> Result<String, String> {
    let labels: HashMap<&str, &str> = p
        .labels
        .iter()
        .filter(|l| l.name != "service_name")
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    let service = p
        .labels
        .iter()
        .find(|l| l.name == "service_name")
        .map_or("", |l| l.value.as_str());
    let line = Line {
        service,
        profile_type: &p.profile_type.name,
        labels,
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        total: p.samples.iter().map(|s| s.value).sum(),
        top: top_functions(p, n),
    };
    serde_json::to_string(&line).map_err(|e| e.to_string())
}

struct TopFunctions;

impl Guest for TopFunctions {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "top-functions".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn init(options: String) -> Result<(), String> {
        let parsed: Options = serde_json::from_str(&options).map_err(|e| e.to_string())?;
        if parsed.top == 0 {
            return Err("`top` must be at least 1".into());
        }
        OPTIONS.with(|o| *o.borrow_mut() = parsed);
        Ok(())
    }

    fn consume(profiles: Vec<Profile>) -> Result<(), String> {
        OPTIONS.with(|o| {
            let o = o.borrow();
            let mut body = String::new();
            for p in &profiles {
                body.push_str(&to_line(p, o.top)?);
                body.push('\n');
            }
            // Only present when the sandbox grants a directory.
            if std::path::Path::new("/data").is_dir() {
                let path = format!("/data/{}", o.file);
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("opening {path}: {e}"))?;
                f.write_all(body.as_bytes())
                    .map_err(|e| format!("writing {path}: {e}"))?;
            }
            if let Some(url) = &o.webhook {
                let status = host::http_post(url, "application/x-ndjson", body.as_bytes())?;
                if !(200..300).contains(&status) {
                    host::log(LogLevel::Warn, &format!("webhook {url} answered {status}"));
                    return Err(format!("webhook {url} answered {status}"));
                }
            }
            Ok(())
        })
    }
}

export!(TopFunctions);
