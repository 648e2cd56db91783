"""Retrieval benchmark: quality on CMRC 2018 trial / DRCD dev, speed at 100k synthetic chunks.

    python bench/retrieval.py quality [--datasets cmrc2018_trial,drcd_dev] [--limit N]
    python bench/retrieval.py speed [--chunks 100000]

Quality ingests each dataset's docs/ into a KB under $WENDAO_BENCH_DIR (default /tmp/wendao-bench;
reused across runs, embeddings cached) with the default chunking and prints, per mode, chunk
Recall@1/5/10/20, MRR@10, nDCG@10, doc Recall@5, answer coverage within 1,000/2,000 retrieved
characters and latency. Speed builds a KB of synthetic chunks made of real sentences from the
datasets, with random unit vectors instead of embeddings (embedding is excluded by the target),
then measures indexing chunks/s, reopen time and query p50/p95 per mode.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import DATASETS, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-bench")


def quality(args) -> None:
    from services.documents.chunking import ChunkingConfig
    from services.config import RetrievalSettings
    from services.tuning.evaluation import EvalConfig, evaluate, load_questions
    from services.index.ingest import ingest_paths
    from services.index.library import Library

    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "quality")
    config = ChunkingConfig(args.chunker, args.chunk_size, args.overlap, args.window, args.stride)
    tag = f"{config.strategy}-{config.chunk_size}-{config.overlap}-{config.window}-{config.stride}-{args.kb_suffix}"
    base = RetrievalSettings()
    configs = [
        EvalConfig("bm25", "bm25", settings=replace(base, mode="bm25")),
        EvalConfig("dense", "dense", settings=replace(base, mode="dense")),
        EvalConfig("hybrid (weighted 0.5/0.5, default)", "hybrid", settings=replace(base, mode="hybrid")),
        EvalConfig("hybrid (rrf k=60)", "hybrid", settings=replace(base, mode="hybrid", fusion="rrf")),
    ]
    for name in args.datasets.split(","):
        root = DATASETS[name]
        kb = lib.kb(f"{name}-{tag}", create=True)
        if not lib.store.list_documents(kb.id):
            t = time.perf_counter()
            report = ingest_paths(lib, kb, [root / "docs"], config,
                                  on_file=lambda i, n, r: print(f"\r  ingest {i}/{n}", end="", file=sys.stderr))
            print(f"\n{name}: ingested {report.documents} docs, {report.chunks} chunks in {time.perf_counter() - t:.0f}s",
                  file=sys.stderr)
        questions = load_questions(str(root / "questions.jsonl"))
        if args.limit:
            random.Random(0).shuffle(questions)
            questions = questions[: args.limit]
        summaries, _ = evaluate(lib, kb, questions, configs,
                                lambda d, t: print(f"\r  eval {d}/{t}", end="", file=sys.stderr))
        print(file=sys.stderr)
        rows = [{"mode": m, **{k: v for k, v in s.items()}} for m, s in summaries.items()]
        print(f"\n## {name} ({len(questions)} questions, {lib.store.count_chunks(kb.id)} chunks, chunking {tag})")
        print(table(rows, ["mode", "recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10",
                           "doc_recall@5", "coverage@1000chars", "coverage@2000chars", "p50_ms", "p95_ms"]))


class RandomEmbedder:
    """Stands in for the embedding model in the speed benchmark (embedding time is excluded)."""

    name, dim, max_tokens = "random-384", 384, 512
    fingerprint, fingerprint_id = {"model": "random-384"}, "random384"

    def __init__(self):
        import numpy as np

        self.np, self.rng = np, np.random.default_rng(0)

    def _unit(self, n):
        v = self.rng.standard_normal((n, self.dim)).astype("float32")
        return v / self.np.linalg.norm(v, axis=1, keepdims=True)

    def encode_passages(self, texts):
        return self._unit(len(texts))

    def encode_query(self, text):
        return self._unit(1)[0]

    def count_tokens(self, text):
        return len(text)


def speed(args) -> None:
    from services.index import embedding
    from services.documents.chunking import ChunkingConfig
    from services.config import RetrievalSettings
    from services.index.ingest import ingest_bytes
    from services.index.library import Library
    from services.search.retrieval import Retriever
    from services.documents.text import split_sentences
    from services.index.vectors import close_all

    sentences = []
    for root in DATASETS.values():
        for f in sorted((root / "docs").glob("*.txt")):
            t = f.read_text(encoding="utf-8")
            sentences += [t[a:b].strip() for a, b in split_sentences(t) if len(t[a:b].strip()) > 8]
    rng = random.Random(0)
    per_doc, total = 100, args.chunks
    root = Path(os.environ["WENDAO_BENCH_DIR"]) / f"speed-{total}"
    shutil.rmtree(root, ignore_errors=True)
    embedding._EMBEDDERS["random-384"] = RandomEmbedder()
    lib = Library(root)
    kb = lib.kb("speed", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model="random-384")
    kb = lib.kb("speed")
    config = ChunkingConfig("fixed", 300, 0)
    index_seconds, chunk_count, t0 = 0.0, 0, time.perf_counter()
    for d in range(total // per_doc):
        body = []
        while sum(map(len, body)) < per_doc * 300:
            body.append(rng.choice(sentences))
        text = "".join(body)[: per_doc * 300]
        r = ingest_bytes(lib, kb, text.encode("utf-8"), f"doc{d:05d}.txt", config)
        index_seconds += sum(v for k, v in r.seconds.items() if k != "embed")
        chunk_count += r.chunks
        if d % 50 == 0:
            print(f"\r  indexed {chunk_count} chunks", end="", file=sys.stderr)
    wall = time.perf_counter() - t0
    print(file=sys.stderr)
    queries = [rng.choice(sentences)[:20] for _ in range(args.queries)]
    before = query_latencies(Retriever(lib, kb, RetrievalSettings()), queries)
    t = time.perf_counter()
    lib.optimize(kb)  # BM25 is in memory (services.index.bm25): only the dense collection has a graph to build
    optimize_s = time.perf_counter() - t
    lib.close()
    close_all()
    t = time.perf_counter()
    lib = Library(root)
    kb = lib.kb("speed")
    retriever = Retriever(lib, kb, RetrievalSettings())
    retriever.search("测试")  # opens the shards
    reopen_s = time.perf_counter() - t
    rows = [{"measure": "chunks", "value": chunk_count},
            {"measure": "indexing chunks/s (parse+chunk+tokenise+store+upsert, no embedding)",
             "value": round(chunk_count / index_seconds)},
            {"measure": "wall seconds incl. random vectors", "value": round(wall, 1)},
            {"measure": "optimize (HNSW build, background in the app) s", "value": round(optimize_s, 1)},
            {"measure": "reopen KB + first query s", "value": round(reopen_s, 3)}]
    after = query_latencies(retriever, queries)
    doc = lib.store.list_documents(kb.id)[0]
    t = time.perf_counter()
    lib.delete_document(kb, doc.id)
    retriever.search(queries[0], mode="bm25")  # BM25 catches up with SQLite (incremental)
    rows.append({"measure": "delete a 100-chunk document + next BM25 query ms",
                 "value": round((time.perf_counter() - t) * 1000, 1)})
    embed_ms = e5_query_ms(queries)
    for mode in ("bm25", "dense", "hybrid"):
        rows.append({"measure": f"{mode} query p50 (p95) ms, before optimize", "value": before[mode]})
        rows.append({"measure": f"{mode} query p50 (p95) ms, after optimize", "value": after[mode]})
    rows.append({"measure": "bundled e5-small query embedding p50 ms (add to dense/hybrid)", "value": round(embed_ms, 1)})
    print(table(rows))


def query_latencies(retriever, queries) -> dict:
    """p50 (p95) in ms per mode, timing the whole Retriever.search with a random query vector."""
    out = {}
    for mode in ("bm25", "dense", "hybrid"):
        retriever.search(queries[0], mode=mode)  # warm up
        times = []
        for q in queries:
            s = time.perf_counter()
            retriever.search(q, mode=mode)
            times.append((time.perf_counter() - s) * 1000)
        times.sort()
        out[mode] = f"{statistics.median(times):.1f} ({times[int(0.95 * len(times)) - 1]:.1f})"
    return out


def e5_query_ms(queries) -> float:
    from services.index.embedding import load_embedder
    from services.index.models import DEFAULT_EMBEDDER

    embedder = load_embedder(DEFAULT_EMBEDDER)
    embedder.encode_query(queries[0])
    times = []
    for q in queries[:100]:
        s = time.perf_counter()
        embedder.encode_query(q)
        times.append((time.perf_counter() - s) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--datasets", default="cmrc2018_trial,drcd_dev")
    q.add_argument("--limit", type=int, default=0)
    q.add_argument("--chunker", default="sentence")
    q.add_argument("--chunk-size", type=int, default=300)
    q.add_argument("--overlap", type=int, default=120)
    q.add_argument("--window", type=int, default=4)
    q.add_argument("--stride", type=int, default=2)
    q.add_argument("--kb-suffix", default="v2", help="change to re-ingest after changing ingestion code")
    s = sub.add_parser("speed")
    s.add_argument("--chunks", type=int, default=100_000)
    s.add_argument("--queries", type=int, default=200)
    args = p.parse_args()
    quality(args) if args.what == "quality" else speed(args)


if __name__ == "__main__":
    main()
