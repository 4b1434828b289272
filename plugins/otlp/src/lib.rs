//! # kiln-otlp
//!
//! Decodes OpenTelemetry OTLP profiles (`v1development`, protobuf or OTLP/JSON), as posted to
//! `/v1development/profiles`. The resource's `service.name` becomes `service_name`, other
//! resource attributes and sample attributes become labels (samples with different attributes
//! land in different series), and each sample type becomes its own profile type, named as for
//! pprof. Every index is checked: a dangling one is an error, never a panic.

mod json;
pub mod proto;

use kiln_plugin_api::{
    labels::SERVICE_NAME, DecodeError, Decoder, Frame, IngestMeta, Labels, Profile, ProfileMeta,
    Sample,
};
use prost::Message;
use rustc_hash::FxHashMap;

/// Resource attributes not kept as labels: unique per process, they would only multiply series.
const DROPPED_ATTRIBUTES: &[&str] = &[
    "process.pid",
    "process.command_line",
    "process.command_args",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct OtlpDecoder;

fn malformed(msg: String) -> DecodeError {
    DecodeError::Malformed(msg)
}

fn get<'a, T>(table: &'a [T], index: i32, what: &str) -> Result<&'a T, DecodeError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| {
            malformed(format!(
                "{what} index {index} is out of range ({} entries)",
                table.len()
            ))
        })
}

impl Decoder for OtlpDecoder {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let json = meta
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"));
        let req = if json {
            json::parse(body)?
        } else {
            proto::ExportProfilesServiceRequest::decode(body)
                .map_err(|e| malformed(format!("not an OTLP ExportProfilesServiceRequest: {e}")))?
        };
        let dict = req.dictionary.unwrap_or_default();
        let strings = &dict.string_table;
        let string = |i: i32| get(strings, i, "string").map(String::as_str);
        // Frames: one per function of the dictionary.
        let mut frames = Vec::with_capacity(dict.function_table.len());
        for f in &dict.function_table {
            frames.push(Frame {
                function: string(f.name_strindex)?.to_string(),
                file: string(f.filename_strindex)?.to_string(),
                line: u32::try_from(f.start_line).unwrap_or(0),
                start_line: u32::try_from(f.start_line).unwrap_or(0),
            });
        }
        // Frames of each location, caller first (inlined callees are listed first).
        let mut location_frames: Vec<Vec<u32>> = Vec::with_capacity(dict.location_table.len());
        for loc in &dict.location_table {
            let mut ids = Vec::with_capacity(loc.line.len());
            for line in loc.line.iter().rev() {
                get(&dict.function_table, line.function_index, "function")?;
                ids.push(line.function_index as u32);
            }
            location_frames.push(ids);
        }
        let mut out = Vec::new();
        for rp in &req.resource_profiles {
            let mut base = meta.labels.clone();
            for kv in rp.resource.iter().flat_map(|r| &r.attributes) {
                let value = kv
                    .value
                    .as_ref()
                    .map(proto::AnyValue::as_label)
                    .unwrap_or_default();
                if kv.key == "service.name" {
                    base.insert(SERVICE_NAME, value);
                } else if !DROPPED_ATTRIBUTES.contains(&kv.key.as_str()) && !kv.key.is_empty() {
                    base.insert(kv.key.clone(), value);
                }
            }
            if base.service_name().is_none_or(str::is_empty) {
                base.insert(
                    SERVICE_NAME,
                    if meta.app.is_empty() {
                        "unknown_service"
                    } else {
                        &meta.app
                    },
                );
            }
            for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
                out.extend(decode_profile(
                    profile,
                    &dict,
                    &frames,
                    &location_frames,
                    &base,
                    meta,
                )?);
            }
        }
        Ok(out)
    }
}

fn decode_profile(
    p: &proto::Profile,
    dict: &proto::ProfilesDictionary,
    frames: &[Frame],
    location_frames: &[Vec<u32>],
    base: &Labels,
    meta: &IngestMeta,
) -> Result<Vec<Profile>, DecodeError> {
    let string = |i: i32| get(&dict.string_table, i, "string").map(String::as_str);
    let (period_type, period_unit) = match &p.period_type {
        Some(v) => (string(v.type_strindex)?, string(v.unit_strindex)?),
        None => ("", ""),
    };
    let mut types = Vec::new();
    for vt in &p.sample_type {
        types.push(kiln_pprof::profile_type(
            string(vt.type_strindex)?,
            string(vt.unit_strindex)?,
            (period_type, period_unit),
            None,
            None,
        ));
    }
    let sample_rate = if p.period > 0 && period_unit == "nanoseconds" {
        (1e9 / p.period as f64).round() as u32
    } else {
        meta.sample_rate.unwrap_or(0)
    };
    let (start_ns, end_ns) = if p.time_nanos > 0 {
        (p.time_nanos, p.time_nanos + p.duration_nanos.max(0))
    } else {
        (meta.start_ns, meta.end_ns)
    };
    // Samples grouped by their attributes: each group is a series.
    let mut groups: FxHashMap<Vec<i32>, Vec<Vec<Sample>>> = FxHashMap::default();
    for s in &p.sample {
        if s.value.len() != types.len() {
            return Err(malformed(format!(
                "a sample has {} values but the profile has {} sample types",
                s.value.len(),
                types.len()
            )));
        }
        let start = usize::try_from(s.locations_start_index)
            .map_err(|_| malformed("negative locations_start_index".into()))?;
        let len = usize::try_from(s.locations_length)
            .map_err(|_| malformed("negative locations_length".into()))?;
        let indices = start
            .checked_add(len)
            .and_then(|end| p.location_indices.get(start..end))
            .ok_or_else(|| {
                malformed(format!(
                    "sample locations {start}+{len} run past location_indices ({})",
                    p.location_indices.len()
                ))
            })?;
        let mut stack = Vec::new();
        for &li in indices.iter().rev() {
            get(location_frames, li, "location")?;
            stack.extend_from_slice(&location_frames[li as usize]);
        }
        // No frame: nowhere to show it in any view (as for pprof).
        if stack.is_empty() {
            kiln_plugin_api::skipped::record("otlp", "empty_stack", 1);
            continue;
        }
        let mut attrs = s.attribute_indices.clone();
        for &a in &attrs {
            get(&dict.attribute_table, a, "attribute")?;
        }
        attrs.sort_unstable();
        let per_type = groups
            .entry(attrs)
            .or_insert_with(|| vec![Vec::new(); types.len()]);
        for (i, &v) in s.value.iter().enumerate() {
            // Negative values are dropped at ingest, as for pprof (see docs/negative-values.md).
            if v < 0 {
                kiln_plugin_api::skipped::record("otlp", "negative_value", 1);
                continue;
            }
            if v != 0 {
                per_type[i].push(Sample {
                    stack: stack.clone(),
                    value: v,
                });
            }
        }
    }
    let mut out = Vec::new();
    for (attrs, per_type) in groups {
        let mut labels = base.clone();
        for a in attrs {
            let kv = &dict.attribute_table[a as usize];
            labels.insert(
                kv.key.clone(),
                kv.value
                    .as_ref()
                    .map(proto::AnyValue::as_label)
                    .unwrap_or_default(),
            );
        }
        for (ty, samples) in types.iter().zip(per_type) {
            if samples.is_empty() {
                continue;
            }
            out.push(Profile {
                labels: labels.clone(),
                profile_type: ty.clone(),
                start_ns,
                end_ns,
                frames: frames.to_vec(),
                samples,
                meta: ProfileMeta {
                    spy_name: if meta.spy_name.is_empty() {
                        "otlp".into()
                    } else {
                        meta.spy_name.clone()
                    },
                    sample_rate,
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::proto::{
        AnyValue, ExportProfilesServiceRequest, Function, KeyValue, Line, Location, Profile,
        ProfilesDictionary, Resource, ResourceProfiles, Sample, ScopeProfiles, ValueType,
    };
    use super::OtlpDecoder;
    use kiln_plugin_api::{Decoder, IngestMeta};
    use prost::Message;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                string_value: value.into(),
                ..Default::default()
            }),
        }
    }

    /// main → work (leaf), twice; main → idle once; on thread "t1".
    pub(crate) fn request() -> ExportProfilesServiceRequest {
        let strings: Vec<String> = [
            "",
            "main",
            "work",
            "idle",
            "cpu",
            "nanoseconds",
            "samples",
            "count",
            "app.go",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let function = |name: i32| Function {
            name_strindex: name,
            filename_strindex: 8,
            start_line: 1,
        };
        let location = |f: i32| Location {
            mapping_index: 0,
            address: 0,
            line: vec![Line {
                function_index: f,
                line: 3,
            }],
        };
        ExportProfilesServiceRequest {
            dictionary: Some(ProfilesDictionary {
                location_table: vec![location(0), location(1), location(2)],
                function_table: vec![function(1), function(2), function(3)],
                string_table: strings,
                attribute_table: vec![kv("thread.name", "t1")],
            }),
            resource_profiles: vec![ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "otel-app"),
                        kv("process.pid", "42"),
                        kv("host.name", "h"),
                    ],
                }),
                scope_profiles: vec![ScopeProfiles {
                    profiles: vec![Profile {
                        sample_type: vec![
                            ValueType {
                                type_strindex: 6,
                                unit_strindex: 7,
                                aggregation_temporality: 1,
                            },
                            ValueType {
                                type_strindex: 4,
                                unit_strindex: 5,
                                aggregation_temporality: 1,
                            },
                        ],
                        // Leaf first, as in pprof: [work, main], [idle, main].
                        location_indices: vec![1, 0, 2, 0],
                        sample: vec![
                            Sample {
                                locations_start_index: 0,
                                locations_length: 2,
                                value: vec![2, 20_000_000],
                                attribute_indices: vec![0],
                            },
                            Sample {
                                locations_start_index: 2,
                                locations_length: 2,
                                value: vec![1, 10_000_000],
                                attribute_indices: vec![0],
                            },
                        ],
                        time_nanos: 1_700_000_000_000_000_000,
                        duration_nanos: 10_000_000_000,
                        period_type: Some(ValueType {
                            type_strindex: 4,
                            unit_strindex: 5,
                            aggregation_temporality: 0,
                        }),
                        period: 10_000_000,
                    }],
                }],
            }],
        }
    }

    #[test]
    fn decodes_stacks_labels_and_types() {
        let body = request().encode_to_vec();
        let profiles = OtlpDecoder.decode(&body, &IngestMeta::default()).unwrap();
        assert_eq!(profiles.len(), 2);
        let cpu = profiles
            .iter()
            .find(|p| p.profile_type.name == "cpu")
            .unwrap();
        assert_eq!(cpu.labels.service_name(), Some("otel-app"));
        assert_eq!(cpu.labels.get("thread.name"), Some("t1"));
        assert_eq!(cpu.labels.get("host.name"), Some("h"));
        assert_eq!(cpu.labels.get("process.pid"), None);
        assert_eq!(cpu.meta.sample_rate, 100);
        let stacks: Vec<(String, i64)> = cpu
            .samples
            .iter()
            .map(|s| (cpu.stack_names(s).collect::<Vec<_>>().join(";"), s.value))
            .collect();
        assert_eq!(
            stacks,
            vec![("main;work".into(), 2), ("main;idle".into(), 1)]
        );
        let ns = profiles
            .iter()
            .find(|p| p.profile_type.name == "cpu_nanoseconds")
            .unwrap();
        assert_eq!(ns.total(), 30_000_000);
        for p in &profiles {
            p.validate().unwrap();
        }
    }

    #[test]
    fn dangling_indices_are_refused() {
        let mut r = request();
        r.resource_profiles[0].scope_profiles[0].profiles[0].location_indices[1] = 99;
        let err = OtlpDecoder
            .decode(&r.encode_to_vec(), &IngestMeta::default())
            .unwrap_err();
        assert!(err.to_string().contains("location index 99"), "{err}");
        let mut r = request();
        r.resource_profiles[0].scope_profiles[0].profiles[0].sample[0].locations_length = 50;
        assert!(OtlpDecoder
            .decode(&r.encode_to_vec(), &IngestMeta::default())
            .is_err());
        let mut r = request();
        r.dictionary.as_mut().unwrap().function_table[0].name_strindex = -1;
        assert!(OtlpDecoder
            .decode(&r.encode_to_vec(), &IngestMeta::default())
            .is_err());
        let mut r = request();
        r.resource_profiles[0].scope_profiles[0].profiles[0].sample[0].attribute_indices = vec![7];
        assert!(OtlpDecoder
            .decode(&r.encode_to_vec(), &IngestMeta::default())
            .is_err());
        assert!(OtlpDecoder
            .decode(b"\xff\xff", &IngestMeta::default())
            .is_err());
    }

    #[test]
    fn corrupted_bodies_never_panic() {
        let body = request().encode_to_vec();
        for cut in 0..body.len() {
            let _ = OtlpDecoder.decode(&body[..cut], &IngestMeta::default());
        }
        for i in 0..body.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut b = body.clone();
                b[i] ^= flip;
                if let Ok(ps) = OtlpDecoder.decode(&b, &IngestMeta::default()) {
                    for p in ps {
                        p.validate().unwrap();
                    }
                }
            }
        }
    }
}
