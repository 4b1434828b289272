//! Kiln's tables, created and upgraded by the daemon at start.
//!
//! Every step is idempotent (`IF NOT EXISTS`), so two daemons starting at once both run them
//! and both succeed; `schema_version` records what was applied (a ReplacingMergeTree: the same
//! version inserted twice is one row). A database whose version is newer than
//! [`SCHEMA_VERSION`] was written by a newer Kiln: this one refuses to start on it.
//!
//! The SQL is what ClickHouse 18.16 (Debian's package) and current releases both accept: no
//! TTL, no LowCardinality, no `mutations_sync`.

use crate::client::{quote, Client};
use crate::error::ClickHouseError;
use crate::rowbinary::RowReader;

/// The newest schema this Kiln knows.
pub const SCHEMA_VERSION: u32 = 1;

/// Code of "table already exists", which a concurrent `CREATE … IF NOT EXISTS` can still
/// answer on old servers, and of "database already exists".
const ALREADY_EXISTS: [u32; 2] = [57, 82];

/// The statements of each version, in order; `{db}` is the database.
const MIGRATIONS: &[(u32, &[&str])] = &[(
    1,
    &[
        // Frames and stacks of each service, keyed by a 64-bit hash of their content: every
        // daemon computes the same id, so two inserting the same new stack insert the same row.
        "CREATE TABLE IF NOT EXISTS {db}.frames (tenant String, service String, frame UInt64, \
         function String, file String, line UInt32, start_line UInt32) \
         ENGINE = ReplacingMergeTree() ORDER BY (tenant, service, frame)",
        "CREATE TABLE IF NOT EXISTS {db}.stacks (tenant String, service String, stack UInt64, \
         frames Array(UInt64)) ENGINE = ReplacingMergeTree() ORDER BY (tenant, service, stack)",
        // The series index: one row per series and hour it has data in.
        "CREATE TABLE IF NOT EXISTS {db}.series (tenant String, service String, series UInt64, \
         hour Int64, labels String, profile_type String, spy_name String, sample_rate UInt32) \
         ENGINE = ReplacingMergeTree() PARTITION BY intDiv(hour, 86400) \
         ORDER BY (tenant, service, series, hour)",
        // Values by stack, per series and bucket of each time level (the daemon writes every
        // level, as sled does): a long range reads coarse rows. Summed on merge.
        "CREATE TABLE IF NOT EXISTS {db}.samples (tenant String, service String, series UInt64, \
         level UInt8, bucket Int64, stack UInt64, value Int64) \
         ENGINE = SummingMergeTree((value)) PARTITION BY (level, intDiv(bucket, 86400)) \
         ORDER BY (tenant, service, level, series, bucket, stack)",
        // Profiles and their total per series and bucket: timelines and averages.
        "CREATE TABLE IF NOT EXISTS {db}.profiles (tenant String, service String, series UInt64, \
         level UInt8, bucket Int64, profiles UInt64, total Int64) \
         ENGINE = SummingMergeTree((profiles, total)) PARTITION BY (level, intDiv(bucket, 86400)) \
         ORDER BY (tenant, service, level, series, bucket)",
        // The last write-ahead log record of each daemon whose rows are all in: a daemon
        // restarted after a crash replays only what came after it.
        "CREATE TABLE IF NOT EXISTS {db}.delivered (daemon String, seq UInt64) \
         ENGINE = ReplacingMergeTree(seq) ORDER BY daemon",
    ],
)];

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

/// Creates or upgrades the schema of `database`; refuses a newer one.
pub fn migrate(client: &Client, database: &str) -> Result<u32, ClickHouseError> {
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
    for &(v, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        for s in statements {
            tolerate_existing(client.execute(&s.replace("{db}", database)))?;
        }
        client.execute(&format!(
            "INSERT INTO {database}.schema_version VALUES ({v}, {}, now())",
            quote(env!("CARGO_PKG_VERSION"))
        ))?;
        tracing::info!(database, version = v, "ClickHouse schema migrated");
    }
    Ok(found.max(SCHEMA_VERSION))
}
