//! Test fixture: a sink for `kiln:plugin@0.4.0`, which the daemon must refuse by version.

wit_bindgen::generate!({ path: "wit", world: "sink" });

struct Future;

impl Guest for Future {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "future".into(),
            version: "2.0.0".into(),
            api_level: 2,
        }
    }

    fn init(_options: String) -> Result<(), String> {
        Ok(())
    }

    fn consume(_batch: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
