//! Kiln's tables, created and upgraded by the daemon at start.
//!
//! Every create is idempotent (`IF NOT EXISTS`), so two daemons starting at once on an empty
//! database both run them and both succeed; `schema_version` records what was applied (a
//! ReplacingMergeTree: the same version inserted twice is one row). A database whose version
//! is newer than [`SCHEMA_VERSION`] was written by a newer Kiln: this one refuses to start on
//! it. One at version 1 is upgraded in place by the one daemon that claims the upgrade (see
//! [`upgrade_from_1`]); the others wait for it. Version 3 added when each frame and stack row
//! was inserted ([`upgrade_from_2`]); version 4 the finest level's own table
//! ([`upgrade_from_3`]); version 5 the finest rows that refer to a sibling's ([`SIBLING`]).
//!
//! The SQL is what ClickHouse 18.16 (Debian's package) and current releases both accept: no
//! TTL, no LowCardinality, no `mutations_sync`, every joined subquery named. The tests run on
//! both (`plugins/clickhouse/ci-current.sh` runs them on 26.9).

use std::time::{Duration, Instant};

use crate::client::{quote, Client};
use crate::error::ClickHouseError;
use crate::rowbinary::RowReader;

/// The newest schema this Kiln knows.
pub const SCHEMA_VERSION: u32 = 5;

/// Codes of "column already exists": two daemons upgrading at once both add it. 18.16 answers
/// 44 (`ILLEGAL_COLUMN`), current releases 15 (`DUPLICATE_COLUMN`).
const COLUMN_EXISTS: [u32; 2] = [44, 15];

/// Code of "table already exists", which a concurrent `CREATE … IF NOT EXISTS` can still
/// answer on old servers, and of "database already exists".
const ALREADY_EXISTS: [u32; 2] = [57, 82];

/// The tables of the current version; `{db}` is the database.
const TABLES: &[&str] = &[
    // Frames and stacks of each service, keyed by a 64-bit hash of their content: every
    // daemon computes the same id, so two inserting the same new stack insert the same row.
    // `inserted` (set by the server) lets the retention pass delete the rows of a service that
    // has no data left without racing a daemon that still counts on them (see `admin`).
    "CREATE TABLE IF NOT EXISTS {db}.frames (tenant String, service String, frame UInt64, \
     function String, file String, line UInt32, start_line UInt32, \
     inserted DateTime DEFAULT now()) \
     ENGINE = ReplacingMergeTree() ORDER BY (tenant, service, frame)",
    "CREATE TABLE IF NOT EXISTS {db}.stacks (tenant String, service String, stack UInt64, \
     frames Array(UInt64), inserted DateTime DEFAULT now()) \
     ENGINE = ReplacingMergeTree() ORDER BY (tenant, service, stack)",
    // The series index: one row per series and hour it has data in.
    "CREATE TABLE IF NOT EXISTS {db}.series (tenant String, service String, series UInt64, \
     hour Int64, labels String, profile_type String, spy_name String, sample_rate UInt32) \
     ENGINE = ReplacingMergeTree() PARTITION BY intDiv(hour, 86400) \
     ORDER BY (tenant, service, series, hour)",
    BUCKETS,
    FINE,
    ALL_BUCKETS,
    // What the database was created with that must not change under it: the resolutions of
    // its time levels (see `levels`).
    SETTINGS,
    // The last write-ahead log record of each daemon whose rows are all in: a daemon
    // restarted after a crash replays only what came after it.
    "CREATE TABLE IF NOT EXISTS {db}.delivered (daemon String, seq UInt64) \
     ENGINE = ReplacingMergeTree(seq) ORDER BY daemon",
];

const SETTINGS: &str = "CREATE TABLE IF NOT EXISTS {db}.settings (name String, value String) \
     ENGINE = ReplacingMergeTree() ORDER BY name";

/// One row per series and bucket of each time level (the daemon writes every level, as sled
/// does, so a long range reads coarse rows): how many profiles, their total, and the value of
/// each stack as two arrays. A nested column whose name ends in `Map` is summed by key when
/// SummingMergeTree merges rows, so rows of the same bucket (other flushes, other daemons)
/// become one row whose arrays hold each stack once. A row per bucket, not per stack, is what
/// makes inserts cheap: a few rows per profile to sort and merge instead of thousands.
///
/// A row carries hundreds of stack values, so an index granule is 256 rows, not the default
/// 8,192: a query of one series reads whole granules, and at 8,192 rows that was ~60 MB of
/// arrays per range read (a 24 h render of one series took 1.1 s with ten times the benchmark's
/// data; ~0.1–0.15 s with 256 on the same rows). Databases created before keep their
/// granularity; it takes effect when `buckets` is created anew.
const BUCKETS: &str = "CREATE TABLE IF NOT EXISTS {db}.buckets (tenant String, service String, \
     series UInt64, level UInt8, bucket Int64, profiles UInt64, total Int64, \
     stacksMap Nested(stack UInt64, value Int64)) \
     ENGINE = SummingMergeTree() PARTITION BY (level, intDiv(bucket, 86400)) \
     ORDER BY (tenant, service, level, series, bucket) SETTINGS index_granularity = 256";

/// The finest level's rows, as `buckets` holds the others but on a plain MergeTree: with a
/// fleet's timestamps spread over the day two rows of one series' 10 s bucket almost never
/// meet, yet SummingMergeTree summed every row's arrays element by element on each merge. Reads
/// sum rows anyway. With every level on a plain MergeTree (an upper bound, the coarse levels
/// need their sums) ClickHouse's CPU per profile fell 38 % in `scripts/bench-clickhouse.sh`.
/// The columns of `buckets` (created before it), and the same partitions, so retention and
/// sizes treat both alike.
const FINE: &str = "CREATE TABLE IF NOT EXISTS {db}.fine AS {db}.buckets \
     ENGINE = MergeTree() PARTITION BY (level, intDiv(bucket, 86400)) \
     ORDER BY (tenant, service, level, series, bucket) SETTINGS index_granularity = 256";

/// Version 5: a finest row may stand for another series' row of the same insert (`batch`) and
/// bucket times `ratio`, with empty arrays of its own: the two sample types of a Go CPU pprof
/// (`samples` and `cpu`, the second the first times the sampling period) carry the same stacks
/// and proportional values, and the second costs ClickHouse nothing but its counts. `sibling`
/// is that series (0: the row holds its own arrays). Merges add the sibling's arrays times
/// `ratio` (see `read`); counts and totals stay on the row. Columns added to `fine` only (at its
/// end: an insert names them), so `all_buckets` reads as before.
const SIBLING: [&str; 3] = [
    "sibling UInt64 DEFAULT 0",
    "ratio Int64 DEFAULT 0",
    "batch UInt64 DEFAULT 0",
];

/// What reads see: `buckets` and `fine` as one table (each read through its own index).
const ALL_BUCKETS: &str = "CREATE TABLE IF NOT EXISTS {db}.all_buckets AS {db}.buckets \
     ENGINE = Merge({db}, '^(buckets|fine)$')";

fn tolerate_existing(r: Result<(), ClickHouseError>) -> Result<(), ClickHouseError> {
    match r {
        Err(ClickHouseError::Server { code, .. }) if ALREADY_EXISTS.contains(&code) => Ok(()),
        r => r,
    }
}

/// The schema version of `database` (0 when it has none yet).
pub fn version(client: &Client, database: &str) -> Result<u32, ClickHouseError> {
    let rows = client.query(&format!(
        "SELECT toUInt32(max(version)) FROM {database}.schema_version FORMAT RowBinary"
    ))?;
    let mut r = RowReader::new(&rows);
    if r.at_end() {
        return Ok(0);
    }
    r.u32()
}

/// Creates or upgrades the schema of `database`; refuses a newer one. `timeout` bounds the
/// wait for another daemon's upgrade. Returns the version found (0: a new database).
pub fn migrate(client: &Client, database: &str, timeout: Duration) -> Result<u32, ClickHouseError> {
    tolerate_existing(client.execute(&format!("CREATE DATABASE IF NOT EXISTS {database}")))?;
    tolerate_existing(client.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {database}.schema_version (version UInt32, kiln String, \
         applied DateTime) ENGINE = ReplacingMergeTree() ORDER BY version"
    )))?;
    let found = version(client, database)?;
    if found > SCHEMA_VERSION {
        return Err(ClickHouseError::NewerSchema {
            database: database.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        compress_with_zstd(client, database)?;
        return Ok(found);
    }
    if found == 1 {
        upgrade_from_1(client, database, timeout)?;
    }
    if found == 1 || found == 2 {
        upgrade_from_2(client, database)?;
    }
    if (1..=3).contains(&found) {
        upgrade_from_3(client, database)?;
    }
    if (1..=4).contains(&found) {
        add_sibling_columns(client, database)?;
        compress_with_zstd(client, database)?;
        record(client, database, 5)?;
        return Ok(found);
    }
    for s in TABLES {
        tolerate_existing(client.execute(&s.replace("{db}", database)))?;
    }
    add_sibling_columns(client, database)?;
    compress_with_zstd(client, database)?;
    record(client, database, SCHEMA_VERSION)?;
    Ok(0)
}

/// The columns that hold nearly all the bytes, with their types.
const BULK_COLUMNS: [(&str, &str, &str); 8] = [
    ("buckets", "stacksMap.stack", "Array(UInt64)"),
    ("buckets", "stacksMap.value", "Array(Int64)"),
    ("fine", "stacksMap.stack", "Array(UInt64)"),
    ("fine", "stacksMap.value", "Array(Int64)"),
    ("stacks", "frames", "Array(UInt64)"),
    ("frames", "function", "String"),
    ("frames", "file", "String"),
    ("series", "labels", "String"),
];

/// The codec of [`BULK_COLUMNS`] where the server has per-column codecs (19.1 on), as
/// `system.columns` names it.
const BULK_CODEC: &str = "CODEC(ZSTD(1))";

/// Code of "unknown identifier": 18.16's `system.columns` has no `compression_codec`.
const UNKNOWN_IDENTIFIER: u32 = 47;

/// Compresses [`BULK_COLUMNS`] with zstd on servers with per-column codecs. A server
/// compresses parts with lz4 unless configured otherwise, and a day of one series takes 2.5
/// times the bytes with lz4 that it takes with zstd (10.6 against 4.2 MB, BENCHMARKS.md): the
/// same stacks recur bucket after bucket, further apart than lz4's window. Only the codec changes (metadata): parts written before are recompressed as
/// ClickHouse merges them. Idempotent, so each start checks it, and two daemons doing it at
/// once both succeed. On 18.16 the server's `<compression>` setting is the only way (see
/// docs/scale-out.md).
fn compress_with_zstd(client: &Client, db: &str) -> Result<(), ClickHouseError> {
    let rows = match client.query(&format!(
        "SELECT table, name, compression_codec FROM system.columns WHERE database = {} \
         FORMAT RowBinary",
        quote(db)
    )) {
        Ok(rows) => rows,
        Err(ClickHouseError::Server { code, .. }) if code == UNKNOWN_IDENTIFIER => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut r = RowReader::new(&rows);
    let mut compressed = Vec::new();
    while !r.at_end() {
        let (table, name, codec) = (r.string()?, r.string()?, r.string()?);
        if codec == BULK_CODEC {
            compressed.push((table, name));
        }
    }
    for (table, name, ty) in BULK_COLUMNS {
        if !compressed.iter().any(|(t, n)| t == table && n == name) {
            client.execute(&format!(
                "ALTER TABLE {db}.{table} MODIFY COLUMN `{name}` {ty} {BULK_CODEC}"
            ))?;
        }
    }
    Ok(())
}

/// The columns of [`SIBLING`] on `fine`.
fn add_sibling_columns(client: &Client, db: &str) -> Result<(), ClickHouseError> {
    for column in SIBLING {
        add_column(client, db, "fine", column)?;
    }
    Ok(())
}

/// Adds `column` (its definition) to `table`. Idempotent: a daemon upgrading at the same
/// moment, or creating the same new database, finds it there.
fn add_column(client: &Client, db: &str, table: &str, column: &str) -> Result<(), ClickHouseError> {
    match client.execute(&format!("ALTER TABLE {db}.{table} ADD COLUMN {column}")) {
        Err(ClickHouseError::Server { code, .. }) if COLUMN_EXISTS.contains(&code) => Ok(()),
        r => r,
    }
}

fn record(client: &Client, database: &str, v: u32) -> Result<(), ClickHouseError> {
    client.execute(&format!(
        "INSERT INTO {database}.schema_version VALUES ({v}, {}, now())",
        quote(env!("CARGO_PKG_VERSION"))
    ))?;
    tracing::info!(database, version = v, "ClickHouse schema migrated");
    Ok(())
}

/// Version 1 kept a row per stack in `samples` and the counts in `profiles`; version 2 keeps
/// both in `buckets`. The copy must run once, so one daemon claims it by creating the
/// `upgrade_to_2` table (a plain `CREATE TABLE` succeeds for one caller only); the others wait
/// until version 2 is recorded. The old tables are dropped once the copy is in.
fn upgrade_from_1(client: &Client, db: &str, timeout: Duration) -> Result<(), ClickHouseError> {
    let claim = client.execute(&format!(
        "CREATE TABLE {db}.upgrade_to_2 (started DateTime) ENGINE = TinyLog"
    ));
    match claim {
        Ok(()) => {}
        Err(ClickHouseError::Server { code, .. }) if ALREADY_EXISTS.contains(&code) => {
            return wait_for_upgrade(client, db, timeout);
        }
        Err(e) => return Err(e),
    }
    tolerate_existing(client.execute(&BUCKETS.replace("{db}", db)))?;
    // Each bucket's stacks summed, with its profile count and total from `profiles`. Both
    // sides of the join are named: current servers refuse an unnamed one.
    client.execute(&format!(
        "INSERT INTO {db}.buckets (tenant, service, series, level, bucket, profiles, total, \
         `stacksMap.stack`, `stacksMap.value`) \
         SELECT tenant, service, series, level, bucket, n, t, stack_ids, stack_values FROM \
         (SELECT tenant, service, series, level, bucket, \
          toUInt64(sum(profiles)) AS n, sum(total) AS t \
          FROM {db}.profiles GROUP BY tenant, service, series, level, bucket) AS totals \
         ANY LEFT JOIN \
         (SELECT tenant, service, series, level, bucket, groupArray(stack) AS stack_ids, \
          groupArray(v) AS stack_values FROM \
          (SELECT tenant, service, series, level, bucket, stack, sum(value) AS v \
           FROM {db}.samples GROUP BY tenant, service, series, level, bucket, stack) \
          GROUP BY tenant, service, series, level, bucket) AS stacks_of_bucket \
         USING (tenant, service, series, level, bucket)"
    ))?;
    record(client, db, 2)?;
    client.execute(&format!("DROP TABLE IF EXISTS {db}.samples"))?;
    client.execute(&format!("DROP TABLE IF EXISTS {db}.profiles"))?;
    client.execute(&format!("DROP TABLE IF EXISTS {db}.upgrade_to_2"))?;
    Ok(())
}

/// Version 3: frames and stacks say when they were inserted, and `settings` keeps the levels'
/// resolutions. Rows already there read as inserted "now" (ClickHouse computes a missing
/// column's default when it reads) until a merge of their part writes the column, so they are
/// collected only after that merge. Idempotent: a second daemon upgrading at once finds the
/// column there.
fn upgrade_from_2(client: &Client, db: &str) -> Result<(), ClickHouseError> {
    for table in ["frames", "stacks"] {
        add_column(client, db, table, "inserted DateTime DEFAULT now()")?;
    }
    tolerate_existing(client.execute(&SETTINGS.replace("{db}", db)))?;
    record(client, db, 3)
}

/// Version 4: the finest level gets a table of its own, `fine` (see [`FINE`]), and reads go
/// through `all_buckets`. Rows the finest level already has in `buckets` stay there and are read
/// alike. Idempotent, like the creates of a new database.
fn upgrade_from_3(client: &Client, db: &str) -> Result<(), ClickHouseError> {
    for create in [FINE, ALL_BUCKETS] {
        tolerate_existing(client.execute(&create.replace("{db}", db)))?;
    }
    record(client, db, 4)
}

fn wait_for_upgrade(client: &Client, db: &str, timeout: Duration) -> Result<(), ClickHouseError> {
    let deadline = Instant::now() + timeout;
    while version(client, db)? < 2 {
        if Instant::now() > deadline {
            return Err(ClickHouseError::UpgradeStuck {
                database: db.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
