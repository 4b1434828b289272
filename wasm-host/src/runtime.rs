//! The engine shared by every Wasm plugin, and loading a component into a [`WasmPlugin`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use kiln_plugin_api::ComponentKind;
use parking_lot::Mutex;
use wasmtime::component::{types::ComponentItem, Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings;
use crate::sandbox::{HostState, Sandbox};
use crate::WasmError;

/// The version of the `kiln:plugin` WIT package this host speaks.
pub const WIT_VERSION: &str = "0.3.0";
/// Earlier versions whose components still load: they differ only in their `sink` world.
pub const WIT_VERSIONS_ACCEPTED: &[&str] = &["0.3.0", "0.2.0", "0.1.0"];
const WIT_PACKAGE: &str = "kiln:plugin";
/// Set (to anything) in the daemon's environment to write a perf map of compiled plugin code.
pub const PERF_MAP_ENV: &str = "KILN_WASM_PERF_MAP";

/// One epoch tick; call timeouts are counted in ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiled components by file, so a reload does not recompile what did not change.
type ComponentCache = HashMap<PathBuf, (SystemTime, u64, Component)>;

/// The process-wide engine, its linker and the component cache.
pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    cache: Mutex<ComponentCache>,
}

impl Runtime {
    /// The runtime, created on first use together with the thread that drives call deadlines.
    pub fn get() -> Result<&'static Runtime, WasmError> {
        static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
        RUNTIME
            .get_or_init(|| Runtime::new().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| WasmError::Engine(e.clone()))
    }

    fn new() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines by epoch: cheaper per instruction than fuel, and measured in time.
        config.epoch_interruption(true);
        if std::env::var_os(PERF_MAP_ENV).is_some() {
            // `perf` names plugin code from /tmp/perf-<pid>.map (functions of components
            // compiled from now on); without it a profile shows guest code as unknown addresses.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::v0_1::kiln::plugin::host::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_2::kiln::plugin::host::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("kiln-wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            })?;
        Ok(Self {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn compile(&self, file: &Path) -> Result<Component, WasmError> {
        let io = |e: std::io::Error| WasmError::Load {
            file: file.to_path_buf(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(file).map_err(io)?;
        let stamp = (meta.modified().map_err(io)?, meta.len());
        if let Some((modified, len, component)) = self.cache.lock().get(file) {
            if (*modified, *len) == stamp {
                return Ok(component.clone());
            }
        }
        let bytes = std::fs::read(file).map_err(io)?;
        let component = Component::new(&self.engine, &bytes).map_err(|e| WasmError::Load {
            file: file.to_path_buf(),
            reason: format!("not a WebAssembly component: {e}"),
        })?;
        self.cache
            .lock()
            .insert(file.to_path_buf(), (stamp.0, stamp.1, component.clone()));
        Ok(component)
    }
}

/// The exports of one world, ready to instantiate.
#[derive(Clone)]
pub(crate) enum Pre {
    Decoder(bindings::decoder::DecoderPre<HostState>),
    Transform(bindings::transform::TransformPre<HostState>),
    Sink(bindings::sink::SinkPre<HostState>),
    /// A sink built against 0.2.0: interned strings, every profile with its stacks.
    SinkV0_2(bindings::v0_2::SinkPre<HostState>),
    /// A sink built against 0.1.0: profiles cross whole, strings and all.
    SinkV0_1(bindings::v0_1::SinkPre<HostState>),
    Render(bindings::render::RenderPre<HostState>),
}

/// A loaded, checked Wasm plugin: a component that targets one `kiln:plugin` world.
#[derive(Clone)]
pub struct WasmPlugin {
    pub name: String,
    pub version: String,
    pub kind: ComponentKind,
    pub file: PathBuf,
    /// The `kiln:plugin` version it was built against (one of [`WIT_VERSIONS_ACCEPTED`]).
    pub wit: String,
    pub(crate) pre: Pre,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("file", &self.file)
            .field("wit", &self.wit)
            .finish()
    }
}

/// The `kiln:plugin` version a component was built against, from the names of its imports.
fn wit_version(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .find_map(|(name, _)| {
            let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
            Some(rest.split_once('@').map_or("", |(_, v)| v).to_string())
        })
}

/// The world a component targets, from the functions it exports.
fn world_kind(engine: &Engine, component: &Component) -> Option<ComponentKind> {
    let exports: Vec<(String, bool)> = component
        .component_type()
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_string(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    let has = |f: &str| exports.iter().any(|(n, is_func)| n == f && *is_func);
    [
        ("decode", ComponentKind::Decoder),
        ("transform", ComponentKind::Transform),
        ("consume", ComponentKind::Sink),
        ("render", ComponentKind::Render),
    ]
    .into_iter()
    .find(|(f, _)| has(f))
    .map(|(_, kind)| kind)
}

impl WasmPlugin {
    /// Compiles and checks `file`: a component, built against this host's `kiln:plugin`
    /// version, exporting one world, importing nothing the sandbox does not provide.
    pub fn load(file: &Path) -> Result<Self, WasmError> {
        let runtime = Runtime::get()?;
        let component = runtime.compile(file)?;
        let refuse = |reason: String| WasmError::Load {
            file: file.to_path_buf(),
            reason,
        };
        let wit = match wit_version(&runtime.engine, &component) {
            None => {
                return Err(refuse(format!(
                    "not a Kiln plugin: it imports no {WIT_PACKAGE} interface"
                )))
            }
            Some(v) if !WIT_VERSIONS_ACCEPTED.contains(&v.as_str()) => {
                return Err(WasmError::WitVersion {
                    file: file.to_path_buf(),
                    found: if v.is_empty() {
                        "unversioned".into()
                    } else {
                        v
                    },
                })
            }
            Some(v) => v,
        };
        let kind = world_kind(&runtime.engine, &component)
            .ok_or_else(|| refuse("exports none of decode, transform, consume or render".into()))?;
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| refuse(format!("needs something the sandbox does not provide: {e}")))?;
        let world_error =
            |e: wasmtime::Error| refuse(format!("does not match the {kind} world: {e}"));
        let pre = match kind {
            ComponentKind::Decoder => {
                Pre::Decoder(bindings::decoder::DecoderPre::new(instance_pre).map_err(world_error)?)
            }
            ComponentKind::Transform => Pre::Transform(
                bindings::transform::TransformPre::new(instance_pre).map_err(world_error)?,
            ),
            ComponentKind::Sink if wit == "0.2.0" => {
                Pre::SinkV0_2(bindings::v0_2::SinkPre::new(instance_pre).map_err(world_error)?)
            }
            ComponentKind::Sink if wit == "0.1.0" => {
                Pre::SinkV0_1(bindings::v0_1::SinkPre::new(instance_pre).map_err(world_error)?)
            }
            ComponentKind::Sink => {
                Pre::Sink(bindings::sink::SinkPre::new(instance_pre).map_err(world_error)?)
            }
            ComponentKind::Render => {
                Pre::Render(bindings::render::RenderPre::new(instance_pre).map_err(world_error)?)
            }
            ComponentKind::Storage => unreachable!("no storage world"),
        };
        let mut plugin = Self {
            name: String::new(),
            version: String::new(),
            kind,
            file: file.to_path_buf(),
            wit,
            pre,
        };
        let info = crate::instance::Live::start(&plugin, &Sandbox::default())
            .and_then(|mut live| live.info())
            .map_err(|e| refuse(format!("asking it for its name: {e}")))?;
        if info.name.is_empty() {
            return Err(refuse("its info() returned an empty name".into()));
        }
        plugin.name = info.name;
        plugin.version = info.version;
        Ok(plugin)
    }

    /// Every `.wasm` file directly in `dir`, loaded (or the reason it was refused).
    pub fn scan(dir: &Path) -> Vec<(PathBuf, Result<Arc<WasmPlugin>, WasmError>)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let r = Self::load(&p).map(Arc::new);
                (p, r)
            })
            .collect()
    }
}
