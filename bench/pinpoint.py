"""Pinpointed answers, follow-ups and ambiguity (issue 21), measured without an LLM (optionally with one).

    python bench/pinpoint.py [--n 150] [--sets extractive,followups,ambiguity] [--llm-url URL --llm-n 20]
    python bench/pinpoint.py --cached          # re-run the extractive step on the saved retrieval results

Question sets (seed 21, never the sets bench/answers.py tuned on or reports: every question of its seed-0 sets at
n=150 is excluded, and so are their KBs' CMRC off-KB articles):
  - extractive: `--n` answerable span questions each from CMRC 2018 trial, DRCD dev and CAIL2019 dev. Each KB holds
    the sampled questions' documents plus distractors (documents nobody asks about), see `sample`.
  - follow-ups: two-turn dialogues. DRCD ones are in bench/followups.jsonl (written for this from DRCD dev, CC BY-SA
    3.0; see `followup_set`); CAIL2019 ones are built here at run time from the questions of one judgment (CAIL has no
    licence, so nothing derived from it is committed): the second question loses the names the first one gave
    ("被告张x1每月支付多少生活费？" -> "那他每月支付多少生活费？"). Self-contained second questions name their own
    subject (a question about another document, kept verbatim). Scores: the second answer cites the first turn's
    document (follow-ups) or its own (self-contained); self-contained questions are not rewritten.
  - ambiguity: CAIL2019 questions with their names removed ("被告每月支付多少抚养费？") whose asked-for value
    (amount, date, number) differs between two or more judgments of the KB that the original question was asked
    about; flagged = the answer says "有 N 份文档给出不同答案". False flags: on 100 questions that name their subject
    (extractive questions of all three sets).
Per extractive question: gold answer in the answer, gold inside the marked answer span (`answer_span`), answer length
in characters (the quoted text, label, span line and markers excluded), ms of the extractive step (retrieval
excluded; retrieval is reported beside it). Results are cached under WENDAO_BENCH_DIR so that `--cached` re-runs only
the extractive step (what tuning needs) in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

from common import DATASETS, SHARED, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-bench")
DATASETS = {**DATASETS, "cail2019_dev": SHARED / "data" / "cail2019_dev"}
BENCH = Path(os.environ["WENDAO_BENCH_DIR"])
SEED = 21
# documents per KB: those asked about, plus distractors; DRCD articles over MAX_DRCD_CHARS are left out (ingest time)
KB_DOCS = {"cmrc2018_trial": (110, 40), "drcd_dev": (60, 30), "cail2019_dev": (130, 50)}
MAX_DRCD_CHARS = 3000
SHORT = {"cmrc2018_trial": "cmrc", "drcd_dev": "drcd", "cail2019_dev": "cail"}


def _raw(key: str) -> list[dict]:
    lines = (DATASETS[key] / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def excluded_ids() -> set[str]:
    """Every question id bench/answers.py uses at --n 150 (its tuning and reported sets)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from answers import load_sets

    sets, _ = load_sets(150, 80)
    return {q.id for _, questions in sets.values() for q in questions}


def sample(n: int):
    """{key: (questions, kb document names)} for the extractive sets (see the module docstring)."""
    from services.tuning.evaluation import parse_questions

    skip = excluded_ids()
    rng = random.Random(SEED)
    out = {}
    for key, (asked, distract) in KB_DOCS.items():
        raw = _raw(key)
        questions = parse_questions([json.dumps(r, ensure_ascii=False) for r in raw])
        for q, r in zip(questions, raw):
            q.kind = r.get("answer_type", "span")
        docs = sorted(p.name for p in (DATASETS[key] / "docs").glob("*.txt"))
        if key == "drcd_dev":
            docs = [d for d in docs if len((DATASETS[key] / "docs" / d).read_text(encoding="utf-8")) <= MAX_DRCD_CHARS]
        usable = [q for q in questions if q.kind == "span" and q.answers and q.spans and q.id not in skip]
        by_doc: dict[str, list] = {}
        for q in usable:
            by_doc.setdefault(q.doc_name, []).append(q)
        candidates = [d for d in docs if d in by_doc]
        rng.shuffle(candidates)
        chosen = sorted(candidates[:asked])
        pool = [q for d in chosen for q in by_doc[d]]
        rng.shuffle(pool)
        picked = pool[:n]
        others = [d for d in docs if d not in set(chosen)]
        rng.shuffle(others)
        out[key] = (picked, chosen + sorted(others[:distract]), by_doc)
    return out


def build_kbs(lib, plan) -> dict:
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_paths

    kbs = {}
    for key, (_, names, _) in plan.items():
        kb = lib.kb(f"pinpoint-{SHORT[key]}", create=True)
        have = {d.filename for d in lib.store.list_documents(kb.id) if d.status == "ready"}
        missing = [DATASETS[key] / "docs" / name for name in names if name not in have]
        if missing:
            started = time.perf_counter()
            ingest_paths(lib, kb, missing, ChunkingConfig(),
                         on_file=lambda i, n, r: print(f"\r  ingest {key} {i}/{n}", end="", file=sys.stderr))
            print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        kbs[key] = kb
    return kbs


def _hit_json(h) -> dict:
    return {**h.to_json(), "doc_id": h.chunk.doc_id}


def _hit(d: dict):
    from services.documents.chunking import Chunk
    from services.search.retrieval import Hit

    chunk = Chunk(0, d["start"], d["end"], d["text"], d["pages"][0], d["pages"][1],
                  id=(d.get("chunk_ids") or [0])[0], doc_id=d["doc_id"])
    return Hit(chunk, d["doc"], d["start"], d["end"], d["text"], d["pages"][0], d["pages"][1],
               scores=d.get("scores", {}), chunk_ids=d.get("chunk_ids", []))


def retrieve_all(lib, kbs, plan, cache: Path) -> dict:
    """{question id: {"sources", "refused", "retrieval_ms"}} from the full answer flow (no LLM), cached."""
    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.search.retrieval import Retriever

    rows = json.loads(cache.read_text()) if cache.exists() else {}
    for key, (questions, _, _) in plan.items():
        retriever = Retriever(lib, kbs[key])
        todo = [q for q in questions if q.id not in rows]
        for i, q in enumerate(todo, 1):
            a = answer_question(retriever, LLMSettings(), q.question)
            rows[q.id] = {"sources": [_hit_json(h) for h in a.sources], "refused": not a.sources or a.mode == "refused"
                          and not a.citations, "retrieval_ms": a.timings_ms.get("retrieval.total", 0.0)}
            if i % 50 == 0 or i == len(todo):
                print(f"  retrieve {key} {i}/{len(todo)}", file=sys.stderr)
        if todo:
            cache.write_text(json.dumps(rows, ensure_ascii=False))
    return rows


def gold_in(text: str, answers: list[str]) -> bool:
    from services.answers.answer import contains_gold

    return contains_gold(text, answers)


def old_extractive(query, hits):
    """The extractive step before issue 21 (whole sentences, no span), from --baseline FILE (an old
    services/answers/extractive.py, e.g. `git show 41fa5a8:services/answers/extractive.py > /tmp/old.py`)."""
    from types import SimpleNamespace

    text, picks = OLD.extractive_answer(query, hits)
    return SimpleNamespace(picks=picks, span=None, kind=OLD.answer_type(query), ambiguous=False)


OLD = None


def extractive_rows(plan, retrieved, pinpoint=None) -> list[dict]:
    """Run the extractive step (services.answers.extractive.pinpoint) on each question's cached sources."""
    if pinpoint is None:
        from services.answers.extractive import pinpoint

    rows = []
    for key, (questions, _, _) in plan.items():
        for q in questions:
            r = retrieved[q.id]
            hits = [_hit(h) for h in r["sources"]]
            started = time.perf_counter()
            extract = pinpoint(q.question, hits) if hits else None
            ms = (time.perf_counter() - started) * 1000
            picks = extract.picks if extract else []
            quoted = "".join(p.text for p in picks)
            span = extract.span.text if extract and extract.span else ""
            rows.append({"set": SHORT[key], "id": q.id, "question": q.question, "answers": q.answers,
                         "kind": extract.kind if extract else None, "refused": r["refused"] or not picks,
                         "gold": bool(picks) and not r["refused"] and gold_in(quoted, q.answers),
                         "in_span": bool(span) and not r["refused"] and gold_in(span, q.answers),
                         "typed": bool(extract and extract.span and extract.span.kind),
                         "chars": len(quoted), "ms": ms, "retrieval_ms": r["retrieval_ms"],
                         "ambiguous": bool(extract and extract.ambiguous), "span": span, "quote": quoted,
                         "gold_doc": q.doc_name, "gold_in_sources": any(gold_in(h["text"], q.answers)
                                                                        for h in r["sources"])})
    return rows


def extractive_table(rows: list[dict]) -> list[dict]:
    out = []
    for name in ("cmrc", "drcd", "cail"):
        rs = [r for r in rows if r["set"] == name]
        if not rs:
            continue
        typed = [r for r in rs if r["typed"]]
        out.append({"set": name, "n": len(rs), "gold in answer": sum(r["gold"] for r in rs) / len(rs),
                    "gold in span": sum(r["in_span"] for r in rs) / len(rs),
                    "typed qs": len(typed),
                    "in span (typed)": sum(r["in_span"] for r in typed) / max(1, len(typed)),
                    "median chars": statistics.median(r["chars"] for r in rs),
                    "ms/answer (median)": statistics.median(r["ms"] for r in rs),
                    "ms p90": sorted(r["ms"] for r in rs)[int(0.9 * len(rs))],
                    "retrieval ms (median)": statistics.median(r["retrieval_ms"] for r in rs),
                    "gold in sources": sum(r["gold_in_sources"] for r in rs) / len(rs),
                    "flagged ambiguous": sum(r["ambiguous"] for r in rs)})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=150)
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--dump", help="write the extractive rows (JSONL) here, to read the misses")
    p.add_argument("--baseline", help="an older extractive.py to compare with (see old_extractive)")
    args = p.parse_args()
    from services.index.library import Library

    plan = sample(args.n)
    lib = Library(BENCH / "pinpoint")
    kbs = build_kbs(lib, plan)
    if args.build_only:
        return
    retrieved = retrieve_all(lib, kbs, plan, BENCH / f"pinpoint-retrieved-n{args.n}.json")
    pinpoint_warm = extractive_rows({k: (v[0][:3], v[1], v[2]) for k, v in plan.items()}, retrieved)  # noqa: F841 (warm-up)
    rows = extractive_rows(plan, retrieved)
    if args.dump:
        Path(args.dump).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    print("extractive answers (hybrid retrieval, no LLM)")
    print(table(extractive_table(rows)))
    if args.baseline:
        import importlib.util

        global OLD
        spec = importlib.util.spec_from_file_location("old_extractive", args.baseline)
        OLD = importlib.util.module_from_spec(spec)
        sys.modules["old_extractive"] = OLD
        spec.loader.exec_module(OLD)
        print("\nbefore (--baseline: whole sentences, no marked span)")
        print(table(extractive_table(extractive_rows(plan, retrieved, old_extractive))))


if __name__ == "__main__":
    main()
