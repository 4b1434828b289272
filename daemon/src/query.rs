//! The query API: `/render`, `/render-diff`, `/labels`, `/label-values`, `/api/apps`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query as QueryString, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_plugin_api::{
    labels::{NAME, SERVICE_NAME},
    selector::TypeSelector,
    Query, RenderContext, Selector, SeriesInfo, Tenant, Timeline, Tree,
};
use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::server::AppState;
use crate::time;

type Params = HashMap<String, String>;

fn param<'a>(p: &'a Params, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| p.get(*n))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A time range from `from`/`until`-style parameters; defaults `now-1h`..`now`.
fn range(p: &Params, from: &'static str, until: &'static str) -> Result<(i64, i64), ApiError> {
    let now = time::now_ns();
    let parse = |name: &'static str, default: &str| {
        time::parse(name, param(p, &[name]).unwrap_or(default), now)
            .map_err(|e| ApiError::bad_request("bad_time", e.to_string()))
    };
    let (start, end) = (parse(from, "now-1h")?, parse(until, "now")?);
    if start > end {
        return Err(ApiError::bad_request(
            "bad_time",
            format!("`{from}` is after `{until}`"),
        ));
    }
    Ok((start, end))
}

/// Parses a selector and pins a profile type (`cpu` when none is given).
///
/// `app.type{…}` is ambiguous when `type` is not a well-known name (fgprof's `time`, any sample
/// type an agent invents, names with dots): every name `/api/apps` lists must render, so the
/// head is split at each dot, from the right, and the first `(service, type)` that has series
/// wins; without any, the parse as written stands.
async fn selector(
    state: &AppState,
    tenant: &Tenant,
    raw: Option<&str>,
    what: &str,
) -> Result<Selector, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::bad_request(
            "bad_query",
            format!("the `{what}` parameter is required, e.g. {what}=myapp.cpu{{env=\"prod\"}}"),
        )
    })?;
    let mut s =
        Selector::parse(raw).map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    if let Some(resolved) = resolve_name(state, tenant, raw, &s).await? {
        s = resolved;
    }
    if s.profile_type.is_none() {
        s.profile_type = Some(TypeSelector::Name("cpu".into()));
    }
    Ok(s)
}

/// The `(service, type)` reading of `raw`'s head that has series, when it differs from `parsed`.
async fn resolve_name(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
    parsed: &Selector,
) -> Result<Option<Selector>, ApiError> {
    let head = raw.split('{').next().unwrap_or("").trim();
    if head.is_empty() || head.contains(':') || !head.contains('.') {
        return Ok(None);
    }
    let exists = |s: Selector| async move {
        let found = state
            .storage
            .series(tenant, Some(&s), i64::MIN / 2, i64::MAX / 2)
            .await?;
        Ok::<_, ApiError>((!found.is_empty()).then_some(s))
    };
    // The reading the parser chose (a well-known suffix, or none) wins when it has data.
    if parsed.profile_type.is_some() && exists(parsed.clone()).await?.is_some() {
        return Ok(None);
    }
    // The matchers after the head (`{…}`) stay; the head's service_name matcher is first.
    let rest: Vec<_> = parsed.matchers.iter().skip(1).cloned().collect();
    for (i, _) in head.rmatch_indices('.') {
        let (app, ty) = (&head[..i], &head[i + 1..]);
        if app.is_empty() || ty.is_empty() {
            continue;
        }
        let mut matchers = vec![kiln_plugin_api::Matcher::eq(SERVICE_NAME, app)];
        matchers.extend(rest.iter().cloned());
        let candidate = Selector {
            profile_type: Some(TypeSelector::Name(ty.to_string())),
            matchers,
        };
        if let Some(found) = exists(candidate).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn max_nodes(p: &Params, default: usize) -> Result<usize, ApiError> {
    match param(p, &["maxNodes", "max-nodes"]) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(default),
            Ok(n) => Ok(n.min(1 << 20)),
            Err(_) => Err(ApiError::bad_request(
                "bad_param",
                format!("maxNodes={v:?} is not a positive integer"),
            )),
        },
    }
}

/// Pyroscope's timeline step: the largest 10 s × 10ᵏ below range/1024, at least 10 s.
fn timeline_step_s(start_ns: i64, end_ns: i64) -> i64 {
    let range_s = ((end_ns - start_ns) / 1_000_000_000).max(1);
    let mut step = 10;
    while step * 10 < range_s / 1024 {
        step *= 10;
    }
    step
}

fn timeline_json(t: &Timeline) -> Value {
    json!({
        "startTime": t.start_ns / 1_000_000_000,
        "samples": t.points,
        "durationDelta": t.step_ns / 1_000_000_000,
        "watermarks": null,
    })
}

/// The merged tree of a selection, aggregated as its type says, plus what is known of it.
pub(crate) struct Selection {
    /// Grouped by function: what every view shows.
    pub tree: Tree,
    /// With source lines, when the stored frames have them: for exports that carry lines.
    pub lines: Option<Tree>,
    pub series: Vec<SeriesInfo>,
    /// Stack nodes folded into `other` by the storage's query budget (0: exact).
    pub pruned_nodes: u64,
}

impl Selection {
    /// Nothing selected.
    pub fn empty() -> Self {
        Self {
            tree: Tree::default(),
            lines: None,
            series: Vec::new(),
            pruned_nodes: 0,
        }
    }
}

/// Says on a response that the storage's query budget folded part of the tree into `other`.
fn mark_pruned(resp: &mut Response, pruned_nodes: u64) {
    if pruned_nodes > 0 {
        resp.headers_mut()
            .insert(PRUNED_HEADER, HeaderValue::from(pruned_nodes));
    }
}

const PRUNED_HEADER: &str = "kiln-pruned-nodes";

fn pruned_json(pruned_nodes: u64) -> Value {
    if pruned_nodes == 0 {
        Value::Null
    } else {
        json!({ "nodes": pruned_nodes, "limit": "storage.query_budget_bytes" })
    }
}

/// The merge `/render` and the Connect querier share.
pub(crate) async fn select(
    state: &AppState,
    tenant: &Tenant,
    selector: &Selector,
    start_ns: i64,
    end_ns: i64,
) -> Result<Selection, ApiError> {
    let q = Query {
        selector: selector.clone(),
        start_ns,
        end_ns,
    };
    // Independent reads, so a backend that answers over the network (ClickHouse) pays its
    // round trips once, not one after the other.
    let (series, merged) = tokio::try_join!(
        state
            .storage
            .series(tenant, Some(selector), start_ns, end_ns),
        state.storage.select_merge(tenant, &q),
    )?;
    let aggregation = series
        .first()
        .map(|s| s.profile_type.aggregation)
        .unwrap_or_default();
    let (tree, pruned_nodes) = merged.aggregated_with_pruned(aggregation);
    let (tree, lines) = if tree.has_lines() {
        (tree.clone().by_function(), Some(tree))
    } else {
        (tree, None)
    };
    Ok(Selection {
        tree,
        lines,
        series,
        pruned_nodes,
    })
}

fn app_name(selector: &Selector, series: &[SeriesInfo]) -> String {
    let app = selector.service_name().unwrap_or("");
    let ty = series
        .first()
        .map(|s| s.profile_type.name.as_str())
        .unwrap_or(match &selector.profile_type {
            Some(TypeSelector::Name(n)) => n.as_str(),
            _ => "cpu",
        });
    format!("{app}.{ty}")
}

fn metadata(
    format: &str,
    selector: &Selector,
    series: &[SeriesInfo],
    start_ns: i64,
    end_ns: i64,
) -> Value {
    let first = series.first();
    let units = first
        .map(|s| s.profile_type.display_units())
        .unwrap_or("samples");
    let sample_rate = first
        .map(|s| s.sample_rate)
        .filter(|r| *r > 0)
        .unwrap_or(100);
    json!({
        "format": format,
        "spyName": first.map(|s| s.spy_name.as_str()).unwrap_or(""),
        "sampleRate": sample_rate,
        "units": units,
        "name": app_name(selector, series),
        "appName": selector.service_name().unwrap_or(""),
        "startTime": start_ns / 1_000_000_000,
        "endTime": end_ns / 1_000_000_000,
        "profileType": first.map(|s| s.profile_type.id()),
    })
}

pub async fn render(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let tenant = &principal.tenant;
    let selector = selector(&state, tenant, param(&p, &["query", "name"]), "query").await?;
    let (start_ns, end_ns) = range(&p, "from", "until")?;
    let max_nodes = max_nodes(&p, state.config.server.max_nodes)?;
    let format = param(&p, &["format"]).unwrap_or("json");
    let q = Query {
        selector: selector.clone(),
        start_ns,
        end_ns,
    };
    let step_ns = timeline_step_s(start_ns, end_ns) * 1_000_000_000;
    let group_by = param(&p, &["groupBy"]).filter(|_| format == "json");
    // The flamegraph and (for JSON) the timelines are independent reads: run them at once.
    let timelines = async {
        if format != "json" {
            return Ok::<_, ApiError>((Vec::new(), None));
        }
        let total = state.storage.select_timeline(tenant, &q, step_ns, None);
        match group_by {
            Some(label) => {
                let grouped = state
                    .storage
                    .select_timeline(tenant, &q, step_ns, Some(label));
                let (total, grouped) = tokio::try_join!(total, grouped)?;
                Ok((total, Some(grouped)))
            }
            None => Ok((total.await?, None)),
        }
    };
    let (sel, (timeline, grouped)) = tokio::try_join!(
        select(&state, tenant, &selector, start_ns, end_ns),
        timelines
    )?;
    let response = if format == "json" {
        let timeline = timeline
            .first()
            .map(|(_, t)| timeline_json(t))
            .unwrap_or_else(|| {
                timeline_json(&Timeline {
                    start_ns,
                    step_ns,
                    points: vec![],
                })
            });
        let groups = match grouped {
            Some(lines) => {
                let map: BTreeMap<String, Value> = lines
                    .iter()
                    .map(|(g, t)| {
                        (
                            if g.is_empty() {
                                "*".to_string()
                            } else {
                                g.clone()
                            },
                            timeline_json(t),
                        )
                    })
                    .collect();
                json!(map)
            }
            None => Value::Null,
        };
        let body = json!({
            "version": 1,
            "flamebearer": crate::flamebearer::flamebearer(&sel.tree, max_nodes),
            "metadata": metadata("single", &selector, &sel.series, start_ns, end_ns),
            "timeline": timeline,
            "groups": groups,
            "heatmap": null,
            "functions": sel.tree.function_totals(),
            "pruned": pruned_json(sel.pruned_nodes),
        });
        Json(body).into_response()
    } else {
        let renderers = &state.ingestion.load().renderers;
        let renderer = renderers.get(format).cloned().ok_or_else(|| {
            ApiError::bad_request(
                "unknown_format",
                format!(
                    "unknown format {format:?}; available: json, {}",
                    renderers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let first = sel.series.first();
        let ctx = RenderContext {
            title: app_name(&selector, &sel.series),
            profile_type: first.map(|s| s.profile_type.clone()).unwrap_or_else(|| {
                kiln_plugin_api::ProfileType::well_known("cpu").expect("cpu is known")
            }),
            start_ns,
            end_ns,
            max_nodes,
            sample_rate: first.map(|s| s.sample_rate).unwrap_or(0),
            spy_name: first.map(|s| s.spy_name.clone()).unwrap_or_default(),
        };
        let rendered = renderer
            // pprof carries source lines (go tool pprof -lines, Go's PGO); every other format
            // shows functions.
            .render(
                match (format, &sel.lines) {
                    ("pprof", Some(lines)) => lines,
                    _ => &sel.tree,
                },
                &ctx,
            )
            .await
            .map_err(|e| ApiError::internal(format!("rendering {format}: {e}")))?;
        let filename = format!("{}.{}", ctx.title, rendered.extension);
        let mut resp = (StatusCode::OK, rendered.body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&rendered.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        resp
    };
    let mut response = response;
    mark_pruned(&mut response, sel.pruned_nodes);
    if sel.pruned_nodes > 0 {
        state.metrics.query_pruned();
    }
    state.metrics.query("render", started.elapsed());
    Ok(response)
}

pub async fn render_diff(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    QueryString(p): QueryString<Params>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let tenant = &principal.tenant;
    let left_sel = selector(&state, tenant, param(&p, &["leftQuery"]), "leftQuery").await?;
    let right_sel = selector(&state, tenant, param(&p, &["rightQuery"]), "rightQuery").await?;
    let (ls, le) = range(&p, "leftFrom", "leftUntil")?;
    let (rs, re) = range(&p, "rightFrom", "rightUntil")?;
    let max_nodes = max_nodes(&p, state.config.server.max_nodes)?;
    let (left, right) = tokio::try_join!(
        select(&state, tenant, &left_sel, ls, le),
        select(&state, tenant, &right_sel, rs, re)
    )?;
    if let (Some(l), Some(r)) = (left.series.first(), right.series.first()) {
        if l.profile_type.id() != r.profile_type.id() {
            return Err(ApiError::bad_request(
                "type_mismatch",
                format!(
                    "cannot diff {} against {}",
                    l.profile_type.id(),
                    r.profile_type.id()
                ),
            ));
        }
    }
    let mut body = json!({
        "version": 1,
        "flamebearer": crate::flamebearer::flamebearer_diff(&left.tree, &right.tree, max_nodes),
        "metadata": metadata("double", &left_sel, &left.series, ls.min(rs), le.max(re)),
        "leftTicks": left.tree.total(),
        "rightTicks": right.tree.total(),
        "timeline": null,
        "pruned": pruned_json(left.pruned_nodes + right.pruned_nodes),
    });
    if let Some(fb) = body["flamebearer"].as_object_mut() {
        fb.remove("leftTicks");
        fb.remove("rightTicks");
    }
    state.metrics.query("render-diff", started.elapsed());
    let mut response = match param(&p, &["format"]).unwrap_or("json") {
        "json" => Json(body).into_response(),
        "html" => {
            let page = crate::html_export::standalone_html(&body)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
        }
        other => {
            return Err(ApiError::bad_request(
                "unknown_format",
                format!("unknown format {other:?} for render-diff; use json or html"),
            ))
        }
    };
    mark_pruned(&mut response, left.pruned_nodes + right.pruned_nodes);
    if left.pruned_nodes + right.pruned_nodes > 0 {
        state.metrics.query_pruned();
    }
    Ok(response)
}

/// An optional selector (no type pinned) for the label endpoints.
fn optional_selector(p: &Params) -> Result<Option<Selector>, ApiError> {
    param(p, &["query"])
        .map(|q| Selector::parse(q).map_err(|e| ApiError::bad_request("bad_query", e.to_string())))
        .transpose()
}

pub async fn labels(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    QueryString(p): QueryString<Params>,
) -> Result<Json<Vec<String>>, ApiError> {
    let (start, end) = range_or_all(&p)?;
    let sel = optional_selector(&p)?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(NAME.to_string());
    for s in state
        .storage
        .series(&principal.tenant, sel.as_ref(), start, end)
        .await?
    {
        names.extend(s.labels.iter().map(|(k, _)| k.to_string()));
    }
    Ok(Json(names.into_iter().collect()))
}

pub async fn label_values(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    QueryString(p): QueryString<Params>,
) -> Result<Json<Vec<String>>, ApiError> {
    let label = param(&p, &["label"])
        .ok_or_else(|| ApiError::bad_request("bad_param", "label parameter is required"))?;
    let (start, end) = range_or_all(&p)?;
    let sel = optional_selector(&p)?;
    let mut values = BTreeSet::new();
    for s in state
        .storage
        .series(&principal.tenant, sel.as_ref(), start, end)
        .await?
    {
        if label == NAME {
            values.insert(format!(
                "{}.{}",
                s.labels.service_name().unwrap_or(""),
                s.profile_type.name
            ));
        } else if let Some(v) = s.labels.get(label) {
            values.insert(v.to_string());
        }
    }
    Ok(Json(values.into_iter().collect()))
}

/// Label endpoints default to all time when no range is given.
fn range_or_all(p: &Params) -> Result<(i64, i64), ApiError> {
    if param(p, &["from"]).is_none() && param(p, &["until"]).is_none() {
        return Ok((i64::MIN / 2, i64::MAX / 2));
    }
    range(p, "from", "until")
}

pub async fn apps(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Vec<Value>>, ApiError> {
    let mut apps: BTreeMap<String, Value> = BTreeMap::new();
    for s in state
        .storage
        .series(&principal.tenant, None, i64::MIN / 2, i64::MAX / 2)
        .await?
    {
        let name = format!(
            "{}.{}",
            s.labels.get(SERVICE_NAME).unwrap_or(""),
            s.profile_type.name
        );
        apps.entry(name.clone()).or_insert_with(|| {
            json!({
                "name": name,
                "spyName": s.spy_name,
                "sampleRate": s.sample_rate,
                "units": s.profile_type.display_units(),
                "profileType": s.profile_type.id(),
            })
        });
    }
    Ok(Json(apps.into_values().collect()))
}

#[derive(serde::Deserialize)]
pub struct DeleteApp {
    name: String,
}

/// `DELETE /api/apps {"name":"myapp.cpu"}`: deletes every series of the application.
pub async fn delete_app(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let tenant = &principal.tenant;
    let req: DeleteApp = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"name\":\"app.cpu\"}}: {e}"),
        )
    })?;
    let name = kiln_plugin_api::PyroscopeName::parse(&req.name)
        .map_err(|e| ApiError::bad_request("bad_name", e.to_string()))?;
    let (app, _) = name.split_profile_type();
    // A name /api/apps listed with a type Kiln does not know by name (`app.time`) names the
    // application before that type, as /render reads it.
    let head = name.app.as_str();
    let app = match Selector::parse(head) {
        Ok(parsed) => match resolve_name(&state, tenant, head, &parsed).await? {
            Some(resolved) => resolved.service_name().unwrap_or(app).to_string(),
            None => app.to_string(),
        },
        Err(_) => app.to_string(),
    };
    let deleted = state.storage.delete_service(tenant, &app).await?;
    crate::auth::admin::audit(
        "app.delete",
        &crate::auth::admin::actor(&principal),
        tenant.as_str(),
        &format!("{app} ({deleted} chunks)"),
    );
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_step_follows_pyroscope() {
        let s = 1_000_000_000;
        assert_eq!(timeline_step_s(0, 3600 * s), 10);
        assert_eq!(timeline_step_s(0, 86_400 * s), 10);
        assert_eq!(timeline_step_s(0, 30 * 86_400 * s), 1000);
        assert_eq!(timeline_step_s(0, 7 * 86_400 * s), 100);
    }
}
