// Shared by every target: the request metadata decoders see.
#[allow(dead_code)]
pub fn meta(multipart: bool) -> kiln_plugin_api::IngestMeta {
    kiln_plugin_api::IngestMeta {
        app: "fuzz".into(),
        labels: kiln_plugin_api::Labels::from_pairs([("service_name", "fuzz")]),
        content_type: multipart.then(|| "multipart/form-data; boundary=B0undary".to_string()),
        start_ns: 1,
        end_ns: 2,
        ..Default::default()
    }
}

/// Decoded profiles must satisfy the invariants storage relies on.
#[allow(dead_code)]
pub fn check(result: Result<Vec<kiln_plugin_api::Profile>, kiln_plugin_api::DecodeError>) {
    if let Ok(profiles) = result {
        for p in profiles {
            p.validate().expect("decoder produced an invalid profile");
        }
    }
}
