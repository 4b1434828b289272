#![no_main]
use kiln_plugin_api::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let d = kiln_jfr::JfrDecoder { max_decompressed_bytes: 16 << 20 };
    common::check(d.decode(data, &common::meta(false)));
});
