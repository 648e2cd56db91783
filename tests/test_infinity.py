"""A real third-party model server: Infinity (infinity-emb from PyPI, in its own venv) serving the bundled
e5 (the converted sentence-transformers folder) for /embeddings and an e5-initialised cross-encoder
folder for /rerank, started on 127.0.0.1 offline. Parity with the in-process models, a KB built through
the server answering like one built in-process, and the server going away mid-ingest.

Skipped (with the reason) only where infinity-emb is not installed; .ci/run installs it in
.venv-infinity and sets WENDAO_REQUIRE_INFINITY=1, which turns the skip into a failure."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from infinity_server import InfinityServer, e5_cross_encoder, infinity_bin

pytestmark = pytest.mark.slow
SAMPLES = ROOT / "services" / "samples"
E5, RERANKER = "multilingual-e5-small", "e5-reranker"


@pytest.fixture(scope="module")
def infinity(tmp_path_factory):
    if infinity_bin() is None:
        reason = ("infinity-emb is not installed: create .venv-infinity (see tests/infinity_server.py) "
                  "or set WENDAO_INFINITY_BIN to its infinity_emb")
        if os.environ.get("WENDAO_REQUIRE_INFINITY"):
            pytest.fail(reason)
        pytest.skip(reason)
    from services.index import torch_e5

    folder = tmp_path_factory.mktemp("infinity")
    server = InfinityServer({E5: torch_e5.model_dir(), RERANKER: e5_cross_encoder(folder / "e5-cross-encoder")},
                            log=folder / "infinity.log")
    server.cross_encoder = folder / "e5-cross-encoder"
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_models():
    from services.index import embedding
    from services.search import rerank

    for cache in (embedding._EMBEDDERS, rerank._RERANKERS):
        cache.clear()
    embedding.clear_query_cache()
    yield
    for cache in (embedding._EMBEDDERS, rerank._RERANKERS):
        cache.clear()
    embedding.clear_query_cache()


def sample_chunks(size: int = 150) -> list[str]:
    """The texts ingest embeds for the sample documents (sentence chunks with their title line)."""
    from services.documents.chunking import ChunkingConfig, chunk_text
    from services.index.index_text import document_title, index_text

    texts = []
    for f in sorted((SAMPLES / "docs").glob("*.txt")):
        text = f.read_text(encoding="utf-8")
        title = document_title(text, f.name)
        texts += [index_text(title, c) for c in chunk_text(text, ChunkingConfig(chunk_size=size, overlap=0))]
    return texts


def questions() -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def served_e5(infinity) -> str:
    from services.config import served_name
    from services.index.models import served_prefixes

    return served_name(infinity.url, E5, *served_prefixes(E5))


def test_infinity_vectors_match_in_process(infinity, fresh_models):
    from services.index.embedding import TorchE5Embedder, load_embedder
    from services.index.models import BUNDLED_TORCH_EMBEDDER, MODELS

    served = load_embedder(served_e5(infinity))
    local = TorchE5Embedder(MODELS[BUNDLED_TORCH_EMBEDDER], precision="fp32")
    assert served.dim == local.dim == 384
    texts = sample_chunks()
    cosine = np.sum(local.encode_passages(texts) * served.encode_passages(texts), axis=1)
    assert len(texts) >= 30 and cosine.min() >= 0.999, float(cosine.min())
    asked = [q["question"] for q in questions()]
    cosine = [float(local.encode_query(q) @ served.encode_query(q)) for q in asked]
    assert min(cosine) >= 0.999


def test_kb_built_through_infinity_answers_like_in_process(infinity, lib, monkeypatch, fresh_models):
    from services.config import RetrievalSettings
    from services.index.ingest import ingest_paths
    from services.index.models import BUNDLED_TORCH_EMBEDDER
    from services.search.retrieval import Retriever

    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", BUNDLED_TORCH_EMBEDDER)
    local = lib.kb("本地模型", create=True)
    ingest_paths(lib, local, [SAMPLES / "docs"])
    monkeypatch.setenv("WENDAO_EMBEDDING_BASE_URL", infinity.url)
    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", E5)
    served = lib.kb("模型服务", create=True)
    report = ingest_paths(lib, served, [SAMPLES / "docs"])
    assert all(r.status == "ok" and not r.warnings for r in report.results)
    assert lib.embedding_model(served) == served_e5(infinity)
    same_top, found = 0, {"本地模型": 0, "模型服务": 0}
    for q in questions():
        tops = {}
        for kb in (local, served):
            hits = Retriever(lib, kb, RetrievalSettings(mode="dense", top_k=5)).search(q["question"]).hits
            tops[kb.name] = [(h.doc, h.start) for h in hits]
            found[kb.name] += any(h.doc == Path(q["doc_file"]).name for h in hits)
        same_top += tops["本地模型"][0] == tops["模型服务"][0]
    assert found["模型服务"] == found["本地模型"] and found["模型服务"] >= 0.8 * len(questions())
    assert same_top >= len(questions()) - 1  # the same first passage (one tie may flip)


def test_infinity_rerank_matches_the_cross_encoder(infinity, lib, fresh_models):
    from services.config import RetrievalSettings, served_name
    from services.index.ingest import ingest_paths
    from services.search.rerank import Reranker, load_reranker
    from services.search.retrieval import Retriever

    name = served_name(infinity.url, RERANKER)
    local, served = Reranker(str(infinity.cross_encoder), device="cpu"), load_reranker(name)
    passages = sample_chunks(150)[:20]
    for q in [q["question"] for q in questions()[:2]]:
        a, b = np.array(local.score(q, passages)), np.array(served.score(q, passages))
        assert np.abs(a - b).max() < 2e-3, np.abs(a - b).max()
        assert np.corrcoef(a, b)[0, 1] > 0.999
    kb = lib.kb("重排", create=True)
    ingest_paths(lib, kb, [SAMPLES / "docs"])
    settings = RetrievalSettings(mode="hybrid", rerank=True, reranker_model=name, rerank_top_n=10)
    result = Retriever(lib, kb, settings).search(questions()[0]["question"])
    assert not result.notice and len(result.candidates) > 10
    ranks = sorted(h.ranks["rerank"] for h in result.candidates if "rerank" in h.ranks)
    assert ranks == list(range(1, 11))
    assert all(h.ranks.get("rerank") == i for i, h in enumerate(result.candidates[:10], start=1))


def test_infinity_going_away_mid_ingest_leaves_the_kb_consistent(infinity, lib, monkeypatch, fresh_models):
    """Killed after the first document: the rest are keyword-searchable, `check` is clean; restarted on
    the same port, the worker completes the vectors."""
    from services import worker
    from services.config import RetrievalSettings
    from services.index.ingest import ingest_paths
    from services.index.maintenance import check
    from services.index.pending import queue_when_servers_back
    from services.search.retrieval import Retriever

    monkeypatch.setenv("WENDAO_EMBEDDING_BASE_URL", infinity.url)
    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", E5)
    monkeypatch.setenv("WENDAO_MODEL_SERVER_RETRIES", "0")
    kb = lib.kb("断线", create=True)
    files = sorted((SAMPLES / "docs").glob("*.txt"))[:4]

    def on_file(i, n, result):
        if i == 1:
            infinity.kill()

    report = ingest_paths(lib, kb, files, on_file=on_file)
    first, rest = report.results[0], report.results[1:]
    assert first.status == "ok" and not first.warnings
    assert all(r.status == "ok" and "无法连接" in r.warnings[-1] for r in rest)
    status = check(lib, kb)
    assert status["ok"], status["problems"]
    question = next(q for q in questions() if Path(q["doc_file"]).name == files[-1].name)
    hits = Retriever(lib, kb, RetrievalSettings(mode="hybrid")).search(question["question"]).hits
    assert files[-1].name in [h.doc for h in hits]  # by keywords while the server is down
    infinity.start()
    assert queue_when_servers_back(lib) == len(rest)
    assert worker.wait_idle(lib, 300)
    assert not lib.store.dense_pending(kb.id)
    hits = Retriever(lib, kb, RetrievalSettings(mode="dense")).search(question["question"]).hits
    assert files[-1].name in [h.doc for h in hits]
    status = check(lib, kb)
    assert status["ok"] and status["indexes"]["dense"]["vectors_pending"] == 0
