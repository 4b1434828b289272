//! Plugins found in the plugins directory: native libraries (`.so`, `.dylib`) through the C ABI
//! of `kiln_plugin_api::abi`, and WebAssembly components (`.wasm`) through `kiln-wasm-host`.
//! Both end up behind the same traits as built-in components.

pub mod native;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kiln_plugin_api::{ComponentKind, Decoder, RenderExporter, SinkExporter, Transform};
use kiln_wasm_host::{Sandbox, WasmPlugin};

use crate::config::PluginSettings;
use crate::metrics::Metrics;

/// A plugin file that loaded.
pub enum Plugin {
    Native(native::NativeLibrary),
    Wasm(Arc<WasmPlugin>),
}

impl Plugin {
    pub fn name(&self) -> &str {
        match self {
            Self::Native(p) => &p.name,
            Self::Wasm(p) => &p.name,
        }
    }

    pub fn kind(&self) -> ComponentKind {
        match self {
            Self::Native(p) => p.kind,
            Self::Wasm(p) => p.kind,
        }
    }

    pub fn version(&self) -> &str {
        match self {
            Self::Native(p) => &p.version,
            Self::Wasm(p) => &p.version,
        }
    }

    pub fn file(&self) -> &Path {
        match self {
            Self::Native(p) => &p.file,
            Self::Wasm(p) => &p.file,
        }
    }

    /// `native` or `wasm`.
    pub fn runtime(&self) -> &'static str {
        match self {
            Self::Native(_) => "native",
            Self::Wasm(_) => "wasm",
        }
    }
}

fn is_native(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("so" | "dylib")
    )
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Loads one plugin file, by its extension.
pub fn load(path: &Path) -> anyhow::Result<Plugin> {
    if is_wasm(path) {
        Ok(Plugin::Wasm(Arc::new(WasmPlugin::load(path)?)))
    } else {
        Ok(Plugin::Native(native::load(path)?))
    }
}

/// Every plugin file directly in `dir`, in name order, loaded or with the reason it was refused.
pub fn scan(dir: &Path) -> Vec<(PathBuf, anyhow::Result<Plugin>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && (is_native(p) || is_wasm(p)))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let r = load(&p);
            (p, r)
        })
        .collect()
}

/// The loaded plugins and what instantiating them needs.
pub struct Registry {
    plugins: Vec<Plugin>,
    metrics: Metrics,
}

/// A configured plugin component of any runtime.
enum Instance {
    Native(Arc<native::NativeInstance>),
    Wasm(Arc<kiln_wasm_host::WasmInstance>),
}

impl Registry {
    /// Loads the plugins directory; refused files are logged and skipped, so one broken plugin
    /// does not keep the others (or the daemon) from starting.
    pub fn load_dir(dir: &Path, metrics: Metrics) -> Self {
        let mut plugins: Vec<Plugin> = Vec::new();
        for (file, loaded) in scan(dir) {
            match loaded {
                Ok(p)
                    if plugins
                        .iter()
                        .any(|q| q.kind() == p.kind() && q.name() == p.name()) =>
                {
                    tracing::error!(plugin = %p.name(), file = %file.display(), "plugin refused: another {} plugin has the same name", p.kind())
                }
                Ok(p) => {
                    tracing::info!(plugin = %p.name(), kind = %p.kind(), version = %p.version(), runtime = p.runtime(), file = %file.display(), "plugin loaded");
                    plugins.push(p);
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "plugin refused"),
            }
        }
        Self { plugins, metrics }
    }

    pub fn of_kind(&self, kind: ComponentKind) -> impl Iterator<Item = &Plugin> {
        self.plugins.iter().filter(move |p| p.kind() == kind)
    }

    pub fn find(&self, kind: ComponentKind, name: &str) -> Option<&Plugin> {
        self.of_kind(kind).find(|p| p.name() == name)
    }

    /// Starts `plugin` with the options and sandbox of the configuration table `table`.
    fn instantiate(
        &self,
        plugin: &Plugin,
        settings: &PluginSettings,
        table: &str,
    ) -> anyhow::Result<Instance> {
        let options = serde_json::to_string(&settings.options).expect("TOML serializes as JSON");
        match plugin {
            Plugin::Native(lib) => {
                if settings.sandbox.is_some() {
                    anyhow::bail!("in [{table}.sandbox]: plugin {} is native; a sandbox applies to Wasm plugins only", lib.name);
                }
                let instance = lib
                    .instantiate(&options, self.metrics.clone())
                    .with_context(|| format!("in [{table}]"))?;
                Ok(Instance::Native(instance))
            }
            Plugin::Wasm(wasm) => {
                let sandbox: Sandbox = settings.sandbox(table)?;
                let instance = wasm
                    .instantiate(&options, sandbox, Arc::new(self.metrics.clone()))
                    .with_context(|| format!("in [{table}]"))?;
                Ok(Instance::Wasm(Arc::new(instance)))
            }
        }
    }

    pub fn decoder(
        &self,
        plugin: &Plugin,
        settings: &PluginSettings,
        table: &str,
    ) -> anyhow::Result<Arc<dyn Decoder>> {
        Ok(match self.instantiate(plugin, settings, table)? {
            Instance::Native(i) => i,
            Instance::Wasm(i) => i,
        })
    }

    pub fn transform(
        &self,
        plugin: &Plugin,
        settings: &PluginSettings,
        table: &str,
    ) -> anyhow::Result<Arc<dyn Transform>> {
        Ok(match self.instantiate(plugin, settings, table)? {
            Instance::Native(i) => i,
            Instance::Wasm(i) => i,
        })
    }

    pub fn sink(
        &self,
        plugin: &Plugin,
        settings: &PluginSettings,
        table: &str,
    ) -> anyhow::Result<Arc<dyn SinkExporter>> {
        match self.instantiate(plugin, settings, table)? {
            Instance::Native(i) => Ok(Arc::new(native::NativeAsync(i))),
            Instance::Wasm(i) => Ok(i),
        }
    }

    pub fn render(
        &self,
        plugin: &Plugin,
        settings: &PluginSettings,
        table: &str,
    ) -> anyhow::Result<Arc<dyn RenderExporter>> {
        match self.instantiate(plugin, settings, table)? {
            Instance::Native(i) => Ok(Arc::new(native::NativeAsync(i))),
            Instance::Wasm(i) => Ok(i),
        }
    }
}

impl Registry {
    /// A storage backend from a native plugin named `name`, configured by `options` (a JSON
    /// object). Storage plugins are native only: a Wasm sandbox has no durable storage to offer.
    pub fn storage(
        &self,
        name: &str,
        options: &str,
    ) -> anyhow::Result<Arc<dyn kiln_plugin_api::Storage>> {
        match self.find(ComponentKind::Storage, name) {
            Some(Plugin::Native(lib)) => {
                let instance = lib
                    .instantiate(options, self.metrics.clone())
                    .context("in [storage]")?;
                Ok(Arc::new(native::NativeAsync(instance)))
            }
            Some(Plugin::Wasm(_)) => {
                anyhow::bail!("in [storage], key `type`: {name:?} is a Wasm plugin; storage plugins must be native")
            }
            None => {
                let available: Vec<&str> = ["sled", "clickhouse"]
                    .into_iter()
                    .chain(self.of_kind(ComponentKind::Storage).map(|p| p.name()))
                    .collect();
                anyhow::bail!(
                    "in [storage], key `type`: unknown storage {name:?}; available: {}",
                    available.join(", ")
                )
            }
        }
    }
}
