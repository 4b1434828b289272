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

pub use decoder::kiln::plugin::host;
pub use decoder::kiln::plugin::types;
