#![no_main]
use kiln_plugin_api::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let d = kiln_pprof::PprofDecoder { max_decompressed_bytes: 16 << 20 };
    // The first byte picks raw or multipart framing.
    let multipart = data.first().is_some_and(|b| b & 1 == 1);
    common::check(d.decode(data, &common::meta(multipart)));
});
