//! `kiln`: the continuous-profiling daemon and its command-line tools.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts. Heap sampling (one sample per 512 KiB allocated
/// on average) is compiled in but off until self-profiling turns it on. Freed pages go back
/// to the OS after about a second through jemalloc's background thread, and two arenas
/// (instead of four per core) keep fewer half-empty pages around: under the soak load the
/// defaults (8 arenas, 10 s decay) held 250 MB more resident than 4 arenas and 1 s decay for
/// the same throughput, and 2 arenas peaked 43 MB below 4 (344 against 387 MB, −1 % profiles/s).
/// `MALLOC_CONF` in the environment still overrides them.
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] =
    b"prof:true,prof_active:false,lg_prof_sample:19,background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

mod alloc;
mod api_error;
mod auth;
mod client;
mod config;
mod connect;
mod disk;
mod durable;
mod flamebearer;
mod forward;
mod html_export;
mod ingest;
mod limits;
mod metrics;
mod otlp;
mod pipeline;
mod plugins;
mod querier;
mod query;
mod relabel;
mod rules;
mod scrape;
mod selfprof;
mod server;
mod sink_queue;
mod storage_api;
mod time;
mod tls;
mod ui;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: continuous profiling. Without a command, runs the server."
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings that override the configuration file and the environment.
#[derive(Args, Clone, Default)]
struct ServerArgs {
    /// Configuration file [default: ./config.toml, if present].
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Storage directory (storage.path).
    #[arg(long, global = true)]
    storage_path: Option<String>,
    /// Maximum age of data (storage.retention), e.g. 30d.
    #[arg(long, global = true)]
    retention: Option<String>,
    /// Bound on stored bytes; oldest data goes first past it (storage.max_disk_bytes).
    #[arg(long, global = true)]
    max_disk_bytes: Option<u64>,
    /// Free disk below which pushes get 507 (storage.min_free_disk_bytes).
    #[arg(long, global = true)]
    min_free_disk_bytes: Option<u64>,
    /// How often data is made durable (server.flush_interval), e.g. 1s.
    #[arg(long, global = true)]
    flush_interval: Option<String>,
    /// Log level or tracing filter (server.log_level).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Profile the daemon itself (server.self_profiling).
    #[arg(long, global = true)]
    self_profiling: Option<bool>,
    /// Public URL of the daemon (server.base_url).
    #[arg(long, global = true)]
    base_url: Option<String>,
    /// Default node budget of rendered flamegraphs (server.max_nodes).
    #[arg(long, global = true)]
    max_nodes: Option<u64>,
    /// Largest request body in bytes (server.max_body_bytes).
    #[arg(long, global = true)]
    max_body_bytes: Option<u64>,
    /// Directory of plugins (server.plugins_dir).
    #[arg(long, global = true)]
    plugins_dir: Option<String>,
    /// Log every push before acknowledging it (wal.enabled).
    #[arg(long, global = true)]
    wal: Option<bool>,
    /// Require API keys (auth.enabled): `--auth` or `--auth=false`.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    auth: Option<bool>,
    /// With auth off on a non-loopback address, serve other hosts too
    /// (auth.allow_unauthenticated).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    auth_allow_unauthenticated: Option<bool>,
    /// Serve /metrics without a key when auth is on (auth.open_metrics).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    auth_open_metrics: Option<bool>,
    /// PEM certificate chain: serve HTTPS (tls.cert_file).
    #[arg(long, global = true)]
    tls_cert_file: Option<String>,
    /// PEM private key of the certificate (tls.key_file).
    #[arg(long, global = true)]
    tls_key_file: Option<String>,
    /// PEM CA certificates clients must present a certificate of (tls.client_ca_file).
    #[arg(long, global = true)]
    tls_client_ca_file: Option<String>,
}

impl ServerArgs {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let mut push = |k: &'static str, val: Option<String>| {
            if let Some(val) = val {
                v.push((k, val));
            }
        };
        push("server.listen", self.listen.clone());
        push("storage.path", self.storage_path.clone());
        push("storage.retention", self.retention.clone());
        push(
            "storage.max_disk_bytes",
            self.max_disk_bytes.map(|n| n.to_string()),
        );
        push(
            "storage.min_free_disk_bytes",
            self.min_free_disk_bytes.map(|n| n.to_string()),
        );
        push("server.flush_interval", self.flush_interval.clone());
        push("server.log_level", self.log_level.clone());
        push(
            "server.self_profiling",
            self.self_profiling.map(|b| b.to_string()),
        );
        push("server.base_url", self.base_url.clone());
        push("server.max_nodes", self.max_nodes.map(|n| n.to_string()));
        push(
            "server.max_body_bytes",
            self.max_body_bytes.map(|n| n.to_string()),
        );
        push("server.plugins_dir", self.plugins_dir.clone());
        push("wal.enabled", self.wal.map(|b| b.to_string()));
        push("auth.enabled", self.auth.map(|b| b.to_string()));
        push(
            "auth.allow_unauthenticated",
            self.auth_allow_unauthenticated.map(|b| b.to_string()),
        );
        push(
            "auth.open_metrics",
            self.auth_open_metrics.map(|b| b.to_string()),
        );
        push("tls.cert_file", self.tls_cert_file.clone());
        push("tls.key_file", self.tls_key_file.clone());
        push("tls.client_ca_file", self.tls_client_ca_file.clone());
        v
    }

    fn load(&self) -> anyhow::Result<config::Config> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("config.toml"), false),
        };
        config::load(&path, explicit, &self.overrides())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Server,
    /// Check the configuration and exit.
    Validate,
    /// Ask a running daemon to reload its configuration and plugins (as SIGHUP does).
    Reload {
        /// Daemon URL.
        #[arg(long, default_value = "http://127.0.0.1:4040", env = "KILN_SERVER")]
        server: String,
        /// Admin API key, when the daemon has auth on.
        #[arg(long, env = "KILN_AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        #[command(flatten)]
        tls: client::ClientTls,
    },
    /// Administration: API keys and users.
    Admin {
        #[command(subcommand)]
        action: auth::cli::AdminCommand,
    },
    /// List or check plugins (native and Wasm).
    Plugins {
        #[command(subcommand)]
        action: PluginsCommand,
    },
    /// Push profile files to a running daemon.
    Ingest(client::IngestArgs),
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Every plugin file in the plugins directory: name, kind, version, file, status.
    List,
    /// Loads FILE as the daemon would and instantiates it with an empty configuration.
    Check { file: PathBuf },
}

fn plugins_command(action: PluginsCommand, args: &ServerArgs) -> anyhow::Result<()> {
    match action {
        PluginsCommand::List => {
            let config = args.load()?;
            let dir = &config.server.plugins_dir;
            let found = plugins::scan(dir);
            if found.is_empty() {
                eprintln!("no plugins in {}", dir.display());
            }
            println!(
                "{:<20} {:<10} {:<8} {:<10} {:<40} STATUS",
                "NAME", "KIND", "RUNTIME", "VERSION", "FILE"
            );
            for (file, loaded) in found {
                match loaded {
                    Ok(p) => println!(
                        "{:<20} {:<10} {:<8} {:<10} {:<40} ok",
                        p.name(),
                        p.kind().to_string(),
                        p.runtime(),
                        p.version(),
                        p.file().display()
                    ),
                    Err(e) => println!(
                        "{:<20} {:<10} {:<8} {:<10} {:<40} refused: {e:#}",
                        "-",
                        "-",
                        "-",
                        "-",
                        file.display()
                    ),
                }
            }
            Ok(())
        }
        PluginsCommand::Check { file } => {
            let plugin = plugins::load(&file)?;
            let version = match &plugin {
                plugins::Plugin::Native(lib) => {
                    lib.instantiate("{}", metrics::Metrics::default())?;
                    format!("plugin ABI version {}", kiln_plugin_api::abi::ABI_VERSION)
                }
                plugins::Plugin::Wasm(wasm) => {
                    wasm.instantiate(
                        "{}",
                        kiln_wasm_host::Sandbox::default(),
                        std::sync::Arc::new(kiln_wasm_host::NoObserver),
                    )?;
                    format!("WIT kiln:plugin@{}", wasm.wit)
                }
            };
            println!(
                "{}: {} plugin {} {} ({}), {version}: ok",
                file.display(),
                plugin.runtime(),
                plugin.name(),
                plugin.version(),
                plugin.kind(),
            );
            Ok(())
        }
    }
}

fn init_logging(level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Audit lines (admin actions) are written whatever the log level, unless the filter
    // names the `audit` target itself.
    if !level.contains("audit") {
        filter = filter.add_directive("audit=info".parse().expect("static directive"));
    }
    // Logs go to stderr: stdout is for what commands print (for scripts to capture).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Server) {
        Command::Server => {
            let config = cli.server.load()?;
            init_logging(&config.server.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // An idle blocking-pool thread ends after this (tokio's default: 10 s), giving
                // back the allocator cache it keeps between pushes (`alloc::RELEASE_EVERY`).
                .thread_keep_alive(std::time::Duration::from_secs(2))
                .build()
                .context("starting the async runtime")?
                .block_on(server::run(config, {
                    let args = cli.server.clone();
                    Box::new(move || args.load())
                }))
        }
        Command::Plugins { action } => plugins_command(action, &cli.server),
        Command::Reload {
            server,
            auth_token,
            tls,
        } => client::reload(&server, auth_token.as_deref(), &tls),
        Command::Admin { action } => {
            init_logging("warn");
            auth::cli::run(action, || Ok(cli.server.load()?.storage.path))
        }
        Command::Validate => {
            // Builds everything a start would (plugins included) without opening storage.
            let config = cli.server.load()?;
            let metrics = metrics::Metrics::default();
            let plugins = plugins::Registry::load_dir(&config.server.plugins_dir, metrics.clone());
            server::Ingestion::build_with(&config, &plugins, &metrics)?;
            if config.storage.kind != "sled" {
                // Starting a storage plugin may open its data; sled is left closed.
                server::open_storage(&config, &plugins)?;
            }
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Ingest(args) => client::run(args),
    }
}
