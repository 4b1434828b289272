//! Finds a series' id by what identifies it (tenant, labels, profile type) without keeping a
//! second copy of those: the table holds ids only, and hashes and compares through the series
//! records themselves. A map keyed by the identity itself held every series' labels and type
//! twice — about half the memory of the series state with tens of thousands of series — and
//! cloned them for every profile written just to look it up.

use std::hash::{Hash, Hasher};

use hashbrown::HashTable;
use kiln_plugin_api::{Labels, ProfileType, Tenant};
use rustc_hash::FxHasher;

/// What a series is found by.
pub(crate) trait SeriesIdentity {
    fn identity(&self) -> (&Tenant, &Labels, &ProfileType);
}

#[derive(Default)]
pub(crate) struct SeriesIndex {
    ids: HashTable<u32>,
}

fn hash(tenant: &Tenant, labels: &Labels, profile_type: &ProfileType) -> u64 {
    let mut h = FxHasher::default();
    tenant.hash(&mut h);
    labels.hash(&mut h);
    profile_type.hash(&mut h);
    h.finish()
}

fn hash_of(record: &impl SeriesIdentity) -> u64 {
    let (t, l, p) = record.identity();
    hash(t, l, p)
}

impl SeriesIndex {
    /// The id of the series `(tenant, labels, profile_type)` among `records`.
    pub(crate) fn get<R: SeriesIdentity>(
        &self,
        records: &[R],
        tenant: &Tenant,
        labels: &Labels,
        profile_type: &ProfileType,
    ) -> Option<u32> {
        self.ids
            .find(hash(tenant, labels, profile_type), |&id| {
                records[id as usize].identity() == (tenant, labels, profile_type)
            })
            .copied()
    }

    /// Indexes `records[id]`, which no other indexed record may share an identity with.
    pub(crate) fn insert<R: SeriesIdentity>(&mut self, records: &[R], id: u32) {
        self.ids
            .insert_unique(hash_of(&records[id as usize]), id, |&i| {
                hash_of(&records[i as usize])
            });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A series identity alone, for tests of what is found through records.
#[cfg(test)]
pub(crate) struct Rec(pub Tenant, pub Labels, pub ProfileType);

#[cfg(test)]
impl SeriesIdentity for Rec {
    fn identity(&self) -> (&Tenant, &Labels, &ProfileType) {
        (&self.0, &self.1, &self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_series_by_its_identity_only() {
        let cpu = ProfileType::well_known("cpu").unwrap();
        let mut records = Vec::new();
        let mut index = SeriesIndex::default();
        for i in 0..10_000u32 {
            let labels = Labels::from_pairs([
                ("service_name", "app".to_string()),
                ("pod", format!("p{}", i % 5_000)),
            ]);
            let tenant = Tenant::new(if i < 5_000 { "a" } else { "b" }).unwrap();
            records.push(Rec(tenant, labels, cpu.clone()));
            index.insert(&records, i);
        }
        assert_eq!(index.len(), 10_000);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(index.get(&records, &r.0, &r.1, &r.2), Some(i as u32));
        }
        let other = Tenant::new("c").unwrap();
        assert_eq!(index.get(&records, &other, &records[0].1, &cpu), None);
    }
}
