#![no_main]
use kiln_plugin_api::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(kiln_otlp::OtlpDecoder.decode(data, &common::meta(false)));
});
