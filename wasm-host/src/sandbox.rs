//! What a Wasm plugin instance may use: a memory cap, a time budget per call, and only the
//! capabilities its configuration grants (one preopened directory, POSTs to allow-listed URLs).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::host;

/// Where a granted directory appears inside the plugin.
pub const GUEST_DIR: &str = "/data";

/// The `sandbox` table of a plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Largest linear memory the plugin may grow to, in MiB.
    pub max_memory_mb: u64,
    /// Wall-clock budget of one call (decode, consume, render, …).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A host directory the plugin may read and write, seen by it as `/data`.
    pub dir: Option<PathBuf>,
    /// URL prefixes the plugin may POST to through `host.http-post`.
    pub http_allow: Vec<String>,
    /// Consecutive faults (trap, timeout, memory overrun) after which the instance is disabled
    /// until the next reload.
    pub max_consecutive_faults: u32,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            max_memory_mb: 256,
            timeout: Duration::from_secs(2),
            dir: None,
            http_allow: Vec::new(),
            max_consecutive_faults: 5,
        }
    }
}

impl Sandbox {
    /// Checks what can be checked before the plugin runs.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_memory_mb == 0 {
            return Err("`max_memory_mb` must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("`timeout` must be greater than zero".into());
        }
        if self.max_consecutive_faults == 0 {
            return Err("`max_consecutive_faults` must be at least 1".into());
        }
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                return Err(format!("`dir` {} is not a directory", dir.display()));
            }
        }
        for url in &self.http_allow {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("`http_allow` entry {url:?} is not an http(s) URL"));
            }
        }
        Ok(())
    }
}

/// Refuses memory growth past the cap, remembering that it did so the fault can be named.
pub(crate) struct MemoryCap {
    pub limit_bytes: usize,
    pub overrun: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.overrun = true;
            wasmtime::bail!(
                "memory limit exceeded: the plugin asked for {desired} bytes, its cap is {} bytes",
                self.limit_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The state of one plugin instance's store.
pub(crate) struct HostState {
    pub plugin: String,
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryCap,
    http_allow: Vec<String>,
}

impl HostState {
    pub fn new(plugin: &str, sandbox: &Sandbox) -> Result<Self, String> {
        let mut wasi = WasiCtxBuilder::new();
        // Plugin stderr (panic messages) goes to the daemon's stderr; nothing else is inherited:
        // no environment, no arguments, no sockets, no files beyond the granted directory.
        wasi.inherit_stderr();
        // Every plugin call already runs on a blocking thread of its own, so file operations
        // need not hop to another thread (that hop cost more than the writes themselves).
        wasi.allow_blocking_current_thread(true);
        if let Some(dir) = &sandbox.dir {
            wasi.preopened_dir(dir, GUEST_DIR, wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| format!("granting directory {}: {e}", dir.display()))?;
        }
        Ok(Self {
            plugin: plugin.to_string(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit_bytes: usize::try_from(sandbox.max_memory_mb << 20).unwrap_or(usize::MAX),
                overrun: false,
            },
            http_allow: sandbox.http_allow.clone(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let plugin = self.plugin.as_str();
        match level {
            host::LogLevel::Error => tracing::error!(plugin, "{message}"),
            host::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            host::LogLevel::Info => tracing::info!(plugin, "{message}"),
            host::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
        }
    }

    fn http_post(
        &mut self,
        url: String,
        content_type: String,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        if !self.http_allow.iter().any(|prefix| url.starts_with(prefix)) {
            return Err(format!(
                "POST {url} refused: not in this plugin's sandbox.http_allow"
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        agent
            .post(&url)
            .header("content-type", &content_type)
            .send(&body[..])
            .map(|resp| resp.status().as_u16())
            .map_err(|e| format!("POST {url}: {e}"))
    }
}

/// The same host functions under an earlier version's interface name, for components built
/// against it.
macro_rules! earlier_host {
    ($($version:ident)::+) => {
        impl $($version)::+::kiln::plugin::host::Host for HostState {
            fn log(&mut self, level: $($version)::+::kiln::plugin::host::LogLevel, message: String) {
                use $($version)::+::kiln::plugin::host::LogLevel as Old;
                let level = match level {
                    Old::Error => host::LogLevel::Error,
                    Old::Warn => host::LogLevel::Warn,
                    Old::Info => host::LogLevel::Info,
                    Old::Debug => host::LogLevel::Debug,
                };
                host::Host::log(self, level, message);
            }

            fn http_post(
                &mut self,
                url: String,
                content_type: String,
                body: Vec<u8>,
            ) -> Result<u16, String> {
                host::Host::http_post(self, url, content_type, body)
            }
        }
    };
}

earlier_host!(crate::bindings::v0_1);
earlier_host!(crate::bindings::v0_2);
