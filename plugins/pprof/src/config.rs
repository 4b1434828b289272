//! `sample_type_config`: how an agent says to name and treat each pprof sample type.

use std::collections::HashMap;

use kiln_plugin_api::DecodeError;
use serde::Deserialize;

/// One entry of a `sample_type_config`, keyed by the pprof sample-type name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SampleTypeEntry {
    pub units: Option<String>,
    #[serde(rename = "display-name")]
    pub display_name: Option<String>,
    pub aggregation: Option<String>,
    pub cumulative: bool,
    pub sampled: bool,
}

/// A parsed `sample_type_config` part. When present, sample types it does not list are dropped,
/// as Pyroscope does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleTypeConfig(pub HashMap<String, SampleTypeEntry>);

impl SampleTypeConfig {
    pub fn parse(json: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(json).map(Self).map_err(|e| {
            DecodeError::Malformed(format!(
                "sample_type_config is not valid JSON of the expected shape: {e}"
            ))
        })
    }
}
