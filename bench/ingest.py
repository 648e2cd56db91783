"""Ingestion benchmark on ../shared/data/drcd_dev/docs (traditional Chinese, long articles).

Prints documents, chunks, seconds per stage (parse / chunk / embed / index) and the share of
sentence-chunker boundaries that fall at a sentence end (target 100% except over-long sentences).

    python bench/ingest.py [--docs PATH] [--chunk-size 300] [--overlap 120]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import DATASETS, table


def boundary_stats(lib, kb) -> dict:
    """For every sentence chunk: is each boundary at a sentence end, or inside an over-long sentence?"""
    from services.text import sentence_ends, split_sentences

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


def main() -> None:
    from services.chunking import ChunkingConfig
    from services.ingest import ingest_paths
    from services.library import Library

    p = argparse.ArgumentParser()
    p.add_argument("--docs", default=str(DATASETS["drcd_dev"] / "docs"))
    p.add_argument("--chunk-size", type=int, default=300)
    p.add_argument("--overlap", type=int, default=120)
    args = p.parse_args()
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
