"""Answer benchmark on ../shared/data/cmrc2018_trial.

    python bench/answers.py [--limit N] [--llm-url URL --llm-model NAME --llm-sample 30]

1. Extractive answers (no LLM): share of questions whose gold answer string appears in the answer, and
   citation precision (share of citations whose quote supports the answer sentence).
2. Refusal: the KB holds the first half of the articles; questions about that half are answerable,
   questions about the other half are constructed unanswerable (same style and domain, so the test is
   not made easy by topic or script). Reports refusal precision/recall at the shipped thresholds and a
   sweep of the coverage threshold (how services.answer.REFUSE_BELOW_COVERAGE was calibrated).
3. With --llm-url (an OpenAI-compatible local server, e.g. llama.cpp llama-server): the same on a
   sample, plus the median time to first token.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from common import DATASETS, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-bench")


def main() -> None:
    from services import answer as A
    from services.chunking import ChunkingConfig
    from services.config import LLMSettings
    from services.evaluation import load_questions
    from services.ingest import ingest_paths
    from services.library import Library
    from services.retrieval import Retriever

    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--llm-url")
    p.add_argument("--llm-model", default="local")
    p.add_argument("--llm-sample", type=int, default=30)
    p.add_argument("--no-dense", action="store_true", help="extractive answers without dense sentence similarity")
    args = p.parse_args()
    root = DATASETS["cmrc2018_trial"]
    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "quality")
    questions = load_questions(str(root / "questions.jsonl"))
    docs = sorted((root / "docs").glob("*.txt"))
    half = {d.name for d in docs[: len(docs) // 2]}

    def build(name, files):
        kb = lib.kb(name, create=True)
        if not lib.store.list_documents(kb.id):
            ingest_paths(lib, kb, files, ChunkingConfig(),
                         on_file=lambda i, n, r: print(f"\r  ingest {name} {i}/{n}", end="", file=sys.stderr))
            print(file=sys.stderr)
        return kb

    full = build("answers-cmrc-full-v4", docs)
    half_kb = build("answers-cmrc-half-v4", [d for d in docs if d.name in half])
    rng = random.Random(0)
    sample = questions[:]
    rng.shuffle(sample)
    if args.limit:
        sample = sample[: args.limit]

    # 1. extractive answers over the whole KB
    retriever = Retriever(lib, full)
    contains = refused = 0
    precisions, ms = [], []
    for i, q in enumerate(sample, 1):
        t = time.perf_counter()
        a = A.answer_question(retriever, LLMSettings(), q.question, extractive_dense=not args.no_dense)
        ms.append((time.perf_counter() - t) * 1000)
        contains += any(g and A.normalize(g) in A.normalize(A.strip_markers(a.text)) for g in q.answers)
        refused += a.mode == "refused"
        if a.citation_precision is not None:
            precisions.append(a.citation_precision)
        print(f"\r  extractive {i}/{len(sample)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    rows = [{"measure": "extractive: gold answer in answer", "value": contains / len(sample)},
            {"measure": "extractive: refused (all answerable)", "value": refused / len(sample)},
            {"measure": "extractive: citation precision", "value": statistics.mean(precisions)},
            {"measure": "extractive: median ms per answer", "value": statistics.median(ms)}]

    # 2. refusal on constructed unanswerable questions
    retriever = Retriever(lib, half_kb)
    signals = []
    for i, q in enumerate(sample, 1):
        hits = retriever.search(q.question).hits
        signals.append((q.doc_name not in half, A.evidence_strength(q.question, hits)))
        print(f"\r  refusal {i}/{len(sample)}", end="", file=sys.stderr)
    print(file=sys.stderr)

    def pr(refuse):
        decided = [(unanswerable, refuse(s)) for unanswerable, s in signals]
        tp = sum(1 for u, r in decided if u and r)
        fp = sum(1 for u, r in decided if not u and r)
        fn = sum(1 for u, r in decided if u and not r)
        return tp / max(1, tp + fp), tp / max(1, tp + fn)

    precision, recall = pr(A.should_refuse)
    rows += [{"measure": "refusal precision (shipped thresholds)", "value": precision},
             {"measure": "refusal recall (shipped thresholds)", "value": recall},
             {"measure": "questions: answerable / unanswerable",
              "value": f"{sum(not u for u, _ in signals)} / {sum(u for u, _ in signals)}"}]
    print(table(rows))
    sweep = []
    for cov in (0.2, 0.25, 0.3, 0.34, 0.4, 0.45, 0.5):
        for dense in (0.84, 0.86, 0.88, 1.01):
            p_, r_ = pr(lambda s: s["coverage"] < cov and s["dense"] < dense)
            sweep.append({"coverage <": cov, "dense <": dense if dense <= 1 else "(off)", "precision": p_, "recall": r_,
                          "f1": 2 * p_ * r_ / max(1e-9, p_ + r_)})
    print("\nrefusal threshold sweep (refuse when coverage < a and dense < b)")
    print(table(sweep))

    if args.llm_url:
        llm = LLMSettings(base_url=args.llm_url, api_key="local", model=args.llm_model, timeout=300)
        retriever = Retriever(lib, full)
        got, cps, ttft = 0, [], []
        for q in sample[: args.llm_sample]:
            a = A.answer_question(retriever, llm, q.question)
            got += any(g and g in a.text for g in q.answers)
            if a.citation_precision is not None:
                cps.append(a.citation_precision)
            if "llm_first_token" in a.timings_ms:
                ttft.append(a.timings_ms["llm_first_token"])
        n = min(len(sample), args.llm_sample)
        print(table([{"measure": "llm: gold answer in answer", "value": got / n},
                     {"measure": "llm: citation precision", "value": statistics.mean(cps) if cps else float("nan")},
                     {"measure": "llm: median ms to first token", "value": statistics.median(ttft) if ttft else float("nan")}]))


if __name__ == "__main__":
    main()
