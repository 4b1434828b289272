//! Test fixture: the `faulty` decoder. The request body says what to do: `trap` panics,
//! `loop` never returns, `grow` allocates until memory runs out, `error` returns an error, and
//! anything else decodes as one sample `ok 1` of the request's service.

wit_bindgen::generate!({ path: "../../../wit", world: "decoder" });

use kiln::plugin::types::{Aggregation, Frame, Label, ProfileType};

struct Faulty;

impl Guest for Faulty {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "faulty".into(),
            version: "0.1.0".into(),
        }
    }

    fn init(options: String) -> Result<(), String> {
        // WASI I/O during init: the daemon must start plugins off its async runtime.
        eprintln!("faulty: init");
        if options.contains("\"refuse\"") {
            return Err("unknown option `refuse`".into());
        }
        Ok(())
    }

    fn decode(body: Vec<u8>, meta: IngestMeta) -> Result<Vec<Profile>, String> {
        match body.as_slice() {
            b"trap" => panic!("asked to trap"),
            b"loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            b"error" => Err("asked to fail".into()),
            other => Ok(vec![Profile {
                labels: meta
                    .labels
                    .into_iter()
                    .chain([Label {
                        name: "service_name".into(),
                        value: meta.app,
                    }])
                    .collect(),
                profile_type: ProfileType {
                    name: "cpu".into(),
                    metric: "process_cpu".into(),
                    sample_type: "samples".into(),
                    sample_unit: "count".into(),
                    period_type: "cpu".into(),
                    period_unit: "nanoseconds".into(),
                    aggregation: Aggregation::Sum,
                },
                start_ns: meta.start_ns,
                end_ns: meta.end_ns,
                frames: vec![Frame {
                    function: "ok".into(),
                    file: String::new(),
                    line: 0,
                }],
                // `badstack`: a sample whose stack runs past `stacks`.
                stack_lens: vec![if other == b"badstack" { 2 } else { 1 }],
                values: vec![1],
                stacks: vec![0],
                spy_name: "faulty".into(),
                sample_rate: 100,
            }]),
        }
    }
}

export!(Faulty);
