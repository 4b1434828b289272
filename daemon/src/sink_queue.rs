//! Delivery to sinks. Each sink has a bounded queue and one worker that hands it what has
//! queued up as one batch: under load a sink is called once per batch instead of once per
//! request (a plugin call has a fixed cost), a slow sink never holds up ingest, and the memory
//! a slow sink can pin is bounded — what does not fit is dropped and counted.
//!
//! A sink that drains faster than pushes arrive would still be called once per push, each
//! call paying the sink's fixed cost (for a Wasm sink: a thread hop, entering the sandbox, a
//! file append). So the worker, once a push arrives, waits up to the sink's `batch_wait` for
//! more before the call, unless a full batch is already there: a sink's output lags ingest by
//! at most that long, and under a backlog it is called at once with full batches.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_plugin_api::{Prepared, Profile, SinkExporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Requests' worth of profiles a sink may fall behind by before new ones are dropped.
const QUEUE_REQUESTS: usize = 1024;
/// Most profiles handed to a sink in one call.
const MAX_BATCH_PROFILES: usize = 64;
/// How long a sink's worker waits for a fuller batch unless `[sinks.X] batch_wait` says.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(20);
/// The longest `batch_wait` accepted: profiles wait in memory that long.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(10);

/// The profiles of one stored batch that a sink wants, shared with storage rather than copied.
pub struct Selected {
    batch: Arc<[Profile]>,
    /// Indices into `batch`, in order.
    wanted: Vec<u32>,
}

impl Selected {
    fn len(&self) -> usize {
        self.wanted.len()
    }

    fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.wanted.iter().map(|&i| &self.batch[i as usize])
    }
}

/// What waits in a sink's queue: the profiles, or what the sink made of them when they were
/// queued ([`SinkExporter::prepare`]).
enum Queued {
    Profiles(Selected),
    Prepared(Prepared),
}

impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Profiles(s) => s.len(),
            Queued::Prepared(p) => p.profiles,
        }
    }
}

/// The worker's inputs: its end of the queue, the sink it feeds and how long it waits.
type Worker = (mpsc::Receiver<Queued>, Arc<dyn SinkExporter>, Duration);

pub struct SinkQueue {
    pub name: String,
    tx: mpsc::Sender<Queued>,
    /// The sink, asked which profiles it wants before they are queued for it.
    sink: Arc<dyn SinkExporter>,
    /// Held while a push is prepared and queued, so the queue holds prepared batches in the
    /// order they were made (a sink's batches may build on one another).
    enqueue: Mutex<()>,
    /// The worker's end, until the first delivery starts the worker (building a configuration,
    /// as `kiln validate` does, needs no runtime).
    pending_worker: Mutex<Option<Worker>>,
    metrics: Metrics,
}

impl SinkQueue {
    /// A queue whose worker waits up to `batch_wait` for a fuller batch.
    pub fn new(
        name: &str,
        sink: Arc<dyn SinkExporter>,
        batch_wait: Duration,
        metrics: Metrics,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
        Self {
            name: name.to_string(),
            tx,
            sink: sink.clone(),
            enqueue: Mutex::new(()),
            pending_worker: Mutex::new(Some((rx, sink, batch_wait))),
            metrics,
        }
    }

    /// Those of `batch[range]` the sink wants; None when it wants none of them.
    pub fn select(&self, batch: &Arc<[Profile]>, range: Range<usize>) -> Option<Selected> {
        let wanted: Vec<u32> = range
            .filter(|&i| self.sink.wants(&batch[i]))
            .map(|i| i as u32)
            .collect();
        (!wanted.is_empty()).then(|| Selected {
            batch: batch.clone(),
            wanted,
        })
    }

    /// Queues `selected` for the sink without waiting; call from within the runtime.
    pub fn deliver(&self, selected: Selected) {
        if let Some((rx, sink, wait)) = self.pending_worker.lock().expect("not poisoned").take() {
            tokio::spawn(run_worker(
                self.name.clone(),
                rx,
                sink,
                wait,
                self.metrics.clone(),
            ));
        }
        let _order = self.enqueue.lock().expect("not poisoned");
        let profiles: Vec<&Profile> = selected.profiles().collect();
        let item = match self.sink.prepare(&profiles) {
            Some(prepared) => Queued::Prepared(prepared),
            None => Queued::Profiles(selected),
        };
        if let Err(e) = self.tx.try_send(item) {
            let dropped = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            if matches!(dropped, Queued::Prepared(_)) {
                self.sink.prepared_dropped();
            }
            self.metrics.sink_dropped(&self.name, dropped.len());
            tracing::warn!(sink = %self.name, profiles = dropped.len(), "sink queue full; profiles dropped for this sink");
        }
    }
}

/// Runs until the queue's sender is dropped (the configuration was replaced), after handing
/// over what was still queued.
async fn run_worker(
    name: String,
    mut rx: mpsc::Receiver<Queued>,
    sink: Arc<dyn SinkExporter>,
    batch_wait: Duration,
    metrics: Metrics,
) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + batch_wait;
        let mut batch = vec![first];
        let closed = take_queued(&mut rx, &mut batch);
        if !closed && queued_profiles(&batch) < MAX_BATCH_PROFILES && !batch_wait.is_zero() {
            // One timer wake-up rather than one per push; the queue holds what arrives
            // meanwhile (1,024 pushes deep, far more than a few milliseconds bring).
            tokio::time::sleep_until(deadline).await;
            take_queued(&mut rx, &mut batch);
        }
        export(&name, sink.as_ref(), batch, &metrics).await;
    }
}

/// Hands `batch` to the sink, in queue order: each run of queued profiles to `export` in one
/// call, each run of what it prepared to `export_prepared` in one call.
async fn export(name: &str, sink: &dyn SinkExporter, batch: Vec<Queued>, metrics: &Metrics) {
    let mut profiles: Vec<Selected> = Vec::new();
    let mut prepared: Vec<Prepared> = Vec::new();
    for item in batch {
        match item {
            Queued::Profiles(selected) => {
                if !prepared.is_empty() {
                    export_prepared(name, sink, std::mem::take(&mut prepared), metrics).await;
                }
                profiles.push(selected);
            }
            Queued::Prepared(made) => {
                if !profiles.is_empty() {
                    export_profiles(name, sink, std::mem::take(&mut profiles), metrics).await;
                }
                prepared.push(made);
            }
        }
    }
    if !profiles.is_empty() {
        export_profiles(name, sink, profiles, metrics).await;
    }
    if !prepared.is_empty() {
        export_prepared(name, sink, prepared, metrics).await;
    }
}

async fn export_profiles(
    name: &str,
    sink: &dyn SinkExporter,
    run: Vec<Selected>,
    metrics: &Metrics,
) {
    let profiles: Vec<&Profile> = run.iter().flat_map(Selected::profiles).collect();
    if let Err(e) = sink.export(&profiles).await {
        metrics.sink_error(name);
        tracing::warn!(sink = %name, error = %e, profiles = profiles.len(), "sink export failed");
    }
}

async fn export_prepared(
    name: &str,
    sink: &dyn SinkExporter,
    run: Vec<Prepared>,
    metrics: &Metrics,
) {
    let profiles: usize = run.iter().map(|p| p.profiles).sum();
    if let Err(e) = sink.export_prepared(run).await {
        metrics.sink_error(name);
        tracing::warn!(sink = %name, error = %e, profiles, "sink export failed");
    }
}

fn queued_profiles(batch: &[Queued]) -> usize {
    batch.iter().map(Queued::len).sum()
}

/// Moves what has queued up into `batch`, until it holds `MAX_BATCH_PROFILES` (a push is not
/// split, so a batch may end a little past it). Returns whether the sender is gone.
fn take_queued(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) -> bool {
    let mut profiles = queued_profiles(batch);
    while profiles < MAX_BATCH_PROFILES {
        match rx.try_recv() {
            Ok(more) => {
                profiles += more.len();
                batch.push(more);
            }
            Err(mpsc::error::TryRecvError::Empty) => return false,
            Err(mpsc::error::TryRecvError::Disconnected) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use kiln_plugin_api::{ExportError, Labels, ProfileType};

    /// Records the size of every batch; the first call waits until released.
    struct Recorder {
        batches: Mutex<Vec<usize>>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl SinkExporter for Recorder {
        async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
            let _permit = self.gate.acquire().await.unwrap();
            self.batches.lock().unwrap().push(profiles.len());
            Ok(())
        }
    }

    fn profile() -> Profile {
        Profile {
            labels: Labels::from_pairs([("service_name", "q")]),
            profile_type: ProfileType::well_known("cpu").unwrap(),
            start_ns: 0,
            end_ns: 1,
            frames: Vec::new(),
            samples: Vec::new(),
            meta: Default::default(),
        }
    }

    /// Queues a push of `n` profiles for the sink.
    fn push(queue: &SinkQueue, n: usize) {
        let batch: Arc<[Profile]> = (0..n).map(|_| profile()).collect();
        queue.deliver(
            queue
                .select(&batch, 0..n)
                .expect("the sink wants every profile"),
        );
    }

    /// Wants CPU profiles only.
    struct CpuOnly(Mutex<Vec<(String, i64)>>);

    #[async_trait]
    impl SinkExporter for CpuOnly {
        async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
            let mut seen = self.0.lock().unwrap();
            seen.extend(
                profiles
                    .iter()
                    .map(|p| (p.profile_type.name.clone(), p.start_ns)),
            );
            Ok(())
        }

        fn wants(&self, profile: &Profile) -> bool {
            profile.profile_type.name == "cpu"
        }
    }

    #[tokio::test]
    async fn a_sink_gets_only_what_it_wants_of_its_range_in_order() {
        let sink = Arc::new(CpuOnly(Mutex::new(Vec::new())));
        let queue = SinkQueue::new("cpu", sink.clone(), Duration::ZERO, Metrics::default());
        let typed = |name: &str, start_ns: i64| Profile {
            profile_type: ProfileType::well_known(name).unwrap(),
            start_ns,
            ..profile()
        };
        let batch: Arc<[Profile]> = vec![
            typed("cpu", 1),
            typed("alloc_space", 2),
            typed("cpu", 3),
            typed("cpu", 4),
        ]
        .into();
        // Another pipeline's profiles (index 3) are outside the range.
        let selected = queue.select(&batch, 0..3).unwrap();
        assert!(
            queue.select(&batch, 1..2).is_none(),
            "nothing wanted, nothing queued"
        );
        queue.deliver(selected);
        for _ in 0..500 {
            if !sink.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = sink.0.lock().unwrap().clone();
        assert_eq!(seen, vec![("cpu".to_string(), 1), ("cpu".to_string(), 3)]);
    }

    #[tokio::test]
    async fn a_busy_sink_gets_what_queued_up_as_one_batch_and_overflow_is_counted() {
        let recorder = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let metrics = Metrics::default();
        let queue = SinkQueue::new("rec", recorder.clone(), DEFAULT_BATCH_WAIT, metrics.clone());
        // The first delivery starts the worker, which blocks in the sink on it.
        push(&queue, 1);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..QUEUE_REQUESTS + 3 {
            push(&queue, 2);
        }
        recorder.gate.add_permits(1_000);
        drop(queue);
        for _ in 0..200 {
            let total: usize = recorder.batches.lock().unwrap().iter().sum();
            if total == 1 + 2 * QUEUE_REQUESTS {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches[0], 1);
        assert_eq!(batches.iter().sum::<usize>(), 1 + 2 * QUEUE_REQUESTS);
        assert!(batches[1..].iter().all(|&b| b == MAX_BATCH_PROFILES));
        let text = metrics.encode();
        assert!(
            text.contains("kiln_sink_dropped_profiles_total{sink=\"rec\"} 6"),
            "{text}"
        );
    }

    /// Pushes of 2 profiles, `gap` apart, into a queue waiting `wait`; the batch sizes the sink
    /// saw once everything arrived.
    async fn batches_of_spaced_pushes(wait: Duration, gap: Duration) -> Vec<usize> {
        let recorder = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(1_000),
        });
        let queue = SinkQueue::new("rec", recorder.clone(), wait, Metrics::default());
        for _ in 0..5 {
            push(&queue, 2);
            tokio::time::sleep(gap).await;
        }
        for _ in 0..500 {
            if recorder.batches.lock().unwrap().iter().sum::<usize>() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 10, "{batches:?}");
        batches
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_that_drains_faster_than_pushes_arrive_still_gets_them_batched() {
        // Five pushes over ~40 ms, well within the wait: one call.
        let waited = batches_of_spaced_pushes(Duration::from_secs(2), Duration::from_millis(10));
        assert_eq!(waited.await, vec![10]);
        // Without a wait every push is its own call.
        let eager = batches_of_spaced_pushes(Duration::ZERO, Duration::from_millis(100));
        assert_eq!(eager.await, vec![2; 5]);
    }

    #[tokio::test]
    async fn a_lone_push_reaches_the_sink_after_the_wait_not_never() {
        let recorder = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(1_000),
        });
        let wait = Duration::from_millis(100);
        let queue = SinkQueue::new("rec", recorder.clone(), wait, Metrics::default());
        let start = tokio::time::Instant::now();
        push(&queue, 1);
        while recorder.batches.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "never delivered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(start.elapsed() >= wait, "delivered before the wait ended");
        assert_eq!(*recorder.batches.lock().unwrap(), vec![1]);
    }

    /// Prepares each push into the start times of its profiles, numbered in the order made;
    /// exports record what arrived and the drops it was told of.
    struct Preparing {
        made: Mutex<u64>,
        exported: Mutex<Vec<(u64, Vec<i64>)>>,
        dropped: Mutex<Vec<u64>>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl SinkExporter for Preparing {
        async fn export(&self, _: &[&Profile]) -> Result<(), ExportError> {
            panic!("a preparing sink gets what it prepared")
        }

        fn prepare(&self, profiles: &[&Profile]) -> Option<Prepared> {
            let mut made = self.made.lock().unwrap();
            *made += 1;
            let starts: Vec<i64> = profiles.iter().map(|p| p.start_ns).collect();
            Some(Prepared {
                profiles: starts.len(),
                data: Box::new((*made, starts)),
            })
        }

        async fn export_prepared(&self, batch: Vec<Prepared>) -> Result<(), ExportError> {
            let _permit = self.gate.acquire().await.unwrap();
            let mut exported = self.exported.lock().unwrap();
            for p in batch {
                exported.push(*p.data.downcast::<(u64, Vec<i64>)>().unwrap());
            }
            Ok(())
        }

        fn prepared_dropped(&self) {
            let made = *self.made.lock().unwrap();
            self.dropped.lock().unwrap().push(made);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prepared_pushes_arrive_in_the_order_made_and_the_sink_hears_of_drops() {
        let sink = Arc::new(Preparing {
            made: Mutex::new(0),
            exported: Mutex::new(Vec::new()),
            dropped: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let metrics = Metrics::default();
        let queue = Arc::new(SinkQueue::new(
            "prep",
            sink.clone(),
            Duration::ZERO,
            metrics.clone(),
        ));
        let deliver = |queue: &SinkQueue, start_ns: i64| {
            let batch: Arc<[Profile]> = vec![Profile {
                start_ns,
                ..profile()
            }]
            .into();
            queue.deliver(queue.select(&batch, 0..1).unwrap());
        };
        // The first push starts the worker, which waits in the sink with it.
        deliver(&queue, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Pushes from two threads at once, then more than the queue holds.
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        deliver(&queue, 1 + t * 1000 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..QUEUE_REQUESTS as i64 {
            deliver(&queue, 10_000 + i);
        }
        sink.gate.add_permits(100_000);
        let made = *sink.made.lock().unwrap();
        let dropped = sink.dropped.lock().unwrap().clone();
        for _ in 0..500 {
            if sink.exported.lock().unwrap().len() as u64 + dropped.len() as u64 == made {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let exported = sink.exported.lock().unwrap().clone();
        let order: Vec<u64> = exported.iter().map(|e| e.0).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(order.len() + dropped.len(), made as usize);
        // Behind the push in the sink, 400 + QUEUE_REQUESTS were queued: what the queue could
        // not hold was dropped, the sink told of each, and counted.
        assert_eq!(dropped.len(), 400 + QUEUE_REQUESTS - QUEUE_REQUESTS);
        assert!(dropped.iter().all(|d| !order.contains(d)));
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "kiln_sink_dropped_profiles_total{{sink=\"prep\"}} {}",
                dropped.len()
            )),
            "{text}"
        );
        // Each push's own profiles, in the order pushed from each thread.
        for t in 0..2 {
            let starts: Vec<i64> = exported
                .iter()
                .flat_map(|e| e.1.iter().copied())
                .filter(|s| (1 + t * 1000..1 + t * 1000 + 200).contains(s))
                .collect();
            assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
        }
    }
}
