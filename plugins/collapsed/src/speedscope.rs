//! Speedscope's JSON file format: `shared.frames` and profiles that are either `sampled`
//! (stacks of frame indices with weights) or `evented` (open/close events at times).

use kiln_plugin_api::DecodeError;
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    shared: Shared,
    profiles: Vec<ProfileJson>,
}

#[derive(Deserialize)]
struct Shared {
    frames: Vec<FrameJson>,
}

#[derive(Deserialize)]
struct FrameJson {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ProfileJson {
    Sampled {
        #[serde(default)]
        unit: String,
        samples: Vec<Vec<usize>>,
        weights: Vec<f64>,
    },
    Evented {
        #[serde(default)]
        unit: String,
        events: Vec<Event>,
    },
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    at: f64,
    frame: usize,
}

/// Stacks as frame names (root first) with integer values, and whether values are nanoseconds.
pub struct Decoded {
    pub stacks: Vec<(Vec<String>, i64)>,
    pub nanoseconds: bool,
}

fn to_ns(unit: &str) -> Option<f64> {
    match unit {
        "nanoseconds" => Some(1.0),
        "microseconds" => Some(1e3),
        "milliseconds" => Some(1e6),
        "seconds" => Some(1e9),
        _ => None,
    }
}

pub fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    let file: File = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("not a speedscope file: {e}")))?;
    let names: Vec<&str> = file.shared.frames.iter().map(|f| f.name.as_str()).collect();
    let frame = |i: usize| -> Result<String, DecodeError> {
        names.get(i).map(|s| s.to_string()).ok_or_else(|| {
            DecodeError::Malformed(format!(
                "frame index {i} out of range ({} frames)",
                names.len()
            ))
        })
    };
    let mut stacks = Vec::new();
    let mut nanoseconds = false;
    for p in &file.profiles {
        match p {
            ProfileJson::Sampled {
                unit,
                samples,
                weights,
            } => {
                if samples.len() != weights.len() {
                    return Err(DecodeError::Malformed(format!(
                        "{} samples but {} weights",
                        samples.len(),
                        weights.len()
                    )));
                }
                let scale = to_ns(unit);
                nanoseconds |= scale.is_some();
                for (s, &w) in samples.iter().zip(weights) {
                    let stack = s.iter().map(|&i| frame(i)).collect::<Result<_, _>>()?;
                    stacks.push((stack, (w * scale.unwrap_or(1.0)).round() as i64));
                }
            }
            ProfileJson::Evented { unit, events } => {
                let scale = to_ns(unit);
                nanoseconds |= scale.is_some();
                let mut open: Vec<usize> = Vec::new();
                let mut last = events.first().map(|e| e.at).unwrap_or(0.0);
                for e in events {
                    if e.at < last {
                        return Err(DecodeError::Malformed(
                            "events are not ordered by time".into(),
                        ));
                    }
                    if !open.is_empty() && e.at > last {
                        let stack = open.iter().map(|&i| frame(i)).collect::<Result<_, _>>()?;
                        stacks.push((stack, ((e.at - last) * scale.unwrap_or(1.0)).round() as i64));
                    }
                    last = e.at;
                    match e.kind.as_str() {
                        "O" => open.push(e.frame),
                        "C" => {
                            if open.pop() != Some(e.frame) {
                                return Err(DecodeError::Malformed(format!(
                                    "close event for frame {} does not match the open frame",
                                    e.frame
                                )));
                            }
                        }
                        other => {
                            return Err(DecodeError::Malformed(format!(
                                "unknown event type {other:?}"
                            )))
                        }
                    }
                }
            }
        }
    }
    Ok(Decoded {
        stacks,
        nanoseconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_and_evented() {
        let body = br#"{"$schema":"https://www.speedscope.app/file-format-schema.json",
          "shared":{"frames":[{"name":"main"},{"name":"work"},{"name":"idle"}]},
          "profiles":[
            {"type":"sampled","name":"a","unit":"none","startValue":0,"endValue":3,"samples":[[0,1],[0,2]],"weights":[2,1]},
            {"type":"evented","name":"b","unit":"milliseconds","startValue":0,"endValue":10,
             "events":[{"type":"O","at":0,"frame":0},{"type":"O","at":1,"frame":1},{"type":"C","at":4,"frame":1},{"type":"C","at":10,"frame":0}]}
          ]}"#;
        let d = decode(body).unwrap();
        let got: Vec<(String, i64)> = d.stacks.iter().map(|(s, v)| (s.join(";"), *v)).collect();
        assert_eq!(
            got,
            vec![
                ("main;work".into(), 2),
                ("main;idle".into(), 1),
                ("main".into(), 1_000_000),
                ("main;work".into(), 3_000_000),
                ("main".into(), 6_000_000)
            ]
        );
        assert!(d.nanoseconds);
    }

    #[test]
    fn refuses_bad_files() {
        assert!(decode(b"{}").is_err());
        assert!(decode(br#"{"shared":{"frames":[]},"profiles":[{"type":"sampled","samples":[[3]],"weights":[1]}]}"#).is_err());
        assert!(decode(br#"{"shared":{"frames":[{"name":"a"}]},"profiles":[{"type":"evented","events":[{"type":"C","at":0,"frame":0}]}]}"#).is_err());
    }
}
