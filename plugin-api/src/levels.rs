//! Time levels: which resolutions a store keeps, and why they are fixed once data is written.
//!
//! Every profile goes into one bucket of each level, so a long range reads a few coarse
//! buckets. With a fleet's timestamps spread over a day no two profiles of a series share a
//! bucket at the finer levels, so each level costs a full copy of each profile: the default is
//! three levels a hundred times apart (10 s, 1000 s, 100 000 s), which the stores read quickly
//! enough at the edges of a range. Stores written before that default had five levels ten times
//! apart ([`five_levels`]).
//!
//! A level is stored by its index, so its resolution must never change under written data: a
//! store records the resolutions once ([`first_record`]) and checks every later start against
//! them ([`resolve`]).

const DAY: u64 = 86_400;

/// `(resolution, retention)` in seconds, finest first.
pub type LevelSeconds = Vec<(u64, u64)>;

/// 10 s for 3 days, 1000 s for 30 days, 100 000 s for a year.
pub fn default_levels() -> LevelSeconds {
    vec![(10, 3 * DAY), (1_000, 30 * DAY), (100_000, 365 * DAY)]
}

/// The default of stores written before resolutions were recorded: 10 s for 3 days, 100 s for
/// 14 days, 1000 s and 10 000 s for 30 days, 100 000 s for a year.
pub fn five_levels() -> LevelSeconds {
    vec![
        (10, 3 * DAY),
        (100, 14 * DAY),
        (1_000, 30 * DAY),
        (10_000, 30 * DAY),
        (100_000, 365 * DAY),
    ]
}

/// The levels a daemon asks its store for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChoice {
    /// `storage.levels` as configured: the store must have been written with these
    /// resolutions (a new one records them).
    Configured(LevelSeconds),
    /// Not configured: the store's own levels ([`default_levels`] for a new one), every
    /// retention capped at `max_retention` seconds (`storage.retention`).
    Default { max_retention: u64 },
}

impl From<LevelSeconds> for LevelChoice {
    fn from(levels: LevelSeconds) -> Self {
        LevelChoice::Configured(levels)
    }
}

/// The resolutions of `levels` as a store records them: `10,1000,100000`.
pub fn resolutions(levels: &[(u64, u64)]) -> String {
    levels
        .iter()
        .map(|l| l.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What a store with no record yet records: the configured resolutions, else the default for a
/// new store, else (data written before records existed) the five levels it was written with.
pub fn first_record(choice: &LevelChoice, has_data: bool) -> String {
    match choice {
        LevelChoice::Configured(l) => resolutions(l),
        LevelChoice::Default { .. } if has_data => resolutions(&five_levels()),
        LevelChoice::Default { .. } => resolutions(&default_levels()),
    }
}

/// The configured resolutions differ from what the store was written with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{store} was written with levels of {recorded}; set storage.levels to those resolutions \
     (or leave it unset), or use another {kind}"
)]
pub struct LevelsMismatch {
    /// What is refused, e.g. "database `kiln`".
    pub store: String,
    /// What to use instead, e.g. "database" or "data directory".
    pub kind: &'static str,
    /// The recorded resolutions, spelled `10s, 1000s, 100000s`.
    pub recorded: String,
}

/// The levels to use for a store that recorded `recorded` ([`resolutions`]).
pub fn resolve(
    choice: &LevelChoice,
    recorded: &str,
    store: &str,
    kind: &'static str,
) -> Result<LevelSeconds, LevelsMismatch> {
    let mismatch = || LevelsMismatch {
        store: store.to_string(),
        kind,
        recorded: recorded
            .split(',')
            .map(|r| format!("{r}s"))
            .collect::<Vec<_>>()
            .join(", "),
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

/// A timeline is answered at a coarser level than asked only if it still has this many points.
pub const MIN_TIMELINE_POINTS: i64 = 100;

/// The step, in seconds, a store with `levels` answers a timeline asked at `asked` over
/// `range_s`: `asked`, or the resolution of the next coarser level when the level it would read
/// is ten or more times finer than `asked` and the coarser one still gives
/// [`MIN_TIMELINE_POINTS`]. With levels a hundred times apart a 100 s step over a week would
/// otherwise read every 10 s bucket of the last three days (26,000 per series) to draw 6,000
/// points in a thousand pixels. Levels ten times apart always have one within ten times of the
/// step, so they answer at the step asked.
pub fn timeline_step(levels: &[(u64, u64)], asked: i64, range_s: i64) -> i64 {
    let Some(&(finest, _)) = levels.first() else {
        return asked;
    };
    let read = levels
        .iter()
        .rev()
        .find(|&&(res, _)| res as i64 <= asked)
        .map_or(finest, |l| l.0) as i64;
    if read * 10 > asked {
        return asked;
    }
    match levels.iter().find(|&&(res, _)| res as i64 > asked) {
        Some(&(res, _)) if range_s / res as i64 >= MIN_TIMELINE_POINTS => res as i64,
        _ => asked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_resolves() {
        let unset = LevelChoice::Default {
            max_retention: 7 * DAY,
        };
        assert_eq!(first_record(&unset, false), "10,1000,100000");
        assert_eq!(first_record(&unset, true), "10,100,1000,10000,100000");
        let mine = LevelChoice::Configured(vec![(10, DAY), (60, 2 * DAY)]);
        assert_eq!(first_record(&mine, true), "10,60");
        assert_eq!(
            resolve(&unset, "10,1000,100000", "x", "y").unwrap(),
            vec![(10, 3 * DAY), (1_000, 7 * DAY), (100_000, 7 * DAY)],
            "retentions capped"
        );
        assert_eq!(
            resolve(&unset, "10,100,1000,10000,100000", "x", "y")
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            resolve(&mine, "10,60", "x", "y").unwrap(),
            vec![(10, DAY), (60, 2 * DAY)]
        );
        let e = resolve(&mine, "10,1000,100000", "database `kiln`", "database").unwrap_err();
        assert_eq!(
            e.to_string(),
            "database `kiln` was written with levels of 10s, 1000s, 100000s; set \
             storage.levels to those resolutions (or leave it unset), or use another database"
        );
        assert!(
            resolve(&unset, "10,60", "x", "y").is_err(),
            "unknown and not configured"
        );
    }

    #[test]
    fn timelines_answer_at_a_level_within_ten_times_of_the_step() {
        let (three, five) = (default_levels(), five_levels());
        let week = 7 * DAY as i64;
        assert_eq!(
            timeline_step(&three, 100, week),
            1000,
            "not 10 chunks a point"
        );
        assert_eq!(
            timeline_step(&three, 10, DAY as i64),
            10,
            "a level has the step"
        );
        assert_eq!(
            timeline_step(&three, 60, week),
            60,
            "10 s is within ten times"
        );
        assert_eq!(
            timeline_step(&three, 100, 50_000),
            100,
            "too few points at 1000 s"
        );
        assert_eq!(timeline_step(&three, 10_000, 400 * DAY as i64), 100_000);
        assert_eq!(timeline_step(&five, 100, week), 100);
        assert_eq!(timeline_step(&five, 10_000, 400 * DAY as i64), 10_000);
        assert_eq!(timeline_step(&[], 100, week), 100);
    }
}
