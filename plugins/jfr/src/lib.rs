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
mod symbols;

use std::collections::HashMap;
use std::rc::Rc;

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
    Monitor,
    Park,
    Live,
    Malloc,
    Setting,
}

fn kind(class: &str) -> Option<Kind> {
    Some(match class {
        "jdk.ExecutionSample" => Kind::Execution,
        "profiler.WallClockSample" => Kind::Wall,
        "jdk.ObjectAllocationInNewTLAB" => Kind::AllocInTlab,
        "jdk.ObjectAllocationOutsideTLAB" => Kind::AllocOutsideTlab,
        "jdk.ObjectAllocationSample" => Kind::AllocSample,
        "jdk.JavaMonitorEnter" => Kind::Monitor,
        "jdk.ThreadPark" => Kind::Park,
        "profiler.LiveObject" => Kind::Live,
        "profiler.Malloc" => Kind::Malloc,
        "jdk.ActiveSetting" => Kind::Setting,
        _ => return None,
    })
}

/// The thread state of a running thread, as the JDK and async-profiler name it.
const STATE_RUNNABLE: &str = "STATE_RUNNABLE";
/// The state async-profiler gives a thread it found off-CPU.
const STATE_SLEEPING: &str = "STATE_SLEEPING";

/// What was skipped while decoding, reported as `kiln_decode_skipped_total{format="jfr",reason}`.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Events of types no profile type is made from (GC, CPU load, class loading…).
    pub unprofiled_events: u64,
    /// Events whose body did not decode against the chunk's metadata.
    pub malformed_events: u64,
    /// Execution samples without a thread state the constant pool resolves: not counted as CPU.
    pub unknown_thread_states: u64,
    /// Samples whose stack trace is not in the constant pool.
    pub missing_stack_traces: u64,
    /// Frames whose method or class is not in the constant pool (the rest of the stack is kept).
    pub missing_frames: u64,
    /// Chunks after the first that did not open (truncated or corrupt tail of a recording).
    pub malformed_chunks: u64,
}

impl Skipped {
    fn report(&self) {
        use kiln_plugin_api::skipped::record;
        record("jfr", "unprofiled_event", self.unprofiled_events);
        record("jfr", "malformed_event", self.malformed_events);
        record("jfr", "unknown_thread_state", self.unknown_thread_states);
        record("jfr", "missing_stack_trace", self.missing_stack_traces);
        record("jfr", "missing_frame", self.missing_frames);
        record("jfr", "malformed_chunk", self.malformed_chunks);
    }
}

/// Accumulates samples over every chunk.
#[derive(Default)]
struct Acc {
    /// Function names, interned; frames are (function, line) pairs.
    functions: Vec<String>,
    function_ids: FxHashMap<String, u32>,
    frames: Vec<Frame>,
    frame_ids: FxHashMap<(u32, u32), u32>,
    /// (profile type name, context id) → stack → value.
    values: FxHashMap<(&'static str, i64), FxHashMap<Vec<u32>, i64>>,
    /// The recording's `event` setting as last seen (async-profiler writes `cpu`, `itimer`,
    /// `wall`, …); it applies to the samples that follow it, across chunks.
    event: String,
    skipped: Skipped,
}

impl Acc {
    fn function(&mut self, name: String) -> u32 {
        if let Some(&id) = self.function_ids.get(&name) {
            return id;
        }
        let id = self.functions.len() as u32;
        self.functions.push(name.clone());
        self.function_ids.insert(name, id);
        id
    }

    /// The frame of `function` at `line` (0: unknown). Views group frames by function; the
    /// line reaches exports that carry lines (pprof).
    fn frame(&mut self, function: u32, line: u32) -> u32 {
        if let Some(&id) = self.frame_ids.get(&(function, line)) {
            return id;
        }
        let id = self.frames.len() as u32;
        self.frames.push(Frame {
            function: self.functions[function as usize].clone(),
            line,
            ..Frame::default()
        });
        self.frame_ids.insert((function, line), id);
        id
    }

    fn add(&mut self, ty: &'static str, ctx: i64, stack: &[u32], value: i64) {
        if value != 0 {
            let stacks = self.values.entry((ty, ctx)).or_default();
            // Look up by slice first: most samples repeat a stack already seen.
            match stacks.get_mut(stack) {
                Some(v) => *v += value,
                None => {
                    stacks.insert(stack.to_vec(), value);
                }
            }
        }
    }
}

/// Decodes an uncompressed recording.
pub fn decode_jfr(
    data: &[u8],
    labels: Option<&LabelsSnapshot>,
    meta: &IngestMeta,
) -> Result<Vec<Profile>, DecodeError> {
    let (profiles, skipped) = decode_jfr_counted(data, labels, meta)?;
    skipped.report();
    Ok(profiles)
}

/// [`decode_jfr`], also returning what was skipped (without reporting it).
pub fn decode_jfr_counted(
    data: &[u8],
    labels: Option<&LabelsSnapshot>,
    meta: &IngestMeta,
) -> Result<(Vec<Profile>, Skipped), DecodeError> {
    if data.len() < HEADER_LEN {
        return Err(DecodeError::Malformed(format!(
            "jfr: {} bytes is too short for a recording",
            data.len()
        )));
    }
    let mut acc = Acc::default();
    let mut at = 0;
    let mut chunks = 0;
    while at < data.len() {
        // The first chunk must open; a damaged later chunk ends the recording early, keeping
        // what the earlier ones held.
        let chunk = match Chunk::open(data, at) {
            Ok(c) => c,
            Err(e) if chunks == 0 => return Err(e),
            Err(_) => {
                acc.skipped.malformed_chunks += 1;
                break;
            }
        };
        read_events(&chunk, &mut acc)?;
        chunks += 1;
        at += chunk.header.size as usize;
    }
    let skipped = acc.skipped.clone();
    Ok((profiles(acc, labels, meta), skipped))
}

/// Per-chunk caches: constant-pool keys resolved once.
#[derive(Default)]
struct ChunkCache {
    stacks: FxHashMap<i64, Option<Rc<[u32]>>>,
    methods: FxHashMap<i64, Option<u32>>,
    states: FxHashMap<i64, Option<ThreadState>>,
}

/// A thread state as far as profile types care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    Runnable,
    Sleeping,
    Other,
}

/// An event type of interest: its kind and where the fields `record` reads sit, found once
/// per chunk rather than by name per event.
struct EventType<'c> {
    kind: Kind,
    fields: &'c [parse::Field],
    at: EventFields,
}

#[derive(Default)]
struct EventFields {
    context_id: Option<usize>,
    stack_trace: Option<usize>,
    state: Option<usize>,
    samples: Option<usize>,
    tlab_size: Option<usize>,
    allocation_size: Option<usize>,
    weight: Option<usize>,
    duration: Option<usize>,
    size: Option<usize>,
    name: Option<usize>,
    value: Option<usize>,
}

impl<'c> EventType<'c> {
    fn new(kind: Kind, class: &'c parse::Class) -> Self {
        let at = |name| class.field(name);
        Self {
            kind,
            fields: &class.fields,
            at: EventFields {
                context_id: at("contextId"),
                stack_trace: at("stackTrace"),
                state: at("state"),
                samples: at("samples"),
                tlab_size: at("tlabSize"),
                allocation_size: at("allocationSize"),
                weight: at("weight"),
                duration: at("duration"),
                size: at("size"),
                name: at("name"),
                value: at("value"),
            },
        }
    }

    /// Field `at` of `event`, with its definition.
    fn get<'v>(
        &'v self,
        event: &'v [Value],
        at: Option<usize>,
    ) -> Option<(&'v Value, &'v parse::Field)> {
        let i = at?;
        Some((event.get(i)?, self.fields.get(i)?))
    }
}

fn read_events(chunk: &Chunk, acc: &mut Acc) -> Result<(), DecodeError> {
    let kinds: FxHashMap<i64, EventType> = chunk
        .classes
        .iter()
        .filter_map(|(&id, c)| kind(&c.name).map(|k| (id, EventType::new(k, c))))
        .collect();
    let mut cache = ChunkCache::default();
    let mut event = Vec::new();
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
        if let Some(ty) = kinds.get(&type_id) {
            let mut body =
                reader::Reader::new(&chunk.bytes[..pos + size], r.pos, chunk.header.compressed);
            match chunk.fields_into(&mut body, type_id, &mut event) {
                Ok(()) => record(chunk, acc, &mut cache, ty, &event, ns_per_tick),
                Err(_) => acc.skipped.malformed_events += 1,
            }
        } else if type_id > 1 {
            // 0 is the metadata event and 1 a constant pool (checkpoint) event.
            acc.skipped.unprofiled_events += 1;
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

/// The thread state in field `state` of an event, if it resolves.
fn thread_state(
    chunk: &Chunk,
    cache: &mut ChunkCache,
    ty: &EventType,
    event: &[Value],
) -> Option<ThreadState> {
    let (v, f) = ty.get(event, ty.at.state)?;
    let key = match v {
        Value::Ref(k) => *k,
        _ => return None,
    };
    *cache.states.entry(key).or_insert_with(|| {
        let state = chunk.deref(v, f)?;
        let (n, nf) = chunk.get(f.type_id, state, "name")?;
        Some(match chunk.string(n, nf)?.as_str() {
            STATE_RUNNABLE => ThreadState::Runnable,
            STATE_SLEEPING => ThreadState::Sleeping,
            _ => ThreadState::Other,
        })
    })
}

fn record(
    chunk: &Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache,
    ty: &EventType,
    event: &[Value],
    ns_per_tick: f64,
) {
    let kind = ty.kind;
    let at = &ty.at;
    let field = |i: Option<usize>| ty.get(event, i);
    if kind == Kind::Setting {
        if let (Some((n, nf)), Some((v, vf))) = (field(at.name), field(at.value)) {
            if chunk.string(n, nf).as_deref() == Some("event") {
                acc.event = chunk.string(v, vf).unwrap_or_default();
            }
        }
        return;
    }
    let ctx = int(field(at.context_id));
    let stack = match field(at.stack_trace) {
        Some((Value::Ref(key), f)) => {
            let key = *key;
            if !cache.stacks.contains_key(&key) {
                let s = resolve_stack(chunk, acc, cache, f.type_id, key).map(Rc::from);
                cache.stacks.insert(key, s);
            }
            cache.stacks[&key].clone()
        }
        _ => None,
    };
    let Some(stack) = stack else {
        acc.skipped.missing_stack_traces += 1;
        return;
    };
    if stack.is_empty() {
        return;
    }
    let wall_mode = acc.event == "wall";
    match kind {
        Kind::Execution => {
            // As Grafana Pyroscope: CPU unless the profiler saw the thread sleeping; a sample
            // whose state does not resolve is not CPU. In wall mode every sample is wall time.
            match thread_state(chunk, cache, ty, event) {
                Some(s) if s != ThreadState::Sleeping => acc.add("cpu", ctx, &stack, 1),
                Some(_) => {}
                None => acc.skipped.unknown_thread_states += 1,
            }
            if wall_mode {
                acc.add("wall", ctx, &stack, 1);
            }
        }
        Kind::Wall => {
            let weight = int(field(at.samples));
            // Wall mode: the samples of running threads are also the CPU profile.
            if wall_mode && thread_state(chunk, cache, ty, event) == Some(ThreadState::Runnable) {
                acc.add("cpu", ctx, &stack, weight);
            }
            acc.add("wall", ctx, &stack, weight);
        }
        Kind::AllocInTlab => {
            acc.add("alloc_in_new_tlab_objects", ctx, &stack, 1);
            acc.add(
                "alloc_in_new_tlab_bytes",
                ctx,
                &stack,
                int(field(at.tlab_size)),
            );
        }
        Kind::AllocOutsideTlab => {
            acc.add("alloc_outside_tlab_objects", ctx, &stack, 1);
            acc.add(
                "alloc_outside_tlab_bytes",
                ctx,
                &stack,
                int(field(at.allocation_size)),
            );
        }
        Kind::AllocSample => {
            acc.add("alloc_sample_objects", ctx, &stack, 1);
            acc.add("alloc_sample_bytes", ctx, &stack, int(field(at.weight)));
        }
        Kind::Monitor | Kind::Park => {
            let (count, duration) = if kind == Kind::Monitor {
                ("lock_count", "lock_duration")
            } else {
                ("block_count", "block_duration")
            };
            acc.add(count, ctx, &stack, 1);
            let ns = (int(field(at.duration)) as f64 * ns_per_tick) as i64;
            acc.add(duration, ctx, &stack, ns);
        }
        Kind::Live => acc.add("live", ctx, &stack, 1),
        Kind::Malloc => {
            acc.add("malloc_objects", ctx, &stack, 1);
            acc.add("malloc_bytes", ctx, &stack, int(field(at.size)));
        }
        Kind::Setting => {}
    }
}

/// The frames of stack trace `key`, root first; a truncated trace starts with `[truncated]`.
/// `None` when the trace is not in the constant pool; frames whose method or class is missing
/// are left out (and counted).
fn resolve_stack(
    chunk: &Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache,
    stack_type: i64,
    key: i64,
) -> Option<Vec<u32>> {
    match chunk.raw_stack_trace(stack_type, key) {
        Some(raw) => Some(stack_from_raw(chunk, acc, cache, &raw)),
        None => stack_from_values(chunk, acc, cache, stack_type, key),
    }
}

/// [`resolve_stack`] from a trace read straight from the chunk's bytes.
fn stack_from_raw(
    chunk: &Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache,
    raw: &parse::RawStackTrace,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(raw.frames.len() + 1);
    if raw.truncated {
        let truncated = acc.function("[truncated]".into());
        out.push(acc.frame(truncated, 0));
    }
    for &(method, line) in raw.frames.iter().rev() {
        let (Some(k), Some(method_field)) = (method, raw.method_field) else {
            acc.skipped.missing_frames += 1;
            continue;
        };
        let function = *cache
            .methods
            .entry(k)
            .or_insert_with(|| method_function(chunk, acc, &Value::Ref(k), method_field));
        match function {
            Some(f) => out.push(acc.frame(f, u32::try_from(line).unwrap_or(0))),
            None => acc.skipped.missing_frames += 1,
        }
    }
    out
}

/// [`resolve_stack`] from the trace's values, for layouts [`Chunk::raw_stack_trace`] does not
/// read.
fn stack_from_values(
    chunk: &Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache,
    stack_type: i64,
    key: i64,
) -> Option<Vec<u32>> {
    let trace = chunk.pool(stack_type, key)?;
    let truncated = matches!(
        chunk.get(stack_type, trace, "truncated"),
        Some((Value::Bool(true), _))
    );
    let Some((Value::Arr(frames), frames_field)) = chunk.get(stack_type, trace, "frames") else {
        return None;
    };
    let frame_type = frames_field.type_id;
    let mut out = Vec::with_capacity(frames.len() + 1);
    if truncated {
        let truncated = acc.function("[truncated]".into());
        out.push(acc.frame(truncated, 0));
    }
    for frame in frames.iter().rev() {
        let Some((method_ref, method_field)) = chunk.get(frame_type, frame, "method") else {
            acc.skipped.missing_frames += 1;
            continue;
        };
        let function = match method_ref {
            Value::Ref(k) => *cache
                .methods
                .entry(*k)
                .or_insert_with(|| method_function(chunk, acc, method_ref, method_field)),
            _ => method_function(chunk, acc, method_ref, method_field),
        };
        let line = u32::try_from(int(chunk.get(frame_type, frame, "lineNumber"))).unwrap_or(0);
        match function {
            Some(f) => out.push(acc.frame(f, line)),
            None => acc.skipped.missing_frames += 1,
        }
    }
    Some(out)
}

/// The function of a method: `package.Class.method`, generated class names merged.
fn method_function(
    chunk: &Chunk,
    acc: &mut Acc,
    method_ref: &Value,
    method_field: &parse::Field,
) -> Option<u32> {
    let method = chunk.deref(method_ref, method_field)?;
    let method_type = method_field.type_id;
    let name = chunk
        .get(method_type, method, "name")
        .and_then(|(v, f)| chunk.string(v, f))?;
    let (v, f) = chunk.get(method_type, method, "type")?;
    let class = chunk.deref(v, f)?;
    let class = chunk
        .get(f.type_id, class, "name")
        .and_then(|(n, nf)| chunk.string(n, nf))
        .unwrap_or_default();
    let class = symbols::merge_generated(&class);
    let name = symbols::merge_generated(&name);
    let full = if class.is_empty() {
        name.into_owned()
    } else {
        format!("{}.{name}", class.replace('/', "."))
    };
    Some(acc.function(full))
}

fn profiles(mut acc: Acc, labels: Option<&LabelsSnapshot>, meta: &IngestMeta) -> Vec<Profile> {
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
        let Some(profile_type) = ProfileType::well_known(key.0) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stack trace of a JDK recording resolves to the same frames whether read straight
    /// from the chunk's bytes or through its values (what other layouts still take).
    #[test]
    fn stack_traces_read_from_bytes_match_their_values() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/java-jdk.jfr");
        let data = std::fs::read(path).unwrap();
        let chunk = Chunk::open(&data, 0).unwrap();
        let stack_type = chunk
            .classes
            .iter()
            .find(|(_, c)| c.name == "jdk.types.StackTrace")
            .map(|(&id, _)| id)
            .expect("the recording has stack traces");
        let mut keys = chunk.pool_keys(stack_type);
        keys.sort_unstable();
        assert!(keys.len() > 100, "{} stack traces", keys.len());
        let (mut from_bytes, mut from_values) = (Acc::default(), Acc::default());
        let (mut cache_b, mut cache_v) = (ChunkCache::default(), ChunkCache::default());
        let mut frames = 0;
        for key in keys {
            let raw = chunk
                .raw_stack_trace(stack_type, key)
                .expect("a JDK stack trace reads from bytes");
            let a = stack_from_raw(&chunk, &mut from_bytes, &mut cache_b, &raw);
            let b = stack_from_values(&chunk, &mut from_values, &mut cache_v, stack_type, key)
                .expect("and from values");
            let names = |acc: &Acc, stack: &[u32]| -> Vec<(String, u32)> {
                stack
                    .iter()
                    .map(|&f| {
                        let f = &acc.frames[f as usize];
                        (f.function.clone(), f.line)
                    })
                    .collect()
            };
            assert_eq!(
                names(&from_bytes, &a),
                names(&from_values, &b),
                "trace {key}"
            );
            frames += a.len();
        }
        assert!(frames > 1000, "{frames} frames in all");
        assert_eq!(
            from_bytes.skipped.missing_frames,
            from_values.skipped.missing_frames
        );
    }
}
