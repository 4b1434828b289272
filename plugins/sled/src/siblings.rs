//! Sibling series: the same tenant, labels and profile metric (`process_cpu`, `memory`), other
//! sample types — the `samples` and `cpu` of a Go CPU profile, the four types of a heap
//! profile. Their chunks of one bucket come from the same pushes, so where two hold
//! proportional columns one is stored as a reference to the other
//! ([`crate::column::Stored::ScaledSibling`]).
//!
//! Groups are rebuilt from the series records at every start, so nothing here is stored. Like
//! [`crate::series_index`], the table holds ids only and compares through the records.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::series_index::SeriesIdentity;

#[derive(Default)]
pub(crate) struct SiblingGroups {
    /// Group ids, found by the hash of what their members share.
    groups: HashTable<u32>,
    /// Each group's series ids, in the order they joined.
    members: Vec<Arc<[u32]>>,
    /// Each series' group, by series id.
    group_of: Vec<u32>,
}

fn shared<R: SeriesIdentity>(record: &R) -> impl PartialEq + Hash + '_ {
    let (tenant, labels, profile_type) = record.identity();
    (tenant, labels, profile_type.metric.as_str())
}

fn hash_of<R: SeriesIdentity>(record: &R) -> u64 {
    let mut h = FxHasher::default();
    shared(record).hash(&mut h);
    h.finish()
}

impl SiblingGroups {
    /// Adds `records[id]`, the next series id, to its group (a new one if it has no sibling).
    pub(crate) fn join<R: SeriesIdentity>(&mut self, records: &[R], id: u32) {
        debug_assert_eq!(id as usize, self.group_of.len(), "series ids are dense");
        let record = &records[id as usize];
        let hash = hash_of(record);
        let members = &self.members;
        let found = self
            .groups
            .find(hash, |&g| {
                shared(&records[members[g as usize][0] as usize]) == shared(record)
            })
            .copied();
        let group = match found {
            Some(g) => {
                let m = &mut self.members[g as usize];
                *m = m.iter().copied().chain([id]).collect();
                g
            }
            None => {
                let g = self.members.len() as u32;
                self.members.push(Arc::from([id]));
                let members = &self.members;
                self.groups.insert_unique(hash, g, |&g| {
                    hash_of(&records[members[g as usize][0] as usize])
                });
                g
            }
        };
        self.group_of.push(group);
    }

    /// The group of `id` and its members (`id` among them), when it has siblings.
    pub(crate) fn of(&self, id: u32) -> Option<(u32, Arc<[u32]>)> {
        let g = *self.group_of.get(id as usize)?;
        let members = &self.members[g as usize];
        (members.len() > 1).then(|| (g, members.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series_index::Rec;
    use kiln_plugin_api::{Labels, ProfileType, Tenant};

    fn rec(tenant: &str, pod: &str, type_name: &str) -> Rec {
        let tenant = if tenant.is_empty() {
            Tenant::default()
        } else {
            Tenant::new(tenant).unwrap()
        };
        Rec(
            tenant,
            Labels::from_pairs([("service_name", "api"), ("pod", pod)]),
            ProfileType::well_known(type_name).unwrap(),
        )
    }

    #[test]
    fn siblings_share_tenant_labels_and_metric() {
        let records = vec![
            rec("", "a", "cpu"),
            rec("", "b", "cpu"),
            rec("", "a", "cpu_nanoseconds"),
            rec("", "a", "alloc_space"),
            rec("t1", "a", "cpu_nanoseconds"),
            rec("", "a", "inuse_space"),
        ];
        let mut groups = SiblingGroups::default();
        for id in 0..records.len() as u32 {
            groups.join(&records, id);
        }
        let (cpu, members) = groups.of(0).unwrap();
        assert_eq!(&members[..], &[0, 2]);
        assert_eq!(groups.of(2).unwrap().0, cpu);
        // Another pod, another tenant: alone.
        assert!(groups.of(1).is_none());
        assert!(groups.of(4).is_none());
        let (memory, members) = groups.of(3).unwrap();
        assert_ne!(memory, cpu);
        assert_eq!(&members[..], &[3, 5]);
        assert!(groups.of(99).is_none());
    }
}
