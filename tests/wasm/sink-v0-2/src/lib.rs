//! Test fixture: a sink built against `kiln:plugin@0.2.0` (`wit/0.2.0`), whose profiles carry
//! their frames and stacks every time. It appends one line per profile to `/data/profiles.txt`:
//! the type, the total, and how many frames, samples and stack entries crossed.

wit_bindgen::generate!({ path: "../../../wit/0.2.0", world: "sink" });

use std::cell::RefCell;
use std::io::Write;

thread_local! {
    static STRINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct SinkV02;

impl Guest for SinkV02 {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "sink-v0-2".into(),
            version: "0.1.0".into(),
        }
    }

    fn init(_options: String) -> Result<(), String> {
        Ok(())
    }

    fn interest() -> SinkInterest {
        SinkInterest {
            profile_types: Vec::new(),
            files_and_lines: false,
        }
    }

    fn consume(batch: SinkBatch) -> Result<(), String> {
        STRINGS.with(|strings| {
            let mut strings = strings.borrow_mut();
            if batch.strings.reset {
                strings.clear();
            }
            strings.extend(batch.strings.added);
            let mut out = String::new();
            for p in &batch.profiles {
                let name = strings.get(p.profile_type.name as usize).cloned();
                out.push_str(&format!(
                    "{} {} {} {} {}\n",
                    name.unwrap_or_default(),
                    p.values.iter().sum::<i64>(),
                    p.frame_functions.len(),
                    p.stack_lens.len(),
                    p.stacks.len(),
                ));
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("/data/profiles.txt")
                .and_then(|mut f| f.write_all(out.as_bytes()))
                .map_err(|e| format!("writing /data/profiles.txt: {e}"))
        })
    }
}

export!(SinkV02);
