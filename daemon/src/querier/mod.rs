//! Grafana Pyroscope's query API over Connect (`/querier.v1.QuerierService/*`,
//! `/settings.v1.SettingsService/Get`), as Grafana's Pyroscope data source and the Profiles
//! Drilldown app call it. Each method translates its request into the storage queries
//! `/render` makes (same selector, same merge, same flamegraph) and answers in the request's
//! encoding: binary protobuf (`application/proto`) or proto3 JSON (`application/json`).

mod proto;
mod select;
mod tree_bytes;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kiln_plugin_api::{Query, RenderContext, Selector, Tenant};
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

use crate::auth::Principal;
use crate::connect::ConnectError;
use crate::server::AppState;
use proto::*;
use select::LabelFilter;

/// Set when a request's `max_nodes` exceeded `server.max_nodes`: the cap that applied.
pub const MAX_NODES_CLAMPED_HEADER: &str = "kiln-max-nodes-clamped";

/// The request's encoding, which the answer uses too.
#[derive(Clone, Copy)]
enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn of(headers: &HeaderMap) -> Result<Self, ConnectError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/proto")
            .to_ascii_lowercase();
        if ct.starts_with("application/json") {
            Ok(Self::Json)
        } else if ct.starts_with("application/proto") || ct.starts_with("application/protobuf") {
            Ok(Self::Proto)
        } else {
            Err(ConnectError::invalid(format!(
                "content type {ct:?}: use application/proto or application/json"
            )))
        }
    }

    fn decode<T: Message + Default + DeserializeOwned>(
        self,
        what: &str,
        body: &[u8],
    ) -> Result<T, ConnectError> {
        match self {
            Self::Proto => {
                T::decode(body).map_err(|e| ConnectError::invalid(format!("{what} protobuf: {e}")))
            }
            // An empty JSON body is the empty message, as for protobuf.
            Self::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
            Self::Json => serde_json::from_slice(body)
                .map_err(|e| ConnectError::invalid(format!("{what} JSON: {e}"))),
        }
    }

    fn encode<T: Message + Serialize>(self, msg: &T) -> Response {
        match self {
            Self::Proto => (
                [(header::CONTENT_TYPE, "application/proto")],
                msg.encode_to_vec(),
            )
                .into_response(),
            Self::Json => (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(msg).expect("messages serialize"),
            )
                .into_response(),
        }
    }
}

/// What a method handler gets.
struct Call<'a> {
    state: &'a AppState,
    tenant: &'a Tenant,
    body: Bytes,
    codec: Codec,
}

impl Call<'_> {
    fn request<T: Message + Default + DeserializeOwned>(
        &self,
        what: &str,
    ) -> Result<T, ConnectError> {
        self.codec.decode(what, &self.body)
    }
}

impl<'a> Call<'a> {
    /// The call of a request: its encoding and its body, un-gzip'd.
    fn new(
        state: &'a AppState,
        principal: &'a Principal,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Self, ConnectError> {
        let codec = Codec::of(headers)?;
        let body = crate::ingest::content_decode(
            headers,
            body,
            state.config.server.max_decompressed_bytes,
        )?;
        Ok(Self {
            state,
            tenant: &principal.tenant,
            body,
            codec,
        })
    }
}

/// Records the latency of method `name` and turns its error into a Connect error.
fn finish(
    state: &AppState,
    name: &'static str,
    started: Instant,
    result: Result<Response, ConnectError>,
) -> Response {
    state.metrics.query(name, started.elapsed());
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A route per method; each expands to its own handler so that axum sees a `Send` future.
macro_rules! route {
    ($router:expr, $path:literal, $name:literal, $method:ident) => {
        $router.route(
            $path,
            post(
                |State(state): State<Arc<AppState>>,
                 principal: Principal,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let started = Instant::now();
                    let result = match Call::new(&state, &principal, &headers, body) {
                        Ok(call) => $method(&call).await,
                        Err(e) => Err(e),
                    };
                    finish(&state, $name, started, result)
                },
            ),
        )
    };
}

/// The querier and settings routes, under `/render`'s query slots and timeout.
pub fn routes(limits: Arc<crate::limits::Limits>) -> Router<Arc<AppState>> {
    let r = Router::new();
    let r = route!(
        r,
        "/querier.v1.QuerierService/ProfileTypes",
        "ProfileTypes",
        profile_types
    );
    let r = route!(
        r,
        "/querier.v1.QuerierService/LabelNames",
        "LabelNames",
        label_names
    );
    let r = route!(
        r,
        "/querier.v1.QuerierService/LabelValues",
        "LabelValues",
        label_values
    );
    let r = route!(r, "/querier.v1.QuerierService/Series", "Series", series);
    let r = route!(
        r,
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        "SelectMergeStacktraces",
        select_merge_stacktraces
    );
    let r = route!(
        r,
        "/querier.v1.QuerierService/SelectMergeProfile",
        "SelectMergeProfile",
        select_merge_profile
    );
    let r = route!(
        r,
        "/querier.v1.QuerierService/SelectSeries",
        "SelectSeries",
        select_series
    );
    let r = route!(r, "/querier.v1.QuerierService/Diff", "Diff", diff);
    let r = route!(
        r,
        "/querier.v1.QuerierService/GetProfileStats",
        "GetProfileStats",
        get_profile_stats
    );
    let r = route!(
        r,
        "/settings.v1.SettingsService/Get",
        "SettingsGet",
        settings_get
    );
    r.route_layer(axum::middleware::from_fn_with_state(
        limits,
        crate::limits::http::queries,
    ))
}

/// The series of every filter (a union), each series once.
async fn matching_series(
    call: &Call<'_>,
    matchers: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<kiln_plugin_api::SeriesInfo>, ConnectError> {
    let (start, end) = select::range_or_all(start, end)?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in select::filters(matchers)? {
        let found = call
            .state
            .storage
            .series(call.tenant, Some(&f.selector(None)), start, end)
            .await
            .map_err(crate::api_error::ApiError::from)?;
        for s in select::keep(&f, found) {
            if seen.insert((s.profile_type.id(), format!("{:?}", s.labels))) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

async fn profile_types(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: ProfileTypesRequest = call.request("ProfileTypesRequest")?;
    let mut types = BTreeMap::new();
    for s in matching_series(call, &[], req.start, req.end).await? {
        let t = s.profile_type;
        types.entry(t.id()).or_insert_with(|| ProfileType {
            id: t.id(),
            name: t.metric.clone(),
            sample_type: t.sample_type.clone(),
            sample_unit: t.sample_unit.clone(),
            period_type: t.period_type.clone(),
            period_unit: t.period_unit.clone(),
        });
    }
    Ok(call.codec.encode(&ProfileTypesResponse {
        profile_types: types.into_values().collect(),
    }))
}

async fn label_names(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: LabelNamesRequest = call.request("LabelNamesRequest")?;
    let mut names = BTreeSet::new();
    for s in matching_series(call, &req.matchers, req.start, req.end).await? {
        names.extend(select::all_labels(&s).iter().map(|(k, _)| k.to_string()));
    }
    Ok(call.codec.encode(&NamesResponse {
        names: names.into_iter().collect(),
    }))
}

async fn label_values(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: LabelValuesRequest = call.request("LabelValuesRequest")?;
    if req.name.is_empty() {
        return Err(ConnectError::invalid("name (the label) is required"));
    }
    let mut values = BTreeSet::new();
    for s in matching_series(call, &req.matchers, req.start, req.end).await? {
        if let Some(v) = select::all_labels(&s).get(&req.name) {
            if !v.is_empty() {
                values.insert(v.to_string());
            }
        }
    }
    Ok(call.codec.encode(&NamesResponse {
        names: values.into_iter().collect(),
    }))
}

async fn series(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SeriesRequest = call.request("SeriesRequest")?;
    let mut sets = BTreeSet::new();
    for s in matching_series(call, &req.matchers, req.start, req.end).await? {
        let labels: Vec<(String, String)> = select::all_labels(&s)
            .iter()
            .filter(|(k, _)| req.label_names.is_empty() || req.label_names.iter().any(|n| n == k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sets.insert(labels);
    }
    let labels_set = sets
        .into_iter()
        .map(|pairs| Labels {
            labels: pairs
                .into_iter()
                .map(|(name, value)| LabelPair { name, value })
                .collect(),
        })
        .collect();
    Ok(call.codec.encode(&SeriesResponse { labels_set }))
}

/// A select request's storage selector, range (ns) and label filter.
fn selection(
    type_id: &str,
    label_selector: &str,
    start: i64,
    end: i64,
) -> Result<(Selector, i64, i64, LabelFilter), ConnectError> {
    let id = select::type_id(type_id)?;
    let filter = LabelFilter::parse(label_selector)?;
    let (start, end) = select::range_ms(start, end)?;
    Ok((filter.selector(Some(id)), start, end, filter))
}

/// The node budget: the request's, else `server.max_nodes`; never above `server.max_nodes`.
/// The second value is `Some(cap)` when the request asked for more.
fn node_budget(state: &AppState, requested: Option<i64>) -> (usize, Option<usize>) {
    let cap = state.config.server.max_nodes;
    match requested {
        Some(n) if n > 0 && (n as u64) > cap as u64 => (cap, Some(cap)),
        Some(n) if n > 0 => (n as usize, None),
        _ => (cap, None),
    }
}

fn mark_clamped(mut resp: Response, clamped: Option<usize>) -> Response {
    if let Some(cap) = clamped {
        resp.headers_mut()
            .insert(MAX_NODES_CLAMPED_HEADER, HeaderValue::from(cap));
    }
    resp
}

/// The merged tree of a select, through `/render`'s own selection.
async fn merged(
    call: &Call<'_>,
    selector: &Selector,
    filter: &LabelFilter,
    start: i64,
    end: i64,
) -> Result<crate::query::Selection, ConnectError> {
    let sel = crate::query::select(call.state, call.tenant, selector, start, end).await?;
    // Matchers on derived labels that rule out the type leave nothing.
    if sel
        .series
        .first()
        .is_some_and(|s| !filter.type_matches(&s.profile_type))
    {
        return Ok(crate::query::Selection::empty());
    }
    Ok(sel)
}

fn levels(levels: Vec<Vec<i64>>) -> Vec<Level> {
    levels.into_iter().map(|values| Level { values }).collect()
}

async fn select_merge_stacktraces(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SelectMergeStacktracesRequest = call.request("SelectMergeStacktracesRequest")?;
    let (selector, start, end, filter) = selection(
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
    )?;
    if req.format == FORMAT_DOT {
        return Err(ConnectError::unimplemented("the DOT format is not served"));
    }
    let (max_nodes, clamped) = node_budget(call.state, req.max_nodes);
    let sel = merged(call, &selector, &filter, start, end).await?;
    let resp = if req.format == FORMAT_TREE {
        SelectMergeStacktracesResponse {
            flamegraph: None,
            tree: tree_bytes::encode(&sel.tree, max_nodes),
        }
    } else {
        let fb = crate::flamebearer::flamebearer(&sel.tree, max_nodes);
        SelectMergeStacktracesResponse {
            flamegraph: Some(FlameGraph {
                names: fb.names,
                levels: levels(fb.levels),
                total: fb.num_ticks,
                max_self: fb.max_self,
            }),
            tree: Vec::new(),
        }
    };
    Ok(mark_clamped(call.codec.encode(&resp), clamped))
}

async fn select_merge_profile(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SelectMergeProfileRequest = call.request("SelectMergeProfileRequest")?;
    let (selector, start, end, filter) = selection(
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
    )?;
    if matches!(call.codec, Codec::Json) {
        return Err(ConnectError::unimplemented(
            "SelectMergeProfile answers in application/proto only",
        ));
    }
    let (max_nodes, clamped) = node_budget(call.state, req.max_nodes);
    let sel = merged(call, &selector, &filter, start, end).await?;
    let first = sel.series.first();
    let profile_type = match first {
        Some(s) => s.profile_type.clone(),
        None => type_from_id(select::type_id(&req.profile_type_id)?),
    };
    let ctx = RenderContext {
        title: selector.service_name().unwrap_or("").to_string(),
        profile_type,
        start_ns: start,
        end_ns: end,
        max_nodes,
        sample_rate: first.map(|s| s.sample_rate).unwrap_or(0),
        spy_name: first.map(|s| s.spy_name.clone()).unwrap_or_default(),
    };
    // pprof keeps source lines when the stored frames have them, as /render?format=pprof.
    let gz = kiln_pprof::encode_tree(sel.lines.as_ref().unwrap_or(&sel.tree), &ctx);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .map_err(|e| ConnectError::internal(format!("encoding pprof: {e}")))?;
    let resp = ([(header::CONTENT_TYPE, "application/proto")], raw).into_response();
    Ok(mark_clamped(resp, clamped))
}

/// A profile type from its id alone (`metric:sample_type:sample_unit:period_type:period_unit`).
fn type_from_id(id: &str) -> kiln_plugin_api::ProfileType {
    let mut parts = id.split(':').map(str::to_string);
    let mut next = || parts.next().unwrap_or_default();
    kiln_plugin_api::ProfileType {
        metric: next(),
        sample_type: next(),
        sample_unit: next(),
        period_type: next(),
        period_unit: next(),
        name: String::new(),
        aggregation: Default::default(),
    }
}

async fn select_series(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SelectSeriesRequest = call.request("SelectSeriesRequest")?;
    let (selector, start, end, filter) = selection(
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
    )?;
    if !req.step.is_finite() || req.step <= 0.0 {
        return Err(ConnectError::invalid("step (seconds) must be positive"));
    }
    let step_ns = ((req.step * 1e9) as i64).max(1_000_000);
    if (end - start) / step_ns > 100_000 {
        return Err(ConnectError::invalid(format!(
            "step {}s over this range makes more than 100000 points",
            req.step
        )));
    }
    let average = req.aggregation == Some(AGGREGATION_AVERAGE);
    let q = Query {
        selector,
        start_ns: start,
        end_ns: end,
    };
    let storage = &call.state.storage;
    let known = storage
        .series(call.tenant, Some(&q.selector), start, end)
        .await
        .map_err(crate::api_error::ApiError::from)?;
    let known = select::keep(&filter, known);
    if known.is_empty() {
        return Ok(call.codec.encode(&SelectSeriesResponse::default()));
    }
    let lines = grouped_timelines(call, &q, step_ns, &req.group_by, &known).await?;
    let mut series: Vec<(i64, Series)> = lines
        .into_iter()
        .map(|(labels, members, t)| {
            // The average of a group: its total over the number of its series.
            let members = members.max(1) as f64;
            let points: Vec<Point> = t
                .points
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0)
                .map(|(i, v)| Point {
                    value: if average {
                        *v as f64 / members
                    } else {
                        *v as f64
                    },
                    timestamp: (t.start_ns + i as i64 * t.step_ns) / 1_000_000,
                })
                .collect();
            (t.points.iter().sum(), Series { labels, points })
        })
        .filter(|(_, s)| !s.points.is_empty())
        .collect();
    // `limit`: the series with the largest totals.
    series.sort_by_key(|s| std::cmp::Reverse(s.0));
    if let Some(limit) = req.limit.filter(|l| *l > 0) {
        series.truncate(limit as usize);
    }
    Ok(call.codec.encode(&SelectSeriesResponse {
        series: series.into_iter().map(|(_, s)| s).collect(),
    }))
}

/// Most groups one `SelectSeries` with several `group_by` labels may make: each is one
/// timeline query.
const MAX_SERIES_GROUPS: usize = 1_000;

/// The timelines of `q`, one per distinct combination of the `group_by` labels' values among
/// the `known` series (absent labels read as `""` and are left out of the answer's labels),
/// each with its labels and the number of series in it.
///
/// One label is grouped by storage in one pass. Several are grouped here: the known series
/// give the combinations that exist, and each combination is one timeline query narrowed by
/// equality matchers.
async fn grouped_timelines(
    call: &Call<'_>,
    q: &Query,
    step_ns: i64,
    group_by: &[String],
    known: &[kiln_plugin_api::SeriesInfo],
) -> Result<Vec<(Vec<LabelPair>, usize, kiln_plugin_api::Timeline)>, ConnectError> {
    let storage = &call.state.storage;
    let labels_of = |values: &[String]| -> Vec<LabelPair> {
        group_by
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, value)| LabelPair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let mut groups: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for s in known {
        let values = group_by
            .iter()
            .map(|l| s.labels.get(l).unwrap_or("").to_string())
            .collect();
        *groups.entry(values).or_default() += 1;
    }
    if group_by.len() <= 1 {
        let label = group_by.first().map(String::as_str);
        let lines = storage
            .select_timeline(call.tenant, q, step_ns, label)
            .await
            .map_err(crate::api_error::ApiError::from)?;
        return Ok(lines
            .into_iter()
            .map(|(group, t)| {
                let values = match label {
                    Some(_) => vec![group],
                    None => Vec::new(),
                };
                let members = groups.get(&values).copied().unwrap_or(0);
                (labels_of(&values), members, t)
            })
            .collect());
    }
    if groups.len() > MAX_SERIES_GROUPS {
        return Err(ConnectError::invalid(format!(
            "group_by {group_by:?} makes {} groups; at most {MAX_SERIES_GROUPS} are answered \
             (narrow the selector or group by fewer labels)",
            groups.len()
        )));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (values, members) in groups {
        let mut narrowed = q.clone();
        narrowed.selector.matchers.extend(
            group_by
                .iter()
                .zip(&values)
                .map(|(name, value)| kiln_plugin_api::Matcher::eq(name, value)),
        );
        let lines = storage
            .select_timeline(call.tenant, &narrowed, step_ns, None)
            .await
            .map_err(crate::api_error::ApiError::from)?;
        if let Some((_, t)) = lines.into_iter().next() {
            out.push((labels_of(&values), members, t));
        }
    }
    Ok(out)
}

async fn diff(call: &Call<'_>) -> Result<Response, ConnectError> {
    let req: DiffRequest = call.request("DiffRequest")?;
    let (Some(left), Some(right)) = (req.left, req.right) else {
        return Err(ConnectError::invalid("Diff needs both left and right"));
    };
    let (ls, lstart, lend, lf) = selection(
        &left.profile_type_id,
        &left.label_selector,
        left.start,
        left.end,
    )?;
    let (rs, rstart, rend, rf) = selection(
        &right.profile_type_id,
        &right.label_selector,
        right.start,
        right.end,
    )?;
    if left.profile_type_id.trim() != right.profile_type_id.trim() {
        return Err(ConnectError::invalid(format!(
            "cannot diff {} against {}",
            left.profile_type_id, right.profile_type_id
        )));
    }
    let (max_nodes, clamped) = node_budget(call.state, left.max_nodes.or(right.max_nodes));
    let (l, r) = tokio::try_join!(
        merged(call, &ls, &lf, lstart, lend),
        merged(call, &rs, &rf, rstart, rend)
    )?;
    let fb = crate::flamebearer::flamebearer_diff(&l.tree, &r.tree, max_nodes);
    let resp = DiffResponse {
        flamegraph: Some(FlameGraphDiff {
            names: fb.names,
            levels: levels(fb.levels),
            total: fb.num_ticks,
            max_self: fb.max_self,
            left_ticks: fb.left_ticks,
            right_ticks: fb.right_ticks,
        }),
    };
    Ok(mark_clamped(call.codec.encode(&resp), clamped))
}

async fn get_profile_stats(call: &Call<'_>) -> Result<Response, ConnectError> {
    let _: Empty = call.request("GetProfileStatsRequest")?;
    let any = !matching_series(call, &[], 0, 0).await?.is_empty();
    // Kiln's storage does not keep first/last profile times per tenant; Grafana reads
    // `data_ingested` (whether to show onboarding).
    Ok(call.codec.encode(&GetProfileStatsResponse {
        data_ingested: any,
        oldest_profile_time: 0,
        newest_profile_time: 0,
    }))
}

/// Grafana's settings store: Kiln keeps none, so the list is empty.
async fn settings_get(call: &Call<'_>) -> Result<Response, ConnectError> {
    let _: Empty = call.request("GetSettingsRequest")?;
    Ok(call.codec.encode(&GetSettingsResponse::default()))
}
