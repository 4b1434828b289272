//! The data model that crosses every component boundary.

use serde::{Deserialize, Serialize};

use crate::labels::Labels;

/// How values of a profile type combine over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Values add up over time (CPU samples, allocations, contentions).
    #[default]
    Sum,
    /// Values are a level at an instant (in-use memory, goroutines): a range shows the mean of
    /// the profiles that fell in it.
    Average,
}

impl Aggregation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sum" => Some(Self::Sum),
            "average" | "avg" => Some(Self::Average),
            _ => None,
        }
    }
}

/// What a profile measures.
///
/// `name` is the short, Pyroscope-OG name users type after the application (`myapp.cpu`); the
/// remaining fields form Grafana Pyroscope's id `metric:sample_type:sample_unit:period_type:period_unit`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProfileType {
    pub name: String,
    pub metric: String,
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
    pub aggregation: Aggregation,
}

/// `(name, metric, sample_type, sample_unit, period_type, period_unit, aggregation)`
type KnownType = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Aggregation,
);

/// Profile types by their short names, as Pyroscope names them.
const KNOWN_TYPES: &[KnownType] = &[
    (
        "cpu",
        "process_cpu",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        Aggregation::Sum,
    ),
    (
        "cpu_nanoseconds",
        "process_cpu",
        "cpu",
        "nanoseconds",
        "cpu",
        "nanoseconds",
        Aggregation::Sum,
    ),
    (
        "itimer",
        "process_cpu",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        Aggregation::Sum,
    ),
    (
        "wall",
        "wall",
        "samples",
        "count",
        "wall",
        "nanoseconds",
        Aggregation::Sum,
    ),
    (
        "wall_samples",
        "wall",
        "samples",
        "count",
        "wall",
        "nanoseconds",
        Aggregation::Sum,
    ),
    (
        "alloc_objects",
        "memory",
        "alloc_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_space",
        "memory",
        "alloc_space",
        "bytes",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "inuse_objects",
        "memory",
        "inuse_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Average,
    ),
    (
        "inuse_space",
        "memory",
        "inuse_space",
        "bytes",
        "space",
        "bytes",
        Aggregation::Average,
    ),
    (
        "goroutines",
        "goroutine",
        "goroutine",
        "count",
        "goroutine",
        "count",
        Aggregation::Average,
    ),
    (
        "mutex_count",
        "mutex",
        "contentions",
        "count",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "mutex_duration",
        "mutex",
        "delay",
        "nanoseconds",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "block_count",
        "block",
        "contentions",
        "count",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "block_duration",
        "block",
        "delay",
        "nanoseconds",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "lock_count",
        "block",
        "contentions",
        "count",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "lock_duration",
        "block",
        "delay",
        "nanoseconds",
        "contentions",
        "count",
        Aggregation::Sum,
    ),
    (
        "alloc_in_new_tlab_objects",
        "memory",
        "alloc_in_new_tlab_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_in_new_tlab_bytes",
        "memory",
        "alloc_in_new_tlab_bytes",
        "bytes",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_outside_tlab_objects",
        "memory",
        "alloc_outside_tlab_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_outside_tlab_bytes",
        "memory",
        "alloc_outside_tlab_bytes",
        "bytes",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_sample_objects",
        "memory",
        "alloc_sample_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "alloc_sample_bytes",
        "memory",
        "alloc_sample_bytes",
        "bytes",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "live",
        "memory",
        "live",
        "count",
        "objects",
        "count",
        Aggregation::Average,
    ),
    (
        "malloc_objects",
        "memory",
        "malloc_objects",
        "count",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "malloc_bytes",
        "memory",
        "malloc_bytes",
        "bytes",
        "space",
        "bytes",
        Aggregation::Sum,
    ),
    (
        "exceptions",
        "exceptions",
        "samples",
        "count",
        "",
        "",
        Aggregation::Sum,
    ),
];

impl ProfileType {
    /// The well-known profile type named `name` (`cpu`, `inuse_space`, `mutex_count`, …).
    pub fn well_known(name: &str) -> Option<Self> {
        KNOWN_TYPES.iter().find(|t| t.0 == name).map(
            |&(name, metric, st, su, pt, pu, aggregation)| Self {
                name: name.into(),
                metric: metric.into(),
                sample_type: st.into(),
                sample_unit: su.into(),
                period_type: pt.into(),
                period_unit: pu.into(),
                aggregation,
            },
        )
    }

    /// `Some(name)` when `name` is a well-known short name.
    pub fn known_short_name(name: &str) -> Option<&'static str> {
        KNOWN_TYPES.iter().find(|t| t.0 == name).map(|t| t.0)
    }

    /// Grafana Pyroscope's id: `metric:sample_type:sample_unit:period_type:period_unit`.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.metric, self.sample_type, self.sample_unit, self.period_type, self.period_unit
        )
    }

    /// The unit Pyroscope's UI expects in `metadata.units` for this type.
    pub fn display_units(&self) -> &'static str {
        match self.sample_unit.as_str() {
            "bytes" => "bytes",
            "nanoseconds" => "nanoseconds",
            _ => match self.sample_type.as_str() {
                "samples" => "samples",
                "goroutine" | "goroutines" => "goroutines",
                "contentions" => "lock_samples",
                _ => "objects",
            },
        }
    }
}

/// One stack frame, interned per profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Function name as shown in flamegraphs (`main.work`, `org/example/Foo.bar`).
    pub function: String,
    /// Source file, empty when unknown.
    pub file: String,
    /// Line number, 0 when unknown.
    pub line: u32,
    /// First line of the function (pprof's `Function.start_line`, which Go's PGO needs), 0
    /// when unknown.
    #[serde(default)]
    pub start_line: u32,
}

impl Frame {
    pub fn named(function: impl Into<String>) -> Self {
        Self {
            function: function.into(),
            ..Self::default()
        }
    }
}

/// A stack and its value. `stack` indexes [`Profile::frames`], **root first**.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub stack: Vec<u32>,
    pub value: i64,
}

/// Information about where a profile came from, shown to users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileMeta {
    /// The profiler that produced it (`gospy`, `pyspy`, `javaspy`, …).
    pub spy_name: String,
    /// Sampling frequency in Hz; 0 when not sampled at a fixed rate.
    pub sample_rate: u32,
}

/// One series, one profile type, one time range, and its stack samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Series labels, including `service_name`; never the reserved `__profile_type__`.
    pub labels: Labels,
    pub profile_type: ProfileType,
    /// Start of the profiling window, Unix nanoseconds.
    pub start_ns: i64,
    /// End of the profiling window, Unix nanoseconds.
    pub end_ns: i64,
    pub frames: Vec<Frame>,
    pub samples: Vec<Sample>,
    pub meta: ProfileMeta,
}

impl Profile {
    /// The sum of all sample values.
    pub fn total(&self) -> i64 {
        self.samples.iter().map(|s| s.value).sum()
    }

    /// Whether `other` has the same service, frames and sample stacks, so that what storage
    /// derives from them (frame and stack ids) carries over: the profiles a pprof with several
    /// sample types becomes differ only in their values.
    pub fn shares_stacks_with(&self, other: &Profile) -> bool {
        self.labels.service_name() == other.labels.service_name()
            && self.samples.len() == other.samples.len()
            && self.frames == other.frames
            && self
                .samples
                .iter()
                .zip(&other.samples)
                .all(|(a, b)| a.stack == b.stack)
    }

    /// Frame names of a sample, root first.
    pub fn stack_names<'a>(&'a self, sample: &'a Sample) -> impl Iterator<Item = &'a str> + 'a {
        sample
            .stack
            .iter()
            .map(|&i| self.frames[i as usize].function.as_str())
    }

    /// Checks the invariants a component may rely on: every frame index in range and a
    /// `service_name` label present.
    pub fn validate(&self) -> Result<(), String> {
        if self.labels.service_name().is_none_or(str::is_empty) {
            return Err("profile has no service_name label".into());
        }
        let n = self.frames.len() as u32;
        // The largest index of each stack first: a loop the compiler vectorizes.
        for s in &self.samples {
            if s.stack.iter().copied().max().is_some_and(|m| m >= n) {
                let bad = s
                    .stack
                    .iter()
                    .find(|&&i| i >= n)
                    .expect("an index past the end");
                return Err(format!(
                    "a sample references frame {bad} but the profile has {n} frames"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_ids_follow_pyroscope() {
        assert_eq!(
            ProfileType::well_known("cpu").unwrap().id(),
            "process_cpu:samples:count:cpu:nanoseconds"
        );
        assert_eq!(
            ProfileType::well_known("inuse_space").unwrap().aggregation,
            Aggregation::Average
        );
        assert!(ProfileType::well_known("nope").is_none());
    }
}
