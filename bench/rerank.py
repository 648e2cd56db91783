"""Reranker benchmark (issue 20): rerank off vs a reranker trained on the KB's own documents.

    python bench/rerank.py [--datasets cmrc,drcd,drcd_para,cail] [--docs cail=1000] [--questions 200]
                           [--set layers=6,max_length=192] [--tag T] [--threads 2] [--latency 40]
                           [--weights 1.0,0.5]

Per knowledge base (CMRC 2018 trial, DRCD dev — which the paraphrased DRCD questions of
bench/drcd_paraphrase.jsonl share — and CAIL2019 dev, a subset with --docs cail=N): ingest the
documents (default chunking, the bundled multilingual-e5-small) into $WENDAO_BENCH_DIR (default
/tmp/wendao-rerank-bench; reused), train a reranker on the KB's documents only
(services.tuning.rerank_training.finetune_reranker, the code the UI, the job and the CLI run; the gold
questions are never seen), then evaluate a seeded sample of the gold questions with the 评测 page's
evaluator, rerank off and on (R@1, R@5, MRR@10, answer within the first 1,000 characters) with the
reranker ordering the candidates alone (w=1.0) and blended with the first stage's ranks (w=0.5,
RetrievalSettings.rerank_weight; the training run keeps whichever its deciding set prefers). Also
printed: the training run's wall time and peak RSS (VmHWM, reset before the run), the held-out pseudo-
question numbers of its card, and the rerank stage's own latency for 20 candidates (p50 / p95 over
--latency queries, wall and CPU). A finished model of the same name is reused (its training numbers
from its card).

Datasets (../shared/data; benchmarks only, never shipped):
  cmrc       CMRC 2018 trial (256 documents), gold questions
  drcd       DRCD dev (257 documents), gold questions
  drcd_para  the 160 paraphrased questions of bench/drcd_paraphrase.jsonl, over the drcd KB
  cail       CAIL2019 dev judgments (first N documents, --docs cail=N, default 1000), answerable gold questions
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, SHARED, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-rerank-bench")
DATA = SHARED / "data"
KBS = {"cmrc": DATA / "cmrc2018_trial", "drcd": DATA / "drcd_dev", "cail": DATA / "cail2019_dev"}
QUESTIONS = {"cmrc": ("cmrc", DATA / "cmrc2018_trial" / "questions.jsonl"),
             "drcd": ("drcd", DATA / "drcd_dev" / "questions.jsonl"),
             "drcd_para": ("drcd", ROOT / "bench" / "drcd_paraphrase.jsonl"),
             "cail": ("cail", DATA / "cail2019_dev" / "questions.jsonl")}
METRICS = ["recall@1", "recall@5", "mrr@10", "coverage@1000chars"]


def peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_kb(lib, name: str, limit: int):
    from services.index.ingest import ingest_paths

    files = sorted((KBS[name] / "docs").glob("*.txt"))
    files = files[:limit] if limit else files
    kb = lib.kb(f"{name}-{len(files)}" if name == "cail" else name, create=True)
    if len(lib.store.list_documents(kb.id)) < len(files):
        t = time.perf_counter()
        report = ingest_paths(lib, kb, files, on_file=lambda i, n, r: print(f"\r  ingest {name} {i}/{n}", end="",
                                                                           file=sys.stderr))
        print(f"\n{name}: {report.documents} docs, {report.chunks} chunks in {time.perf_counter() - t:.0f}s",
              file=sys.stderr)
    return kb


def train(lib, kb, args) -> tuple[dict, float, float]:
    """The KB's reranker (trained now, or the finished one of the same name): (card, wall s, peak MB)."""
    from services.tuning.finetune import finetuned_models
    from services.tuning.rerank_training import RerankSettings, finetune_reranker

    settings = RerankSettings(**args.settings)
    changed = "".join(f"-{k}{v}" for k, v in sorted(args.settings.items()))
    name = f"bench-{kb.name}{changed}{args.tag}".replace(",", "_")
    if len(name) > 60:  # model names are at most 60 characters (services.tuning.finetune.valid_model_name)
        import hashlib

        name = f"bench-{kb.name}-{hashlib.sha1(changed.encode()).hexdigest()[:8]}{args.tag}"
    existing = {m["name"]: m for m in finetuned_models(lib, "reranker")}
    if name in existing:
        card = existing[name]
        return card, card.get("seconds", 0.0), card.get("bench_peak_mb", 0.0)
    peak_rss_reset()
    t = time.perf_counter()
    last = [0.0]

    def on_step(p):
        if time.time() - last[0] > 15 or p.step == p.steps:
            last[0] = time.time()
            print(f"  train {p.step}/{p.steps} loss {sum(p.losses[-20:]) / len(p.losses[-20:]):.3f} "
                  f"eta {p.eta_s or 0:.0f}s", file=sys.stderr)

    card = finetune_reranker(lib, kb, name, settings, on_step, apply=False,
                             on_stage=lambda s: print(f"  stage {s} at {time.perf_counter() - t:.0f}s", file=sys.stderr))
    wall, peak = time.perf_counter() - t, peak_rss_mb()
    card_file = Path(card["path"]) / "wendao_card.json"
    card_file.write_text(json.dumps({**json.loads(card_file.read_text(encoding="utf-8")), "bench_peak_mb": peak},
                                    ensure_ascii=False, indent=1), encoding="utf-8")
    return card, wall, peak


def gold_questions(name: str, kb, lib, limit: int):
    from services.tuning.evaluation import load_questions

    present = set(lib.store.filenames(kb.id).values())
    questions = [q for q in load_questions(str(QUESTIONS[name][1])) if q.spans and q.doc_name in present]
    if limit and len(questions) > limit:
        questions = random.Random(0).sample(questions, limit)
    return questions


def rerank_latency(lib, kb, model_path: str, questions, n: int) -> dict:
    """The rerank stage alone (20 candidates, the default rerank_top_n), per query: p50/p95 wall ms
    and the process CPU ms of the whole search (embedding + BM25 + dense + rerank)."""
    from dataclasses import replace

    from services.index.kb_settings import retrieval_settings
    from services.search.retrieval import Retriever

    settings = replace(retrieval_settings(lib, kb), rerank=True, reranker_model=model_path)
    retriever = Retriever(lib, kb, settings)
    retriever.search(questions[0].question)  # load the model
    walls, cpus, failed = [], [], 0
    for q in questions[:n]:
        c = time.process_time()
        result = retriever.search(q.question)
        cpus.append((time.process_time() - c) * 1000)
        wall = result.timings_ms.get("rerank")  # "rerank_attempt" instead when reranking failed: not a rerank time
        if wall is None:
            failed += 1
        else:
            walls.append(wall)
    walls.sort()
    return {"rerank_p50_ms": round(statistics.median(walls), 1) if walls else None,
            "rerank_p95_ms": round(walls[max(int(0.95 * len(walls)) - 1, 0)], 1) if walls else None,
            "search_cpu_p50_ms": round(statistics.median(cpus), 1), "latency_queries": len(walls),
            "rerank_failed": failed, "load_avg": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cmrc,drcd,drcd_para,cail")
    parser.add_argument("--docs", default="", help="cail=N: the first N CAIL documents (default 1000)")
    parser.add_argument("--questions", type=int, default=200, help="gold questions per set (seeded sample; 0: all)")
    parser.add_argument("--set", default="", help="RerankSettings overrides, e.g. layers=6,max_length=192")
    parser.add_argument("--tag", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency", type=int, default=40, help="queries timed for the rerank stage")
    parser.add_argument("--weights", default="1.0,0.5", help="reranker shares of the order evaluated on the gold questions")
    args = parser.parse_args()
    docs = {k: int(v) for k, v in (item.split("=") for item in args.docs.split(",") if item)}
    args.weights = [float(w) for w in args.weights.split(",") if w]
    args.settings = {k: json.loads(v) for k, v in (item.split("=") for item in args.set.split(",") if item)}
    import torch

    torch.set_num_threads(args.threads)
    from services.index.library import Library
    from services.tuning.rerank_training import evaluate_reranker

    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "data")
    rows, infos, cards = [], [], {}
    for name in args.datasets.split(","):
        kb_name = QUESTIONS[name][0]
        kb = open_kb(lib, kb_name, docs.get(kb_name, 1000 if kb_name == "cail" else 0))
        if kb.name not in cards:
            card, wall, peak = train(lib, kb, args)
            cards[kb.name] = card
            info = {"kb": kb.name, "docs": len(lib.store.list_documents(kb.id)), "chunks": lib.store.count_chunks(kb.id),
                    "train_queries": card["pairs"]["train"], "train_pairs": card["pairs"]["examples"],
                    "train_wall_s": round(wall), "peak_rss_mb": round(peak or 0), "model": card["name"],
                    "chosen_weight": card.get("rerank_weight", 1.0), "offered": card["better"]}
            for w, tried in card.get("weights_tried", {}).items():
                print(f"{kb.name} card, reranker weight {w}: {json.dumps(tried)}", flush=True)
            for key, result in card["results"].items():
                for state in ("off", "on"):
                    rows.append({"set": f"{kb.name} {key} (pseudo, {result[state]['questions']})", "rerank": state,
                                 **{m: result[state][m] for m in METRICS}})
        card = cards[kb.name]
        questions = gold_questions(name, kb, lib, args.questions)
        print(f"{name}: {len(questions)} gold questions", file=sys.stderr)
        states = [("off", None, 1.0)] + [(f"on w={w}", card["path"], w) for w in args.weights]
        for state, path, weight in states:
            summary = evaluate_reranker(lib, kb, questions, path, weight=weight)
            rows.append({"set": f"{name} ({len(questions)})", "rerank": state, **{m: summary[m] for m in METRICS},
                         "p50_ms": summary["p50_ms"]})
        print(table(rows[-len(states):], ["set", "rerank", *METRICS, "p50_ms"]), flush=True)
        if name in ("drcd_para", "cail") or name == args.datasets.split(",")[-1]:
            lat = rerank_latency(lib, kb, card["path"], questions, args.latency)
            infos.append({**(info if info["kb"] == kb.name else {"kb": kb.name}), **lat, "set": name})
            print(json.dumps(infos[-1], ensure_ascii=False), flush=True)
    print("\n" + table(rows, ["set", "rerank", *METRICS, "p50_ms"]))
    print(table(infos))
    lib.close()


if __name__ == "__main__":
    main()
