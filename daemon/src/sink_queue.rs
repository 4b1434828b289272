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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_plugin_api::{Profile, SinkExporter};
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

/// The worker's inputs: its end of the queue, the sink it feeds and how long it waits.
type Worker = (
    mpsc::Receiver<Vec<Profile>>,
    Arc<dyn SinkExporter>,
    Duration,
);

pub struct SinkQueue {
    pub name: String,
    tx: mpsc::Sender<Vec<Profile>>,
    /// The sink, asked which profiles it wants before they are copied for it.
    sink: Arc<dyn SinkExporter>,
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
            pending_worker: Mutex::new(Some((rx, sink, batch_wait))),
            metrics,
        }
    }

    /// The sink's copy of those of `profiles` it wants (CPU work: call from a blocking context
    /// when the batch is large).
    pub fn copy_wanted(&self, profiles: &[Profile]) -> Vec<Profile> {
        profiles
            .iter()
            .filter(|p| self.sink.wants(p))
            .cloned()
            .collect()
    }

    /// Queues `profiles` for the sink without waiting; call from within the runtime.
    pub fn deliver(&self, profiles: Vec<Profile>) {
        if let Some((rx, sink, wait)) = self.pending_worker.lock().expect("not poisoned").take() {
            tokio::spawn(run_worker(
                self.name.clone(),
                rx,
                sink,
                wait,
                self.metrics.clone(),
            ));
        }
        if let Err(e) = self.tx.try_send(profiles) {
            let dropped = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            self.metrics.sink_dropped(&self.name, dropped.len());
            tracing::warn!(sink = %self.name, profiles = dropped.len(), "sink queue full; profiles dropped for this sink");
        }
    }
}

/// Runs until the queue's sender is dropped (the configuration was replaced), after handing
/// over what was still queued.
async fn run_worker(
    name: String,
    mut rx: mpsc::Receiver<Vec<Profile>>,
    sink: Arc<dyn SinkExporter>,
    batch_wait: Duration,
    metrics: Metrics,
) {
    while let Some(mut batch) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + batch_wait;
        let closed = take_queued(&mut rx, &mut batch);
        if !closed && batch.len() < MAX_BATCH_PROFILES && !batch_wait.is_zero() {
            // One timer wake-up rather than one per push; the queue holds what arrives
            // meanwhile (1,024 pushes deep, far more than a few milliseconds bring).
            tokio::time::sleep_until(deadline).await;
            take_queued(&mut rx, &mut batch);
        }
        if let Err(e) = sink.export(&batch).await {
            metrics.sink_error(&name);
            tracing::warn!(sink = %name, error = %e, profiles = batch.len(), "sink export failed");
        }
    }
}

/// Moves what has queued up into `batch`, until it holds `MAX_BATCH_PROFILES` (a push is not
/// split, so a batch may end a little past it). Returns whether the sender is gone.
fn take_queued(rx: &mut mpsc::Receiver<Vec<Profile>>, batch: &mut Vec<Profile>) -> bool {
    while batch.len() < MAX_BATCH_PROFILES {
        match rx.try_recv() {
            Ok(more) => batch.extend(more),
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
        async fn export(&self, profiles: &[Profile]) -> Result<(), ExportError> {
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

    #[tokio::test]
    async fn a_busy_sink_gets_what_queued_up_as_one_batch_and_overflow_is_counted() {
        let recorder = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let metrics = Metrics::default();
        let queue = SinkQueue::new("rec", recorder.clone(), DEFAULT_BATCH_WAIT, metrics.clone());
        // The first delivery starts the worker, which blocks in the sink on it.
        queue.deliver(vec![profile()]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..QUEUE_REQUESTS + 3 {
            queue.deliver(vec![profile(), profile()]);
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
            queue.deliver(vec![profile(), profile()]);
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
        queue.deliver(vec![profile()]);
        while recorder.batches.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "never delivered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(start.elapsed() >= wait, "delivered before the wait ended");
        assert_eq!(*recorder.batches.lock().unwrap(), vec![1]);
    }
}
