//! Conversions between the plugin-api model and the WIT types.

use kiln_plugin_api::{
    Aggregation, Frame, IngestMeta, Labels, Profile, ProfileMeta, ProfileType, RenderContext,
    Rendered, Sample, Tree,
};

use crate::bindings::types as wit;

fn labels_to_wit(labels: &Labels) -> Vec<wit::Label> {
    labels
        .iter()
        .map(|(name, value)| wit::Label {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect()
}

fn labels_from_wit(labels: Vec<wit::Label>) -> Labels {
    Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value)))
}

fn type_to_wit(t: &ProfileType) -> wit::ProfileType {
    wit::ProfileType {
        name: t.name.clone(),
        metric: t.metric.clone(),
        sample_type: t.sample_type.clone(),
        sample_unit: t.sample_unit.clone(),
        period_type: t.period_type.clone(),
        period_unit: t.period_unit.clone(),
        aggregation: match t.aggregation {
            Aggregation::Sum => wit::Aggregation::Sum,
            Aggregation::Average => wit::Aggregation::Average,
        },
    }
}

fn type_from_wit(t: wit::ProfileType) -> ProfileType {
    ProfileType {
        name: t.name,
        metric: t.metric,
        sample_type: t.sample_type,
        sample_unit: t.sample_unit,
        period_type: t.period_type,
        period_unit: t.period_unit,
        aggregation: match t.aggregation {
            wit::Aggregation::Sum => Aggregation::Sum,
            wit::Aggregation::Average => Aggregation::Average,
        },
    }
}

pub fn profile_to_wit(p: &Profile) -> wit::Profile {
    let mut stacks = Vec::with_capacity(p.samples.iter().map(|s| s.stack.len()).sum());
    let mut stack_lens = Vec::with_capacity(p.samples.len());
    let mut values = Vec::with_capacity(p.samples.len());
    for s in &p.samples {
        stacks.extend_from_slice(&s.stack);
        stack_lens.push(s.stack.len() as u32);
        values.push(s.value);
    }
    wit::Profile {
        labels: labels_to_wit(&p.labels),
        profile_type: type_to_wit(&p.profile_type),
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        frames: p
            .frames
            .iter()
            .map(|f| wit::Frame {
                function: f.function.clone(),
                file: f.file.clone(),
                line: f.line,
            })
            .collect(),
        stack_lens,
        values,
        stacks,
        spy_name: p.meta.spy_name.clone(),
        sample_rate: p.meta.sample_rate,
    }
}

/// A profile a plugin returned, checked like any decoder's output.
pub fn profile_from_wit(p: wit::Profile) -> Result<Profile, String> {
    if p.stack_lens.len() != p.values.len() {
        return Err(format!(
            "{} stack lengths for {} values: one of each per sample",
            p.stack_lens.len(),
            p.values.len()
        ));
    }
    let mut samples = Vec::with_capacity(p.values.len());
    let mut start = 0usize;
    for (i, (&len, &value)) in p.stack_lens.iter().zip(&p.values).enumerate() {
        let end = start + len as usize;
        let stack = p.stacks.get(start..end).ok_or_else(|| {
            format!(
                "sample {i}: its stack ends at {end}, past the {} stack entries",
                p.stacks.len()
            )
        })?;
        samples.push(Sample {
            stack: stack.to_vec(),
            value,
        });
        start = end;
    }
    if start != p.stacks.len() {
        return Err(format!(
            "the samples' stacks cover {start} of the {} stack entries",
            p.stacks.len()
        ));
    }
    let profile = Profile {
        labels: labels_from_wit(p.labels),
        profile_type: type_from_wit(p.profile_type),
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        frames: p
            .frames
            .into_iter()
            .map(|f| Frame {
                function: f.function,
                file: f.file,
                line: f.line,
                ..Default::default()
            })
            .collect(),
        samples,
        meta: ProfileMeta {
            spy_name: p.spy_name,
            sample_rate: p.sample_rate,
        },
    };
    profile.validate()?;
    Ok(profile)
}

pub fn meta_to_wit(m: &IngestMeta) -> wit::IngestMeta {
    wit::IngestMeta {
        format: m.format.clone(),
        content_type: m.content_type.clone(),
        app: m.app.clone(),
        type_suffix: m.type_suffix.clone(),
        labels: labels_to_wit(&m.labels),
        start_ns: m.start_ns,
        end_ns: m.end_ns,
        sample_rate: m.sample_rate,
        spy_name: m.spy_name.clone(),
    }
}

pub fn tree_to_wit(tree: &Tree) -> Vec<wit::TreeNode> {
    tree.nodes
        .iter()
        .map(|n| wit::TreeNode {
            name: tree.names[n.name as usize].clone(),
            parent: n.parent,
            self_value: n.self_value,
            total: n.total,
        })
        .collect()
}

pub fn context_to_wit(c: &RenderContext) -> wit::RenderContext {
    wit::RenderContext {
        title: c.title.clone(),
        profile_type: type_to_wit(&c.profile_type),
        start_ns: c.start_ns,
        end_ns: c.end_ns,
        max_nodes: u32::try_from(c.max_nodes).unwrap_or(u32::MAX),
        sample_rate: c.sample_rate,
        spy_name: c.spy_name.clone(),
    }
}

pub fn rendered_from_wit(r: wit::Rendered) -> Rendered {
    Rendered {
        content_type: r.content_type,
        extension: r.extension,
        body: r.body.into(),
    }
}

/// A sink built against 0.2.0 ([`crate::bindings::v0_2`]): the same records, without
/// `same-stacks`.
mod v0_2 {
    pub use crate::bindings::v0_2::kiln::plugin::types::*;
}

pub fn info_from_v0_2(i: v0_2::PluginInfo) -> wit::PluginInfo {
    wit::PluginInfo {
        name: i.name,
        version: i.version,
    }
}

pub fn interest_from_v0_2(i: v0_2::SinkInterest) -> wit::SinkInterest {
    wit::SinkInterest {
        profile_types: i.profile_types,
        files_and_lines: i.files_and_lines,
    }
}

/// A batch made for a 0.2.0 sink: never one that says `same-stacks`
/// ([`crate::intern::StringTable::new`]).
pub fn batch_to_v0_2(b: wit::SinkBatch) -> v0_2::SinkBatch {
    let aggregation = |a: wit::Aggregation| match a {
        wit::Aggregation::Sum => v0_2::Aggregation::Sum,
        wit::Aggregation::Average => v0_2::Aggregation::Average,
    };
    v0_2::SinkBatch {
        strings: v0_2::StringDelta {
            reset: b.strings.reset,
            added: b.strings.added,
        },
        profiles: b
            .profiles
            .into_iter()
            .map(|p| {
                debug_assert!(!p.same_stacks, "a 0.2.0 sink gets every profile's stacks");
                let t = p.profile_type;
                v0_2::InternedProfile {
                    labels: p.labels,
                    profile_type: v0_2::InternedProfileType {
                        name: t.name,
                        metric: t.metric,
                        sample_type: t.sample_type,
                        sample_unit: t.sample_unit,
                        period_type: t.period_type,
                        period_unit: t.period_unit,
                        aggregation: aggregation(t.aggregation),
                    },
                    start_ns: p.start_ns,
                    end_ns: p.end_ns,
                    frame_functions: p.frame_functions,
                    frame_files: p.frame_files,
                    frame_lines: p.frame_lines,
                    stack_lens: p.stack_lens,
                    values: p.values,
                    stacks: p.stacks,
                    spy_name: p.spy_name,
                    sample_rate: p.sample_rate,
                }
            })
            .collect(),
    }
}
