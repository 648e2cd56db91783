"""Query embedding latency of an embedder, one query at a time (issue 12: p50 <= 10 ms on an idle machine).

    python bench/query_latency.py [--model NAME] [--threads N] [--n 110]

Prints p50/p90 wall time and p50 CPU time per query over CMRC 2018 trial questions (10 warm-up
queries first). CPU time is the fairer number on a shared machine: wall time grows with the load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from common import DATASETS, table


def main() -> None:
    from services.index.embedding import load_embedder
    from services.index.models import DEFAULT_EMBEDDER

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_EMBEDDER)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--n", type=int, default=110)
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    embedder = load_embedder(args.model)
    lines = (DATASETS["cmrc2018_trial"] / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()][: args.n + 10]
    for q in questions[:10]:
        embedder.encode_query(q)
    walls, cpus = [], []
    for q in questions[10:]:
        wall, cpu = time.perf_counter(), time.process_time()
        embedder.encode_query(q)
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    walls.sort()
    print(table([{"model": args.model, "engine": type(embedder).__name__, "precision": getattr(embedder, "precision", "-"),
                  "queries": len(walls), "wall p50 ms": statistics.median(walls),
                  "wall p90 ms": walls[int(0.9 * len(walls))], "CPU p50 ms": statistics.median(cpus)}]))


if __name__ == "__main__":
    main()
