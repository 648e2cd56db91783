"""Answer benchmark: extractive vs LLM answers, citations and refusal on CMRC / DRCD / CAIL2019.

    python bench/answers.py [--n 40] [--modes hybrid,bm25,dense] [--llm-url URL --llm-model NAME]
                            [--out FILE.jsonl] [--summary FILE.jsonl]

Question sets (seed 0, `--n` each): CMRC 2018 trial, DRCD dev and CAIL2019 dev answerable ones
(span answers); CAIL2019 dev's real unanswerable questions (asked against a KB holding their
judgment); and constructed off-KB questions (CMRC questions whose article is not in the KB). Each
dataset's KB holds the sampled questions' documents plus distractors (`--docs`), so ingest stays
within minutes on 2 cores.

Per set and answerer (extractive in each retrieval mode; LLM in hybrid mode, from the same call that
produced the extract shown while it reads): gold answer in answer, citation precision (citations
whose passage supports their sentence; LLM: as written by the model and after repair), share of
answer sentences with a citation, refusals, time to first text (extract) / first token (LLM) and
total time. Refusal precision/recall/F1 pair each answerable set with its unanswerable one (CAIL:
answerable vs. its real unanswerable; CMRC: answerable vs. off-KB). Also reports, in BM25 mode,
answerable questions refused although their passage ranked first, and a sweep of the refusal
thresholds (how services.answers.refusal was calibrated). Every answer is appended to `--out` as it
finishes, so a long LLM run can be summarised while it runs (`--summary`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import DATASETS, SHARED, table

os.environ.setdefault("WENDAO_BENCH_DIR", "/tmp/wendao-bench")
DATASETS = {**DATASETS, "cail2019_dev": SHARED / "data" / "cail2019_dev"}


def load_sets(n: int, docs_per_kb: int):
    """{set name: (dataset, questions)} and {dataset: document paths for its KB}."""
    from services.tuning.evaluation import parse_questions

    rng = random.Random(0)
    sets, kb_docs = {}, {}
    for name, key in (("cmrc", "cmrc2018_trial"), ("drcd", "drcd_dev"), ("cail", "cail2019_dev")):
        root = DATASETS[key]
        lines = (root / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        raw = [json.loads(line) for line in lines if line.strip()]
        questions = parse_questions(lines)
        for q, r in zip(questions, raw):
            q.kind = r.get("answer_type", "span")
        answerable = [q for q in questions if q.kind == "span" and q.answers]
        rng.shuffle(answerable)
        docs = sorted(p.name for p in (root / "docs").glob("*.txt"))
        if name == "cmrc":  # off-KB: questions about articles kept out of the KB
            held_out = set(rng.sample(docs, len(docs) // 4))
            sets["offkb"] = (key, [q for q in answerable if q.doc_name in held_out][:n])
            answerable = [q for q in answerable if q.doc_name not in held_out]
            docs = [d for d in docs if d not in held_out]
        chosen = answerable[:n]
        if name == "cail":
            unanswerable = [q for q in questions if q.kind == "unanswerable"]
            rng.shuffle(unanswerable)
            sets["cail_unanswerable"] = (key, unanswerable[:n])
            chosen_docs = {q.doc_name for q in chosen + unanswerable[:n]}
        else:
            chosen_docs = {q.doc_name for q in chosen}
        sets[name] = (key, chosen)
        distractors = [d for d in docs if d not in chosen_docs]
        rng.shuffle(distractors)
        kb_docs[key] = sorted(chosen_docs) + distractors[: max(0, docs_per_kb - len(chosen_docs))]
    order = ["cmrc", "drcd", "cail", "cail_unanswerable", "offkb"]
    return {k: sets[k] for k in order}, kb_docs


def build_kbs(lib, kb_docs, tag: str):
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_paths

    kbs = {}
    for key, names in kb_docs.items():
        kb = lib.kb(f"answers-{key}-{tag}-v5", create=True)
        have = {d.filename for d in lib.store.list_documents(kb.id)}
        if set(names) - have:  # also completes a KB whose ingest was interrupted
            paths = [DATASETS[key] / "docs" / name for name in names if name not in have]
            ingest_paths(lib, kb, paths, ChunkingConfig(),
                         on_file=lambda i, n, r: print(f"\r  ingest {key} {i}/{n}", end="", file=sys.stderr))
            print(file=sys.stderr)
        kbs[key] = kb
    return kbs


def run_one(A, retriever, llm, q, set_name, mode) -> dict:
    """Answer one question; the row written to the results file."""
    from services.tuning.evaluation import is_relevant

    started = time.perf_counter()
    preview_at, first_at = [None], None
    stream = A.stream_answer(retriever, llm, q.question,
                             on_preview=lambda a, status: preview_at.__setitem__(0, time.perf_counter()))
    for delta in stream:
        if delta.strip() and first_at is None:
            first_at = time.perf_counter()
    total = time.perf_counter() - started
    a = stream.answer
    gold_rank = next((i for i, h in enumerate(a.sources, 1) if is_relevant(h, q)), None)
    row = {"set": set_name, "mode": mode, "id": q.id, "question": q.question, "unanswerable": q.kind == "unanswerable"
           or set_name == "offkb", "gold_rank": gold_rank, "evidence": a.to_json()["evidence"], "total_s": total}
    answers = [("llm", a, (first_at or time.perf_counter()) - started)] if llm.configured else []
    extract = a.extract if a.extract is not None else a
    answers.append(("extractive", extract, (preview_at[0] or first_at or started + total) - started))
    for who, ans, first in answers:
        sentences = [s for s in A.split_answer(ans.text) if s.claim and s.claim not in A.NOT_CLAIMS]
        cited = {c.sentence for c in ans.citations}
        written = [c for c in ans.citations if not c.posthoc]
        row[who] = {"mode": ans.mode, "text": ans.text, "gold": A.contains_gold(ans.text, q.answers),
                    "citations": len(ans.citations), "supported": sum(c.supported for c in ans.citations),
                    "written": len(written), "written_supported": sum(c.supported and not c.corrected for c in written),
                    "corrected": sum(c.corrected for c in ans.citations),
                    "sentences": len(sentences), "cited_sentences": len(cited), "first_s": first,
                    "answerable": ans.answerable if who == "llm" else None,
                    "extract_ms": a.timings_ms.get("extractive")}
    if llm.configured:
        row["llm"]["total_s"] = total
    return row


def markdown(rows: list[dict]) -> str:
    """A Markdown table (floats with 3 decimals), for the README."""
    if not rows:
        return ""
    columns = list(rows[0])
    fmt = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
                     + ["| " + " | ".join(row) + " |" for row in fmt])


def summarize(rows: list[dict], as_markdown: bool = False) -> None:
    """Print the side-by-side tables from result rows (a question answered twice counts once)."""
    table_ = markdown if as_markdown else table
    rows = list({(r["set"], r["id"], r["mode"]): r for r in reversed(rows)}.values())[::-1]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for who in ("extractive", "llm"):
            if who in r:
                groups.setdefault((r["mode"], who, r["set"]), []).append(r)
    out = []
    for (mode, who, set_name), rs in sorted(groups.items()):
        ans = [r[who] for r in rs]
        cits = sum(a["citations"] for a in ans)
        written = sum(a["written"] for a in ans)
        sent = sum(a["sentences"] for a in ans)
        answered = [a for a in ans if a["mode"] != "refused"]
        out.append({"set": set_name, "retrieval": mode, "answerer": who, "n": len(rs),
                    "gold in answer": (sum(a["gold"] for a in ans) / len(ans)) if not rs[0]["unanswerable"] else "-",
                    "refused": sum(a["mode"] == "refused" for a in ans) / len(ans),
                    "cit. prec. (model)": sum(a["written_supported"] for a in ans) / written if who == "llm" and written else "-",
                    "cit. prec.": sum(a["supported"] for a in ans) / cits if cits else "-",
                    "corrected": sum(a["corrected"] for a in ans),
                    "sent. cited": sum(a["cited_sentences"] for a in answered) / max(1, sum(a["sentences"] for a in answered)) if sent else "-",
                    "first text s (median)": statistics.median(a["first_s"] for a in ans),
                    "total s (median)": statistics.median(r.get("total_s", 0) if who == "llm" else r[who]["first_s"]
                                                          for r in rs)})
    print(table_(out))
    pairs = [("cail", "cail_unanswerable"), ("cmrc", "offkb")]
    refusal = []
    for (mode, who) in sorted({(m, w) for m, w, _ in groups}):
        for answerable, unanswerable in pairs + [(None, None)]:
            pool = [r for s in ((answerable, unanswerable) if answerable else ("cail", "cail_unanswerable", "cmrc", "offkb",
                                                                                 "drcd"))
                    for r in groups.get((mode, who, s), [])]
            if not pool:
                continue
            tp = sum(r["unanswerable"] and r[who]["mode"] == "refused" for r in pool)
            fp = sum(not r["unanswerable"] and r[who]["mode"] == "refused" for r in pool)
            fn = sum(r["unanswerable"] and r[who]["mode"] != "refused" for r in pool)
            p, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
            refusal.append({"retrieval": mode, "answerer": who, "pool": f"{answerable} + {unanswerable}" if answerable else "all sets",
                            "n": len(pool), "refusal precision": p, "recall": rec, "F1": 2 * p * rec / max(1e-9, p + rec)})
    print("\nrefusal (positive = unanswerable question refused)")
    print(table_(refusal))
    first_refused = [r for r in rows if r["mode"] == "bm25" and not r["unanswerable"] and r["gold_rank"] == 1
                     and r["extractive"]["mode"] == "refused"]
    firsts = sum(1 for r in rows if r["mode"] == "bm25" and not r["unanswerable"] and r["gold_rank"] == 1)
    if firsts:
        print(f"\nBM25 mode: answerable questions with their passage ranked first that were refused: "
              f"{len(first_refused)} of {firsts}")


def sweep(rows: list[dict]) -> None:
    """Refusal F1 over threshold pairs (extractive signals, hybrid mode, all sets)."""
    from services.answers import refusal as R

    base = [r for r in rows if r["mode"] == "hybrid"]
    if not base:
        return
    out = []
    for s_thr in (0.2, 0.3, 0.34, 0.4, 0.5, 0.6):
        for p_thr in (0.3, 0.5, 0.6, 0.7, 0.8):
            def refuse(e):
                weak = e["sentence"] < s_thr or e["pool"] < p_thr
                return weak and not (e.get("dense") is not None and e["dense"] >= R.ANSWER_ABOVE_DENSE)
            tp = sum(r["unanswerable"] and refuse(r["evidence"]) for r in base)
            fp = sum(not r["unanswerable"] and refuse(r["evidence"]) for r in base)
            fn = sum(r["unanswerable"] and not refuse(r["evidence"]) for r in base)
            p, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
            out.append({"sentence <": s_thr, "pool <": p_thr, "precision": p, "recall": rec,
                        "F1": 2 * p * rec / max(1e-9, p + rec), "answerable refused": fp})
    print("\nrefusal threshold sweep (extractive signals, hybrid, all sets)")
    print(table(out))


def main() -> None:
    from services.answers import answer as A
    from services.config import LLMSettings
    from services.index.library import Library
    from services.search.retrieval import Retriever

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=40, help="questions per set")
    p.add_argument("--docs", type=int, default=80, help="documents per KB (question documents + distractors)")
    p.add_argument("--modes", default="hybrid,bm25,dense", help="retrieval modes for extractive answers")
    p.add_argument("--llm-url")
    p.add_argument("--llm-model", default="local")
    p.add_argument("--llm-max-tokens", type=int, default=200)
    p.add_argument("--llm-sets", default="cmrc,drcd,cail,cail_unanswerable")
    p.add_argument("--llm-limit", type=int, default=0, help="LLM questions per set (default: --n)")
    p.add_argument("--inline", action="store_true", help="LLM without structured output (inline [n] markers)")
    p.add_argument("--shard", default="0/1", help="i/N: answer only every N-th LLM question from the i-th (parallel servers)")
    p.add_argument("--reverse", action="store_true", help="LLM questions in reverse order (a second server from the other end)")
    p.add_argument("--skip", default="", help="results file(s), comma-separated: LLM questions already answered there are skipped")
    p.add_argument("--out", default="")
    p.add_argument("--summary", help="only print the tables of a results file")
    p.add_argument("--markdown", action="store_true", help="with --summary: Markdown tables")
    args = p.parse_args()
    if args.summary:
        rows = [json.loads(line) for f in args.summary.split(",") for line in Path(f).read_text().splitlines()
                if line.strip()]
        summarize(rows, args.markdown)
        if not args.markdown:
            sweep(rows)
        return
    sets, kb_docs = load_sets(args.n, args.docs)
    lib = Library(Path(os.environ["WENDAO_BENCH_DIR"]) / "quality")
    kbs = build_kbs(lib, kb_docs, f"n{args.n}-d{args.docs}")
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    rows = []

    def emit(row):
        rows.append(row)
        if out:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()

    no_llm = LLMSettings()
    for mode in [m for m in args.modes.split(",") if m]:
        for set_name, (key, questions) in sets.items():
            retriever = Retriever(lib, kbs[key], replace(Retriever(lib, kbs[key]).settings, mode=mode))
            for i, q in enumerate(questions, 1):
                emit(run_one(A, retriever, no_llm, q, set_name, mode))
                print(f"\r  {mode} {set_name} {i}/{len(questions)}", end="", file=sys.stderr)
            print(file=sys.stderr)
    if args.llm_url:
        llm = LLMSettings(base_url=args.llm_url, api_key="local", model=args.llm_model, timeout=900, max_retries=0,
                          max_tokens=args.llm_max_tokens, temperature=0.0, structured_output=not args.inline)
        chosen = [s for s in args.llm_sets.split(",") if s in sets]
        queue = [(s, q) for i in range(args.llm_limit or args.n) for s in chosen if i < len(sets[s][1])
                 for q in [sets[s][1][i]]]
        tag = "hybrid+llm-inline" if args.inline else "hybrid+llm"
        shard, shards = (int(x) for x in args.shard.split("/"))
        done = {(r["set"], r["id"], r["mode"]) for f in filter(None, args.skip.split(",")) if Path(f).exists()
                for r in map(json.loads, Path(f).read_text().splitlines())}
        queue = [(s, q) for i, (s, q) in enumerate(queue) if i % shards == shard and (s, q.id, tag) not in done]
        queue = queue[::-1] if args.reverse else queue
        for i, (set_name, q) in enumerate(queue, 1):  # interleaved: a partial run covers every set
            key = sets[set_name][0]
            emit(run_one(A, Retriever(lib, kbs[key]), llm, q, set_name, tag))
            print(f"\r  llm {i}/{len(queue)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    summarize(rows)
    sweep(rows)


if __name__ == "__main__":
    main()
