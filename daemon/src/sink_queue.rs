//! Delivery to sinks. Each sink has a bounded queue and one worker that hands it what has
//! queued up as one batch: under load a sink is called once per batch instead of once per
//! request (a plugin call has a fixed cost), a slow sink never holds up ingest, and the memory
//! a slow sink can pin is bounded — what does not fit is dropped and counted.

use std::sync::{Arc, Mutex};

use kiln_plugin_api::{Profile, SinkExporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Requests' worth of profiles a sink may fall behind by before new ones are dropped.
const QUEUE_REQUESTS: usize = 1024;
/// Most profiles handed to a sink in one call.
const MAX_BATCH_PROFILES: usize = 64;

/// The worker's inputs: its end of the queue and the sink it feeds.
type Worker = (mpsc::Receiver<Vec<Profile>>, Arc<dyn SinkExporter>);

pub struct SinkQueue {
    pub name: String,
    tx: mpsc::Sender<Vec<Profile>>,
    /// The worker's end, until the first delivery starts the worker (building a configuration,
    /// as `kiln validate` does, needs no runtime).
    pending_worker: Mutex<Option<Worker>>,
    metrics: Metrics,
}

impl SinkQueue {
    pub fn new(name: &str, sink: Arc<dyn SinkExporter>, metrics: Metrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
        Self {
            name: name.to_string(),
            tx,
            pending_worker: Mutex::new(Some((rx, sink))),
            metrics,
        }
    }

    /// Queues `profiles` for the sink without waiting; call from within the runtime.
    pub fn deliver(&self, profiles: Vec<Profile>) {
        if let Some((rx, sink)) = self.pending_worker.lock().expect("not poisoned").take() {
            tokio::spawn(run_worker(
                self.name.clone(),
                rx,
                sink,
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
    metrics: Metrics,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_BATCH_PROFILES {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = sink.export(&batch).await {
            metrics.sink_error(&name);
            tracing::warn!(sink = %name, error = %e, profiles = batch.len(), "sink export failed");
        }
    }
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
        let queue = SinkQueue::new("rec", recorder.clone(), metrics.clone());
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
}
