//! Native plugins: shared libraries in the plugins directory, loaded through the C ABI of
//! `kiln_plugin_api::abi` and used through the same traits as built-in components.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kiln_plugin_api::abi::storage::{decode_error, decode_response, StorageRequest};
use kiln_plugin_api::abi::{self, exporters, ByteBuf, Descriptor, EntryFn};
use kiln_plugin_api::{
    ComponentKind, DecodeError, Decoder, ExportError, IngestMeta, Merged, Profile, Query,
    RenderContext, RenderExporter, Rendered, RetentionReport, SeriesInfo, SinkExporter, Storage,
    StorageError, Tenant, Timeline, Transform, TransformError, Tree,
};

/// Why a plugin file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{file}: not a loadable library: {reason}")]
    NotALibrary { file: PathBuf, reason: String },
    #[error(
        "{file}: not a Kiln plugin: it exports no `{}` symbol",
        abi::ENTRY_SYMBOL
    )]
    MissingSymbol { file: PathBuf },
    #[error("{file}: not a Kiln plugin: its descriptor has the wrong magic bytes")]
    BadMagic { file: PathBuf },
    #[error("{file}: built for plugin ABI version {found}, this daemon speaks version {expected}; rebuild it against this kiln-plugin-api")]
    AbiVersion {
        file: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{file}: a storage plugin built for plugin ABI version {found}, before storage took tenants; this daemon needs version {expected} or later for storage: rebuild it against this kiln-plugin-api (every Storage method now takes a `&Tenant`)")]
    StorageAbiTooOld {
        file: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{file}: unknown component kind {kind}")]
    UnknownKind { file: PathBuf, kind: u32 },
    #[error("plugin {name}: {message}")]
    Config { name: String, message: String },
}

/// A loaded plugin library.
pub struct NativeLibrary {
    pub name: String,
    pub version: String,
    pub kind: ComponentKind,
    pub file: PathBuf,
    descriptor: *const Descriptor,
    // Declared last: dropped after every pointer into it.
    library: Arc<libloading::Library>,
}

// The descriptor is immutable static data inside the library, which the Arc keeps loaded.
unsafe impl Send for NativeLibrary {}
unsafe impl Sync for NativeLibrary {}

fn c_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: descriptors hold NUL-terminated static strings (checked magic and version first).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Loads `path`, refusing anything that is not a plugin of this ABI version.
pub fn load(path: &Path) -> Result<NativeLibrary, PluginError> {
    let file = path.to_path_buf();
    // SAFETY: loading runs the library's initialisers; plugins are trusted code the operator
    // put in the plugins directory. Everything after this is checked before use.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotALibrary {
            file: file.clone(),
            reason: e.to_string(),
        })?;
    let entry: EntryFn = unsafe {
        *library
            .get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes())
            .map_err(|_| PluginError::MissingSymbol { file: file.clone() })?
    };
    // SAFETY: the symbol has the ABI's entry signature; the result is checked before use.
    let descriptor = unsafe { entry() };
    if descriptor.is_null() {
        return Err(PluginError::BadMagic { file });
    }
    // Read the fixed prefix (magic, version) before trusting anything else in the descriptor.
    let (magic, version) = unsafe { ((*descriptor).magic, (*descriptor).abi_version) };
    if magic != abi::MAGIC {
        return Err(PluginError::BadMagic { file });
    }
    if version == 0 || version > abi::ABI_VERSION {
        return Err(PluginError::AbiVersion {
            file,
            found: version,
            expected: abi::ABI_VERSION,
        });
    }
    // The descriptor's layout is the same in every version so far; only messages changed.
    let d = unsafe { &*descriptor };
    if version < abi::min_abi_version(d.kind) {
        return Err(if d.kind == abi::KIND_STORAGE {
            PluginError::StorageAbiTooOld {
                file,
                found: version,
                expected: abi::min_abi_version(d.kind),
            }
        } else {
            PluginError::AbiVersion {
                file,
                found: version,
                expected: abi::ABI_VERSION,
            }
        });
    }
    let kind = match d.kind {
        abi::KIND_DECODER => ComponentKind::Decoder,
        abi::KIND_TRANSFORM => ComponentKind::Transform,
        abi::KIND_SINK => ComponentKind::Sink,
        abi::KIND_RENDER => ComponentKind::Render,
        abi::KIND_STORAGE => ComponentKind::Storage,
        k => return Err(PluginError::UnknownKind { file, kind: k }),
    };
    Ok(NativeLibrary {
        name: c_string(d.name),
        version: c_string(d.version),
        kind,
        file,
        descriptor,
        library: Arc::new(library),
    })
}

impl NativeLibrary {
    /// A new instance configured by `config_json`.
    pub fn instantiate(
        &self,
        config_json: &str,
        metrics: crate::metrics::Metrics,
    ) -> Result<Arc<NativeInstance>, PluginError> {
        let d = unsafe { &*self.descriptor };
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = ByteBuf::empty();
        let status = unsafe {
            (d.create)(
                config_json.as_ptr(),
                config_json.len(),
                &mut instance,
                &mut err,
            )
        };
        let message = take(d, err);
        if status != abi::STATUS_OK || instance.is_null() {
            return Err(PluginError::Config {
                name: self.name.clone(),
                message,
            });
        }
        Ok(Arc::new(NativeInstance {
            name: self.name.clone(),
            descriptor: self.descriptor,
            instance,
            metrics,
            _library: self.library.clone(),
        }))
    }
}

/// Copies a plugin-owned buffer out and gives it back to the plugin.
fn take(d: &Descriptor, buf: ByteBuf) -> String {
    let s = String::from_utf8_lossy(unsafe { buf.as_slice() }).into_owned();
    unsafe { (d.free)(buf) };
    s
}

/// One configured plugin component.
pub struct NativeInstance {
    name: String,
    descriptor: *const Descriptor,
    instance: *mut c_void,
    metrics: crate::metrics::Metrics,
    _library: Arc<libloading::Library>,
}

// Plugins implement Send + Sync traits (enforced by export_plugin!), so the instance may be shared.
unsafe impl Send for NativeInstance {}
unsafe impl Sync for NativeInstance {}

impl NativeInstance {
    fn call(&self, input: &[u8]) -> Result<Vec<u8>, (i32, String)> {
        let d = unsafe { &*self.descriptor };
        let mut out = ByteBuf::empty();
        let status = unsafe { (d.call)(self.instance, input.as_ptr(), input.len(), &mut out) };
        let bytes = unsafe { out.as_slice() }.to_vec();
        unsafe { (d.free)(out) };
        if status == abi::STATUS_OK {
            Ok(bytes)
        } else {
            Err((status, String::from_utf8_lossy(&bytes).into_owned()))
        }
    }

    fn failure(&self, status: i32, message: String) -> String {
        if status == abi::STATUS_PANIC {
            tracing::error!(plugin = %self.name, panic = %message, "native plugin panicked");
            self.metrics.plugin_fault(&self.name, "panic");
            format!("plugin {} panicked: {message}", self.name)
        } else {
            message
        }
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        unsafe { ((*self.descriptor).destroy)(self.instance) };
    }
}

impl Decoder for NativeInstance {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let req = prost::Message::encode_to_vec(&abi::wire::DecodeRequest::new(body, meta));
        let out = self
            .call(&req)
            .map_err(|(s, m)| DecodeError::Malformed(self.failure(s, m)))?;
        abi::wire::decode_profiles(&out).map_err(DecodeError::Malformed)
    }
}

impl Transform for NativeInstance {
    fn transform(&self, profiles: Vec<Profile>) -> Result<Vec<Profile>, TransformError> {
        let out = self
            .call(&abi::wire::encode_profiles(&profiles))
            .map_err(|(s, m)| TransformError(self.failure(s, m)))?;
        abi::wire::decode_profiles(&out).map_err(TransformError)
    }
}

/// The async component kinds of a native plugin. The plugin's call is synchronous and may block
/// (files, network), so it runs on the blocking pool.
pub struct NativeAsync(pub Arc<NativeInstance>);

impl NativeAsync {
    async fn call(&self, input: Vec<u8>) -> Result<Vec<u8>, String> {
        let instance = self.0.clone();
        tokio::task::spawn_blocking(move || {
            instance
                .call(&input)
                .map_err(|(s, m)| instance.failure(s, m))
        })
        .await
        .map_err(|e| format!("plugin task failed: {e}"))?
    }

    async fn storage<T: serde::de::DeserializeOwned>(
        &self,
        request: StorageRequest,
    ) -> Result<T, StorageError> {
        let out = self
            .call(prost::Message::encode_to_vec(&request))
            .await
            .map_err(decode_error)?;
        decode_response(&out)
    }
}

#[async_trait]
impl SinkExporter for NativeAsync {
    async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
        self.call(abi::wire::encode_profiles(profiles.iter().copied()))
            .await
            .map(drop)
            .map_err(ExportError)
    }
}

#[async_trait]
impl RenderExporter for NativeAsync {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        let request = exporters::RenderRequest::new(tree, ctx);
        let out = self
            .call(prost::Message::encode_to_vec(&request))
            .await
            .map_err(ExportError)?;
        let rendered: exporters::WireRendered = prost::Message::decode(&out[..])
            .map_err(|e| ExportError(format!("plugin {}: bad render output: {e}", self.0.name)))?;
        Ok(rendered.into())
    }
}

#[async_trait]
impl Storage for NativeAsync {
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        self.storage(StorageRequest::write(tenant, &profiles)).await
    }

    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError> {
        self.storage(StorageRequest::select_merge(tenant, query))
            .await
    }

    async fn select_timeline(
        &self,
        tenant: &Tenant,
        query: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        self.storage(StorageRequest::select_timeline(
            tenant, query, step_ns, group_by,
        ))
        .await
    }

    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&kiln_plugin_api::Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        self.storage(StorageRequest::series(tenant, selector, start_ns, end_ns))
            .await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.storage(StorageRequest::flush()).await
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError> {
        self.storage(StorageRequest::enforce_retention(now_ns))
            .await
    }

    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError> {
        self.storage(StorageRequest::delete_service(tenant, service_name))
            .await
    }
}
