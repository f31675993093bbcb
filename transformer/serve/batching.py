"""Dynamic batching: requests that arrive within a few milliseconds of each other are decoded together.

Callers on the event loop `await batcher.submit(key, item)`. One worker thread takes the first waiting job,
waits up to `wait_ms` for more (at most `max_batch` in all), groups them by `key` (requests that must not be
decoded together, e.g. with another beam size, get different keys), and calls `run(key, items)` once per group;
its i-th result (or exception) goes back to the i-th caller through that caller's asyncio future.

One worker thread does all the model's work, so no two searches ever run at once: they share the model's
packed weights (read-only, nn/packed.py), each makes its own KV caches (nn/kv_cache.py), and torch's own
intra-op threads are not split between competing searches. A job whose caller gave up (timeout, disconnect)
before its batch started is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# run(key, items) -> one result per item, in order; an item's result may be an exception, raised to its caller.
Runner = Callable[[Hashable, list[Any]], list[Any]]


class QueueFull(Exception):
    """More jobs are waiting than the batcher's max_queue."""


@dataclass
class _Job:
    key: Hashable
    item: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class BatchStats:
    """Counts since the batcher started: batches run, requests they held, the largest batch."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0


class DynamicBatcher:
    """Collects jobs for up to `wait_ms` (at most `max_batch` of them) and runs them in batches on one thread."""

    def __init__(self, run: Runner, max_batch: int = 32, wait_ms: float = 5.0, max_queue: int = 1024) -> None:
        if max_batch < 1 or wait_ms < 0 or max_queue < 1:
            raise ValueError(f"max_batch={max_batch} and max_queue={max_queue} must be >= 1, wait_ms={wait_ms} >= 0")
        self.run, self.max_batch, self.wait_s, self.max_queue = run, max_batch, wait_ms / 1000, max_queue
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker thread (submit does it on first use)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="serve-batcher", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Let the worker finish the batch it is running and end; jobs still queued are not run."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    async def submit(self, key: Hashable, item: Any) -> Any:
        """The result of `item` once its batch has run (raises what `run` raised for it; QueueFull when
        max_queue jobs are already waiting)."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} requests are already waiting (--max-queue {self.max_queue})")
        self.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(key, item, future, loop))
        return await future

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stopping = self._collect(first)
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                if not job.future.cancelled():  # its caller gave up while it waited
                    groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._run_group(key, group)
            if stopping:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and the jobs that arrive within wait_s of taking it, max_batch at most; and whether the stop
        signal came meanwhile."""
        jobs, deadline = [first], time.monotonic() + self.wait_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run_group(self, key: Hashable, group: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.largest_batch = max(self.stats.largest_batch, len(group))
        try:
            results = self.run(key, [job.item for job in group])
            if len(results) != len(group):
                raise RuntimeError(f"the batch runner returned {len(results)} results for {len(group)} items")
        except Exception as error:  # every caller of the batch gets it; the worker goes on
            logger.exception("batch %r of %d failed", key, len(group))
            results = [error] * len(group)
        for job, result in zip(group, results, strict=True):
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, result)
            except RuntimeError:  # the caller's event loop is closed: nobody waits for this result
                pass


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # cancelled: the caller timed out
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
