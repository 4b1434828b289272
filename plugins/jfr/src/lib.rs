//! # kiln-jfr
//!
//! Decodes JDK Flight Recorder recordings — as the JDK writes them and as async-profiler
//! (pyroscope-java) writes them — into Kiln profiles. Our own parser, not a crate: the input is
//! untrusted, so every offset, count and reference is checked and allocation is bounded by the
//! bytes present; and only the few event types below are materialised (see `docs/jfr.md`).
//!
//! | event | profile types |
//! |---|---|
//! | `jdk.ExecutionSample` | `cpu` (`wall` when the recording's `event` setting says so) |
//! | `profiler.WallClockSample` | `wall` |
//! | `jdk.ObjectAllocationInNewTLAB` | `alloc_in_new_tlab_objects`, `alloc_in_new_tlab_bytes` |
//! | `jdk.ObjectAllocationOutsideTLAB` | `alloc_outside_tlab_objects`, `alloc_outside_tlab_bytes` |
//! | `jdk.ObjectAllocationSample` | `alloc_sample_objects`, `alloc_sample_bytes` |
//! | `jdk.JavaMonitorEnter`, `jdk.ThreadPark` | `lock_count`, `lock_duration` (ns) |
//! | `profiler.LiveObject` | `live` |
//!
//! Bodies: a raw recording (one or more chunks, gzip or not), or `multipart/form-data` with a
//! `jfr` part and an optional `labels` part (async-profiler's `LabelsSnapshot`, gzip or not),
//! whose contexts become labels of the events carrying a `contextId`.

mod parse;
mod reader;

use std::collections::HashMap;

use kiln_plugin_api::{
    multipart, DecodeError, Decoder, Frame, IngestMeta, Labels, Profile, ProfileMeta, ProfileType,
    Sample,
};
use parse::{Chunk, Value, HEADER_LEN};
use prost::Message;
use rustc_hash::FxHashMap;

/// pyroscope-java's `LabelsSnapshot`: context id → label ids, label id → string.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelsSnapshot {
    #[prost(map = "int64, message", tag = "1")]
    pub contexts: HashMap<i64, Context>,
    #[prost(map = "int64, string", tag = "2")]
    pub strings: HashMap<i64, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Context {
    #[prost(map = "int64, int64", tag = "1")]
    pub labels: HashMap<i64, i64>,
}

/// The JFR decoder.
#[derive(Debug, Clone)]
pub struct JfrDecoder {
    pub max_decompressed_bytes: u64,
}

impl Default for JfrDecoder {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 << 20,
        }
    }
}

impl Decoder for JfrDecoder {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let limit = self.max_decompressed_bytes;
        let boundary = meta.content_type.as_deref().and_then(multipart::boundary);
        let Some(boundary) = boundary else {
            let data = kiln_pprof::gunzip_if_needed(body, limit)?;
            return decode_jfr(&data, None, meta);
        };
        let boundary = boundary.map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let parts =
            multipart::parse(body, &boundary).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let jfr = parts
            .iter()
            .find(|p| p.name == "jfr")
            .ok_or_else(|| DecodeError::Malformed("multipart body has no 'jfr' part".into()))?;
        let labels = match parts.iter().find(|p| p.name == "labels") {
            Some(p) if !p.data.is_empty() => {
                let raw = kiln_pprof::gunzip_if_needed(p.data, limit)?;
                Some(LabelsSnapshot::decode(&raw[..]).map_err(|e| {
                    DecodeError::Malformed(format!(
                        "labels part is not a LabelsSnapshot protobuf: {e}"
                    ))
                })?)
            }
            _ => None,
        };
        let data = kiln_pprof::gunzip_if_needed(jfr.data, limit)?;
        decode_jfr(&data, labels.as_ref(), meta)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Execution,
    Wall,
    AllocInTlab,
    AllocOutsideTlab,
    AllocSample,
    Lock,
    Live,
    Setting,
}

fn kind(class: &str) -> Option<Kind> {
    Some(match class {
        "jdk.ExecutionSample" => Kind::Execution,
        "profiler.WallClockSample" => Kind::Wall,
        "jdk.ObjectAllocationInNewTLAB" => Kind::AllocInTlab,
        "jdk.ObjectAllocationOutsideTLAB" => Kind::AllocOutsideTlab,
        "jdk.ObjectAllocationSample" => Kind::AllocSample,
        "jdk.JavaMonitorEnter" | "jdk.ThreadPark" => Kind::Lock,
        "profiler.LiveObject" => Kind::Live,
        "jdk.ActiveSetting" => Kind::Setting,
        _ => return None,
    })
}

/// Accumulates samples over every chunk.
#[derive(Default)]
struct Acc {
    frames: Vec<Frame>,
    frame_ids: FxHashMap<String, u32>,
    /// (profile type name, context id) → stack → value. Execution samples are filed under
    /// `"execution"` until the recording's `event` setting names them.
    values: FxHashMap<(&'static str, i64), FxHashMap<Vec<u32>, i64>>,
    execution_as: Option<&'static str>,
}

impl Acc {
    fn frame(&mut self, name: String) -> u32 {
        if let Some(&id) = self.frame_ids.get(&name) {
            return id;
        }
        let id = self.frames.len() as u32;
        self.frames.push(Frame::named(name.clone()));
        self.frame_ids.insert(name, id);
        id
    }

    fn add(&mut self, ty: &'static str, ctx: i64, stack: &[u32], value: i64) {
        if value != 0 {
            *self
                .values
                .entry((ty, ctx))
                .or_default()
                .entry(stack.to_vec())
                .or_default() += value;
        }
    }
}

/// Decodes an uncompressed recording.
pub fn decode_jfr(
    data: &[u8],
    labels: Option<&LabelsSnapshot>,
    meta: &IngestMeta,
) -> Result<Vec<Profile>, DecodeError> {
    if data.len() < HEADER_LEN {
        return Err(DecodeError::Malformed(format!(
            "jfr: {} bytes is too short for a recording",
            data.len()
        )));
    }
    let mut acc = Acc::default();
    let mut at = 0;
    while at < data.len() {
        let chunk = Chunk::open(data, at)?;
        read_events(&chunk, &mut acc)?;
        at += chunk.header.size as usize;
    }
    Ok(profiles(acc, labels, meta))
}

fn read_events(chunk: &Chunk, acc: &mut Acc) -> Result<(), DecodeError> {
    let kinds: FxHashMap<i64, Kind> = chunk
        .classes
        .iter()
        .filter_map(|(&id, c)| kind(&c.name).map(|k| (id, k)))
        .collect();
    let mut stacks: FxHashMap<i64, Vec<u32>> = FxHashMap::default();
    let ns_per_tick = 1e9 / chunk.header.ticks_per_second as f64;
    let end = chunk.start + chunk.header.size as usize;
    let mut pos = chunk.start + HEADER_LEN;
    while pos < end {
        let mut r = reader::Reader::new(&chunk.bytes[..end], pos, chunk.header.compressed);
        let size = r.int(4)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0 && pos + s <= end)
            .ok_or_else(|| reader::err(pos, format!("event size {size} outside the chunk")))?;
        let type_id = r.int(8)?;
        if let Some(&k) = kinds.get(&type_id) {
            let mut body =
                reader::Reader::new(&chunk.bytes[..pos + size], r.pos, chunk.header.compressed);
            let event = chunk.value(&mut body, type_id, 0)?;
            record(chunk, acc, &mut stacks, type_id, k, &event, ns_per_tick)?;
        }
        pos += size;
    }
    Ok(())
}

fn int(v: Option<(&Value, &parse::Field)>) -> i64 {
    match v {
        Some((Value::Int(i), _)) => *i,
        Some((Value::Float(f), _)) => *f as i64,
        _ => 0,
    }
}

fn record(
    chunk: &Chunk,
    acc: &mut Acc,
    stacks: &mut FxHashMap<i64, Vec<u32>>,
    type_id: i64,
    kind: Kind,
    event: &Value,
    ns_per_tick: f64,
) -> Result<(), DecodeError> {
    let field = |name: &str| chunk.get(type_id, event, name);
    if kind == Kind::Setting {
        if let (Some((n, nf)), Some((v, vf))) = (field("name"), field("value")) {
            if chunk.string(n, nf).as_deref() == Some("event") {
                // async-profiler's itimer and cpu modes both sample CPU time.
                acc.execution_as = match chunk.string(v, vf).as_deref() {
                    Some("wall") => Some("wall"),
                    Some(_) => Some("cpu"),
                    None => acc.execution_as,
                };
            }
        }
        return Ok(());
    }
    let ctx = int(field("contextId"));
    let stack = match field("stackTrace") {
        // Key 0 is the null stack trace.
        Some((Value::Ref(0), _)) => Vec::new(),
        Some((Value::Ref(key), f)) => match stacks.get(key) {
            Some(s) => s.clone(),
            None => {
                let s = resolve_stack(chunk, acc, f.type_id, *key)?;
                stacks.insert(*key, s.clone());
                s
            }
        },
        _ => Vec::new(),
    };
    if stack.is_empty() {
        return Ok(());
    }
    match kind {
        Kind::Execution => acc.add("execution", ctx, &stack, 1),
        Kind::Wall => acc.add("wall", ctx, &stack, int(field("samples")).max(1)),
        Kind::AllocInTlab => {
            acc.add("alloc_in_new_tlab_objects", ctx, &stack, 1);
            acc.add(
                "alloc_in_new_tlab_bytes",
                ctx,
                &stack,
                int(field("tlabSize")),
            );
        }
        Kind::AllocOutsideTlab => {
            acc.add("alloc_outside_tlab_objects", ctx, &stack, 1);
            acc.add(
                "alloc_outside_tlab_bytes",
                ctx,
                &stack,
                int(field("allocationSize")),
            );
        }
        Kind::AllocSample => {
            acc.add("alloc_sample_objects", ctx, &stack, 1);
            acc.add("alloc_sample_bytes", ctx, &stack, int(field("weight")));
        }
        Kind::Lock => {
            acc.add("lock_count", ctx, &stack, 1);
            acc.add(
                "lock_duration",
                ctx,
                &stack,
                (int(field("duration")) as f64 * ns_per_tick) as i64,
            );
        }
        Kind::Live => acc.add("live", ctx, &stack, 1),
        Kind::Setting => {}
    }
    Ok(())
}

/// The frames of stack trace `key`, root first; a truncated trace starts with `[truncated]`.
fn resolve_stack(
    chunk: &Chunk,
    acc: &mut Acc,
    stack_type: i64,
    key: i64,
) -> Result<Vec<u32>, DecodeError> {
    let dangling =
        |what: &str| DecodeError::Malformed(format!("jfr: {what} refers to a missing constant"));
    let trace = chunk.pool(stack_type, key).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "jfr: stack trace {key} is not in the constant pool ({} stack traces there)",
            chunk.pools.get(&stack_type).map_or(0, |p| p.len())
        ))
    })?;
    let truncated = matches!(
        chunk.get(stack_type, trace, "truncated"),
        Some((Value::Bool(true), _))
    );
    let Some((Value::Arr(frames), frames_field)) = chunk.get(stack_type, trace, "frames") else {
        return Err(dangling("a stack trace without frames"));
    };
    let frame_type = frames_field.type_id;
    let mut out = Vec::with_capacity(frames.len() + 1);
    for frame in frames.iter().rev() {
        let (method_ref, method_field) = chunk
            .get(frame_type, frame, "method")
            .ok_or_else(|| dangling("a stack frame"))?;
        let method = chunk
            .deref(method_ref, method_field)
            .ok_or_else(|| dangling("a stack frame's method"))?;
        let method_type = method_field.type_id;
        let name = chunk
            .get(method_type, method, "name")
            .and_then(|(v, f)| chunk.string(v, f))
            .unwrap_or_else(|| "?".into());
        let class = chunk.get(method_type, method, "type").and_then(|(v, f)| {
            let class = chunk.deref(v, f)?;
            let (n, nf) = chunk.get(f.type_id, class, "name")?;
            chunk.string(n, nf)
        });
        let full = match class {
            Some(c) if !c.is_empty() => format!("{}.{name}", c.replace('/', ".")),
            _ => name,
        };
        out.push(acc.frame(full));
    }
    if truncated {
        let marker = acc.frame("[truncated]".into());
        out.insert(0, marker);
    }
    Ok(out)
}

fn profiles(mut acc: Acc, labels: Option<&LabelsSnapshot>, meta: &IngestMeta) -> Vec<Profile> {
    let execution_as = acc.execution_as.unwrap_or("cpu");
    let context_labels = |ctx: i64| -> Labels {
        let mut l = meta.labels.clone();
        if let Some(snapshot) = labels {
            if let Some(c) = snapshot.contexts.get(&ctx) {
                for (k, v) in &c.labels {
                    if let (Some(k), Some(v)) = (snapshot.strings.get(k), snapshot.strings.get(v)) {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        l
    };
    let mut out: Vec<Profile> = Vec::new();
    let mut keys: Vec<(&'static str, i64)> = acc.values.keys().copied().collect();
    keys.sort();
    for key in keys {
        let stacks = acc.values.remove(&key).expect("key listed");
        let name = if key.0 == "execution" {
            execution_as
        } else {
            key.0
        };
        let Some(profile_type) = ProfileType::well_known(name) else {
            continue;
        };
        let mut samples: Vec<Sample> = stacks
            .into_iter()
            .map(|(stack, value)| Sample { stack, value })
            .collect();
        samples.sort_by(|a, b| a.stack.cmp(&b.stack));
        out.push(Profile {
            labels: context_labels(key.1),
            profile_type,
            start_ns: meta.start_ns,
            end_ns: meta.end_ns,
            frames: acc.frames.clone(),
            samples,
            meta: ProfileMeta {
                spy_name: if meta.spy_name.is_empty() || meta.spy_name == "unknown" {
                    "javaspy".into()
                } else {
                    meta.spy_name.clone()
                },
                sample_rate: meta.sample_rate.unwrap_or(100),
            },
        });
    }
    out
}
