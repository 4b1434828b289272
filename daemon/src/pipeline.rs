//! Pipelines: decoders → transforms → storage (+ sinks), built from the configuration.

use std::sync::Arc;

use kiln_plugin_api::{Labels, Profile, SinkExporter, Storage, Transform};
use regex::Regex;

use crate::config::Config;
use crate::metrics::Metrics;

pub struct Pipeline {
    pub name: String,
    match_app: Option<Regex>,
    match_labels: Vec<(String, String)>,
    /// Accepted formats; empty accepts every decoder.
    pub formats: Vec<String>,
    pub transforms: Vec<Arc<dyn Transform>>,
    pub sinks: Vec<(String, Arc<dyn SinkExporter>)>,
    pub storage: Arc<dyn Storage>,
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

    /// Stores the profiles, then hands them to every sink in the background.
    pub async fn store(
        &self,
        profiles: Vec<Profile>,
        metrics: &Metrics,
    ) -> Result<(), kiln_plugin_api::StorageError> {
        if profiles.is_empty() {
            return Ok(());
        }
        let shared = (!self.sinks.is_empty()).then(|| Arc::new(profiles.clone()));
        self.storage.write(profiles).await?;
        if let Some(batch) = shared {
            for (name, sink) in &self.sinks {
                let (name, sink, batch, metrics) =
                    (name.clone(), sink.clone(), batch.clone(), metrics.clone());
                tokio::spawn(async move {
                    if let Err(e) = sink.export(&batch).await {
                        metrics.sink_error(&name);
                        tracing::warn!(sink = %name, error = %e, "sink export failed");
                    }
                });
            }
        }
        Ok(())
    }
}

/// Every pipeline, in routing order (`default` last).
pub struct Pipelines {
    list: Vec<Arc<Pipeline>>,
}

impl Pipelines {
    /// Builds every pipeline; `formats` are the decoders available (built in and plugins) and
    /// `plugins` the loaded native plugins, which provide transform types beyond the built-ins.
    pub fn build(
        config: &Config,
        storage: Arc<dyn Storage>,
        formats: &[&str],
        plugins: &[crate::plugins::NativeLibrary],
    ) -> anyhow::Result<Self> {
        let mut names: Vec<&String> = config
            .pipelines
            .keys()
            .filter(|n| *n != "default")
            .collect();
        names.sort();
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
            let transforms = p
                .transforms
                .iter()
                .map(|t| build_transform(t, config, plugins))
                .collect::<anyhow::Result<_>>()?;
            let sinks = p
                .sinks
                .iter()
                .map(|s| Ok((s.clone(), build_sink(s, config)?)))
                .collect::<anyhow::Result<_>>()?;
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
                storage: storage.clone(),
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

fn build_transform(
    name: &str,
    config: &Config,
    plugins: &[crate::plugins::NativeLibrary],
) -> anyhow::Result<Arc<dyn Transform>> {
    let c = &config.transforms[name];
    let table = format!("transforms.{name}");
    if c.kind == "relabel" {
        return Ok(Arc::new(crate::relabel::Relabel(c.options(&table)?)));
    }
    let plugin = plugins
        .iter()
        .find(|p| p.kind == kiln_plugin_api::ComponentKind::Transform && p.name == c.kind)
        .ok_or_else(|| {
            let available: Vec<&str> = crate::config::BUILTIN_TRANSFORMS
                .iter()
                .copied()
                .chain(
                    plugins
                        .iter()
                        .filter(|p| p.kind == kiln_plugin_api::ComponentKind::Transform)
                        .map(|p| p.name.as_str()),
                )
                .collect();
            anyhow::anyhow!(
                "in [{table}], key `type`: unknown transform {:?}; available: {}",
                c.kind,
                available.join(", ")
            )
        })?;
    let options = serde_json::to_string(&c.options).expect("TOML tables serialize as JSON");
    Ok(plugin
        .instantiate(&options)
        .map_err(|e| anyhow::anyhow!("in [{table}]: {e}"))?)
}

fn build_sink(name: &str, config: &Config) -> anyhow::Result<Arc<dyn SinkExporter>> {
    let c = &config.sinks[name];
    let table = format!("sinks.{name}");
    match c.kind.as_str() {
        "log" => {
            c.options::<crate::config::LogSinkConfig>(&table)?;
            Ok(Arc::new(LogSink(name.to_string())))
        }
        other => anyhow::bail!("in [{table}], key `type`: unknown sink {other:?}"),
    }
}

/// `type = "log"`: logs one line per batch.
struct LogSink(String);

#[async_trait::async_trait]
impl SinkExporter for LogSink {
    async fn export(&self, profiles: &[Profile]) -> Result<(), kiln_plugin_api::ExportError> {
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
