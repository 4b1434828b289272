//! Scoped, per-thread tags: a [`TagGuard`] records when its thread carried which tags, and a
//! report is split by those intervals using each sample's thread and timestamp.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

struct Interval {
    thread: u64,
    tags: BTreeMap<String, String>,
    start: SystemTime,
    end: Option<SystemTime>,
    id: u64,
}

static INTERVALS: Mutex<Vec<Interval>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn current_thread() -> u64 {
    // pprof-rs identifies the sampled thread by pthread_self(); so do we.
    unsafe { libc::pthread_self() as u64 }
}

/// Tags the calling thread until dropped; nested guards add to the outer ones.
#[must_use = "the tags apply only while the guard is alive"]
pub struct TagGuard {
    id: u64,
}

/// Tags the samples of the calling thread with `tags` while the returned guard lives.
pub fn tag_wrapper<K: Into<String>, V: Into<String>>(
    tags: impl IntoIterator<Item = (K, V)>,
) -> TagGuard {
    let thread = current_thread();
    let mut intervals = INTERVALS.lock().unwrap_or_else(|e| e.into_inner());
    // Inherit the tags of guards still open on this thread.
    let mut all: BTreeMap<String, String> = intervals
        .iter()
        .filter(|i| i.thread == thread && i.end.is_none())
        .flat_map(|i| i.tags.clone())
        .collect();
    all.extend(tags.into_iter().map(|(k, v)| (k.into(), v.into())));
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    intervals.push(Interval {
        thread,
        tags: all,
        start: SystemTime::now(),
        end: None,
        id,
    });
    TagGuard { id }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        let mut intervals = INTERVALS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = intervals.iter_mut().find(|i| i.id == self.id) {
            i.end = Some(SystemTime::now());
        }
    }
}

/// Splits a report into one report per tag set (the untagged part has no extra tags), then
/// forgets intervals that have ended: their samples are all in this report or earlier ones.
pub(crate) fn split_by_tags(
    report: pprof::Report,
) -> Vec<(BTreeMap<String, String>, pprof::Report)> {
    let mut intervals = INTERVALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut parts: HashMap<Vec<(String, String)>, pprof::Report> = HashMap::new();
    for (frames, count) in report.data {
        // The innermost (latest started) guard covering the sample wins.
        let tags = intervals
            .iter()
            .filter(|i| {
                i.thread == frames.thread_id
                    && i.start <= frames.sample_timestamp
                    && i.end.is_none_or(|e| frames.sample_timestamp < e)
            })
            .max_by_key(|i| i.start)
            .map(|i| i.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        parts
            .entry(tags)
            .or_insert_with(|| pprof::Report {
                data: HashMap::new(),
                timing: report.timing.clone(),
            })
            .data
            .insert(frames, count);
    }
    intervals.retain(|i| i.end.is_none());
    parts
        .into_iter()
        .map(|(k, r)| (k.into_iter().collect(), r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_end() {
        let outer = tag_wrapper([("a", "1")]);
        let inner = tag_wrapper([("b", "2")]);
        {
            let intervals = INTERVALS.lock().unwrap();
            let last = intervals.iter().find(|i| i.id == inner.id).unwrap();
            assert_eq!(last.tags.get("a").map(String::as_str), Some("1"));
            assert_eq!(last.tags.get("b").map(String::as_str), Some("2"));
        }
        drop(inner);
        drop(outer);
        let intervals = INTERVALS.lock().unwrap();
        assert!(intervals
            .iter()
            .filter(|i| i.thread == current_thread())
            .all(|i| i.end.is_some()));
    }
}
