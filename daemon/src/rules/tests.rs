use std::collections::BTreeMap;

use kiln_plugin_api::{Frame, Labels, Profile, ProfileMeta, ProfileType, Sample};

use super::*;

fn frame(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        ..Default::default()
    }
}

/// A profile of `app` with `labels`, type `ty` and stacks given as `("a;b;c", value)`.
fn profile(labels: &[(&str, &str)], ty: &str, stacks: &[(&str, i64)]) -> Profile {
    let mut frames: Vec<Frame> = Vec::new();
    let mut samples = Vec::new();
    for (stack, value) in stacks {
        let stack = stack
            .split(';')
            .map(
                |name| match frames.iter().position(|f| f.function == name) {
                    Some(i) => i as u32,
                    None => {
                        frames.push(frame(name));
                        (frames.len() - 1) as u32
                    }
                },
            )
            .collect();
        samples.push(Sample {
            stack,
            value: *value,
        });
    }
    Profile {
        labels: Labels::from_pairs(labels.iter().copied()),
        profile_type: ProfileType::well_known(ty).unwrap(),
        start_ns: 0,
        end_ns: 10_000_000_000,
        frames,
        samples,
        meta: ProfileMeta {
            spy_name: String::new(),
            sample_rate: 100,
        },
    }
}

fn rules(toml_text: &str) -> Result<RuleSet, RuleError> {
    #[derive(Deserialize)]
    struct Doc {
        metrics_rules: BTreeMap<String, RuleConfig>,
    }
    let doc: Doc = toml::from_str(toml_text).unwrap();
    RuleSet::compile(&doc.metrics_rules, None)
}

fn rendered(set: &RuleSet) -> String {
    let mut out = String::new();
    set.render(&mut out);
    out
}

const STACKS: &[(&str, i64)] = &[
    ("main;serve;crypto/tls.(*Conn).Read;aes.encrypt", 30),
    ("main;serve;crypto/tls.(*Conn).Read", 5),
    // Recursion: the function twice on one stack still counts the stack once.
    ("main;crypto/tls.handshake;crypto/tls.handshake;sha", 7),
    ("main;serve;json.Marshal", 100),
];

#[test]
fn function_total_counts_matching_subtrees_once_per_stack() {
    let p = profile(&[("service_name", "api")], "cpu_nanoseconds", STACKS);
    let re = Regex::new(r"^(?:crypto/tls\..*)$").unwrap();
    assert_eq!(function_value(&p, &re, ValueKind::Total), 30 + 5 + 7);
    assert_eq!(function_value(&p, &re, ValueKind::SelfValue), 5);
    let none = Regex::new("^(?:nothing)$").unwrap();
    assert_eq!(function_value(&p, &none, ValueKind::Total), 0);
}

#[test]
fn cpu_samples_become_seconds_grouped_by_labels() {
    let set = rules(
        r#"
        [metrics_rules.cpu]
        query = 'api.cpu{env=~"prod|staging"}'
        group_by = ["env"]
        "#,
    )
    .unwrap();
    let stacks = &[("main;work", 150), ("main;idle", 50)];
    set.observe(&profile(
        &[("service_name", "api"), ("env", "prod"), ("pod", "a")],
        "cpu",
        stacks,
    ));
    set.observe(&profile(
        &[("service_name", "api"), ("env", "prod"), ("pod", "b")],
        "cpu",
        stacks,
    ));
    set.observe(&profile(
        &[("service_name", "api"), ("env", "staging")],
        "cpu",
        stacks,
    ));
    // Not selected: other environment, other app, other type.
    set.observe(&profile(
        &[("service_name", "api"), ("env", "dev")],
        "cpu",
        stacks,
    ));
    set.observe(&profile(
        &[("service_name", "web"), ("env", "prod")],
        "cpu",
        stacks,
    ));
    set.observe(&profile(
        &[("service_name", "api"), ("env", "prod")],
        "alloc_space",
        stacks,
    ));
    let text = rendered(&set);
    // 200 samples at 100 Hz are 2 s; two pods of prod add up.
    assert!(
        text.contains("# TYPE kiln_profile_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(
        text.contains("kiln_profile_cpu_seconds_total{service_name=\"api\",env=\"prod\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("kiln_profile_cpu_seconds_total{service_name=\"api\",env=\"staging\"} 2\n"),
        "{text}"
    );
    assert_eq!(
        text.matches("kiln_profile_cpu_seconds_total{").count(),
        2,
        "{text}"
    );
}

#[test]
fn function_rule_with_self_value_units_and_metric_name() {
    let set = rules(
        r#"
        [metrics_rules.tls_cpu]
        query = 'api.cpu_nanoseconds'
        function = 'crypto/tls\..*'
        metric = "tls_cpu_seconds_total"

        [metrics_rules.tls_self]
        query = 'api.cpu_nanoseconds'
        function = 'crypto/tls\..*'
        value = "self"

        [metrics_rules.alloc]
        query = 'api.alloc_space'
        "#,
    )
    .unwrap();
    set.observe(&profile(
        &[("service_name", "api")],
        "cpu_nanoseconds",
        STACKS,
    ));
    set.observe(&profile(
        &[("service_name", "api")],
        "alloc_space",
        &[("main;make", 4096)],
    ));
    let text = rendered(&set);
    assert!(
        text.contains("tls_cpu_seconds_total{service_name=\"api\"} 0.000000042\n"),
        "{text}"
    );
    assert!(
        text.contains("kiln_profile_tls_self_seconds_total{service_name=\"api\"} 0.000000005\n"),
        "{text}"
    );
    assert!(
        text.contains("kiln_profile_alloc_bytes_total{service_name=\"api\"} 4096\n"),
        "{text}"
    );
}

#[test]
fn series_past_the_cap_are_dropped_and_counted() {
    let set = rules(
        r#"
        [metrics_rules.pods]
        query = '{service_name=~".+"}'
        "#,
    );
    assert!(set.is_err(), "a selector without a type is refused");
    let set = rules(
        r#"
        [metrics_rules.pods]
        query = 'api.cpu'
        group_by = ["pod"]
        max_series = 2
        "#,
    )
    .unwrap();
    for pod in ["a", "b", "c", "d", "a"] {
        set.observe(&profile(
            &[("service_name", "api"), ("pod", pod)],
            "cpu",
            &[("main", 100)],
        ));
    }
    let text = rendered(&set);
    assert!(
        text.contains("{service_name=\"api\",pod=\"a\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("{service_name=\"api\",pod=\"b\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("pod=\"c\""), "{text}");
    assert!(
        text.contains("kiln_metrics_rules_dropped_total{rule=\"pods\"} 2\n"),
        "{text}"
    );
}

#[test]
fn bad_selector_regex_and_names_are_refused_with_table_and_key() {
    for (text, needle) in [
        (
            "[metrics_rules.r]\nquery = 'api.cpu{env=\"prod\"'",
            "in [metrics_rules.r], key `query`: selector",
        ),
        (
            "[metrics_rules.r]\nquery = 'api.cpu{env=~\"(\"}'",
            "in [metrics_rules.r], key `query`: regex",
        ),
        (
            "[metrics_rules.r]\nquery = 'api.nope'",
            "in [metrics_rules.r], key `query`: selector \"api.nope\" names no profile type",
        ),
        (
            "[metrics_rules.r]\nquery = 'api.cpu'\nfunction = 'crypto/(tls'",
            "in [metrics_rules.r], key `function`: invalid regex",
        ),
        (
            "[metrics_rules.r]\nquery = 'api.cpu'\ngroup_by = ['bad-name']",
            "in [metrics_rules.r], key `group_by`",
        ),
        (
            "[metrics_rules.r]\nquery = 'api.cpu'\nmetric = '9x'",
            "in [metrics_rules.r], key `metric`",
        ),
    ] {
        let err = rules(text).err().expect(text).to_string();
        assert!(err.contains(needle), "{err} (wanted {needle})");
    }
}

#[test]
fn a_reload_keeps_the_counters_of_unchanged_rules() {
    let text = "[metrics_rules.cpu]\nquery = 'api.cpu'\n";
    let first = rules(text).unwrap();
    first.observe(&profile(
        &[("service_name", "api")],
        "cpu",
        &[("main", 300)],
    ));
    let doc: toml::Table = toml::from_str(text).unwrap();
    let cfg: BTreeMap<String, RuleConfig> = doc["metrics_rules"].clone().try_into().unwrap();
    let second = RuleSet::compile(&cfg, Some(&first)).unwrap();
    assert!(rendered(&second).contains("{service_name=\"api\"} 3\n"));
}
