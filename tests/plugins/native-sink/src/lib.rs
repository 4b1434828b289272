//! Test fixture: the `line-per-profile` native sink. Appends `service type total` per profile
//! to the file named by its `path` option.

use std::io::Write;

use kiln_plugin_api::abi::FromConfig;
use kiln_plugin_api::{ExportError, Profile, SinkExporter};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinePerProfile {
    path: String,
}

impl FromConfig for LinePerProfile {
    fn from_config(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl SinkExporter for LinePerProfile {
    async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ExportError(e.to_string()))?;
        for p in profiles {
            writeln!(
                f,
                "{} {} {}",
                p.labels.service_name().unwrap_or(""),
                p.profile_type.name,
                p.total()
            )
            .map_err(|e| ExportError(e.to_string()))?;
        }
        Ok(())
    }
}

kiln_plugin_api::export_plugin!(sink, "line-per-profile", "0.1.0", LinePerProfile);
