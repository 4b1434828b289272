//! What the ClickHouse storage tests share: a config for the test server, the levels, and
//! profiles built from stacks of frame names.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use kiln_plugin_api::{Frame, Labels, Profile, ProfileMeta, ProfileType, Query, Sample, Selector};
use kiln_storage_clickhouse::test_server::{TestServer, PASSWORD, USER};
use kiln_storage_clickhouse::{ClickHouseConfig, ClickHouseStorage, LevelChoice};

pub const NS: i64 = 1_000_000_000;

pub fn config(server: &TestServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.url(),
        database: database.into(),
        user: USER.into(),
        password: PASSWORD.into(),
        ..ClickHouseConfig::default()
    }
}

/// 10 s for 3 days, 100 s for 14 days, 1000 s for a year.
pub fn levels() -> Vec<(u64, u64)> {
    vec![(10, 3 * 86_400), (100, 14 * 86_400), (1000, 365 * 86_400)]
}

/// Opens `n` storages on `database` at once, each on its own thread (daemons starting at the
/// same moment), and checks that every one opened.
pub fn open_at_once(server: &TestServer, database: &str, n: usize, levels: LevelChoice) {
    let racers: Vec<_> = (0..n)
        .map(|_| {
            let (c, l) = (config(server, database), levels.clone());
            std::thread::spawn(move || ClickHouseStorage::open(&c, l, None).map(drop))
        })
        .collect();
    for r in racers {
        r.join().unwrap().unwrap();
    }
}

pub fn open(server: &TestServer, database: &str) -> ClickHouseStorage {
    ClickHouseStorage::open(&config(server, database), levels(), None).unwrap()
}

/// A 10 s CPU profile of `service` in `env` at `at_s`, one sample per `(stack, value)`.
pub fn profile(service: &str, env: &str, at_s: i64, stacks: &[(&[&str], i64)]) -> Profile {
    let mut frames: Vec<Frame> = Vec::new();
    let mut samples = Vec::new();
    for (stack, value) in stacks {
        let mut ids = Vec::new();
        for name in *stack {
            let i = match frames.iter().position(|f| f.function == *name) {
                Some(i) => i,
                None => {
                    frames.push(Frame::named(*name));
                    frames.len() - 1
                }
            };
            ids.push(i as u32);
        }
        samples.push(Sample {
            stack: ids,
            value: *value,
        });
    }
    Profile {
        labels: Labels::from_pairs([("service_name", service), ("env", env)]),
        profile_type: ProfileType::well_known("cpu").unwrap(),
        start_ns: at_s * NS,
        end_ns: (at_s + 10) * NS,
        frames,
        samples,
        meta: ProfileMeta {
            spy_name: "gospy".into(),
            sample_rate: 100,
        },
    }
}

pub fn query(sel: &str, from_s: i64, to_s: i64) -> Query {
    Query {
        selector: Selector::parse(sel).unwrap(),
        start_ns: from_s * NS,
        end_ns: to_s * NS,
    }
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
