//! The JFR chunk format: header, metadata (type definitions), constant pools and events.

use kiln_plugin_api::DecodeError;
use std::cell::OnceCell;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::reader::{err, Reader};

/// A decoded value, shaped by the metadata.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A string held in the `java.lang.String` constant pool.
    StrRef(i64),
    /// A reference into the constant pool of the field's type.
    Ref(i64),
    Obj(Vec<Value>),
    Arr(Vec<Value>),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub type_id: i64,
    pub constant_pool: bool,
    pub array: bool,
}

/// How [`Chunk::raw_stack_trace`] reads the stack traces of one type, decided once per chunk.
pub struct TraceLayout<'c> {
    type_id: i64,
    /// The frames' `method` field (a constant-pool reference), if their type has one.
    pub method_field: Option<&'c Field>,
    fields: Box<[TraceField]>,
}

/// What a field of a stack trace is to [`Chunk::raw_stack_trace`].
enum TraceField {
    Truncated,
    /// `frames`, with what each field of a frame is.
    Frames(Box<[FrameField]>),
    Skip(Skip),
}

/// What a field of a stack frame is to [`Chunk::raw_stack_trace`].
enum FrameField {
    /// `method`: a constant-pool reference.
    Method,
    /// `lineNumber`: an integer of this many bytes.
    Line(u8),
    /// Anything else, skipped.
    Skip(Skip),
}

#[derive(Debug, Clone, Default)]
pub struct Class {
    pub name: String,
    pub fields: Vec<Field>,
    /// How a value of this class is read, from its name once rather than per value.
    layout: Layout,
    /// How each field is read, from the fields' classes once rather than per value.
    reads: Box<[Read]>,
}

/// How [`Chunk::value`] reads one field of an object.
#[derive(Debug, Clone, Copy, Default)]
enum Read {
    /// A constant-pool reference.
    Ref,
    Layout(Layout),
    /// An array, or a class the metadata does not define: read through [`Chunk::field`].
    #[default]
    Field,
}

#[derive(Debug, Clone, Copy, Default)]
enum Layout {
    Int(u8),
    Byte,
    Bool,
    F32,
    F64,
    Str,
    #[default]
    Object,
}

impl Layout {
    fn of(class: &str) -> Self {
        match class {
            "int" | "char" => Layout::Int(4),
            "long" => Layout::Int(8),
            "short" => Layout::Int(2),
            "byte" => Layout::Byte,
            "boolean" => Layout::Bool,
            "float" => Layout::F32,
            "double" => Layout::F64,
            "java.lang.String" => Layout::Str,
            _ => Layout::Object,
        }
    }
}

impl Class {
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// The chunk header (68 bytes, big-endian).
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub size: u64,
    pub cp_offset: u64,
    pub meta_offset: u64,
    pub ticks_per_second: u64,
    pub compressed: bool,
}

pub const HEADER_LEN: usize = 68;
const MAGIC: &[u8; 4] = b"FLR\0";
const MAX_DEPTH: usize = 32;

pub fn header(bytes: &[u8], at: usize) -> Result<Header, DecodeError> {
    let mut r = Reader::new(bytes, at, false);
    if r.take(4)? != MAGIC {
        return Err(err(at, "not a JFR chunk (bad magic)"));
    }
    let major = r.be_u32()? >> 16;
    if major != 2 && major != 1 {
        return Err(err(at + 4, format!("unsupported JFR version {major}")));
    }
    let size = r.be_u64()?;
    let cp_offset = r.be_u64()?;
    let meta_offset = r.be_u64()?;
    let _start_ns = r.be_u64()?;
    let _duration = r.be_u64()?;
    let _start_ticks = r.be_u64()?;
    let ticks_per_second = r.be_u64()?;
    let features = r.be_u32()?;
    let fits = |o: u64| o >= HEADER_LEN as u64 && o < size;
    if size < HEADER_LEN as u64 || at as u64 + size > bytes.len() as u64 {
        return Err(err(
            at + 8,
            format!(
                "chunk size {size} runs past the end of the recording ({} bytes)",
                bytes.len()
            ),
        ));
    }
    if !fits(cp_offset) || !fits(meta_offset) {
        return Err(err(
            at + 16,
            "constant pool or metadata offset outside the chunk",
        ));
    }
    Ok(Header {
        size,
        cp_offset,
        meta_offset,
        ticks_per_second: ticks_per_second.max(1),
        // Version 1 chunks always used compressed integers; v2 says so in feature bit 0.
        compressed: major == 1 || features & 1 == 1,
    })
}

/// One chunk's type system and constant pools.
pub struct Chunk<'a> {
    pub bytes: &'a [u8],
    pub start: usize,
    pub header: Header,
    pub classes: Arc<FxHashMap<i64, Class>>,
    /// Constant pool entries by type and key: where each starts, and its value once asked for.
    /// A recording's pools hold much that no profile needs (modules, packages, class loaders,
    /// thread groups, stacks of events not profiled); they are skipped over, not built.
    pools: FxHashMap<i64, FxHashMap<i64, PoolEntry>>,
    string_type: Option<i64>,
    /// How to move past a value of each class, compiled with the type system.
    skips: Arc<FxHashMap<i64, Skip>>,
}

struct PoolEntry {
    /// Offset of the value in `Chunk::bytes`.
    at: usize,
    value: OnceCell<Value>,
}

/// What a chunk's metadata event defines.
#[derive(Default)]
struct TypeSystem {
    classes: Arc<FxHashMap<i64, Class>>,
    string_type: Option<i64>,
    skips: Arc<FxHashMap<i64, Skip>>,
}

/// The type systems of recently seen metadata events, most recent first. A JVM writes the
/// same metadata into every recording it sends, and building the type system from it costs
/// about a tenth of decoding a recording; the bytes are compared whole, so a hit is exact.
static RECENT_TYPES: Mutex<Vec<RecentTypes>> = Mutex::new(Vec::new());
/// A metadata event's bytes and the type system they define.
type RecentTypes = (Box<[u8]>, Arc<TypeSystem>);
/// Most metadata events kept, and most bytes of them (a JDK's is ~100 KB).
const RECENT_TYPES_MAX: usize = 8;
const RECENT_TYPES_MAX_BYTES: usize = 4 << 20;

fn cached_types(metadata: &[u8]) -> Option<Arc<TypeSystem>> {
    let mut recent = RECENT_TYPES.lock().unwrap_or_else(|e| e.into_inner());
    let i = recent.iter().position(|(b, _)| **b == *metadata)?;
    let hit = recent.remove(i);
    let types = hit.1.clone();
    recent.insert(0, hit);
    Some(types)
}

fn cache_types(metadata: &[u8], types: Arc<TypeSystem>) {
    if metadata.len() > RECENT_TYPES_MAX_BYTES / RECENT_TYPES_MAX {
        return;
    }
    let mut recent = RECENT_TYPES.lock().unwrap_or_else(|e| e.into_inner());
    recent.insert(0, (metadata.into(), types));
    recent.truncate(RECENT_TYPES_MAX);
}

/// A metadata element; its strings borrow the metadata's string table.
struct Element<'s> {
    name: &'s str,
    attrs: Vec<(&'s str, &'s str)>,
    children: Vec<Element<'s>>,
}

impl Element<'_> {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v)
    }
}

impl<'a> Chunk<'a> {
    pub fn open(bytes: &'a [u8], start: usize) -> Result<Self, DecodeError> {
        let header = header(bytes, start)?;
        let end = start + header.size as usize;
        let mut chunk = Chunk {
            bytes: &bytes[..end],
            start,
            header,
            classes: Arc::default(),
            pools: FxHashMap::default(),
            string_type: None,
            skips: Arc::default(),
        };
        chunk.read_metadata()?;
        chunk.read_constant_pools()?;
        Ok(chunk)
    }

    fn reader(&self, at: usize) -> Reader<'a> {
        Reader::new(self.bytes, at, self.header.compressed)
    }

    fn read_metadata(&mut self) -> Result<(), DecodeError> {
        let at = self.start + self.header.meta_offset as usize;
        let mut r = self.reader(at);
        let size = r.int(4)?;
        let bytes = usize::try_from(size)
            .ok()
            .and_then(|n| self.bytes.get(at..at.checked_add(n)?))
            .ok_or_else(|| err(at, format!("metadata size {size} runs past the chunk")))?;
        let types = match cached_types(bytes) {
            Some(types) => types,
            None => {
                let types = Arc::new(self.parse_metadata(r)?);
                cache_types(bytes, types.clone());
                types
            }
        };
        self.classes = types.classes.clone();
        self.string_type = types.string_type;
        self.skips = types.skips.clone();
        Ok(())
    }

    /// The classes the metadata event at `r` (past its size) defines.
    fn parse_metadata(&self, mut r: Reader) -> Result<TypeSystem, DecodeError> {
        let at = r.pos;
        if r.int(8)? != 0 {
            return Err(err(at, "metadata event has the wrong type id"));
        }
        let (_start, _duration, _id) = (r.int(8)?, r.int(8)?, r.int(8)?);
        let n = r.count()?;
        let mut strings = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            strings.push(read_plain_string(&mut r)?.unwrap_or_default());
        }
        let root = element(&mut r, &strings, 0)?;
        let mut classes = FxHashMap::default();
        let mut string_type = None;
        let mut stack = vec![&root];
        while let Some(e) = stack.pop() {
            if e.name == "class" {
                let id: i64 = e
                    .attr("id")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| err(r.pos, "metadata class without an id"))?;
                let name = e.attr("name").unwrap_or("");
                let mut class = Class {
                    name: name.to_string(),
                    fields: Vec::new(),
                    layout: Layout::of(name),
                    reads: Box::default(),
                };
                for f in e.children.iter().filter(|c| c.name == "field") {
                    class.fields.push(Field {
                        name: f.attr("name").unwrap_or("").to_string(),
                        type_id: f
                            .attr("class")
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| err(r.pos, "metadata field without a class"))?,
                        constant_pool: f.attr("constantPool") == Some("true"),
                        array: f.attr("dimension").is_some_and(|d| d != "0"),
                    });
                }
                if class.name == "java.lang.String" {
                    string_type = Some(id);
                }
                classes.insert(id, class);
            }
            stack.extend(e.children.iter());
        }
        let layouts: FxHashMap<i64, Layout> =
            classes.iter().map(|(&id, c)| (id, c.layout)).collect();
        for class in classes.values_mut() {
            class.reads = class
                .fields
                .iter()
                .map(
                    |f| match (f.array, f.constant_pool, layouts.get(&f.type_id)) {
                        (true, _, _) => Read::Field,
                        (false, true, _) => Read::Ref,
                        (false, false, Some(&layout)) => Read::Layout(layout),
                        (false, false, None) => Read::Field,
                    },
                )
                .collect();
        }
        let skips = classes
            .keys()
            .map(|&id| (id, Skip::compile(&classes, id)))
            .collect();
        Ok(TypeSystem {
            classes: Arc::new(classes),
            string_type,
            skips: Arc::new(skips),
        })
    }

    fn read_constant_pools(&mut self) -> Result<(), DecodeError> {
        let mut offset = self.header.cp_offset as i64;
        for _ in 0..100_000 {
            let at = usize::try_from(offset)
                .ok()
                .filter(|&o| o >= HEADER_LEN && o < self.header.size as usize)
                .ok_or_else(|| {
                    err(
                        self.start,
                        format!("constant pool offset {offset} outside the chunk"),
                    )
                })?;
            let mut r = self.reader(self.start + at);
            let _size = r.int(4)?;
            let tat = r.pos;
            if r.int(8)? != 1 {
                return Err(err(tat, "constant pool event has the wrong type id"));
            }
            let (_start, _duration) = (r.int(8)?, r.int(8)?);
            let delta = r.int(8)?;
            let _flush = r.u8()?;
            let pools = r.count()?;
            for _ in 0..pools {
                let type_id = r.int(8)?;
                let entries = r.count()?;
                let skip = self
                    .skips
                    .get(&type_id)
                    .ok_or_else(|| err(r.pos, format!("unknown type id {type_id}")))?;
                let pool = self.pools.entry(type_id).or_default();
                pool.reserve(entries.min(1 << 16));
                for _ in 0..entries {
                    let key = r.int(8)?;
                    let at = r.pos;
                    skip.run(&self.classes, &mut r)?;
                    // A later checkpoint's entry for the same key replaces the earlier one.
                    pool.insert(
                        key,
                        PoolEntry {
                            at,
                            value: OnceCell::new(),
                        },
                    );
                }
            }
            if delta == 0 {
                return Ok(());
            }
            offset += delta;
        }
        Err(err(self.start, "constant pool chain does not end"))
    }

    /// Reads a value of `type_id`.
    pub fn value(&self, r: &mut Reader, type_id: i64, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err(r.pos, "values nested too deeply"));
        }
        let class = self
            .classes
            .get(&type_id)
            .ok_or_else(|| err(r.pos, format!("unknown type id {type_id}")))?;
        Ok(match class.layout {
            Layout::Object => {
                let mut fields = Vec::with_capacity(class.fields.len());
                self.push_fields(r, class, depth, &mut fields)?;
                Value::Obj(fields)
            }
            layout => read_primitive(r, layout)?,
        })
    }

    /// Appends the fields of an object of `class` at `depth` to `out`.
    fn push_fields(
        &self,
        r: &mut Reader,
        class: &Class,
        depth: usize,
        out: &mut Vec<Value>,
    ) -> Result<(), DecodeError> {
        for (f, read) in class.fields.iter().zip(class.reads.iter()) {
            out.push(match *read {
                Read::Ref => Value::Ref(r.int(8)?),
                Read::Layout(Layout::Object) => self.value(r, f.type_id, depth + 1)?,
                Read::Layout(layout) => read_primitive(r, layout)?,
                Read::Field => self.field(r, f, depth)?,
            });
        }
        Ok(())
    }

    /// Reads the fields of an object of `type_id` into `out` (cleared first): events are read
    /// this way into one reused buffer instead of an allocation each.
    pub fn fields_into(
        &self,
        r: &mut Reader,
        type_id: i64,
        out: &mut Vec<Value>,
    ) -> Result<(), DecodeError> {
        out.clear();
        let class = self
            .classes
            .get(&type_id)
            .ok_or_else(|| err(r.pos, format!("unknown type id {type_id}")))?;
        self.push_fields(r, class, 0, out)
    }

    fn field(&self, r: &mut Reader, f: &Field, depth: usize) -> Result<Value, DecodeError> {
        let one = |r: &mut Reader| -> Result<Value, DecodeError> {
            if f.constant_pool {
                Ok(Value::Ref(r.int(8)?))
            } else {
                self.value(r, f.type_id, depth + 1)
            }
        };
        if f.array {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                items.push(one(r)?);
            }
            Ok(Value::Arr(items))
        } else {
            one(r)
        }
    }

    /// The constant pool entry `key` of `type_id`, read the first time it is asked for. An
    /// entry that was skipped over once reads again; should it not, it is null.
    pub fn pool(&self, type_id: i64, key: i64) -> Option<&Value> {
        let entry = self.pools.get(&type_id)?.get(&key)?;
        let value = entry.value.get_or_init(|| {
            self.value(&mut self.reader(entry.at), type_id, 0)
                .unwrap_or(Value::Null)
        });
        match value {
            Value::Null => None,
            v => Some(v),
        }
    }

    /// How stack traces of `type_id` are read straight from the chunk's bytes: `None` when
    /// they are laid out other than as the JDK and async-profiler write them (`truncated` a
    /// boolean, `frames` an array of objects whose `method` is a constant-pool reference);
    /// [`Chunk::pool`] reads those.
    pub fn trace_layout(&self, type_id: i64) -> Option<TraceLayout<'_>> {
        let class = self.classes.get(&type_id)?;
        let mut budget = MAX_SKIP_STEPS;
        let mut fields = Vec::with_capacity(class.fields.len());
        let mut method_field = None;
        let mut has_frames = false;
        for f in &class.fields {
            fields.push(match f.name.as_str() {
                "truncated" if !f.array && !f.constant_pool => {
                    if !matches!(self.classes.get(&f.type_id)?.layout, Layout::Bool) {
                        return None;
                    }
                    TraceField::Truncated
                }
                "frames" => {
                    if !f.array || f.constant_pool {
                        return None;
                    }
                    has_frames = true;
                    let frame_class = self.classes.get(&f.type_id)?;
                    let mut roles = Vec::with_capacity(frame_class.fields.len());
                    for ff in &frame_class.fields {
                        roles.push(match ff.name.as_str() {
                            "method" => {
                                if !ff.constant_pool || ff.array {
                                    return None;
                                }
                                method_field = Some(ff);
                                FrameField::Method
                            }
                            "lineNumber" if !ff.array && !ff.constant_pool => {
                                let Layout::Int(width) = self.classes.get(&ff.type_id)?.layout
                                else {
                                    return None;
                                };
                                FrameField::Line(width)
                            }
                            _ => {
                                let mut steps = Vec::new();
                                compile_field(&self.classes, ff, 2, &mut budget, &mut steps);
                                FrameField::Skip(Skip::new(steps))
                            }
                        });
                    }
                    TraceField::Frames(roles.into())
                }
                _ => {
                    let mut steps = Vec::new();
                    compile_field(&self.classes, f, 1, &mut budget, &mut steps);
                    TraceField::Skip(Skip::new(steps))
                }
            });
        }
        has_frames.then_some(TraceLayout {
            type_id,
            method_field,
            fields: fields.into(),
        })
    }

    /// Stack trace `key` of the pool of `layout`'s type, read straight from the chunk's bytes
    /// without building values: most of a recording's constant pool is stack traces, read once
    /// each. `None` when the entry is missing or damaged. Its frames are appended to `frames`
    /// (cleared first), leaf first, as recorded: each frame's method key (`None` without the
    /// field) and line; the answer is whether the trace was truncated.
    pub fn raw_stack_trace(
        &self,
        layout: &TraceLayout,
        key: i64,
        frames: &mut Vec<(Option<i64>, i64)>,
    ) -> Option<bool> {
        frames.clear();
        let entry = self.pools.get(&layout.type_id)?.get(&key)?;
        let mut r = self.reader(entry.at);
        let mut truncated = false;
        for field in layout.fields.iter() {
            match field {
                TraceField::Truncated => truncated = r.u8().ok()? != 0,
                TraceField::Frames(roles) => {
                    let n = r.count().ok()?;
                    frames.reserve(n.min(4096));
                    for _ in 0..n {
                        let (mut method, mut line) = (None, 0);
                        for role in roles.iter() {
                            match role {
                                FrameField::Method => method = Some(r.int(8).ok()?),
                                FrameField::Line(width) => line = r.int((*width).into()).ok()?,
                                FrameField::Skip(skip) => skip.run(&self.classes, &mut r).ok()?,
                            }
                        }
                        frames.push((method, line));
                    }
                }
                TraceField::Skip(skip) => skip.run(&self.classes, &mut r).ok()?,
            }
        }
        Some(truncated)
    }

    /// The keys of the constant pool of `type_id`.
    #[cfg(test)]
    pub fn pool_keys(&self, type_id: i64) -> Vec<i64> {
        self.pools
            .get(&type_id)
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Field `name` of `value`, an object of `type_id`: the value and the field's definition.
    pub fn get<'v>(
        &'v self,
        type_id: i64,
        value: &'v Value,
        name: &str,
    ) -> Option<(&'v Value, &'v Field)> {
        let class = self.classes.get(&type_id)?;
        let i = class.field(name)?;
        match value {
            Value::Obj(fields) => Some((fields.get(i)?, &class.fields[i])),
            _ => None,
        }
    }

    /// The type id of `java.lang.String`, if the metadata defines it.
    pub fn string_type(&self) -> Option<i64> {
        self.string_type
    }

    /// Reads constant-pool entry `key` of `type_id` with `picker` into `slots`; `None` when the
    /// entry is missing or damaged.
    pub fn pick_entry(
        &self,
        picker: &FieldPicker,
        type_id: i64,
        key: i64,
        slots: &mut [Option<i64>],
    ) -> Option<()> {
        let entry = self.pools.get(&type_id)?.get(&key)?;
        picker
            .read(&self.classes, &mut self.reader(entry.at), slots)
            .ok()
    }

    /// The string at `pos` (an offset a [`FieldPicker`] recorded), constant-pool references
    /// followed.
    pub fn string_at(&self, pos: i64) -> Option<String> {
        let mut r = self.reader(usize::try_from(pos).ok()?);
        match read_string(&mut r).ok()? {
            Value::Str(s) => Some(s),
            other => self.plain_string(&other),
        }
    }

    /// A string value, or a reference into the `java.lang.String` pool followed.
    pub fn plain_string(&self, value: &Value) -> Option<String> {
        match value {
            Value::Str(s) => Some(s.clone()),
            Value::StrRef(k) => match self.pool(self.string_type?, *k)? {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Follows a constant-pool reference if `value` is one.
    pub fn deref<'v>(&'v self, value: &'v Value, field: &Field) -> Option<&'v Value> {
        match value {
            Value::Ref(k) if field.constant_pool => self.pool(field.type_id, *k),
            Value::Null => None,
            other => Some(other),
        }
    }

    /// A string field, following string-pool and symbol references (`jdk.types.Symbol`).
    pub fn string(&self, value: &Value, field: &Field) -> Option<String> {
        match self.deref(value, field)? {
            obj @ Value::Obj(_) => {
                let (v, f) = self.get(field.type_id, obj, "string")?;
                self.string(v, f)
            }
            other => self.plain_string(other),
        }
    }
}

/// A value of a class that is not an object.
fn read_primitive(r: &mut Reader, layout: Layout) -> Result<Value, DecodeError> {
    Ok(match layout {
        Layout::Int(bytes) => Value::Int(r.int(bytes.into())?),
        Layout::Byte => Value::Int(i64::from(r.u8()? as i8)),
        Layout::Bool => Value::Bool(r.u8()? != 0),
        Layout::F32 => Value::Float(f64::from(f32::from_bits(r.be_u32()?))),
        Layout::F64 => Value::Float(f64::from_bits(r.be_u64()?)),
        Layout::Str => read_string(r)?,
        Layout::Object => return Err(err(r.pos, "an object read as a primitive")),
    })
}

/// How to move past a value of one class: its fields flattened into steps once per type
/// system, so that skipping a constant pool's entries (most of a chunk's bytes are pools the
/// profiles never read) looks no class up per value.
#[derive(Debug, Clone)]
pub(crate) struct Skip(Box<[Step]>);

#[derive(Debug, Clone)]
enum Step {
    Byte,
    /// A big-endian float of this many bytes.
    Fixed(u8),
    Str,
    /// This many integers (or constant-pool references) in a row, in the chunk's encoding:
    /// `bytes` wide in all when it does not compress them.
    Ints {
        count: u32,
        bytes: u32,
    },
    /// A count, then that many values.
    Array(Skip),
    /// A count, then that many items of `Ints` each (a stack trace's frames, mostly).
    IntArray {
        count: u32,
        bytes: u32,
    },
    /// A value of this class read as [`skip_value`] does: nested too deeply to flatten, or a
    /// class the metadata does not define (an error only if such a value is met).
    Class(i64, usize),
}

impl Step {
    /// One integer of `width` bytes uncompressed.
    fn int(width: u8) -> Self {
        Step::Ints {
            count: 1,
            bytes: width.into(),
        }
    }
}

/// Steps one class may flatten into; past it, nested classes stay [`Step::Class`].
const MAX_SKIP_STEPS: usize = 256;

impl Skip {
    fn compile(classes: &FxHashMap<i64, Class>, type_id: i64) -> Self {
        let (mut steps, mut budget) = (Vec::new(), MAX_SKIP_STEPS);
        compile_value(classes, type_id, 0, &mut budget, &mut steps);
        Skip::new(steps)
    }

    /// `steps`, with integers in a row fused into one step, and arrays of them into one: those
    /// skip by scanning bytes instead of a step per integer.
    fn new(steps: Vec<Step>) -> Self {
        let mut out: Vec<Step> = Vec::with_capacity(steps.len());
        for step in steps {
            let step = match step {
                Step::Array(Skip(items)) => match *items {
                    [Step::Ints { count, bytes }] => Step::IntArray { count, bytes },
                    _ => Step::Array(Skip(items)),
                },
                other => other,
            };
            match (out.last_mut(), &step) {
                (
                    Some(Step::Ints { count, bytes }),
                    Step::Ints {
                        count: more,
                        bytes: more_bytes,
                    },
                ) => {
                    *count += more;
                    *bytes += more_bytes;
                }
                _ => out.push(step),
            }
        }
        Skip(out.into())
    }

    fn run(&self, classes: &FxHashMap<i64, Class>, r: &mut Reader) -> Result<(), DecodeError> {
        for step in self.0.iter() {
            match step {
                Step::Ints { count, bytes } => r.skip_ints(*count as usize, *bytes as usize)?,
                Step::IntArray { count, bytes } => {
                    let n = r.count()?;
                    r.skip_ints(n * *count as usize, n * *bytes as usize)?;
                }
                Step::Byte => {
                    r.u8()?;
                }
                Step::Fixed(n) => {
                    r.take((*n).into())?;
                }
                Step::Str => skip_string(r)?,
                Step::Array(items) => {
                    let n = r.count()?;
                    for _ in 0..n {
                        items.run(classes, r)?;
                    }
                }
                Step::Class(type_id, depth) => skip_value(classes, r, *type_id, *depth)?,
            }
        }
        Ok(())
    }
}

/// How the events of one class are read when a decoder wants a few of their fields as integers:
/// those land in slots, and the others are moved past by compiled steps without building
/// values (most events' fields are never looked at).
pub struct FieldPicker(Box<[Pick]>);

enum Pick {
    /// A field wanted as an integer: a constant-pool key, or a number read with this layout.
    Slot {
        slot: usize,
        layout: Option<Layout>,
    },
    /// A string field: its offset goes into the slot, for [`Chunk::string_at`].
    StrAt {
        slot: usize,
    },
    Skip(Skip),
}

impl FieldPicker {
    /// Reads one event's fields into `slots` (the wanted ones; the others are left alone).
    pub fn read(
        &self,
        classes: &FxHashMap<i64, Class>,
        r: &mut Reader,
        slots: &mut [Option<i64>],
    ) -> Result<(), DecodeError> {
        for pick in self.0.iter() {
            match pick {
                Pick::Slot { slot, layout } => {
                    let v = match layout {
                        None => r.int(8)?,
                        Some(layout) => match read_primitive(r, *layout)? {
                            Value::Int(i) => i,
                            Value::Float(f) => f as i64,
                            Value::Bool(b) => i64::from(b),
                            _ => 0,
                        },
                    };
                    slots[*slot] = Some(v);
                }
                Pick::StrAt { slot } => {
                    slots[*slot] = Some(r.pos as i64);
                    skip_string(r)?;
                }
                Pick::Skip(skip) => skip.run(classes, r)?,
            }
        }
        Ok(())
    }
}

impl Chunk<'_> {
    /// A picker for events of `type_id` that puts field `wanted[i].0` into slot `wanted[i].1`:
    /// numbers, booleans and constant-pool keys as they are, strings as their offset.
    /// `None` when a wanted field is an object or an array (read through
    /// [`Chunk::fields_into`]).
    pub fn picker(&self, type_id: i64, wanted: &[(usize, usize)]) -> Option<FieldPicker> {
        let class = self.classes.get(&type_id)?;
        let mut picks = Vec::with_capacity(class.fields.len());
        let mut budget = MAX_SKIP_STEPS;
        // Skipped fields in a row run as one list of steps.
        let mut skipped = Vec::new();
        for (i, f) in class.fields.iter().enumerate() {
            let Some(&(_, slot)) = wanted.iter().find(|(field, _)| *field == i) else {
                compile_field(&self.classes, f, 1, &mut budget, &mut skipped);
                continue;
            };
            if !skipped.is_empty() {
                picks.push(Pick::Skip(Skip::new(std::mem::take(&mut skipped))));
            }
            picks.push(match (f.array, f.constant_pool) {
                (true, _) => return None,
                (false, true) => Pick::Slot { slot, layout: None },
                (false, false) => match self.classes.get(&f.type_id)?.layout {
                    Layout::Object => return None,
                    Layout::Str => Pick::StrAt { slot },
                    layout => Pick::Slot {
                        slot,
                        layout: Some(layout),
                    },
                },
            });
        }
        if !skipped.is_empty() {
            picks.push(Pick::Skip(Skip::new(skipped)));
        }
        Some(FieldPicker(picks.into()))
    }
}

/// Appends the steps of a value of `type_id` at `depth` to `out`, flattening nested classes
/// while `budget` (steps left for the whole class) lasts.
fn compile_value(
    classes: &FxHashMap<i64, Class>,
    type_id: i64,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<Step>,
) {
    *budget = budget.saturating_sub(1);
    let Some(class) = classes.get(&type_id) else {
        out.push(Step::Class(type_id, depth));
        return;
    };
    match class.layout {
        Layout::Int(bytes) => out.push(Step::int(bytes)),
        Layout::Byte | Layout::Bool => out.push(Step::Byte),
        Layout::F32 => out.push(Step::Fixed(4)),
        Layout::F64 => out.push(Step::Fixed(8)),
        Layout::Str => out.push(Step::Str),
        Layout::Object if depth >= MAX_DEPTH || class.fields.len() > *budget => {
            out.push(Step::Class(type_id, depth))
        }
        Layout::Object => {
            for f in &class.fields {
                compile_field(classes, f, depth + 1, budget, out);
            }
        }
    }
}

/// Appends the steps of field `f` (of an object at `depth - 1`) to `out`.
fn compile_field(
    classes: &FxHashMap<i64, Class>,
    f: &Field,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<Step>,
) {
    let mut one = Vec::new();
    if f.constant_pool {
        one.push(Step::int(8));
    } else {
        compile_value(classes, f.type_id, depth, budget, &mut one);
    }
    if f.array {
        out.push(Step::Array(Skip::new(one)));
    } else {
        out.extend(one);
    }
}

/// Moves `r` past a value of `type_id` without building it.
fn skip_value(
    classes: &FxHashMap<i64, Class>,
    r: &mut Reader,
    type_id: i64,
    depth: usize,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(err(r.pos, "values nested too deeply"));
    }
    let class = classes
        .get(&type_id)
        .ok_or_else(|| err(r.pos, format!("unknown type id {type_id}")))?;
    match class.layout {
        Layout::Int(bytes) => {
            r.skip_int(bytes.into())?;
        }
        Layout::Byte | Layout::Bool => {
            r.u8()?;
        }
        Layout::F32 => {
            r.be_u32()?;
        }
        Layout::F64 => {
            r.be_u64()?;
        }
        Layout::Str => skip_string(r)?,
        Layout::Object => {
            for f in &class.fields {
                skip_field(classes, r, f, depth)?;
            }
        }
    }
    Ok(())
}

/// Moves `r` past field `f` of an object at `depth`.
fn skip_field(
    classes: &FxHashMap<i64, Class>,
    r: &mut Reader,
    f: &Field,
    depth: usize,
) -> Result<(), DecodeError> {
    let n = if f.array { r.count()? } else { 1 };
    for _ in 0..n {
        if f.constant_pool {
            r.skip_int(8)?;
        } else {
            skip_value(classes, r, f.type_id, depth + 1)?;
        }
    }
    Ok(())
}

/// Moves `r` past a string value (see [`read_string`]).
fn skip_string(r: &mut Reader) -> Result<(), DecodeError> {
    let at = r.pos;
    match r.u8()? {
        0 | 1 => {}
        2 => {
            r.skip_int(8)?;
        }
        3 | 5 => {
            let n = r.count()?;
            r.take(n)?;
        }
        4 => {
            let n = r.count()?;
            for _ in 0..n {
                r.skip_int(2)?;
            }
        }
        other => return Err(err(at, format!("unknown string encoding {other}"))),
    }
    Ok(())
}

fn element<'s>(
    r: &mut Reader,
    strings: &'s [String],
    depth: usize,
) -> Result<Element<'s>, DecodeError> {
    if depth > 64 {
        return Err(err(r.pos, "metadata nested too deeply"));
    }
    let s = |r: &mut Reader| -> Result<&'s str, DecodeError> {
        let at = r.pos;
        let i = r.int(4)?;
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .map(String::as_str)
            .ok_or_else(|| err(at, format!("metadata string index {i} out of range")))
    };
    let name = s(r)?;
    let n = r.count()?;
    let mut attrs = Vec::with_capacity(n);
    for _ in 0..n {
        attrs.push((s(r)?, s(r)?));
    }
    let n = r.count()?;
    let mut children = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        children.push(element(r, strings, depth + 1)?);
    }
    Ok(Element {
        name,
        attrs,
        children,
    })
}

/// A string value: null, empty, pool reference, UTF-8, UTF-16 code units or Latin-1.
fn read_string(r: &mut Reader) -> Result<Value, DecodeError> {
    let at = r.pos;
    Ok(match r.u8()? {
        0 => Value::Null,
        1 => Value::Str(String::new()),
        2 => Value::StrRef(r.int(8)?),
        3 => {
            let n = r.count()?;
            Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned())
        }
        4 => {
            let n = r.count()?;
            let mut units = Vec::with_capacity(n);
            for _ in 0..n {
                units.push(r.int(2)? as u16);
            }
            Value::Str(String::from_utf16_lossy(&units))
        }
        5 => {
            let n = r.count()?;
            Value::Str(r.take(n)?.iter().map(|&b| b as char).collect())
        }
        other => return Err(err(at, format!("unknown string encoding {other}"))),
    })
}

fn read_plain_string(r: &mut Reader) -> Result<Option<String>, DecodeError> {
    match read_string(r)? {
        Value::Str(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        _ => Err(err(r.pos, "metadata string refers to a constant pool")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, fields: &[(&str, i64, bool, bool)]) -> Class {
        Class {
            name: name.into(),
            fields: fields
                .iter()
                .map(|&(name, type_id, constant_pool, array)| Field {
                    name: name.into(),
                    type_id,
                    constant_pool,
                    array,
                })
                .collect(),
            layout: Layout::of(name),
            reads: Box::default(),
        }
    }

    /// `int`, `boolean`, `java.lang.String`, a frame (a method reference, a line, a name),
    /// a stack trace (truncated, frames) and a class whose field is its own class.
    fn classes() -> FxHashMap<i64, Class> {
        let mut c = FxHashMap::default();
        c.insert(1, class("int", &[]));
        c.insert(2, class("boolean", &[]));
        c.insert(3, class("java.lang.String", &[]));
        c.insert(
            10,
            class(
                "jdk.types.StackFrame",
                &[
                    ("method", 11, true, false),
                    ("lineNumber", 1, false, false),
                    ("name", 3, false, false),
                ],
            ),
        );
        c.insert(
            12,
            class(
                "jdk.types.StackTrace",
                &[("truncated", 2, false, false), ("frames", 10, false, true)],
            ),
        );
        c.insert(
            20,
            class(
                "Loop",
                &[("x", 1, false, false), ("next", 20, false, false)],
            ),
        );
        c
    }

    #[test]
    fn compiled_skips_end_where_skipping_by_class_does() {
        let classes = classes();
        // truncated = 0, 2 frames: (method 300 as a 2-byte varint, line 7, "ab" as UTF-8),
        // (method 5, line 130 as a 2-byte varint, null string); then a trailing marker byte.
        let bytes = [
            0, 2, 0xac, 0x02, 7, 3, 2, b'a', b'b', 5, 0x82, 0x01, 0, 0xff,
        ];
        let mut by_class = Reader::new(&bytes, 0, true);
        skip_value(&classes, &mut by_class, 12, 0).unwrap();
        let mut compiled = Reader::new(&bytes, 0, true);
        Skip::compile(&classes, 12)
            .run(&classes, &mut compiled)
            .unwrap();
        assert_eq!(compiled.pos, bytes.len() - 1);
        assert_eq!(compiled.pos, by_class.pos);
        // Cut short, both fail.
        let short = &bytes[..6];
        assert!(Skip::compile(&classes, 12)
            .run(&classes, &mut Reader::new(short, 0, true))
            .is_err());
    }

    #[test]
    fn a_class_nesting_itself_compiles_to_bounded_steps_and_fails_as_deep_values_do() {
        let classes = classes();
        let skip = Skip::compile(&classes, 20);
        fn steps(s: &Skip) -> usize {
            s.0.iter()
                .map(|st| match st {
                    Step::Array(inner) => 1 + steps(inner),
                    _ => 1,
                })
                .sum()
        }
        assert!(steps(&skip) <= 2 * MAX_DEPTH + 2, "{} steps", steps(&skip));
        // Values nested past MAX_DEPTH are refused either way, with the same message.
        let bytes = vec![1u8; 4 * MAX_DEPTH];
        let by_class = skip_value(&classes, &mut Reader::new(&bytes, 0, true), 20, 0).unwrap_err();
        let compiled = skip
            .run(&classes, &mut Reader::new(&bytes, 0, true))
            .unwrap_err();
        assert_eq!(compiled.to_string(), by_class.to_string());
    }

    #[test]
    fn an_undefined_nested_class_fails_only_when_a_value_of_it_is_met() {
        let mut classes = classes();
        classes.insert(30, class("Holder", &[("items", 99, false, true)]));
        let skip = Skip::compile(&classes, 30);
        // An empty array needs no value of the undefined class.
        skip.run(&classes, &mut Reader::new(&[0], 0, true)).unwrap();
        let e = skip
            .run(&classes, &mut Reader::new(&[1, 0], 0, true))
            .unwrap_err();
        assert!(e.to_string().contains("unknown type id 99"), "{e}");
    }
}
