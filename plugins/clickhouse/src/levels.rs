//! The time levels a database is written with, and why they differ from sled's by default.
//!
//! Every profile is inserted once per level, and with timestamps spread over a day (a fleet's
//! late uploads) no two profiles share a bucket, so each level costs ClickHouse a full copy of
//! the profile's stacks to sort and merge. ClickHouse sums a few hundred fine rows per series
//! quickly, so it needs fewer levels than sled, which reads each chunk on its own: three
//! levels, a hundred times apart, instead of sled's five, ten times apart. On the ClickHouse
//! benchmark that took one daemon from 384 to 696 profiles/s and halved the bytes per profile,
//! with 24 h and 30-day renders as fast as before (`BENCHMARKS.md`).
//!
//! A level is stored by its index, so the resolutions must never change under a database: the
//! first daemon records them in `settings`, and a daemon configured with others refuses to
//! start. A daemon whose `storage.levels` is not set takes what the database recorded.

use crate::client::{quote, Client};
use crate::error::ClickHouseError;
use crate::rowbinary::RowReader;

const DAY: u64 = 86_400;

/// 10 s for 3 days, 1000 s for 30 days, 100 000 s for a year.
pub fn default_levels() -> Vec<(u64, u64)> {
    vec![(10, 3 * DAY), (1_000, 30 * DAY), (100_000, 365 * DAY)]
}

/// What databases created before the resolutions were recorded were written with, unless
/// configured otherwise: sled's levels.
fn five_levels() -> Vec<(u64, u64)> {
    vec![
        (10, 3 * DAY),
        (100, 14 * DAY),
        (1_000, 30 * DAY),
        (10_000, 30 * DAY),
        (100_000, 365 * DAY),
    ]
}

/// The levels a daemon asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChoice {
    /// `storage.levels` as configured, `(resolution, retention)` in seconds, finest first: the
    /// database must have been written with these resolutions (a new one records them).
    Configured(Vec<(u64, u64)>),
    /// Not configured: the database's levels ([`default_levels`] for a new one), every
    /// retention capped at `max_retention` seconds (`storage.retention`).
    Default { max_retention: u64 },
}

impl From<Vec<(u64, u64)>> for LevelChoice {
    fn from(levels: Vec<(u64, u64)>) -> Self {
        LevelChoice::Configured(levels)
    }
}

/// Why the levels cannot be used with this database.
#[derive(Debug, thiserror::Error)]
pub enum LevelsError {
    #[error(
        "database `{database}` was written with levels of {recorded}; set storage.levels to \
         those resolutions (or leave it unset), or use another database"
    )]
    Mismatch { database: String, recorded: String },
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
}

fn resolutions(levels: &[(u64, u64)]) -> String {
    levels
        .iter()
        .map(|l| l.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn spelled(resolutions: &str) -> String {
    resolutions
        .split(',')
        .map(|r| format!("{r}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The levels of `database`: `choice` checked against (or, the first time, recorded as) its
/// resolutions. `found_version` is the schema version `migrate` found (0: a new database).
pub fn resolve(
    client: &Client,
    database: &str,
    choice: &LevelChoice,
    found_version: u32,
) -> Result<Vec<(u64, u64)>, LevelsError> {
    let recorded = match recorded(client, database)? {
        Some(r) => r,
        None => {
            let first = match (choice, found_version) {
                (LevelChoice::Configured(l), _) => resolutions(l),
                (LevelChoice::Default { .. }, 0) => resolutions(&default_levels()),
                (LevelChoice::Default { .. }, _) => resolutions(&five_levels()),
            };
            client.execute(&format!(
                "INSERT INTO {database}.settings VALUES ('resolutions', {})",
                quote(&first)
            ))?;
            // Two daemons recording at once: both read back the one that stays.
            recorded(client, database)?.unwrap_or(first)
        }
    };
    let mismatch = || LevelsError::Mismatch {
        database: database.to_string(),
        recorded: spelled(&recorded),
    };
    match choice {
        LevelChoice::Configured(l) if resolutions(l) == recorded => Ok(l.clone()),
        LevelChoice::Configured(_) => Err(mismatch()),
        LevelChoice::Default { max_retention } => {
            let levels = [default_levels(), five_levels()]
                .into_iter()
                .find(|l| resolutions(l) == recorded)
                .ok_or_else(mismatch)?;
            Ok(levels
                .into_iter()
                .map(|(res, keep)| (res, keep.min(*max_retention).max(res)))
                .collect())
        }
    }
}

fn recorded(client: &Client, database: &str) -> Result<Option<String>, ClickHouseError> {
    let rows = client.query(&format!(
        "SELECT value FROM {database}.settings FINAL WHERE name = 'resolutions' FORMAT RowBinary"
    ))?;
    let mut r = RowReader::new(&rows);
    Ok(if r.at_end() { None } else { Some(r.string()?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_are_spelled_for_the_message() {
        assert_eq!(resolutions(&default_levels()), "10,1000,100000");
        assert_eq!(spelled("10,100"), "10s, 100s");
    }
}
