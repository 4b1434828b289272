#![no_main]
use kiln_collapsed::{CollapsedDecoder, TextFormat};
use kiln_plugin_api::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(CollapsedDecoder::new(TextFormat::Speedscope).decode(data, &common::meta(false)));
});
