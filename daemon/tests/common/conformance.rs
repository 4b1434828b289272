//! The fixture and questions every storage backend must answer alike (sled, the memory
//! plugin, ClickHouse).

use super::{enc, Daemon};

/// A recent time (Unix seconds, a multiple of 1000), so the data sits in the finest level of
/// the built-in backend rather than its downsampled ones.
pub fn recent_base() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now / 1000 * 1000 - 2000
}

/// Ingests the same profiles into `d`: two services, two environments, three time windows.
pub fn ingest_fixture(d: &Daemon, base: i64) {
    let pushes = [
        ("shop.cpu{env=prod}", base, "main;hash 70\nmain;io 30\n"),
        (
            "shop.cpu{env=dev}",
            base + 10,
            "main;hash 5\nmain;alloc;copy 4\n",
        ),
        ("shop.cpu{env=prod}", base + 100, "main;io 11\n"),
        ("cart.cpu{env=prod}", base + 20, "run;sum 9\n"),
    ];
    for (name, from, body) in pushes {
        let (s, m) = d.ingest(
            &format!(
                "name={}&format=folded&from={from}&until={}",
                enc(name),
                from + 10
            ),
            "text/plain",
            body.as_bytes(),
        );
        assert_eq!(s, 200, "{m}");
    }
}

/// What the API answers about the fixture, for comparing two backends.
pub fn answers(d: &Daemon, base: i64) -> Vec<serde_json::Value> {
    let range = format!("from={}&until={}", base - 1000, base + 1000);
    let mut out = Vec::new();
    for query in [
        "shop.cpu",
        "shop.cpu{env=\"prod\"}",
        "cart.cpu",
        "{env=\"prod\"}",
    ] {
        let r = d.get_json(&format!("/render?query={}&{range}", enc(query)));
        out.push(r["flamebearer"].clone());
        out.push(r["timeline"].clone());
    }
    out.push(d.get_json("/api/apps"));
    out.push(d.get_json(&format!("/label-values?label=env&{range}")));
    out.push(d.get_json(&format!("/labels?{range}")));
    out
}
