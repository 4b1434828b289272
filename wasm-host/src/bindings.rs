//! Host bindings of the `kiln:plugin` worlds, generated from `wit/plugin.wit`.
//!
//! The `types` and `host` interfaces are generated once (with the decoder world) and shared by
//! the other worlds, so conversions and the host implementation exist once.

pub mod decoder {
    wasmtime::component::bindgen!({ path: "../wit", world: "decoder" });
}

pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
        with: {
            "kiln:plugin/types": super::decoder::kiln::plugin::types,
            "kiln:plugin/host": super::decoder::kiln::plugin::host,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink",
        with: {
            "kiln:plugin/types": super::decoder::kiln::plugin::types,
            "kiln:plugin/host": super::decoder::kiln::plugin::host,
        },
    });
}

pub mod render {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "render",
        with: {
            "kiln:plugin/types": super::decoder::kiln::plugin::types,
            "kiln:plugin/host": super::decoder::kiln::plugin::host,
        },
    });
}

/// The 0.2.0 contract (`wit/0.2.0/plugin.wit`), kept so sinks built against it still load.
/// Its `interned-profile` lacks `same-stacks`, so its records are its own (converted in
/// [`crate::convert`]); decoders, transforms and renders built against it match the current
/// worlds by structure. Its `host` interface is served by the same implementation under its
/// own versioned name.
pub mod v0_2 {
    wasmtime::component::bindgen!({ path: "../wit/0.2.0", world: "sink" });
}

/// The 0.1.0 contract (`wit/0.1.0/plugin.wit`), kept so components built against it still
/// load. Only its `sink` world differs; its records are the current ones (the component model
/// compares types by structure), and its `host` interface is served by the same implementation
/// under its own versioned name.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "sink",
        with: {
            "kiln:plugin/types": super::decoder::kiln::plugin::types,
        },
    });
}

pub use decoder::kiln::plugin::host;
pub use decoder::kiln::plugin::types;
