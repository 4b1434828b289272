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
//! Options: `top` (default 10), `file` (default `top-functions.jsonl`), `webhook` (none),
//! `types` (profile type names to receive, such as `["cpu"]`; default every type).
//!
//! Built against `kiln:plugin@0.3.0`: profiles arrive with their strings as ids into a table
//! this instance keeps ([`Strings`]), each string sent once, and a profile with the previous
//! one's frames and stacks (`same_stacks`) arrives with its values alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;

use serde::{Deserialize, Serialize};

wit_bindgen::generate!({ path: "../../wit", world: "sink" });

use kiln::plugin::host::{self, LogLevel};
use kiln::plugin::types::{InternedProfile, StringDelta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    top: usize,
    file: String,
    webhook: Option<String>,
    types: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            top: 10,
            file: "top-functions.jsonl".into(),
            webhook: None,
            types: Vec::new(),
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

/// The instance's string table: what the host sent so far, by id.
#[derive(Default)]
struct Strings(Vec<String>);

impl Strings {
    /// Applies a batch's delta; done first, so the table follows the host even if the batch
    /// then fails.
    fn apply(&mut self, delta: StringDelta) {
        if delta.reset {
            self.0.clear();
        }
        self.0.extend(delta.added);
    }

    fn get(&self, id: u32) -> &str {
        self.0.get(id as usize).map_or("", String::as_str)
    }
}

thread_local! {
    static STRINGS: RefCell<Strings> = RefCell::new(Strings::default());
    static OPTIONS: RefCell<Options> = RefCell::new(Options::default());
    /// The output file, opened on first use and kept open (in append mode, so `copytruncate`
    /// rotation works); `None` inside when the sandbox grants no directory.
    static OUTPUT: RefCell<Option<Option<File>>> = const { RefCell::new(None) };
}

/// Appends `bytes` to `/data/<file>` when the sandbox grants a directory.
fn append_to_file(file: &str, bytes: &[u8]) -> Result<(), String> {
    let path = format!("/data/{file}");
    OUTPUT.with(|output| {
        let mut output = output.borrow_mut();
        if output.is_none() {
            // `/data` exists only when the sandbox grants a directory.
            let granted = std::path::Path::new("/data").is_dir();
            let opened = granted
                .then(|| OpenOptions::new().create(true).append(true).open(&path))
                .transpose()
                .map_err(|e| format!("opening {path}: {e}"))?;
            *output = Some(opened);
        }
        let Some(Some(f)) = output.as_mut() else {
            return Ok(());
        };
        f.write_all(bytes).map_err(|e| {
            // Reopen on the next batch: the file may have been moved away.
            *output = None;
            format!("writing {path}: {e}")
        })
    })
}

/// The top `n` functions by self value (ties by name, so output is stable) of `values`, the
/// samples of `shape`: its own, or those of a profile with its frames and stacks.
fn top_functions<'a>(
    shape: &InternedProfile,
    values: &[i64],
    strings: &'a Strings,
    n: usize,
) -> Vec<Entry<'a>> {
    let p = shape;
    // Self value per frame first (an array index per sample), then per function: several
    // frames may share a function (different lines). Functions are string ids: sorting the
    // (function, value) pairs of the frames with self value groups a function's frames
    // together, with no hashing.
    let mut by_frame = vec![0i64; p.frame_functions.len()];
    let mut end = 0usize;
    for (&len, &value) in p.stack_lens.iter().zip(values) {
        end += len as usize;
        let leaf = if len == 0 {
            None
        } else {
            p.stacks.get(end - 1)
        };
        if let Some(slot) = leaf.and_then(|&leaf| by_frame.get_mut(leaf as usize)) {
            *slot += value;
        }
    }
    let mut by_function: Vec<(u32, i64)> = p
        .frame_functions
        .iter()
        .zip(&by_frame)
        .filter(|(_, &value)| value != 0)
        .map(|(&function, &value)| (function, value))
        .collect();
    by_function.sort_unstable_by_key(|&(function, _)| function);
    by_function.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    let total: i64 = values.iter().sum();
    let mut entries: Vec<(&str, i64)> = by_function
        .into_iter()
        .map(|(id, value)| (strings.get(id), value))
        .collect();
    let order = |a: &(&str, i64), b: &(&str, i64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
    // Only the first `n` need to be in order.
    if entries.len() > n {
        entries.select_nth_unstable_by(n - 1, order);
        entries.truncate(n);
    }
    entries.sort_by(order);
    entries
        .into_iter()
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

/// `shape`: the profile whose frames and stacks `p` has (`p` itself unless `same_stacks`).
fn to_line(
    p: &InternedProfile,
    shape: &InternedProfile,
    strings: &Strings,
    n: usize,
) -> Result<String, String> {
    let mut labels = HashMap::new();
    let mut service = "";
    for pair in p.labels.chunks_exact(2) {
        let (name, value) = (strings.get(pair[0]), strings.get(pair[1]));
        if name == "service_name" {
            service = value;
        } else {
            labels.insert(name, value);
        }
    }
    let line = Line {
        service,
        profile_type: strings.get(p.profile_type.name),
        labels,
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        total: p.values.iter().sum(),
        top: top_functions(shape, &p.values, strings, n),
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

    fn interest() -> SinkInterest {
        SinkInterest {
            profile_types: OPTIONS.with(|o| o.borrow().types.clone()),
            files_and_lines: false,
        }
    }

    fn consume(batch: SinkBatch) -> Result<(), String> {
        STRINGS.with(|strings| {
            let mut strings = strings.borrow_mut();
            strings.apply(batch.strings);
            OPTIONS.with(|o| {
                let o = o.borrow();
                let mut body = String::new();
                let mut shape: Option<&InternedProfile> = None;
                for p in &batch.profiles {
                    let own = match shape {
                        Some(previous) if p.same_stacks => previous,
                        _ => p,
                    };
                    shape = Some(own);
                    body.push_str(&to_line(p, own, &strings, o.top)?);
                    body.push('\n');
                }
                append_to_file(&o.file, body.as_bytes())?;
                if let Some(url) = &o.webhook {
                    let status = host::http_post(url, "application/x-ndjson", body.as_bytes())?;
                    if !(200..300).contains(&status) {
                        host::log(LogLevel::Warn, &format!("webhook {url} answered {status}"));
                        return Err(format!("webhook {url} answered {status}"));
                    }
                }
                Ok(())
            })
        })
    }
}

export!(TopFunctions);
