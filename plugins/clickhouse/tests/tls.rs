//! `tls = true`: the storage talks HTTPS to a real clickhouse-server whose certificate is
//! signed by the `ca_file` given, and refuses one it cannot verify.

use kiln_plugin_api::{Storage, Tenant};
use kiln_storage_clickhouse::test_server::{TestServer, PASSWORD, USER};
use kiln_storage_clickhouse::{ClickHouseConfig, ClickHouseStorage};

mod common;
use common::{levels, now_s, profile, query};

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
    let profile = profile("app", "prod", t, &[(&["main", "work"], 42)]);
    let tenant = Tenant::default();
    storage.write(&tenant, vec![profile]).await.unwrap();
    storage.flush().await.unwrap();
    let merged = storage
        .select_merge(&tenant, &query("app.cpu", t - 10, t + 20))
        .await
        .unwrap();
    assert_eq!(merged.tree.to_folded(), "main;work 42\n");
    // What went over HTTPS is in the server (read back over its plain port).
    assert_eq!(
        server.sql("SELECT sum(total) FROM tls.all_buckets WHERE level = 0"),
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
