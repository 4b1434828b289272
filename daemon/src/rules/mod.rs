//! Metrics from profiles: `[metrics_rules.NAME]` recording rules, evaluated on every stored
//! profile at ingest and exported at `/metrics` as Prometheus counters (see
//! `docs/metrics-rules.md`).
//!
//! Everything a rule needs is compiled once (selector, function regex, unit); evaluating a
//! profile matches the function regex once per frame of the profile's frame table (not per
//! sample) and walks the samples without allocating.

mod eval;
pub mod remote_write;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kiln_plugin_api::labels::SERVICE_NAME;
use kiln_plugin_api::selector::TypeSelector;
use kiln_plugin_api::{ProfileType, Selector};
use regex::Regex;
use serde::Deserialize;

pub use eval::function_value;

/// `[metrics_rules.NAME]` as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `app.type{label matchers}`; the profile type is required (it fixes the unit).
    pub query: String,
    /// Regex on function names (whole name): only the subtrees of matching frames count.
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default)]
    pub value: ValueKind,
    /// Labels kept on the exported series besides `service_name`.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Exported metric name; derived from the rule's name when unset.
    #[serde(default)]
    pub metric: Option<String>,
    /// Series this rule may export; observations for further series are dropped and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_max_series() -> usize {
    1000
}

/// What a matching profile contributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// Every sample (with `function`: every sample whose stack holds a matching frame).
    #[default]
    Total,
    /// Samples whose leaf frame matches `function` (without `function`, the same as total).
    #[serde(rename = "self")]
    SelfValue,
}

/// The unit a rule's values are exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Time: nanosecond values, or samples at the profile's sample rate, as seconds.
    Seconds {
        samples: bool,
    },
    Bytes,
    Count,
}

impl Unit {
    fn of(t: &ProfileType) -> Self {
        let timed = t.period_unit == "nanoseconds";
        match t.sample_unit.as_str() {
            "nanoseconds" => Self::Seconds { samples: false },
            "bytes" => Self::Bytes,
            _ if timed && t.sample_type == "samples" => Self::Seconds { samples: true },
            _ => Self::Count,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Seconds { .. } => "_seconds",
            Self::Bytes => "_bytes",
            Self::Count => "",
        }
    }
}

/// A compiled rule and its counters.
pub struct Rule {
    pub name: String,
    config: RuleConfig,
    selector: Selector,
    function: Option<Regex>,
    unit: Unit,
    /// Exported name, ending in `_total`.
    metric: String,
    state: Arc<Mutex<RuleState>>,
}

/// Separates label values in a series key (a control character labels do not carry).
const SEP: char = '\u{1f}';

thread_local! {
    /// The series key being looked up, reused so that a known series costs no allocation.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Counters of one rule: value by series key (`service_name`, then the `group_by` values in
/// order, joined by [`SEP`]).
#[derive(Default)]
struct RuleState {
    series: HashMap<String, f64>,
    dropped: u64,
}

/// Every rule of the configuration.
#[derive(Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// Why a rule was refused: names the table and key, as other configuration errors do.
#[derive(Debug, thiserror::Error)]
#[error("in [metrics_rules.{rule}], key `{key}`: {message}")]
pub struct RuleError {
    pub rule: String,
    pub key: &'static str,
    pub message: String,
}

impl RuleSet {
    /// Compiles the rules. A rule unchanged from `previous` (a reload) keeps its counters.
    pub fn compile(
        rules: &BTreeMap<String, RuleConfig>,
        previous: Option<&RuleSet>,
    ) -> Result<Self, RuleError> {
        let mut out = Vec::new();
        let mut metrics: BTreeMap<String, &str> = BTreeMap::new();
        for (name, config) in rules {
            let mut rule = Rule::compile(name, config)?;
            if let Some(old) = previous
                .and_then(|p| p.rules.iter().find(|r| &r.name == name))
                .filter(|r| &r.config == config)
            {
                rule.state = old.state.clone();
            }
            if let Some(other) = metrics.insert(rule.metric.clone(), name) {
                return Err(RuleError {
                    rule: name.clone(),
                    key: "metric",
                    message: format!(
                        "metric {:?} is already exported by [metrics_rules.{other}]",
                        rule.metric
                    ),
                });
            }
            out.push(rule);
        }
        Ok(Self { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds `profile` to every rule that selects it.
    pub fn observe(&self, profile: &kiln_plugin_api::Profile) {
        for rule in &self.rules {
            rule.observe(profile);
        }
    }

    /// The rules' counters in Prometheus text format, plus what the caps dropped.
    pub fn render(&self, out: &mut String) {
        render::render(&self.rules, out);
    }

    /// Every series of every rule with its current value (for remote write).
    pub fn values(&self) -> Vec<SeriesValue> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let state = rule.state.lock().expect("not poisoned");
            for (key, &value) in &state.series {
                let names = std::iter::once(SERVICE_NAME)
                    .chain(rule.config.group_by.iter().map(String::as_str));
                out.push(SeriesValue {
                    metric: rule.metric.clone(),
                    labels: names
                        .zip(key.split(SEP))
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    value,
                });
            }
        }
        out
    }
}

/// One exported series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Rule {
    fn compile(name: &str, config: &RuleConfig) -> Result<Self, RuleError> {
        let err = |key, message: String| RuleError {
            rule: name.to_string(),
            key,
            message,
        };
        let selector = Selector::parse(&config.query).map_err(|e| err("query", e.to_string()))?;
        let profile_type = match &selector.profile_type {
            Some(TypeSelector::Name(n)) => ProfileType::well_known(n)
                .ok_or_else(|| err("query", format!("unknown profile type {n:?}")))?,
            Some(TypeSelector::Id(id)) => parse_type_id(id)
                .ok_or_else(|| err("query", format!("bad profile type id {id:?}")))?,
            None => {
                return Err(err(
                    "query",
                    format!(
                        "selector {:?} names no profile type (write app.cpu{{…}}); the type fixes the exported unit",
                        config.query
                    ),
                ))
            }
        };
        let function = config
            .function
            .as_deref()
            .map(|re| {
                Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| err("function", format!("invalid regex: {e}")))
            })
            .transpose()?;
        for label in &config.group_by {
            if !valid_label_name(label) {
                return Err(err(
                    "group_by",
                    format!("{label:?} is not a valid Prometheus label name"),
                ));
            }
            if label == SERVICE_NAME {
                return Err(err(
                    "group_by",
                    "service_name is always kept; do not list it".into(),
                ));
            }
        }
        if config.max_series == 0 {
            return Err(err("max_series", "must be at least 1".into()));
        }
        let unit = Unit::of(&profile_type);
        let metric = match &config.metric {
            Some(m) => {
                if !valid_metric_name(m) {
                    return Err(err(
                        "metric",
                        format!("{m:?} is not a valid Prometheus metric name"),
                    ));
                }
                if m.ends_with("_total") {
                    m.clone()
                } else {
                    format!("{m}_total")
                }
            }
            None => {
                let base = format!("kiln_profile_{}", sanitize(name));
                let suffix = unit.suffix();
                if base.ends_with(suffix) {
                    format!("{base}_total")
                } else {
                    format!("{base}{suffix}_total")
                }
            }
        };
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            selector,
            function,
            unit,
            metric,
            state: Arc::default(),
        })
    }

    fn observe(&self, profile: &kiln_plugin_api::Profile) {
        if !self
            .selector
            .matches(&profile.labels, &profile.profile_type)
        {
            return;
        }
        let raw = match &self.function {
            None => profile.total(),
            Some(re) => function_value(profile, re, self.config.value),
        };
        if raw == 0 {
            return;
        }
        let value = match self.unit {
            Unit::Seconds { samples: false } => raw as f64 / 1e9,
            Unit::Seconds { samples: true } => {
                // Pyroscope's agents sample at 100 Hz unless they say otherwise.
                let rate = match profile.meta.sample_rate {
                    0 => 100,
                    r => r,
                };
                raw as f64 / f64::from(rate)
            }
            Unit::Bytes | Unit::Count => raw as f64,
        };
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(profile.labels.service_name().unwrap_or(""));
            for g in &self.config.group_by {
                key.push(SEP);
                key.push_str(profile.labels.get(g).unwrap_or(""));
            }
            let mut state = self.state.lock().expect("not poisoned");
            // The key is only copied for a series not seen before.
            if let Some(v) = state.series.get_mut(key.as_str()) {
                *v += value;
            } else if state.series.len() >= self.config.max_series {
                state.dropped += 1;
            } else {
                state.series.insert(key.clone(), value);
            }
        });
    }
}

/// `metric:sample_type:sample_unit:period_type:period_unit`.
fn parse_type_id(id: &str) -> Option<ProfileType> {
    let parts: Vec<&str> = id.split(':').collect();
    let [metric, st, su, pt, pu] = parts[..] else {
        return None;
    };
    Some(ProfileType {
        name: st.to_string(),
        metric: metric.to_string(),
        sample_type: st.to_string(),
        sample_unit: su.to_string(),
        period_type: pt.to_string(),
        period_unit: pu.to_string(),
        aggregation: kiln_plugin_api::Aggregation::Sum,
    })
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A rule name as part of a metric name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests;
