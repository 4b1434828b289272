//! Wire messages of the storage kind: one request message naming the operation, its tenant,
//! its profiles (for `write`) in prost form, and its other arguments as JSON; responses are
//! JSON.

use serde::{Deserialize, Serialize};

use super::wire;
use crate::selector::{MatchOp, Matcher, Selector, TypeSelector};
use crate::{Profile, Query, Storage, StorageError, Tenant};

#[derive(Clone, PartialEq, prost::Message)]
pub struct StorageRequest {
    /// `write`, `select_merge`, `select_timeline`, `series`, `flush`, `enforce_retention` or
    /// `delete_service`.
    #[prost(string, tag = "1")]
    pub op: String,
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<wire::Profile>,
    #[prost(string, tag = "3")]
    pub args_json: String,
    /// The tenant of `write`, `select_merge`, `select_timeline`, `series` and
    /// `delete_service` (since ABI version 2); empty for the others.
    #[prost(string, tag = "4")]
    pub tenant: String,
}

/// A selector in a form that survives serialization (regexes are rebuilt on arrival).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireSelector {
    pub type_name: Option<String>,
    pub type_id: Option<String>,
    /// `(label, operator, value)`, operators as written: `=`, `!=`, `=~`, `!~`.
    pub matchers: Vec<(String, String, String)>,
}

impl From<&Selector> for WireSelector {
    fn from(s: &Selector) -> Self {
        let (type_name, type_id) = match &s.profile_type {
            Some(TypeSelector::Name(n)) => (Some(n.clone()), None),
            Some(TypeSelector::Id(id)) => (None, Some(id.clone())),
            None => (None, None),
        };
        Self {
            type_name,
            type_id,
            matchers: s
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()))
                .collect(),
        }
    }
}

impl WireSelector {
    pub fn into_selector(self) -> Result<Selector, String> {
        let matchers = self
            .matchers
            .into_iter()
            .map(|(name, op, value)| {
                let op = match op.as_str() {
                    "=" => MatchOp::Eq,
                    "!=" => MatchOp::NotEq,
                    "=~" => MatchOp::Re,
                    "!~" => MatchOp::NotRe,
                    other => return Err(format!("unknown matcher operator {other:?}")),
                };
                Matcher::new(name, op, value).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            profile_type: match (self.type_name, self.type_id) {
                (Some(n), _) => Some(TypeSelector::Name(n)),
                (None, Some(id)) => Some(TypeSelector::Id(id)),
                (None, None) => None,
            },
            matchers,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct QueryArgs {
    selector: WireSelector,
    start_ns: i64,
    end_ns: i64,
    #[serde(default)]
    step_ns: i64,
    #[serde(default)]
    group_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SeriesArgs {
    selector: Option<WireSelector>,
    start_ns: i64,
    end_ns: i64,
}

fn request(op: &str, tenant: Option<&Tenant>, args: impl Serialize) -> StorageRequest {
    StorageRequest {
        op: op.into(),
        profiles: Vec::new(),
        args_json: serde_json::to_string(&args).expect("arguments serialize"),
        tenant: tenant.map(|t| t.to_string()).unwrap_or_default(),
    }
}

fn query_args(q: &Query) -> QueryArgs {
    QueryArgs {
        selector: (&q.selector).into(),
        start_ns: q.start_ns,
        end_ns: q.end_ns,
        step_ns: 0,
        group_by: None,
    }
}

/// Host side: the request of each [`Storage`] method.
impl StorageRequest {
    pub fn write(tenant: &Tenant, profiles: &[Profile]) -> Self {
        Self {
            op: "write".into(),
            profiles: profiles.iter().map(wire::Profile::from).collect(),
            args_json: String::new(),
            tenant: tenant.to_string(),
        }
    }

    pub fn select_merge(tenant: &Tenant, q: &Query) -> Self {
        request("select_merge", Some(tenant), query_args(q))
    }

    pub fn select_timeline(
        tenant: &Tenant,
        q: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Self {
        let mut args = query_args(q);
        args.step_ns = step_ns;
        args.group_by = group_by.map(str::to_string);
        request("select_timeline", Some(tenant), args)
    }

    pub fn series(
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Self {
        request(
            "series",
            Some(tenant),
            SeriesArgs {
                selector: selector.map(WireSelector::from),
                start_ns,
                end_ns,
            },
        )
    }

    pub fn flush() -> Self {
        request("flush", None, ())
    }

    pub fn enforce_retention(now_ns: i64) -> Self {
        request("enforce_retention", None, now_ns)
    }

    pub fn delete_service(tenant: &Tenant, service_name: &str) -> Self {
        request("delete_service", Some(tenant), service_name)
    }
}

/// Host side: a response's JSON.
pub fn decode_response<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Io(format!("storage plugin answered badly: {e}")))
}

/// Host side: a plugin's error message back into the error it was.
pub fn decode_error(message: String) -> StorageError {
    if let Some(m) = message.strip_prefix("corrupt: ") {
        StorageError::Corrupt(m.into())
    } else if let Some(m) = message.strip_prefix("invalid: ") {
        StorageError::Invalid(m.into())
    } else {
        StorageError::Io(message.strip_prefix("io: ").unwrap_or(&message).into())
    }
}

fn encode_error(e: StorageError) -> String {
    match e {
        StorageError::Io(m) => format!("io: {m}"),
        StorageError::Corrupt(m) => format!("corrupt: {m}"),
        StorageError::Invalid(m) => format!("invalid: {m}"),
    }
}

fn json<T: Serialize>(r: Result<T, StorageError>) -> Result<Vec<u8>, String> {
    r.map(|v| serde_json::to_vec(&v).expect("results serialize"))
        .map_err(encode_error)
}

fn args<T: serde::de::DeserializeOwned>(req: &StorageRequest) -> Result<T, String> {
    serde_json::from_str(&req.args_json)
        .map_err(|e| format!("invalid: bad {} arguments: {e}", req.op))
}

/// The request's tenant: required by every operation that reads or writes series.
fn tenant(req: &StorageRequest) -> Result<Tenant, String> {
    Tenant::new(req.tenant.clone()).map_err(|e| format!("invalid: {} request: {e}", req.op))
}

fn query(a: QueryArgs) -> Result<Query, String> {
    Ok(Query {
        selector: a
            .selector
            .into_selector()
            .map_err(|e| format!("invalid: {e}"))?,
        start_ns: a.start_ns,
        end_ns: a.end_ns,
    })
}

/// Plugin side: runs one request against `storage`.
pub fn serve<S: Storage>(storage: &S, input: &[u8]) -> Result<Vec<u8>, String> {
    let req: StorageRequest =
        prost::Message::decode(input).map_err(|e| format!("invalid: bad StorageRequest: {e}"))?;
    match req.op.as_str() {
        "write" => {
            let t = tenant(&req)?;
            let profiles = req.profiles.into_iter().map(Profile::from).collect();
            json(super::block_on(storage.write(&t, profiles)))
        }
        "select_merge" => {
            let t = tenant(&req)?;
            let q = query(args(&req)?)?;
            json(super::block_on(storage.select_merge(&t, &q)))
        }
        "select_timeline" => {
            let t = tenant(&req)?;
            let a: QueryArgs = args(&req)?;
            let (step, group_by) = (a.step_ns, a.group_by.clone());
            let q = query(a)?;
            json(super::block_on(storage.select_timeline(
                &t,
                &q,
                step,
                group_by.as_deref(),
            )))
        }
        "series" => {
            let t = tenant(&req)?;
            let a: SeriesArgs = args(&req)?;
            let selector = a
                .selector
                .map(WireSelector::into_selector)
                .transpose()
                .map_err(|e| format!("invalid: {e}"))?;
            json(super::block_on(storage.series(
                &t,
                selector.as_ref(),
                a.start_ns,
                a.end_ns,
            )))
        }
        "flush" => json(super::block_on(storage.flush())),
        "enforce_retention" => {
            let now: i64 = args(&req)?;
            json(super::block_on(storage.enforce_retention(now)))
        }
        "delete_service" => {
            let t = tenant(&req)?;
            let service: String = args(&req)?;
            json(super::block_on(storage.delete_service(&t, &service)))
        }
        other => Err(format!("invalid: unknown storage operation {other:?}")),
    }
}
