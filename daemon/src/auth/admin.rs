//! The admin API for keys, `/api/admin/apikeys` (GET list, POST create, DELETE `/{id}`
//! revoke), and the audit log every admin action writes.
//!
//! An admin key made for one tenant manages that tenant's keys only; one made for every
//! tenant (and any request with auth off) manages all.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_plugin_api::Tenant;
use serde::Deserialize;
use serde_json::Value;

use super::keys::{self, KeyRecord, KeyStoreError, Role};
use super::Principal;
use crate::api_error::ApiError;
use crate::server::AppState;

/// One audit line (log target `audit`, always at info): who did what. Never a secret.
pub fn audit(action: &str, actor: &str, tenant: &str, subject: &str) {
    tracing::info!(target: "audit", action, actor, tenant, subject, "audit: {action}");
}

/// How a principal appears in audit lines: its key id, or `local` with auth off.
pub fn actor(p: &Principal) -> String {
    p.key_id
        .as_ref()
        .map_or_else(|| "local".to_string(), |id| format!("key:{id}"))
}

impl From<KeyStoreError> for ApiError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::NoSuchKey(_) => ApiError {
                status: StatusCode::NOT_FOUND,
                cause: "no_such_key",
                message: e.to_string(),
                retry_after: None,
            },
            KeyStoreError::Invalid(m) => ApiError::bad_request("bad_key_request", m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn visible(p: &Principal, k: &KeyRecord) -> bool {
    p.all_tenants || k.tenant.as_ref() == Some(&p.tenant)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeyStoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// `GET /api/admin/apikeys`: the keys this admin may see, without secrets.
pub async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Vec<Value>>, ApiError> {
    let store = state.auth.keys.clone();
    let all = blocking(move || store.list()).await?;
    let now = keys::now_s();
    Ok(Json(
        all.iter()
            .filter(|k| visible(&principal, k))
            .map(|k| k.info(now))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    role: Role,
    #[serde(default)]
    tenant: Option<String>,
    /// A duration from now: `90d`, `12h`.
    #[serde(default)]
    expires: Option<String>,
}

/// `POST /api/admin/apikeys {"name", "role", "tenant"?, "expires"?}`: the new key, once.
pub async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: CreateKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"name\": …, \"role\": \"reader|writer|admin\", \"tenant\"?: …, \"expires\"?: \"90d\"}}: {e}"),
        )
    })?;
    let tenant = req
        .tenant
        .map(Tenant::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_tenant", e.to_string()))?;
    let tenant = match (principal.all_tenants, tenant) {
        (true, None) if req.role == Role::Admin => None,
        (true, t) => Some(t.unwrap_or_default()),
        (false, None) => Some(principal.tenant.clone()),
        (false, Some(t)) if t == principal.tenant => Some(t),
        (false, Some(t)) => {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                cause: "tenant_mismatch",
                message: format!(
                    "this admin key manages tenant {:?} only, not {:?}",
                    principal.tenant.as_str(),
                    t.as_str()
                ),
                retry_after: None,
            })
        }
    };
    let expires_at = req.expires.as_deref().map(keys::expiry).transpose()?;
    let store = state.auth.keys.clone();
    let (name, role) = (req.name, req.role);
    let (key, record) = blocking(move || store.create(&name, role, tenant, expires_at)).await?;
    audit(
        "apikey.create",
        &actor(&principal),
        &tenant_name(&record),
        &format!("{} ({:?}, {})", record.id, record.name, record.role),
    );
    let mut out = record.info(keys::now_s());
    out["key"] = Value::String(key);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `DELETE /api/admin/apikeys/{id}`: revokes a key.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.auth.keys.clone();
    let lookup = id.clone();
    let existing = blocking(move || store.list()).await?;
    // A key of another tenant is "not found" to a tenant's admin, like one that does not exist.
    if !existing
        .iter()
        .any(|k| k.id == lookup && visible(&principal, k))
    {
        return Err(KeyStoreError::NoSuchKey(id).into());
    }
    let store = state.auth.keys.clone();
    let record = blocking(move || store.revoke(&id)).await?;
    audit(
        "apikey.revoke",
        &actor(&principal),
        &tenant_name(&record),
        &format!("{} ({:?})", record.id, record.name),
    );
    Ok(Json(record.info(keys::now_s())))
}

/// The tenant of a key as audit lines show it (`*`: every tenant).
pub fn tenant_name(k: &KeyRecord) -> String {
    k.tenant
        .as_ref()
        .map_or_else(|| "*".to_string(), |t| t.to_string())
}
