use super::*;
use kiln_plugin_api::{Frame, ProfileMeta, Sample};

/// The default tenant, whose layout predates tenants.
static T: std::sync::LazyLock<Tenant> = std::sync::LazyLock::new(Tenant::default);

fn profile(service: &str, env: &str, ty: &str, start_s: i64, stacks: &[(&[&str], i64)]) -> Profile {
    let mut frames: Vec<Frame> = Vec::new();
    let mut samples = Vec::new();
    for (stack, value) in stacks {
        let ids = stack
            .iter()
            .map(|f| match frames.iter().position(|x| x.function == *f) {
                Some(i) => i as u32,
                None => {
                    frames.push(Frame::named(*f));
                    frames.len() as u32 - 1
                }
            })
            .collect();
        samples.push(Sample {
            stack: ids,
            value: *value,
        });
    }
    Profile {
        labels: Labels::from_pairs([("service_name", service), ("env", env)]),
        profile_type: ProfileType::well_known(ty).unwrap(),
        start_ns: start_s * NS,
        end_ns: (start_s + 10) * NS,
        frames,
        samples,
        meta: ProfileMeta {
            spy_name: "gospy".into(),
            sample_rate: 100,
        },
    }
}

fn query(sel: &str, start_s: i64, end_s: i64) -> Query {
    Query {
        selector: Selector::parse(sel).unwrap(),
        start_ns: start_s * NS,
        end_ns: end_s * NS,
    }
}

fn open(dir: &std::path::Path) -> SledStorage {
    SledStorage::open(&SledConfig::new(dir)).unwrap()
}

/// The five levels ten times apart that data directories had by default before the
/// resolutions were recorded: every coarse level has a coarser one above it.
fn five_levels(dir: &std::path::Path) -> SledConfig {
    let mut cfg = SledConfig::new(dir);
    cfg.levels = kiln_plugin_api::levels::five_levels()
        .into_iter()
        .map(|(r, k)| Level {
            resolution: Duration::from_secs(r),
            retention: Duration::from_secs(k),
        })
        .collect();
    cfg
}

/// Opens `dir` again after a `SledStorage` on it was dropped. sled's background flusher holds
/// the database (and its file lock) for a moment after the last handle goes, so a reopen in
/// the same process may briefly find the lock taken.
fn reopen(dir: &std::path::Path) -> SledStorage {
    reopen_with(&SledConfig::new(dir))
}

fn reopen_with(config: &SledConfig) -> SledStorage {
    try_reopen(config).unwrap_or_else(|e| panic!("reopening {}: {e}", config.path.display()))
}

/// Opens `config` again as [`reopen_with`] does, returning what opening answers.
fn try_reopen(config: &SledConfig) -> Result<SledStorage, StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStorage::open(config) {
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            answer => return answer,
        }
    }
}

const DAY: i64 = 86_400;

#[test]
fn merges_profiles_across_series_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_s() - DAY;
    s.inner
        .write(
            &T,
            vec![
                profile(
                    "app",
                    "prod",
                    "cpu",
                    t0,
                    &[(&["main", "a"], 10), (&["main", "b"], 5)],
                ),
                profile("app", "dev", "cpu", t0 + 20, &[(&["main", "a"], 1)]),
                profile("app", "prod", "cpu", t0 + 3600, &[(&["main", "a"], 100)]),
                profile("other", "prod", "cpu", t0, &[(&["x"], 7)]),
                profile(
                    "app",
                    "prod",
                    "alloc_space",
                    t0,
                    &[(&["main", "alloc"], 4096)],
                ),
            ],
        )
        .unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 7200), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), "main;a 111\nmain;b 5\n");
    assert_eq!(m.series, 2);
    let m = s
        .inner
        .select_merge(&T, &query(r#"app.cpu{env="prod"}"#, t0, t0 + 60), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), "main;a 10\nmain;b 5\n");
    let m = s.inner.select_merge(
        &T,
        &query(r#"{service_name=~"app|other"}"#, t0, t0 + 60),
        now_s(),
    );
    // No type in the selector: cpu and alloc_space of both services merge (the daemon always
    // pins a type; storage does what it is told).
    assert_eq!(m.unwrap().tree.total(), 10 + 5 + 1 + 7 + 4096);
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 + 7200, t0 + 9000), now_s())
        .unwrap();
    assert_eq!(m.tree.total(), 0);
}

#[test]
fn every_level_plan_reads_each_profile_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(&five_levels(dir.path())).unwrap();
    let now = now_s();
    // One profile every 10 s over 6 hours, value 1 each.
    let start = (now - 6 * 3600) / 10 * 10;
    let profiles: Vec<Profile> = (0..2160)
        .map(|i| {
            profile(
                "app",
                "prod",
                "cpu",
                start + i * 10,
                &[(&["main", "work"], 1)],
            )
        })
        .collect();
    s.inner.write(&T, profiles).unwrap();
    // Arbitrary, unaligned ranges must count exactly the profiles whose start lies inside.
    for (from, to) in [
        (start, start + 21600),
        (start + 7, start + 12_345),
        (start + 995, start + 20_001),
        (start - 50, start + 30),
    ] {
        let expected = (start..start + 21600)
            .step_by(10)
            .filter(|t| *t >= from.div_euclid(10) * 10 && *t < to)
            .count() as i64;
        let m = s
            .inner
            .select_merge(&T, &query("app.cpu", from, to), now)
            .unwrap();
        assert_eq!(m.tree.total(), expected, "range {from}..{to}");
        assert_eq!(m.profiles as i64, expected);
    }
    let mut plan = Vec::new();
    s.inner.plan(4, start, start + 21600, now, &mut plan);
    assert!(
        plan.iter().any(|p| p.0 >= 2),
        "a 6 h range uses coarse levels: {plan:?}"
    );
}

#[test]
fn survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_s() - 100;
    {
        let s = open(dir.path());
        s.inner
            .write(
                &T,
                vec![profile("app", "prod", "cpu", t0, &[(&["main", "a"], 3)])],
            )
            .unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    s.inner
        .write(
            &T,
            vec![profile(
                "app",
                "prod",
                "cpu",
                t0 + 1,
                &[(&["main", "a"], 2), (&["main", "c"], 1)],
            )],
        )
        .unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), "main;a 5\nmain;c 1\n");
    assert_eq!(s.inner.matching_series(&T, None, 0, i64::MAX).len(), 1);
}

#[test]
fn retention_deletes_old_chunks_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(dir.path());
    cfg.levels = vec![
        Level {
            resolution: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
        },
        Level {
            resolution: Duration::from_secs(100),
            retention: Duration::from_secs(10 * 86_400),
        },
    ];
    let s = SledStorage::open(&cfg).unwrap();
    let now = now_s();
    s.inner
        .write(
            &T,
            vec![
                profile("app", "prod", "cpu", now - 2 * 86_400, &[(&["old"], 1)]),
                profile("app", "prod", "cpu", now - 60, &[(&["new"], 1)]),
            ],
        )
        .unwrap();
    s.flush_blocking().unwrap();
    assert_eq!(coarse_chunk_kinds(&s), (2, 0));
    let report = s.inner.enforce_retention(now).unwrap();
    assert_eq!(report.chunks_deleted, 1, "only the old 10 s chunk goes");
    // The 100 s chunk that referred to it holds its column now.
    assert_eq!(coarse_chunk_kinds(&s), (1, 1));
    // The old profile is still there at 100 s resolution.
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", now - 3 * 86_400, now), now)
        .unwrap();
    assert_eq!(m.tree.to_folded(), "new 1\nold 1\n");
    let report = s.inner.enforce_retention(now + 20 * 86_400).unwrap();
    assert_eq!(report.chunks_deleted, 3);
}

#[test]
fn timeline_buckets_by_step_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = (now_s() - 3600) / 60 * 60;
    s.inner
        .write(
            &T,
            vec![
                profile("app", "prod", "cpu", t0, &[(&["a"], 2)]),
                profile("app", "prod", "cpu", t0 + 10, &[(&["a"], 3)]),
                profile("app", "dev", "cpu", t0 + 70, &[(&["a"], 4)]),
            ],
        )
        .unwrap();
    let tl = s
        .inner
        .select_timeline(&T, &query("app.cpu", t0, t0 + 180), 60 * NS, None, now_s())
        .unwrap();
    assert_eq!(tl.len(), 1);
    assert_eq!(tl[0].1.points, vec![5, 4, 0]);
    let tl = s
        .inner
        .select_timeline(
            &T,
            &query("app.cpu", t0, t0 + 180),
            60 * NS,
            Some("env"),
            now_s(),
        )
        .unwrap();
    assert_eq!(
        tl.iter()
            .map(|(g, t)| (g.as_str(), t.points.clone()))
            .collect::<Vec<_>>(),
        vec![("dev", vec![0, 4, 0]), ("prod", vec![5, 0, 0])]
    );
}

#[test]
fn average_types_divide_by_profiles_per_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_s() - 600;
    s.inner
        .write(
            &T,
            vec![
                profile("app", "a", "inuse_space", t0, &[(&["m"], 100)]),
                profile("app", "a", "inuse_space", t0 + 10, &[(&["m"], 300)]),
                profile("app", "b", "inuse_space", t0, &[(&["m"], 50)]),
                profile("app", "b", "inuse_space", t0 + 10, &[(&["m"], 50)]),
            ],
        )
        .unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.inuse_space", t0, t0 + 60), now_s())
        .unwrap();
    assert_eq!((m.profiles, m.series), (4, 2));
    assert_eq!(m.aggregated(Aggregation::Average).total(), 250);
}

#[test]
fn delete_service_removes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_s() - 60;
    s.inner
        .write(
            &T,
            vec![
                profile("app", "a", "cpu", t0, &[(&["m"], 1)]),
                profile("keep", "a", "cpu", t0, &[(&["k"], 1)]),
            ],
        )
        .unwrap();
    assert!(s.inner.delete_service(&T, "app").unwrap() > 0);
    assert_eq!(
        s.inner
            .select_merge(&T, &query("app.cpu", t0 - 1, t0 + 1), now_s())
            .unwrap()
            .tree
            .total(),
        0
    );
    assert_eq!(
        s.inner
            .select_merge(&T, &query("keep.cpu", t0 - 1, t0 + 1), now_s())
            .unwrap()
            .tree
            .total(),
        1
    );
}

#[test]
fn invalid_profiles_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut bad = profile("app", "a", "cpu", now_s(), &[(&["m"], 1)]);
    bad.samples[0].stack.push(99);
    assert!(matches!(
        s.inner.write(&T, vec![bad]),
        Err(StorageError::Invalid(_))
    ));
}

/// Profiles 100 s apart from `t0`, each with `main;a` of 1 + its index.
fn hundred_second_profiles(t0: i64, n: i64) -> Vec<Profile> {
    (0..n)
        .map(|i| {
            profile(
                "app",
                "prod",
                "cpu",
                t0 + i * 100,
                &[
                    (&["main", "a"], 1 + i),
                    (&["main", &format!("f{}", i % 7)], 2),
                ],
            )
        })
        .collect()
}

/// `(key, value)` of every key of sled's `chunks` tree.
fn sled_chunks(s: &SledStorage) -> Vec<(sled::IVec, sled::IVec)> {
    let tree = s.inner.db.open_tree("chunks").unwrap();
    tree.iter().map(Result::unwrap).collect()
}

#[test]
fn a_finest_level_kept_in_sled_by_older_daemons_moves_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let t0 = now - 7_200;
    let q = || query("app.cpu", t0 - 10, now);
    let before = {
        let s = open(dir.path());
        for (seq, p) in hundred_second_profiles(t0, 50).into_iter().enumerate() {
            s.write_logged_blocking(seq as u64 + 1, &T, &[p])
                .unwrap()
                .unwrap();
        }
        s.flush_blocking().unwrap();
        // As an older daemon left it: every level's chunks, and the log position, in sled.
        let legacy = s.inner.db.open_tree("chunks").unwrap();
        for kv in s
            .inner
            .chunks
            .range(chunk_key(0, 0, 0)..chunk_key(0, 0, u64::MAX))
        {
            let (k, v) = kv.unwrap();
            legacy.insert(&*k, &*v).unwrap();
        }
        s.inner.db.flush().unwrap();
        s.inner
            .select_merge(&T, &q(), now)
            .unwrap()
            .tree
            .to_folded()
    };
    assert!(before.contains("main;a 1275\n"), "{before}");
    std::fs::remove_dir_all(dir.path().join(chunk_store::DIR)).unwrap();
    let s = reopen(dir.path());
    assert!(
        sled_chunks(&s).iter().all(|(k, _)| k[4] != 0),
        "the finest level left sled"
    );
    assert_eq!(s.logged_seq(), Some(50), "the log position moved with it");
    assert_eq!(
        s.inner
            .select_merge(&T, &q(), now)
            .unwrap()
            .tree
            .to_folded(),
        before
    );
    // And it goes on from there, across another restart.
    s.write_logged_blocking(
        51,
        &T,
        &[profile(
            "app",
            "prod",
            "cpu",
            now - 60,
            &[(&["main", "a"], 5)],
        )],
    )
    .unwrap()
    .unwrap();
    s.flush_blocking().unwrap();
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(s.logged_seq(), Some(51));
    let after = s
        .inner
        .select_merge(&T, &q(), now)
        .unwrap()
        .tree
        .to_folded();
    assert!(after.contains("main;a 1280\n"), "{after}");
}

/// `app.cpu` merged over a short range from `t0` (read from the finest level) and over three
/// days (read from coarse chunks).
fn short_and_long(s: &SledStorage, t0: i64, now: i64) -> (String, String) {
    let merge = |from, to| {
        s.inner
            .select_merge(&T, &query("app.cpu", from, to), now)
            .unwrap()
            .tree
            .to_folded()
    };
    (merge(t0 - 10, t0 + 600), merge(t0 - 86_400 * 3, now))
}

#[test]
fn a_crash_between_the_finest_and_the_coarse_batch_replays_into_the_coarse_levels_only() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let t0 = now - 7_200;
    let profiles = hundred_second_profiles(t0, 6);
    let write_sixth = |s: &SledStorage| {
        s.write_logged_blocking(6, &T, &profiles[5..])
            .unwrap()
            .unwrap();
        s.flush_blocking().unwrap();
    };
    let (expected_short, expected_long, coarse_before) = {
        let s = open(dir.path());
        for (seq, p) in profiles[..5].iter().enumerate() {
            s.write_logged_blocking(seq as u64 + 1, &T, std::slice::from_ref(p))
                .unwrap()
                .unwrap();
        }
        s.flush_blocking().unwrap();
        let coarse_before = sled_chunks(&s);
        write_sixth(&s);
        let (short, long) = short_and_long(&s, t0, now);
        (short, long, coarse_before)
    };
    assert!(expected_short.contains("main;a 21\n"), "{expected_short}");
    assert!(expected_long.contains("main;a 21\n"), "{expected_long}");
    {
        // The crash: record 6 reached the finest level, not sled.
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("chunks").unwrap();
        tree.clear().unwrap();
        for (k, v) in coarse_before {
            tree.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(
        s.logged_seq(),
        Some(5),
        "replayed from the older store's position"
    );
    write_sixth(&s);
    assert_eq!(short_and_long(&s, t0, now), (expected_short, expected_long));
    assert_eq!(s.logged_seq(), Some(6));
}

#[test]
fn dictionaries_in_the_one_key_per_entry_layout_are_moved_into_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_s() - 100;
    let stacks: Vec<Vec<String>> = (0..5000)
        .map(|i| vec!["main".into(), format!("f{i}")])
        .collect();
    let refs: Vec<Vec<&str>> = stacks
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let weighted: Vec<(&[&str], i64)> = refs.iter().map(|s| (&s[..], 1)).collect();
    let before = {
        let s = open(dir.path());
        s.inner
            .write(&T, vec![profile("app", "prod", "cpu", t0, &weighted)])
            .unwrap();
        s.flush_blocking().unwrap();
        // Rewrite the dictionaries as an older daemon kept them: one key per frame and node.
        let i = &s.inner;
        for kv in i.frame_blocks.iter() {
            let (k, v) = kv.unwrap();
            let (svc, block) = (u32_at(&k, 0).unwrap(), u32_at(&k, 4).unwrap());
            let v = i.codec.unpack(&v).unwrap();
            for (n, f) in blocks::decode_frames(&v).unwrap().into_iter().enumerate() {
                let id = block * blocks::BLOCK as u32 + n as u32;
                let mut key = svc.to_be_bytes().to_vec();
                key.extend_from_slice(&id.to_be_bytes());
                i.legacy_frames.insert(key, f.as_bytes()).unwrap();
            }
        }
        for kv in i.node_blocks.iter() {
            let (k, v) = kv.unwrap();
            let (svc, block) = (u32_at(&k, 0).unwrap(), u32_at(&k, 4).unwrap());
            let first = block as usize * blocks::BLOCK;
            let v = i.codec.unpack(&v).unwrap();
            for (n, (parent, frame)) in blocks::decode_nodes(first, &v)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                if first + n == 0 {
                    continue;
                }
                let mut key = svc.to_be_bytes().to_vec();
                key.extend_from_slice(&((first + n) as u32).to_be_bytes());
                let mut val = parent.to_be_bytes().to_vec();
                val.extend_from_slice(&frame.to_be_bytes());
                i.legacy_nodes.insert(key, val).unwrap();
            }
        }
        i.frame_blocks.clear().unwrap();
        i.node_blocks.clear().unwrap();
        i.db.flush().unwrap();
        i.select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
            .unwrap()
            .tree
            .to_folded()
    };
    {
        let s = reopen(dir.path());
        let m = s
            .inner
            .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
            .unwrap();
        assert_eq!(m.tree.to_folded(), before);
        assert!(s.inner.legacy_frames.is_empty() && s.inner.legacy_nodes.is_empty());
        assert!(
            s.inner.node_blocks.len() >= 2,
            "5,001 nodes fill two blocks"
        );
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), before);
    assert_eq!(m.tree.total(), 5000);
}

/// Frames keep file, line and start line on disk: a merge gives a tree with lines, and its
/// grouped view is what a tree without lines would be. Frames without a location are stored in
/// the format older data dirs have, so those read back unchanged.
#[test]
fn lines_survive_storage_and_group_by_function() {
    let dir = tempfile::tempdir().unwrap();
    let at = |line: u32| Frame {
        function: "main.work".into(),
        file: "/src/main.go".into(),
        line,
        start_line: 10,
    };
    let mut p = profile("lines", "prod", "cpu", 1_000, &[]);
    p.frames = vec![Frame::named("main.main"), at(12), at(14)];
    p.samples = vec![
        Sample {
            stack: vec![0, 1],
            value: 3,
        },
        Sample {
            stack: vec![0, 2],
            value: 4,
        },
    ];
    {
        let s = open(dir.path());
        s.write_blocking(&T, vec![p]).unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    let tree = s
        .select_merge_blocking(&T, &query("lines.cpu{}", 0, 2_000))
        .unwrap()
        .tree;
    assert!(tree.has_lines());
    assert_eq!(tree.total(), 7);
    let lines: Vec<(String, u32, u32)> = (1..tree.nodes.len() as u32)
        .filter(|&n| tree.name_of(n) == "main.work")
        .map(|n| {
            let (file, line, start) = tree.line_of(n).unwrap();
            (file.to_string(), line, start)
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.contains(&("/src/main.go".into(), 14, 10)));
    let grouped = tree.by_function();
    assert_eq!(grouped.to_folded(), "main.main;main.work 7\n");
}

#[test]
fn tenants_with_the_same_names_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Tenant::new("team-a").unwrap(),
        Tenant::new("team-b").unwrap(),
    );
    let t0 = now_s() - 60;
    {
        let s = open(dir.path());
        // Same service, same labels, same type, different stacks and values.
        let i = &s.inner;
        i.write(
            &T,
            vec![profile("app", "prod", "cpu", t0, &[(&["main", "d"], 1)])],
        )
        .unwrap();
        i.write(
            &a,
            vec![profile("app", "prod", "cpu", t0, &[(&["main", "a"], 10)])],
        )
        .unwrap();
        i.write(
            &b,
            vec![profile("app", "prod", "cpu", t0, &[(&["main", "b"], 100)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    let folded = |t: &Tenant| {
        s.inner
            .select_merge(t, &query("app.cpu", t0 - 10, t0 + 10), now_s())
            .unwrap()
            .tree
            .to_folded()
    };
    assert_eq!(folded(&T), "main;d 1\n");
    assert_eq!(folded(&a), "main;a 10\n");
    assert_eq!(folded(&b), "main;b 100\n");
    let none = Tenant::new("nobody").unwrap();
    assert_eq!(folded(&none), "");
    assert_eq!(s.inner.matching_series(&a, None, 0, i64::MAX).len(), 1);
    assert!(s.inner.matching_series(&none, None, 0, i64::MAX).is_empty());
    let tl = s
        .inner
        .select_timeline(&b, &query("app.cpu", t0, t0 + 10), 10 * NS, None, now_s())
        .unwrap();
    assert_eq!(tl[0].1.points.iter().sum::<i64>(), 100);

    // Deleting team-a's app leaves team-b's and the default tenant's.
    assert!(s.inner.delete_service(&a, "app").unwrap() > 0);
    assert_eq!(folded(&a), "");
    assert_eq!(folded(&b), "main;b 100\n");
    assert_eq!(folded(&T), "main;d 1\n");
    assert_eq!(s.inner.delete_service(&none, "app").unwrap(), 0);
    assert_eq!(folded(&b), "main;b 100\n");
}

#[test]
fn the_default_tenant_keeps_the_layout_from_before_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_s() - 60;
    s.inner
        .write(
            &T,
            vec![profile("app", "prod", "cpu", t0, &[(&["main"], 1)])],
        )
        .unwrap();
    s.inner
        .write(
            &Tenant::new("other").unwrap(),
            vec![profile("app", "prod", "cpu", t0, &[(&["main"], 1)])],
        )
        .unwrap();
    s.flush_blocking().unwrap();
    let i = &s.inner;
    // The default tenant's service is keyed by its bare name, the other one's elsewhere.
    assert!(i.services_tree.get("app").unwrap().is_some());
    assert_eq!(i.services_tree.len(), 1);
    assert!(i.tenant_services.get("other\0app").unwrap().is_some());
    // Its series record has no tenant field: what a data directory from before holds.
    let rec = i.series_tree.get(0u32.to_be_bytes()).unwrap().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&i.codec.unpack(&rec).unwrap()).unwrap();
    assert!(rec.get("tenant").is_none(), "{rec}");
    let rec = i.series_tree.get(1u32.to_be_bytes()).unwrap().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&i.codec.unpack(&rec).unwrap()).unwrap();
    assert_eq!(rec["tenant"], "other");
}

/// `(references, columns)` among the coarse chunks (every level but the finest).
fn coarse_chunk_kinds(s: &SledStorage) -> (usize, usize) {
    let mut kinds = (0, 0);
    for kv in s.inner.chunks.iter() {
        let (k, v) = kv.unwrap();
        if k.as_ref() == LOG_SEQ_KEY || k[4] == 0 {
            continue;
        }
        match Stored::decode(&s.inner.unpack_chunk(&v).unwrap()).unwrap() {
            Stored::SameAsFinest { .. } => kinds.0 += 1,
            Stored::Column(_) | Stored::ScaledSibling { .. } => kinds.1 += 1,
        }
    }
    kinds
}

#[test]
fn sparse_coarse_buckets_refer_to_the_finest_chunk_and_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    // The start of a 100 000 s bucket inside the finest level's retention.
    let t0 = (now - DAY) / 100_000 * 100_000 + 1_000;
    let t0 = if t0 > now - 3600 { t0 - 100_000 } else { t0 };
    let total = |s: &SledStorage, from: i64, to: i64| {
        s.inner
            .select_merge(&T, &query("app.cpu", from, to), now)
            .unwrap()
            .tree
            .to_folded()
    };
    {
        let s = SledStorage::open(&five_levels(dir.path())).unwrap();
        s.write_blocking(
            &T,
            vec![profile("app", "prod", "cpu", t0, &[(&["main", "a"], 3)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        assert_eq!(
            coarse_chunk_kinds(&s),
            (4, 0),
            "one profile: every coarse level refers"
        );
        // A second profile in the same 10 s bucket, in a later flush: still references.
        s.write_blocking(
            &T,
            vec![profile(
                "app",
                "prod",
                "cpu",
                t0 + 3,
                &[(&["main", "b"], 2)],
            )],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        assert_eq!(coarse_chunk_kinds(&s), (4, 0));
        assert_eq!(total(&s, t0 - 50_000, t0 + 50_000), "main;a 3\nmain;b 2\n");
        let line = s
            .inner
            .select_timeline(
                &T,
                &query("app.cpu", t0 - 1000, t0 + 9000),
                1000 * NS,
                None,
                now,
            )
            .unwrap();
        assert_eq!(line[0].1.points.iter().sum::<i64>(), 5);
        // Another 10 s bucket of the same coarse buckets: they become columns of both.
        s.write_blocking(
            &T,
            vec![profile(
                "app",
                "prod",
                "cpu",
                t0 + 20,
                &[(&["main", "a"], 1)],
            )],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        assert_eq!(coarse_chunk_kinds(&s), (0, 4));
        // One profile far away in the same 100 000 s bucket: a new reference at 10 000 s and
        // below, the widest level now a column of all three.
        s.write_blocking(
            &T,
            vec![profile("app", "prod", "cpu", t0 + 50_000, &[(&["far"], 7)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        assert_eq!(coarse_chunk_kinds(&s), (3, 4));
    }
    let s = reopen(dir.path());
    for (from, to, expected) in [
        (t0 - 50_000, t0 + 99_000, "far 7\nmain;a 4\nmain;b 2\n"),
        (t0, t0 + 10, "main;a 3\nmain;b 2\n"),
        (t0 + 10, t0 + 40_000, "main;a 1\n"),
        (t0 + 40_000, t0 + 60_000, "far 7\n"),
    ] {
        assert_eq!(total(&s, from, to), expected, "{from}..{to}");
    }
}

#[test]
fn a_merge_over_its_budget_folds_the_smallest_stacks_into_other_and_keeps_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(dir.path());
    cfg.query_budget_bytes = 0; // the floor: MIN_NODES_PER_TREE nodes
    let s = SledStorage::open(&cfg).unwrap();
    let t0 = now_s() - 600;
    // 3,000 leaves under `main`, leaf i worth i + 1, plus one heavy stack.
    let names: Vec<String> = (0..3000).map(|i| format!("f{i}")).collect();
    let mut stacks: Vec<(Vec<&str>, i64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (vec!["main", n.as_str()], i as i64 + 1))
        .collect();
    stacks.push((vec!["main", "hot", "loop"], 1_000_000));
    // Kept nodes with children keep their own values: `main` and `hot` are samples too.
    stacks.push((vec!["main"], 5));
    stacks.push((vec!["main", "hot"], 7));
    let borrowed: Vec<(&[&str], i64)> = stacks.iter().map(|(s, v)| (s.as_slice(), *v)).collect();
    s.write_blocking(&T, vec![profile("app", "prod", "cpu", t0, &borrowed)])
        .unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    let expected_total = 1_000_000 + 5 + 7 + (1..=3000).sum::<i64>();
    assert_eq!(
        m.tree.total(),
        expected_total,
        "nothing is lost, only folded"
    );
    assert!(m.pruned_nodes > 1900, "pruned {}", m.pruned_nodes);
    assert!(
        m.tree.nodes.len() <= MIN_NODES_PER_TREE + 2,
        "{} nodes",
        m.tree.nodes.len()
    );
    let folded = m.tree.to_folded();
    assert!(
        folded.contains("main;hot;loop 1000000\n"),
        "the heavy stack stays exact"
    );
    assert!(folded.contains("\nmain 5\n") || folded.starts_with("main 5\n"));
    assert!(folded.contains("main;hot 7\n"), "{folded}");
    assert!(
        folded.contains("main;f2999 3000\n"),
        "the largest leaves stay"
    );
    assert!(folded.contains("main;other "), "the rest is under other");
    assert!(
        !folded.contains("main;f0 "),
        "the smallest leaves are folded"
    );

    // Within the budget nothing is pruned.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.write_blocking(&T, vec![profile("app", "prod", "cpu", t0, &borrowed)])
        .unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    assert_eq!(m.pruned_nodes, 0);
    assert_eq!(m.tree.total(), expected_total);
    assert!(!m.tree.to_folded().contains("other"));
}

#[test]
fn dictionaries_past_their_budget_leave_memory_and_come_back_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(dir.path());
    cfg.dictionary_cache_bytes = 0; // nothing stays resident once it is on disk
    let t0 = now_s() - 600;
    let expected = |i: i64| format!("main;work{i} {}\n", i + 1);
    {
        let s = SledStorage::open(&cfg).unwrap();
        let before = dictionary_stats();
        for round in 0..2 {
            for i in 0..20 {
                s.write_blocking(
                    &T,
                    vec![profile(
                        &format!("svc{i}"),
                        "prod",
                        "cpu",
                        t0 + round,
                        &[(
                            &["main", &format!("work{i}")],
                            (i + 1) / 2 + round * ((i + 1) % 2),
                        )],
                    )],
                )
                .unwrap();
            }
            s.flush_blocking().unwrap();
            let st = s.inner.state.lock();
            assert!(
                st.services.values().all(|d| !d.is_resident()),
                "every dictionary is on disk only after a flush"
            );
        }
        for i in 0..20i64 {
            let m = s
                .inner
                .select_merge(
                    &T,
                    &query(&format!("svc{i}.cpu"), t0 - 10, t0 + 10),
                    now_s(),
                )
                .unwrap();
            assert_eq!(m.tree.to_folded(), expected(i), "svc{i}");
        }
        let after = dictionary_stats();
        assert!(
            after.evictions >= before.evictions + 40,
            "{before:?} → {after:?}"
        );
        assert!(after.loads >= before.loads + 40, "{before:?} → {after:?}");
        // A new stack for a service whose dictionary was dropped extends it, not a copy of it.
        s.write_blocking(
            &T,
            vec![profile("svc3", "prod", "cpu", t0, &[(&["main", "new"], 9)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        let m = s
            .inner
            .select_merge(&T, &query("svc3.cpu", t0 - 10, t0 + 10), now_s())
            .unwrap();
        assert_eq!(m.tree.to_folded(), "main;new 9\nmain;work3 4\n");
    }
    // A restart reads dictionaries only when they are used, and the answers are the same.
    let s = reopen_with(&cfg);
    assert!(s
        .inner
        .state
        .lock()
        .services
        .values()
        .all(|d| !d.is_resident()));
    let m = s
        .inner
        .select_merge(&T, &query("svc7.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), expected(7));
}

#[test]
fn data_directories_where_sled_compresses_keep_that_and_new_ones_pack_values() {
    let t0 = now_s() - 600;
    let old = tempfile::tempdir().unwrap();
    // A directory created before values were packed: sled's own compression on.
    drop(
        sled::Config::new()
            .path(old.path())
            .use_compression(true)
            .open()
            .unwrap(),
    );
    let new = tempfile::tempdir().unwrap();
    for (dir, codec) in [
        (old.path(), Codec::SledCompressed),
        (new.path(), Codec::Packed),
    ] {
        {
            let s = reopen(dir);
            assert_eq!(s.inner.codec, codec);
            s.write_blocking(
                &T,
                vec![profile("app", "prod", "cpu", t0, &[(&["main", "a"], 3)])],
            )
            .unwrap();
            s.flush_blocking().unwrap();
        }
        let s = reopen(dir);
        assert_eq!(s.inner.codec, codec);
        let m = s
            .inner
            .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
            .unwrap();
        assert_eq!(m.tree.to_folded(), "main;a 3\n");
    }
    let conf =
        String::from_utf8_lossy(&std::fs::read(new.path().join("conf")).unwrap()).into_owned();
    assert!(conf.contains("use_compression: false"), "{conf}");
    // A new directory made with `compression = "sled"` keeps sled's compression, and reopens
    // with it whatever the setting says later.
    let chosen = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(chosen.path());
    cfg.compression = Compression::Sled;
    drop(reopen_with(&cfg));
    let s = reopen(chosen.path());
    assert_eq!(s.inner.codec, Codec::SledCompressed);
}

#[test]
fn a_write_buffer_is_applied_before_its_bound_and_stays_exact() {
    // A few chunks' worth: profiles spread over a day never merge in memory.
    let (_dir, cfg, s) = with_write_buffer(4 * 1024);
    let t0 = now_s() - 86_400;
    let before = write_buffer_stats();
    for i in 0..200i64 {
        s.write_blocking(
            &T,
            vec![profile(
                "app",
                "prod",
                "cpu",
                t0 + i * 400,
                &[(&["main", &format!("work{}", i % 7)], 1), (&["main"], 2)],
            )],
        )
        .unwrap();
        let st = s.inner.state.lock();
        assert!(
            st.buffer_bytes + st.applying_bytes <= cfg.write_buffer_bytes as usize,
            "write {i}: {} bytes buffered and {} being applied, past the {} bound",
            st.buffer_bytes,
            st.applying_bytes,
            cfg.write_buffer_bytes
        );
    }
    let after = write_buffer_stats();
    let applies = |w: WriteBufferStats| w.early_applies + w.background_applies;
    assert!(
        applies(after) >= applies(before) + 10,
        "{before:?} → {after:?}"
    );
    // Nothing applied early is lost or counted twice, before and after the flush.
    assert_eq!(app_cpu_total(&s, t0), 600);
    s.flush_blocking().unwrap();
    assert_eq!(app_cpu_total(&s, t0), 600);
    drop(s);
    assert_eq!(app_cpu_total(&reopen_with(&cfg), t0), 600);
}

/// A storage in a new directory whose write buffer is bounded at `bytes`.
fn with_write_buffer(bytes: u64) -> (tempfile::TempDir, SledConfig, SledStorage) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(dir.path());
    cfg.write_buffer_bytes = bytes;
    let s = SledStorage::open(&cfg).unwrap();
    (dir, cfg, s)
}

/// The total of `app.cpu` from `from_s` to now, buffered or applied.
fn app_cpu_total(s: &SledStorage, from_s: i64) -> i64 {
    s.inner
        .select_merge(&T, &query("app.cpu", from_s - 10, now_s()), now_s())
        .unwrap()
        .tree
        .total()
}

#[test]
fn a_write_buffer_near_its_bound_is_applied_between_flushes() {
    let (_dir, cfg, s) = with_write_buffer(64 * 1024);
    let t0 = now_s() - 86_400;
    let write = |i: i64| {
        s.write_blocking(
            &T,
            vec![profile(
                "app",
                "prod",
                "cpu",
                t0 + i * 60,
                &[(&["main", &format!("work{i}")], 1)],
            )],
        )
        .unwrap()
    };
    // Each profile gets buckets of its own: the buffer nears its bound after a few dozen, and
    // several times over in 300 writes. No flush: applies start while the writer goes on.
    for i in 0..300 {
        write(i);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.inner.applying_in_background.load(Ordering::Acquire)
        || s.inner.nearly_full(&s.inner.state.lock())
    {
        assert!(std::time::Instant::now() < deadline, "never applied");
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = s.inner.state.lock();
    assert_eq!(st.applying_bytes, 0);
    assert!(
        st.buffer_bytes < cfg.write_buffer_bytes as usize,
        "{}",
        st.buffer_bytes
    );
    drop(st);
    assert!(!s.inner.chunks.is_empty(), "applied to sled");
    // Every profile counts once, applied or still buffered.
    assert_eq!(app_cpu_total(&s, t0), 300);
}

#[test]
fn a_failed_apply_fails_later_writes_and_flushes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path());
    let t0 = (now_s() - 3_600) / 10 * 10;
    let push = |s: &SledStorage| {
        s.write_blocking(
            &T,
            vec![profile("app", "prod", "cpu", t0, &[(&["main", "a"], 1)])],
        )
    };
    push(&s).unwrap();
    s.flush_blocking().unwrap();
    // The chunk the next profile merges into can no longer be read.
    let key = s.inner.chunks.iter().next().unwrap().unwrap().0;
    let mut batch = crate::ChunkBatch::default();
    batch.insert(&key, b"\xff not a chunk");
    s.inner.chunks.apply(batch).unwrap();
    push(&s).unwrap();
    let failed = s.flush_blocking().unwrap_err().to_string();
    // The buffer that apply took is gone from memory: nothing may go on as if it were stored.
    let later = push(&s).unwrap_err().to_string();
    assert!(later.contains("restart the daemon"), "{later}");
    assert!(later.contains(&failed), "{later} / {failed}");
    let flush = s.flush_blocking().unwrap_err().to_string();
    assert!(flush.contains("restart the daemon"), "{flush}");
    // A buffer left near its bound (by a write that was under way when the apply failed)
    // starts one background apply, which fails and stops rather than going round again.
    s.inner.state.lock().buffer_bytes = s.inner.write_buffer_limit;
    s.inner.apply_soon();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.inner.applying_in_background.load(Ordering::Acquire) {
        assert!(
            std::time::Instant::now() < deadline,
            "the apply thread never stopped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(1));
        assert!(
            !s.inner.applying_in_background.load(Ordering::Acquire),
            "the apply thread went round again"
        );
    }
    s.inner.state.lock().buffer_bytes = 0;
}

fn two_levels(dir: &std::path::Path) -> SledStorage {
    SledStorage::open(&two_levels_config(dir)).unwrap()
}

fn two_levels_config(dir: &std::path::Path) -> SledConfig {
    let mut cfg = SledConfig::new(dir);
    cfg.levels = vec![
        Level {
            resolution: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 86_400),
        },
        Level {
            resolution: Duration::from_secs(1000),
            retention: Duration::from_secs(30 * 86_400),
        },
    ];
    cfg
}

#[test]
fn usage_counts_bytes_per_tenant_service_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let s = two_levels(dir.path());
    let other = Tenant::new("team-b").unwrap();
    let t0 = now_s() - 3600;
    // Three 10 s buckets of one 1000 s bucket for `app`, one for `db` and one for team-b.
    s.inner
        .write(
            &T,
            (0..3)
                .map(|i| profile("app", "a", "cpu", t0 / 1000 * 1000 + i * 10, &[(&["m"], 5)]))
                .chain([profile("db", "a", "cpu", t0, &[(&["q"], 1)])])
                .collect(),
        )
        .unwrap();
    s.inner
        .write(&other, vec![profile("app", "a", "cpu", t0, &[(&["x"], 1)])])
        .unwrap();
    let u = s.inner.usage().unwrap();
    assert!(u.supported);
    let find = |tenant: &str, service: &str, level: &str| {
        u.entries
            .iter()
            .find(|e| e.tenant == tenant && e.service == service && e.level == level)
            .map(|e| (e.chunks, e.bytes))
    };
    assert_eq!(find("anonymous", "app", "10s").unwrap().0, 3);
    assert_eq!(find("anonymous", "app", "1000s").unwrap().0, 1);
    assert_eq!(find("anonymous", "db", "10s").unwrap().0, 1);
    assert_eq!(find("team-b", "app", "10s").unwrap().0, 1);
    assert_eq!(u.entries.len(), 6);
    assert!(u.entries.iter().all(|e| e.bytes >= 13 * e.chunks));
    let chunk_bytes: u64 = u.entries.iter().map(|e| e.bytes).sum();
    assert!(
        u.total_bytes > chunk_bytes,
        "dictionaries count in the total"
    );
    // Deleting a service removes its entries, and its bytes from the total.
    s.inner.delete_service(&T, "app").unwrap();
    let after = s.inner.usage().unwrap();
    assert!(after
        .entries
        .iter()
        .all(|e| !(e.tenant == "anonymous" && e.service == "app")));
    assert!(after
        .entries
        .iter()
        .any(|e| e.tenant == "team-b" && e.service == "app"));
    assert!(after.total_bytes < u.total_bytes);
}

#[test]
fn size_retention_deletes_the_oldest_finest_data_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = two_levels(dir.path());
    let start = (now_s() - 86_400) / 1000 * 1000;
    // One profile a minute for 10 hours, each with stacks of its own.
    let profiles: Vec<Profile> = (0..600)
        .map(|i| {
            let names: Vec<String> = (0..20).map(|f| format!("f{}", (i * 7 + f) % 97)).collect();
            let stack: Vec<&str> = names.iter().map(String::as_str).collect();
            profile(
                "app",
                "a",
                "cpu",
                start + i * 60,
                &[(&stack, 10), (&stack[..5], 3)],
            )
        })
        .collect();
    s.inner.write(&T, profiles).unwrap();
    s.flush_blocking().unwrap();
    let before = s.inner.usage().unwrap();
    let everything = query("app.cpu", start - 1, now_s());
    let total_before = s
        .inner
        .select_merge(&T, &everything, now_s())
        .unwrap()
        .tree
        .total();
    // Under the bound: nothing happens.
    let r = s.inner.enforce_size(before.total_bytes, 0).unwrap();
    assert_eq!(r.chunks_deleted, 0);
    // A bound that a quarter of the 10 s chunks must go to meet.
    let fine: u64 = level_bytes(&before, "10s");
    let target = before.total_bytes - fine / 4;
    let r = s.inner.enforce_size(target + 1, target).unwrap();
    assert!(r.chunks_deleted > 0);
    let after = s.inner.usage().unwrap();
    assert!(
        after.total_bytes <= target,
        "{} > {target}",
        after.total_bytes
    );
    // The oldest 10 s buckets went, the newest stayed; the coarse level kept every profile.
    let first_fine = s
        .inner
        .chunks
        .range(chunk_key(0, 0, 0)..chunk_key(0, 1, 0))
        .next()
        .unwrap()
        .unwrap()
        .0;
    let first_bucket = u64::from_be_bytes(first_fine[5..13].try_into().unwrap()) as i64;
    assert!(
        first_bucket > start + 60,
        "the oldest 10 s buckets are gone"
    );
    assert!(s
        .inner
        .chunks
        .get(chunk_key(0, 0, (start + 599 * 60) as u64))
        .unwrap()
        .is_some());
    assert_eq!(
        s.inner
            .select_merge(&T, &everything, now_s())
            .unwrap()
            .tree
            .total(),
        total_before,
        "coarse chunks still hold what the deleted fine ones held"
    );
    // A bound below what the coarse level holds: the coarse level goes too, oldest first.
    let r = s.inner.enforce_size(1, 0).unwrap();
    assert!(r.chunks_deleted > 0);
    let empty = s.inner.usage().unwrap();
    assert!(empty.entries.is_empty(), "{:?}", empty.entries);
}

#[test]
fn times_whose_finest_chunks_size_retention_deleted_are_read_from_coarser_levels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_levels_config(dir.path());
    let s = SledStorage::open(&cfg).unwrap();
    let start = (now_s() - 86_400) / 1000 * 1000;
    // Two profiles in each 1000 s bucket, 500 s apart, for ten buckets.
    s.inner
        .write(
            &T,
            (0..20)
                .map(|i| profile("app", "a", "cpu", start + i * 500, &[(&["m"], 1)]))
                .collect(),
        )
        .unwrap();
    s.flush_blocking().unwrap();
    let narrow = |s: &SledStorage, t: i64| {
        let q = query("app.cpu", t, t + 10);
        s.inner.select_merge(&T, &q, now_s()).unwrap().tree.total()
    };
    let timeline_total = |s: &SledStorage| -> i64 {
        let q = query("app.cpu", start, start + 10_000);
        s.inner
            .select_timeline(&T, &q, 10 * NS, None, now_s())
            .unwrap()
            .iter()
            .flat_map(|(_, t)| t.points.iter())
            .sum()
    };
    assert_eq!(narrow(&s, start), 1, "read from its 10 s chunk");
    assert_eq!(timeline_total(&s), 20);
    // Half of the 10 s chunks go.
    let u = s.inner.usage().unwrap();
    let fine: u64 = level_bytes(&u, "10s");
    let target = u.total_bytes - fine / 2;
    assert!(s.inner.enforce_size(target, target).unwrap().chunks_deleted >= 10);
    assert!(s
        .inner
        .chunks
        .get(chunk_key(0, 0, start as u64))
        .unwrap()
        .is_none());
    // A narrow range over a deleted time reads the 1000 s bucket around it (both profiles),
    // rather than nothing; a timeline counts every profile once.
    assert_eq!(narrow(&s, start), 2);
    assert_eq!(timeline_total(&s), 20);
    assert_eq!(narrow(&s, start + 19 * 500), 1, "recent times keep 10 s");
    // Where size retention stopped survives a restart.
    drop(s);
    let s = reopen_with(&cfg);
    assert_eq!(narrow(&s, start), 2);
    assert_eq!(timeline_total(&s), 20);
}

#[test]
fn kept_counts_match_a_full_scan_after_writes_retention_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_levels_config(dir.path());
    let s = SledStorage::open(&cfg).unwrap();
    let now = now_s();
    let write = |from: i64, n: i64, service: &str| {
        s.inner
            .write(
                &T,
                (0..n)
                    .map(|i| {
                        let f = format!("f{}", i % 7);
                        profile(
                            service,
                            "a",
                            "cpu",
                            from + i * 70,
                            &[(&["main", &f], 1 + i)],
                        )
                    })
                    .collect(),
            )
            .unwrap();
    };
    write(now - 40 * 86_400, 30, "app");
    write(now - 7200, 50, "app");
    write(now - 7200, 20, "gone");
    // The first usage builds the counts; everything after adjusts them.
    let first = s.inner.usage().unwrap();
    let sorted = |a: usage::Accounting| a.entries().collect::<std::collections::BTreeMap<_, _>>();
    let exact = |s: &SledStorage| {
        sorted(usage::scan_chunks(&s.inner.chunks, s.inner.levels.len()).unwrap())
    };
    let kept = |s: &SledStorage| sorted(s.inner.accounting.lock().clone().unwrap());
    assert_eq!(kept(&s), exact(&s));
    write(now - 7000, 40, "app"); // merges into existing chunks and references
    s.flush_blocking().unwrap();
    assert_eq!(kept(&s), exact(&s));
    assert!(s.inner.enforce_retention(now).unwrap().chunks_deleted > 0);
    assert_eq!(kept(&s), exact(&s));
    let u = s.inner.usage().unwrap();
    s.inner
        .enforce_size(u.total_bytes - 1, u.total_bytes * 3 / 4)
        .unwrap();
    assert_eq!(kept(&s), exact(&s));
    s.inner.delete_service(&T, "gone").unwrap();
    assert_eq!(kept(&s), exact(&s));
    let last = s.inner.usage().unwrap();
    assert!(last.entries.iter().all(|e| e.service != "gone"));
    assert!(last.total_bytes < first.total_bytes);
}

#[test]
fn series_records_keep_their_stored_form_and_share_profile_types() {
    // The form written before profile types were shared: `info` holds labels and type.
    let stored = r#"{"info":{"labels":[["service_name","app"]],"profile_type":{"name":"cpu","metric":"process_cpu","sample_type":"cpu","sample_unit":"nanoseconds","period_type":"cpu","period_unit":"nanoseconds","aggregation":"sum"},"spy_name":"gospy","sample_rate":100},"service":"app","first_ns":0,"last_ns":3600000000000}"#;
    let rec: SeriesRecord = serde_json::from_str(stored).unwrap();
    assert_eq!(rec.labels.service_name(), Some("app"));
    assert_eq!(rec.spy_name, "gospy");
    let again: serde_json::Value = serde_json::to_value(&rec).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<serde_json::Value>(stored).unwrap()
    );

    let mut st = State::default();
    let a = st.intern(&rec.profile_type);
    let b = st.intern(&ProfileType::clone(&rec.profile_type));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(st.profile_types.len(), 1);
}

/// Stacks for round `round` of service `svc`: some the same every round, some seen again every
/// fourth round, some new each round, at depths from 2 to 13.
fn churned_stacks(svc: usize, round: usize) -> Vec<(Vec<String>, i64)> {
    (0..90)
        .map(|j| {
            let generation = match j % 3 {
                0 => 0,
                1 => round % 4,
                _ => round,
            };
            let depth = 2 + (j * 7 + round) % 12;
            let stack = std::iter::once("main".to_string())
                .chain((1..depth).map(|d| format!("s{svc}g{generation}f{}_{d}", j % 17)))
                .collect();
            (stack, (j + round + 1) as i64)
        })
        .collect()
}

/// A `prod` CPU profile of `service` at `start_s` from stacks of owned frame names.
fn owned_profile(service: &str, start_s: i64, owned: &[(Vec<String>, i64)]) -> Profile {
    let refs: Vec<Vec<&str>> = owned
        .iter()
        .map(|(st, _)| st.iter().map(String::as_str).collect())
        .collect();
    let stacks: Vec<(&[&str], i64)> = refs
        .iter()
        .zip(owned)
        .map(|(r, (_, v))| (r.as_slice(), *v))
        .collect();
    profile(service, "prod", "cpu", start_s, &stacks)
}

/// Writes `rounds` rounds of three services' churned stacks from `t0`, 10 s apart, applying
/// every second round.
fn write_churned(s: &SledStorage, t0: i64, rounds: usize) {
    for round in 0..rounds {
        for svc in 0..3 {
            let p = owned_profile(
                &format!("svc{svc}"),
                t0 + round as i64 * 10,
                &churned_stacks(svc, round),
            );
            s.write_blocking(&T, vec![p]).unwrap();
        }
        if round % 2 == 1 {
            s.flush_blocking().unwrap();
        }
    }
    s.flush_blocking().unwrap();
}

/// Folded stacks, total and tree size of merges over several selectors and ranges.
fn churned_answers(s: &SledStorage, t0: i64) -> Vec<(String, i64, usize)> {
    let mut out = Vec::new();
    for sel in ["svc0.cpu", "svc1.cpu", "svc2.cpu{env=\"prod\"}"] {
        for (from, to) in [(t0 - 10, t0 + 2000), (t0 + 95, t0 + 205)] {
            let m = s
                .inner
                .select_merge(&T, &query(sel, from, to), now_s())
                .unwrap();
            assert_eq!(m.pruned_nodes, 0);
            out.push((m.tree.to_folded(), m.tree.total(), m.tree.nodes.len()));
        }
    }
    out
}

fn resident(s: &SledStorage) -> usize {
    let st = s.inner.state.lock();
    st.services.values().map(ServiceDict::resident_bytes).sum()
}

fn nodes(s: &SledStorage) -> usize {
    let st = s.inner.state.lock();
    st.services.values().map(ServiceDict::node_count).sum()
}

#[test]
fn answers_with_a_tiny_dictionary_budget_equal_those_with_everything_resident() {
    let t0 = now_s() - 3600;
    let roomy = tempfile::tempdir().unwrap();
    let tiny = tempfile::tempdir().unwrap();
    let mut tiny_cfg = SledConfig::new(tiny.path());
    tiny_cfg.dictionary_cache_bytes = 16 << 10;
    let (expected, roomy_nodes) = {
        let s = open(roomy.path());
        write_churned(&s, t0, 40);
        let st = s.inner.state.lock();
        assert!(
            st.services.values().all(|d| d.node_count() > blocks::BLOCK),
            "every dictionary spans several blocks"
        );
        drop(st);
        (churned_answers(&s, t0), nodes(&s))
    };
    assert!(expected
        .iter()
        .all(|(f, total, _)| !f.is_empty() && *total > 0));
    let before = dictionary_stats();
    {
        let s = SledStorage::open(&tiny_cfg).unwrap();
        write_churned(&s, t0, 40);
        assert!(resident(&s) <= 16 << 10, "{} bytes resident", resident(&s));
        assert_eq!(churned_answers(&s, t0), expected);
        assert!(
            resident(&s) <= 16 << 10,
            "{} bytes after queries",
            resident(&s)
        );
        // Stacks written again after their lookup entries left memory were given new ids: the
        // dictionaries hold copies, which the answers above merged.
        assert!(nodes(&s) > roomy_nodes, "{} vs {roomy_nodes}", nodes(&s));
    }
    let after = dictionary_stats();
    assert!(after.evictions > before.evictions, "{before:?} → {after:?}");
    assert!(after.loads > before.loads, "{before:?} → {after:?}");
    // After a restart nothing is resident: every answer is read back from disk, and writes
    // extend the dictionaries where they end.
    let s = reopen_with(&tiny_cfg);
    assert_eq!(resident(&s), 0);
    assert_eq!(churned_answers(&s, t0), expected);
    write_churned(&s, t0 + 400, 8);
    let roomy = reopen(roomy.path());
    write_churned(&roomy, t0 + 400, 8);
    assert_eq!(churned_answers(&s, t0), churned_answers(&roomy, t0));
}

#[test]
fn a_budget_of_zero_keeps_only_what_is_not_on_disk_yet() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SledConfig::new(dir.path());
    cfg.dictionary_cache_bytes = 0;
    let s = SledStorage::open(&cfg).unwrap();
    let t0 = now_s() - 600;
    let p = |v| profile("app", "prod", "cpu", t0, &[(&["main", "work"], v)]);
    s.write_blocking(&T, vec![p(1)]).unwrap();
    assert!(resident(&s) > 0, "unwritten entries stay");
    s.flush_blocking().unwrap();
    assert_eq!(resident(&s), 0);
    // The same stack again, its lookup gone: a copy, merged in the answer.
    s.write_blocking(&T, vec![p(2)]).unwrap();
    s.flush_blocking().unwrap();
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", t0 - 10, t0 + 10), now_s())
        .unwrap();
    assert_eq!(m.tree.to_folded(), "main;work 3\n");
    assert_eq!(m.tree.nodes.len(), 3);
    assert_eq!(resident(&s), 0, "what the query read left memory again");
}

#[test]
fn dictionaries_idle_for_a_while_leave_memory_and_answers_stay_the_same() {
    let t0 = now_s() - 3600;
    let roomy = tempfile::tempdir().unwrap();
    let idle = tempfile::tempdir().unwrap();
    let (s, r) = (open(idle.path()), open(roomy.path()));
    write_churned(&s, t0, 40);
    write_churned(&r, t0, 40);
    s.flush_blocking().unwrap();
    // Used just now: nothing is released.
    s.inner.release_idle_dictionaries();
    let resident_when_used = resident(&s);
    assert!(resident_when_used > 0);
    // Not used for a minute (as if): everything on disk leaves memory.
    for d in s.inner.state.lock().services.values_mut() {
        d.touched_s -= 60;
    }
    s.inner.next_idle_check_s.store(0, Ordering::Relaxed);
    s.inner.release_idle_dictionaries();
    assert_eq!(resident(&s), 0, "was {resident_when_used}");
    // Answers are read back from disk; writes after the release find or extend what is there.
    assert_eq!(churned_answers(&s, t0), churned_answers(&r, t0));
    write_churned(&s, t0 + 400, 8);
    write_churned(&r, t0 + 400, 8);
    assert_eq!(churned_answers(&s, t0), churned_answers(&r, t0));
    assert!(resident(&s) > 0, "used again, the dictionaries are back");
}

#[test]
fn levels_are_recorded_and_other_resolutions_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    {
        let s = open(dir.path());
        assert_eq!(
            s.inner.levels,
            vec![
                (10, 3 * DAY as u64),
                (1000, 30 * DAY as u64),
                (100_000, 365 * DAY as u64)
            ],
            "a new directory gets the default"
        );
        s.write_blocking(
            &T,
            vec![profile("app", "prod", "cpu", now - 60, &[(&["main"], 2)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
    }
    // Other resolutions configured: refused, naming the recorded ones.
    let e = try_reopen(&five_levels(dir.path())).err().expect("refused");
    let message = e.to_string();
    assert!(
        message.contains("was written with levels of 10s, 1000s, 100000s")
            && message.contains("storage.levels"),
        "{message}"
    );
    // The same resolutions with other retentions: opens, and answers.
    let mut same = SledConfig::new(dir.path());
    same.levels = [(10, DAY), (1000, 7 * DAY), (100_000, 90 * DAY)]
        .into_iter()
        .map(|(r, k)| Level {
            resolution: Duration::from_secs(r as u64),
            retention: Duration::from_secs(k as u64),
        })
        .collect();
    let s = reopen_with(&same);
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", now - 120, now), now)
        .unwrap();
    assert_eq!(m.tree.total(), 2);
    assert_eq!(s.inner.levels[2], (100_000, 90 * DAY as u64));
    drop(s);

    // A directory written before resolutions were recorded is taken as the five levels that
    // were the default then; an empty one as new.
    let old = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(&five_levels(old.path())).unwrap();
        s.write_blocking(
            &T,
            vec![profile("app", "prod", "cpu", now - 60, &[(&["main"], 3)])],
        )
        .unwrap();
        s.flush_blocking().unwrap();
        let settings = s.inner.db.open_tree("settings").unwrap();
        settings.remove(RESOLUTIONS_KEY).unwrap();
        s.inner.db.flush().unwrap();
    }
    let mut capped = SledConfig::new(old.path());
    capped.max_retention = Duration::from_secs(7 * DAY as u64);
    let s = reopen_with(&capped);
    assert_eq!(s.inner.levels.len(), 5);
    assert!(s.inner.levels.iter().all(|l| l.1 <= 7 * DAY as u64));
    let m = s
        .inner
        .select_merge(&T, &query("app.cpu", now - 120, now), now)
        .unwrap();
    assert_eq!(m.tree.total(), 3);
}

#[test]
fn timelines_with_levels_far_apart_answer_at_the_coarser_level() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let now = now_s();
    // One profile an hour over the last five days, value 1 each.
    let start = (now - 5 * DAY) / 18_000 * 18_000;
    let profiles: Vec<Profile> = (0..120)
        .map(|i| profile("app", "prod", "cpu", start + i * 3600, &[(&["main"], 1)]))
        .collect();
    s.write_blocking(&T, profiles).unwrap();
    let q = query("app.cpu", start, start + 5 * DAY);
    let timeline = |s: &SledStorage, q: &Query, step_s: i64| {
        let mut lines = s
            .inner
            .select_timeline(&T, q, step_s * NS, None, now)
            .unwrap();
        lines.remove(0).1
    };
    // A 100 s step would read 10 s chunks: answered at 1000 s (432 points), the same total.
    let t = timeline(&s, &q, 100);
    assert_eq!(t.step_ns, 1000 * NS);
    assert_eq!(t.points.len(), 432);
    assert_eq!(t.points.iter().sum::<i64>(), 120);
    // A step one of the levels has, or a range too short for 100 coarser points: as asked.
    let t = timeline(&s, &q, 1000);
    assert_eq!((t.step_ns, t.points.iter().sum::<i64>()), (1000 * NS, 120));
    let day = query("app.cpu", start, start + 10 * 3600);
    let t = timeline(&s, &day, 100);
    assert_eq!((t.step_ns, t.points.iter().sum::<i64>()), (100 * NS, 10));
    // Levels ten times apart answer at the step asked.
    drop(s);
    let five = tempfile::tempdir().unwrap();
    let s = SledStorage::open(&five_levels(five.path())).unwrap();
    s.write_blocking(
        &T,
        vec![profile("app", "prod", "cpu", start, &[(&["main"], 1)])],
    )
    .unwrap();
    assert_eq!(timeline(&s, &q, 100).step_ns, 100 * NS);
}

/// `n` stacks of one service, with values that vary from profile to profile as a fleet's do.
fn varied_stacks(n: usize, seed: &mut u64) -> Vec<(Vec<String>, i64)> {
    (0..n)
        .map(|j| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let depth = 3 + j % 9;
            let stack = std::iter::once("main".to_string())
                .chain((1..depth).map(|d| format!("pkg{}.fn{}", j % 23, j * 31 + d)))
                .collect();
            // Mostly a few samples per stack, now and then many.
            let r = (*seed >> 33) as i64;
            (stack, if r % 8 == 0 { 10 + r % 90 } else { 1 + r % 4 })
        })
        .collect()
}

fn write_varied(s: &SledStorage, t0: i64, from: usize, to: usize, seed: &mut u64) -> i64 {
    let mut total = 0;
    for i in from..to {
        let owned = varied_stacks(150, seed);
        total += owned.iter().map(|(_, v)| v).sum::<i64>();
        // A 10 s bucket of its own; the coarse levels hold columns too.
        let p = owned_profile("zsvc", t0 + i as i64 * 600, &owned);
        s.write_blocking(&T, vec![p]).unwrap();
        if i % 20 == 19 {
            s.flush_blocking().unwrap();
        }
    }
    s.flush_blocking().unwrap();
    total
}

/// Level 0 chunks: (packed with a dictionary, stored bytes).
fn finest_chunks(s: &SledStorage) -> Vec<(bool, usize)> {
    s.inner
        .chunks
        .iter()
        .map(|kv| kv.unwrap())
        .filter(|(k, _)| k.as_ref() != LOG_SEQ_KEY && k[4] == 0)
        .map(|(_, v)| (v[0] == 2, v.len()))
        .collect()
}

#[test]
fn a_service_gets_a_compression_dictionary_and_its_chunks_shrink_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_s() - 10 * DAY;
    let mut seed = 7;
    let s = open(dir.path());
    let mut total = write_varied(&s, t0, 0, 100, &mut seed);
    assert_eq!(
        s.inner.dicts.tree().len(),
        0,
        "too few samples to train yet"
    );
    let mut written = 100;
    while s.inner.dicts.tree().is_empty() {
        assert!(written < 2000, "no dictionary after {written} profiles");
        total += write_varied(&s, t0, written, written + 20, &mut seed);
        written += 20;
    }
    assert_eq!(
        s.inner.dicts.training_bytes(),
        0,
        "samples are freed once trained"
    );
    total += write_varied(&s, t0, written, written + 300, &mut seed);
    let chunks = finest_chunks(&s);
    let mean = |with: bool| {
        let sizes: Vec<usize> = chunks.iter().filter(|c| c.0 == with).map(|c| c.1).collect();
        assert!(!sizes.is_empty());
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    };
    let (plain, packed) = (mean(false), mean(true));
    assert!(
        packed * 1.3 < plain,
        "chunks packed with the dictionary average {packed:.0} B against {plain:.0} B"
    );
    let answer = |s: &SledStorage| {
        let m = s
            .inner
            .select_merge(&T, &query("zsvc.cpu", t0 - 10, now_s()), now_s())
            .unwrap();
        (m.tree.to_folded(), m.tree.total())
    };
    let before = answer(&s);
    assert_eq!(before.1, total);
    // The dictionary is counted in what storage holds.
    let dict_bytes: usize = s
        .inner
        .dicts
        .tree()
        .iter()
        .map(|kv| kv.map(|(k, v)| k.len() + v.len()).unwrap())
        .sum();
    assert!(dict_bytes > 1000);
    let usage = s.inner.usage().unwrap();
    let listed: u64 = usage.entries.iter().map(|e| e.bytes).sum();
    assert!(usage.total_bytes >= listed + dict_bytes as u64);
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(answer(&s), before, "the same answer after a restart");
    // One dictionary per service: more writes do not train another.
    write_varied(&s, t0, written + 300, written + 400, &mut seed);
    assert_eq!(s.inner.dicts.tree().len(), 1);
    // A chunk whose dictionary is missing is an error that names it, not a wrong answer. The
    // last profile's 10 s chunk is read as of when it was written, so from the finest level,
    // whose chunks are all packed with the dictionary by now (coarse columns this small may
    // pack better without it, and which ones a range reads depends on the clock).
    s.inner.dicts.tree().clear().unwrap();
    drop(s);
    let s = reopen(dir.path());
    let last = t0 + (written as i64 + 399) * 600;
    let err = s
        .inner
        .select_merge(&T, &query("zsvc.cpu", last, last + 10), last + 10)
        .unwrap_err();
    assert!(err.to_string().contains("compression dictionary"), "{err}");
}

/// A Go CPU profile as the pprof decoder gives it: the same stacks as `samples` (`cpu`) and as
/// CPU time (`cpu_nanoseconds`, 10 ms a sample).
fn cpu_pair(env: &str, start_s: i64, stacks: &[(&[&str], i64)]) -> Vec<Profile> {
    let samples = profile("app", env, "cpu", start_s, stacks);
    let mut nanos = profile("app", env, "cpu_nanoseconds", start_s, stacks);
    for s in &mut nanos.samples {
        s.value *= 10_000_000;
    }
    vec![samples, nanos]
}

/// What storage holds at `level` (`"10s"`), all services together.
fn level_bytes(usage: &StorageUsage, level: &str) -> u64 {
    usage
        .entries
        .iter()
        .filter(|e| e.level == level)
        .map(|e| e.bytes)
        .sum()
}

/// Writes `profiles` and applies them to sled.
fn put(s: &SledStorage, profiles: Vec<Profile>) {
    s.write_blocking(&T, profiles).unwrap();
    s.flush_blocking().unwrap();
}

/// `(columns, references to a sibling)` among every chunk.
fn sibling_kinds(s: &SledStorage) -> (usize, usize) {
    let mut kinds = (0, 0);
    for kv in s.inner.chunks.iter() {
        let (k, v) = kv.unwrap();
        if k.as_ref() == LOG_SEQ_KEY {
            continue;
        }
        match Stored::decode(&s.inner.unpack_chunk(&v).unwrap()).unwrap() {
            Stored::Column(_) => kinds.0 += 1,
            Stored::ScaledSibling { .. } => kinds.1 += 1,
            Stored::SameAsFinest { .. } => {}
        }
    }
    kinds
}

fn folded_of(s: &SledStorage, sel: &str, from: i64, to: i64) -> String {
    s.inner
        .select_merge(&T, &query(sel, from, to), now_s())
        .unwrap()
        .tree
        .to_folded()
}

#[test]
fn proportional_sample_types_are_stored_once_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_s() - 7200) / 1000 * 1000;
    let expect = |s: &SledStorage| {
        assert_eq!(
            folded_of(s, "app.cpu", t0, t0 + 1000),
            "main;a 4\nmain;b 4\n"
        );
        assert_eq!(
            folded_of(s, "app.cpu_nanoseconds", t0, t0 + 1000),
            "main;a 40000000\nmain;b 40000000\n"
        );
        // Where the finest bucket alone is read.
        assert_eq!(
            folded_of(s, "app.cpu", t0 + 20, t0 + 30),
            "main;a 2\nmain;b 4\n"
        );
        let line = |sel: &str| {
            s.inner
                .select_timeline(&T, &query(sel, t0, t0 + 60), 10 * NS, None, now_s())
                .unwrap()[0]
                .1
                .points
                .clone()
        };
        assert_eq!(line("app.cpu"), vec![2, 0, 6, 0, 0, 0]);
        assert_eq!(
            line("app.cpu_nanoseconds"),
            vec![20_000_000, 0, 60_000_000, 0, 0, 0]
        );
    };
    {
        let s = open(dir.path());
        s.write_blocking(&T, cpu_pair("prod", t0, &[(&["main", "a"], 2)]))
            .unwrap();
        s.write_blocking(
            &T,
            cpu_pair("prod", t0 + 20, &[(&["main", "a"], 1), (&["main", "b"], 4)]),
        )
        .unwrap();
        s.flush_blocking().unwrap();
        // A second profile in a finest bucket, in a later flush: still proportional.
        s.write_blocking(&T, cpu_pair("prod", t0 + 25, &[(&["main", "a"], 1)]))
            .unwrap();
        s.flush_blocking().unwrap();
        // Finest: two buckets, one column and one reference each; the 1000 s and 100 000 s
        // buckets hold three profiles in two finest buckets, a column and a reference each.
        assert_eq!(sibling_kinds(&s), (4, 4));
        // CPU time is the column (what queries ask for most), samples refer to it.
        let key = chunk_key(0, 0, (t0 + 20) as u64);
        let stored = Stored::decode(
            &s.inner
                .unpack_chunk(&s.inner.chunks.get(key).unwrap().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            matches!(
                stored,
                Stored::ScaledSibling {
                    series: 1,
                    ratio: Ratio {
                        multiply: 1,
                        divide: 10_000_000
                    },
                    profiles: 2,
                    total: 6
                }
            ),
            "{stored:?}"
        );
        expect(&s);
    }
    let s = reopen(dir.path());
    expect(&s);
}

/// The dictionary blocks' bytes that applies keep once `usage` has scanned them stay what a scan
/// finds, as blocks fill, are rewritten and new ones begin, in more than one service.
#[test]
fn dictionary_block_bytes_kept_by_applies_match_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_s() - 600;
    let scan = |s: &SledStorage| -> u64 {
        [&s.inner.frame_blocks, &s.inner.node_blocks]
            .into_iter()
            .flat_map(|t| t.iter())
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.len() + v.len()) as u64
            })
            .sum()
    };
    put(
        &s,
        vec![profile("app", "a", "cpu", t0, &[(&["m", "f"], 1)])],
    );
    s.inner.usage().unwrap();
    assert_eq!(*s.inner.dictionary_block_bytes.lock(), Some(scan(&s)));
    for round in 0..3 {
        let names: Vec<String> = (0..3000).map(|i| format!("f{round}_{i}")).collect();
        let stacks: Vec<[&str; 2]> = names.iter().map(|n| ["m", n.as_str()]).collect();
        let samples: Vec<(&[&str], i64)> = stacks.iter().map(|st| (&st[..], 1)).collect();
        let service = if round == 1 { "db" } else { "app" };
        let before = s.inner.dictionary_block_bytes.lock().unwrap();
        put(&s, vec![profile(service, "a", "cpu", t0 + round, &samples)]);
        let total = s.inner.usage().unwrap().total_bytes;
        let kept = s.inner.dictionary_block_bytes.lock().unwrap();
        assert!(kept > before, "round {round}: {kept} after {before}");
        assert_eq!(kept, scan(&s), "round {round}");
        assert!(total > kept);
    }
}

/// An apply stores one slot (a level and bucket of a group of siblings) at a time: with several
/// groups, buckets and levels in one batch, each pair still finds its sibling and reads back
/// exactly.
#[test]
fn siblings_of_many_groups_and_buckets_in_one_apply_each_refer_to_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_s() - 7200) / 1000 * 1000;
    let s = open(dir.path());
    let envs = ["prod", "dev", "stage"];
    for (i, env) in envs.iter().enumerate() {
        for slot in 0..3 {
            let v = (i as i64 + 1) * (slot + 1);
            s.write_blocking(
                &T,
                cpu_pair(
                    env,
                    t0 + 20 * slot,
                    &[(&["main", env], v), (&["main", "b"], 1)],
                ),
            )
            .unwrap();
        }
    }
    s.flush_blocking().unwrap();
    // Per pair: three finest buckets, one 1000 s and one 100 000 s bucket — a column and a
    // reference each.
    assert_eq!(sibling_kinds(&s), (15, 15));
    for (i, env) in envs.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(
            folded_of(&s, &format!("app.cpu{{env=\"{env}\"}}"), t0, t0 + 1000),
            format!("main;b 3\nmain;{env} {}\n", 6 * n)
        );
        assert_eq!(
            folded_of(
                &s,
                &format!("app.cpu_nanoseconds{{env=\"{env}\"}}"),
                t0,
                t0 + 30
            ),
            format!("main;b 20000000\nmain;{env} {}\n", 30_000_000 * n)
        );
    }
}

/// The bytes and chunks storage keeps count of, and what a full scan of the chunks finds.
type Counts = std::collections::BTreeMap<(u32, u8), (i64, i64)>;
fn kept_and_scanned(s: &SledStorage) -> (Counts, Counts) {
    let sorted = |a: usage::Accounting| a.entries().collect::<Counts>();
    (
        sorted(s.inner.accounting.lock().clone().unwrap()),
        sorted(usage::scan_chunks(&s.inner.chunks, s.inner.levels.len()).unwrap()),
    )
}

#[test]
fn a_sibling_written_alone_no_longer_refers_and_both_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = two_levels(dir.path());
    let t0 = (now_s() - 7200) / 1000 * 1000;
    for i in 0..3 {
        s.write_blocking(&T, cpu_pair("prod", t0 + 10 * i, &[(&["main", "a"], 2)]))
            .unwrap();
    }
    s.flush_blocking().unwrap();
    assert_eq!(sibling_kinds(&s), (4, 4));
    // From here on the kept counts follow every change, references given their columns too.
    s.inner.usage().unwrap();
    // The column's series alone, in a bucket where the other refers to it: the reference
    // becomes the column it stood for.
    let alone =
        |ty: &str, t: i64, stack: &[&str]| vec![profile("app", "prod", ty, t, &[(stack, 5)])];
    put(&s, alone("cpu_nanoseconds", t0, &["main", "b"]));
    // The referring series alone: merged with what it stood for.
    put(&s, alone("cpu", t0 + 10, &["main", "c"]));
    assert_eq!(sibling_kinds(&s), (7, 1), "only t0 + 20 still refers");
    let (kept, scanned) = kept_and_scanned(&s);
    assert_eq!(kept, scanned);
    assert_eq!(
        folded_of(&s, "app.cpu", t0, t0 + 1000),
        "main;a 6\nmain;c 5\n"
    );
    assert_eq!(
        folded_of(&s, "app.cpu_nanoseconds", t0, t0 + 1000),
        "main;a 60000000\nmain;b 5\n"
    );
    assert_eq!(folded_of(&s, "app.cpu", t0, t0 + 10), "main;a 2\n");
    assert_eq!(
        folded_of(&s, "app.cpu", t0 + 10, t0 + 20),
        "main;a 2\nmain;c 5\n"
    );
    assert_eq!(folded_of(&s, "app.cpu", t0 + 20, t0 + 30), "main;a 2\n");
}

#[test]
fn retention_size_bounds_and_deletes_leave_no_reference_to_a_chunk_that_is_gone() {
    let now = now_s();
    let t0 = (now - 2 * DAY) / 1000 * 1000;
    // Pairs in a few 1000 s buckets: some hold one profile (the coarse chunk refers to the
    // finest one), some several (a coarse column and a coarse sibling reference).
    let fill = |s: &SledStorage| {
        for (i, offset) in [0, 10, 20, 1000, 2000, 2500].into_iter().enumerate() {
            let v = i as i64 + 1;
            s.write_blocking(
                &T,
                cpu_pair(
                    "prod",
                    t0 + offset,
                    &[(&["main", "a"], v), (&["main", "b"], 1)],
                ),
            )
            .unwrap();
        }
        s.flush_blocking().unwrap();
        assert!(sibling_kinds(s).1 >= 8, "{:?}", sibling_kinds(s));
    };
    let expect_all = |s: &SledStorage, now: i64| {
        let m = |sel: &str| {
            s.inner
                .select_merge(&T, &query(sel, t0, t0 + 3000), now)
                .unwrap()
                .tree
                .to_folded()
        };
        assert_eq!(m("app.cpu"), "main;a 21\nmain;b 6\n");
        assert_eq!(
            m("app.cpu_nanoseconds"),
            "main;a 210000000\nmain;b 60000000\n"
        );
    };
    // Retention by age: the finest level goes, series by series.
    for order in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = two_levels_config(dir.path());
        cfg.levels[0].retention = Duration::from_secs(3600);
        let s = SledStorage::open(&cfg).unwrap();
        if order {
            // The referring series first this time: ids decide the order of the pass.
            s.write_blocking(
                &T,
                vec![profile("app", "prod", "cpu", now - 60, &[(&["x"], 1)])],
            )
            .unwrap();
        }
        fill(&s);
        expect_all(&s, now);
        s.inner.usage().unwrap();
        let r = s.inner.enforce_retention(now).unwrap();
        assert!(r.chunks_deleted >= 12, "{r:?}");
        expect_all(&s, now);
        let (kept, scanned) = kept_and_scanned(&s);
        assert_eq!(kept, scanned);
        assert_eq!(
            s.inner
                .chunks
                .iter()
                .filter(|kv| kv.as_ref().unwrap().0[4] == 0)
                .count(),
            usize::from(order),
            "only the recent finest chunk is left"
        );
    }
    // Retention by size: the finest level's oldest buckets first.
    let dir = tempfile::tempdir().unwrap();
    let s = two_levels(dir.path());
    fill(&s);
    let before = s.inner.usage().unwrap();
    let fine: u64 = level_bytes(&before, "10s");
    // Half the finest level's bytes must go: its oldest buckets, the coarse level untouched.
    let target = before.total_bytes - fine / 2;
    let r = s.inner.enforce_size(target + 1, target).unwrap();
    assert!(r.chunks_deleted >= 2, "{r:?}");
    assert!(s
        .inner
        .chunks
        .get(chunk_key(0, 0, t0 as u64))
        .unwrap()
        .is_none());
    expect_all(&s, now);
    // Deleting the service: nothing left, nothing refers.
    assert!(s.inner.delete_service(&T, "app").unwrap() > 0);
    assert_eq!(sibling_kinds(&s), (0, 0));
    assert_eq!(folded_of(&s, "app.cpu", t0, t0 + 3000), "");
}

#[test]
fn a_query_that_read_a_reference_before_its_sibling_changed_reads_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = two_levels(dir.path());
    let t0 = (now_s() - 7200) / 1000 * 1000;
    put(&s, cpu_pair("prod", t0, &[(&["main", "a"], 2)]));
    let key = chunk_key(0, 0, t0 as u64);
    let read_before = s.inner.chunks.get(key).unwrap().unwrap();
    let column = |s: &SledStorage| s.inner.read_column(0, 0, &key, &read_before).unwrap();
    assert_eq!(column(&s).entries.len(), 1);
    // The sibling's chunk now refers to a third series' (another type of the same metric),
    // written with it but not with the chunk read before, which the same apply gave its column.
    let third = |value: i64| {
        let mut p = profile(
            "app",
            "prod",
            "cpu_nanoseconds",
            t0,
            &[(&["main", "a"], value)],
        );
        p.profile_type.sample_type = "cpu_again".into();
        p
    };
    put(&s, vec![third(100_000_000)]);
    let sibling = profile(
        "app",
        "prod",
        "cpu_nanoseconds",
        t0,
        &[(&["main", "a"], 20_000_000)],
    );
    put(&s, vec![third(60_000_000), sibling]);
    let sibling_chunk = s
        .inner
        .chunks
        .get(chunk_key(1, 0, t0 as u64))
        .unwrap()
        .unwrap();
    assert!(matches!(
        Stored::decode(&s.inner.unpack_chunk(&sibling_chunk).unwrap()).unwrap(),
        Stored::ScaledSibling { series: 2, .. }
    ));
    let c = column(&s);
    assert_eq!(
        (c.profiles, c.entries[0].1),
        (1, 2),
        "what the chunk holds now"
    );
    // Deleted meanwhile: nothing, not an error.
    s.inner.delete_service(&T, "app").unwrap();
    assert_eq!(column(&s), Column::default());
}
