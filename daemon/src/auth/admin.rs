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
use super::users::{UserRecord, UserRole, UserStoreError};
use super::Principal;
use crate::api_error::ApiError;
use crate::server::AppState;

/// One audit line (log target `audit`, always at info): who did what. Never a secret.
pub fn audit(action: &str, actor: &str, tenant: &str, subject: &str) {
    tracing::info!(target: "audit", action, actor, tenant, subject, "audit: {action}");
}

/// How a principal appears in audit lines: its key id, its user, or `local` with auth off.
pub fn actor(p: &Principal) -> String {
    match (&p.key_id, &p.user) {
        (Some(id), _) => format!("key:{id}"),
        (None, Some(user)) => format!("user:{user}"),
        (None, None) => "local".to_string(),
    }
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

impl From<UserStoreError> for ApiError {
    fn from(e: UserStoreError) -> Self {
        let status = match &e {
            UserStoreError::NoSuchUser(_) => StatusCode::NOT_FOUND,
            UserStoreError::Exists(_) => StatusCode::CONFLICT,
            UserStoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => return ApiError::internal(e.to_string()),
        };
        let cause = match status {
            StatusCode::NOT_FOUND => "no_such_user",
            StatusCode::CONFLICT => "user_exists",
            _ => "bad_user_request",
        };
        ApiError {
            status,
            cause,
            message: e.to_string(),
            retry_after: None,
        }
    }
}

async fn blocking_users<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UserStoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

fn user_visible(p: &Principal, u: &UserRecord) -> bool {
    p.all_tenants || u.tenant.as_ref() == Some(&p.tenant)
}

/// A user this admin may manage, else "not found" (another tenant's users do not exist for it).
async fn managed_user(state: &AppState, principal: &Principal, name: &str) -> Result<(), ApiError> {
    let store = state.auth.users.clone();
    let all = blocking_users(move || store.list()).await?;
    if all
        .iter()
        .any(|u| u.name == name && user_visible(principal, u))
    {
        Ok(())
    } else {
        Err(UserStoreError::NoSuchUser(name.to_string()).into())
    }
}

/// `GET /api/admin/users`: the users this admin may see, without hashes.
pub async fn list_users(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Vec<Value>>, ApiError> {
    let store = state.auth.users.clone();
    let all = blocking_users(move || store.list()).await?;
    Ok(Json(
        all.iter()
            .filter(|u| user_visible(&principal, u))
            .map(UserRecord::info)
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    name: String,
    role: UserRole,
    #[serde(default)]
    tenant: Option<String>,
    password: String,
}

/// `POST /api/admin/users {"name", "role", "tenant"?, "password"}`.
pub async fn add_user(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: AddUser = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"name\": …, \"role\": \"viewer|editor|admin\", \"tenant\"?: …, \"password\": …}}: {}", super::session::body_error(&e)),
        )
    })?;
    let tenant = req
        .tenant
        .map(Tenant::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_tenant", e.to_string()))?;
    let tenant = match (principal.all_tenants, tenant) {
        (true, None) if req.role == UserRole::Admin => None,
        (true, t) => Some(t.unwrap_or_default()),
        (false, None) => Some(principal.tenant.clone()),
        (false, Some(t)) if t == principal.tenant => Some(t),
        (false, Some(t)) => {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                cause: "tenant_mismatch",
                message: format!(
                    "this admin manages tenant {:?} only, not {:?}",
                    principal.tenant.as_str(),
                    t.as_str()
                ),
                retry_after: None,
            })
        }
    };
    let store = state.auth.users.clone();
    let (name, role, password) = (req.name, req.role, req.password);
    let record = blocking_users(move || store.add(&name, &password, role, tenant)).await?;
    audit(
        "user.add",
        &actor(&principal),
        &record.tenant_name(),
        &format!("{} ({})", record.name, record.role),
    );
    Ok((StatusCode::CREATED, Json(record.info())))
}

/// `DELETE /api/admin/users/{name}`: the user's sessions end with it.
pub async fn delete_user(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    managed_user(&state, &principal, &name).await?;
    let store = state.auth.users.clone();
    let record = blocking_users(move || store.delete(&name)).await?;
    audit(
        "user.delete",
        &actor(&principal),
        &record.tenant_name(),
        &record.name,
    );
    Ok(Json(record.info()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    password: String,
}

/// `POST /api/admin/users/{name}/password {"password"}`: the user's sessions end.
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ResetPassword = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!(
                "expected {{\"password\": …}}: {}",
                super::session::body_error(&e)
            ),
        )
    })?;
    managed_user(&state, &principal, &name).await?;
    let store = state.auth.users.clone();
    let record = blocking_users(move || store.reset_password(&name, &req.password)).await?;
    audit(
        "user.reset_password",
        &actor(&principal),
        &record.tenant_name(),
        &record.name,
    );
    Ok(Json(record.info()))
}
