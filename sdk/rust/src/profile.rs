//! Samples aggregated by (stack, tag set) between reports, and the pprof encoding of a report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::symbols::Symbolizer;

/// Distinct (stack, tag set) pairs kept per report; samples of new stacks beyond it are
/// counted as dropped.
const MAX_STACKS: usize = 64 * 1024;

/// Stacks (innermost address first) and their sample counts.
pub(crate) type Stacks = Vec<(Box<[usize]>, u64)>;

/// Sample counts by raw stack (innermost address first) and tag-set id.
pub(crate) struct Aggregate {
    /// Key: the stack's addresses followed by the tag-set id, so that a borrowed slice finds it.
    counts: HashMap<Box<[usize]>, u64>,
    scratch: Vec<usize>,
    max_stacks: usize,
    pub(crate) dropped: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            counts: HashMap::new(),
            scratch: Vec::new(),
            max_stacks: MAX_STACKS,
            dropped: 0,
        }
    }
}

impl Aggregate {
    pub(crate) fn add(&mut self, stack: &[usize], tag: u32) {
        self.scratch.clear();
        self.scratch.extend_from_slice(stack);
        self.scratch.push(tag as usize);
        if let Some(n) = self.counts.get_mut(&self.scratch[..]) {
            *n += 1;
        } else if self.counts.len() < self.max_stacks {
            self.counts.insert(self.scratch.as_slice().into(), 1);
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Takes the counts out, grouped by tag-set id: (stack, count) pairs.
    pub(crate) fn take_by_tag(&mut self) -> HashMap<u32, Stacks> {
        let mut out: HashMap<u32, Stacks> = HashMap::new();
        for (key, n) in std::mem::take(&mut self.counts) {
            let mut stack = key.into_vec();
            let tag = stack.pop().unwrap_or_default() as u32;
            out.entry(tag)
                .or_default()
                .push((stack.into_boxed_slice(), n));
        }
        self.dropped = 0;
        out
    }
}

/// The `perftools.profiles` messages the SDK writes (field numbers from profile.proto).
pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<Arc<str>, i64>,
}

impl Strings {
    fn id(&mut self, s: &Arc<str>) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.clone(), i);
        i
    }
}

/// Encodes one report's samples as pprof: two values per sample, `samples/count` and
/// `cpu/nanoseconds`, one location per function name (innermost first).
pub(crate) fn encode(
    stacks: &[(Box<[usize]>, u64)],
    symbols: &mut Symbolizer,
    sample_rate: i32,
    start: SystemTime,
    duration: Duration,
) -> Vec<u8> {
    let mut strings = Strings::default();
    for s in ["", "samples", "count", "cpu", "nanoseconds"] {
        strings.id(&Arc::from(s));
    }
    let period = 1_000_000_000 / sample_rate.max(1) as i64;
    let mut functions: HashMap<i64, u64> = HashMap::new();
    let mut profile = proto::Profile {
        sample_type: vec![
            proto::ValueType { r#type: 1, unit: 2 },
            proto::ValueType { r#type: 3, unit: 4 },
        ],
        period_type: Some(proto::ValueType { r#type: 3, unit: 4 }),
        period,
        time_nanos: start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64,
        duration_nanos: duration.as_nanos() as i64,
        ..Default::default()
    };
    for (stack, count) in stacks {
        let mut location_id = Vec::with_capacity(stack.len());
        for (i, &addr) in stack.iter().enumerate() {
            let name = strings.id(&symbols.name(addr, i > 0));
            let id = *functions.entry(name).or_insert_with(|| {
                let id = profile.function.len() as u64 + 1;
                profile.function.push(proto::Function { id, name });
                profile.location.push(proto::Location {
                    id,
                    line: vec![proto::Line { function_id: id }],
                });
                id
            });
            location_id.push(id);
        }
        profile.sample.push(proto::Sample {
            location_id,
            value: vec![*count as i64, *count as i64 * period],
        });
    }
    profile.string_table = strings.table;
    profile.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn leaf() -> usize {
        std::hint::black_box(1)
    }

    #[inline(never)]
    fn caller() -> usize {
        std::hint::black_box(2)
    }

    #[test]
    fn aggregates_by_stack_and_tag_set() {
        let mut agg = Aggregate::default();
        agg.add(&[1, 2, 3], 0);
        agg.add(&[1, 2, 3], 0);
        agg.add(&[1, 2, 3], 7);
        agg.add(&[1, 2], 0);
        let mut by_tag = agg.take_by_tag();
        assert!(agg.is_empty());
        let mut untagged = by_tag.remove(&0).unwrap();
        untagged.sort();
        assert_eq!(
            untagged,
            vec![(vec![1, 2].into(), 1), (vec![1, 2, 3].into(), 2)]
        );
        assert_eq!(by_tag.remove(&7).unwrap(), vec![(vec![1, 2, 3].into(), 1)]);
        assert!(by_tag.is_empty());
    }

    #[test]
    fn new_stacks_beyond_the_bound_are_dropped_and_counted() {
        let mut agg = Aggregate {
            max_stacks: 2,
            ..Aggregate::default()
        };
        agg.add(&[1], 0);
        agg.add(&[2], 0);
        agg.add(&[3], 0); // a third stack: dropped
        agg.add(&[1], 0); // a known one still counts
        assert_eq!(agg.dropped, 1);
        let mut got = agg.take_by_tag().remove(&0).unwrap();
        got.sort();
        assert_eq!(got, vec![(vec![1].into(), 2), (vec![2].into(), 1)]);
        assert_eq!(agg.dropped, 0);
    }

    #[test]
    fn encodes_named_stacks_with_counts_and_cpu_time() {
        let mut symbols = Symbolizer::new();
        symbols.refresh();
        // The caller's frame holds a return address: just past the start of `caller`.
        let stack: Box<[usize]> =
            vec![leaf as *const () as usize, caller as *const () as usize + 1].into();
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let body = encode(
            &[(stack, 3)],
            &mut symbols,
            100,
            start,
            Duration::from_secs(10),
        );
        let p = proto::Profile::decode(&body[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.string_table[0], "");
        assert_eq!(
            p.sample_type
                .iter()
                .map(|t| (s(t.r#type), s(t.unit)))
                .collect::<Vec<_>>(),
            [("samples", "count"), ("cpu", "nanoseconds")]
        );
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 10_000_000_000);
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, [3, 30_000_000]);
        let names: Vec<&str> = p.sample[0]
            .location_id
            .iter()
            .map(|&id| {
                let loc = &p.location[id as usize - 1];
                let f = &p.function[loc.line[0].function_id as usize - 1];
                s(f.name)
            })
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names[0].ends_with("profile::tests::leaf"), "{names:?}");
        assert!(names[1].ends_with("profile::tests::caller"), "{names:?}");
        assert_eq!(leaf() + caller(), 3);
    }
}
