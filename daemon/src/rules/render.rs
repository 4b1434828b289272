//! The rules' counters in Prometheus text format.

use std::fmt::Write;

use super::{Rule, Unit, SEP};

pub(super) fn render(rules: &[Rule], out: &mut String) {
    let mut dropped = Vec::new();
    for rule in rules {
        let state = rule.state.lock().expect("not poisoned");
        dropped.push((&rule.name, state.dropped));
        let unit = match rule.unit {
            Unit::Seconds { .. } => "seconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        };
        let _ = writeln!(
            out,
            "# HELP {} Profile values selected by [metrics_rules.{}] ({unit}).",
            rule.metric, rule.name
        );
        let _ = writeln!(out, "# TYPE {} counter", rule.metric);
        let mut series: Vec<_> = state.series.iter().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in series {
            out.push_str(&rule.metric);
            out.push('{');
            let names = std::iter::once(kiln_plugin_api::labels::SERVICE_NAME)
                .chain(rule.config.group_by.iter().map(String::as_str));
            for (i, (name, v)) in names.zip(key.split(SEP)).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{name}=\"{}\"", escape(v));
            }
            let _ = writeln!(out, "}} {value}");
        }
    }
    if !dropped.is_empty() {
        out.push_str("# HELP kiln_metrics_rules_dropped_total Observations a metrics rule dropped because it already exported max_series series.\n");
        out.push_str("# TYPE kiln_metrics_rules_dropped_total counter\n");
        for (rule, n) in dropped {
            let _ = writeln!(
                out,
                "kiln_metrics_rules_dropped_total{{rule=\"{}\"}} {n}",
                escape(rule)
            );
        }
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
