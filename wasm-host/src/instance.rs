//! Configured instances of Wasm plugins: calls under a deadline and a memory cap, faults
//! counted, and an instance that keeps faulting disabled.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_plugin_api::{
    DecodeError, Decoder, ExportError, IngestMeta, Prepared, Profile, RenderContext,
    RenderExporter, Rendered, SinkExporter, Transform, TransformError, Tree,
};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::bindings::{self, types as wit};
use crate::convert;
use crate::intern::{Feed, SinkInterest, Stamp, StringTable};
use crate::runtime::{Pre, Runtime, WasmPlugin, EPOCH_TICK};
use crate::sandbox::{HostState, Sandbox};
use crate::WasmError;

/// Why a call did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The plugin trapped (a panic, an unreachable, an out-of-bounds access).
    Trap,
    /// The call ran past the sandbox's `timeout`.
    Timeout,
    /// The plugin tried to grow its memory past `max_memory_mb`.
    Memory,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Memory => "memory",
        }
    }
}

/// Told about every fault, every instance disabled and the CPU each call took, for metrics.
pub trait PluginObserver: Send + Sync {
    fn fault(&self, plugin: &str, kind: FaultKind);
    fn disabled(&self, plugin: &str);
    /// CPU time the host spent on a call of `plugin`: the guest's code, and for a sink the
    /// conversion of its batch too.
    fn cpu(&self, _plugin: &str, _seconds: f64) {}
}

/// An observer that does nothing.
pub struct NoObserver;

impl PluginObserver for NoObserver {
    fn fault(&self, _: &str, _: FaultKind) {}
    fn disabled(&self, _: &str) {}
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if ok {
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    } else {
        Duration::ZERO
    }
}

/// A call's failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and returned an error of its own.
    #[error("{0}")]
    Plugin(String),
    /// The call faulted; the instance is rebuilt before the next call.
    #[error("plugin {plugin}: {} fault: {message}", kind.as_str())]
    Fault {
        plugin: String,
        kind: FaultKind,
        message: String,
    },
    /// The instance faulted too often and no longer runs.
    #[error("plugin {plugin} is disabled after {faults} consecutive faults; fix it and reload")]
    Disabled { plugin: String, faults: u32 },
}

enum Exports {
    Decoder(bindings::decoder::Decoder),
    Transform(bindings::transform::Transform),
    Sink(bindings::sink::Sink),
    SinkV0_2(bindings::v0_2::Sink),
    SinkV0_1(bindings::v0_1::Sink),
    Render(bindings::render::Render),
}

/// A running instance: its store and its exports.
pub(crate) struct Live {
    store: Store<HostState>,
    exports: Exports,
    ticks: u64,
}

impl Live {
    /// Instantiates `plugin` in a fresh store limited by `sandbox`.
    pub fn start(plugin: &WasmPlugin, sandbox: &Sandbox) -> Result<Self, String> {
        let runtime = Runtime::get().map_err(|e| e.to_string())?;
        let state = HostState::new(&plugin.name, sandbox)?;
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.memory);
        let ticks = (sandbox.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        let failed = |e: wasmtime::Error| format!("instantiating: {e:#}");
        let exports = match &plugin.pre {
            Pre::Decoder(p) => Exports::Decoder(p.instantiate(&mut store).map_err(failed)?),
            Pre::Transform(p) => Exports::Transform(p.instantiate(&mut store).map_err(failed)?),
            Pre::Sink(p) => Exports::Sink(p.instantiate(&mut store).map_err(failed)?),
            Pre::SinkV0_2(p) => Exports::SinkV0_2(p.instantiate(&mut store).map_err(failed)?),
            Pre::SinkV0_1(p) => Exports::SinkV0_1(p.instantiate(&mut store).map_err(failed)?),
            Pre::Render(p) => Exports::Render(p.instantiate(&mut store).map_err(failed)?),
        };
        Ok(Self {
            store,
            exports,
            ticks,
        })
    }

    pub fn info(&mut self) -> Result<wit::PluginInfo, String> {
        self.store.set_epoch_deadline(self.ticks);
        let s = &mut self.store;
        match &self.exports {
            Exports::Decoder(e) => e.call_info(s),
            Exports::Transform(e) => e.call_info(s),
            Exports::Sink(e) => e.call_info(s),
            Exports::SinkV0_2(e) => e.call_info(s).map(convert::info_from_v0_2),
            Exports::SinkV0_1(e) => e.call_info(s),
            Exports::Render(e) => e.call_info(s),
        }
        .map_err(|e| format!("{e:#}"))
    }

    fn init(&mut self, options: &str) -> wasmtime::Result<Result<(), String>> {
        self.store.set_epoch_deadline(self.ticks);
        let s = &mut self.store;
        match &self.exports {
            Exports::Decoder(e) => e.call_init(s, options),
            Exports::Transform(e) => e.call_init(s, options),
            Exports::Sink(e) => e.call_init(s, options),
            Exports::SinkV0_2(e) => e.call_init(s, options),
            Exports::SinkV0_1(e) => e.call_init(s, options),
            Exports::Render(e) => e.call_init(s, options),
        }
    }

    /// What a sink of 0.2.0 or later wants; `None` for every other kind.
    fn sink_interest(&mut self) -> Result<Option<wit::SinkInterest>, String> {
        self.store.set_epoch_deadline(self.ticks);
        match &self.exports {
            Exports::Sink(e) => e.call_interest(&mut self.store).map(Some),
            Exports::SinkV0_2(e) => e
                .call_interest(&mut self.store)
                .map(|i| Some(convert::interest_from_v0_2(i))),
            _ => Ok(None),
        }
        .map_err(|e| format!("asking what it wants: {e:#}"))
    }
}

/// One configured instance of a Wasm plugin, usable as the component of its kind.
pub struct WasmInstance {
    inner: Arc<Inner>,
}

struct Inner {
    plugin: Arc<WasmPlugin>,
    options: String,
    sandbox: Sandbox,
    live: Mutex<Option<Live>>,
    consecutive_faults: AtomicU32,
    disabled: AtomicBool,
    observer: Arc<dyn PluginObserver>,
    /// For a sink of 0.2.0 or later: the host's copy of its instance's string table, which
    /// batches are made against wherever profiles are prepared.
    strings: Option<Mutex<StringTable>>,
    /// For a sink of 0.2.0 or later. An async lock: it is held across the call, so batches
    /// reach the instance one at a time, checked against their stamps.
    sink: tokio::sync::Mutex<Option<Feed>>,
    /// What a sink of 0.2.0 or later asked for once; `None` for every other kind (they get
    /// everything).
    interest: Option<SinkInterest>,
}

impl WasmPlugin {
    /// Starts an instance with `options` (a JSON object) under `sandbox`. The plugin's `init`
    /// sees the options first; its error refuses the configuration.
    pub fn instantiate(
        self: &Arc<Self>,
        options: &str,
        sandbox: Sandbox,
        observer: Arc<dyn PluginObserver>,
    ) -> Result<WasmInstance, WasmError> {
        sandbox.validate().map_err(|reason| WasmError::Sandbox {
            plugin: self.name.clone(),
            reason,
        })?;
        let mut inner = Inner {
            plugin: self.clone(),
            options: options.to_string(),
            sandbox,
            live: Mutex::new(None),
            consecutive_faults: AtomicU32::new(0),
            disabled: AtomicBool::new(false),
            observer,
            strings: None,
            sink: tokio::sync::Mutex::new(None),
            interest: None,
        };
        let config_error = |message: String| WasmError::Config {
            plugin: self.name.clone(),
            message,
        };
        let mut live = inner.start().map_err(|e| config_error(e.to_string()))?;
        if let Some(interest) = live.sink_interest().map_err(config_error)? {
            // The instance keeps the strings it is sent; an eighth of its memory cap bounds them
            // (a guest `String` and its table slot take about twice the bytes).
            let limit = usize::try_from(inner.sandbox.max_memory_mb << 17).unwrap_or(usize::MAX);
            // Since 0.3.0 a profile with the previous one's stacks crosses without them.
            let same_stacks = matches!(self.pre, Pre::Sink(_));
            inner.strings = Some(Mutex::new(StringTable::new(limit, same_stacks)));
            *inner.sink.get_mut() = Some(Feed::new());
            inner.interest = Some(interest.into());
        }
        *inner.live.lock() = Some(live);
        Ok(WasmInstance {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    /// Runs `f` on this thread and reports the CPU it took as this plugin's.
    fn counting_cpu<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = thread_cpu();
        let result = f();
        self.observer.cpu(
            &self.plugin.name,
            thread_cpu().saturating_sub(before).as_secs_f64(),
        );
        result
    }

    fn start(&self) -> Result<Live, CallError> {
        let mut live =
            Live::start(&self.plugin, &self.sandbox).map_err(|message| CallError::Fault {
                plugin: self.plugin.name.clone(),
                kind: FaultKind::Trap,
                message,
            })?;
        match live.init(&self.options) {
            Ok(Ok(())) => Ok(live),
            Ok(Err(message)) => Err(CallError::Plugin(message)),
            Err(e) => Err(self.classify(&live, e)),
        }
    }

    fn classify(&self, live: &Live, e: wasmtime::Error) -> CallError {
        let kind = if live.store.data().memory.overrun {
            FaultKind::Memory
        } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            FaultKind::Timeout
        } else {
            FaultKind::Trap
        };
        let message = match kind {
            FaultKind::Timeout => format!("call exceeded its {:?} timeout", self.sandbox.timeout),
            _ => format!("{e:#}"),
        };
        CallError::Fault {
            plugin: self.plugin.name.clone(),
            kind,
            message,
        }
    }

    /// Runs `f` on the live instance (starting one if the last call faulted) and accounts for
    /// the outcome. A fault drops the instance: its state after a trap is not trusted.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        let name = &self.plugin.name;
        if self.disabled.load(Ordering::Acquire) {
            return Err(CallError::Disabled {
                plugin: name.clone(),
                faults: self.consecutive_faults.load(Ordering::Acquire),
            });
        }
        let mut slot = self.live.lock();
        let mut live = match slot.take() {
            Some(live) => live,
            None => match self.start() {
                Ok(live) => live,
                Err(e) => return Err(self.fault(e)),
            },
        };
        live.store.set_epoch_deadline(live.ticks);
        match self.counting_cpu(|| f(&mut live.store, &live.exports)) {
            Ok(result) => {
                *slot = Some(live);
                self.consecutive_faults.store(0, Ordering::Release);
                result.map_err(CallError::Plugin)
            }
            Err(e) => {
                let error = self.classify(&live, e);
                Err(self.fault(error))
            }
        }
    }

    fn fault(&self, error: CallError) -> CallError {
        let CallError::Fault { kind, message, .. } = &error else {
            return error;
        };
        let name = &self.plugin.name;
        self.observer.fault(name, *kind);
        let faults = self.consecutive_faults.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::warn!(plugin = %name, fault = kind.as_str(), faults, "{message}");
        if faults >= self.sandbox.max_consecutive_faults
            && !self.disabled.swap(true, Ordering::AcqRel)
        {
            self.observer.disabled(name);
            tracing::error!(
                plugin = %name,
                faults,
                "plugin disabled after {faults} consecutive faults; fix it and reload the configuration"
            );
        }
        error
    }
}

impl WasmInstance {
    pub fn plugin(&self) -> &WasmPlugin {
        &self.inner.plugin
    }

    /// Whether the instance stopped running after repeated faults.
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled.load(Ordering::Acquire)
    }
}

fn wrong_world(plugin: &WasmPlugin, wanted: &str) -> wasmtime::Error {
    wasmtime::format_err!(
        "plugin {} is a {}, not a {wanted}",
        plugin.name,
        plugin.kind
    )
}

impl Decoder for WasmInstance {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let meta = convert::meta_to_wit(meta);
        let plugin = &self.inner.plugin;
        let profiles = self
            .inner
            .call(|store, exports| match exports {
                Exports::Decoder(e) => e.call_decode(store, body, &meta),
                _ => Err(wrong_world(plugin, "decoder")),
            })
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        profiles
            .into_iter()
            .map(convert::profile_from_wit)
            .collect::<Result<_, _>>()
            .map_err(|e| DecodeError::Malformed(format!("plugin {} returned {e}", plugin.name)))
    }
}

impl Transform for WasmInstance {
    fn transform(&self, profiles: Vec<Profile>) -> Result<Vec<Profile>, TransformError> {
        let input: Vec<wit::Profile> = profiles.iter().map(convert::profile_to_wit).collect();
        let plugin = &self.inner.plugin;
        let output = self
            .inner
            .call(|store, exports| match exports {
                Exports::Transform(e) => e.call_transform(store, &input),
                _ => Err(wrong_world(plugin, "transform")),
            })
            .map_err(|e| TransformError(e.to_string()))?;
        output
            .into_iter()
            .map(convert::profile_from_wit)
            .collect::<Result<_, _>>()
            .map_err(|e| TransformError(format!("plugin {} returned {e}", plugin.name)))
    }
}

#[async_trait]
impl SinkExporter for WasmInstance {
    async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
        if self.inner.strings.is_none() {
            return self.export_v0_1(profiles).await;
        }
        match self.prepare(profiles) {
            Some(prepared) => self.export_prepared(vec![prepared]).await,
            None => Ok(()),
        }
    }

    fn wants(&self, profile: &Profile) -> bool {
        self.inner
            .interest
            .as_ref()
            .is_none_or(|i| i.wants(profile))
    }

    /// A sink's batch, interned against the instance's string table while the profiles are in
    /// cache; a 0.1.0 sink prepares nothing.
    fn prepare(&self, profiles: &[&Profile]) -> Option<Prepared> {
        let (strings, interest) = (self.inner.strings.as_ref()?, self.inner.interest.as_ref()?);
        let (batch, stamp) = self
            .inner
            .counting_cpu(|| strings.lock().batch(profiles.iter().copied(), interest))?;
        Some(Prepared {
            profiles: batch.profiles.len(),
            data: Box::new((batch, stamp)),
        })
    }

    /// Consecutive batches go to the instance in one call. A batch that does not follow what
    /// the instance holds (it was prepared before a fault rebuilt the instance) is skipped,
    /// never sent with ids the instance would read as other strings; the next batch prepared
    /// starts the table over.
    async fn export_prepared(&self, prepared: Vec<Prepared>) -> Result<(), ExportError> {
        let mut feed = self.inner.sink.lock().await;
        let (Some(feed), Some(strings)) = (feed.as_mut(), &self.inner.strings) else {
            return Err(ExportError(format!(
                "plugin {} is not a sink that prepares batches",
                self.inner.plugin.name
            )));
        };
        let mut batches = Vec::with_capacity(prepared.len());
        for p in prepared {
            let batch = p.data.downcast::<(wit::SinkBatch, Stamp)>().map_err(|_| {
                ExportError(format!(
                    "plugin {}: a batch prepared by another sink",
                    self.inner.plugin.name
                ))
            })?;
            batches.push(*batch);
        }
        let mut batches = batches.into_iter().peekable();
        let (mut result, mut skipped) = (Ok(()), 0);
        while let Some(call) = feed.next_call(&mut batches, &mut skipped) {
            if let Err(e) = self.consume(call).await {
                if matches!(e, CallError::Fault { .. } | CallError::Disabled { .. }) {
                    // The instance is rebuilt empty (or never saw the batch): the next batch
                    // made resends every string, and those made before it are skipped.
                    feed.lost();
                    strings.lock().reset();
                }
                result = Err(ExportError(e.to_string()));
            }
        }
        if skipped > 0 && result.is_ok() {
            result = Err(ExportError(format!(
                "{skipped} profiles skipped: prepared before plugin {} was restarted",
                self.inner.plugin.name
            )));
        }
        result
    }

    fn prepared_dropped(&self) {
        if let Some(strings) = &self.inner.strings {
            strings.lock().reset();
        }
    }
}

impl WasmInstance {
    /// [`Inner::call`] on a blocking thread, for the async exporters: plugin code may block
    /// (files, HTTP). `what` names the task should the thread fail; `f` gets the plugin too.
    async fn call_blocking<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(
                &WasmPlugin,
                &mut Store<HostState>,
                &Exports,
            ) -> wasmtime::Result<Result<R, String>>
            + Send
            + 'static,
    ) -> Result<R, CallError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.call(|store, exports| f(&inner.plugin, store, exports))
        })
        .await
        .map_err(|e| CallError::Plugin(format!("{what} task failed: {e}")))?
    }

    /// Hands a sink's batch to its instance (of 0.2.0 or later).
    async fn consume(&self, batch: wit::SinkBatch) -> Result<(), CallError> {
        self.call_blocking("sink", move |plugin, store, exports| match exports {
            Exports::Sink(e) => e.call_consume(store, &batch),
            Exports::SinkV0_2(e) => e.call_consume(store, &convert::batch_to_v0_2(batch)),
            _ => Err(wrong_world(plugin, "sink")),
        })
        .await
    }

    /// A sink built against 0.1.0: every profile crosses whole.
    async fn export_v0_1(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
        let batch: Vec<wit::Profile> = self.inner.counting_cpu(|| {
            profiles
                .iter()
                .map(|p| convert::profile_to_wit(p))
                .collect()
        });
        self.call_blocking("sink", move |plugin, store, exports| match exports {
            Exports::SinkV0_1(e) => e.call_consume(store, &batch),
            _ => Err(wrong_world(plugin, "sink")),
        })
        .await
        .map_err(|e| ExportError(e.to_string()))
    }
}

#[async_trait]
impl RenderExporter for WasmInstance {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        let nodes = convert::tree_to_wit(tree);
        let context = convert::context_to_wit(ctx);
        self.call_blocking("render", move |plugin, store, exports| match exports {
            Exports::Render(e) => e.call_render(store, &nodes, &context),
            _ => Err(wrong_world(plugin, "render")),
        })
        .await
        .map(convert::rendered_from_wit)
        .map_err(|e| ExportError(e.to_string()))
    }
}
