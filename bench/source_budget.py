"""Source budget vs. answer quality and waiting time with a (slow) local LLM (issue 10, item 5).

    python bench/source_budget.py --llm-url URL [--n 5] [--budgets 300,600,1200] [--out FILE.jsonl]
    python bench/source_budget.py --summary FILE.jsonl

The app cuts the retrieved sources to a token budget: the model's context, and for a slow model
the tokens it reads in about TARGET_READING_SECONDS (services.answers.answer.time_budget). This answers the
same questions (bench/answers.py's CMRC / DRCD / CAIL2019 answerable sets and knowledge bases) at
several budgets and prints, per budget: sources given, gold answer in the LLM answer, gold answer
in the sources, time to first token and total time (medians). Budgets run in the outer loop, so
consecutive prompts share only the system prompt (no unfair prefix-cache hits).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-bench")


def summarize(rows: list[dict]) -> None:
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        rs = [r for r in rows if r["budget"] == budget]
        out.append({"budget (tokens)": budget, "n": len(rs),
                    "sources (median)": statistics.median(r["sources"] for r in rs),
                    "gold in sources": sum(r["gold_in_sources"] for r in rs) / len(rs),
                    "gold in answer": sum(r["gold"] for r in rs) / len(rs),
                    "refused": sum(r["mode"] == "refused" for r in rs) / len(rs),
                    "first token s (median)": statistics.median(r["first_s"] for r in rs),
                    "total s (median)": statistics.median(r["total_s"] for r in rs)})
    print(table(out))


def main() -> None:
    from answers import build_kbs, load_sets

    from services.answers import answer as A
    from services.config import LLMSettings
    from services.index.library import Library
    from services.search.retrieval import Retriever

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-url")
    p.add_argument("--n", type=int, default=5, help="questions per set")
    p.add_argument("--sets", default="cmrc,drcd,cail")
    p.add_argument("--budgets", default="300,600,1200")
    p.add_argument("--out", default="")
    p.add_argument("--summary")
    args = p.parse_args()
    if args.summary:
        summarize([json.loads(line) for line in Path(args.summary).read_text().splitlines() if line.strip()])
        return
    sets, kb_docs = load_sets(40, 80)
    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "quality")
    kbs = build_kbs(lib, kb_docs, "n40-d80")
    llm = LLMSettings(base_url=args.llm_url, api_key="local", model="local", timeout=900, max_retries=0,
                      max_tokens=200, temperature=0.0)
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    rows = []
    questions = [(s, q) for s in args.sets.split(",") for q in sets[s][1][:args.n]]
    for budget in (int(b) for b in args.budgets.split(",")):
        for i, (set_name, q) in enumerate(questions, 1):
            retriever = Retriever(lib, kbs[sets[set_name][0]])
            started, first = time.perf_counter(), None
            stream = A.stream_answer(retriever, llm, q.question, context_tokens=budget)
            for delta in stream:
                if delta.strip() and first is None and stream.preview is not None:
                    first = time.perf_counter()
            a = stream.answer
            row = {"set": set_name, "id": q.id, "budget": budget, "sources": len(a.sources), "mode": a.mode,
                   "gold": A.contains_gold(a.text, q.answers),
                   "gold_in_sources": any(A.contains_gold(h.text, q.answers) for h in a.sources),
                   "first_s": a.timings_ms.get("llm_first_token", 0) / 1000,
                   "total_s": time.perf_counter() - started}
            rows.append(row)
            if out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
            print(f"\r  budget {budget}: {i}/{len(questions)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    summarize(rows)


if __name__ == "__main__":
    main()
