//! pprof → Kiln profiles.

use kiln_plugin_api::{
    Aggregation, DecodeError, Frame, IngestMeta, Labels, Profile, ProfileMeta, ProfileType, Sample,
};
use rustc_hash::FxHashMap;

use crate::config::SampleTypeConfig;
use crate::view::{ProfileView, SampleReader};

/// How one pprof sample type is stored.
struct TypePlan {
    column: usize,
    profile_type: ProfileType,
    sampled: bool,
    cumulative: bool,
}

/// Decodes an uncompressed pprof. With `prev` (the previous cumulative profile), cumulative
/// types are stored as `current − previous`, clamped at zero where a counter reset.
pub fn decode_pprof(
    data: &[u8],
    meta: &IngestMeta,
    config: Option<&SampleTypeConfig>,
    prev: Option<&[u8]>,
) -> Result<Vec<Profile>, DecodeError> {
    let p = ProfileView::parse(data)
        .map_err(|e| DecodeError::Malformed(format!("not a valid pprof protobuf: {e}")))?;
    let strings = Strings(&p.strings);
    let plans = plan_types(&p, &strings, config)?;
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let mut profiles = build_profiles(&p, &strings, &plans, meta)?;
    if let Some(prev) = prev {
        if plans.iter().any(|t| t.cumulative) {
            let prev_p = ProfileView::parse(prev).map_err(|e| {
                DecodeError::Malformed(format!("prev_profile is not a valid pprof protobuf: {e}"))
            })?;
            let prev_strings = Strings(&prev_p.strings);
            let prev_plans = plan_types(&prev_p, &prev_strings, config)?;
            let previous = build_profiles(&prev_p, &prev_strings, &prev_plans, meta)?;
            subtract_previous(&mut profiles, &previous, &plans);
        }
    }
    profiles.retain(|p| !p.samples.is_empty());
    Ok(profiles)
}

struct Strings<'a>(&'a [&'a str]);

impl<'a> Strings<'a> {
    fn get(&self, i: i64) -> Result<&'a str, DecodeError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "string index {i} out of range (string table has {} entries)",
                    self.0.len()
                ))
            })
    }
}

fn plan_types(
    p: &ProfileView,
    strings: &Strings,
    config: Option<&SampleTypeConfig>,
) -> Result<Vec<TypePlan>, DecodeError> {
    let (period_type, period_unit) = match p.period_type {
        Some(vt) => (strings.get(vt.r#type)?, strings.get(vt.unit)?),
        None => ("", ""),
    };
    let mut plans = Vec::new();
    let has_samples_column = p
        .sample_type
        .iter()
        .any(|vt| strings.get(vt.r#type).is_ok_and(|t| t == "samples"));
    let has_wall_column = p.sample_type.iter().any(|vt| {
        strings.get(vt.r#type).is_ok_and(|t| t == "wall")
            && strings
                .get(vt.unit)
                .is_ok_and(|u| matches!(u, "nanoseconds" | "microseconds" | "milliseconds"))
    });
    for (column, vt) in p.sample_type.iter().enumerate() {
        let sample_type = strings.get(vt.r#type)?;
        let sample_unit = strings.get(vt.unit)?;
        let entry = match config {
            Some(c) => match c.0.get(sample_type) {
                Some(e) => Some(e),
                None => continue,
            },
            None => None,
        };
        // Without a `samples` column (pyroscope-rs, the Python agent), CPU time is *the* cpu type.
        // In a wall profile (the Node agent: `samples`, `wall` and `cpu` columns) too, as in
        // Grafana Pyroscope: wall time is `wall`, CPU time `cpu`, and the sample count of the
        // wall profiler is `wall_samples`, never CPU.
        let only_cpu_time = sample_type == "cpu" && (!has_samples_column || has_wall_column);
        // (@datadog/pprof names the count `sample`.)
        let wall_samples = matches!(sample_type, "samples" | "sample") && has_wall_column;
        let display_name = entry
            .and_then(|e| e.display_name.as_deref())
            .filter(|n| !n.is_empty())
            .or(only_cpu_time.then_some("cpu"))
            .or(wall_samples.then_some("wall_samples"));
        let aggregation = entry
            .and_then(|e| e.aggregation.as_deref())
            .and_then(Aggregation::parse);
        // CPU time out of a wall profile joins the usual CPU type
        // (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`), not a wall-period variant of it.
        let period = if only_cpu_time && has_wall_column {
            ("cpu", "nanoseconds")
        } else {
            (period_type, period_unit)
        };
        let profile_type =
            profile_type(sample_type, sample_unit, period, display_name, aggregation);
        let name = profile_type.name.clone();
        let sampled = entry.map(|e| e.sampled).unwrap_or(sample_type == "samples")
            || wall_samples
            || name == "cpu_nanoseconds"
            || only_cpu_time;
        let cumulative = match entry {
            Some(e) => e.cumulative,
            None => matches!(
                name.as_str(),
                "alloc_objects" | "alloc_space" | "mutex_count" | "mutex_duration"
            ),
        };
        plans.push(TypePlan {
            column,
            profile_type,
            sampled,
            cumulative,
        });
    }
    Ok(plans)
}

/// The profile type of one pprof-style sample type: named as Pyroscope names Go's types unless
/// the agent gave a display name; aggregation from the agent, else the well-known type's.
pub fn profile_type(
    sample_type: &str,
    sample_unit: &str,
    (period_type, period_unit): (&str, &str),
    display_name: Option<&str>,
    aggregation: Option<Aggregation>,
) -> ProfileType {
    let name = short_name(display_name.unwrap_or_else(|| default_name(sample_type, sample_unit)));
    let known = ProfileType::well_known(&name);
    ProfileType {
        metric: known
            .as_ref()
            .map(|k| k.metric.clone())
            .unwrap_or_else(|| sample_type.to_string()),
        aggregation: aggregation
            .or(known.as_ref().map(|k| k.aggregation))
            .unwrap_or_default(),
        name,
        sample_type: sample_type.to_string(),
        sample_unit: sample_unit.to_string(),
        period_type: period_type.to_string(),
        period_unit: period_unit.to_string(),
    }
}

/// A short name that survives a query: `app.<name>{…}` must parse back to the same type, so
/// anything outside `[A-Za-z0-9_.-]` (`:`, `{`, spaces…) becomes `_`; an empty name is `unknown`.
pub fn short_name(name: &str) -> String {
    if name.is_empty() {
        return "unknown".into();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Pyroscope's default names for Go's sample types; other types keep their own name.
fn default_name<'a>(sample_type: &'a str, sample_unit: &str) -> &'a str {
    match (sample_type, sample_unit) {
        ("samples", _) => "cpu",
        ("cpu", "nanoseconds") => "cpu_nanoseconds",
        ("goroutine", _) => "goroutines",
        ("contentions", _) => "mutex_count",
        ("delay", _) => "mutex_duration",
        (t, _) => t,
    }
}

/// At most this many samples per profile type are reserved before they are read.
const MAX_RESERVED_SAMPLES: usize = 1 << 16;

fn build_profiles(
    p: &ProfileView,
    strings: &Strings,
    plans: &[TypePlan],
    meta: &IngestMeta,
) -> Result<Vec<Profile>, DecodeError> {
    // Frames are (function, line) pairs, created as locations use them: the flamegraph groups
    // by function, and the line stays for exports that carry it (pprof, for PGO).
    let mut functions: FxHashMap<u64, (&str, &str, u32)> = FxHashMap::default();
    functions.reserve(p.functions.len());
    for f in &p.functions {
        let name = strings.get(f.name)?;
        let name = if name.is_empty() {
            strings.get(f.system_name)?
        } else {
            name
        };
        let start_line = u32::try_from(f.start_line).unwrap_or(0);
        functions.insert(f.id, (name, strings.get(f.filename)?, start_line));
    }
    let mut frames: Vec<Frame> = Vec::with_capacity(p.functions.len());
    let mut frame_of_line: FxHashMap<(u64, i64), u32> = FxHashMap::default();
    let mut frame_of_address: FxHashMap<u64, u32> = FxHashMap::default();
    // Each location expands to its frames, caller first (pprof lists inlined callees first).
    let mut location_frames: Vec<u32> = Vec::with_capacity(p.lines.len() + p.locations.len());
    let mut location_span: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
    location_span.reserve(p.locations.len());
    for loc in &p.locations {
        let start = location_frames.len() as u32;
        let lines = p.location_lines(loc);
        for line in lines.iter().rev() {
            let &(name, file, start_line) = functions.get(&line.function_id).ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "location {} references missing function {}",
                    loc.id, line.function_id
                ))
            })?;
            if name.is_empty() {
                continue;
            }
            let frame = *frame_of_line
                .entry((line.function_id, line.line))
                .or_insert_with(|| {
                    frames.push(Frame {
                        function: name.to_string(),
                        file: file.to_string(),
                        line: u32::try_from(line.line).unwrap_or(0),
                        start_line,
                    });
                    (frames.len() - 1) as u32
                });
            location_frames.push(frame);
        }
        if lines.is_empty() {
            // No symbols: name the frame by address so the stack keeps its shape.
            let frame = *frame_of_address.entry(loc.address).or_insert_with(|| {
                frames.push(Frame::named(format!("0x{:x}", loc.address)));
                (frames.len() - 1) as u32
            });
            location_frames.push(frame);
        }
        location_span.insert(loc.id, (start, location_frames.len() as u32 - start));
    }

    let sample_rate = |plan: &TypePlan| -> u32 {
        if plan.sampled && p.period > 0 {
            let unit_ns: f64 = match plan.profile_type.period_unit.as_str() {
                "microseconds" => 1e3,
                "milliseconds" => 1e6,
                "seconds" => 1e9,
                _ => 1.0,
            };
            (1e9 / (p.period as f64 * unit_ns)).round() as u32
        } else {
            meta.sample_rate.unwrap_or(0)
        }
    };

    // Samples grouped by their string labels: each group is a series.
    let mut groups: FxHashMap<Vec<(i64, i64)>, usize> = FxHashMap::default();
    let mut per_group: Vec<Vec<Vec<Sample>>> = Vec::new();
    let mut group_labels: Vec<Vec<(i64, i64)>> = Vec::new();
    let mut stack = Vec::with_capacity(64);
    let mut key = Vec::new();
    let mut negative = 0u64;
    let mut empty = 0u64;
    let mut s = SampleReader::default();
    for raw in &p.samples {
        s.read(raw)
            .map_err(|e| DecodeError::Malformed(format!("not a valid pprof protobuf: {e}")))?;
        if s.values.len() != p.sample_type.len() {
            return Err(DecodeError::Malformed(format!(
                "a sample has {} values but the profile declares {} sample types",
                s.values.len(),
                p.sample_type.len()
            )));
        }
        stack.clear();
        for id in s.location_ids.iter().rev() {
            let &(start, len) = location_span.get(id).ok_or_else(|| {
                DecodeError::Malformed(format!("a sample references missing location {id}"))
            })?;
            stack.extend_from_slice(&location_frames[start as usize..(start + len) as usize]);
        }
        // A sample without a frame has nowhere to show in a flamegraph, a folded line or a
        // pprof export: dropped, so that every view sums the same values.
        if stack.is_empty() {
            empty += 1;
            continue;
        }
        key.clear();
        key.extend(
            s.labels
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (l.key, l.str)),
        );
        key.sort_unstable();
        let group = match groups.get(&key) {
            Some(&g) => g,
            None => {
                groups.insert(key.clone(), per_group.len());
                group_labels.push(key.clone());
                // Most bodies are one group (no pprof labels): size the first for every sample,
                // up to a bound (a body of empty samples keeps none, and must not reserve for
                // them all).
                let expected = if per_group.is_empty() {
                    p.samples.len().min(MAX_RESERVED_SAMPLES)
                } else {
                    0
                };
                per_group.push(
                    (0..plans.len())
                        .map(|_| Vec::with_capacity(expected))
                        .collect(),
                );
                per_group.len() - 1
            }
        };
        for (i, plan) in plans.iter().enumerate() {
            let value = s.values[plan.column];
            // Negative values (delta heap profiles carry them) are dropped, as Grafana Pyroscope
            // drops them at ingest: a stored profile only adds, so every view of it — flamegraph,
            // top table, pprof, collapsed — sums the same non-negative values.
            if value < 0 {
                negative += 1;
                continue;
            }
            if value != 0 {
                per_group[group][i].push(Sample {
                    stack: stack.clone(),
                    value,
                });
            }
        }
    }

    kiln_plugin_api::skipped::record("pprof", "negative_value", negative);
    kiln_plugin_api::skipped::record("pprof", "empty_stack", empty);
    // A request without a window (Connect push) takes the profile's own time.
    let (start_ns, end_ns) = if meta.start_ns == 0 && meta.end_ns == 0 {
        let start = if p.time_nanos > 0 {
            p.time_nanos
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        };
        (start, start + p.duration_nanos.max(0))
    } else {
        (meta.start_ns, meta.end_ns)
    };
    let mut out = Vec::new();
    for (group, samples_by_type) in per_group.into_iter().enumerate() {
        let mut labels: Labels = meta.labels.clone();
        for &(k, v) in &group_labels[group] {
            let k = strings.get(k)?;
            // Pyroscope keeps span/profile ids at sample level; they would explode series counts.
            if matches!(k, "profile_id" | "span_id" | "trace_id") {
                continue;
            }
            labels.insert(k, strings.get(v)?);
        }
        for (plan, samples) in plans.iter().zip(samples_by_type) {
            out.push(Profile {
                labels: labels.clone(),
                profile_type: plan.profile_type.clone(),
                start_ns,
                end_ns,
                // Filled below: every profile of the body shares the frame list.
                frames: Vec::new(),
                samples,
                meta: ProfileMeta {
                    spy_name: meta.spy_name.clone(),
                    sample_rate: sample_rate(plan),
                },
            });
        }
    }
    if let Some((last, rest)) = out.split_last_mut() {
        for p in rest {
            p.frames = frames.clone();
        }
        last.frames = frames;
    }
    Ok(out)
}

/// Turns cumulative profiles into deltas against `previous`, matching series by labels and type
/// and stacks by frame names.
fn subtract_previous(profiles: &mut [Profile], previous: &[Profile], plans: &[TypePlan]) {
    let cumulative: Vec<&str> = plans
        .iter()
        .filter(|p| p.cumulative)
        .map(|p| p.profile_type.name.as_str())
        .collect();
    for profile in profiles.iter_mut() {
        if !cumulative.contains(&profile.profile_type.name.as_str()) {
            continue;
        }
        let mut before: FxHashMap<Vec<&str>, i64> = FxHashMap::default();
        for prev in previous
            .iter()
            .filter(|p| p.labels == profile.labels && p.profile_type == profile.profile_type)
        {
            for s in &prev.samples {
                *before.entry(prev.stack_names(s).collect()).or_default() += s.value;
            }
        }
        let frames = &profile.frames;
        for s in &mut profile.samples {
            let names: Vec<&str> = s
                .stack
                .iter()
                .map(|&i| frames[i as usize].function.as_str())
                .collect();
            if let Some(b) = before.get_mut(&names) {
                let take = (*b).min(s.value);
                s.value -= take;
                *b -= take;
            }
        }
        profile.samples.retain(|s| s.value > 0);
    }
}
