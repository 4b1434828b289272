//! Feeding a sink (0.2.0 and later): only the profiles it asked for, with every string interned
//! into a table the instance keeps, so a frame's name crosses the sandbox once per instance
//! rather than once per profile (lowering a string is a guest allocation and a copy; a frame
//! index is four bytes of a list copied whole). Since 0.3.0 a profile with the previous one's
//! frames and stacks (the types of one pprof) crosses with its values alone.

use std::collections::HashSet;
use std::iter::Peekable;

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

/// Where a batch stands in the string table's history: the batches of one generation build on
/// one another in `seq` order; the first of a generation tells the instance to empty its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub generation: u64,
    pub seq: u64,
}

impl Stamp {
    const FIRST: Self = Self {
        generation: 0,
        seq: 0,
    };

    /// The batch an instance takes after this one.
    pub fn next(self) -> Self {
        Self {
            seq: self.seq + 1,
            ..self
        }
    }
}

/// Which batch an instance takes next. Batches are made ([`StringTable::batch`]) where
/// profiles are queued and reach the instance later, so one made against a table the instance
/// no longer holds (a fault rebuilt it) must be told apart and skipped: sent, its ids would
/// name other strings.
pub(crate) struct Feed {
    /// `None`: the instance's table is unknown; only a batch that empties it can go next.
    expect: Option<Stamp>,
}

impl Feed {
    /// A new instance's: its table is empty, as the host's is.
    pub fn new() -> Self {
        Self {
            expect: Some(Stamp::FIRST),
        }
    }

    /// The instance was rebuilt (a fault) or never saw the last call.
    pub fn lost(&mut self) {
        self.expect = None;
    }

    /// The next call out of `batches`: the first batch the instance can take, with the batches
    /// that follow it merged in. Batches it cannot take are skipped, their profiles added to
    /// `skipped`. Expects the call to succeed; [`Feed::lost`] says otherwise.
    pub fn next_call(
        &mut self,
        batches: &mut Peekable<impl Iterator<Item = (wit::SinkBatch, Stamp)>>,
        skipped: &mut usize,
    ) -> Option<wit::SinkBatch> {
        loop {
            let (mut call, mut stamp) = batches.next()?;
            if !call.strings.reset && self.expect != Some(stamp) {
                *skipped += call.profiles.len();
                continue;
            }
            while let Some((next, next_stamp)) =
                batches.next_if(|(b, s)| !b.strings.reset && *s == stamp.next())
            {
                call.strings.added.extend(next.strings.added);
                call.profiles.extend(next.profiles);
                stamp = next_stamp;
            }
            self.expect = Some(stamp.next());
            return Some(call);
        }
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
    /// The stamp of the next batch.
    next: Stamp,
    /// A profile with the previous one's frames and stacks crosses without them.
    same_stacks: bool,
}

impl StringTable {
    /// `same_stacks`: the instance reads `same-stacks` (0.3.0 and later).
    pub fn new(limit: usize, same_stacks: bool) -> Self {
        Self {
            same_stacks,
            ids: FxHashMap::default(),
            bytes: 0,
            limit,
            stale: false,
            next: Stamp::FIRST,
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

    /// The batch that hands `profiles` (those `interest` wants) to the instance, and its
    /// stamp; the instance must take the batches in stamp order. `None` when it wants none of
    /// them (the table is then untouched).
    pub fn batch<'a>(
        &mut self,
        profiles: impl IntoIterator<Item = &'a Profile>,
        interest: &SinkInterest,
    ) -> Option<(wit::SinkBatch, Stamp)> {
        let wanted: Vec<&Profile> = profiles.into_iter().filter(|p| interest.wants(p)).collect();
        if wanted.is_empty() {
            return None;
        }
        let reset = std::mem::take(&mut self.stale) || self.bytes > self.limit;
        if reset {
            self.ids.clear();
            self.bytes = 0;
            self.next = Stamp {
                generation: self.next.generation + 1,
                seq: 0,
            };
        }
        let stamp = self.next;
        self.next = stamp.next();
        let mut added = Vec::new();
        let mut previous: Option<&Profile> = None;
        let profiles = wanted
            .into_iter()
            .map(|p| {
                let same_stacks =
                    self.same_stacks && previous.is_some_and(|q| q.shares_stacks_with(p));
                previous = Some(p);
                self.profile(p, interest.files_and_lines, same_stacks, &mut added)
            })
            .collect();
        let batch = wit::SinkBatch {
            strings: wit::StringDelta { reset, added },
            profiles,
        };
        Some((batch, stamp))
    }

    /// `same_stacks`: `p` has the frames and stacks of the profile before it in the batch.
    fn profile(
        &mut self,
        p: &Profile,
        files_and_lines: bool,
        same_stacks: bool,
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
        let values = p.samples.iter().map(|s| s.value).collect();
        let mut profile = wit::InternedProfile {
            labels,
            profile_type,
            start_ns: p.start_ns,
            end_ns: p.end_ns,
            frame_functions: Vec::new(),
            frame_files: Vec::new(),
            frame_lines: Vec::new(),
            stack_lens: Vec::new(),
            values,
            stacks: Vec::new(),
            spy_name: self.id(&p.meta.spy_name, added),
            sample_rate: p.meta.sample_rate,
            same_stacks,
        };
        if same_stacks {
            return profile;
        }
        profile.frame_functions = p
            .frames
            .iter()
            .map(|f| self.id(&f.function, added))
            .collect();
        if files_and_lines {
            profile.frame_files = p.frames.iter().map(|f| self.id(&f.file, added)).collect();
            profile.frame_lines = p.frames.iter().map(|f| f.line).collect();
        }
        profile.stacks = Vec::with_capacity(p.samples.iter().map(|s| s.stack.len()).sum());
        profile.stack_lens = Vec::with_capacity(p.samples.len());
        for s in &p.samples {
            profile.stacks.extend(s.stack.iter().copied());
            profile.stack_lens.push(s.stack.len() as u32);
        }
        profile
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
        let mut host = StringTable::new(1 << 20, false);
        let mut guest = Vec::new();
        let a = profile("cpu", &["main", "work"], "p-1");
        let (first, stamp) = host.batch(std::slice::from_ref(&a), &all()).unwrap();
        assert!(!first.strings.reset);
        let seen = replay(&mut guest, &first);
        assert_eq!(seen[0].1, vec!["main", "work"]);
        assert_eq!(seen[0].0, vec!["pod", "p-1", "service_name", "api"]);
        assert_eq!(first.profiles[0].stack_lens, vec![2, 1]);
        assert_eq!(first.profiles[0].stacks, vec![0, 1, 0]);
        assert_eq!(first.profiles[0].values, vec![3, 2]);
        assert!(first.profiles[0].frame_files.is_empty());

        // The same names again: nothing new crosses; a new pod adds only its name.
        let (again, next) = host
            .batch(
                &[a.clone(), profile("cpu", &["main", "work"], "p-2")],
                &all(),
            )
            .unwrap();
        assert_eq!(next, stamp.next());
        assert_eq!(again.strings.added, vec!["p-2"]);
        let seen = replay(&mut guest, &again);
        assert_eq!(seen[1].0, vec!["pod", "p-2", "service_name", "api"]);
        assert_eq!(seen[1].1, vec!["main", "work"]);
    }

    #[test]
    fn a_reset_resends_every_string_and_the_table_stays_bounded() {
        let mut host = StringTable::new(64, false);
        let mut guest = Vec::new();
        let (first, stamp) = host
            .batch(&[profile("cpu", &["main", "work"], "p-1")], &all())
            .unwrap();
        replay(&mut guest, &first);
        // After a fault the instance starts empty: the host must say so and resend, in a new
        // generation.
        host.reset();
        let (after_fault, restarted) = host
            .batch(&[profile("cpu", &["main"], "p-1")], &all())
            .unwrap();
        assert!(after_fault.strings.reset);
        assert_eq!(restarted.generation, stamp.generation + 1);
        assert_eq!(restarted.seq, 0);
        assert!(after_fault.strings.added.contains(&"main".to_string()));
        assert_eq!(replay(&mut guest, &after_fault)[0].1, vec!["main"]);

        // Churning names push the table past its limit; the next batch starts it over.
        for i in 0..20 {
            let name = format!("function_{i}_with_a_long_name");
            let (b, _) = host
                .batch(&[profile("cpu", &[name.as_str()], "p-1")], &all())
                .unwrap();
            let seen = replay(&mut guest, &b);
            assert_eq!(seen[0].1, vec![name]);
        }
        assert!(guest.iter().map(String::len).sum::<usize>() < 64 + 64);
    }

    #[test]
    fn batches_made_before_a_fault_are_skipped_and_the_rest_merged_in_order() {
        let mut host = StringTable::new(1 << 20, false);
        let mut feed = Feed::new();
        let mut guest = Vec::new();
        let made = |host: &mut StringTable, f: &str| {
            host.batch(&[profile("cpu", &[f], "p-1")], &all()).unwrap()
        };
        // Three batches queued: one call, in order, every name resolved.
        let queued = vec![
            made(&mut host, "a"),
            made(&mut host, "b"),
            made(&mut host, "c"),
        ];
        let mut skipped = 0;
        let mut batches = queued.into_iter().peekable();
        let call = feed.next_call(&mut batches, &mut skipped).unwrap();
        assert!(feed.next_call(&mut batches, &mut skipped).is_none());
        let names: Vec<Vec<String>> = replay(&mut guest, &call).into_iter().map(|p| p.1).collect();
        assert_eq!(names, [["a"], ["b"], ["c"]]);

        // The instance faults on the next call; a batch made meanwhile, against the table it
        // lost, is skipped, and the next one made starts the table over.
        let d = made(&mut host, "d");
        let call = feed.next_call(&mut [d].into_iter().peekable(), &mut skipped);
        assert!(call.is_some());
        let e = made(&mut host, "e");
        feed.lost();
        host.reset();
        guest.clear();
        let queued = vec![e, made(&mut host, "f"), made(&mut host, "g")];
        let mut batches = queued.into_iter().peekable();
        let call = feed.next_call(&mut batches, &mut skipped).unwrap();
        assert_eq!(skipped, 1, "the batch made before the reset");
        assert!(call.strings.reset);
        let names: Vec<Vec<String>> = replay(&mut guest, &call).into_iter().map(|p| p.1).collect();
        assert_eq!(names, [["f"], ["g"]]);

        // A batch dropped from a full queue: the next one made resets, those before it go.
        let kept = made(&mut host, "h");
        let _dropped = made(&mut host, "i");
        host.reset();
        let after = made(&mut host, "j");
        let mut batches = vec![kept, after].into_iter().peekable();
        let mut calls = Vec::new();
        while let Some(call) = feed.next_call(&mut batches, &mut skipped) {
            calls.push(call);
        }
        assert_eq!(calls.len(), 2, "a reset starts a call of its own");
        let names: Vec<Vec<String>> = calls
            .iter()
            .flat_map(|c| replay(&mut guest, c))
            .map(|p| p.1)
            .collect();
        assert_eq!(names, [["h"], ["j"]]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn a_profile_with_the_previous_ones_stacks_crosses_with_its_values_alone() {
        let mut shared = StringTable::new(1 << 20, true);
        let mut whole = StringTable::new(1 << 20, false);
        let mut time = profile("cpu", &["main", "work"], "p-1");
        for s in &mut time.samples {
            s.value *= 10_000_000;
        }
        // The two types of one pprof, then another stack shape, then a profile whose stacks
        // match only the one before the previous.
        let batch = [
            profile("samples", &["main", "work"], "p-1"),
            time,
            profile("samples", &["main", "other"], "p-1"),
            profile("samples", &["main", "work"], "p-1"),
        ];
        let everything = SinkInterest {
            types: None,
            files_and_lines: true,
        };
        let (b, _) = shared.batch(&batch, &everything).unwrap();
        let same: Vec<bool> = b.profiles.iter().map(|p| p.same_stacks).collect();
        assert_eq!(same, [false, true, false, false]);
        let second = &b.profiles[1];
        assert!(second.frame_functions.is_empty() && second.frame_files.is_empty());
        assert!(second.frame_lines.is_empty() && second.stacks.is_empty());
        assert!(second.stack_lens.is_empty());
        assert_eq!(second.values, vec![30_000_000, 20_000_000]);
        // Read against the profile before it, it is the profile a 0.2.0 sink gets whole.
        let (w, _) = whole.batch(&batch, &everything).unwrap();
        assert!(w.profiles.iter().all(|p| !p.same_stacks));
        let first = &b.profiles[0];
        assert_eq!(first.frame_functions, w.profiles[1].frame_functions);
        assert_eq!(first.frame_files, w.profiles[1].frame_files);
        assert_eq!(first.frame_lines, w.profiles[1].frame_lines);
        assert_eq!(first.stack_lens, w.profiles[1].stack_lens);
        assert_eq!(first.stacks, w.profiles[1].stacks);
        assert_eq!(second.values, w.profiles[1].values);
        assert_eq!(b.profiles[3].stacks, w.profiles[3].stacks);
    }

    #[test]
    fn only_the_types_and_fields_asked_for_cross() {
        let mut host = StringTable::new(1 << 20, false);
        let interest = SinkInterest::from(wit::SinkInterest {
            profile_types: vec!["cpu".into()],
            files_and_lines: true,
        });
        let (b, _) = host
            .batch(
                &[
                    profile("samples", &["main"], "p-1"),
                    profile("cpu", &["main"], "p-1"),
                ],
                &interest,
            )
            .unwrap();
        // None of what it wants: no batch, and the table is untouched.
        assert!(host
            .batch(&[profile("samples", &["other"], "p-9")], &interest)
            .is_none());
        assert_eq!(b.profiles.len(), 1);
        let mut guest = Vec::new();
        replay(&mut guest, &b);
        let p = &b.profiles[0];
        assert_eq!(guest[p.profile_type.name as usize], "cpu");
        assert_eq!(guest[p.frame_files[0] as usize], "main.go");
        assert_eq!(p.frame_lines, vec![7]);
    }
}
