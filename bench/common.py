"""Shared helpers for the benchmarks: locate ../shared/data, build a KB, print tables."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("WENDAO_SHARED", ROOT.parent / "shared"))
DATASETS = {"cmrc2018_trial": SHARED / "data" / "cmrc2018_trial", "drcd_dev": SHARED / "data" / "drcd_dev"}


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain fixed-width table (floats with 3 decimals)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def drcd_queries(n: int) -> list[str]:
    """The first `n` DRCD dev questions (query-embedding timings of the model benches)."""
    import json

    lines = (DATASETS["drcd_dev"] / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines[:n]]


def median_query_ms(model, queries: list[str]) -> float:
    """Median milliseconds of `model.encode_query` over `queries`, after one warm-up call."""
    import statistics
    import time

    model.encode_query(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        model.encode_query(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
