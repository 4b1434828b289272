//! The ClickHouse storage against a real clickhouse-server (started here, in a temporary
//! directory on free loopback ports): merges, timelines, series, tenants, deletes, retention,
//! the schema's version checks and concurrent writers.

use std::sync::Arc;
use std::time::Duration;

use kiln_plugin_api::{Storage, StorageError, Tenant};
use kiln_storage_clickhouse::test_server::TestServer;
use kiln_storage_clickhouse::{ClickHouseConfig, ClickHouseStorage, LevelChoice, OpenError};

mod common;
use common::{config, levels, now_s, open, open_at_once, profile, query, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_storage_end_to_end() {
    let mut server = TestServer::start();
    // (Sections that drop partitions come after the one that kills the server: a hard kill
    // within ClickHouse's old_parts_lifetime may bring dropped parts back until the next pass.)
    let base = now_s() / 1000 * 1000 - 2000;
    let t = Tenant::default();

    // Merge, timeline, series.
    let s = open(&server, "kiln_a");
    s.write(
        &t,
        vec![
            profile(
                "shop",
                "prod",
                base,
                &[(&["main", "hash"], 70), (&["main", "io"], 30)],
            ),
            profile("shop", "dev", base + 10, &[(&["main", "hash"], 5)]),
            profile("shop", "prod", base + 100, &[(&["main", "io"], 11)]),
            profile("cart", "prod", base + 20, &[(&["run"], 9)]),
        ],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let m = s
        .select_merge(&t, &query("shop.cpu", base - 1000, base + 1000))
        .await
        .unwrap();
    assert_eq!((m.tree.total(), m.profiles, m.series), (116, 3, 2));
    assert_eq!(m.tree.to_folded(), "main;hash 75\nmain;io 41\n");
    let m = s
        .select_merge(
            &t,
            &query("shop.cpu{env=\"prod\"}", base - 1000, base + 1000),
        )
        .await
        .unwrap();
    assert_eq!(m.tree.total(), 111);
    let tl = s
        .select_timeline(
            &t,
            &query("shop.cpu", base, base + 200),
            10 * NS,
            Some("env"),
        )
        .await
        .unwrap();
    let groups: Vec<&str> = tl.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(groups, ["dev", "prod"]);
    assert_eq!(tl[1].1.points[0], 100);
    assert_eq!(tl[1].1.points[10], 11);
    assert_eq!(tl[0].1.points[1], 5);
    let series = s
        .series(&t, None, (base - 1000) * NS, (base + 1000) * NS)
        .await
        .unwrap();
    assert_eq!(series.len(), 3);
    assert_eq!(series[0].spy_name, "gospy");

    // A second storage on the same database (another daemon) sees it all, and its writes of
    // the same stacks are not duplicated in the dictionary.
    let other = open(&server, "kiln_a");
    let m = other
        .select_merge(&t, &query("cart.cpu", base - 1000, base + 1000))
        .await
        .unwrap();
    assert_eq!(m.tree.to_folded(), "run 9\n");
    let (a, b) = (
        Arc::new(open(&server, "kiln_a")),
        Arc::new(open(&server, "kiln_a")),
    );
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|w| {
            let t = t.clone();
            tokio::spawn(async move {
                w.write(
                    &t,
                    vec![profile("race", "x", base, &[(&["new", "stack"], 1)])],
                )
                .await
                .unwrap();
                w.flush().await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let m = a
        .select_merge(&t, &query("race.cpu", base - 1000, base + 1000))
        .await
        .unwrap();
    assert_eq!(
        (m.tree.to_folded().as_str(), m.profiles),
        ("new;stack 2\n", 2)
    );
    server.sql("OPTIMIZE TABLE kiln_a.stacks FINAL");
    assert_eq!(
        server
            .sql("SELECT count() FROM kiln_a.stacks WHERE service = 'race'")
            .trim(),
        "1",
        "one row per stack, whichever daemon wrote it"
    );

    // Writes that send (a tiny batch) racing flushes and queries: no deadlock, nothing lost.
    let busy = Arc::new(
        ClickHouseStorage::open(
            &ClickHouseConfig {
                batch_rows: 1,
                max_buffered_rows: 1,
                ..config(&server, "kiln_a")
            },
            levels(),
            None,
        )
        .unwrap(),
    );
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (w, t) = (busy.clone(), t.clone());
            tokio::spawn(async move {
                for j in 0..10 {
                    let at = base + i * 100 + j;
                    w.write(&t, vec![profile("busy", "x", at, &[(&["f"], 1)])])
                        .await
                        .unwrap();
                    w.flush().await.unwrap();
                }
            })
        })
        .collect();
    let run = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("concurrent writes and flushes finish");
    let m = busy
        .select_merge(&t, &query("busy.cpu", base - 1000, base + 1000))
        .await
        .unwrap();
    assert_eq!((m.tree.total(), m.profiles), (40, 40));

    // Tenants do not see each other; deletes touch one tenant's service.
    let other_tenant = Tenant::new("team-b").unwrap();
    s.write(
        &other_tenant,
        vec![profile("shop", "prod", base, &[(&["b"], 4)])],
    )
    .await
    .unwrap();
    let total = |t: Tenant| {
        let s = &s;
        async move {
            s.select_merge(&t, &query("shop.cpu", base - 1000, base + 1000))
                .await
                .unwrap()
                .tree
                .total()
        }
    };
    assert_eq!(
        (total(t.clone()).await, total(other_tenant.clone()).await),
        (116, 4)
    );
    assert!(other.delete_service(&t, "shop").await.unwrap() > 0);
    assert_eq!(
        (total(t.clone()).await, total(other_tenant.clone()).await),
        (0, 4)
    );
    assert_eq!(
        s.series(&t, None, (base - 1000) * NS, (base + 1000) * NS)
            .await
            .unwrap()
            .len(),
        3,
        "cart, race and busy are left"
    );
    // Pushed again after the delete, it is back (the dictionary was kept).
    s.write(
        &t,
        vec![profile("shop", "prod", base, &[(&["main", "io"], 3)])],
    )
    .await
    .unwrap();
    assert_eq!(total(t.clone()).await, 3);

    // Server down: writes keep buffering, queries fail at once as unavailable; back up, the
    // buffer is delivered.
    server.stop();
    s.write(
        &t,
        vec![profile("shop", "prod", base + 30, &[(&["late"], 6)])],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let e = s
        .select_merge(&t, &query("shop.cpu", base - 1000, base + 1000))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed().as_secs() < 5, "fails fast");
    assert!(matches!(s.flush().await, Err(StorageError::Io(_))));
    server.restart();
    s.flush().await.unwrap();
    assert_eq!(
        total(t.clone()).await,
        9,
        "the write made while it was down arrived"
    );
    // Retention drops partitions wholly past each level's retention.
    let old = base - 400 * 86_400;
    s.write(&t, vec![profile("old", "prod", old, &[(&["x"], 1)])])
        .await
        .unwrap();
    s.flush().await.unwrap();
    let report = s.enforce_retention(now_s() * NS).await.unwrap();
    assert!(report.chunks_deleted >= 3, "{report:?}");
    assert_eq!(
        server
            .sql("SELECT count() FROM kiln_a.all_buckets WHERE service = 'old'")
            .trim(),
        "0"
    );
    assert_eq!(total(t.clone()).await, 9, "recent data stays");

    // Usage per tenant, service and level; size-based retention drops the finest level first.
    let usage = s.usage_rows().await.unwrap();
    assert!(
        usage
            .iter()
            .any(|(tn, sv, l, b)| tn == "team-b" && sv == "shop" && l == "10s" && *b > 0),
        "{usage:?}"
    );
    // The same through the Storage trait, as /api/storage and the retention loop call it.
    let through_trait = Storage::usage(&s).await.unwrap();
    assert!(through_trait.supported);
    assert!(through_trait.disk_bytes.unwrap() > 0);
    assert_eq!(
        through_trait.total_bytes,
        through_trait.entries.iter().map(|e| e.bytes).sum::<u64>()
    );
    assert!(through_trait
        .entries
        .iter()
        .any(|e| e.tenant == "team-b" && e.service == "shop" && e.level == "10s"));
    let unbounded = Storage::enforce_size(&s, u64::MAX, u64::MAX).await.unwrap();
    assert_eq!(unbounded.chunks_deleted, 0, "under the bound nothing goes");
    let dropped = Storage::enforce_size(&s, 1, 1)
        .await
        .unwrap()
        .chunks_deleted;
    assert!(dropped > 0);
    assert_eq!(
        server.sql("SELECT count() FROM kiln_a.all_buckets").trim(),
        "0",
        "nothing fits in one byte"
    );

    // The last write-ahead log record delivered is kept per daemon: a restart replays after it.
    let state = tempfile::tempdir().unwrap();
    let logged =
        ClickHouseStorage::open(&config(&server, "kiln_a"), levels(), Some(state.path())).unwrap();
    assert_eq!(logged.logged_seq(), Some(0));
    logged
        .write_logged(
            7,
            &t,
            vec![profile("seq", "x", base, &[(&["a"], 1)])].into(),
        )
        .await
        .unwrap();
    assert_eq!(logged.logged_seq(), Some(0), "buffered, not yet delivered");
    logged.flush().await.unwrap();
    assert_eq!(logged.logged_seq(), Some(7));
    let again =
        ClickHouseStorage::open(&config(&server, "kiln_a"), levels(), Some(state.path())).unwrap();
    assert_eq!(again.logged_seq(), Some(7));
    let elsewhere = tempfile::tempdir().unwrap();
    let other_daemon =
        ClickHouseStorage::open(&config(&server, "kiln_a"), levels(), Some(elsewhere.path()))
            .unwrap();
    assert_eq!(other_daemon.logged_seq(), Some(0), "per daemon");

    // Storages racing on a new database's migration all open it.
    open_at_once(&server, "kiln_race", 3, levels().into());

    // A schema from a newer Kiln is refused, with the versions.
    server.sql("INSERT INTO kiln_race.schema_version VALUES (999, 'future', now())");
    let e = ClickHouseStorage::open(&config(&server, "kiln_race"), levels(), None)
        .err()
        .unwrap();
    assert!(
        matches!(e, OpenError::Schema(_)) && e.to_string().contains("999"),
        "{e}"
    );

    // Wrong credentials name the keys.
    let bad = ClickHouseConfig {
        password: "wrong".into(),
        ..config(&server, "kiln_a")
    };
    let e = ClickHouseStorage::open(&bad, levels(), None).err().unwrap();
    assert!(e.to_string().contains("`password`"), "{e}");

    let e = ClickHouseStorage::open(
        &ClickHouseConfig {
            url: "http://127.0.0.1:1".into(),
            ..config(&server, "kiln_a")
        },
        levels(),
        None,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("`url`"), "{e}");
}

/// Frames and stacks of a service with no data left go in the retention pass once old enough;
/// a daemon still writing that service never loses a name it counts on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionaries_of_services_with_no_data_left_are_collected() {
    let server = TestServer::start();
    let t = Tenant::default();
    let base = now_s() - 600;
    let collect_after = std::time::Duration::from_secs(3);
    let s = ClickHouseStorage::open(
        &ClickHouseConfig {
            dictionary_collect_after: collect_after,
            ..config(&server, "kiln_gc")
        },
        levels(),
        None,
    )
    .unwrap();
    let rows = |service: &str| {
        server
            .sql(&format!(
                "SELECT (SELECT count() FROM kiln_gc.frames WHERE service = '{service}') + \
                 (SELECT count() FROM kiln_gc.stacks WHERE service = '{service}')"
            ))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let folded = |service: &str| {
        let s = &s;
        let sel = format!("{service}.cpu");
        async move {
            s.select_merge(&Tenant::default(), &query(&sel, base - 100, base + 100))
                .await
                .unwrap()
                .tree
                .to_folded()
        }
    };
    s.write(
        &t,
        vec![
            profile("gone", "prod", base, &[(&["main", "old"], 2)]),
            profile("kept", "prod", base, &[(&["main", "work"], 3)]),
            profile("busy", "prod", base, &[(&["main", "loop"], 4)]),
        ],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    assert_eq!((rows("gone"), rows("kept")), (3, 3));

    // `busy` is deleted and at once pushed again: this daemon still counts on the rows it
    // inserted a moment ago, so it sends the profile without them.
    s.delete_service(&t, "busy").await.unwrap();
    s.write(
        &t,
        vec![profile("busy", "prod", base, &[(&["main", "loop"], 5)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    s.delete_service(&t, "gone").await.unwrap();
    assert_eq!(folded("gone").await, "");

    // Deleted, but inserted too recently: kept for now.
    s.enforce_retention(now_s() * NS).await.unwrap();
    assert_eq!(rows("gone"), 3, "younger than dictionary_collect_after");

    tokio::time::sleep(collect_after + std::time::Duration::from_millis(1500)).await;
    s.enforce_retention(now_s() * NS).await.unwrap();
    assert_eq!(rows("gone"), 0, "no data left and old enough: collected");
    assert_eq!(rows("kept"), 3, "a service with data keeps its dictionary");
    assert!(rows("busy") > 0, "data came back after the delete");
    assert_eq!(folded("busy").await, "main;loop 5\n", "names intact");
    assert_eq!(folded("kept").await, "main;work 3\n");

    // Pushed again after its rows went: this daemon no longer counts on them (it forgets what
    // it inserted after a third of dictionary_collect_after), so they are inserted again.
    s.write(
        &t,
        vec![profile("gone", "prod", base, &[(&["main", "old"], 7)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    assert_eq!(rows("gone"), 3);
    assert_eq!(
        folded("gone").await,
        "main;old 7\n",
        "names back with the data"
    );
}

/// A new database records its levels' resolutions; a daemon configured with others refuses to
/// start, naming what the database has, and one without `storage.levels` takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_are_recorded_and_other_resolutions_refused() {
    let server = TestServer::start();
    let unset = LevelChoice::Default {
        max_retention: 30 * 86_400,
    };
    let s = ClickHouseStorage::open(&config(&server, "kiln_lv"), unset.clone(), None).unwrap();
    let base = now_s() - 3600;
    s.write(
        &Tenant::default(),
        vec![profile("shop", "prod", base, &[(&["main"], 2)])],
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        server
            .sql("SELECT value FROM kiln_lv.settings FINAL WHERE name = 'resolutions'")
            .trim(),
        "10,1000,100000",
        "ClickHouse's own three levels"
    );
    assert_eq!(
        server
            .sql(
                "SELECT groupArray(level) FROM \
                 (SELECT DISTINCT level FROM kiln_lv.all_buckets ORDER BY level)"
            )
            .trim(),
        "[0,1,2]"
    );
    // The finest level in its own table, which does not sum rows; the coarse ones summed.
    assert_eq!(
        server
            .sql(
                "SELECT (SELECT groupUniqArray(level) FROM kiln_lv.fine), \
                 (SELECT arraySort(groupUniqArray(level)) FROM kiln_lv.buckets) FORMAT TSV"
            )
            .trim(),
        "[0]\t[1,2]"
    );
    let e = ClickHouseStorage::open(&config(&server, "kiln_lv"), levels(), None)
        .err()
        .expect("other resolutions are refused");
    assert!(matches!(e, OpenError::Levels(_)), "{e}");
    let message = e.to_string();
    assert!(
        message.starts_with("in [storage], key `levels`")
            && message.contains("10s, 1000s, 100000s"),
        "{message}"
    );
    // The same resolutions configured (other retentions), or none: it opens and answers.
    let day = 86_400;
    let same = vec![(10, day), (1000, 7 * day), (100_000, 90 * day)];
    ClickHouseStorage::open(&config(&server, "kiln_lv"), same, None).unwrap();
    let again = ClickHouseStorage::open(&config(&server, "kiln_lv"), unset, None).unwrap();
    let m = again
        .select_merge(
            &Tenant::default(),
            &query("shop.cpu", base - 100, base + 100),
        )
        .await
        .unwrap();
    assert_eq!(m.tree.total(), 2);
    // A 100 s step over five days is answered at 1000 s, as sled answers it.
    let week = query("shop.cpu", base - 5 * 86_400, base + 100);
    let lines = again
        .select_timeline(&Tenant::default(), &week, 100 * NS, None)
        .await
        .unwrap();
    assert_eq!(lines[0].1.step_ns, 1000 * NS);
    assert_eq!(lines[0].1.points.iter().sum::<i64>(), 2);
    // No level at all is a configuration error before anything is asked of the server.
    let e = ClickHouseStorage::open(&config(&server, "kiln_lv"), Vec::new(), None)
        .err()
        .expect("no levels");
    assert!(matches!(e, OpenError::Levels(_)), "{e}");
}

/// A write that finds the buffer due hands the insert to the sender thread: writes go on while
/// ClickHouse takes (here: never answers) an insert, and what they buffered is all delivered
/// once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_an_insert_is_in_flight() {
    let server = TestServer::start();
    let mut cfg = config(&server, "kiln_send");
    cfg.flush_interval = Duration::from_millis(1);
    let s = Arc::new(ClickHouseStorage::open(&cfg, levels(), None).unwrap());
    let base = now_s() / 1000 * 1000 - 2000;
    let t = Tenant::default();

    server.pause();
    let writer = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                let p = profile("shop", "prod", base + i * 10, &[(&["main", "work"], 1)]);
                s.write(&t, vec![p]).await.unwrap();
                // Past the flush interval, so every write finds the buffer due.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    // Generous: the writes take milliseconds; before the sender thread they waited for the
    // frozen server, that is until `resume` below.
    let finished = tokio::time::timeout(Duration::from_secs(20), writer).await;
    server.resume();
    finished
        .expect("writes returned while ClickHouse was frozen")
        .unwrap();

    s.flush().await.unwrap();
    let m = s
        .select_merge(&t, &query("shop.cpu", base - 1000, base + 1000))
        .await
        .unwrap();
    assert_eq!((m.tree.total(), m.profiles), (20, 20));
    assert_eq!(m.tree.to_folded(), "main;work 20\n");
}
