//! # kiln-collapsed
//!
//! Stack formats without symbol tables — the frames are the names:
//! * `folded` (Pyroscope's default "groups"): `frame;frame;frame count` per line, root first. The
//!   count follows the **last** space, so frames may contain spaces; lines without a space are
//!   skipped; identical stacks add up.
//! * `lines`: one sample per line, the line being the stack; identical lines are counted.
//! * `trie` and `tree`: the binary formats of Pyroscope's old agents ([`binary`]).
//! * `speedscope`: speedscope JSON, sampled or evented ([`speedscope`]); time units become
//!   nanoseconds.
//!
//! The profile type comes from the name's suffix (`myapp.cpu`, `myapp.alloc_space`; `cpu` when
//! absent); `sampleRate`, `spyName`, `units` and `aggregationType` come from the request.

use kiln_plugin_api::{
    DecodeError, Decoder, Frame, IngestMeta, Profile, ProfileMeta, ProfileType, Sample,
};
use rustc_hash::FxHashMap;

pub mod binary;
pub mod speedscope;

/// Which format a [`CollapsedDecoder`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    Folded,
    Lines,
    Trie,
    Tree,
    Speedscope,
}

/// Decoder for folded and lines bodies.
#[derive(Debug, Clone, Copy)]
pub struct CollapsedDecoder {
    pub format: TextFormat,
}

impl CollapsedDecoder {
    pub fn folded() -> Self {
        Self {
            format: TextFormat::Folded,
        }
    }

    pub fn lines() -> Self {
        Self {
            format: TextFormat::Lines,
        }
    }

    pub fn new(format: TextFormat) -> Self {
        Self { format }
    }
}

/// Interns frames and sums identical stacks.
#[derive(Default)]
struct Stacks {
    frames: Vec<Frame>,
    frame_ids: FxHashMap<String, u32>,
    stacks: FxHashMap<Vec<u32>, i64>,
}

impl Stacks {
    fn add<'a>(&mut self, stack: impl IntoIterator<Item = &'a str>, value: i64) {
        if value == 0 {
            return;
        }
        // Negative values are dropped at ingest, as for pprof (see docs/negative-values.md).
        if value < 0 {
            kiln_plugin_api::skipped::record("collapsed", "negative_value", 1);
            return;
        }
        let stack: Vec<&str> = stack.into_iter().collect();
        // A stack without a frame (speedscope's `[]`) has nowhere to show in any view.
        if stack.is_empty() || stack.iter().all(|f| f.is_empty()) {
            kiln_plugin_api::skipped::record("collapsed", "empty_stack", 1);
            return;
        }
        let ids: Vec<u32> = stack
            .into_iter()
            .map(|f| match self.frame_ids.get(f) {
                Some(&id) => id,
                None => {
                    self.frames.push(Frame::named(f));
                    let id = self.frames.len() as u32 - 1;
                    self.frame_ids.insert(f.to_string(), id);
                    id
                }
            })
            .collect();
        *self.stacks.entry(ids).or_default() += value;
    }

    fn into_profile(self, meta: &IngestMeta, profile_type: ProfileType) -> Vec<Profile> {
        if self.stacks.is_empty() {
            return Vec::new();
        }
        let mut samples: Vec<Sample> = self
            .stacks
            .into_iter()
            .map(|(stack, value)| Sample { stack, value })
            .collect();
        samples.sort_by(|a, b| a.stack.cmp(&b.stack));
        vec![Profile {
            labels: meta.labels.clone(),
            profile_type,
            start_ns: meta.start_ns,
            end_ns: meta.end_ns,
            frames: self.frames,
            samples,
            meta: ProfileMeta {
                spy_name: meta.spy_name.clone(),
                sample_rate: meta.sample_rate.unwrap_or(100),
            },
        }]
    }
}

/// The profile type a text upload is stored as: the name's suffix, adjusted by `units` and
/// `aggregationType` when the agent sends them.
pub fn text_profile_type(meta: &IngestMeta) -> ProfileType {
    let name = meta.type_suffix.as_deref().unwrap_or("cpu");
    let mut ty = ProfileType::well_known(name).expect("type suffixes are well-known names");
    if let Some(a) = meta.aggregation {
        ty.aggregation = a;
    }
    if let Some(units) = meta.units.as_deref() {
        match units {
            "bytes" => ty.sample_unit = "bytes".into(),
            "lock_nanoseconds" => ty.sample_unit = "nanoseconds".into(),
            _ => {}
        }
    }
    ty
}

/// The type of a profile whose values are nanoseconds (a speedscope file in a time unit): the
/// unit follows the values whatever the name's suffix says. No suffix means wall time; `app.cpu`
/// becomes CPU time (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`), still named `cpu`.
pub fn time_profile_type(suffix: Option<&str>, mut ty: ProfileType) -> ProfileType {
    if suffix.is_none() {
        ty = ProfileType::well_known("wall").expect("wall is well known");
    }
    if ty.sample_type == "samples" {
        ty.sample_type = match ty.metric.as_str() {
            "process_cpu" => "cpu".into(),
            "wall" => "wall".into(),
            other => other.into(),
        };
    }
    ty.sample_unit = "nanoseconds".into();
    ty
}

impl CollapsedDecoder {
    fn decode_text(&self, body: &[u8], out: &mut Stacks) -> Result<(), DecodeError> {
        let text = std::str::from_utf8(body).map_err(|e| {
            DecodeError::Malformed(format!("body is not UTF-8 text (byte {})", e.valid_up_to()))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if self.format == TextFormat::Lines {
                if !line.trim().is_empty() {
                    out.add(line.split(';'), 1);
                }
                continue;
            }
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: i64 = count.trim().parse().map_err(|_| {
                DecodeError::Malformed(format!(
                    "line {}: {count:?} is not an integer sample count",
                    n + 1
                ))
            })?;
            out.add(stack.split(';'), value);
        }
        Ok(())
    }
}

impl Decoder for CollapsedDecoder {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let mut stacks = Stacks::default();
        let mut profile_type = text_profile_type(meta);
        match self.format {
            TextFormat::Folded | TextFormat::Lines => self.decode_text(body, &mut stacks)?,
            TextFormat::Trie => {
                for (stack, value) in binary::decode_trie(body)? {
                    stacks.add(stack.split(';'), value);
                }
            }
            TextFormat::Tree => {
                for (stack, value) in binary::decode_tree(body)? {
                    stacks.add(stack.iter().map(String::as_str), value);
                }
            }
            TextFormat::Speedscope => {
                let decoded = speedscope::decode(body)?;
                if decoded.nanoseconds {
                    profile_type = time_profile_type(meta.type_suffix.as_deref(), profile_type);
                }
                for (stack, value) in &decoded.stacks {
                    stacks.add(stack.iter().map(String::as_str), *value);
                }
            }
        }
        Ok(stacks.into_profile(meta, profile_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::{Aggregation, Labels, Tree};

    fn meta(suffix: Option<&str>) -> IngestMeta {
        IngestMeta {
            app: "app".into(),
            type_suffix: suffix.map(String::from),
            labels: Labels::from_pairs([("service_name", "app")]),
            ..Default::default()
        }
    }

    fn folded(p: &Profile) -> String {
        Tree::from_stacks(p.samples.iter().map(|s| (p.stack_names(s), s.value))).to_folded()
    }

    #[test]
    fn folded_sums_identical_stacks_and_keeps_spaces_in_frames() {
        let body =
            b"foo;bar 100\r\nfoo;baz 200\nfoo;bar 1\nno-count-line\nmain;file.py:42 - work 7\n";
        let p = &CollapsedDecoder::folded()
            .decode(body, &meta(None))
            .unwrap()[0];
        assert_eq!(p.profile_type.name, "cpu");
        assert_eq!(p.meta.sample_rate, 100);
        assert_eq!(
            folded(p),
            "foo;bar 101\nfoo;baz 200\nmain;file.py:42 - work 7\n"
        );
        p.validate().unwrap();
    }

    #[test]
    fn fixture_decodes() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/collapsed.txt"
        ))
        .unwrap();
        let p = &CollapsedDecoder::folded()
            .decode(&body, &meta(Some("cpu")))
            .unwrap()[0];
        let expected: i64 = String::from_utf8(body)
            .unwrap()
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(_, c)| c.trim().parse::<i64>().unwrap())
            .sum();
        assert_eq!(p.total(), expected);
    }

    #[test]
    fn lines_counts_each_line_once() {
        let p = &CollapsedDecoder::lines()
            .decode(b"a;b\na;b\n\na;c\n", &meta(Some("wall")))
            .unwrap()[0];
        assert_eq!(p.profile_type.name, "wall");
        assert_eq!(folded(p), "a;b 2\na;c 1\n");
    }

    #[test]
    fn bad_counts_and_binary_are_refused() {
        let err = CollapsedDecoder::folded()
            .decode(b"a;b 1\na;b x\n", &meta(None))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: \"x\" is not an integer sample count"
        );
        assert!(CollapsedDecoder::folded()
            .decode(b"\xff\xfe", &meta(None))
            .is_err());
    }

    #[test]
    fn units_and_aggregation_shape_the_type() {
        let mut m = meta(Some("inuse_space"));
        m.aggregation = Some(Aggregation::Sum);
        let p = &CollapsedDecoder::folded().decode(b"a 1\n", &m).unwrap()[0];
        assert_eq!(p.profile_type.aggregation, Aggregation::Sum);
        assert_eq!(p.profile_type.sample_unit, "bytes");
    }

    #[test]
    fn speedscope_in_seconds_is_cpu_time_under_a_cpu_name() {
        let body = br#"{"shared":{"frames":[{"name":"main"},{"name":"work"}]},
          "profiles":[{"type":"sampled","name":"a","unit":"seconds","startValue":0,"endValue":3,
                       "samples":[[0,1],[0]],"weights":[2.5,0.5]}]}"#;
        let d = CollapsedDecoder::new(TextFormat::Speedscope);
        let p = &d.decode(body, &meta(Some("cpu"))).unwrap()[0];
        assert_eq!(p.profile_type.name, "cpu");
        assert_eq!(
            p.profile_type.id(),
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
        );
        assert_eq!(p.profile_type.display_units(), "nanoseconds");
        assert_eq!(p.total(), 3_000_000_000);
        let p = &d.decode(body, &meta(None)).unwrap()[0];
        assert_eq!(
            p.profile_type.id(),
            "wall:wall:nanoseconds:wall:nanoseconds"
        );
        // Unitless weights keep the suffix's type.
        let none = br#"{"shared":{"frames":[{"name":"main"}]},
          "profiles":[{"type":"sampled","unit":"none","samples":[[0]],"weights":[3]}]}"#;
        let p = &d.decode(none, &meta(Some("cpu"))).unwrap()[0];
        assert_eq!(
            p.profile_type.id(),
            "process_cpu:samples:count:cpu:nanoseconds"
        );
    }
}
