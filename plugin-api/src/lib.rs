//! # kiln-plugin-api
//!
//! The contract every Kiln component is written against, and nothing else: no daemon code lives
//! here. Built-in components (the crates under `plugins/`) implement these traits exactly as an
//! external plugin would.
//!
//! * [`model`]: series labels, profile types, profiles made of interned frames and stack
//!   samples, and the merged [`Tree`] a query returns.
//! * [`selector`]: label selectors (`app.cpu{env="prod",region=~"eu-.*"}`) and their matchers.
//! * [`tenant`]: the validated [`Tenant`] id every stored series belongs to.
//! * [`component`]: the async traits for the four component kinds — [`Decoder`], [`Transform`],
//!   [`Storage`] and exporters ([`SinkExporter`], [`RenderExporter`]).
//!
//! Data flows `bytes → Decoder → Vec<Profile> → Transform* → Storage (+ SinkExporter*)`; queries
//! flow `Selector + time range → Storage → Tree → RenderExporter → bytes`.

pub mod abi;
pub mod component;
pub mod labels;
pub mod levels;
pub mod model;
pub mod multipart;
pub mod selector;
pub mod skipped;
pub mod tenant;
pub mod tree;
pub mod varint;

pub use component::*;
pub use labels::{Labels, NameParseError, PyroscopeName};
pub use model::*;
pub use selector::{MatchOp, Matcher, Selector, SelectorParseError};
pub use tenant::{Tenant, TenantError, DEFAULT_TENANT};
pub use tree::{FunctionTotal, SourceLine, Tree, TreeBuilder, TreeNode};

#[doc(hidden)]
pub use prost as __prost;
