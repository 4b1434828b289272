//! `kiln admin apikey create|list|revoke` and `kiln admin user add|list|delete|reset-password`:
//! on the data directory (`--config` /
//! `--storage-path`), or through a running daemon's admin API (`--server URL` with an admin
//! key). A created key is printed once, alone on one line of stdout; everything else goes to
//! stderr, so `KEY=$(kiln admin apikey create …)` captures just the key.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kiln_plugin_api::Tenant;
use serde_json::Value;

use super::admin::{audit, tenant_name};
use super::keys::{self, KeyStore, Role};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// API keys: create, list, revoke.
    Apikey {
        #[command(subcommand)]
        action: ApikeyCommand,
    },
    /// Users of the UI: add, list, delete, reset-password.
    User {
        #[command(subcommand)]
        action: super::user_cli::UserCommand,
    },
}

#[derive(Subcommand)]
pub enum ApikeyCommand {
    /// Creates a key and prints it (once: only its hash is kept).
    Create {
        /// What the key is for (shown by `list`).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// The tenant the key reads and writes [default: anonymous; an admin key without
        /// --tenant may act for every tenant, naming one with X-Scope-OrgID].
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, e.g. 90d or 12h [default: no expiry].
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lists keys: id, name, role, tenant, status (never a secret).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revokes the key with this id (see `list`).
    Revoke {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args)]
pub struct Remote {
    /// A running daemon to manage through its admin API; without it the data directory is
    /// changed directly (a running daemon picks the change up within a second).
    #[arg(long)]
    pub server: Option<String>,
    /// Admin API key for --server.
    #[arg(long, env = "KILN_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// TLS options for an `https://` --server.
    #[command(flatten)]
    tls: crate::client::ClientTls,
}

/// Runs an admin command; `data_dir` loads the configuration for offline use.
pub fn run(
    command: AdminCommand,
    data_dir: impl FnOnce() -> anyhow::Result<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let action = match command {
        AdminCommand::Apikey { action } => action,
        AdminCommand::User { action } => return super::user_cli::run(action, data_dir),
    };
    let remote = match &action {
        ApikeyCommand::Create { remote, .. }
        | ApikeyCommand::List { remote }
        | ApikeyCommand::Revoke { remote, .. } => remote,
    };
    if let Some(server) = remote.server.clone() {
        let token = remote.auth_token.clone();
        let agent = remote.tls.agent(None)?;
        return run_remote(action, &server, token.as_deref(), agent);
    }
    let dir = data_dir()?;
    let store = KeyStore::open(&dir).context("opening the API key store")?;
    let now = keys::now_s();
    match action {
        ApikeyCommand::Create {
            name,
            role,
            tenant,
            expires,
            ..
        } => {
            let tenant = match tenant {
                Some(t) => Some(Tenant::new(t).context("--tenant")?),
                None if role == Role::Admin => None,
                None => Some(Tenant::default()),
            };
            let expires_at = expires.as_deref().map(keys::expiry).transpose()?;
            let (key, record) = store.create(&name, role, tenant, expires_at)?;
            audit(
                "apikey.create",
                "cli",
                &tenant_name(&record),
                &format!("{} ({:?}, {})", record.id, record.name, record.role),
            );
            eprintln!(
                "created {} key {} ({:?}) for tenant {} in {}; it is shown only now:",
                record.role,
                record.id,
                record.name,
                tenant_name(&record),
                dir.display()
            );
            println!("{key}");
        }
        ApikeyCommand::List { .. } => {
            print_list(store.list()?.iter().map(|k| k.info(now)).collect());
        }
        ApikeyCommand::Revoke { id, .. } => {
            let record = store.revoke(&id)?;
            audit(
                "apikey.revoke",
                "cli",
                &tenant_name(&record),
                &format!("{} ({:?})", record.id, record.name),
            );
            eprintln!("revoked key {} ({:?})", record.id, record.name);
        }
    }
    Ok(())
}

fn print_list(keys: Vec<Value>) {
    println!(
        "{:<14} {:<20} {:<7} {:<20} {:<8} EXPIRES",
        "ID", "NAME", "ROLE", "TENANT", "STATUS"
    );
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    for k in keys {
        println!(
            "{:<14} {:<20} {:<7} {:<20} {:<8} {}",
            s(&k["id"]),
            s(&k["name"]),
            s(&k["role"]),
            match &k["tenant"] {
                Value::Null => "*".to_string(),
                t => s(t),
            },
            s(&k["status"]),
            match k["expires_at"].as_u64() {
                Some(at) => humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
                )
                .to_string(),
                None => "-".into(),
            },
        );
    }
}

fn run_remote(
    action: ApikeyCommand,
    server: &str,
    token: Option<&str>,
    agent: ureq::Agent,
) -> anyhow::Result<()> {
    let base = format!("{}/api/admin/apikeys", server.trim_end_matches('/'));
    let auth = token.map(|t| format!("Bearer {t}"));
    let send = |method: &str, url: &str, body: Option<Value>| -> anyhow::Result<Value> {
        let mut resp = match (method, body) {
            ("POST", Some(b)) => {
                let mut r = agent.post(url).header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(b.to_string())
            }
            ("DELETE", _) => {
                let mut r = agent.delete(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = agent.get(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
        }
        .with_context(|| format!("reaching {server}"))?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !resp.status().is_success() {
            bail!("{server} answered {}: {}", resp.status(), text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{server} answered {text:?}"))
    };
    match action {
        ApikeyCommand::Create {
            name,
            role,
            tenant,
            expires,
            ..
        } => {
            let body = serde_json::json!({
                "name": name, "role": role, "tenant": tenant, "expires": expires,
            });
            let out = send("POST", &base, Some(body))?;
            let key = out["key"].as_str().context("the daemon returned no key")?;
            eprintln!(
                "created {} key {} for tenant {} on {server}; it is shown only now:",
                out["role"].as_str().unwrap_or("?"),
                out["id"].as_str().unwrap_or("?"),
                out["tenant"].as_str().unwrap_or("*"),
            );
            println!("{key}");
        }
        ApikeyCommand::List { .. } => {
            let out = send("GET", &base, None)?;
            print_list(out.as_array().cloned().unwrap_or_default());
        }
        ApikeyCommand::Revoke { id, .. } => {
            let out = send("DELETE", &format!("{base}/{id}"), None)?;
            eprintln!(
                "revoked key {} ({})",
                out["id"].as_str().unwrap_or(&id),
                out["name"]
            );
        }
    }
    Ok(())
}
