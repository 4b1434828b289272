//! The native plugin ABI: C only, stable across compilers.
//!
//! A plugin is a shared library exporting one symbol, [`ENTRY_SYMBOL`], a function returning a
//! pointer to a static [`Descriptor`]: magic bytes, [`ABI_VERSION`], kind, name, version, and four
//! `extern "C"` functions over byte buffers. Inputs and outputs are prost-encoded messages of the
//! [`wire`] module; no Rust type and no allocator crosses the boundary — output buffers are
//! allocated by the plugin and handed back to its own `free`. Panics are caught inside the plugin
//! and returned as [`STATUS_PANIC`].
//!
//! Plugin authors do not write any of this: [`export_plugin!`](crate::export_plugin) generates it
//! from an ordinary [`Decoder`](crate::Decoder), [`Transform`](crate::Transform),
//! [`SinkExporter`](crate::SinkExporter), [`RenderExporter`](crate::RenderExporter) or
//! [`Storage`](crate::Storage) impl.

pub mod exporters;
pub mod storage;

use std::ffi::{c_char, c_void};

/// Bumped on any incompatible change; the host refuses other versions, except that it still
/// loads plugins of a kind whose messages did not change since (see [`min_abi_version`]).
///
/// Version 2: storage requests carry the tenant ([`storage::StorageRequest::tenant`]).
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI version the host loads for plugins of `kind`: storage plugins must know
/// tenants (version 2); the messages of the other kinds are unchanged since version 1.
pub const fn min_abi_version(kind: u32) -> u32 {
    if kind == KIND_STORAGE {
        2
    } else {
        1
    }
}
/// The one symbol a plugin exports.
pub const ENTRY_SYMBOL: &str = "kiln_plugin_entry";
/// First bytes of every descriptor.
pub const MAGIC: [u8; 8] = *b"KILNPLG\0";

pub const KIND_DECODER: u32 = 1;
pub const KIND_TRANSFORM: u32 = 2;
pub const KIND_SINK: u32 = 3;
pub const KIND_RENDER: u32 = 4;
pub const KIND_STORAGE: u32 = 5;

pub const STATUS_OK: i32 = 0;
/// The output buffer holds a UTF-8 error message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the output buffer holds the panic message.
pub const STATUS_PANIC: i32 = 2;

/// A byte buffer owned by whoever allocated it; returned to the plugin's `free`.
#[repr(C)]
pub struct ByteBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl ByteBuf {
    pub fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hands a vector over (plugin side).
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// The bytes, valid until the buffer is freed.
    ///
    /// # Safety
    /// `ptr`/`len` must describe a live allocation (or be null/0).
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// What the entry symbol returns.
#[repr(C)]
pub struct Descriptor {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub kind: u32,
    /// NUL-terminated, static.
    pub name: *const c_char,
    /// NUL-terminated, static.
    pub version: *const c_char,
    /// Builds an instance from JSON config; on error returns non-zero with a message in `err`.
    pub create: unsafe extern "C" fn(
        config: *const u8,
        len: usize,
        instance: *mut *mut c_void,
        err: *mut ByteBuf,
    ) -> i32,
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Decoder: input [`wire::DecodeRequest`], output [`wire::Profiles`].
    /// Transform: input and output [`wire::Profiles`].
    /// Sink: input [`wire::Profiles`], empty output.
    /// Render: input [`exporters::RenderRequest`], output [`exporters::WireRendered`].
    /// Storage: input [`storage::StorageRequest`], output JSON of the operation's result.
    pub call: unsafe extern "C" fn(
        instance: *mut c_void,
        input: *const u8,
        len: usize,
        out: *mut ByteBuf,
    ) -> i32,
    pub free: unsafe extern "C" fn(buf: ByteBuf),
}

// The descriptor is immutable static data.
unsafe impl Sync for Descriptor {}

/// The signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const Descriptor;

/// Frees a buffer allocated by [`ByteBuf::from_vec`] (plugin side).
///
/// # Safety
/// `buf` must come from `ByteBuf::from_vec` in the same library.
pub unsafe extern "C" fn free_buf(buf: ByteBuf) {
    if !buf.ptr.is_null() {
        drop(Vec::from_raw_parts(buf.ptr, buf.len, buf.cap));
    }
}

/// Runs `f`, turning a panic into [`STATUS_PANIC`] with its message (plugin side), and writes
/// the output or message into `out`.
///
/// # Safety
/// `out` must be null or valid for a write of one `ByteBuf`.
pub unsafe fn guard(out: *mut ByteBuf, f: impl FnOnce() -> Result<Vec<u8>, String>) -> i32 {
    let (status, bytes) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => (STATUS_OK, v),
        Ok(Err(e)) => (STATUS_ERROR, e.into_bytes()),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            (STATUS_PANIC, msg.into_bytes())
        }
    };
    if !out.is_null() {
        out.write(ByteBuf::from_vec(bytes));
    }
    status
}

/// The messages crossing the boundary, mirrors of the model in prost form.
pub mod wire {
    use crate::{labels::Labels, model, Aggregation, IngestMeta};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProfileType {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub metric: String,
        #[prost(string, tag = "3")]
        pub sample_type: String,
        #[prost(string, tag = "4")]
        pub sample_unit: String,
        #[prost(string, tag = "5")]
        pub period_type: String,
        #[prost(string, tag = "6")]
        pub period_unit: String,
        /// 0 sum, 1 average.
        #[prost(uint32, tag = "7")]
        pub aggregation: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Frame {
        #[prost(string, tag = "1")]
        pub function: String,
        #[prost(string, tag = "2")]
        pub file: String,
        #[prost(uint32, tag = "3")]
        pub line: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint32, repeated, tag = "1")]
        pub stack: Vec<u32>,
        #[prost(int64, tag = "2")]
        pub value: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, optional, tag = "2")]
        pub profile_type: Option<ProfileType>,
        #[prost(int64, tag = "3")]
        pub start_ns: i64,
        #[prost(int64, tag = "4")]
        pub end_ns: i64,
        #[prost(message, repeated, tag = "5")]
        pub frames: Vec<Frame>,
        #[prost(message, repeated, tag = "6")]
        pub samples: Vec<Sample>,
        #[prost(string, tag = "7")]
        pub spy_name: String,
        #[prost(uint32, tag = "8")]
        pub sample_rate: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profiles {
        #[prost(message, repeated, tag = "1")]
        pub profiles: Vec<Profile>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DecodeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub body: Vec<u8>,
        #[prost(string, optional, tag = "2")]
        pub format: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub content_type: Option<String>,
        #[prost(string, tag = "4")]
        pub app: String,
        #[prost(string, optional, tag = "5")]
        pub type_suffix: Option<String>,
        #[prost(message, repeated, tag = "6")]
        pub labels: Vec<Label>,
        #[prost(int64, tag = "7")]
        pub start_ns: i64,
        #[prost(int64, tag = "8")]
        pub end_ns: i64,
        #[prost(uint32, optional, tag = "9")]
        pub sample_rate: Option<u32>,
        #[prost(string, tag = "10")]
        pub spy_name: String,
    }

    fn labels_to(l: &Labels) -> Vec<Label> {
        l.iter()
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .collect()
    }

    fn labels_from(l: Vec<Label>) -> Labels {
        Labels::from_pairs(l.into_iter().map(|x| (x.name, x.value)))
    }

    impl From<&model::Profile> for Profile {
        fn from(p: &model::Profile) -> Self {
            let t = &p.profile_type;
            Self {
                labels: labels_to(&p.labels),
                profile_type: Some(ProfileType {
                    name: t.name.clone(),
                    metric: t.metric.clone(),
                    sample_type: t.sample_type.clone(),
                    sample_unit: t.sample_unit.clone(),
                    period_type: t.period_type.clone(),
                    period_unit: t.period_unit.clone(),
                    aggregation: u32::from(t.aggregation == Aggregation::Average),
                }),
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                frames: p
                    .frames
                    .iter()
                    .map(|f| Frame {
                        function: f.function.clone(),
                        file: f.file.clone(),
                        line: f.line,
                    })
                    .collect(),
                samples: p
                    .samples
                    .iter()
                    .map(|s| Sample {
                        stack: s.stack.clone(),
                        value: s.value,
                    })
                    .collect(),
                spy_name: p.meta.spy_name.clone(),
                sample_rate: p.meta.sample_rate,
            }
        }
    }

    impl From<Profile> for model::Profile {
        fn from(p: Profile) -> Self {
            let t = p.profile_type.unwrap_or_default();
            Self {
                labels: labels_from(p.labels),
                profile_type: model::ProfileType {
                    name: t.name,
                    metric: t.metric,
                    sample_type: t.sample_type,
                    sample_unit: t.sample_unit,
                    period_type: t.period_type,
                    period_unit: t.period_unit,
                    aggregation: if t.aggregation == 1 {
                        Aggregation::Average
                    } else {
                        Aggregation::Sum
                    },
                },
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                frames: p
                    .frames
                    .into_iter()
                    .map(|f| model::Frame {
                        function: f.function,
                        file: f.file,
                        line: f.line,
                        ..Default::default()
                    })
                    .collect(),
                samples: p
                    .samples
                    .into_iter()
                    .map(|s| model::Sample {
                        stack: s.stack,
                        value: s.value,
                    })
                    .collect(),
                meta: model::ProfileMeta {
                    spy_name: p.spy_name,
                    sample_rate: p.sample_rate,
                },
            }
        }
    }

    impl DecodeRequest {
        pub fn new(body: &[u8], m: &IngestMeta) -> Self {
            Self {
                body: body.to_vec(),
                format: m.format.clone(),
                content_type: m.content_type.clone(),
                app: m.app.clone(),
                type_suffix: m.type_suffix.clone(),
                labels: labels_to(&m.labels),
                start_ns: m.start_ns,
                end_ns: m.end_ns,
                sample_rate: m.sample_rate,
                spy_name: m.spy_name.clone(),
            }
        }

        /// Splits into the body and the request metadata.
        pub fn into_parts(self) -> (Vec<u8>, IngestMeta) {
            let meta = IngestMeta {
                format: self.format,
                content_type: self.content_type,
                app: self.app,
                type_suffix: self.type_suffix,
                labels: labels_from(self.labels),
                start_ns: self.start_ns,
                end_ns: self.end_ns,
                sample_rate: self.sample_rate,
                spy_name: self.spy_name,
                units: None,
                aggregation: None,
            };
            (self.body, meta)
        }
    }

    pub fn encode_profiles<'a>(profiles: impl IntoIterator<Item = &'a model::Profile>) -> Vec<u8> {
        prost::Message::encode_to_vec(&Profiles {
            profiles: profiles.into_iter().map(Profile::from).collect(),
        })
    }

    pub fn decode_profiles(bytes: &[u8]) -> Result<Vec<model::Profile>, String> {
        let p: Profiles =
            prost::Message::decode(bytes).map_err(|e| format!("bad Profiles message: {e}"))?;
        Ok(p.profiles.into_iter().map(model::Profile::from).collect())
    }
}

/// Drives a future to completion on this thread (plugin side). Plugin calls are synchronous:
/// the host runs them on its blocking pool, so waiting here blocks nothing else.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Builds a plugin component from its JSON configuration.
pub trait FromConfig: Sized {
    fn from_config(json: &str) -> Result<Self, String>;
}

/// Exports a component as a native plugin:
///
/// ```ignore
/// kiln_plugin_api::export_plugin!(decoder, "perf-script", "0.1.0", PerfScriptDecoder);
/// ```
///
/// The kind is one of `decoder`, `transform`, `sink`, `render` or `storage`; the type implements
/// the matching trait and [`FromConfig`]. The async traits (sink, render, storage) are driven to
/// completion on the calling thread by [`block_on`]: a plugin that needs an async runtime of its
/// own starts it inside its implementation.
#[macro_export]
macro_rules! export_plugin {
    (decoder, $name:literal, $version:literal, $ty:ty) => {
        $crate::export_plugin!(@common $crate::abi::KIND_DECODER, $name, $version, $ty, |inst: &$ty, input: &[u8]| {
            let req: $crate::abi::wire::DecodeRequest =
                $crate::__prost::Message::decode(input).map_err(|e| format!("bad DecodeRequest: {e}"))?;
            let (body, meta) = req.into_parts();
            let profiles = $crate::Decoder::decode(inst, &body, &meta).map_err(|e| e.to_string())?;
            Ok($crate::abi::wire::encode_profiles(&profiles))
        });
    };
    (transform, $name:literal, $version:literal, $ty:ty) => {
        $crate::export_plugin!(@common $crate::abi::KIND_TRANSFORM, $name, $version, $ty, |inst: &$ty, input: &[u8]| {
            let profiles = $crate::abi::wire::decode_profiles(input)?;
            let out = $crate::Transform::transform(inst, profiles).map_err(|e| e.to_string())?;
            Ok($crate::abi::wire::encode_profiles(&out))
        });
    };
    (sink, $name:literal, $version:literal, $ty:ty) => {
        $crate::export_plugin!(@common $crate::abi::KIND_SINK, $name, $version, $ty, |inst: &$ty, input: &[u8]| {
            let profiles = $crate::abi::wire::decode_profiles(input)?;
            let profiles: Vec<&$crate::Profile> = profiles.iter().collect();
            $crate::abi::block_on($crate::SinkExporter::export(inst, &profiles)).map_err(|e| e.to_string())?;
            Ok(Vec::new())
        });
    };
    (render, $name:literal, $version:literal, $ty:ty) => {
        $crate::export_plugin!(@common $crate::abi::KIND_RENDER, $name, $version, $ty, |inst: &$ty, input: &[u8]| {
            $crate::abi::exporters::serve_render(inst, input)
        });
    };
    (storage, $name:literal, $version:literal, $ty:ty) => {
        $crate::export_plugin!(@common $crate::abi::KIND_STORAGE, $name, $version, $ty, |inst: &$ty, input: &[u8]| {
            $crate::abi::storage::serve(inst, input)
        });
    };
    (@common $kind:expr, $name:literal, $version:literal, $ty:ty, $call:expr) => {
        unsafe extern "C" fn __kiln_create(
            config: *const u8,
            len: usize,
            instance: *mut *mut ::std::ffi::c_void,
            err: *mut $crate::abi::ByteBuf,
        ) -> i32 {
            let mut built: Option<Box<$ty>> = None;
            let status = $crate::abi::guard(err, || {
                let bytes = if config.is_null() { &[][..] } else { ::std::slice::from_raw_parts(config, len) };
                let json = ::std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                built = Some(Box::new(<$ty as $crate::abi::FromConfig>::from_config(json)?));
                Ok(Vec::new())
            });
            if let Some(b) = built {
                *instance = Box::into_raw(b) as *mut ::std::ffi::c_void;
            }
            status
        }
        unsafe extern "C" fn __kiln_destroy(instance: *mut ::std::ffi::c_void) {
            if !instance.is_null() {
                drop(Box::from_raw(instance as *mut $ty));
            }
        }
        unsafe extern "C" fn __kiln_call(
            instance: *mut ::std::ffi::c_void,
            input: *const u8,
            len: usize,
            out: *mut $crate::abi::ByteBuf,
        ) -> i32 {
            let inst: &$ty = &*(instance as *const $ty);
            let input = if input.is_null() { &[][..] } else { ::std::slice::from_raw_parts(input, len) };
            $crate::abi::guard(out, || ($call)(inst, input))
        }
        static __KILN_DESCRIPTOR: $crate::abi::Descriptor = $crate::abi::Descriptor {
            magic: $crate::abi::MAGIC,
            abi_version: $crate::abi::ABI_VERSION,
            kind: $kind,
            name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
            version: concat!($version, "\0").as_ptr() as *const ::std::ffi::c_char,
            create: __kiln_create,
            destroy: __kiln_destroy,
            call: __kiln_call,
            free: $crate::abi::free_buf,
        };
        #[no_mangle]
        pub extern "C" fn kiln_plugin_entry() -> *const $crate::abi::Descriptor {
            &__KILN_DESCRIPTOR
        }
    };
}
