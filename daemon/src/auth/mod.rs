//! Authentication and tenancy: one layer in front of every route.
//!
//! [`layer`] resolves each request to a [`Principal`] (tenant, role, key id) and puts it in
//! the request's extensions, or answers 401/403/400 itself with a body saying why. Handlers
//! take the principal as an extractor and pass its tenant down; none of them looks at
//! credentials.
//!
//! * Auth off (the default): the tenant comes from `X-Scope-OrgID` (default `anonymous`), as
//!   in Grafana Pyroscope's multi-tenant mode, and every request may do everything — but a
//!   daemon listening on a non-loopback address refuses other hosts unless
//!   `auth.allow_unauthenticated` says otherwise.
//! * Auth on: an API key as `Authorization: Bearer KEY`, or HTTP Basic with the key as the
//!   password. The tenant is the key's; `X-Scope-OrgID` can only repeat it (an admin key made
//!   for every tenant picks one with it). Or, from the UI, the `kiln_session` cookie of a
//!   signed-in user (see [`session`]); a state-changing request made with the cookie must
//!   carry the session's CSRF token and come from this daemon's own origin.

pub mod admin;
pub mod cli;
pub mod keys;
pub mod session;
pub mod sessions;
pub mod user_cli;
pub mod users;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_plugin_api::Tenant;

pub use keys::{KeyStore, Role, Verdict};

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::server::AppState;

/// The header that names a tenant (Grafana Pyroscope, Cortex, Loki, Mimir).
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// Who is asking, as the auth layer resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every read and write of the request is confined to.
    pub tenant: Tenant,
    pub role: Role,
    /// The API key's id (never the key); `None` with auth off or for a user.
    pub key_id: Option<String>,
    /// The signed-in user, when the credential is a session cookie.
    pub user: Option<String>,
    /// May act for any tenant: auth off, or an admin key made without `--tenant`.
    pub all_tenants: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            // Only a route added without the layer gets here: a bug, not a client error.
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route is not behind the auth layer",
            )
                .into_response()
        })
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/healthz` and the UI's static files.
    Open,
    /// `/metrics`: a reader, unless `auth.open_metrics`.
    Metrics,
    Read,
    Write,
    /// Deleting data: an admin key, or an editor (or admin) user.
    Delete,
    Admin,
}

impl Access {
    /// The access `method path` needs. Anything not listed is a read, so an unknown path
    /// answers 401 rather than telling who asks which routes exist.
    pub fn of(method: &Method, path: &str) -> Self {
        match path {
            "/healthz" | "/" => Access::Open,
            p if p.starts_with("/ui/") => Access::Open,
            "/metrics" => Access::Metrics,
            "/api/login" | "/api/logout" => Access::Open,
            "/ingest"
            | "/pyroscope/ingest"
            | "/push.v1.PusherService/Push"
            | "/v1development/profiles" => Access::Write,
            "/api/apps" if method == Method::DELETE => Access::Delete,
            "/-/reload" => Access::Admin,
            p if p.starts_with("/api/admin/") || p == "/api/admin" => Access::Admin,
            _ => Access::Read,
        }
    }

    fn needs(self) -> Role {
        match self {
            Access::Open | Access::Metrics | Access::Read => Role::Reader,
            Access::Write => Role::Writer,
            Access::Delete | Access::Admin => Role::Admin,
        }
    }

    /// What a user's role must be: an editor (a writer) may delete in its tenant.
    fn needs_for_user(self) -> Role {
        match self {
            Access::Delete => Role::Writer,
            other => other.needs(),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Access::Open | Access::Metrics | Access::Read => "read",
            Access::Write => "push profiles",
            Access::Delete => "delete",
            Access::Admin => "do this",
        }
    }
}

/// Why the layer answered instead of the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Machine-readable cause: the `cause` label of `kiln_auth_refused_total`.
    pub cause: &'static str,
    pub message: String,
    /// The tenant of the credential, when one was recognised.
    pub tenant: String,
}

impl Refusal {
    fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            cause,
            message: message.into(),
            tenant: String::new(),
        }
    }

    fn unauthorized(cause: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, cause, message)
    }

    fn forbidden(cause: &'static str, message: impl Into<String>, tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            ..Self::new(StatusCode::FORBIDDEN, cause, message)
        }
    }

    /// The response: a Connect error on the Connect API, the HTTP API's JSON error elsewhere.
    pub fn into_response_for(self, path: &str) -> Response {
        let body = if path.starts_with("/push.v1.") || path.starts_with("/querier.v1.") {
            let code = match self.status {
                StatusCode::UNAUTHORIZED => "unauthenticated",
                StatusCode::FORBIDDEN => "permission_denied",
                _ => "invalid_argument",
            };
            serde_json::json!({ "code": code, "message": self.message })
        } else {
            serde_json::json!({ "error": self.cause, "message": self.message })
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kiln\""),
            );
        }
        response
    }
}

/// The auth settings, key and user stores and sessions of a running daemon.
pub struct Auth {
    pub config: AuthConfig,
    /// The daemon listens on loopback only: with auth off, every peer is this host.
    pub loopback_only: bool,
    pub listen: String,
    pub keys: Arc<KeyStore>,
    pub users: Arc<users::UserStore>,
    pub sessions: sessions::Sessions,
    pub login_limiter: sessions::LoginLimiter,
}

impl Auth {
    /// Opens the stores of data directory `data_dir`.
    pub fn open(
        config: AuthConfig,
        listen: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let keys = KeyStore::open(data_dir).context("opening the API key store")?;
        let users = users::UserStore::open(data_dir).context("opening the user store")?;
        Ok(Self {
            sessions: sessions::Sessions::new(config.session_ttl),
            login_limiter: sessions::LoginLimiter::new(
                config.login_failures_per_minute,
                std::time::Duration::from_secs(60),
            ),
            loopback_only: is_loopback_listen(listen),
            listen: listen.to_string(),
            keys: Arc::new(keys),
            users: Arc::new(users),
            config,
        })
    }
}

/// A request extension the listener adds to requests that came over TLS: session cookies
/// are then marked `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Whether `listen` (`host:port`) resolves to loopback addresses only.
pub fn is_loopback_listen(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen
            .to_socket_addrs()
            .map(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
            })
            .unwrap_or(false),
    }
}

/// A credential as presented, before it is looked up.
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    None,
    Key(String),
    Malformed(&'static str),
}

fn credential(headers: &HeaderMap) -> Credential {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credential::None;
    };
    if values.next().is_some() {
        return Credential::Malformed("more than one Authorization header");
    }
    let Ok(value) = value.to_str() else {
        return Credential::Malformed("the Authorization header is not ASCII");
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.contains(' ') {
            return Credential::Malformed("expected `Authorization: Bearer <API key>`");
        }
        Credential::Key(rest.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credential::Malformed("the Basic credentials are not base64");
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Credential::Malformed("the Basic credentials are not UTF-8");
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return Credential::Malformed("the Basic credentials have no `user:password` colon");
        };
        // The key is the password (Grafana Cloud style); the user name is free. Some clients
        // can only set a user: accept the key there when the password is empty.
        match (user, password) {
            (_, p) if !p.is_empty() => Credential::Key(p.to_string()),
            (u, "") if !u.is_empty() => Credential::Key(u.to_string()),
            _ => Credential::Malformed("the Basic credentials are empty"),
        }
    } else {
        Credential::Malformed(
            "use `Authorization: Bearer <API key>` or HTTP Basic with the key as the password",
        )
    }
}

/// The tenant `X-Scope-OrgID` names, if any.
fn header_tenant(headers: &HeaderMap) -> Result<Option<Tenant>, Refusal> {
    let Some(v) = headers.get(TENANT_HEADER) else {
        return Ok(None);
    };
    let bad = |why: String| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_tenant",
            format!("X-Scope-OrgID: {why}"),
        )
    };
    let v = v
        .to_str()
        .map_err(|_| bad("the value is not ASCII".into()))?;
    Tenant::new(v.trim())
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

const HOW_TO_ENABLE: &str = "turn auth on ([auth] enabled = true, KILN_AUTH_ENABLED=true or --auth) and create API keys with `kiln admin apikey create`, or set auth.allow_unauthenticated = true to let every host in without credentials";

/// Resolves a request. `peer` is the client's address when known.
pub fn resolve(
    auth: &Auth,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Option<Principal>, Refusal> {
    let access = Access::of(method, path);
    if access == Access::Open {
        return Ok(None);
    }
    if !auth.config.enabled {
        let remote = !auth.loopback_only
            && !auth.config.allow_unauthenticated
            && !peer.is_some_and(|p| p.is_loopback());
        if remote {
            return Err(Refusal::forbidden(
                "remote_unauthenticated",
                format!(
                    "this daemon listens on {} with auth off and answers only this host: {HOW_TO_ENABLE}",
                    auth.listen
                ),
                "",
            ));
        }
        return Ok(Some(Principal {
            tenant: header_tenant(headers)?.unwrap_or_default(),
            role: Role::Admin,
            key_id: None,
            user: None,
            all_tenants: true,
        }));
    }
    if access == Access::Metrics && auth.config.open_metrics {
        return Ok(None);
    }
    let key = match credential(headers) {
        Credential::Key(k) => k,
        Credential::None if session::cookie(headers).is_some() => {
            return session::resolve(auth, access, method, headers);
        }
        Credential::None => {
            return Err(Refusal::unauthorized(
                "unauthenticated",
                "no credentials: send an API key as `Authorization: Bearer <key>` or as the password of HTTP Basic auth",
            ))
        }
        Credential::Malformed(why) => {
            return Err(Refusal::unauthorized(
                "malformed_credentials",
                format!("malformed Authorization header: {why}"),
            ))
        }
    };
    let record = match auth.keys.verify(&key) {
        Verdict::Valid(k) => k,
        Verdict::Unknown => return Err(Refusal::unauthorized(
            "unknown_key",
            "the API key is not known to this daemon (mistyped, or from another data directory)",
        )),
        Verdict::Revoked(k) => {
            return Err(Refusal {
                tenant: tenant_label(&k),
                ..Refusal::unauthorized(
                    "revoked_key",
                    format!("the API key {} ({:?}) was revoked", k.id, k.name),
                )
            })
        }
        Verdict::Expired(k) => {
            return Err(Refusal {
                tenant: tenant_label(&k),
                ..Refusal::unauthorized(
                    "expired_key",
                    format!("the API key {} ({:?}) has expired", k.id, k.name),
                )
            })
        }
    };
    let label = tenant_label(&record);
    let asked = header_tenant(headers).map_err(|r| Refusal {
        tenant: label.clone(),
        ..r
    })?;
    let tenant = match (&record.tenant, asked) {
        (None, asked) => asked.unwrap_or_default(),
        (Some(own), None) => own.clone(),
        (Some(own), Some(asked)) if asked == *own => asked,
        (Some(own), Some(asked)) => {
            return Err(Refusal::forbidden(
                "tenant_mismatch",
                format!("this API key belongs to tenant {own:?}; X-Scope-OrgID names {asked:?}"),
                &label,
            ))
        }
    };
    if record.role < access.needs() {
        let needs = access.needs();
        return Err(Refusal::forbidden(
            "forbidden",
            format!(
                "a {} key may not {}; that needs {} {needs} key",
                record.role,
                access.verb(),
                if needs == Role::Admin { "an" } else { "a" },
            ),
            &label,
        ));
    }
    Ok(Some(Principal {
        tenant,
        role: record.role,
        all_tenants: record.tenant.is_none(),
        key_id: Some(record.id),
        user: None,
    }))
}

fn tenant_label(k: &keys::KeyRecord) -> String {
    k.tenant
        .as_ref()
        .map_or_else(|| "*".to_string(), |t| t.to_string())
}

/// The tower layer (`axum::middleware::from_fn_with_state`) in front of every route.
pub async fn layer(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let path = req.uri().path().to_string();
    match resolve(&state.auth, req.method(), &path, req.headers(), peer) {
        Ok(principal) => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
        Err(refusal) => {
            count(&state.metrics, &refusal);
            tracing::debug!(cause = refusal.cause, %path, "request refused by auth");
            refusal.into_response_for(&path)
        }
    }
}

fn count(metrics: &Metrics, r: &Refusal) {
    metrics.auth_refused(r.cause, &r.tenant);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn credentials_parse_bearer_and_basic() {
        let key = |v: &str| credential(&headers(&[("authorization", v)]));
        assert_eq!(credential(&HeaderMap::new()), Credential::None);
        assert_eq!(key("Bearer kiln_x"), Credential::Key("kiln_x".into()));
        assert_eq!(key("bearer  kiln_x "), Credential::Key("kiln_x".into()));
        assert_eq!(
            key(&basic("123", "kiln_y")),
            Credential::Key("kiln_y".into())
        );
        assert_eq!(key(&basic("kiln_z", "")), Credential::Key("kiln_z".into()));
        for bad in [
            "Bearer",
            "Bearer a b",
            "Token x",
            "Basic !!!",
            &basic("", ""),
        ] {
            assert!(matches!(key(bad), Credential::Malformed(_)), "{bad}");
        }
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(credential(&two), Credential::Malformed(_)));
    }

    fn auth(dir: &std::path::Path, enabled: bool, listen: &str) -> Auth {
        let config = AuthConfig {
            enabled,
            ..AuthConfig::default()
        };
        Auth::open(config, listen, dir).unwrap()
    }

    #[test]
    fn auth_off_takes_the_tenant_from_the_header_and_guards_remote_peers() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path(), false, "127.0.0.1:4040");
        let p = resolve(&a, &Method::GET, "/render", &HeaderMap::new(), None)
            .unwrap()
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("anonymous", Role::Admin));
        let h = headers(&[("X-Scope-OrgID", "team-a")]);
        let p = resolve(&a, &Method::GET, "/render", &h, None)
            .unwrap()
            .unwrap();
        assert_eq!(p.tenant.as_str(), "team-a");
        let h = headers(&[("X-Scope-OrgID", "a/b")]);
        let r = resolve(&a, &Method::GET, "/render", &h, None).unwrap_err();
        assert_eq!((r.status, r.cause), (StatusCode::BAD_REQUEST, "bad_tenant"));

        let mut wide = auth(dir.path(), false, "0.0.0.0:4040");
        assert!(!wide.loopback_only);
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        let r = resolve(
            &wide,
            &Method::GET,
            "/render",
            &HeaderMap::new(),
            Some(remote),
        )
        .unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.message.contains("allow_unauthenticated") && r.message.contains("--auth"));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(resolve(
            &wide,
            &Method::GET,
            "/render",
            &HeaderMap::new(),
            Some(local)
        )
        .is_ok());
        assert!(resolve(
            &wide,
            &Method::GET,
            "/healthz",
            &HeaderMap::new(),
            Some(remote)
        )
        .is_ok());
        wide.config.allow_unauthenticated = true;
        assert!(resolve(
            &wide,
            &Method::GET,
            "/render",
            &HeaderMap::new(),
            Some(remote)
        )
        .is_ok());
    }

    #[test]
    fn auth_on_confines_keys_to_their_tenant_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path(), true, "127.0.0.1:4040");
        let t = Tenant::new("t1").unwrap();
        let (reader, _) = a
            .keys
            .create("r", Role::Reader, Some(t.clone()), None)
            .unwrap();
        let (root, _) = a.keys.create("root", Role::Admin, None, None).unwrap();
        let bearer = |k: &str| format!("Bearer {k}");
        let ask =
            |m: Method, path: &str, h: &[(&str, &str)]| resolve(&a, &m, path, &headers(h), None);

        let r = ask(Method::GET, "/render", &[]).unwrap_err();
        assert_eq!(
            (r.status, r.cause),
            (StatusCode::UNAUTHORIZED, "unauthenticated")
        );
        let p = ask(
            Method::GET,
            "/render",
            &[("authorization", &bearer(&reader))],
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.tenant.clone(), p.role), (t.clone(), Role::Reader));
        let r = ask(
            Method::POST,
            "/ingest",
            &[("authorization", &bearer(&reader))],
        )
        .unwrap_err();
        assert_eq!(
            (r.status, r.cause, r.tenant.as_str()),
            (StatusCode::FORBIDDEN, "forbidden", "t1")
        );
        let r = ask(
            Method::GET,
            "/render",
            &[("authorization", &bearer(&reader)), ("x-scope-orgid", "t2")],
        )
        .unwrap_err();
        assert_eq!(r.cause, "tenant_mismatch");
        assert!(ask(
            Method::GET,
            "/render",
            &[("authorization", &bearer(&reader)), ("x-scope-orgid", "t1")]
        )
        .is_ok());
        // An admin key for every tenant picks one.
        let p = ask(
            Method::DELETE,
            "/api/apps",
            &[("authorization", &bearer(&root)), ("x-scope-orgid", "t2")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.tenant.as_str(), "t2");
        assert!(p.all_tenants);
        // /metrics needs a reader key unless opened; /healthz never needs one.
        assert_eq!(
            ask(Method::GET, "/metrics", &[]).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(ask(Method::GET, "/healthz", &[]).unwrap().is_none());
    }
}
