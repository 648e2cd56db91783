"""Micro-batching of query embeddings: concurrent queries share one forward pass.

One e5-small query on the CPU runs a handful of tokens through every layer, and a batch amortises the
per-call overhead: on the 2-core VM one query took about 17 ms and a batch of 20 about 130 ms (packed),
so batching saves about 2.5x under concurrency, not 20x (the model is compute-bound; see README,
"bench/api.py"). `QueryBatcher.encode(text)` is called from many threads (the HTTP API's
worker threads, the pages); the first caller becomes the leader: it waits at most `max_wait_s` for
others to join (until `max_batch` are queued), runs `encode_many` on the batch outside the lock, and
hands each waiter its row. Queries arriving while a batch runs queue up and form the next batch, led
by one of them. A caller alone pays at most `max_wait_s` extra.

`encode_many(texts) -> array (len(texts), dim)` must give each text the vector it gives that text
alone (the torch engine does: padded positions are masked out of attention and pooling; equal within
1e-5 in fp32, tests/test_query_batcher.py). If it raises, every caller of that batch gets the
exception; the next batch is tried afresh.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT_S = 0.002


class _Slot:
    __slots__ = ("text", "vector", "error", "done")

    def __init__(self, text: str):
        self.text = text
        self.vector = None
        self.error: BaseException | None = None
        self.done = False


class QueryBatcher:
    """Thread-safe coalescing of `encode_many` calls (see the module docstring)."""

    def __init__(self, encode_many: Callable[[list[str]], np.ndarray], max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._encode_many = encode_many
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self._cond = threading.Condition()
        self._queue: list[_Slot] = []
        self._busy = False  # a leader is gathering or encoding a batch
        self.batches = 0  # batches run so far, and the queries in them (for tests and benchmarks)
        self.queries = 0

    def encode(self, text: str) -> np.ndarray:
        slot = _Slot(text)
        with self._cond:
            self._queue.append(slot)
            if len(self._queue) >= self.max_batch:
                self._cond.notify_all()  # a gathering leader need not wait any longer
            while not slot.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._lead()
            if slot.error is not None:
                raise slot.error
            return slot.vector

    def _lead(self) -> None:
        """Gather a batch, encode it and hand out the rows (called, and returns, holding the lock)."""
        self._busy = True
        try:
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self._cond.release()
            try:
                vectors = self._encode_many([s.text for s in batch])
                if len(vectors) != len(batch):
                    raise RuntimeError(f"encode_many gave {len(vectors)} vectors for {len(batch)} texts")
                for s, v in zip(batch, vectors):
                    s.vector = np.array(v, np.float32, copy=True)
            except BaseException as exc:  # noqa: BLE001 - every waiter of this batch gets it
                for s in batch:
                    s.vector, s.error = None, exc
            finally:
                self._cond.acquire()
            for s in batch:
                s.done = True
            self.batches += 1
            self.queries += len(batch)
        finally:
            self._busy = False
            self._cond.notify_all()
