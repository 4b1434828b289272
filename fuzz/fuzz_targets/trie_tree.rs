#![no_main]
use kiln_collapsed::{CollapsedDecoder, TextFormat};
use kiln_plugin_api::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(CollapsedDecoder::new(TextFormat::Trie).decode(data, &common::meta(false)));
    common::check(CollapsedDecoder::new(TextFormat::Tree).decode(data, &common::meta(false)));
});
