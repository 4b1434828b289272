//! `kiln admin user add|list|delete|reset-password`: on the data directory, or through a
//! running daemon's admin API (`--server URL` with an admin key). Passwords are read from
//! `--password-stdin` or `KILN_USER_PASSWORD`, never from an argument (it would sit in the
//! shell history and the process list); without either a random one is made and printed once.

use anyhow::{bail, Context};
use clap::Subcommand;
use kiln_plugin_api::Tenant;
use serde_json::{json, Value};

use super::admin::audit;
use super::cli::Remote;
use super::users::{self, UserRole, UserStore};

#[derive(clap::Args)]
pub struct PasswordSource {
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a user. The password comes from --password-stdin or KILN_USER_PASSWORD; without
    /// either, a random one is printed (once).
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: UserRole,
        /// The user's tenant [default: anonymous; an admin without --tenant manages every
        /// tenant].
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lists users: name, role, tenant (never a password or hash).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Deletes a user; their sessions end.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Sets a new password (as `add` reads it); the user's sessions end.
    ResetPassword {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        remote: Remote,
    },
}

/// The password to set, and whether it was made here (then it is printed).
fn password(src: &PasswordSource) -> anyhow::Result<(String, bool)> {
    if src.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            bail!("--password-stdin: stdin held no password");
        }
        return Ok((p, false));
    }
    match std::env::var("KILN_USER_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok((p, false)),
        _ => Ok((users::random_password()?, true)),
    }
}

fn show_generated(name: &str, password: &str, generated: bool) {
    if generated {
        eprintln!("the password of {name} is shown only now:");
        println!("{password}");
    }
}

pub fn run(
    command: UserCommand,
    data_dir: impl FnOnce() -> anyhow::Result<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let remote = match &command {
        UserCommand::Add { remote, .. }
        | UserCommand::List { remote }
        | UserCommand::Delete { remote, .. }
        | UserCommand::ResetPassword { remote, .. } => remote,
    };
    if let Some(server) = remote.server.clone() {
        let token = remote.auth_token.clone();
        return run_remote(command, &server, token.as_deref());
    }
    let dir = data_dir()?;
    let store = UserStore::open(&dir).context("opening the user store")?;
    match command {
        UserCommand::Add {
            name,
            role,
            tenant,
            password: src,
            ..
        } => {
            let tenant = match tenant {
                Some(t) => Some(Tenant::new(t).context("--tenant")?),
                None if role == UserRole::Admin => None,
                None => Some(Tenant::default()),
            };
            let (pw, generated) = password(&src)?;
            let u = store.add(&name, &pw, role, tenant)?;
            audit(
                "user.add",
                "cli",
                &u.tenant_name(),
                &format!("{} ({})", u.name, u.role),
            );
            eprintln!(
                "added {} {} for tenant {} in {}",
                u.role,
                u.name,
                u.tenant_name(),
                dir.display()
            );
            show_generated(&u.name, &pw, generated);
        }
        UserCommand::List { .. } => {
            print_list(store.list()?.iter().map(|u| u.info()).collect());
        }
        UserCommand::Delete { name, .. } => {
            let u = store.delete(&name)?;
            audit("user.delete", "cli", &u.tenant_name(), &u.name);
            eprintln!("deleted user {}", u.name);
        }
        UserCommand::ResetPassword {
            name,
            password: src,
            ..
        } => {
            let (pw, generated) = password(&src)?;
            let u = store.reset_password(&name, &pw)?;
            audit("user.reset_password", "cli", &u.tenant_name(), &u.name);
            eprintln!(
                "set a new password for {}; their sessions have ended",
                u.name
            );
            show_generated(&u.name, &pw, generated);
        }
    }
    Ok(())
}

fn print_list(users: Vec<Value>) {
    println!("{:<24} {:<7} TENANT", "NAME", "ROLE");
    for u in users {
        println!(
            "{:<24} {:<7} {}",
            u["name"].as_str().unwrap_or("?"),
            u["role"].as_str().unwrap_or("?"),
            u["tenant"].as_str().unwrap_or("*"),
        );
    }
}

fn run_remote(command: UserCommand, server: &str, token: Option<&str>) -> anyhow::Result<()> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let base = format!("{}/api/admin/users", server.trim_end_matches('/'));
    let auth = token.map(|t| format!("Bearer {t}"));
    let send = |method: &str, url: &str, body: Option<Value>| -> anyhow::Result<Value> {
        let resp = match method {
            "POST" => {
                let mut r = agent.post(url).header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or(Value::Null).to_string())
            }
            "DELETE" => {
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
        };
        let mut resp = resp.with_context(|| format!("reaching {server}"))?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !resp.status().is_success() {
            bail!("{server} answered {}: {}", resp.status(), text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{server} answered {text:?}"))
    };
    match command {
        UserCommand::Add {
            name,
            role,
            tenant,
            password: src,
            ..
        } => {
            let (pw, generated) = password(&src)?;
            let body = json!({ "name": name, "role": role, "tenant": tenant, "password": pw });
            let out = send("POST", &base, Some(body))?;
            eprintln!(
                "added {} {} for tenant {} on {server}",
                out["role"].as_str().unwrap_or("?"),
                out["name"].as_str().unwrap_or("?"),
                out["tenant"].as_str().unwrap_or("*"),
            );
            show_generated(&name, &pw, generated);
        }
        UserCommand::List { .. } => {
            let out = send("GET", &base, None)?;
            print_list(out.as_array().cloned().unwrap_or_default());
        }
        UserCommand::Delete { name, .. } => {
            send("DELETE", &format!("{base}/{name}"), None)?;
            eprintln!("deleted user {name}");
        }
        UserCommand::ResetPassword {
            name,
            password: src,
            ..
        } => {
            let (pw, generated) = password(&src)?;
            send(
                "POST",
                &format!("{base}/{name}/password"),
                Some(json!({ "password": pw })),
            )?;
            eprintln!("set a new password for {name}; their sessions have ended");
            show_generated(&name, &pw, generated);
        }
    }
    Ok(())
}
