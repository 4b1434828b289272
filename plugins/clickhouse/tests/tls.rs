//! `tls = true`: the storage talks HTTPS to a real clickhouse-server whose certificate is
//! signed by the `ca_file` given, and refuses one it cannot verify.

use kiln_plugin_api::{Frame, Labels, Profile, ProfileMeta, ProfileType, Query, Sample, Selector};
use kiln_plugin_api::{Storage, Tenant};
use kiln_storage_clickhouse::test_server::{TestServer, PASSWORD, USER};
use kiln_storage_clickhouse::{ClickHouseConfig, ClickHouseStorage};

const NS: i64 = 1_000_000_000;

fn levels() -> Vec<(u64, u64)> {
    vec![(10, 3 * 86_400), (1000, 365 * 86_400)]
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_servers_ca_works_and_an_unknown_certificate_is_refused() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let server = TestServer::start_tls(&cert.cert.pem(), &cert.key_pair.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let config = ClickHouseConfig {
        url: server.https_url().unwrap(),
        database: "tls".into(),
        user: USER.into(),
        password: PASSWORD.into(),
        tls: true,
        ca_file: Some(ca),
        ..ClickHouseConfig::default()
    };

    let storage = ClickHouseStorage::open(&config, levels(), None).unwrap();
    let t = now_s() - 600;
    let profile = Profile {
        labels: Labels::from_pairs([("service_name", "app")]),
        profile_type: ProfileType::well_known("cpu").unwrap(),
        start_ns: t * NS,
        end_ns: (t + 10) * NS,
        frames: vec![Frame::named("main"), Frame::named("work")],
        samples: vec![Sample {
            stack: vec![0, 1],
            value: 42,
        }],
        meta: ProfileMeta {
            spy_name: "gospy".into(),
            sample_rate: 100,
        },
    };
    let tenant = Tenant::default();
    storage.write(&tenant, vec![profile]).await.unwrap();
    storage.flush().await.unwrap();
    let merged = storage
        .select_merge(
            &tenant,
            &Query {
                selector: Selector::parse("app.cpu").unwrap(),
                start_ns: (t - 10) * NS,
                end_ns: (t + 20) * NS,
            },
        )
        .await
        .unwrap();
    assert_eq!(merged.tree.to_folded(), "main;work 42\n");
    // What went over HTTPS is in the server (read back over its plain port).
    assert_eq!(
        server.sql("SELECT sum(total) FROM tls.buckets WHERE level = 0"),
        "42\n"
    );

    // A certificate the configured roots do not vouch for: the daemon does not start, and the
    // error says what failed.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let refused = ClickHouseStorage::open(
        &ClickHouseConfig {
            ca_file: Some(other_ca),
            ..config.clone()
        },
        levels(),
        None,
    )
    .err()
    .expect("an unverifiable certificate is refused");
    let message = refused.to_string().to_lowercase();
    assert!(
        message.contains("certificate") || message.contains("tls"),
        "{message}"
    );
}
