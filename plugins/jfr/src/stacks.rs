//! Stack traces resolved to frames: read straight from the constant pool's bytes where they
//! are laid out as the JDK and async-profiler write them (with methods' names read the same
//! way), through the chunk's values otherwise.

use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::parse::{self, Chunk, Value};
use crate::{symbols, Acc, ChunkCache};

/// The frames of stack trace `key`, root first; a truncated trace starts with `[truncated]`.
/// `None` when the trace is not in the constant pool; frames whose method or class is missing
/// are left out (and counted).
pub(crate) fn resolve_stack<'c>(
    chunk: &'c Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache<'c>,
    stack_type: i64,
    key: i64,
) -> Option<Vec<u32>> {
    let layout = cache
        .traces
        .entry(stack_type)
        .or_insert_with(|| chunk.trace_layout(stack_type).map(Rc::new))
        .clone();
    layout
        .and_then(|layout| stack_from_raw(chunk, acc, cache, &layout, key))
        .or_else(|| stack_from_values(chunk, acc, cache, stack_type, key))
}

/// [`resolve_stack`] from a trace read straight from the chunk's bytes; `None` when it does
/// not read that way.
fn stack_from_raw<'c>(
    chunk: &'c Chunk,
    acc: &mut Acc,
    cache: &mut ChunkCache<'c>,
    layout: &parse::TraceLayout,
    key: i64,
) -> Option<Vec<u32>> {
    let mut frames = std::mem::take(&mut cache.frames);
    let truncated = chunk.raw_stack_trace(layout, key, &mut frames);
    let stack = truncated.map(|truncated| {
        let mut out = Vec::with_capacity(frames.len() + 1);
        if truncated {
            let truncated = acc.function("[truncated]".into());
            out.push(acc.frame(truncated, 0));
        }
        for &(method, line) in frames.iter().rev() {
            let (Some(k), Some(method_field)) = (method, layout.method_field) else {
                acc.skipped.missing_frames += 1;
                continue;
            };
            let function = match cache.methods.get(&k) {
                Some(&function) => function,
                None => {
                    let names = cache
                        .names
                        .get_or_insert_with(|| MethodNames::new(chunk, method_field));
                    let function = match names {
                        Some(names) if names.method_type == method_field.type_id => {
                            names.function(chunk, k).map(|name| acc.function(name))
                        }
                        _ => method_function(chunk, acc, &Value::Ref(k), method_field),
                    };
                    cache.methods.insert(k, function);
                    function
                }
            };
            match function {
                Some(f) => out.push(acc.frame(f, u32::try_from(line).unwrap_or(0))),
                None => acc.skipped.missing_frames += 1,
            }
        }
        out
    });
    cache.frames = frames;
    stack
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

/// Reads methods' names straight from the chunk's bytes, where they are laid out as the JDK and
/// async-profiler write them (a method's `type` and `name` constant-pool references, a class's
/// `name` and a symbol's `string`); [`method_function`] reads other layouts through values.
pub(crate) struct MethodNames<'c> {
    method_type: i64,
    /// Slots: the class key, the name's symbol key.
    method: parse::FieldPicker,
    class_type: i64,
    /// Slot: the name's symbol key.
    class: parse::FieldPicker,
    symbol_type: i64,
    /// Slot: the string (an offset) or, when `symbol_string` is a reference, its key.
    symbol: parse::FieldPicker,
    symbol_string: &'c parse::Field,
    /// Classes' names as functions show them, by class key.
    classes: FxHashMap<i64, Option<String>>,
}

impl<'c> MethodNames<'c> {
    fn new(chunk: &'c Chunk, method_field: &parse::Field) -> Option<Self> {
        let class_of = |type_id| chunk.classes.get(&type_id);
        let reference = |type_id, name: &str| {
            let class = class_of(type_id)?;
            let i = class.field(name)?;
            let f = &class.fields[i];
            (f.constant_pool && !f.array).then_some((i, f))
        };
        let method_type = method_field.type_id;
        let (type_at, class_ref) = reference(method_type, "type")?;
        let (name_at, name_ref) = reference(method_type, "name")?;
        let (class_name_at, class_name_ref) = reference(class_ref.type_id, "name")?;
        if class_name_ref.type_id != name_ref.type_id {
            return None;
        }
        let symbol_type = name_ref.type_id;
        let symbol_class = class_of(symbol_type)?;
        let string_at = symbol_class.field("string")?;
        let symbol_string = &symbol_class.fields[string_at];
        if symbol_string.array
            || (symbol_string.constant_pool && Some(symbol_string.type_id) != chunk.string_type())
        {
            return None;
        }
        Some(Self {
            method_type,
            method: chunk.picker(method_type, &[(type_at, 0), (name_at, 1)])?,
            class_type: class_ref.type_id,
            class: chunk.picker(class_ref.type_id, &[(class_name_at, 0)])?,
            symbol_type,
            symbol: chunk.picker(symbol_type, &[(string_at, 0)])?,
            symbol_string,
            classes: FxHashMap::default(),
        })
    }

    /// The symbol `key`'s string.
    fn symbol(&self, chunk: &Chunk, key: i64) -> Option<String> {
        let mut slot = [None];
        chunk.pick_entry(&self.symbol, self.symbol_type, key, &mut slot)?;
        let v = slot[0]?;
        if self.symbol_string.constant_pool {
            chunk.plain_string(&Value::StrRef(v))
        } else {
            chunk.string_at(v)
        }
    }

    /// What [`method_function`] makes of method `key`: its function's name.
    fn function(&mut self, chunk: &Chunk, key: i64) -> Option<String> {
        let mut slots = [None; 2];
        chunk.pick_entry(&self.method, self.method_type, key, &mut slots)?;
        let name = self.symbol(chunk, slots[1]?)?;
        let class_key = slots[0]?;
        let class = match self.classes.get(&class_key) {
            Some(class) => class.clone()?,
            None => {
                let mut slot = [None];
                let class = chunk
                    .pick_entry(&self.class, self.class_type, class_key, &mut slot)
                    .map(|()| {
                        let name = slot[0]
                            .and_then(|k| self.symbol(chunk, k))
                            .unwrap_or_default();
                        class_shown(&name)
                    });
                self.classes.insert(class_key, class.clone());
                class?
            }
        };
        Some(function_name(&class, &name))
    }
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
    Some(acc.function(function_name(&class_shown(&class), &name)))
}

/// A class name as functions show it: generated parts merged, `/` as `.`.
fn class_shown(class: &str) -> String {
    symbols::merge_generated(class).replace('/', ".")
}

/// `Class.method` from a class as [`class_shown`] gives it (the method alone without one),
/// generated parts of the method's name merged.
fn function_name(class: &str, method: &str) -> String {
    let method = symbols::merge_generated(method);
    if class.is_empty() {
        method.into_owned()
    } else {
        format!("{class}.{method}")
    }
}

fn int(v: Option<(&Value, &parse::Field)>) -> i64 {
    match v {
        Some((Value::Int(i), _)) => *i,
        Some((Value::Float(f), _)) => *f as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Acc;

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
        let layout = chunk
            .trace_layout(stack_type)
            .expect("JDK stack traces read from bytes");
        for key in keys {
            let a = stack_from_raw(&chunk, &mut from_bytes, &mut cache_b, &layout, key)
                .expect("a JDK stack trace reads from bytes");
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
        assert!(
            matches!(cache_b.names, Some(Some(_))),
            "methods' names were read from bytes"
        );
        assert_eq!(
            from_bytes.skipped.missing_frames,
            from_values.skipped.missing_frames
        );
    }
}
