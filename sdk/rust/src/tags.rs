//! Scoped, per-thread tags: a [`TagGuard`] sets its thread's current tag set, an interned id the
//! SIGPROF handler reads from a thread-local and stores with each sample.
//!
//! Tag sets are kept while a guard holds them and for two reports after the last one is dropped
//! (a sample taken under a guard reaches the reporter within one drain, well before that), so
//! the table stays bounded by the tag sets in use.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The id of the untagged set.
pub(crate) const UNTAGGED: u32 = 0;

thread_local! {
    // Const-initialised and without a destructor: reading it is a plain thread-local load, safe
    // from a signal handler.
    static CURRENT: Cell<u32> = const { Cell::new(UNTAGGED) };
}

struct Set {
    tags: BTreeMap<String, String>,
    guards: u64,
    /// The report count when the last guard holding it was dropped.
    released_at: u64,
}

#[derive(Default)]
struct Table {
    by_tags: HashMap<BTreeMap<String, String>, u32>,
    sets: HashMap<u32, Set>,
    next_id: u32,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
/// Reports taken so far (advanced by the reporter through [`forget_unused`]).
static REPORTS: AtomicU64 = AtomicU64::new(0);

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// The calling thread's current tag-set id (async-signal-safe).
pub(crate) fn current() -> u32 {
    CURRENT.try_with(Cell::get).unwrap_or(UNTAGGED)
}

/// The tags of a set id; empty for the untagged set or an id no longer known.
pub(crate) fn tags_of(id: u32) -> BTreeMap<String, String> {
    if id == UNTAGGED {
        return BTreeMap::new();
    }
    with_table(|t| t.sets.get(&id).map(|s| s.tags.clone()).unwrap_or_default())
}

/// Called by the reporter after each report: forgets the sets no guard has held for two reports.
pub(crate) fn forget_unused() {
    let now = REPORTS.fetch_add(1, Ordering::Relaxed) + 1;
    with_table(|t| {
        let gone: Vec<u32> = t
            .sets
            .iter()
            .filter(|(_, s)| s.guards == 0 && s.released_at + 2 <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(s) = t.sets.remove(&id) {
                t.by_tags.remove(&s.tags);
            }
        }
    });
}

/// Tags the calling thread until dropped; nested guards add to the outer ones. Drop guards on
/// the thread that made them, innermost first (as scopes do).
#[must_use = "the tags apply only while the guard is alive"]
pub struct TagGuard {
    id: u32,
    previous: u32,
}

/// Tags the samples of the calling thread with `tags` while the returned guard lives.
pub fn tag_wrapper<K: Into<String>, V: Into<String>>(
    tags: impl IntoIterator<Item = (K, V)>,
) -> TagGuard {
    let previous = current();
    let id = with_table(|t| {
        // Inherit the tags of the guard open on this thread.
        let mut all = t
            .sets
            .get(&previous)
            .map(|s| s.tags.clone())
            .unwrap_or_default();
        all.extend(tags.into_iter().map(|(k, v)| (k.into(), v.into())));
        let id = match t.by_tags.get(&all) {
            Some(&id) => id,
            None => {
                t.next_id = t.next_id.wrapping_add(1).max(1);
                let id = t.next_id;
                t.by_tags.insert(all.clone(), id);
                t.sets.insert(
                    id,
                    Set {
                        tags: all,
                        guards: 0,
                        released_at: 0,
                    },
                );
                id
            }
        };
        if let Some(s) = t.sets.get_mut(&id) {
            s.guards += 1;
        }
        id
    });
    let _ = CURRENT.try_with(|c| c.set(id));
    TagGuard { id, previous }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.previous));
        let now = REPORTS.load(Ordering::Relaxed);
        with_table(|t| {
            if let Some(s) = t.sets.get_mut(&self.id) {
                s.guards = s.guards.saturating_sub(1);
                s.released_at = now;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_restore_and_are_per_thread() {
        assert_eq!(current(), UNTAGGED);
        let outer = tag_wrapper([("a", "1")]);
        let outer_id = current();
        let inner = tag_wrapper([("b", "2")]);
        let tags = tags_of(current());
        assert_eq!(tags.get("a").map(String::as_str), Some("1"));
        assert_eq!(tags.get("b").map(String::as_str), Some("2"));
        // Another thread is not tagged by this one's guards.
        assert_eq!(std::thread::spawn(current).join().unwrap(), UNTAGGED);
        drop(inner);
        assert_eq!(current(), outer_id);
        assert_eq!(tags_of(outer_id).len(), 1);
        // The same tags map to the same set.
        let again = tag_wrapper(Vec::<(String, String)>::new());
        assert_eq!(tags_of(current()), tags_of(outer_id));
        drop(again);
        drop(outer);
        assert_eq!(current(), UNTAGGED);
    }

    #[test]
    fn unused_sets_are_forgotten_after_two_reports() {
        let g = tag_wrapper([("forget", "me")]);
        let id = current();
        drop(g);
        forget_unused();
        assert_eq!(tags_of(id).get("forget").map(String::as_str), Some("me"));
        forget_unused();
        forget_unused();
        assert!(tags_of(id).is_empty());
    }
}
