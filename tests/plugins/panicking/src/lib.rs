//! A decoder that panics on every body: the panic must stop at the plugin boundary.

use kiln_plugin_api::abi::FromConfig;
use kiln_plugin_api::{DecodeError, Decoder, IngestMeta, Profile};

pub struct Panicking;

impl FromConfig for Panicking {
    fn from_config(_: &str) -> Result<Self, String> {
        Ok(Panicking)
    }
}

impl Decoder for Panicking {
    fn decode(&self, body: &[u8], _: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        panic!("boom on {} bytes", body.len())
    }
}

kiln_plugin_api::export_plugin!(decoder, "panicking", "0.0.1", Panicking);
