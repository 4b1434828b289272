//! Configuration: a TOML file, overridden by `KILN_…` environment variables, overridden by
//! command-line flags. Unknown keys and bad values stop startup with the file, table and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use kiln_storage_sled::Level;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub wal: WalConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    #[serde(default)]
    pub transforms: BTreeMap<String, ComponentConfig>,
    #[serde(default)]
    pub sinks: BTreeMap<String, ComponentConfig>,
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Recording rules: counters derived from stored profiles, exported at `/metrics`.
    #[serde(default)]
    pub metrics_rules: BTreeMap<String, crate::rules::RuleConfig>,
    /// `[metrics_remote_write]`: the rules' counters pushed to a Prometheus-compatible receiver.
    #[serde(default)]
    pub metrics_remote_write: Option<crate::rules::remote_write::RemoteWriteConfig>,
    /// Options and sandboxes of plugins the daemon starts by themselves (decoders, renderers).
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Settings shared by the scrape jobs.
    #[serde(default)]
    pub scrape: crate::scrape::ScrapeSettings,
    /// Pull mode: pprof endpoints the daemon scrapes (see `docs/pull-mode.md`).
    #[serde(default)]
    pub scrape_configs: Vec<crate::scrape::ScrapeConfig>,
    /// The file this configuration was read from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Public URL of this daemon (used in links); empty means relative links.
    pub base_url: String,
    /// Largest request body accepted on the wire.
    pub max_body_bytes: u64,
    /// Largest body once decompressed (guards against gzip bombs).
    pub max_decompressed_bytes: u64,
    /// Default node budget of rendered flamegraphs.
    pub max_nodes: usize,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub log_level: String,
    /// How often accepted profiles are made durable.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Profile the daemon's own CPU into the `kiln.server` application.
    pub self_profiling: bool,
    /// Directory whose native (`.so`, `.dylib`) and WebAssembly (`.wasm`) plugins are loaded
    /// at start and on reload.
    pub plugins_dir: PathBuf,
    /// The memory the daemon plans for. Bounds not set explicitly derive from it:
    /// `wal.max_unapplied_bytes` = 1/16, `storage.cache_capacity_bytes` = 1/16,
    /// `server.max_decompressed_bytes` = ⅛, `storage.query_budget_bytes` = ⅛,
    /// `storage.dictionary_cache_bytes` = ⅛, `storage.write_buffer_bytes` = ⅛ (see
    /// [`MEMORY_SHARES`]).
    pub memory_limit: u64,
}

/// What each memory bound gets of `server.memory_limit` when not set explicitly: `(key, 1/n)`.
/// The shares add up to 10/16; the rest is for what has no bound of its own (connections,
/// requests being decoded, self-profiling, the runtime) and for the allocator's slack. sled's
/// cache gets 1/16 because sled counts pages by their encoded size: resident, they take two to
/// three times that (measured under the soak load with the daemon's heap profile). The decoded
/// backlog gets 1/16: under overload it sits at its bound, and 32 MiB of decoded pushes is still
/// hundreds of pushes queued for the applier, which is all a queue can do for throughput.
pub const MEMORY_SHARES: &[(&str, u64)] = &[
    ("wal.max_unapplied_bytes", 16),
    ("storage.cache_capacity_bytes", 16),
    ("server.max_decompressed_bytes", 8),
    ("storage.query_budget_bytes", 8),
    ("storage.dictionary_cache_bytes", 8),
    ("storage.write_buffer_bytes", 8),
];
const DEFAULT_MEMORY_LIMIT: u64 = 512 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4040".into(),
            base_url: String::new(),
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_nodes: 8192,
            log_level: "info".into(),
            flush_interval: Duration::from_secs(1),
            self_profiling: true,
            plugins_dir: PathBuf::from("plugins"),
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// Default `storage.min_free_disk_bytes`: 1 GiB, room for sled to rewrite segments and for
/// the write-ahead log to take a burst after pushes are refused.
pub const DEFAULT_MIN_FREE_DISK: u64 = 1 << 30;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Storage backend; `sled` is built in.
    #[serde(rename = "type")]
    pub kind: String,
    /// Directory of the data.
    pub path: PathBuf,
    /// Maximum age of any data; caps every level's retention.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Time levels, finest first. Empty (the default): what the store was created with, and
    /// for a new one 10 s, 1000 s and 100 000 s (`kiln_plugin_api::levels`).
    pub levels: Vec<Level>,
    /// Storage caches, bytes: half sled's page cache, half the finest level's block cache.
    pub cache_capacity_bytes: u64,
    /// Memory one merge query may use for its tree; past it the smallest stacks are folded
    /// into `other` and the answer says so.
    pub query_budget_bytes: u64,
    /// Memory for services' frame and stack dictionaries; past it the least recently used
    /// blocks of entries, and maps that intern them, are dropped from memory (they stay on
    /// disk), however large one service's dictionary grows.
    pub dictionary_cache_bytes: u64,
    /// Memory for values written since storage last applied them to disk; past it the write
    /// applies them first (writers slow down, and the backlog refuses pushes with 503).
    pub write_buffer_bytes: u64,
    /// How a new data directory compresses: `values` (default) or `sled`.
    pub compression: kiln_storage_sled::Compression,
    /// Bound on the bytes storage holds (its accounted size, see `docs/storage.md`); past it
    /// the retention pass deletes the oldest data, finest level first, down to 90 % of it.
    /// 0: no bound.
    pub max_disk_bytes: u64,
    /// Free space the data directory's filesystem (and the write-ahead log's) must keep:
    /// below it pushes are refused with 507 until space is back. 0: no floor.
    pub min_free_disk_bytes: u64,
    /// How often retention (by age, then by size) runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Options of a storage plugin (`type` other than `sled`), handed to it as JSON.
    pub options: toml::Table,
    /// The ClickHouse server of `type = "clickhouse"`.
    pub clickhouse: kiln_storage_clickhouse::ClickHouseConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: "sled".into(),
            path: PathBuf::from("./data"),
            retention: Duration::from_secs(30 * 86_400),
            levels: Vec::new(),
            cache_capacity_bytes: 32 << 20,
            query_budget_bytes: 64 << 20,
            dictionary_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            compression: kiln_storage_sled::Compression::default(),
            max_disk_bytes: 0,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK,
            retention_interval: Duration::from_secs(600),
            options: toml::Table::new(),
            clickhouse: Default::default(),
        }
    }
}

/// The write-ahead log: what makes a 200 mean "on disk".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Off: a push is acknowledged once buffered, and a crash loses what the last flush had
    /// not reached (only for measuring what the log costs).
    pub enabled: bool,
    /// Directory of the log; empty means `wal` inside `storage.path`.
    pub dir: PathBuf,
    /// Size at which a log segment is closed.
    pub segment_bytes: u64,
    /// LZ4-compress logged bodies that are not compressed already (raw JFR, text formats).
    /// Off by default: a raw JFR recording only halves, for about a tenth of ingest CPU.
    pub compress: bool,
    /// Decoded profiles handed to storage and not yet written there (memory), past which
    /// pushes get 503 + `Retry-After`.
    pub max_unapplied_bytes: u64,
    /// Logged bytes not yet covered by a checkpoint (disk, and what a crash replays), past
    /// which pushes get 503 + `Retry-After`. From half of it on, storage is flushed and the log
    /// checkpointed sooner than `server.flush_interval`: a quarter interval after the last flush
    /// (5 s for intervals over 20 s).
    pub max_unflushed_bytes: u64,
    /// Age of the oldest logged push not yet durable in storage past which pushes get 503.
    #[serde(with = "humantime_serde")]
    pub max_unapplied_age: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::new(),
            segment_bytes: 64 << 20,
            compress: false,
            max_unapplied_bytes: 32 << 20,
            max_unflushed_bytes: 256 << 20,
            max_unapplied_age: Duration::from_secs(10),
        }
    }
}

/// `[auth]`: API keys, users, sessions and tenants (see `docs/security.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require an API key on every request but `/healthz` and the UI's static files; the
    /// tenant comes from the key. Off: the tenant comes from `X-Scope-OrgID`.
    pub enabled: bool,
    /// With auth off on a non-loopback address, serve other hosts anyway (behind a proxy that
    /// authenticates, or on a trusted network). Without it they get 403.
    pub allow_unauthenticated: bool,
    /// Serve `/metrics` without a key when auth is on.
    pub open_metrics: bool,
    /// How long a UI session lasts after sign-in.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure`. Unset: only when the request came over TLS.
    pub secure_cookies: Option<bool>,
    /// Failed sign-ins allowed per user name and per client address within a minute; past
    /// it, 429 with `Retry-After`. 0: no limit.
    pub login_failures_per_minute: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_unauthenticated: false,
            open_metrics: false,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: None,
            login_failures_per_minute: 5,
        }
    }
}

/// `[tls]`: HTTPS instead of HTTP (see `docs/security.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key_file`, the daemon serves HTTPS only.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate signed by one of
    /// them (mutual TLS), or the handshake fails.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// A named component (`[transforms.NAME]`, `[sinks.NAME]`): its `type` and the settings that
/// type takes.
#[derive(Debug, Clone, Deserialize)]
pub struct ComponentConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// Sinks only: how long a sink's worker waits for more profiles before calling the sink
    /// with what has queued up (see `crate::sink_queue`); `0s` calls it as soon as a push
    /// arrives. Read by the daemon, never passed to the plugin.
    #[serde(default, with = "humantime_serde")]
    pub batch_wait: Option<Duration>,
    #[serde(flatten)]
    pub settings: PluginSettings,
}

impl ComponentConfig {
    /// Deserializes the options as `T`, naming the table and key on error.
    pub fn options<T: serde::de::DeserializeOwned>(&self, table: &str) -> anyhow::Result<T> {
        if self.settings.sandbox.is_some() {
            bail!(
                "in [{table}.sandbox]: type {:?} is built in; a sandbox applies to Wasm plugins only",
                self.kind
            );
        }
        deserialize_table(&self.settings.options, table)
    }
}

/// What configures one plugin instance: its own options (any keys; the plugin checks them) and,
/// for a Wasm plugin, the `sandbox` table (see `kiln_wasm_host::Sandbox`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginSettings {
    #[serde(default)]
    pub sandbox: Option<toml::Table>,
    #[serde(flatten)]
    pub options: toml::Table,
}

impl PluginSettings {
    /// The sandbox of a Wasm plugin configured in `[table]`.
    pub fn sandbox(&self, table: &str) -> anyhow::Result<kiln_wasm_host::Sandbox> {
        match &self.sandbox {
            None => Ok(kiln_wasm_host::Sandbox::default()),
            Some(t) => deserialize_table(t, &format!("{table}.sandbox")),
        }
    }
}

fn deserialize_table<T: serde::de::DeserializeOwned>(
    t: &toml::Table,
    table: &str,
) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(t.clone())).map_err(|e| {
        anyhow::anyhow!(
            "in [{table}], key `{}`: {}",
            e.path(),
            e.inner().to_string().trim_end()
        )
    })
}

/// Transform types built in.
pub const BUILTIN_TRANSFORMS: &[&str] = &["relabel"];
/// Sink types built in.
pub const BUILTIN_SINKS: &[&str] = &["log", "forward"];

/// Options of the built-in `log` sink (none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkConfig {}

/// A pipeline: `[pipelines.NAME]`. Requests go to the first pipeline (in name order) whose
/// conditions all hold; `default` catches the rest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Regex the application name must match (whole name).
    pub match_app: Option<String>,
    /// Labels that must have these exact values.
    pub match_labels: BTreeMap<String, String>,
    /// Accepted formats; empty means every built-in decoder.
    pub decoders: Vec<String>,
    /// Transforms applied in order.
    pub transforms: Vec<String>,
    /// Sinks receiving every stored batch.
    pub sinks: Vec<String>,
}

/// Settings that have an environment variable and a flag, by TOML path.
pub const OVERRIDABLE: &[(&str, &str)] = &[
    ("server.listen", "KILN_LISTEN"),
    ("server.base_url", "KILN_BASE_URL"),
    ("server.max_body_bytes", "KILN_MAX_BODY_BYTES"),
    (
        "server.max_decompressed_bytes",
        "KILN_MAX_DECOMPRESSED_BYTES",
    ),
    ("server.max_nodes", "KILN_MAX_NODES"),
    ("server.log_level", "KILN_LOG_LEVEL"),
    ("server.flush_interval", "KILN_FLUSH_INTERVAL"),
    ("server.self_profiling", "KILN_SELF_PROFILING"),
    ("server.plugins_dir", "KILN_PLUGINS_DIR"),
    ("server.memory_limit", "KILN_MEMORY_LIMIT"),
    ("storage.type", "KILN_STORAGE_TYPE"),
    ("storage.path", "KILN_STORAGE_PATH"),
    ("storage.retention", "KILN_RETENTION"),
    ("storage.cache_capacity_bytes", "KILN_CACHE_CAPACITY_BYTES"),
    ("storage.query_budget_bytes", "KILN_QUERY_BUDGET_BYTES"),
    (
        "storage.dictionary_cache_bytes",
        "KILN_DICTIONARY_CACHE_BYTES",
    ),
    ("storage.write_buffer_bytes", "KILN_WRITE_BUFFER_BYTES"),
    ("storage.max_disk_bytes", "KILN_MAX_DISK_BYTES"),
    ("storage.min_free_disk_bytes", "KILN_MIN_FREE_DISK_BYTES"),
    ("storage.retention_interval", "KILN_RETENTION_INTERVAL"),
    ("wal.enabled", "KILN_WAL_ENABLED"),
    ("wal.dir", "KILN_WAL_DIR"),
    ("wal.compress", "KILN_WAL_COMPRESS"),
    ("wal.max_unapplied_bytes", "KILN_WAL_MAX_UNAPPLIED_BYTES"),
    ("wal.max_unflushed_bytes", "KILN_WAL_MAX_UNFLUSHED_BYTES"),
    ("wal.max_unapplied_age", "KILN_WAL_MAX_UNAPPLIED_AGE"),
    ("auth.enabled", "KILN_AUTH_ENABLED"),
    (
        "auth.allow_unauthenticated",
        "KILN_AUTH_ALLOW_UNAUTHENTICATED",
    ),
    ("auth.open_metrics", "KILN_AUTH_OPEN_METRICS"),
    ("tls.cert_file", "KILN_TLS_CERT_FILE"),
    ("tls.key_file", "KILN_TLS_KEY_FILE"),
    ("tls.client_ca_file", "KILN_TLS_CLIENT_CA_FILE"),
    (
        "limits.ingest_bytes_per_second",
        "KILN_LIMITS_INGEST_BYTES_PER_SECOND",
    ),
    (
        "limits.ingest_burst_bytes",
        "KILN_LIMITS_INGEST_BURST_BYTES",
    ),
    ("limits.max_series", "KILN_LIMITS_MAX_SERIES"),
    (
        "limits.max_concurrent_queries",
        "KILN_LIMITS_MAX_CONCURRENT_QUERIES",
    ),
    ("limits.query_timeout", "KILN_LIMITS_QUERY_TIMEOUT"),
    (
        "limits.header_read_timeout",
        "KILN_LIMITS_HEADER_READ_TIMEOUT",
    ),
    ("limits.body_read_timeout", "KILN_LIMITS_BODY_READ_TIMEOUT"),
    ("auth.session_ttl", "KILN_AUTH_SESSION_TTL"),
];

/// `[storage.clickhouse]` keys that have an environment variable (no flag: passwords do not
/// belong on a command line).
pub const CLICKHOUSE_ENV: &[(&str, &str)] = &[
    ("url", "KILN_CLICKHOUSE_URL"),
    ("database", "KILN_CLICKHOUSE_DATABASE"),
    ("user", "KILN_CLICKHOUSE_USER"),
    ("password", "KILN_CLICKHOUSE_PASSWORD"),
];

/// Sets `[storage.clickhouse]` keys from their environment variables, and for the ClickHouse
/// backend a longer default `wal.max_unapplied_age`: the log is its spool while the server is
/// unreachable, and pushes should keep being accepted through a short outage.
fn clickhouse_defaults(table: &mut toml::Table) {
    let storage = table
        .entry("storage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(storage) = storage.as_table_mut() else {
        return;
    };
    let is_clickhouse = storage.get("type").and_then(toml::Value::as_str) == Some("clickhouse");
    let mut from_env = CLICKHOUSE_ENV
        .iter()
        .filter_map(|(key, var)| Some((*key, std::env::var(var).ok()?)))
        .peekable();
    if from_env.peek().is_some() {
        let section = storage
            .entry("clickhouse")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(section) = section.as_table_mut() {
            for (key, value) in from_env {
                section.insert(key.to_string(), toml::Value::String(value));
            }
        }
    }
    if is_clickhouse {
        let wal = table
            .entry("wal")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(wal) = wal.as_table_mut() {
            wal.entry("max_unapplied_age")
                .or_insert(toml::Value::String(CLICKHOUSE_MAX_UNAPPLIED_AGE.into()));
        }
    }
}

/// `wal.max_unapplied_age` when `storage.type = "clickhouse"` and it is not set.
pub const CLICKHOUSE_MAX_UNAPPLIED_AGE: &str = "5m";

/// Loads the configuration. `explicit` says whether the path was given by the user (then it
/// must exist); `flags` holds `(toml path, value)` pairs from the command line.
pub fn load(path: &Path, explicit: bool, flags: &[(&str, String)]) -> anyhow::Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end())
    })?;
    for (key, var) in OVERRIDABLE {
        if let Ok(v) = std::env::var(var) {
            set(&mut table, key, &v);
        }
    }
    for (key, v) in flags {
        set(&mut table, key, v);
    }
    derive_memory_bounds(&mut table);
    clickhouse_defaults(&mut table);
    let mut config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let at = e.path().to_string();
            let (table, key) = match at.rsplit_once('.') {
                Some((t, k)) => (format!("[{t}]"), k.to_string()),
                None => ("top level".to_string(), at.clone()),
            };
            anyhow::anyhow!(
                "{}: in {table}, key `{key}`: {}",
                path.display(),
                e.inner().to_string().trim_end()
            )
        })?;
    config.path = path.to_path_buf();
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

/// Fills the memory bounds not set explicitly from `server.memory_limit`.
fn derive_memory_bounds(table: &mut toml::Table) {
    let limit = table
        .get("server")
        .and_then(|s| s.get("memory_limit"))
        .and_then(toml::Value::as_integer)
        .map_or(DEFAULT_MEMORY_LIMIT, |v| v.max(0) as u64);
    for (key, share) in MEMORY_SHARES {
        let (section, name) = key.split_once('.').expect("two-level keys");
        let section = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(section) = section.as_table_mut() {
            section
                .entry(name)
                .or_insert(toml::Value::Integer((limit / share) as i64));
        }
    }
}

/// Sets `a.b` in `table` from a string, typed like the value it replaces (or inferred).
fn set(table: &mut toml::Table, key: &str, raw: &str) {
    let (section, name) = key.split_once('.').expect("overridable keys are two-level");
    let section = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section) = section.as_table_mut() else {
        return;
    };
    let value = if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else {
        toml::Value::String(raw.to_string())
    };
    // Paths, addresses and durations stay strings even when they look like numbers.
    let value = match (name, value) {
        (
            "path"
            | "dir"
            | "listen"
            | "base_url"
            | "log_level"
            | "retention"
            | "retention_interval"
            | "flush_interval"
            | "max_unapplied_age"
            | "type"
            | "cert_file"
            | "key_file"
            | "client_ca_file"
            | "query_timeout"
            | "header_read_timeout"
            | "body_read_timeout"
            | "session_ttl",
            v,
        ) => toml::Value::String(match v {
            toml::Value::String(s) => s,
            other => other.to_string(),
        }),
        (_, v) => v,
    };
    section.insert(name.to_string(), value);
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        // Other storage types come from plugins: checked when storage opens.
        if self.storage.kind == "sled" {
            self.sled_config()
                .validate()
                .map_err(|e| anyhow::anyhow!("in [storage], key `{e}"))?;
            if !self.storage.options.is_empty() {
                bail!("in [storage], key `options`: the built-in sled storage takes no options");
            }
        }
        if self.storage.retention_interval < Duration::from_secs(1) {
            bail!("in [storage], key `retention_interval`: must be at least 1s");
        }
        if self.storage.kind == "clickhouse" {
            self.storage
                .clickhouse
                .validate()
                .map_err(|e| anyhow::anyhow!("in [storage.clickhouse], key `{e}"))?;
        }
        if self.server.flush_interval.is_zero() {
            bail!("in [server], key `flush_interval`: must be greater than zero");
        }
        if self.server.memory_limit < 64 << 20 {
            bail!("in [server], key `memory_limit`: must be at least 67108864 (64 MiB)");
        }
        if self.wal.segment_bytes < 1 << 20 {
            bail!("in [wal], key `segment_bytes`: must be at least 1048576 (1 MiB)");
        }
        if self.wal.max_unflushed_bytes == 0 {
            bail!("in [wal], key `max_unflushed_bytes`: must be greater than zero");
        }
        if self.wal.max_unapplied_age < self.server.flush_interval * 2 {
            bail!("in [wal], key `max_unapplied_age`: must be at least twice server.flush_interval, or every push would be refused between flushes");
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => bail!("in [tls], key `key_file`: required with cert_file"),
            (None, Some(_)) => bail!("in [tls], key `cert_file`: required with key_file"),
            (None, None) if self.tls.client_ca_file.is_some() => {
                bail!("in [tls], key `client_ca_file`: needs cert_file and key_file (mutual TLS is TLS)")
            }
            _ => {}
        }
        self.limits.validate()?;
        self.scrape.validate()?;
        let mut jobs = std::collections::BTreeSet::new();
        for (i, job) in self.scrape_configs.iter().enumerate() {
            job.validate(i)?;
            if !jobs.insert(&job.job_name) {
                bail!(
                    "in [[scrape_configs]] #{}, key `job_name`: {:?} is already the name of another job",
                    i + 1,
                    job.job_name
                );
            }
        }
        crate::rules::RuleSet::compile(&self.metrics_rules, None)?;
        if let Some(remote) = &self.metrics_remote_write {
            remote.validate().map_err(anyhow::Error::msg)?;
        }
        // Other transform types may come from plugins: checked when pipelines are built.
        for (name, t) in &self.transforms {
            if t.batch_wait.is_some() {
                bail!("in [transforms.{name}], key `batch_wait`: only sinks batch their input");
            }
            if t.kind == "relabel" {
                t.options::<crate::relabel::RelabelConfig>(&format!("transforms.{name}"))?;
            }
        }
        // Other sink types may come from plugins: checked when pipelines are built.
        for (name, s) in &self.sinks {
            let table = format!("sinks.{name}");
            if s.batch_wait
                .is_some_and(|w| w > crate::sink_queue::MAX_BATCH_WAIT)
            {
                bail!(
                    "in [{table}], key `batch_wait`: at most {} (profiles wait that long in memory)",
                    humantime::format_duration(crate::sink_queue::MAX_BATCH_WAIT)
                );
            }
            match s.kind.as_str() {
                "log" => {
                    s.options::<LogSinkConfig>(&table)?;
                }
                "forward" => s
                    .options::<crate::forward::ForwardConfig>(&table)?
                    .check(&table)?,
                _ => {}
            }
        }
        for (name, p) in &self.pipelines {
            if let Some(re) = &p.match_app {
                regex::Regex::new(re).map_err(|e| {
                    anyhow::anyhow!("in [pipelines.{name}], key `match_app`: invalid regex: {e}")
                })?;
            }
            for t in &p.transforms {
                if !self.transforms.contains_key(t) {
                    bail!("in [pipelines.{name}], key `transforms`: no transform named {t:?} (define [transforms.{t}])");
                }
            }
            for s in &p.sinks {
                if !self.sinks.contains_key(s) {
                    bail!("in [pipelines.{name}], key `sinks`: no sink named {s:?} (define [sinks.{s}])");
                }
            }
        }
        Ok(())
    }

    /// The write-ahead log's directory.
    pub fn wal_dir(&self) -> PathBuf {
        if self.wal.dir.as_os_str().is_empty() {
            self.storage.path.join("wal")
        } else {
            self.wal.dir.clone()
        }
    }

    /// The levels of the ClickHouse storage: as configured (retention capped as for sled), or
    /// the database's own.
    pub fn clickhouse_levels(&self) -> kiln_storage_clickhouse::LevelChoice {
        self.sled_config().level_choice()
    }

    /// The sled configuration, with every level's retention capped by `storage.retention`
    /// (no levels: the data directory's own, capped the same way).
    pub fn sled_config(&self) -> kiln_storage_sled::SledConfig {
        let mut levels = self.storage.levels.clone();
        for l in &mut levels {
            l.retention = l.retention.min(self.storage.retention).max(l.resolution);
        }
        kiln_storage_sled::SledConfig {
            path: self.storage.path.clone(),
            levels,
            max_retention: self.storage.retention,
            cache_capacity_bytes: self.storage.cache_capacity_bytes,
            query_budget_bytes: self.storage.query_budget_bytes,
            dictionary_cache_bytes: self.storage.dictionary_cache_bytes,
            write_buffer_bytes: self.storage.write_buffer_bytes,
            compression: self.storage.compression,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, flags: &[(&str, String)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, true, flags)
    }

    #[test]
    fn shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
        let c = load(&path, true, &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:4040");
        assert!(c.pipelines.contains_key("default"));
    }

    #[test]
    fn clickhouse_storage_keys() {
        let c = load_str(
            "[storage]\ntype = \"clickhouse\"\n[storage.clickhouse]\nurl = \"http://ch:8123\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.storage.clickhouse.url, "http://ch:8123");
        assert_eq!(
            c.wal.max_unapplied_age,
            Duration::from_secs(300),
            "a longer spool"
        );
        let c = load_str(
            "[storage]\ntype = \"clickhouse\"\n[wal]\nmax_unapplied_age = \"20s\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.wal.max_unapplied_age,
            Duration::from_secs(20),
            "explicit wins"
        );
        assert_eq!(
            load_str("", &[]).unwrap().wal.max_unapplied_age,
            Duration::from_secs(10)
        );
        for (text, needle) in [
            (
                "[storage]\ntype = \"clickhouse\"\n[storage.clickhouse]\nurl = \"ch:8123\"\n",
                "in [storage.clickhouse], key `url`",
            ),
            (
                "[storage]\ntype = \"clickhouse\"\n[storage.clickhouse]\nuser = 5\n",
                "in [storage.clickhouse], key `user`",
            ),
        ] {
            let err = load_str(text, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} (wanted {needle})");
        }
    }

    #[test]
    fn bad_metrics_rules_and_forward_sinks_name_file_table_and_key() {
        for (text, needle) in [
            (
                "[metrics_rules.tls]\nquery = 'api.cpu'\nfunction = '(crypto'\n",
                "in [metrics_rules.tls], key `function`: invalid regex",
            ),
            (
                "[metrics_rules.tls]\nquery = 'api.cpu{env=~\"[\"}'\n",
                "in [metrics_rules.tls], key `query`: regex",
            ),
            (
                "[metrics_rules.tls]\nquery = 'api.cpu'\nlimit = 3\n",
                "unknown field `limit`",
            ),
            (
                "[sinks.c]\ntype = \"forward\"\nurl = \"central:4040\"\n",
                "in [sinks.c], key `url`",
            ),
            (
                "[sinks.c]\ntype = \"forward\"\nurl = \"http://c\"\ntimeout = \"soon\"\n",
                "in [sinks.c], key `timeout`",
            ),
        ] {
            let err = load_str(text, &[]).unwrap_err().to_string();
            assert!(err.contains("kiln.toml: "), "{err}");
            assert!(err.contains(needle), "{err} (wanted {needle})");
        }
        let ok =
            "[metrics_rules.tls]\nquery = 'api.cpu{env=\"prod\"}'\nfunction = 'crypto/tls\\..*'\n\
                  group_by = [\"env\"]\n[sinks.c]\ntype = \"forward\"\nurl = \"http://c:4040\"\n";
        load_str(ok, &[]).unwrap();
    }

    #[test]
    fn unknown_keys_name_file_table_and_key() {
        let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kiln.toml"), "{err}");
        assert!(err.contains("listen_typo"), "{err}");
        let err = load_str("[server]\nmax_nodes = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[server]") && err.contains("max_nodes"),
            "{err}"
        );
        let err = load_str("[storage]\nretention = \"forever\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention"), "{err}");
        let err = load_str("[pipelines.p]\ntransforms = [\"nope\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[pipelines.p]") && err.contains("nope"),
            "{err}"
        );
        let err = load_str("[transforms.t]\ntype = \"relabel\"\nadd = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("transforms.t") && err.contains("add"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let c = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\nself_profiling = true\n",
            &[
                ("server.listen", "127.0.0.1:2".into()),
                ("server.self_profiling", "false".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert!(!c.server.self_profiling);
    }

    #[test]
    fn memory_bounds_derive_from_the_limit_unless_set() {
        let c = load_str(
            "[server]\nmemory_limit = 1073741824\n[wal]\nmax_unapplied_bytes = 1000\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.wal.max_unapplied_bytes, 1000);
        assert_eq!(c.storage.cache_capacity_bytes, 64 << 20);
        assert_eq!(c.server.max_decompressed_bytes, 128 << 20);
        assert_eq!(c.storage.query_budget_bytes, 128 << 20);
        assert_eq!(c.storage.dictionary_cache_bytes, 128 << 20);
        let d = load_str("", &[]).unwrap();
        assert_eq!(d.wal.max_unapplied_bytes, 32 << 20);
        assert_eq!(d.storage.cache_capacity_bytes, 32 << 20);
        let err = load_str("[server]\nmemory_limit = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_limit"), "{err}");
    }

    #[test]
    fn auth_is_off_by_default_and_set_by_file_or_flag() {
        let c = load_str("", &[]).unwrap();
        assert!(!c.auth.enabled && !c.auth.allow_unauthenticated && !c.auth.open_metrics);
        let c = load_str(
            "[auth]\nenabled = true\n",
            &[("auth.open_metrics", "true".into())],
        )
        .unwrap();
        assert!(c.auth.enabled && c.auth.open_metrics);
        let err = load_str("[auth]\nenable = true\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[auth]") && err.contains("enable"), "{err}");
    }

    #[test]
    fn tls_and_limits_are_read_and_checked() {
        let c = load_str("", &[]).unwrap();
        assert!(!c.tls.enabled());
        assert_eq!(c.limits.max_concurrent_queries, 64);
        let c = load_str(
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[limits]\nquery_timeout = \"5s\"\n[limits.tenants.big]\nmax_series = 7\n",
            &[("limits.max_series", "3".into())],
        )
        .unwrap();
        assert!(c.tls.enabled());
        assert_eq!(c.limits.query_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.for_tenant("big").max_series, 7);
        assert_eq!(c.limits.for_tenant("small").max_series, 3);
        for (text, needle) in [
            ("[tls]\ncert_file = \"c.pem\"\n", "key_file"),
            ("[tls]\nclient_ca_file = \"ca.pem\"\n", "client_ca_file"),
            ("[limits]\nquery_timeout = \"0s\"\n", "query_timeout"),
            ("[limits]\nmax_series_typo = 1\n", "max_series_typo"),
            (
                "[limits.tenants.big]\nmax_stack_depth = 1\n",
                "limits.tenants.big",
            ),
        ] {
            let err = load_str(text, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn unset_levels_are_each_backends_own() {
        use kiln_storage_clickhouse::LevelChoice;
        let c = load_str("[storage]\nretention = \"7d\"\n", &[]).unwrap();
        assert!(
            c.sled_config().levels.is_empty(),
            "the data directory's own, or the default"
        );
        assert_eq!(
            c.sled_config().max_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            c.clickhouse_levels(),
            LevelChoice::Default {
                max_retention: 7 * 86_400
            },
            "ClickHouse's, or the database's"
        );
        let c = load_str(
            "[storage]\nretention = \"7d\"\nlevels = [{ resolution = \"10s\", retention = \"30d\" }]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.clickhouse_levels(),
            LevelChoice::Configured(vec![(10, 7 * 86_400)]),
            "as configured, capped by retention"
        );
        assert_eq!(c.sled_config().levels.len(), 1);
    }

    #[test]
    fn retention_caps_levels() {
        let c = load_str(
            "[storage]\nretention = \"1d\"\nlevels = [{ resolution = \"10s\", retention = \"3d\" }, { resolution = \"200000s\", retention = \"30d\" }]\n",
            &[],
        )
        .unwrap();
        let levels = c.sled_config().levels;
        assert_eq!(levels[0].retention, Duration::from_secs(86_400));
        assert_eq!(
            levels[1].retention, levels[1].resolution,
            "at least one bucket"
        );
    }
}
