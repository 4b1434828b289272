//! The time levels of a database ([`kiln_plugin_api::levels`]): recorded in `settings` by the
//! first daemon, checked by every later one.
//!
//! Three levels a hundred times apart suit ClickHouse well: it sums a couple of hundred fine
//! rows per series at the edges of a range in milliseconds, and every level costs it a full
//! copy of each profile's stack values to insert and merge. On the ClickHouse benchmark three
//! levels instead of five took one daemon from 352 to 655 profiles/s and halved the bytes per
//! profile, with renders as fast (`BENCHMARKS.md`).

use kiln_plugin_api::levels::{self, LevelChoice, LevelSeconds, LevelsMismatch};

use crate::client::{quote, Client};
use crate::error::ClickHouseError;
use crate::rowbinary::RowReader;

/// Why the levels cannot be used with this database.
#[derive(Debug, thiserror::Error)]
pub enum LevelsError {
    #[error(transparent)]
    Mismatch(#[from] LevelsMismatch),
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
}

/// The levels of `database`: `choice` checked against (or, the first time, recorded as) its
/// resolutions. `found_version` is the schema version `migrate` found (0: a new database).
pub fn resolve(
    client: &Client,
    database: &str,
    choice: &LevelChoice,
    found_version: u32,
) -> Result<LevelSeconds, LevelsError> {
    let recorded = match recorded(client, database)? {
        Some(r) => r,
        None => {
            let first = levels::first_record(choice, found_version > 0);
            client.execute(&format!(
                "INSERT INTO {database}.settings VALUES ('resolutions', {})",
                quote(&first)
            ))?;
            // Two daemons recording at once: both read back the one that stays.
            recorded(client, database)?.unwrap_or(first)
        }
    };
    Ok(levels::resolve(
        choice,
        &recorded,
        &format!("database `{database}`"),
        "database",
    )?)
}

fn recorded(client: &Client, database: &str) -> Result<Option<String>, ClickHouseError> {
    let rows = client.query(&format!(
        "SELECT value FROM {database}.settings FINAL WHERE name = 'resolutions' FORMAT RowBinary"
    ))?;
    let mut r = RowReader::new(&rows);
    Ok(if r.at_end() { None } else { Some(r.string()?) })
}
