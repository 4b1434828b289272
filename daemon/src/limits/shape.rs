//! Limits on what one profile may look like: labels, samples, stack depth.

use kiln_plugin_api::{Frame, Profile};

use super::{LimitError, TenantLimits};

/// The frame that stands for the root-side frames cut from a deep stack.
pub const TRUNCATED_FRAME: &str = "[truncated]";

/// Refuses a profile whose labels or sample count exceed the tenant's limits.
pub fn check(limits: &TenantLimits, profile: &Profile) -> Result<(), LimitError> {
    if limits.max_label_count > 0 && profile.labels.len() > limits.max_label_count {
        return Err(LimitError::invalid(
            "max_label_count",
            format!(
                "a series has {} labels, more than limits.max_label_count = {}",
                profile.labels.len(),
                limits.max_label_count
            ),
        ));
    }
    for (name, value) in profile.labels.iter() {
        let n = name.chars().count();
        if limits.max_label_name_length > 0 && n > limits.max_label_name_length {
            return Err(LimitError::invalid(
                "max_label_name_length",
                format!(
                    "label name {:?}{} is {n} characters, more than limits.max_label_name_length = {}",
                    name.chars().take(32).collect::<String>(),
                    if n > 32 { "…" } else { "" },
                    limits.max_label_name_length
                ),
            ));
        }
        let v = value.chars().count();
        if limits.max_label_value_length > 0 && v > limits.max_label_value_length {
            return Err(LimitError::invalid(
                "max_label_value_length",
                format!(
                    "the value of label {name:?} is {v} characters, more than limits.max_label_value_length = {}",
                    limits.max_label_value_length
                ),
            ));
        }
    }
    if limits.max_samples_per_profile > 0 && profile.samples.len() > limits.max_samples_per_profile
    {
        return Err(LimitError::invalid(
            "max_samples_per_profile",
            format!(
                "a profile has {} samples, more than limits.max_samples_per_profile = {}",
                profile.samples.len(),
                limits.max_samples_per_profile
            ),
        ));
    }
    Ok(())
}

/// Cuts stacks deeper than `max_depth` (0: no limit) to their `max_depth - 1` leaf-side
/// frames under one `[truncated]` root frame, so the hot functions and the totals stay
/// right. Returns how many stacks were cut.
pub fn truncate_stacks(profile: &mut Profile, max_depth: usize) -> u64 {
    if max_depth == 0 || profile.samples.iter().all(|s| s.stack.len() <= max_depth) {
        return 0;
    }
    let marker = profile.frames.len() as u32;
    profile.frames.push(Frame::named(TRUNCATED_FRAME));
    let keep = max_depth.saturating_sub(1);
    let mut cut = 0;
    for s in &mut profile.samples {
        if s.stack.len() > max_depth {
            let drop = s.stack.len() - keep;
            s.stack.splice(..drop, [marker]);
            cut += 1;
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use kiln_plugin_api::{Labels, Sample};

    use super::*;

    fn profile(depths: &[usize]) -> Profile {
        let mut labels = Labels::new();
        labels.insert("service_name", "app");
        Profile {
            labels,
            profile_type: kiln_plugin_api::ProfileType::well_known("cpu").unwrap(),
            start_ns: 0,
            end_ns: 1,
            frames: (0..10).map(|i| Frame::named(format!("f{i}"))).collect(),
            samples: depths
                .iter()
                .map(|&d| Sample {
                    stack: (0..d as u32).collect(),
                    value: 1,
                })
                .collect(),
            meta: Default::default(),
        }
    }

    #[test]
    fn deep_stacks_keep_their_leaf_side_under_a_marker() {
        let mut p = profile(&[10, 3]);
        assert_eq!(truncate_stacks(&mut p, 4), 1);
        let names: Vec<&str> = p.stack_names(&p.samples[0]).collect();
        assert_eq!(names, ["[truncated]", "f7", "f8", "f9"]);
        assert_eq!(p.samples[1].stack, [0, 1, 2]);
        assert!(p.validate().is_ok());
        let mut q = profile(&[3]);
        assert_eq!(truncate_stacks(&mut q, 4), 0);
        assert_eq!(q.frames.len(), 10);
    }

    #[test]
    fn labels_and_samples_are_checked() {
        let limits = TenantLimits {
            max_label_count: 2,
            max_label_name_length: 12,
            max_label_value_length: 5,
            max_samples_per_profile: 2,
            ..TenantLimits::default()
        };
        assert!(check(&limits, &profile(&[1, 1])).is_ok());
        let e = check(&limits, &profile(&[1, 1, 1])).unwrap_err();
        assert_eq!(e.limit, "limits.max_samples_per_profile");
        let mut p = profile(&[1]);
        p.labels.insert("much_longer_name", "x");
        assert_eq!(
            check(&limits, &p).unwrap_err().limit,
            "limits.max_label_name_length"
        );
        let mut p = profile(&[1]);
        p.labels.insert("k", "toolong");
        assert_eq!(
            check(&limits, &p).unwrap_err().limit,
            "limits.max_label_value_length"
        );
        p.labels.insert("k2", "v");
        assert_eq!(
            check(&limits, &p).unwrap_err().limit,
            "limits.max_label_count"
        );
    }
}
