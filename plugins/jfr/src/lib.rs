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
mod stacks;
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
struct ChunkCache<'c> {
    stacks: FxHashMap<i64, Option<Rc<[u32]>>>,
    methods: FxHashMap<i64, Option<u32>>,
    states: FxHashMap<i64, Option<ThreadState>>,
    /// How the stack traces of each type read from bytes (`None`: through values).
    traces: FxHashMap<i64, Option<Rc<parse::TraceLayout<'c>>>>,
    /// Values by profile type, context id and stack trace key.
    sums: FxHashMap<(&'static str, i64, i64), i64>,
    /// A trace's raw frames, reused.
    frames: Vec<(Option<i64>, i64)>,
    /// Methods' names read from bytes, once the first frame's method field is known (`None`
    /// inside: through values).
    names: Option<Option<stacks::MethodNames<'c>>>,
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
    /// Which field fills which [`Slot`].
    slots: Vec<(usize, usize)>,
    /// Reads the slots and skips the rest; `None` reads every field as values (layouts the
    /// picker does not read).
    picker: Option<parse::FieldPicker>,
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

/// The integer fields `record` reads (constant-pool keys for the stack trace and the state).
#[derive(Clone, Copy)]
enum Slot {
    ContextId,
    StackTrace,
    State,
    Samples,
    TlabSize,
    AllocationSize,
    Weight,
    Duration,
    Size,
    /// A setting's name and value: strings, as offsets for [`Chunk::string_at`].
    Name,
    Value,
}
const SLOTS: usize = Slot::Value as usize + 1;
type Slots = [Option<i64>; SLOTS];

impl<'c> EventType<'c> {
    fn new(kind: Kind, type_id: i64, class: &'c parse::Class, chunk: &Chunk) -> Self {
        let at = |name| class.field(name);
        let at = EventFields {
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
        };
        let slots: Vec<(usize, usize)> = [
            (at.context_id, Slot::ContextId),
            (at.stack_trace, Slot::StackTrace),
            (at.state, Slot::State),
            (at.samples, Slot::Samples),
            (at.tlab_size, Slot::TlabSize),
            (at.allocation_size, Slot::AllocationSize),
            (at.weight, Slot::Weight),
            (at.duration, Slot::Duration),
            (at.size, Slot::Size),
            (at.name.filter(|_| kind == Kind::Setting), Slot::Name),
            (at.value.filter(|_| kind == Kind::Setting), Slot::Value),
        ]
        .into_iter()
        .filter_map(|(field, slot)| Some((field?, slot as usize)))
        .collect();
        let picker = chunk.picker(type_id, &slots);
        Self {
            kind,
            fields: &class.fields,
            at,
            slots,
            picker,
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

    /// Reads an event's body into `slots` (and, without a picker, its values into `event`).
    fn read(
        &self,
        chunk: &Chunk,
        type_id: i64,
        r: &mut reader::Reader,
        event: &mut Vec<Value>,
        slots: &mut Slots,
    ) -> Result<(), DecodeError> {
        *slots = [None; SLOTS];
        if let Some(picker) = &self.picker {
            return picker.read(&chunk.classes, r, slots);
        }
        chunk.fields_into(r, type_id, event)?;
        for &(field, slot) in &self.slots {
            slots[slot] = match event.get(field) {
                Some(Value::Int(i) | Value::Ref(i)) => Some(*i),
                Some(Value::Float(f)) => Some(*f as i64),
                Some(Value::Bool(b)) => Some(i64::from(*b)),
                _ => None,
            };
        }
        Ok(())
    }

    /// The constant-pool key in slot `slot`, read from field `at`, with the field.
    fn reference(
        &self,
        slots: &Slots,
        slot: Slot,
        at: Option<usize>,
    ) -> Option<(i64, &parse::Field)> {
        let field = self.fields.get(at?)?;
        field
            .constant_pool
            .then_some(())
            .and(slots[slot as usize])
            .map(|key| (key, field))
    }
}

fn read_events(chunk: &Chunk, acc: &mut Acc) -> Result<(), DecodeError> {
    let types: Vec<(i64, EventType)> = chunk
        .classes
        .iter()
        .filter_map(|(&id, c)| kind(&c.name).map(|k| (id, EventType::new(k, id, c, chunk))))
        .collect();
    // Looked up for every event of the chunk: by index where the ids are small, as the JDK's
    // and async-profiler's are.
    let mut by_id: Vec<Option<usize>> = Vec::new();
    if let Some(max) = types.iter().map(|(id, _)| *id).max() {
        if (0..1 << 16).contains(&max) && types.iter().all(|(id, _)| *id >= 0) {
            by_id = vec![None; max as usize + 1];
            for (i, (id, _)) in types.iter().enumerate() {
                by_id[*id as usize] = Some(i);
            }
        }
    }
    let event_type = |type_id: i64| -> Option<&EventType> {
        let i = match usize::try_from(type_id).ok().and_then(|i| by_id.get(i)) {
            Some(i) => (*i)?,
            None if !by_id.is_empty() => return None,
            None => types.iter().position(|(id, _)| *id == type_id)?,
        };
        Some(&types[i].1)
    };
    let mut cache = ChunkCache::default();
    let mut event = Vec::new();
    let mut slots = [None; SLOTS];
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
        if let Some(ty) = event_type(type_id) {
            let mut body =
                reader::Reader::new(&chunk.bytes[..pos + size], r.pos, chunk.header.compressed);
            match ty.read(chunk, type_id, &mut body, &mut event, &mut slots) {
                Ok(()) => record(chunk, acc, &mut cache, ty, &event, &slots, ns_per_tick),
                Err(_) => acc.skipped.malformed_events += 1,
            }
        } else if type_id > 1 {
            // 0 is the metadata event and 1 a constant pool (checkpoint) event.
            acc.skipped.unprofiled_events += 1;
        }
        pos += size;
    }
    for ((ty, ctx, key), value) in cache.sums {
        if let Some(Some(stack)) = cache.stacks.get(&key) {
            acc.add(ty, ctx, stack, value);
        }
    }
    Ok(())
}

/// The thread state in field `state` of an event, if it resolves.
fn thread_state(
    chunk: &Chunk,
    cache: &mut ChunkCache,
    ty: &EventType,
    slots: &Slots,
) -> Option<ThreadState> {
    let (key, f) = ty.reference(slots, Slot::State, ty.at.state)?;
    *cache.states.entry(key).or_insert_with(|| {
        let state = chunk.pool(f.type_id, key)?;
        let (n, nf) = chunk.get(f.type_id, state, "name")?;
        Some(match chunk.string(n, nf)?.as_str() {
            STATE_RUNNABLE => ThreadState::Runnable,
            STATE_SLEEPING => ThreadState::Sleeping,
            _ => ThreadState::Other,
        })
    })
}

fn record<'c>(
    chunk: &'c Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache<'c>,
    ty: &EventType,
    event: &[Value],
    slots: &Slots,
    ns_per_tick: f64,
) {
    let kind = ty.kind;
    let at = &ty.at;
    if kind == Kind::Setting {
        // Read by the picker, the name and value are offsets; otherwise values.
        let string = |slot: Slot, at: Option<usize>| match &ty.picker {
            Some(_) => chunk.string_at(slots[slot as usize]?),
            None => ty.get(event, at).and_then(|(v, f)| chunk.string(v, f)),
        };
        if string(Slot::Name, at.name).as_deref() == Some("event") {
            acc.event = string(Slot::Value, at.value).unwrap_or_default();
        }
        return;
    }
    let int = |slot: Slot| slots[slot as usize].unwrap_or(0);
    let ctx = int(Slot::ContextId);
    let Some((key, f)) = ty.reference(slots, Slot::StackTrace, at.stack_trace) else {
        acc.skipped.missing_stack_traces += 1;
        return;
    };
    if !cache.stacks.contains_key(&key) {
        let s = stacks::resolve_stack(chunk, acc, cache, f.type_id, key).map(Rc::from);
        cache.stacks.insert(key, s);
    }
    match cache.stacks[&key].as_deref() {
        None => {
            acc.skipped.missing_stack_traces += 1;
            return;
        }
        Some([]) => return,
        Some(_) => {}
    }
    let wall_mode = acc.event == "wall";
    let state = match kind {
        Kind::Execution => thread_state(chunk, cache, ty, slots),
        Kind::Wall if wall_mode => thread_state(chunk, cache, ty, slots),
        _ => None,
    };
    // Summed by stack trace key, turned into stacks once per chunk (end of `read_events`).
    let mut add = |ty: &'static str, value: i64| {
        if value != 0 {
            *cache.sums.entry((ty, ctx, key)).or_insert(0) += value;
        }
    };
    match kind {
        Kind::Execution => {
            // As Grafana Pyroscope: CPU unless the profiler saw the thread sleeping; a sample
            // whose state does not resolve is not CPU. In wall mode every sample is wall time.
            match state {
                Some(s) if s != ThreadState::Sleeping => add("cpu", 1),
                Some(_) => {}
                None => acc.skipped.unknown_thread_states += 1,
            }
            if wall_mode {
                add("wall", 1);
            }
        }
        Kind::Wall => {
            let weight = int(Slot::Samples);
            // Wall mode: the samples of running threads are also the CPU profile.
            if wall_mode && state == Some(ThreadState::Runnable) {
                add("cpu", weight);
            }
            add("wall", weight);
        }
        Kind::AllocInTlab => {
            add("alloc_in_new_tlab_objects", 1);
            add("alloc_in_new_tlab_bytes", int(Slot::TlabSize));
        }
        Kind::AllocOutsideTlab => {
            add("alloc_outside_tlab_objects", 1);
            add("alloc_outside_tlab_bytes", int(Slot::AllocationSize));
        }
        Kind::AllocSample => {
            add("alloc_sample_objects", 1);
            add("alloc_sample_bytes", int(Slot::Weight));
        }
        Kind::Monitor | Kind::Park => {
            let (count, duration) = if kind == Kind::Monitor {
                ("lock_count", "lock_duration")
            } else {
                ("block_count", "block_duration")
            };
            add(count, 1);
            let ns = (int(Slot::Duration) as f64 * ns_per_tick) as i64;
            add(duration, ns);
        }
        Kind::Live => add("live", 1),
        Kind::Malloc => {
            add("malloc_objects", 1);
            add("malloc_bytes", int(Slot::Size));
        }
        Kind::Setting => {}
    }
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
        // Each profile carries the frames its samples use (a recording's allocation stacks
        // share few frames with its CPU stacks), renumbered in their order so that the
        // samples stay sorted.
        let mut renumbered = vec![u32::MAX; acc.frames.len()];
        for s in &samples {
            for &f in &s.stack {
                renumbered[f as usize] = 0;
            }
        }
        let mut frames = Vec::new();
        for (old, new) in renumbered.iter_mut().enumerate() {
            if *new == 0 {
                *new = frames.len() as u32;
                frames.push(acc.frames[old].clone());
            }
        }
        for s in &mut samples {
            for f in &mut s.stack {
                *f = renumbered[*f as usize];
            }
        }
        out.push(Profile {
            labels: context_labels(key.1),
            profile_type,
            start_ns: meta.start_ns,
            end_ns: meta.end_ns,
            frames,
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
