//! Pipelines: decoders → transforms → storage (+ sinks), built from the configuration.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use kiln_plugin_api::{ComponentKind, Labels, Profile, SinkExporter, Storage, Tenant, Transform};
use regex::Regex;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::Registry;
use crate::sink_queue::{Selected, SinkQueue};

pub struct Pipeline {
    pub name: String,
    match_app: Option<Regex>,
    match_labels: Vec<(String, String)>,
    /// Accepted formats; empty accepts every decoder.
    pub formats: Vec<String>,
    pub transforms: Vec<Arc<dyn Transform>>,
    pub sinks: Vec<Arc<SinkQueue>>,
}

impl Pipeline {
    fn matches(&self, app: &str, labels: &Labels) -> bool {
        self.match_app.as_ref().is_none_or(|r| r.is_match(app))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v.as_str()))
    }

    pub fn accepts(&self, format: &str) -> bool {
        self.formats.is_empty() || self.formats.iter().any(|f| f == format)
    }

    /// Runs the transforms (CPU work: call from a blocking context).
    pub fn transform(&self, mut profiles: Vec<Profile>) -> Result<Vec<Profile>, String> {
        for t in &self.transforms {
            profiles = t.transform(profiles).map_err(|e| e.to_string())?;
            for p in &profiles {
                p.validate()
                    .map_err(|e| format!("a transform produced an invalid profile: {e}"))?;
            }
        }
        Ok(profiles)
    }

    /// Stores the profiles directly (not through the write-ahead log: the daemon's own
    /// profiles), then queues them for every sink.
    pub async fn store(
        &self,
        storage: &dyn Storage,
        tenant: &Tenant,
        profiles: Vec<Profile>,
    ) -> Result<(), kiln_plugin_api::StorageError> {
        if profiles.is_empty() {
            return Ok(());
        }
        if !self.has_sinks() {
            return storage.write(tenant, profiles).await;
        }
        // Rare (a sink on the daemon's own profiles): storage gets a copy.
        let shared: Arc<[Profile]> = profiles.into();
        let for_sinks = self.select_for_sinks(&shared, 0..shared.len());
        storage.write(tenant, shared.to_vec()).await?;
        for_sinks.deliver();
        Ok(())
    }

    pub fn has_sinks(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// What each sink wants of `batch[range]` (this pipeline's profiles in a batch that storage
    /// shares): a list of indices per sink, no copies.
    pub fn select_for_sinks(&self, batch: &Arc<[Profile]>, range: Range<usize>) -> SinkDeliveries {
        SinkDeliveries(
            self.sinks
                .iter()
                .filter_map(|queue| Some((queue.clone(), queue.select(batch, range.clone())?)))
                .collect(),
        )
    }
}

/// Profiles selected for each sink, to queue once they are stored.
#[derive(Default)]
pub struct SinkDeliveries(Vec<(Arc<SinkQueue>, Selected)>);

impl SinkDeliveries {
    /// Queues every selection for its sink (delivered in the background).
    pub fn deliver(self) {
        for (queue, selected) in self.0 {
            queue.deliver(selected);
        }
    }
}

/// Every pipeline, in routing order (`default` last).
pub struct Pipelines {
    list: Vec<Arc<Pipeline>>,
}

impl Pipelines {
    /// Builds every pipeline; `formats` are the decoders available (built in and plugins) and
    /// `plugins` provide transform and sink types beyond the built-ins.
    pub fn build(
        config: &Config,
        formats: &[&str],
        plugins: &Registry,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let mut names: Vec<&String> = config
            .pipelines
            .keys()
            .filter(|n| *n != "default")
            .collect();
        names.sort();
        // Every defined component is built, used or not, so a mistake in one shows up now; a
        // component used by several pipelines is one instance.
        let transforms: BTreeMap<&String, Arc<dyn Transform>> = config
            .transforms
            .keys()
            .map(|name| Ok((name, build_transform(name, config, plugins)?)))
            .collect::<anyhow::Result<_>>()?;
        let sinks: BTreeMap<&String, Arc<SinkQueue>> = config
            .sinks
            .keys()
            .map(|name| {
                let sink = build_sink(name, config, plugins, metrics)?;
                let wait = config.sinks[name]
                    .batch_wait
                    .unwrap_or(crate::sink_queue::DEFAULT_BATCH_WAIT);
                Ok((
                    name,
                    Arc::new(SinkQueue::new(name, sink, wait, metrics.clone())),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let default = crate::config::PipelineConfig::default();
        let mut list = Vec::new();
        for name in names.into_iter().map(String::as_str).chain(["default"]) {
            let p = config.pipelines.get(name).unwrap_or(&default);
            for d in &p.decoders {
                if !formats.contains(&d.as_str()) {
                    anyhow::bail!(
                        "in [pipelines.{name}], key `decoders`: unknown decoder {d:?}; available: {}",
                        formats.join(", ")
                    );
                }
            }
            let transforms = p.transforms.iter().map(|t| transforms[t].clone()).collect();
            let sinks = p.sinks.iter().map(|s| sinks[s].clone()).collect();
            list.push(Arc::new(Pipeline {
                name: name.to_string(),
                match_app: match (&p.match_app, name) {
                    (_, "default") => None,
                    (Some(re), _) => Some(Regex::new(&format!("^(?:{re})$"))?),
                    (None, _) => None,
                },
                match_labels: if name == "default" {
                    Vec::new()
                } else {
                    p.match_labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                },
                formats: p.decoders.clone(),
                transforms,
                sinks,
            }));
        }
        Ok(Self { list })
    }

    /// The pipeline a request for `app` with `labels` goes to.
    pub fn route(&self, app: &str, labels: &Labels) -> Arc<Pipeline> {
        self.list
            .iter()
            .find(|p| p.matches(app, labels))
            .unwrap_or_else(|| self.list.last().expect("default pipeline always exists"))
            .clone()
    }
}

/// `unknown {what} {kind:?}; available: …` for a `type` no built-in or plugin provides.
fn unknown_type(
    table: &str,
    what: ComponentKind,
    kind: &str,
    builtin: &[&str],
    plugins: &Registry,
) -> anyhow::Error {
    let available: Vec<&str> = builtin
        .iter()
        .copied()
        .chain(plugins.of_kind(what).map(|p| p.name()))
        .collect();
    anyhow::anyhow!(
        "in [{table}], key `type`: unknown {what} {kind:?}; available: {}",
        available.join(", ")
    )
}

fn build_transform(
    name: &str,
    config: &Config,
    plugins: &Registry,
) -> anyhow::Result<Arc<dyn Transform>> {
    let c = &config.transforms[name];
    let table = format!("transforms.{name}");
    if c.kind == "relabel" {
        return Ok(Arc::new(crate::relabel::Relabel(c.options(&table)?)));
    }
    let plugin = plugins
        .find(ComponentKind::Transform, &c.kind)
        .ok_or_else(|| {
            unknown_type(
                &table,
                ComponentKind::Transform,
                &c.kind,
                crate::config::BUILTIN_TRANSFORMS,
                plugins,
            )
        })?;
    plugins.transform(plugin, &c.settings, &table)
}

fn build_sink(
    name: &str,
    config: &Config,
    plugins: &Registry,
    metrics: &Metrics,
) -> anyhow::Result<Arc<dyn SinkExporter>> {
    let c = &config.sinks[name];
    let table = format!("sinks.{name}");
    if c.kind == "forward" {
        let options: crate::forward::ForwardConfig = c.options(&table)?;
        options.check(&table)?;
        return Ok(Arc::new(crate::forward::ForwardSink::new(
            name,
            options,
            metrics.clone(),
        )));
    }
    if c.kind == "log" {
        c.options::<crate::config::LogSinkConfig>(&table)?;
        return Ok(Arc::new(LogSink(name.to_string())));
    }
    let plugin = plugins.find(ComponentKind::Sink, &c.kind).ok_or_else(|| {
        unknown_type(
            &table,
            ComponentKind::Sink,
            &c.kind,
            crate::config::BUILTIN_SINKS,
            plugins,
        )
    })?;
    plugins.sink(plugin, &c.settings, &table)
}

/// `type = "log"`: logs one line per batch.
struct LogSink(String);

#[async_trait::async_trait]
impl SinkExporter for LogSink {
    async fn export(&self, profiles: &[&Profile]) -> Result<(), kiln_plugin_api::ExportError> {
        for p in profiles {
            tracing::info!(
                sink = %self.0,
                series = %p.labels,
                profile_type = %p.profile_type.name,
                samples = p.samples.len(),
                total = p.total(),
                "profile"
            );
        }
        Ok(())
    }
}
