"""Embedding through a model server vs in process, on the same machine in the same run.

The server is Infinity (infinity-emb, its own venv: tests/infinity_server.py finds it through
WENDAO_INFINITY_BIN or .venv-infinity) serving the bundled e5 folder (services.index.torch_e5), reached
through services.index.served.ServedEmbedder (batches of 32, up to 4 requests in flight). In process is
the default engine (torch e5; bf16 where the CPU has native bf16, else fp32).

1. Embedding: the same real chunks as ingest embeds them (CMRC 2018 trial + DRCD dev, sentence chunks
   300/120 with their title line), alternating
   rounds (a busy machine slows both alike): chunks/s per engine (median of rounds), CPU seconds of client
   and server together per chunk, query p50, and cosine parity with in-process fp32.
2. Ingest: N DRCD documents ingested end to end (parse, chunk, BM25, embed, index) into fresh data dirs,
   alternating in process / through the server: chunks/s of the whole ingest and of its embed stage.
3. --outage: the server is killed after the first file of an ingest; what the files say, `check`, keyword
   search, then the server restarted and the seconds until the worker has completed the vectors.

    python bench/model_server.py [--chunks 600] [--rounds 3] [--dtype float32 bfloat16]
                                 [--ingest-docs 40] [--ingest-rounds 2] [--outage]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATASETS, ROOT, drcd_queries, median_query_ms, table

sys.path.insert(0, str(ROOT / "tests"))
from infinity_server import InfinityServer, infinity_bin  # noqa: E402

SERVED_NAME = "multilingual-e5-small"


def real_chunks(n: int) -> list[str]:
    """n texts as ingest embeds them (title line + sentence chunk), sampled (seed 0) half from CMRC 2018
    trial, half from DRCD dev."""
    import random

    from services.documents.chunking import ChunkingConfig, chunk_text
    from services.documents.parsing import parse_text
    from services.index.index_text import document_title, index_text

    rng, out = random.Random(0), []
    for name in ("cmrc2018_trial", "drcd_dev"):
        texts = []
        for f in sorted((DATASETS[name] / "docs").glob("*.txt")):
            text = parse_text(f.read_bytes(), f.name).text
            title = document_title(text, f.name)
            texts += [index_text(title, c) for c in chunk_text(text, ChunkingConfig())]
        out += rng.sample(texts, min(len(texts), n // 2))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its finished children (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def served(server: InfinityServer) -> str:
    from services.config import served_name
    from services.index.models import served_prefixes

    return served_name(server.url, SERVED_NAME, *served_prefixes(SERVED_NAME))


def embed_rates(args, server: InfinityServer, dtype: str, rows: list, parity: list) -> None:
    from services.index.embedding import TorchE5Embedder, load_embedder
    from services.index.models import BUNDLED_TORCH_EMBEDDER, resolve

    chunks = real_chunks(args.chunks)
    local = load_embedder(BUNDLED_TORCH_EMBEDDER)
    remote = load_embedder(served(server))
    for model in (local, remote):
        model.encode_passages(chunks[:16])  # warm up (Infinity starts without warm-up)
    rates = {"in process": [], "server": []}
    cpu = {"in process": 0.0, "server": 0.0}
    vectors = []
    for part in [chunks[i::args.rounds] for i in range(args.rounds)]:
        for label, model in (("in process", local), ("server", remote)):
            t, c, s = time.perf_counter(), time.process_time(), cpu_seconds(server.process.pid)
            v = model.encode_passages(part)
            rates[label].append(len(part) / (time.perf_counter() - t))
            cpu[label] += time.process_time() - c + (cpu_seconds(server.process.pid) - s)
            if label == "server":
                vectors.append(v)
    qs = drcd_queries(args.queries)
    q_ms = {}
    for label, model in (("in process", local), ("server", remote)):
        q_ms[label] = median_query_ms(model, qs)
    reference = TorchE5Embedder(resolve(BUNDLED_TORCH_EMBEDDER), precision="fp32")
    ordered = np.zeros((len(chunks), remote.dim), np.float32)
    for i, v in enumerate(vectors):
        ordered[i::args.rounds] = v
    cos = np.sum(reference.encode_passages(chunks) * ordered, axis=1)
    parity.append({"server dtype": dtype, "chunks": len(chunks), "cosine min": f"{cos.min():.5f}",
                   "cosine mean": f"{cos.mean():.6f}"})
    for label in rates:
        rows.append({"engine": f"in process (torch e5, {local.precision})" if label == "in process"
                     else f"Infinity {dtype} via /embeddings", "server dtype": dtype,
                     "chunks/s (median)": round(statistics.median(rates[label]), 1),
                     "CPU s per 100 chunks (client+server)": round(cpu[label] * 100 / len(chunks), 2),
                     "query p50 ms": round(q_ms[label], 1)})


def ingest_rates(args, server: InfinityServer, dtype: str, rows: list) -> None:
    from services.index import embedding
    from services.index.ingest import ingest_paths
    from services.index.library import Library
    from services.index.models import BUNDLED_TORCH_EMBEDDER
    from services.index.vectors import close_all

    files = sorted((DATASETS["drcd_dev"] / "docs").glob("*.txt"))[:args.ingest_docs]
    results = {"in process": [], "server": []}
    for _ in range(args.ingest_rounds):
        for label in results:
            os.environ.pop("WENDAO_EMBEDDING_BASE_URL", None)
            os.environ["WENDAO_EMBEDDING_MODEL"] = BUNDLED_TORCH_EMBEDDER
            if label == "server":
                os.environ["WENDAO_EMBEDDING_BASE_URL"] = server.url
                os.environ["WENDAO_EMBEDDING_MODEL"] = SERVED_NAME
            with tempfile.TemporaryDirectory() as tmp:
                lib = Library(Path(tmp) / "data")
                kb = lib.kb("bench", create=True)
                embedding.load_embedder(lib.embedding_model(kb)).encode_passages(["预热"])  # loaded outside the timing
                report = ingest_paths(lib, kb, files)
                assert all(r.status == "ok" and not r.warnings for r in report.results), report.skipped
                stages = report.stage_seconds()
                results[label].append((report.chunks, report.seconds, stages.get("embed", 0.0)))
                lib.close()
                close_all()
    for label, runs in results.items():
        chunks = runs[0][0]
        rows.append({"ingest": label if label == "in process" else f"Infinity {dtype}", "documents": len(files),
                     "chunks": chunks, "seconds (median)": round(statistics.median(r[1] for r in runs), 1),
                     "chunks/s": round(chunks / statistics.median(r[1] for r in runs), 1),
                     "embed stage chunks/s": round(chunks / statistics.median(r[2] for r in runs), 1)})


def outage(args, server: InfinityServer) -> list[dict]:
    from services import worker
    from services.config import RetrievalSettings
    from services.index.ingest import ingest_paths
    from services.index.library import Library
    from services.index.maintenance import check
    from services.index.pending import queue_when_servers_back
    from services.search.retrieval import Retriever

    os.environ["WENDAO_EMBEDDING_BASE_URL"] = server.url
    os.environ["WENDAO_EMBEDDING_MODEL"] = SERVED_NAME
    os.environ["WENDAO_MODEL_SERVER_RETRIES"] = "0"
    files = sorted((DATASETS["drcd_dev"] / "docs").glob("*.txt"))[:args.outage_docs]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = Library(Path(tmp) / "data")
        kb = lib.kb("outage", create=True)
        report = ingest_paths(lib, kb, files, on_file=lambda i, n, r: server.kill() if i == 1 else None)
        keyword_only = sum(bool(r.warnings) for r in report.results)
        status = check(lib, kb)
        title = files[-1].read_text(encoding="utf-8").splitlines()[0][:20]
        hits = Retriever(lib, kb, RetrievalSettings(mode="hybrid")).search(title).hits
        out.append({"step": "server killed after file 1 of %d" % len(files),
                    "result": f"{sum(r.status == 'ok' for r in report.results)} ok, {keyword_only} keyword-only"})
        out.append({"step": "check while down", "result": "ok" if status["ok"] else "; ".join(status["problems"])})
        out.append({"step": "keyword search for the last file's title", "result":
                    "found" if files[-1].name in [h.doc for h in hits] else "NOT found"})
        t = time.perf_counter()
        server.start()
        started = time.perf_counter() - t
        t = time.perf_counter()
        queued = queue_when_servers_back(lib)
        worker.wait_idle(lib, 600)
        out.append({"step": "server restarted (same port)", "result": f"up in {started:.1f} s"})
        out.append({"step": "vectors completed by the worker", "result":
                    f"{queued} documents in {time.perf_counter() - t:.1f} s, pending now {len(lib.store.dense_pending(kb.id))}"})
        status = check(lib, kb)
        out.append({"step": "check after", "result": "ok" if status["ok"] else "; ".join(status["problems"])})
        lib.close()
    os.environ.pop("WENDAO_MODEL_SERVER_RETRIES", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--ingest-docs", type=int, default=40)
    parser.add_argument("--ingest-rounds", type=int, default=2)
    parser.add_argument("--outage", action="store_true")
    parser.add_argument("--outage-docs", type=int, default=6)
    args = parser.parse_args()
    if infinity_bin() is None:
        sys.exit("infinity-emb is not installed: see tests/infinity_server.py (WENDAO_INFINITY_BIN or .venv-infinity)")
    from services.index import embedding, torch_e5
    from services.index.torch_e5 import native_bf16

    os.environ.setdefault("WENDAO_VECTORS_RETRY_S", "3600")
    rows, parity, ingest_rows, outage_rows = [], [], [], []
    for dtype in args.dtype:
        with tempfile.TemporaryDirectory() as tmp:
            server = InfinityServer({SERVED_NAME: torch_e5.model_dir()}, dtype=dtype, log=Path(tmp) / "infinity.log")
            t = time.perf_counter()
            server.start()
            print(f"Infinity --dtype {dtype}: up in {time.perf_counter() - t:.1f} s", flush=True)
            try:
                embedding.clear_query_cache()
                embed_rates(args, server, dtype, rows, parity)
                if args.ingest_docs:
                    ingest_rates(args, server, dtype, ingest_rows)
                if args.outage and dtype == args.dtype[-1]:
                    outage_rows = outage(args, server)
            finally:
                server.stop()
                for key in list(embedding._EMBEDDERS):  # the next server gets a fresh client
                    if isinstance(key, str) and key.startswith("served:"):
                        embedding._EMBEDDERS.pop(key)
    print(f"\n## embedding: {args.chunks} real chunks (CMRC trial + DRCD dev, sentence 300/120), {args.rounds} "
          f"alternating rounds; {os.cpu_count()} CPU cores, native bf16: {native_bf16()}")
    print(table(rows))
    print("\n## parity: server vectors vs in-process fp32")
    print(table(parity))
    if ingest_rows:
        print(f"\n## ingest end to end: {args.ingest_docs} DRCD dev documents, fresh data dir, median of {args.ingest_rounds}")
        print(table(ingest_rows))
    if outage_rows:
        print("\n## server goes away mid-ingest")
        print(table(outage_rows))


if __name__ == "__main__":
    main()
