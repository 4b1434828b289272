//! A database written by schema version 1 (a row per stack in `samples`, counts in `profiles`)
//! is upgraded in place to version 2 (a row per bucket in `buckets`), and on to the current
//! version, by the one daemon that claims the upgrade, while others starting at the same moment
//! wait for it; every answer is the same after the upgrade as before. A half-done upgrade is
//! refused with what to do. Versions 2 and 3 are upgraded by every daemon alike.

use std::time::Duration;

use kiln_plugin_api::{Profile, Query, Selector, Storage, Tenant};
use kiln_storage_clickhouse::test_server::{Engine, TestServer};
use kiln_storage_clickhouse::{ClickHouseConfig, ClickHouseStorage, LevelChoice};

mod common;
use common::{config, levels, now_s, open_at_once, NS};

/// A CPU profile of `service` in `prod`.
fn profile(service: &str, at_s: i64, stacks: &[(&[&str], i64)]) -> Profile {
    common::profile(service, "prod", at_s, stacks)
}

/// Flamegraphs and timelines of a short and a 30-day range, as text.
async fn answers(s: &ClickHouseStorage, now: i64) -> Vec<String> {
    let t = Tenant::default();
    let mut out = Vec::new();
    for (sel, from) in [
        ("shop.cpu", now - 3600),
        ("shop.cpu", now - 30 * 86_400),
        ("cart.cpu", now - 30 * 86_400),
    ] {
        let q = Query {
            selector: Selector::parse(sel).unwrap(),
            start_ns: from * NS,
            end_ns: now * NS,
        };
        let m = s.select_merge(&t, &q).await.unwrap();
        out.push(format!(
            "{} {} {}",
            m.tree.to_folded(),
            m.profiles,
            m.series
        ));
        let line = s.select_timeline(&t, &q, 600 * NS, None).await.unwrap();
        out.push(format!("{line:?}"));
    }
    out
}

/// The version 1 tables, as that version created them.
const V1_TABLES: [&str; 2] = [
    "CREATE TABLE {db}.samples (tenant String, service String, series UInt64, level UInt8, \
     bucket Int64, stack UInt64, value Int64) ENGINE = SummingMergeTree((value)) \
     PARTITION BY (level, intDiv(bucket, 86400)) ORDER BY (tenant, service, level, series, bucket, stack)",
    "CREATE TABLE {db}.profiles (tenant String, service String, series UInt64, level UInt8, \
     bucket Int64, profiles UInt64, total Int64) ENGINE = SummingMergeTree((profiles, total)) \
     PARTITION BY (level, intDiv(bucket, 86400)) ORDER BY (tenant, service, level, series, bucket)",
];

/// Rewrites `db` as versions 1 and 2 held it (every level in `buckets`, frames and stacks
/// without insert times, no `settings`), and records `version`.
fn without_inserted_times(server: &TestServer, db: &str, version: u32) {
    to_version_3_layout(server, db);
    for table in ["frames", "stacks"] {
        server.sql(&format!("ALTER TABLE {db}.{table} DROP COLUMN inserted"));
    }
    server.sql(&format!("DROP TABLE {db}.settings"));
    server.sql(&format!("DROP TABLE {db}.schema_version"));
    server.sql(&format!(
        "CREATE TABLE {db}.schema_version (version UInt32, kiln String, applied DateTime) \
         ENGINE = ReplacingMergeTree() ORDER BY version"
    ));
    server.sql(&format!(
        "INSERT INTO {db}.schema_version VALUES ({version}, 'old', now())"
    ));
}

/// Moves the finest level's rows of `db` back into `buckets`, where versions before 4 kept
/// them, and drops the tables version 4 added.
fn to_version_3_layout(server: &TestServer, db: &str) {
    assert_eq!(
        server
            .sql(&format!("SELECT count() FROM {db}.fine WHERE sibling != 0"))
            .trim(),
        "0",
        "rows that stand for a sibling's have no place in version 3"
    );
    server.sql(&format!(
        "INSERT INTO {db}.buckets SELECT tenant, service, series, level, bucket, profiles, total, \
         stacksMap.stack, stacksMap.value FROM {db}.fine"
    ));
    server.sql(&format!("DROP TABLE {db}.all_buckets"));
    server.sql(&format!("DROP TABLE {db}.fine"));
}

/// Rewrites `db` (written by this version) as version 1 held it.
fn downgrade_to_v1(server: &TestServer, db: &str) {
    without_inserted_times(server, db, 1);
    for s in V1_TABLES {
        server.sql(&s.replace("{db}", db));
    }
    // Each stack's value in two rows, as two unmerged inserts leave it.
    for half in [
        "intDiv(stacksMap.value, 2)",
        "stacksMap.value - intDiv(stacksMap.value, 2)",
    ] {
        server.sql(&format!(
            "INSERT INTO {db}.samples SELECT tenant, service, series, level, bucket, \
             stacksMap.stack, {half} FROM {db}.buckets ARRAY JOIN stacksMap"
        ));
    }
    server.sql(&format!(
        "INSERT INTO {db}.profiles SELECT tenant, service, series, level, bucket, profiles, \
         total FROM {db}.buckets"
    ));
    server.sql(&format!("DROP TABLE {db}.buckets"));
}

fn tables(server: &TestServer, db: &str) -> String {
    server
        .sql(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
        ))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_database_is_upgraded_once_with_the_same_answers() {
    let server = TestServer::start();
    let t = Tenant::default();
    let now = now_s();
    let s = ClickHouseStorage::open(&config(&server, "kiln_up"), levels(), None).unwrap();
    let mut profiles = Vec::new();
    for i in 0..40 {
        // Every 12 h over 20 days, and a few in the last hour.
        profiles.push(profile(
            "shop",
            now - i * 43_200 - 30,
            &[(&["main", "hash"], 10 + i), (&["main", "io"], 3)],
        ));
    }
    for i in 0..5 {
        profiles.push(profile("cart", now - i * 600 - 30, &[(&["run"], 7)]));
    }
    s.write(&t, profiles).await.unwrap();
    s.flush().await.unwrap();
    let before = answers(&s, now).await;
    assert!(before[2].contains("main;hash"), "{before:?}");
    drop(s);

    downgrade_to_v1(&server, "kiln_up");
    // Three daemons start at once on the version 1 database: one upgrades, all open.
    open_at_once(&server, "kiln_up", 3, levels().into());
    assert_eq!(
        server
            .sql("SELECT max(version) FROM kiln_up.schema_version")
            .trim(),
        "5"
    );
    assert_eq!(
        tables(&server, "kiln_up"),
        "all_buckets buckets delivered fine frames schema_version series settings stacks",
        "the old tables and the claim are gone"
    );
    let s = ClickHouseStorage::open(&config(&server, "kiln_up"), levels(), None).unwrap();
    assert_eq!(answers(&s, now).await, before, "copied once, nothing lost");

    // More of the same buckets from another flush, then ClickHouse merges the rows: each
    // bucket becomes one row whose arrays hold each stack once, summed.
    s.write(
        &t,
        vec![profile("cart", now - 30, &[(&["run"], 1), (&["new"], 2)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let unmerged = answers(&s, now).await;
    assert!(
        unmerged[4].contains("run 36") && unmerged[4].contains("new 2"),
        "{unmerged:?}"
    );
    server.sql("OPTIMIZE TABLE kiln_up.buckets FINAL");
    assert_eq!(
        answers(&s, now).await,
        unmerged,
        "merging changes no answer"
    );
    assert_eq!(
        server
            .sql(
                "SELECT count() = uniqExact(tenant, service, series, level, bucket), \
                 max(length(stacksMap.stack)) FROM kiln_up.buckets FORMAT TSV"
            )
            .trim(),
        "1\t2"
    );
}

/// One profile of `shop` into a new database `db` written by this version; what it answers.
async fn write_shop(
    server: &TestServer,
    db: &str,
    levels: Vec<(u64, u64)>,
    now: i64,
) -> Vec<String> {
    let s = ClickHouseStorage::open(&config(server, db), levels, None).unwrap();
    s.write(
        &Tenant::default(),
        vec![profile("shop", now - 30, &[(&["main", "hash"], 4)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    answers(&s, now).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_database_gets_insert_times_once() {
    let server = TestServer::start();
    let t = Tenant::default();
    let now = now_s();
    // Written with the five levels every database had by default before they were recorded.
    let day = 86_400;
    let five = vec![
        (10, 3 * day),
        (100, 14 * day),
        (1000, 30 * day),
        (10_000, 30 * day),
        (100_000, 365 * day),
    ];
    let before = write_shop(&server, "kiln_v2", five, now).await;
    without_inserted_times(&server, "kiln_v2", 2);
    // Two daemons without `storage.levels` upgrade at once: both add the column, one finds it
    // there; both open, and take the database as written with the five levels.
    let unset = || LevelChoice::Default {
        max_retention: 365 * 86_400,
    };
    open_at_once(&server, "kiln_v2", 2, unset());
    assert_eq!(
        server
            .sql("SELECT max(version) FROM kiln_v2.schema_version")
            .trim(),
        "5"
    );
    assert_eq!(
        server
            .sql("SELECT value FROM kiln_v2.settings FINAL WHERE name = 'resolutions'")
            .trim(),
        "10,100,1000,10000,100000"
    );
    let s = ClickHouseStorage::open(&config(&server, "kiln_v2"), unset(), None).unwrap();
    assert_eq!(answers(&s, now).await, before, "the same answers");
    // New rows get the server's time; the old ones read as "now" until a merge writes theirs.
    s.write(&t, vec![profile("cart", now - 20, &[(&["run"], 1)])])
        .await
        .unwrap();
    s.flush().await.unwrap();
    // Version 4: the finest level's new rows go to `fine`; the old ones stay in `buckets`, and
    // reads see both.
    assert_eq!(
        server
            .sql(
                "SELECT (SELECT count() FROM kiln_v2.fine WHERE service = 'cart'), \
                 (SELECT count() FROM kiln_v2.buckets WHERE service = 'shop' AND level = 0) \
                 FORMAT TSV"
            )
            .trim(),
        "1\t1"
    );
    let cart = Query {
        selector: Selector::parse("cart.cpu").unwrap(),
        start_ns: (now - 3600) * NS,
        end_ns: now * NS,
    };
    let merged = s.select_merge(&t, &cart).await.unwrap();
    assert_eq!(merged.tree.to_folded(), "run 1\n");
    for table in ["frames", "stacks"] {
        assert_eq!(
            server
                .sql(&format!(
                    "SELECT count() > 0, max(inserted) <= now(), min(inserted) > now() - 600 \
                     FROM kiln_v2.{table} FORMAT TSV"
                ))
                .trim(),
            "1\t1\t1",
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_4_database_gets_the_sibling_columns_once() {
    let server = TestServer::start();
    let t = Tenant::default();
    let now = now_s();
    let before = write_shop(&server, "kiln_v4", levels(), now).await;
    for column in ["sibling", "ratio", "batch"] {
        server.sql(&format!("ALTER TABLE kiln_v4.fine DROP COLUMN {column}"));
    }
    server.sql("INSERT INTO kiln_v4.schema_version VALUES (4, 'old', now())");
    server.sql("ALTER TABLE kiln_v4.schema_version DELETE WHERE version = 5");
    wait_until_no_mutation(&server, "kiln_v4");
    assert_eq!(
        server
            .sql("SELECT max(version) FROM kiln_v4.schema_version")
            .trim(),
        "4"
    );
    // Two daemons upgrade at once: one adds each column, the other finds it there.
    open_at_once(&server, "kiln_v4", 2, levels().into());
    assert_eq!(
        server
            .sql("SELECT max(version) FROM kiln_v4.schema_version")
            .trim(),
        "5"
    );
    assert_eq!(
        server
            .sql(
                "SELECT count() FROM system.columns WHERE database = 'kiln_v4' AND table = 'fine' \
                  AND name IN ('sibling', 'ratio', 'batch')"
            )
            .trim(),
        "3"
    );
    let s = ClickHouseStorage::open(&config(&server, "kiln_v4"), levels(), None).unwrap();
    assert_eq!(answers(&s, now).await, before, "the same answers");
    s.write(
        &t,
        vec![profile("shop", now - 20, &[(&["main", "hash"], 1)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let shop = Query {
        selector: Selector::parse("shop.cpu").unwrap(),
        start_ns: (now - 3600) * NS,
        end_ns: now * NS,
    };
    let merged = s.select_merge(&t, &shop).await.unwrap();
    assert_eq!(merged.tree.to_folded(), "main;hash 5\n");
}

/// The codec of each column that holds the bulk of the bytes, as text.
fn bulk_codecs(server: &TestServer, db: &str) -> String {
    server.sql(&format!(
        "SELECT table, name, compression_codec FROM system.columns WHERE database = '{db}' \
         AND table IN ('buckets', 'fine', 'stacks', 'frames', 'series') \
         AND name IN ('stacksMap.stack', 'stacksMap.value', 'frames', 'function', 'file', 'labels') \
         ORDER BY table, name FORMAT TSV"
    ))
}

/// Where the server has per-column codecs, the columns of arrays and names are compressed with
/// zstd: on a new database, and on one created before (or altered since) at the next start,
/// whose answers stay the same. 18.16 has none: the start goes on without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_columns_are_compressed_with_zstd_where_the_server_can() {
    let server = TestServer::start();
    let now = now_s();
    let before = write_shop(&server, "kiln_codec", levels(), now).await;
    if server.engine == Engine::Server {
        let mut r = ureq::post(format!("{}/", server.url()))
            .query("user", kiln_storage_clickhouse::test_server::USER)
            .query("password", kiln_storage_clickhouse::test_server::PASSWORD)
            .config()
            .http_status_as_error(false)
            .build()
            .send("SELECT compression_codec FROM system.columns LIMIT 1")
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        assert!(
            r.status() != 200 && text.contains("Code: 47"),
            "18.16 has no per-column codecs: {text}"
        );
        return;
    }
    let zstd = "buckets\tstacksMap.stack\tCODEC(ZSTD(1))\n\
                buckets\tstacksMap.value\tCODEC(ZSTD(1))\n\
                fine\tstacksMap.stack\tCODEC(ZSTD(1))\n\
                fine\tstacksMap.value\tCODEC(ZSTD(1))\n\
                frames\tfile\tCODEC(ZSTD(1))\n\
                frames\tfunction\tCODEC(ZSTD(1))\n\
                series\tlabels\tCODEC(ZSTD(1))\n\
                stacks\tframes\tCODEC(ZSTD(1))\n";
    assert_eq!(bulk_codecs(&server, "kiln_codec"), zstd);
    // As a database created before: the server's default codec, then two daemons at once.
    server.sql(
        "ALTER TABLE kiln_codec.fine MODIFY COLUMN `stacksMap.stack` Array(UInt64) CODEC(LZ4)",
    );
    server.sql("ALTER TABLE kiln_codec.frames MODIFY COLUMN function String CODEC(LZ4)");
    assert_ne!(bulk_codecs(&server, "kiln_codec"), zstd);
    open_at_once(&server, "kiln_codec", 2, levels().into());
    assert_eq!(bulk_codecs(&server, "kiln_codec"), zstd);
    let s = ClickHouseStorage::open(&config(&server, "kiln_codec"), levels(), None).unwrap();
    assert_eq!(answers(&s, now).await, before, "the same answers");
}

/// Waits until `db` has no mutation left to apply.
fn wait_until_no_mutation(server: &TestServer, db: &str) {
    for _ in 0..200 {
        let pending = server.sql(&format!(
            "SELECT count() FROM system.mutations WHERE database = '{db}' AND is_done = 0"
        ));
        if pending.trim() == "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mutations of {db} still pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_upgrade_is_refused_with_what_to_do() {
    let server = TestServer::start();
    let s = ClickHouseStorage::open(&config(&server, "kiln_half"), levels(), None).unwrap();
    drop(s);
    downgrade_to_v1(&server, "kiln_half");
    // A daemon claimed the upgrade and stopped before recording it.
    server.sql("CREATE TABLE kiln_half.upgrade_to_2 (started DateTime) ENGINE = TinyLog");
    let c = ClickHouseConfig {
        timeout: Duration::from_secs(1),
        ..config(&server, "kiln_half")
    };
    let e = ClickHouseStorage::open(&c, levels(), None).err().unwrap();
    let e = e.to_string();
    assert!(
        e.contains("kiln_half") && e.contains("DROP TABLE kiln_half.upgrade_to_2"),
        "{e}"
    );
}
