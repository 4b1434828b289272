//! Translates querier requests into the storage queries `/render` makes: a [`Selector`] from
//! `profile_typeID` and `label_selector`, a range from milliseconds, and the label filters
//! Grafana adds on the labels Kiln derives from the profile type (`__name__`,
//! `__profile_type__`, …).

use kiln_plugin_api::{
    labels::SERVICE_NAME, selector::TypeSelector, Labels, Matcher, ProfileType, Selector,
    SeriesInfo,
};

use crate::connect::ConnectError;

/// Labels Grafana Pyroscope derives from a series' profile type; Kiln stores the type apart
/// from the labels, so matchers on these are checked against the type.
pub const NAME: &str = "__name__";
pub const PROFILE_TYPE: &str = "__profile_type__";
const DERIVED: &[&str] = &[
    NAME,
    PROFILE_TYPE,
    "__type__",
    "__unit__",
    "__period_type__",
    "__period_unit__",
];

/// A parsed label selector: matchers on stored labels, and matchers on derived ones.
#[derive(Debug, Clone, Default)]
pub struct LabelFilter {
    pub stored: Vec<Matcher>,
    pub derived: Vec<Matcher>,
}

impl LabelFilter {
    /// `{service_name="api", env=~"prod|staging"}`; empty or `{}` selects everything.
    pub fn parse(raw: &str) -> Result<Self, ConnectError> {
        let raw = raw.trim();
        if raw.is_empty() || raw == "{}" {
            return Ok(Self::default());
        }
        if !raw.starts_with('{') {
            return Err(ConnectError::invalid(format!(
                "label selector {raw:?}: expected {{name=\"value\", …}}"
            )));
        }
        let parsed = Selector::parse(raw)
            .map_err(|e| ConnectError::invalid(format!("label selector: {e}")))?;
        let (derived, stored) = parsed
            .matchers
            .into_iter()
            .partition(|m| DERIVED.contains(&m.name.as_str()));
        Ok(Self { stored, derived })
    }

    /// The storage selector of this filter for profiles of type `id` (any type when `None`).
    pub fn selector(&self, type_id: Option<&str>) -> Selector {
        Selector {
            profile_type: type_id.map(|id| TypeSelector::Id(id.to_string())),
            matchers: self.stored.clone(),
        }
    }

    /// Whether a series of type `t` passes the matchers on derived labels.
    pub fn type_matches(&self, t: &ProfileType) -> bool {
        let derived = derived_labels(t);
        self.derived.iter().all(|m| m.matches(&derived))
    }
}

/// The derived labels of a profile type, as Grafana Pyroscope names them.
pub fn derived_labels(t: &ProfileType) -> Labels {
    Labels::from_pairs([
        (NAME, t.metric.clone()),
        (PROFILE_TYPE, t.id()),
        ("__type__", t.sample_type.clone()),
        ("__unit__", t.sample_unit.clone()),
        ("__period_type__", t.period_type.clone()),
        ("__period_unit__", t.period_unit.clone()),
    ])
}

/// A series' labels with the derived ones, as `Series` and `LabelValues` list them.
pub fn all_labels(s: &SeriesInfo) -> Labels {
    let mut labels = s.labels.clone();
    for (k, v) in derived_labels(&s.profile_type).iter() {
        labels.insert(k, v);
    }
    if labels.get(SERVICE_NAME).is_none() {
        labels.insert(SERVICE_NAME, "");
    }
    labels
}

/// The filters of a list of matcher strings; none selects everything.
pub fn filters(matchers: &[String]) -> Result<Vec<LabelFilter>, ConnectError> {
    let mut out: Vec<LabelFilter> = matchers
        .iter()
        .map(|m| LabelFilter::parse(m))
        .collect::<Result<_, _>>()?;
    if out.is_empty() {
        out.push(LabelFilter::default());
    }
    Ok(out)
}

/// The profile type id a select request names; required.
pub fn type_id(id: &str) -> Result<&str, ConnectError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(ConnectError::invalid(
            "profile_typeID is required, e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        ));
    }
    if id.split(':').count() != 5 {
        return Err(ConnectError::invalid(format!(
            "profile_typeID {id:?} is not name:sample_type:sample_unit:period_type:period_unit"
        )));
    }
    Ok(id)
}

const MS: i64 = 1_000_000;

/// A `[start, end]` range in milliseconds as nanoseconds; required for selects.
pub fn range_ms(start: i64, end: i64) -> Result<(i64, i64), ConnectError> {
    if start <= 0 || end <= 0 {
        return Err(ConnectError::invalid(
            "start and end (Unix milliseconds) are required",
        ));
    }
    if start > end {
        return Err(ConnectError::invalid(format!(
            "start {start} is after end {end}"
        )));
    }
    Ok((start.saturating_mul(MS), end.saturating_mul(MS)))
}

/// A range for label queries: all time when unset.
pub fn range_or_all(start: i64, end: i64) -> Result<(i64, i64), ConnectError> {
    match (start, end) {
        (0, 0) => Ok((i64::MIN / 2, i64::MAX / 2)),
        (s, 0) => Ok((s.saturating_mul(MS), i64::MAX / 2)),
        (s, e) if s > e => Err(ConnectError::invalid(format!("start {s} is after end {e}"))),
        (s, e) => Ok((s.saturating_mul(MS), e.saturating_mul(MS))),
    }
}

/// `series` narrowed to those of the filter's derived labels.
pub fn keep(filter: &LabelFilter, series: Vec<SeriesInfo>) -> Vec<SeriesInfo> {
    series
        .into_iter()
        .filter(|s| filter.type_matches(&s.profile_type))
        .collect()
}
