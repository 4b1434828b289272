//! Prometheus metrics about the daemon itself, served at `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cause {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Sink {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFault {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Skip {
    format: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginName {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    cause: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitRefusal {
    limit: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrapeOutcome {
    job: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrapeJob {
    job: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The daemon's counters and histograms. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    profiles: Counter,
    requests: Counter,
    bytes: Counter,
    errors: Family<Cause, Counter>,
    query_latency: Family<Endpoint, Histogram, fn() -> Histogram>,
    sink_errors: Family<Sink, Counter>,
    sink_dropped: Family<Sink, Counter>,
    plugin_faults: Family<PluginFault, Counter>,
    plugins_disabled: Family<PluginName, Gauge>,
    plugin_cpu: Family<PluginName, Counter<f64, AtomicU64>>,
    wal_backlog: Gauge,
    wal_disk: Gauge,
    early_flushes: Counter,
    decode_skipped: Family<Skip, Counter>,
    queries_pruned: Counter,
    dictionary_resident: Gauge,
    compression_dictionaries: Gauge,
    dictionary_loads: Counter,
    dictionary_evictions: Counter,
    write_buffer: Gauge,
    heap_allocated: Gauge,
    heap_resident: Gauge,
    early_applies: Counter,
    background_applies: Counter,
    auth_refused: Family<Refusal, Counter>,
    limit_refused: Family<LimitRefusal, Counter>,
    disk_free: Gauge,
    storage_bytes: Gauge,
    storage_disk_bytes: Gauge,
    size_deleted: Counter,
    storage_refused: Family<Cause, Counter>,
    stacks_truncated: Family<TenantLabel, Counter>,
    scrapes: Family<ScrapeOutcome, Counter>,
    remote_writes: Family<Outcome, Counter>,
    scrape_duration: Family<ScrapeJob, Histogram, fn() -> Histogram>,
    /// The `[metrics_rules]` in force, rendered after the daemon's own metrics.
    rules: Arc<arc_swap::ArcSwapOption<crate::rules::RuleSet>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let profiles = Counter::default();
        let requests = Counter::default();
        let bytes = Counter::default();
        let errors = Family::<Cause, Counter>::default();
        let query_latency = Family::<Endpoint, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let sink_errors = Family::<Sink, Counter>::default();
        let sink_dropped = Family::<Sink, Counter>::default();
        let plugin_faults = Family::<PluginFault, Counter>::default();
        let plugins_disabled = Family::<PluginName, Gauge>::default();
        let plugin_cpu = Family::<PluginName, Counter<f64, AtomicU64>>::default();
        let scrapes = Family::<ScrapeOutcome, Counter>::default();
        let remote_writes = Family::<Outcome, Counter>::default();
        registry.register(
            "metrics_remote_writes",
            "Remote-write requests of the metrics rules' counters, by outcome (ok, failed)",
            remote_writes.clone(),
        );
        let scrape_duration =
            Family::<ScrapeJob, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "scrapes",
            "Profiles pulled from scrape targets, by job and outcome",
            scrapes.clone(),
        );
        registry.register(
            "scrape_duration_seconds",
            "Time of one scrape of one profile of a target (a CPU profile lasts its window), by job",
            scrape_duration.clone(),
        );
        let wal_backlog = Gauge::default();
        let wal_disk = Gauge::default();
        let early_flushes = Counter::default();
        registry.register(
            "wal_unapplied_bytes",
            "Logged push bytes not yet checkpointed, that is not yet durable in storage (pushes get 503 past wal.max_unflushed_bytes)",
            wal_backlog.clone(),
        );
        registry.register(
            "wal_disk_bytes",
            "Bytes the write-ahead log's segments take on disk",
            wal_disk.clone(),
        );
        registry.register(
            "wal_early_flushes",
            "Flushes made before server.flush_interval because the log passed half of wal.max_unflushed_bytes",
            early_flushes.clone(),
        );
        let decode_skipped = Family::<Skip, Counter>::default();
        let queries_pruned = Counter::default();
        let dictionary_resident = Gauge::default();
        let compression_dictionaries = Gauge::default();
        let dictionary_loads = Counter::default();
        let dictionary_evictions = Counter::default();
        let write_buffer = Gauge::default();
        let early_applies = Counter::default();
        let background_applies = Counter::default();
        let heap_allocated = Gauge::default();
        let heap_resident = Gauge::default();
        registry.register(
            "memory_allocated_bytes",
            "Bytes the daemon's allocator has handed out and not had back (jemalloc stats.allocated)",
            heap_allocated.clone(),
        );
        registry.register(
            "memory_resident_bytes",
            "Bytes of the allocator's pages resident in memory, including freed pages not yet returned to the system (jemalloc stats.resident)",
            heap_resident.clone(),
        );
        registry.register(
            "storage_write_buffer_bytes",
            "Estimated bytes of values written since storage last applied them to disk (bounded by storage.write_buffer_bytes)",
            write_buffer.clone(),
        );
        registry.register(
            "storage_early_applies",
            "Writes that waited to apply the write buffer to disk themselves because it reached storage.write_buffer_bytes with an apply still running",
            early_applies.clone(),
        );
        registry.register(
            "storage_background_applies",
            "Applies of the write buffer to disk started between flushes because it passed three quarters of storage.write_buffer_bytes",
            background_applies.clone(),
        );
        registry.register(
            "storage_dictionary_bytes",
            "Bytes of services' frame and stack dictionaries resident in memory, estimated: blocks of entries and the maps that intern new ones (bounded by storage.dictionary_cache_bytes after each flush, except entries not yet on disk)",
            dictionary_resident.clone(),
        );
        registry.register(
            "storage_compression_dictionary_bytes",
            "Bytes of memory for storage's compression dictionaries: chunks sampled to train them (at most 4 MiB) and dictionaries prepared for packing and unpacking (bounded by a quarter of storage.dictionary_cache_bytes, at least 4 MiB)",
            compression_dictionaries.clone(),
        );
        registry.register(
            "storage_dictionary_loads",
            "Dictionary blocks read back from disk because a write or a query needed them",
            dictionary_loads.clone(),
        );
        registry.register(
            "storage_dictionary_evictions",
            "Dictionary blocks, and generations of the maps that intern new entries, dropped from memory (least recently used first) to stay within storage.dictionary_cache_bytes",
            dictionary_evictions.clone(),
        );
        registry.register(
            "queries_pruned",
            "Queries whose tree reached storage.query_budget_bytes: the smallest stacks were folded into `other`",
            queries_pruned.clone(),
        );
        registry.register(
            "ingested_profiles",
            "Profiles stored (one per series and type)",
            profiles.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingest requests accepted",
            requests.clone(),
        );
        registry.register(
            "ingested_bytes",
            "Request body bytes received by ingest",
            bytes.clone(),
        );
        registry.register(
            "ingest_errors",
            "Ingest requests refused, by cause",
            errors.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Query latency, by endpoint",
            query_latency.clone(),
        );
        registry.register(
            "sink_errors",
            "Sink exporter failures, by sink",
            sink_errors.clone(),
        );
        registry.register(
            "sink_dropped_profiles",
            "Profiles not handed to a sink because its queue was full (the sink is slower than ingest)",
            sink_dropped.clone(),
        );
        registry.register(
            "plugin_faults",
            "Plugin calls that faulted, by plugin and kind (trap, timeout, memory, panic)",
            plugin_faults.clone(),
        );
        registry.register(
            "plugin_cpu_seconds",
            "CPU time spent in calls of a Wasm plugin (its own code, and for a sink the conversion of each batch), by plugin",
            plugin_cpu.clone(),
        );
        registry.register(
            "plugin_disabled",
            "1 for a plugin instance disabled after repeated faults, until the next reload",
            plugins_disabled.clone(),
        );
        registry.register(
            "decode_skipped",
            "Parts of accepted bodies a decoder skipped instead of refusing the body (unknown JFR events, missing stack traces or frames, unmappable thread states, negative values), by format and reason",
            decode_skipped.clone(),
        );
        let auth_refused = Family::<Refusal, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests refused by the auth layer, by cause (unauthenticated, malformed_credentials, unknown_key, revoked_key, expired_key, forbidden, tenant_mismatch, bad_tenant, remote_unauthenticated) and tenant (empty when no credential named one)",
            auth_refused.clone(),
        );
        let disk_free = Gauge::default();
        registry.register(
            "storage_disk_free_bytes",
            "Free bytes on the filesystem of the data directory (and of the write-ahead log, the smaller); pushes get 507 below storage.min_free_disk_bytes",
            disk_free.clone(),
        );
        let storage_bytes = Gauge::default();
        registry.register(
            "storage_bytes",
            "Bytes storage holds as it accounts them (live chunks and dictionaries), at the last retention pass; storage.max_disk_bytes bounds this",
            storage_bytes.clone(),
        );
        let storage_disk_bytes = Gauge::default();
        registry.register(
            "storage_disk_bytes",
            "Bytes the storage's files take on disk, at the last retention pass (follows storage_bytes with a lag)",
            storage_disk_bytes.clone(),
        );
        let size_deleted = Counter::default();
        registry.register(
            "storage_size_retention_deleted_chunks",
            "Chunks deleted by retention by size (storage.max_disk_bytes)",
            size_deleted.clone(),
        );
        let storage_refused = Family::<Cause, Counter>::default();
        registry.register(
            "storage_writes_refused",
            "Pushes refused to protect storage, by cause (min_free_disk_bytes)",
            storage_refused.clone(),
        );
        let limit_refused = Family::<LimitRefusal, Counter>::default();
        registry.register(
            "limit_refused",
            "Requests refused by a limit, by limit (limits.ingest_bytes_per_second, limits.max_series, limits.max_label_name_length, limits.max_label_value_length, limits.max_label_count, limits.max_samples_per_profile, limits.max_concurrent_queries, limits.query_timeout, limits.body_read_timeout) and tenant",
            limit_refused.clone(),
        );
        let stacks_truncated = Family::<TenantLabel, Counter>::default();
        registry.register(
            "stacks_truncated",
            "Stacks deeper than limits.max_stack_depth cut to their leaf-side frames under a [truncated] frame, by tenant",
            stacks_truncated.clone(),
        );
        Self {
            registry: Arc::new(registry),
            profiles,
            requests,
            bytes,
            errors,
            query_latency,
            scrapes,
            remote_writes,
            scrape_duration,
            sink_errors,
            sink_dropped,
            plugin_faults,
            plugins_disabled,
            plugin_cpu,
            wal_backlog,
            wal_disk,
            early_flushes,
            decode_skipped,
            queries_pruned,
            dictionary_resident,
            compression_dictionaries,
            dictionary_loads,
            dictionary_evictions,
            write_buffer,
            early_applies,
            background_applies,
            heap_allocated,
            heap_resident,
            auth_refused,
            limit_refused,
            disk_free,
            storage_bytes,
            storage_disk_bytes,
            size_deleted,
            storage_refused,
            stacks_truncated,
            rules: Arc::default(),
        }
    }
}

impl Metrics {
    /// One remote-write request of the rules' counters ended.
    pub fn remote_write(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.remote_writes.get_or_create(&Outcome { outcome }).inc();
    }

    /// One scrape of one profile of a `job` target ended with `outcome` after `took`.
    pub fn scraped(&self, job: &str, outcome: &str, took: Duration) {
        self.scrapes
            .get_or_create(&ScrapeOutcome {
                job: job.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.scrape_duration
            .get_or_create(&ScrapeJob {
                job: job.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn ingested(&self, profiles: usize, bytes: usize) {
        self.requests.inc();
        self.profiles.inc_by(profiles as u64);
        self.bytes.inc_by(bytes as u64);
    }

    pub fn ingest_error(&self, cause: &str) {
        self.errors
            .get_or_create(&Cause {
                cause: cause.into(),
            })
            .inc();
    }

    /// A request the auth layer refused. `tenant` comes from a known credential only, never
    /// from what a client merely claims, so refusals cannot grow the label set without bound.
    pub fn auth_refused(&self, cause: &str, tenant: &str) {
        self.auth_refused
            .get_or_create(&Refusal {
                cause: cause.into(),
                tenant: tenant.into(),
            })
            .inc();
    }

    /// A request a limit refused (`limit` is `limits.NAME`).
    pub fn limit_refused(&self, limit: &str, tenant: &str) {
        self.limit_refused
            .get_or_create(&LimitRefusal {
                limit: limit.into(),
                tenant: tenant.into(),
            })
            .inc();
    }

    pub fn stacks_truncated(&self, tenant: &str, stacks: u64) {
        self.stacks_truncated
            .get_or_create(&TenantLabel {
                tenant: tenant.into(),
            })
            .inc_by(stacks);
    }

    pub fn query(&self, endpoint: &str, took: Duration) {
        self.query_latency
            .get_or_create(&Endpoint {
                endpoint: endpoint.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn query_pruned(&self) {
        self.queries_pruned.inc();
    }

    pub fn sink_error(&self, sink: &str) {
        self.sink_errors
            .get_or_create(&Sink { sink: sink.into() })
            .inc();
    }

    pub fn sink_dropped(&self, sink: &str, profiles: usize) {
        self.sink_dropped
            .get_or_create(&Sink { sink: sink.into() })
            .inc_by(profiles as u64);
    }

    pub fn plugin_fault(&self, plugin: &str, kind: &str) {
        self.plugin_faults
            .get_or_create(&PluginFault {
                plugin: plugin.into(),
                kind: kind.into(),
            })
            .inc();
    }

    pub fn disk_free(&self, bytes: u64) {
        self.disk_free.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// What the last retention pass found storage to hold.
    pub fn storage_size(&self, bytes: u64, disk_bytes: Option<u64>) {
        self.storage_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        if let Some(d) = disk_bytes {
            self.storage_disk_bytes
                .set(i64::try_from(d).unwrap_or(i64::MAX));
        }
    }

    pub fn size_retention_deleted(&self, chunks: u64) {
        self.size_deleted.inc_by(chunks);
    }

    pub fn storage_write_refused(&self, cause: &str) {
        self.storage_refused
            .get_or_create(&Cause {
                cause: cause.into(),
            })
            .inc();
    }

    pub fn wal_backlog(&self, bytes: u64) {
        self.wal_backlog.set(bytes as i64);
    }

    pub fn wal_disk_bytes(&self, bytes: u64) {
        self.wal_disk.set(bytes as i64);
    }

    pub fn early_flush(&self) {
        self.early_flushes.inc();
    }

    /// Forgets disabled instances: a reload builds new ones.
    pub fn plugins_reloaded(&self) {
        self.plugins_disabled.clear();
    }

    /// The `[metrics_rules]` whose counters `/metrics` shows (set at start and on reload).
    pub fn set_rules(&self, rules: Arc<crate::rules::RuleSet>) {
        self.rules.store(Some(rules));
    }

    pub fn rules(&self) -> Option<Arc<crate::rules::RuleSet>> {
        self.rules.load_full()
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        // Decoders count what they skip in a process-wide table (they know nothing of the
        // daemon); it is copied here at each scrape.
        for (format, reason, n) in kiln_plugin_api::skipped::snapshot() {
            let c = self.decode_skipped.get_or_create(&Skip {
                format: format.into(),
                reason: reason.into(),
            });
            c.inner().store(n, std::sync::atomic::Ordering::Relaxed);
        }
        let buffer = kiln_storage_sled::write_buffer_stats();
        self.write_buffer.set(buffer.bytes as i64);
        self.early_applies
            .inner()
            .store(buffer.early_applies, std::sync::atomic::Ordering::Relaxed);
        self.background_applies.inner().store(
            buffer.background_applies,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some((allocated, resident)) = allocator_stats() {
            self.heap_allocated.set(allocated as i64);
            self.heap_resident.set(resident as i64);
        }
        let dict = kiln_storage_sled::dictionary_stats();
        self.dictionary_resident.set(dict.resident_bytes as i64);
        self.compression_dictionaries
            .set(dict.compression_bytes as i64);
        self.dictionary_loads
            .inner()
            .store(dict.loads, std::sync::atomic::Ordering::Relaxed);
        self.dictionary_evictions
            .inner()
            .store(dict.evictions, std::sync::atomic::Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        if let Some(rules) = self.rules.load_full() {
            // Before the closing `# EOF` the encoder writes.
            let eof = out.rfind("# EOF").unwrap_or(out.len());
            let tail = out.split_off(eof);
            rules.render(&mut out);
            out.push_str(&tail);
        }
        out
    }
}

impl kiln_wasm_host::PluginObserver for Metrics {
    fn fault(&self, plugin: &str, kind: kiln_wasm_host::FaultKind) {
        self.plugin_fault(plugin, kind.as_str());
    }

    fn cpu(&self, plugin: &str, seconds: f64) {
        self.plugin_cpu
            .get_or_create(&PluginName {
                plugin: plugin.into(),
            })
            .inc_by(seconds);
    }

    fn disabled(&self, plugin: &str) {
        self.plugins_disabled
            .get_or_create(&PluginName {
                plugin: plugin.into(),
            })
            .set(1);
    }
}

/// jemalloc's allocated and resident byte counts, refreshed (they are cached until an epoch
/// advance). `None` if the allocator cannot say.
fn allocator_stats() -> Option<(usize, usize)> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    let resident = tikv_jemalloc_ctl::stats::resident::read().ok()?;
    Some((allocated, resident))
}
