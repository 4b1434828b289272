//! Signing in to the UI: `POST /api/login`, `POST /api/logout`, `GET /api/session`, and the
//! session cookie as a credential of the auth layer.
//!
//! CSRF: the cookie is `SameSite=Strict`, and on top of that a state-changing request
//! authenticated by the cookie must name this daemon as its `Origin` (or `Referer`) and carry
//! the session's token in `X-CSRF-Token` (served by `/api/login` and `/api/session`, never in
//! a cookie). Requests with an API key carry no ambient credential and need neither.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::audit;
use super::sessions::{COOKIE, CSRF_HEADER};
use super::{header_tenant, Access, Auth, OverTls, Principal, Refusal, Role};
use crate::api_error::ApiError;
use crate::server::AppState;

/// The `kiln_session` cookie's value, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The host the request was sent to (`Host`, or the authority of an HTTP/2 request).
fn request_host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// `scheme://host[:port]/…` → `host[:port]`.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Whether the request comes from a page of this daemon: its `Origin`, else its `Referer`,
/// names the host it was sent to. A request with neither is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = request_host(headers) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    source
        .and_then(authority)
        .is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Resolves a request whose credential is the session cookie.
pub(super) fn resolve(
    auth: &Auth,
    access: Access,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Principal>, Refusal> {
    let id = cookie(headers).unwrap_or_default();
    let expired = || {
        Refusal::unauthorized(
            "session_expired",
            "the session has ended (expired, signed out, or the daemon restarted): sign in again",
        )
    };
    let session = auth.sessions.get(id).ok_or_else(expired)?;
    let user = match auth.users.get(&session.user) {
        Some(u) if u.password_set_at <= session.opened_at => u,
        // Deleted, or the password was reset since: the session is void.
        _ => {
            auth.sessions.close(id);
            return Err(expired());
        }
    };
    let label = user.tenant_name();
    if !is_safe(method) {
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !same_origin(headers) || !token.is_some_and(|t| session.csrf_matches(t)) {
            return Err(Refusal::forbidden(
                "csrf",
                "a request signed in by cookie must come from this daemon's own pages and carry the X-CSRF-Token of its session",
                &label,
            ));
        }
    }
    let asked = header_tenant(headers)?;
    let tenant = match (&user.tenant, asked) {
        (None, asked) => asked.unwrap_or_default(),
        (Some(own), None) => own.clone(),
        (Some(own), Some(asked)) if asked == *own => asked,
        (Some(own), Some(asked)) => {
            return Err(Refusal::forbidden(
                "tenant_mismatch",
                format!(
                    "user {:?} belongs to tenant {own:?}; X-Scope-OrgID names {asked:?}",
                    user.name
                ),
                &label,
            ))
        }
    };
    let role = user.role.principal_role();
    if role < access.needs_for_user() {
        return Err(Refusal::forbidden(
            "forbidden",
            format!("a {} may not {}", user.role, access.verb()),
            &label,
        ));
    }
    Ok(Some(Principal {
        tenant,
        role,
        key_id: None,
        user: Some(user.name),
        all_tenants: user.tenant.is_none(),
    }))
}

#[derive(Deserialize)]
struct Login {
    #[serde(alias = "user")]
    username: String,
    password: String,
}

/// Where a JSON body went wrong, without quoting it: the value may be a password.
pub fn body_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn secure(auth: &Auth, tls: bool) -> bool {
    auth.config.secure_cookies.unwrap_or(tls)
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let s = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).expect("cookie is ASCII")
}

fn refused(status: StatusCode, cause: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        cause,
        message: message.to_string(),
        retry_after: None,
    }
}

/// What a principal may do in the UI, for `/api/session` and `/api/login`.
fn describe(p: &Principal, role_name: &str, csrf: Option<&str>, auth_on: bool) -> Value {
    json!({
        "auth": auth_on,
        "user": p.user,
        "role": role_name,
        "tenant": if p.all_tenants { None } else { Some(p.tenant.as_str()) },
        "can_write": p.role >= Role::Writer,
        "can_delete": p.role == Role::Admin || (p.user.is_some() && p.role >= Role::Writer),
        "can_admin": p.role == Role::Admin,
        "csrf_token": csrf,
    })
}

/// `POST /api/login` with `{"username", "password"}` as JSON or a form.
pub async fn login(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let tls = request.extensions().get::<OverTls>().is_some();
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body = axum::body::to_bytes(body, 64 << 10)
        .await
        .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
    let auth = &state.auth;
    if !auth.config.enabled {
        return Err(ApiError::bad_request(
            "auth_off",
            "auth is off on this daemon: there is nothing to sign in to",
        ));
    }
    // Login CSRF: a sign-in from another site's page is refused.
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "csrf",
            "sign in from this daemon's own login page",
        ));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let req: Login = if is_form {
        serde_urlencoded::from_bytes(&body).map_err(|_| "not a valid form".to_string())
    } else {
        serde_json::from_slice(&body).map_err(|e| body_error(&e))
    }
    .map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"username\": …, \"password\": …}} as JSON or a form: {e}"),
        )
    })?;
    let ip: Option<IpAddr> = peer;
    if let Some(wait) = auth.login_limiter.blocked(&req.username, ip) {
        state.metrics.auth_refused("login_rate_limited", "");
        return Err(ApiError {
            retry_after: Some(wait),
            ..refused(
                StatusCode::TOO_MANY_REQUESTS,
                "login_rate_limited",
                &format!("too many failed sign-ins for this user or from this address: try again in {wait} s"),
            )
        });
    }
    let users = auth.users.clone();
    let (name, password) = (req.username.clone(), req.password);
    let user = tokio::task::spawn_blocking(move || users.verify(&name, &password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(user) = user else {
        auth.login_limiter.failed(&req.username, ip);
        state.metrics.auth_refused("bad_login", "");
        let addr = ip.map(|i| i.to_string()).unwrap_or_default();
        audit("login.failed", &format!("addr:{addr}"), "", &req.username);
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "wrong user name or password",
        ));
    };
    auth.login_limiter.succeeded(&user.name);
    // Never keep a session id the client came with (fixation): it is closed, a new one opened.
    if let Some(old) = cookie(&headers) {
        auth.sessions.close(old);
    }
    let (id, session) = auth
        .sessions
        .open(&user.name)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    audit(
        "login",
        &format!("user:{}", user.name),
        &user.tenant_name(),
        &user.name,
    );
    let principal = Principal {
        tenant: user.tenant.clone().unwrap_or_default(),
        role: user.role.principal_role(),
        key_id: None,
        user: Some(user.name.clone()),
        all_tenants: user.tenant.is_none(),
    };
    let body = describe(&principal, user.role.as_str(), Some(&session.csrf), true);
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&id, auth.sessions.ttl().as_secs(), secure(auth, tls)),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /api/logout`: ends the session of the cookie (from this daemon's pages only).
pub async fn logout(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let tls = request.extensions().get::<OverTls>().is_some();
    let headers = request.headers();
    if !same_origin(headers) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "csrf",
            "sign out from this daemon's own pages",
        ));
    }
    if let Some(id) = cookie(headers) {
        if let Some(s) = state.auth.sessions.close(id) {
            audit("logout", &format!("user:{}", s.user), "", &s.user);
        }
    }
    let mut response = Json(json!({ "signed_out": true })).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie("", 0, secure(&state.auth, tls)),
    );
    Ok(response)
}

/// `GET /api/session`: who the request is, what the UI may offer them, and the CSRF token of
/// a cookie session.
pub async fn session(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
) -> Json<Value> {
    let auth = &state.auth;
    let csrf = principal
        .user
        .as_ref()
        .and_then(|_| cookie(&headers))
        .and_then(|id| auth.sessions.get(id))
        .map(|s| s.csrf);
    let role = match &principal.user {
        Some(name) => auth
            .users
            .get(name)
            .map_or("viewer", |u| u.role.as_str())
            .to_string(),
        None => principal.role.as_str().to_string(),
    };
    Json(describe(
        &principal,
        &role,
        csrf.as_deref(),
        auth.config.enabled,
    ))
}
