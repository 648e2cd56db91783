"""Answerability check benchmark (issue 21 item 7): train the check, choose its threshold on dev
documents, report refusal on held-out CAIL2019 judgments, alone and through the real ask path.

    python bench/answerability.py [--cail 1600 --cmrc 400 --drcd 400] [--set layers=6,max_length=192]
                                  [--tag T] [--e2e 300] [--threads 2] [--reuse FOLDER] [--no-combine]
                                  [--reader FOLDER] [--e2e-states off,on,reader]

1. Data and split (services.tuning.answerability, the code `python -m services.tuning.answerability`
   runs): every question set's documents are split by a seeded shuffle into train (65%), dev (15%)
   and held-out (20%); a judgment is in exactly one part, so no held-out judgment (nor any question
   about it) is trained on or chooses anything. Training pairs come from the train documents only:
   CAIL2019's real unanswerable questions (all of those in the train part, then a sample of the
   answerable ones, `--cail` questions in all) and CMRC / DRCD questions with their own passage and
   another document's best BM25 passage (`--cmrc`, `--drcd`).
2. Training: services.tuning.rerank_training.train_cross_encoder from the bundled multilingual-e5-small
   (1 epoch; `--set` overrides RerankSettings, default layers=6, max_length=192 to fit ~25 min on 2 cores).
3. The combiner (default; `--no-combine`: the cross-encoder alone): a logistic regression over the
   question's character n-grams and cheap text signals of its passages
   (services.answers.answerability.signals), fitted on the CAIL training documents' questions, and
   its logit combined with the cross-encoder's by a second logistic regression fitted on the dev
   documents (neither model saw them). `--reuse FOLDER` copies a cross-encoder trained earlier
   instead of training one (the combiner is fitted anew).
   Threshold: the best balanced F1 (answerable and unanswerable weighted alike) of refusing
   unanswerable questions on the CAIL dev documents with at most 8% of their answerable questions
   refused (a margin under the 10% goal).
4. Held-out report: precision / recall / F1 of refusing the unanswerable questions and the share of
   answerable ones refused — all held-out questions, and balanced (as many answerable as unanswerable,
   as issue 21 counts 16 + 16). Scored as the model card says (its document's first `top` BM25 passages).
5. End to end: the held-out judgments ingested into one KB (default chunking, hybrid retrieval, the
   bundled e5), and the balanced held-out questions asked through services.answers.answer.stream_answer
   without an LLM — the path `wendao ask` and the 问答 page run — with the check off
   (WENDAO_ANSWERABILITY_MODEL pointing nowhere) and on (pointing at the trained folder): refused
   unanswerable / answerable, F1, gold answer in the answers given, ms per answer.
6. `--reader FOLDER` (a reader trained with `python -m services.tuning.reader --exclude-answerability-split`,
   so it never read the dev or held-out judgments): the combiner also gets the reader's no-answer score
   (its reader combination, fitted and thresholded on dev; rows `reader_*`), and end to end the state
   `reader` asks with that reader installed (WENDAO_READER_MODEL; it then also marks the answers).
   The reused cross-encoder's and the reader's dev / held-out scores are cached in
   `$WENDAO_BENCH_DIR/scores.json`, so a second run (e.g. the end to end part alone) skips them.

The trained folder (`$WENDAO_BENCH_DIR/models/<name>`, default /tmp/wendao-answerability-bench) is
reused by a later run with the same settings. CAIL2019 has no licence: the model is never shipped.
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

from common import SHARED, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-answerability-bench")
DATA = SHARED / "data"
BENCH = Path(os.environ["WENDAO_BENCH_DIR"])


def train_or_reuse(args, settings) -> tuple[Path, dict]:
    from services.tuning.answerability import train_check

    changed = "".join(f"-{k}{v}" for k, v in sorted(args.settings.items()))
    name = f"check-c{args.cail}-m{args.cmrc}-d{args.drcd}{changed}{args.tag}"
    if args.reuse:
        name = f"{Path(args.reuse).name}-combined{args.tag}"
        if args.reader:
            name += f"-reader-{Path(args.reader).name}"
    elif not args.no_combine:
        name += "-combined"
    out = BENCH / "models" / name
    card_file = out / "wendao_card.json"
    if card_file.is_file():
        print(f"reusing {out}", file=sys.stderr)
        return out, json.loads(card_file.read_text(encoding="utf-8"))
    card = train_check(DATA, out, settings, log=lambda s: print(s, file=sys.stderr, flush=True),
                       reuse=Path(args.reuse) if args.reuse else None, reader=Path(args.reader) if args.reader else None,
                       score_cache=BENCH / "scores.json")
    return out, card


def heldout_items(settings):
    from services.tuning.answerability import Corpus, split_documents

    corpus = Corpus(DATA / "cail2019_dev", "cail2019_dev")
    splits = split_documents(corpus, settings)
    assert not splits["heldout"] & (splits["train"] | splits["dev"]), "a judgment in two parts"
    return corpus, splits


def end_to_end(model: Path, corpus, heldout_docs: set[str], questions, states=("off", "on"),
               reader: Path | None = None) -> list[dict]:
    """Ask the questions through the real answer path, check off, on, and on with `reader` installed
    ("reader"); one row per state."""
    from services.answers import answer as A
    from services.config import LLMSettings
    from services.index.ingest import ingest_paths
    from services.index.library import Library
    from services.search.retrieval import Retriever

    lib = Library(BENCH / "data")
    kb = lib.kb(f"cail-heldout-{len(heldout_docs)}", create=True)
    have = {d.filename for d in lib.store.list_documents(kb.id)}
    missing = sorted(heldout_docs - have)
    if missing:
        ingest_paths(lib, kb, [DATA / "cail2019_dev" / "docs" / d for d in missing],
                     on_file=lambda i, n, r: print(f"\r  ingest {i}/{n}", end="", file=sys.stderr))
        print(file=sys.stderr)
    answers = {}
    for line in (DATA / "cail2019_dev" / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            answers[str(d["id"])] = d.get("answers") or []
    retriever = Retriever(lib, kb)
    rows = []
    nowhere = BENCH / "no-such-model"
    plan = {"off": (nowhere, nowhere), "on": (model, nowhere), "reader": (model, reader or nowhere)}
    for state in states:
        folder, read = plan[state]
        os.environ["WENDAO_ANSWERABILITY_MODEL"] = str(folder)
        os.environ["WENDAO_READER_MODEL"] = str(read)
        A.answer_question(retriever, LLMSettings(), questions[0].question)  # load models
        refused, ms, gold, scores, used = [], [], [], [], []
        for n, item in enumerate(questions, 1):
            t = time.perf_counter()
            a = A.answer_question(retriever, LLMSettings(), item.question)
            ms.append((time.perf_counter() - t) * 1000)
            refused.append(a.mode == "refused")
            scores.append(a.evidence.get("answerability"))
            used.append(bool(a.evidence.get("answerability_reader")))
            if item.answerable and a.mode != "refused" and item.kind == "span":
                gold.append(A.contains_gold(a.text, answers.get(item.id, [])))
            print(f"\r  ask ({state}) {n}/{len(questions)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        rows.append({"check": state, **_refusal_row(refused, [i.answerable for i in questions]),
                     "gold_in_answered": sum(gold) / max(1, len(gold)), "ms_p50": statistics.median(ms),
                     "ms_p90": statistics.quantiles(ms, n=10)[-1], "reader_used": sum(used)})
    lib.close()
    return rows


def _refusal_row(refused: list[bool], answerable: list[bool]) -> dict:
    tp = sum(r and not a for r, a in zip(refused, answerable))
    fp = sum(r and a for r, a in zip(refused, answerable))
    fn = sum(not r and not a for r, a in zip(refused, answerable))
    p = tp / max(1, tp + fp)
    r = tp / max(1, tp + fn)
    return {"n": f"{sum(answerable)}+{len(answerable) - sum(answerable)}", "unanswerable_refused": f"{tp}/{tp + fn}",
            "answerable_refused": f"{fp}/{sum(answerable)}", "precision": p, "recall": r,
            "F1": 2 * p * r / max(1e-9, p + r), "answerable_refused_share": fp / max(1, sum(answerable))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cail", type=int, default=1600, help="CAIL training questions (unanswerable ones first)")
    parser.add_argument("--cmrc", type=int, default=400)
    parser.add_argument("--drcd", type=int, default=400)
    parser.add_argument("--set", default="layers=6,max_length=192", help="RerankSettings overrides")
    parser.add_argument("--tag", default="")
    parser.add_argument("--e2e", type=int, default=400, help="held-out questions asked end to end (balanced; 0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", default="", help="a check folder trained earlier: its cross-encoder, a new combiner")
    parser.add_argument("--no-combine", action="store_true", help="the cross-encoder alone (no combiner)")
    parser.add_argument("--reader", default="", help="a reader trained with --exclude-answerability-split: its "
                                                     "no-answer score as a combiner input")
    parser.add_argument("--e2e-states", default="", help="end to end states (off, on, reader); default off,on "
                                                         "(and reader with --reader)")
    args = parser.parse_args()
    args.settings = {k: json.loads(v) for k, v in (item.split("=") for item in args.set.split(",") if item)}
    import torch

    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from services.tuning.answerability import AnswerabilitySettings, balanced
    from services.tuning.rerank_training import RerankSettings

    settings = AnswerabilitySettings(
        training=replace(RerankSettings(batch_size=16), **args.settings),
        source_questions={"cail2019_dev": args.cail, "cmrc2018_trial": args.cmrc, "drcd_dev": args.drcd},
        combine=not args.no_combine)
    t = time.perf_counter()
    model, card = train_or_reuse(args, settings)
    print(f"model {model}: {card['examples']} examples, trained in {card['train_seconds']} s, "
          f"whole run {card['seconds']} s, threshold {card['threshold']:.4f} (chosen on CAIL dev documents)")
    if card.get("combination"):
        print(f"combination: {card['combination']}")
    if card.get("reader_combination"):
        print(f"with the reader: {card['reader_combination']}")
    rows = [{"part": part, **{k: m[k] for k in ("answerable", "unanswerable", "precision", "recall", "f1",
                                                 "answerable_refused")}, "threshold": m.get("threshold", card["threshold"])}
            for part, m in card["metrics"].items()]
    print("\ncheck alone (question + its judgment's first passages), refusing below the threshold "
          "(check_*: the cross-encoder without the combiner, its own threshold; reader_*: the combiner with the "
          "reader's no-answer score, its own threshold)")
    print(table(rows))
    if args.e2e:
        corpus, splits = heldout_items(settings)
        items = [i for i in corpus.items if i.doc in splits["heldout"]]
        pick = balanced(items, random.Random(settings.seed))
        unanswerable = [i for i in pick if not i.answerable][:args.e2e // 2]
        answerable = [i for i in pick if i.answerable][:args.e2e // 2]
        states = tuple(x for x in args.e2e_states.split(",") if x) or (("off", "on", "reader") if args.reader else ("off", "on"))
        e2e = end_to_end(model, corpus, splits["heldout"], unanswerable + answerable, states,
                         Path(args.reader) if args.reader else None)
        print(f"\nend to end: held-out judgments ({len(splits['heldout'])}) in one KB, hybrid, no LLM, "
              f"services.answers.answer.answer_question (load {os.getloadavg()[0]:.1f})")
        print(table(e2e))
    print(f"\ntotal {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
