//! Feeding a 0.2.0 sink: only the profiles it asked for, with every string interned into a
//! table the instance keeps, so a frame's name crosses the sandbox once per instance rather
//! than once per profile (lowering a string is a guest allocation and a copy; a frame index is
//! four bytes of a list copied whole).

use std::collections::HashSet;

use kiln_plugin_api::{Aggregation, Profile};
use rustc_hash::FxHashMap;

use crate::bindings::types as wit;

/// What a sink said it wants, from its `interest` export.
pub(crate) struct SinkInterest {
    /// Profile type names; `None`: every type.
    types: Option<HashSet<String>>,
    files_and_lines: bool,
}

impl From<wit::SinkInterest> for SinkInterest {
    fn from(i: wit::SinkInterest) -> Self {
        Self {
            types: (!i.profile_types.is_empty()).then(|| i.profile_types.into_iter().collect()),
            files_and_lines: i.files_and_lines,
        }
    }
}

impl SinkInterest {
    pub fn wants(&self, p: &Profile) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.contains(&p.profile_type.name))
    }
}

/// The host's copy of one instance's string table: the id of every string sent so far.
pub(crate) struct StringTable {
    ids: FxHashMap<Box<str>, u32>,
    /// Bytes of the strings in the table; past `limit` the next batch starts it over, so a
    /// sink fed churning names (new pods, new functions) holds a bounded table.
    bytes: usize,
    limit: usize,
    /// The instance's table is not known to match ours (a fault rebuilt it): start over.
    stale: bool,
}

impl StringTable {
    pub fn new(limit: usize) -> Self {
        Self {
            ids: FxHashMap::default(),
            bytes: 0,
            limit,
            stale: false,
        }
    }

    /// Forgets what the instance holds; the next batch tells it to empty its table.
    pub fn reset(&mut self) {
        self.stale = true;
    }

    fn id(&mut self, s: &str, added: &mut Vec<String>) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).expect("a string table is reset long before 2^32");
        self.ids.insert(s.into(), id);
        self.bytes += s.len();
        added.push(s.to_owned());
        id
    }

    /// The batch that hands `profiles` (those `interest` wants) to the instance.
    pub fn batch<'a>(
        &mut self,
        profiles: impl IntoIterator<Item = &'a Profile>,
        interest: &SinkInterest,
    ) -> wit::SinkBatch {
        let reset = std::mem::take(&mut self.stale) || self.bytes > self.limit;
        if reset {
            self.ids.clear();
            self.bytes = 0;
        }
        let mut added = Vec::new();
        let profiles = profiles
            .into_iter()
            .filter(|p| interest.wants(p))
            .map(|p| self.profile(p, interest.files_and_lines, &mut added))
            .collect();
        wit::SinkBatch {
            strings: wit::StringDelta { reset, added },
            profiles,
        }
    }

    fn profile(
        &mut self,
        p: &Profile,
        files_and_lines: bool,
        added: &mut Vec<String>,
    ) -> wit::InternedProfile {
        let mut labels = Vec::with_capacity(p.labels.len() * 2);
        for (name, value) in p.labels.iter() {
            labels.push(self.id(name, added));
            labels.push(self.id(value, added));
        }
        let t = &p.profile_type;
        let profile_type = wit::InternedProfileType {
            name: self.id(&t.name, added),
            metric: self.id(&t.metric, added),
            sample_type: self.id(&t.sample_type, added),
            sample_unit: self.id(&t.sample_unit, added),
            period_type: self.id(&t.period_type, added),
            period_unit: self.id(&t.period_unit, added),
            aggregation: match t.aggregation {
                Aggregation::Sum => wit::Aggregation::Sum,
                Aggregation::Average => wit::Aggregation::Average,
            },
        };
        let frame_functions = p
            .frames
            .iter()
            .map(|f| self.id(&f.function, added))
            .collect();
        let (frame_files, frame_lines) = if files_and_lines {
            (
                p.frames.iter().map(|f| self.id(&f.file, added)).collect(),
                p.frames.iter().map(|f| f.line).collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut stacks = Vec::with_capacity(p.samples.iter().map(|s| s.stack.len()).sum());
        let mut stack_lens = Vec::with_capacity(p.samples.len());
        let mut values = Vec::with_capacity(p.samples.len());
        for s in &p.samples {
            stacks.extend(s.stack.iter().copied());
            stack_lens.push(s.stack.len() as u32);
            values.push(s.value);
        }
        wit::InternedProfile {
            labels,
            profile_type,
            start_ns: p.start_ns,
            end_ns: p.end_ns,
            frame_functions,
            frame_files,
            frame_lines,
            stack_lens,
            values,
            stacks,
            spy_name: self.id(&p.meta.spy_name, added),
            sample_rate: p.meta.sample_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::{Frame, Labels, ProfileMeta, ProfileType, Sample};

    fn profile(type_name: &str, functions: &[&str], pod: &str) -> Profile {
        Profile {
            labels: Labels::from_pairs([("service_name", "api"), ("pod", pod)]),
            profile_type: ProfileType {
                name: type_name.into(),
                metric: "process_cpu".into(),
                sample_type: type_name.into(),
                sample_unit: "nanoseconds".into(),
                period_type: "cpu".into(),
                period_unit: "nanoseconds".into(),
                aggregation: Aggregation::Sum,
            },
            start_ns: 0,
            end_ns: 10,
            frames: functions
                .iter()
                .map(|f| Frame {
                    function: (*f).into(),
                    file: format!("{f}.go"),
                    line: 7,
                    ..Default::default()
                })
                .collect(),
            samples: vec![
                Sample {
                    stack: vec![0, 1],
                    value: 3,
                },
                Sample {
                    stack: vec![0],
                    value: 2,
                },
            ],
            meta: ProfileMeta::default(),
        }
    }

    /// What the guest reconstructs: its table after the delta, then each profile's strings.
    fn replay(table: &mut Vec<String>, batch: &wit::SinkBatch) -> Vec<(Vec<String>, Vec<String>)> {
        if batch.strings.reset {
            table.clear();
        }
        table.extend(batch.strings.added.iter().cloned());
        batch
            .profiles
            .iter()
            .map(|p| {
                let s = |ids: &[u32]| ids.iter().map(|&i| table[i as usize].clone()).collect();
                (s(&p.labels), s(&p.frame_functions))
            })
            .collect()
    }

    fn all() -> SinkInterest {
        SinkInterest {
            types: None,
            files_and_lines: false,
        }
    }

    #[test]
    fn strings_cross_once_and_resolve_to_the_same_profile() {
        let mut host = StringTable::new(1 << 20);
        let mut guest = Vec::new();
        let a = profile("cpu", &["main", "work"], "p-1");
        let first = host.batch(std::slice::from_ref(&a), &all());
        assert!(!first.strings.reset);
        let seen = replay(&mut guest, &first);
        assert_eq!(seen[0].1, vec!["main", "work"]);
        assert_eq!(seen[0].0, vec!["pod", "p-1", "service_name", "api"]);
        assert_eq!(first.profiles[0].stack_lens, vec![2, 1]);
        assert_eq!(first.profiles[0].stacks, vec![0, 1, 0]);
        assert_eq!(first.profiles[0].values, vec![3, 2]);
        assert!(first.profiles[0].frame_files.is_empty());

        // The same names again: nothing new crosses; a new pod adds only its name.
        let again = host.batch(
            &[a.clone(), profile("cpu", &["main", "work"], "p-2")],
            &all(),
        );
        assert_eq!(again.strings.added, vec!["p-2"]);
        let seen = replay(&mut guest, &again);
        assert_eq!(seen[1].0, vec!["pod", "p-2", "service_name", "api"]);
        assert_eq!(seen[1].1, vec!["main", "work"]);
    }

    #[test]
    fn a_reset_resends_every_string_and_the_table_stays_bounded() {
        let mut host = StringTable::new(64);
        let mut guest = Vec::new();
        let first = host.batch(&[profile("cpu", &["main", "work"], "p-1")], &all());
        replay(&mut guest, &first);
        // After a fault the instance starts empty: the host must say so and resend.
        host.reset();
        let after_fault = host.batch(&[profile("cpu", &["main"], "p-1")], &all());
        assert!(after_fault.strings.reset);
        assert!(after_fault.strings.added.contains(&"main".to_string()));
        assert_eq!(replay(&mut guest, &after_fault)[0].1, vec!["main"]);

        // Churning names push the table past its limit; the next batch starts it over.
        for i in 0..20 {
            let name = format!("function_{i}_with_a_long_name");
            let b = host.batch(&[profile("cpu", &[name.as_str()], "p-1")], &all());
            let seen = replay(&mut guest, &b);
            assert_eq!(seen[0].1, vec![name]);
        }
        assert!(guest.iter().map(String::len).sum::<usize>() < 64 + 64);
    }

    #[test]
    fn only_the_types_and_fields_asked_for_cross() {
        let mut host = StringTable::new(1 << 20);
        let interest = SinkInterest::from(wit::SinkInterest {
            profile_types: vec!["cpu".into()],
            files_and_lines: true,
        });
        let b = host.batch(
            &[
                profile("samples", &["main"], "p-1"),
                profile("cpu", &["main"], "p-1"),
            ],
            &interest,
        );
        assert_eq!(b.profiles.len(), 1);
        let mut guest = Vec::new();
        replay(&mut guest, &b);
        let p = &b.profiles[0];
        assert_eq!(guest[p.profile_type.name as usize], "cpu");
        assert_eq!(guest[p.frame_files[0] as usize], "main.go");
        assert_eq!(p.frame_lines, vec![7]);
    }
}
