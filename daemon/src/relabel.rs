//! The built-in `relabel` transform: add, drop, rename and keep-only labels.

use std::collections::BTreeMap;

use kiln_plugin_api::{labels::SERVICE_NAME, Labels, Profile, Transform, TransformError};
use serde::Deserialize;

/// `[transforms.NAME] type = "relabel"`. Steps run in the order of the fields below.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    /// Labels to rename, `old = "new"`.
    pub rename: BTreeMap<String, String>,
    /// Labels to remove.
    pub drop: Vec<String>,
    /// If non-empty, every other label is removed (`service_name` always stays).
    pub keep_only: Vec<String>,
    /// Labels to set, `name = "value"` (overwriting).
    pub add: BTreeMap<String, String>,
}

impl RelabelConfig {
    /// Renames, drops, keeps and adds, in that order (`service_name` is never dropped).
    pub fn apply(&self, labels: &mut Labels) {
        for (old, new) in &self.rename {
            if let Some(v) = labels.remove(old) {
                labels.insert(new.clone(), v);
            }
        }
        for name in &self.drop {
            if name != SERVICE_NAME {
                labels.remove(name);
            }
        }
        if !self.keep_only.is_empty() {
            labels.retain(|k, _| k == SERVICE_NAME || self.keep_only.iter().any(|x| x == k));
        }
        for (k, v) in &self.add {
            labels.insert(k.clone(), v.clone());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Relabel(pub RelabelConfig);

impl Transform for Relabel {
    fn transform(&self, mut profiles: Vec<Profile>) -> Result<Vec<Profile>, TransformError> {
        let c = &self.0;
        for p in &mut profiles {
            c.apply(&mut p.labels);
            if p.labels.service_name().is_none_or(str::is_empty) {
                return Err(TransformError(
                    "relabel left a profile without service_name".into(),
                ));
            }
        }
        Ok(profiles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::{ProfileMeta, ProfileType};

    #[test]
    fn applies_rename_drop_keep_add_in_order() {
        let p = Profile {
            labels: Labels::from_pairs([
                ("service_name", "a"),
                ("pod", "p1"),
                ("host", "h"),
                ("x", "1"),
            ]),
            profile_type: ProfileType::well_known("cpu").unwrap(),
            start_ns: 0,
            end_ns: 0,
            frames: vec![],
            samples: vec![],
            meta: ProfileMeta::default(),
        };
        let t = Relabel(RelabelConfig {
            rename: [("host".into(), "node".into())].into(),
            drop: vec!["x".into()],
            keep_only: vec!["node".into()],
            add: [("env".into(), "prod".into())].into(),
        });
        let out = t.transform(vec![p]).unwrap();
        assert_eq!(
            out[0].labels,
            Labels::from_pairs([("service_name", "a"), ("node", "h"), ("env", "prod")])
        );
    }
}
