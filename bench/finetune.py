"""Fine-tuning benchmark (issue 13): gold-question retrieval before/after fine-tuning the bundled
model on a KB's own documents (services.tuning.finetune, the same code as the UI and CLI).

    python bench/finetune.py [--datasets cail,drcd_para,cmrc] [--docs cail=200] [--epochs N]
                             [--max-pairs N] [--threads 2] [--set learning_rate=1e-5,train_layers=0]

Per dataset: ingest the documents (default chunking, bundled multilingual-e5-small) into a KB under
$WENDAO_BENCH_DIR (default /tmp/wendao-ft-bench; reused, embeddings cached), evaluate the gold
questions (BM25, dense, hybrid: chunk R@1/5/10, MRR@10), fine-tune on the KB's documents only
(pseudo-queries; the gold questions are never seen), re-embed the KB with the new model, evaluate
again, then switch the KB back. Also prints the held-out pseudo-query metrics of the model card and
the fine-tuning run's wall time and peak memory (VmHWM, reset before the run).

Datasets (../shared/data; benchmarks only, never shipped):
  cail       CAIL2019 dev court judgments, gold questions (a subset of documents: --docs cail=N)
  drcd_para  DRCD dev, the questions of bench/drcd_paraphrase.jsonl (rewritten in users' own words)
             over the documents they come from plus others up to --docs drcd_para=N
  cmrc       CMRC 2018 trial, gold questions (regression check)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import ROOT, SHARED, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-ft-bench")
DATA = SHARED / "data"
SOURCES = {"cail": (DATA / "cail2019_dev", DATA / "cail2019_dev" / "questions.jsonl"),
           "drcd_para": (DATA / "drcd_dev", ROOT / "bench" / "drcd_paraphrase.jsonl"),
           "cmrc": (DATA / "cmrc2018_trial", DATA / "cmrc2018_trial" / "questions.jsonl")}
DEFAULT_DOCS = {"cail": 200, "drcd_para": 0, "cmrc": 0}  # 0: all (drcd_para: the questions' documents)
METRICS = ["recall@1", "recall@5", "recall@10", "mrr@10"]


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter for this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pick_documents(name: str, root: Path, questions: list, limit: int) -> list[Path]:
    """The documents to index: the first `limit` files (sorted), or for drcd_para the questions'
    documents plus others (seeded) up to `limit`."""
    files = sorted((root / "docs").glob("*.txt"))
    if name == "drcd_para":
        wanted = {q.doc_name for q in questions}
        chosen = [f for f in files if f.name in wanted]
        others = [f for f in files if f.name not in wanted]
        random.Random(0).shuffle(others)
        return sorted(chosen + others[:max(0, limit - len(chosen))])
    return files[:limit] if limit else files


def run(name: str, args) -> tuple[list[dict], dict]:
    from services.config import RetrievalSettings
    from services.tuning.evaluation import EvalConfig, evaluate, load_questions
    from services.tuning.finetune import FinetuneSettings, finetune, finetuned_models
    from services.index.ingest import ingest_paths
    from services.index.library import Library
    from services.index.models import DEFAULT_EMBEDDER
    from services.index.reembed import reembed

    root, question_file = SOURCES[name]
    limit = args.docs.get(name, DEFAULT_DOCS[name])
    questions = load_questions(str(question_file))
    files = pick_documents(name, root, questions, limit)
    names = {f.name for f in files}
    questions = [q for q in questions if q.doc_name in names and q.spans]  # unanswerable ones have no span
    if args.questions and len(questions) > args.questions:
        questions = random.Random(0).sample(questions, args.questions)
    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "data")
    kb = lib.kb(f"{name}-{len(files)}", create=True)
    if lib.embedding_model(kb) != DEFAULT_EMBEDDER:  # an earlier run stopped before switching back
        reembed(lib, kb, DEFAULT_EMBEDDER)
    if len(lib.store.list_documents(kb.id)) < len(files):
        t = time.perf_counter()
        report = ingest_paths(lib, kb, files, on_file=lambda i, n, r: print(f"\r  ingest {i}/{n}", end="", file=sys.stderr))
        print(f"\n{name}: {report.documents} docs, {report.chunks} chunks in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    chunks = lib.store.count_chunks(kb.id)
    base = RetrievalSettings()
    configs = [EvalConfig(mode, mode, settings=replace(base, mode=mode)) for mode in ("bm25", "dense", "hybrid")]

    def gold(configs_):
        summaries, _ = evaluate(lib, kb, questions, configs_)
        return summaries

    print(f"{name}: {len(files)} docs, {chunks} chunks, {len(questions)} questions; evaluating the base", file=sys.stderr)
    before = gold(configs)
    given = {"epochs": args.epochs, "max_pairs": args.max_pairs}
    settings = FinetuneSettings(**{k: v for k, v in given.items() if v is not None}, **args.settings)
    changed = "".join(f"-{k}{v}" for k, v in sorted(args.settings.items()))
    model_name = f"bench-{name}-{len(files)}-e{settings.epochs}-p{settings.max_pairs}{changed}{args.tag}".replace(",", "_")
    existing = {m["name"]: m for m in finetuned_models(lib)}
    if model_name in existing:
        card, wall, peak = existing[model_name], existing[model_name].get("seconds", 0.0), existing[model_name].get("bench_peak_mb")
    else:
        peak_rss_reset()
        t = time.perf_counter()
        last = [0.0]

        def on_step(p):
            if time.time() - last[0] > 10 or p.step == p.steps:
                last[0] = time.time()
                print(f"  train {p.step}/{p.steps} loss {p.losses[-1]:.3f} eta {p.eta_s or 0:.0f}s", file=sys.stderr)

        card = finetune(lib, kb, model_name, settings,
                        on_step=on_step, on_stage=lambda s: print(f"  stage {s} at {time.perf_counter() - t:.0f}s",
                                                                  file=sys.stderr))
        wall, peak = time.perf_counter() - t, peak_rss_mb()
        card_file = Path(card["path"]) / "wendao_card.json"
        card_file.write_text(json.dumps({**json.loads(card_file.read_text(encoding="utf-8")), "bench_peak_mb": peak},
                                        ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"  fine-tuned in {wall:.0f}s, peak RSS {peak} MB; re-embedding with it", file=sys.stderr)
    reembed(lib, kb, card["path"])
    try:
        after = gold(configs[1:])
    finally:
        reembed(lib, kb, DEFAULT_EMBEDDER)  # cached vectors: instant
    rows = [{"dataset": name, "questions": "gold" if name != "drcd_para" else "paraphrased", "mode": mode,
             "model": label, **{m: summary[mode][m] for m in METRICS}}
            for label, summary in (("base", before), ("fine-tuned", after)) for mode in ("bm25", "dense", "hybrid")
            if mode in summary]
    for kind in ("dense", "hybrid"):
        for label, metrics in (("base", card["before"][kind]), ("fine-tuned", card["after"][kind])):
            rows.append({"dataset": name, "questions": f"held-out pseudo ({card['pairs']['heldout']})", "mode": kind,
                         "model": label, **{m: metrics[m] for m in METRICS}})
    info = {"dataset": name, "docs": len(files), "chunks": chunks, "gold_questions": len(questions),
            "train_pairs": card["pairs"]["train"], "hard_negatives": card["pairs"]["with_hard_negative"],
            "kinds": card["pairs"].get("kinds"), "model": model_name, "mix": card.get("mix"), "dev_mrr": card.get("dev_mrr"),
            "epochs": settings.epochs, "finetune_wall_s": round(wall), "peak_rss_mb": round(peak) if peak else None}
    print(json.dumps(info, ensure_ascii=False), file=sys.stderr)
    lib.close()
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cail,drcd_para,cmrc")
    parser.add_argument("--docs", default="", help="per-dataset document limits, e.g. cail=200,drcd_para=200")
    parser.add_argument("--epochs", type=int, default=None, help="default: FinetuneSettings")
    parser.add_argument("--max-pairs", type=int, default=None, help="default: FinetuneSettings")
    parser.add_argument("--questions", type=int, default=1000, help="at most this many gold questions (seeded sample)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--tag", default="", help="appended to the model's name (a finished model of the same name is reused)")
    parser.add_argument("--set", default="", help="FinetuneSettings overrides, e.g. learning_rate=1e-5,train_layers=0")
    args = parser.parse_args()
    args.docs = {k: int(v) for k, v in (item.split("=") for item in args.docs.split(",") if item)}
    args.settings = {k: json.loads(v) for k, v in (item.split("=") for item in args.set.split(",") if item)}
    import torch

    torch.set_num_threads(args.threads)
    all_rows, infos = [], []
    for name in args.datasets.split(","):
        rows, info = run(name, args)
        all_rows += rows
        infos.append(info)
        print(table(rows, ["dataset", "questions", "mode", "model", *METRICS]), flush=True)
        print(json.dumps(info, ensure_ascii=False), flush=True)
    print("\n## all\n" + table(all_rows, ["dataset", "questions", "mode", "model", *METRICS]))
    print(table(infos))


if __name__ == "__main__":
    main()
