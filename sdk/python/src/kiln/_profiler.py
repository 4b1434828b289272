"""One running profiler: sampling thread, aggregator and uploader, started and stopped together."""

from __future__ import annotations

import functools
import logging
import math
import sys
import threading
import time

from . import _sampling, _tags
from ._config import Config
from ._naming import Tags, ingest_name, ingest_url, merge_tags
from ._sampler import CPU, Batch
from ._uploader import RetryPolicy, Upload, Uploader, post

logger = logging.getLogger("kiln")


def encode_folded(stacks: dict[str, int]) -> bytes:
    """Folded text: one ``root;...;leaf COUNT`` line per stack, sorted for stable output."""
    lines = [f"{stack} {count}\n" for stack, count in sorted(stacks.items()) if count > 0]
    return "".join(lines).encode("utf-8")


class Profiler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._period = 1.0 / config.sample_rate
        self._sampling = _sampling.create(
            config.sampler, self._period, config.mode, config.line_numbers
        )
        if config.mode == CPU:
            current = threading.current_thread()
            if current.native_id != threading.get_native_id():  # in a forked child
                self._sampling.correct_native_id(current.ident or 0, threading.get_native_id())
        self._uploader = Uploader(
            config.headers(),
            timeout=config.upload_timeout,
            max_queued=config.max_queued_uploads,
            retry=RetryPolicy(
                config.retry_initial_delay, config.retry_max_delay, config.max_upload_attempts
            ),
            send=functools.partial(post, context=config.ssl_context()),
        )
        self._thread = threading.Thread(target=self._run, name="kiln-sampler", daemon=True)
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.sampling_errors = 0
        self._sampler_cpu = 0.0  # CPU seconds used by the sampling thread, updated per upload

    def start(self) -> None:
        self._uploader.start()
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stops sampling, uploads the last partial interval and waits for delivery.

        Returns True when every profile taken was delivered; only the first call does the work.
        """
        with self._stop_lock:
            if self._stopped:
                return True
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._sampling.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._flush()
        return self._uploader.close(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, int]:
        stats = self._uploader.stats.as_dict()
        stats["samples"] = self._sampling.samples
        stats["sampling_errors"] = self.sampling_errors
        stats["overflowed_samples"] = self._sampling.overflowed_samples
        stats["native_sampler"] = int(self._sampling.name == _sampling.NATIVE)
        stats["queued_uploads"] = self._uploader.pending()
        # the sampling thread's CPU, and that of ticks it handed to the main thread
        sampler_cpu = self._sampler_cpu + self._sampling.cpu_elsewhere
        stats["sampler_cpu_ms"] = round(sampler_cpu * 1000)
        stats["main_thread_ticks"] = self._sampling.main_thread_ticks
        stats["tick_signal"] = self._sampling.tick_signal
        stats["ticks"] = self._sampling.ticks
        return stats

    def _run(self) -> None:
        try:
            self._sample_until_stopped()
        finally:
            self._sampler_cpu = time.thread_time()

    def _sample_until_stopped(self) -> None:
        own = {threading.get_ident()}
        if self._uploader.ident is not None:
            own.add(self._uploader.ident)
        self._sampling.ignore(own)
        next_flush = time.monotonic() + self.config.upload_interval
        while not self._sampling.run(next_flush, self._sampling_failed):
            now = time.monotonic()
            next_flush += self.config.upload_interval
            if next_flush < now:
                next_flush = now + self.config.upload_interval
            self._flush()
            self._sampler_cpu = time.thread_time()

    def _sampling_failed(self) -> None:
        """Called in an ``except`` block: sampling goes on; the first failure is logged."""
        self.sampling_errors += 1
        if self.sampling_errors == 1:
            logger.exception("sampling failed")

    def _flush(self) -> None:
        batch = self._sampling.drain()
        _tags.prune_ended_threads(set(sys._current_frames()))
        for upload in self.uploads_of(batch):
            self._uploader.submit(upload)

    def uploads_of(self, batch: Batch) -> list[Upload]:
        """One upload per distinct tag set of the batch (static tags merged under dynamic ones)."""
        from_s = int(batch.start)
        until_s = max(from_s, int(math.ceil(batch.end)))
        uploads = []
        merged: dict[Tags, dict[str, int]] = {}
        for dynamic, stacks in batch.counts.items():
            tags = merge_tags(self.config.tags, dynamic)
            target = merged.setdefault(tags, {})
            for stack, count in stacks.items():
                target[stack] = target.get(stack, 0) + count
        for tags, stacks in merged.items():
            body = encode_folded(stacks)
            if not body:
                continue
            name = ingest_name(self.config.application_name, self.config.profile_type, tags)
            url = ingest_url(
                self.config.server_address, name, from_s, until_s, self.config.sample_rate
            )
            uploads.append(Upload(url, body))
        return uploads
