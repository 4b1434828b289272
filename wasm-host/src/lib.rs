//! # kiln-wasm-host
//!
//! Runs Kiln plugins compiled to WebAssembly components (`wit/plugin.wit`, package
//! `kiln:plugin`). Each plugin targets one world — decoder, transform, sink or render — and is
//! used through the same traits as a built-in component.
//!
//! Every instance lives in its own store: a memory cap, a wall-clock deadline per call (epoch
//! interruption), and no files, network, environment or clock beyond WASI's defaults unless its
//! configuration grants a directory or HTTP POST prefixes. A trap, timeout or memory overrun
//! fails that call only; the instance is rebuilt, and disabled after too many faults in a row.

mod bindings;
mod convert;
mod instance;
mod intern;
mod runtime;
mod sandbox;

use std::path::PathBuf;

pub use instance::{CallError, FaultKind, NoObserver, PluginObserver, WasmInstance};
pub use runtime::{WasmPlugin, WIT_VERSION, WIT_VERSIONS_ACCEPTED};
pub use sandbox::{Sandbox, GUEST_DIR};

/// Why a Wasm plugin could not be loaded or configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WasmError {
    #[error("the WebAssembly engine could not start: {0}")]
    Engine(String),
    #[error("{file}: {reason}")]
    Load { file: PathBuf, reason: String },
    #[error("{file}: built against kiln:plugin@{found}, this daemon speaks kiln:plugin@{} (and loads components built against {}); rebuild it against wit/plugin.wit of this release", WIT_VERSION, WIT_VERSIONS_ACCEPTED[1..].join(", "))]
    WitVersion { file: PathBuf, found: String },
    #[error("plugin {plugin}: sandbox: {reason}")]
    Sandbox { plugin: String, reason: String },
    #[error("plugin {plugin}: {message}")]
    Config { plugin: String, message: String },
}
