"""Pinpointed answers, follow-ups and ambiguity (issue 21), measured without an LLM (optionally with one).

    python bench/pinpoint.py [--n 150] [--dev] [--sets extractive,followups,ambiguity] [--context-modes boost,filter]
                             [--baseline OLD_extractive.py] [--baseline-answer OLD_answer.py]
                             [--llm-url URL --llm-n 20] [--dump PREFIX] [--reader FOLDER]

`--dev` measures the extractive set on the development sample instead (the next `--n` questions of the same
documents, none of them reported; retrieval cached in pinpoint-retrieved-dev-n*.json): tune there, report here.
`--reader FOLDER` (a reader trained by services.tuning.reader, which leaves out every question and document
these sets and bench/answers.py use) measures the extractive set without and with it; without the flag the installed
reader, if any (WENDAO_READER_MODEL / the data dir's models/reader), is used and named in the table's title.
`--baseline` / `--baseline-answer` take the files as they were before issue 21 (e.g.
`git show 41fa5a8:services/answers/extractive.py > /tmp/old_extractive.py`) and print the "before" tables.

Question sets (seed 21; every question bench/answers.py uses at --n 150 — its tuning and reported sets — is excluded):
  - extractive: `--n` answerable span questions each from CMRC 2018 trial, DRCD dev and CAIL2019 dev, drawn from
    110 / 60 / 130 randomly chosen documents. Each KB holds those documents plus 40 / 30 / 50 distractors (DRCD:
    articles of at most 3,000 characters, for ingest time); the CAIL KB also holds the ambiguity set's judgments
    and the issue's judgment (cail2019_dev_0001), see `sample`.
  - follow-ups: two-turn dialogues. DRCD ones are in bench/followups.jsonl (adapted for this from DRCD dev questions,
    CC BY-SA 3.0: the title replaced by 它/他, sometimes with 那 in front); CAIL2019 ones are built at run time
    (`cail_dialogues`: CAIL has no licence, so nothing derived from it is committed): the second question of one
    judgment loses the names ("被告张x1每月支付多少生活费？" -> "那被告每月支付多少生活费？", "他…"), plus the issue's
    own conversation. Self-contained second questions are another document's question, verbatim, that names its
    subject. Scores: the second answer's first citation is from the first turn's document (follow-ups) or its own
    (self-contained); self-contained questions are not rewritten.
  - ambiguity (`ambiguity_set`): CAIL2019 questions asking for an amount, date or number that, with the names removed
    ("被告借了多少贷款？"), are asked of two or more judgments with different answers; flagged = the answer says
    "有 N 份文档给出不同答案". False flags: on 100 extractive questions that name their subject.
Per extractive question: gold answer in the answer, gold inside the marked answer span (`answer_span`), the span
inside a longer gold answer instead (CMRC's gold answers are often whole sentences: 2009年9月27日-10月9日 inside
"第二届比赛于2009年9月27日-10月9日举行。"; counted apart, never as in-span), gold inside the span with the gold's
leading and trailing punctuation ignored (`gold_in_span`: a marked span never ends with 。, so "…约是$10.2亿美金。"
is a miss by the strict count; both counts are printed, for every tree alike), the span's median length, answer length
in characters (the quoted text; label, answer line and markers excluded), wall and CPU ms of the extractive step
(retrieval excluded, reported beside it). Retrieval results are cached under WENDAO_BENCH_DIR
(pinpoint-retrieved-n*.json; delete it after changing retrieval), so re-running the extractive step takes seconds.
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


def sample(n: int, dev: bool = False):
    """{key: (questions, kb document names)} for the extractive sets (see the module docstring).
    `dev`: instead of the reported questions, the next `n` questions of the same documents (none of them
    reported, none used by bench/answers.py): the sample to develop on, over the same KBs."""
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
        picked = pool[n:2 * n] if dev else pool[:n]
        others = [d for d in docs if d not in set(chosen)]
        rng.shuffle(others)
        out[key] = (picked, chosen + sorted(others[:distract]), by_doc)
    extra = sorted({d for item in ambiguity_set() for d in item["docs"]} | {ISSUE_DOC})
    picked, names, by_doc = out["cail2019_dev"]
    out["cail2019_dev"] = (picked, names + [d for d in extra if d not in names], by_doc)
    return out


# --- follow-ups and ambiguity -------------------------------------------------------------------------
ISSUE_DOC = "cail2019_dev_0001.txt"  # the judgment of the issue's conversation (张x6, 800元, 荣昌县城西小学)
ISSUE_DIALOGUE = ("双方约定被告每月支付多少生活费？", "那孩子现在在哪上学？", ["荣昌县城西小学"])
_ROLE = r"(原告|被告人|被告|被害人|申请人|上诉人|第三人)"
# CAIL2019's masked names (张x6, 曹0, 刘1某, 王某甲), as the sets are built: fixed here, so that tuning the app's own
# name patterns (services.answers.answer_types.MASKED_NAME) never changes the questions it is measured on.
MASKED_NAME = re.compile(r"[\u4e00-\u9fff](?:[xX×][0-9]{1,3}|[0-9]{1,3}某?|某[甲乙丙丁戊己庚辛某0-9]?)"
                         r"(?![0-9.元万亿千百年月日号岁%个次人名位天件份米吨斤户间])")


def _strip_names(question: str) -> str:
    """A CAIL question without its masked names: "被告张x1…" -> "被告…", other names -> ""."""
    q = re.sub(_ROLE + MASKED_NAME.pattern, r"\1", question)
    return MASKED_NAME.sub("", q).replace("?", "？").strip()


def _pronoun_question(question: str) -> str:
    """The second question of a CAIL dialogue: names dropped after a role (原告曹0 -> 原告), other
    names replaced by 他 (once), and "那" in front when no pronoun is left ("那原告…")."""
    q = re.sub(_ROLE + MASKED_NAME.pattern, r"\1", question)
    q = MASKED_NAME.sub("他", q, count=1)
    q = MASKED_NAME.sub("", q).replace("?", "？")
    return q if "他" in q else "那" + q


def cail_dialogues(plan, n_follow: int = 30, n_self: int = 15) -> list[dict]:
    """Two-turn CAIL2019 dialogues built at run time (never stored, see the module docstring)."""
    _, names, by_doc = plan["cail2019_dev"]
    rng = random.Random(SEED)
    docs = [d for d in names if len(by_doc.get(d, [])) >= 2 and any(MASKED_NAME.search(q.question) for q in by_doc[d])]
    rng.shuffle(docs)
    texts = {d: (DATASETS["cail2019_dev"] / "docs" / d).read_text(encoding="utf-8") for d in names}
    out = [{"id": "cail-issue", "kind": "follow-up", "source": "cail2019_dev", "doc": ISSUE_DOC,
            "turns": [{"question": ISSUE_DIALOGUE[0]}, {"question": ISSUE_DIALOGUE[1]}], "answers": ISSUE_DIALOGUE[2]}]
    for d in docs[:n_follow - 1]:
        first = next(q for q in by_doc[d] if MASKED_NAME.search(q.question))
        second = next(q for q in by_doc[d] if q is not first)
        out.append({"id": f"cail-f{len(out)}", "kind": "follow-up", "source": "cail2019_dev", "doc": d,
                    "turns": [{"question": first.question}, {"question": _pronoun_question(second.question)}],
                    "answers": second.answers})
    own = []
    for d in docs[n_follow:]:
        for q in by_doc[d]:
            found = [m.group() for m in MASKED_NAME.finditer(q.question)]
            if found and all(sum(f in t for t in texts.values()) == 1 for f in found):
                own.append((d, q))  # a name only this judgment has: the question names its subject
                break
    for i, (d, q) in enumerate(own[:n_self]):
        first_doc = docs[i]
        first = next(x for x in by_doc[first_doc] if MASKED_NAME.search(x.question))
        out.append({"id": f"cail-s{i + 1}", "kind": "self-contained", "source": "cail2019_dev", "doc": d,
                    "turns": [{"question": first.question}, {"question": q.question}], "answers": q.answers})
    return out


def ambiguity_set() -> list[dict]:
    """CAIL2019 questions asking for an amount, number or date whose wording, once the names are
    removed, is the same in two or more judgments with different answers ("被告借了多少贷款？"):
    [{"question", "docs", "answers"}]. Their judgments are added to the CAIL KB."""
    from services.answers.answer_types import answer_type

    groups: dict[str, list[dict]] = {}
    for r in _raw("cail2019_dev"):
        if r["answer_type"] == "span" and answer_type(r["question"]) in ("amount", "number", "date"):
            groups.setdefault(_strip_names(r["question"]), []).append(r)
    out = []
    for q, rs in sorted(groups.items()):
        docs = sorted({Path(r["doc_file"]).name for r in rs})
        if len(docs) >= 2 and len({r["answers"][0] for r in rs}) >= 2 and re.match(r"^(原|被|双方|本案|事故|约定)", q):
            out.append({"question": q, "docs": docs, "answers": [r["answers"] for r in rs]})
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


# leading and trailing punctuation of a gold answer that a marked span never carries (_trim drops it):
# "…大约是$10.2亿美金。" is inside the span "…大约是$10.2亿美金"
_EDGE_PUNCT = " \t\n。．.，,、；;：:！!？?"


def gold_in_span(span: str, answers: list[str]) -> bool:
    """Gold inside the marked span, the gold's leading and trailing punctuation (。，；) ignored; the
    strict comparison (`gold_in`) is reported beside it."""
    return gold_in(span, [g.strip(_EDGE_PUNCT) or g for g in answers])


def old_extractive(query, hits):
    """The extractive step before issue 21 (whole sentences, no span), from --baseline FILE (an old
    services/answers/extractive.py, e.g. `git show 41fa5a8:services/answers/extractive.py > /tmp/old.py`)."""
    from types import SimpleNamespace

    text, picks = OLD.extractive_answer(query, hits)
    return SimpleNamespace(picks=picks, span=None, kind=OLD.answer_type(query), ambiguous=False)


OLD = None


def extractive_rows(plan, retrieved, pinpoint=None, reader=None) -> list[dict]:
    """Run the extractive step (services.answers.extractive.pinpoint) on each question's cached sources;
    `reader`: None — the installed reader (WENDAO_READER_MODEL), False — the heuristics only."""
    if pinpoint is None:
        from functools import partial

        from services.answers.extractive import pinpoint as plain

        pinpoint = partial(plain, reader=reader)

    rows = []
    for key, (questions, _, _) in plan.items():
        for q in questions:
            r = retrieved[q.id]
            hits = [_hit(h) for h in r["sources"]]
            started, cpu = time.perf_counter(), time.process_time()
            extract = pinpoint(q.question, hits) if hits else None
            ms, cpu_ms = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
            picks = extract.picks if extract else []
            quoted = "".join(p.text for p in picks)
            span = extract.span.text if extract and extract.span else ""
            rows.append({"set": SHORT[key], "id": q.id, "question": q.question, "answers": q.answers,
                         "kind": extract.kind if extract else None, "refused": r["refused"] or not picks,
                         "gold": bool(picks) and not r["refused"] and gold_in(quoted, q.answers),
                         "in_span": bool(span) and not r["refused"] and gold_in(span, q.answers),
                         "in_span_punct": bool(span) and not r["refused"] and gold_in_span(span, q.answers),
                         "span_in_gold": bool(span) and not r["refused"] and gold_in(" ".join(q.answers), [span]),
                         "typed": bool(extract and extract.span and extract.span.kind),
                         "chars": len(quoted), "ms": ms, "cpu_ms": cpu_ms, "retrieval_ms": r["retrieval_ms"],
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
                    "in span, gold's edge punct. off": sum(r["in_span_punct"] for r in rs) / len(rs),
                    "span in gold": sum(r["span_in_gold"] and not r["in_span"] for r in rs) / len(rs),
                    "median span chars": statistics.median(len(r["span"]) for r in rs),
                    "typed qs": len(typed),
                    "in span (typed)": sum(r["in_span"] for r in typed) / max(1, len(typed)),
                    "median chars": statistics.median(r["chars"] for r in rs),
                    "ms/answer (median)": statistics.median(r["ms"] for r in rs),
                    "ms p90": sorted(r["ms"] for r in rs)[int(0.9 * len(rs))],
                    "CPU ms (median)": statistics.median(r["cpu_ms"] for r in rs),
                    "retrieval ms (median)": statistics.median(r["retrieval_ms"] for r in rs),
                    "gold in sources": sum(r["gold_in_sources"] for r in rs) / len(rs),
                    "flagged ambiguous": sum(r["ambiguous"] for r in rs)})
    return out


def load_followups(plan) -> list[dict]:
    """bench/followups.jsonl (DRCD) + the CAIL dialogues built at run time."""
    path = Path(__file__).with_name("followups.jsonl")
    stored = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return stored + cail_dialogues(plan)


OLD_ANSWER = None


def run_dialogue(lib, kb, item: dict, llm=None, old: bool = False) -> dict:
    """Answer a two-turn dialogue; the row: the second answer's documents, query, gold."""
    from services.answers import answer as A
    from services.config import LLMSettings
    from services.search.retrieval import Retriever

    llm = llm or LLMSettings()
    retriever = Retriever(lib, kb)
    module = OLD_ANSWER if old else A
    conv = module.Conversation()
    first = module.answer_question(retriever, llm, item["turns"][0]["question"], conv)
    conv.add(first)
    started = time.perf_counter()
    second = module.answer_question(retriever, llm, item["turns"][1]["question"], conv)
    ms = (time.perf_counter() - started) * 1000
    cited = [c.doc for c in second.citations]
    question = item["turns"][1]["question"]
    return {"id": item["id"], "kind": item["kind"], "source": item["source"], "question": question,
            "doc_expected": item["doc"],
            "query": second.query, "rewritten": second.query != question,
            "first_doc": first.citations[0].doc if first.citations else None,
            "doc": cited[0] if cited else None, "right_doc": bool(cited) and cited[0] == item["doc"],
            "only_right_doc": bool(cited) and set(cited) == {item["doc"]},
            "gold": gold_in(second.text, item["answers"]), "mode": second.mode, "ms": ms,
            "supported": [c.supported for c in second.citations],
            "flagged": second.text.startswith("有 ") and "份文档给出不同答案" in second.text[:20]}


def followup_table(rows: list[dict]) -> list[dict]:
    out = []
    for kind in ("follow-up", "self-contained"):
        for source in ("drcd_dev", "cail2019_dev", None):
            rs = [r for r in rows if r["kind"] == kind and (source is None or r["source"] == source)]
            if not rs:
                continue
            first_right = [r for r in rs if r["first_doc"] == r["doc_expected"]] if kind == "follow-up" else rs
            out.append({"dialogues": kind, "set": source or "all", "n": len(rs),
                        "right doc (2nd answer)": sum(r["right_doc"] for r in rs) / len(rs),
                        "right doc when 1st answer was": sum(r["right_doc"] for r in first_right) / max(1, len(first_right)),
                        "only that doc cited": sum(r["only_right_doc"] for r in rs) / len(rs),
                        "gold in 2nd answer": sum(r["gold"] for r in rs) / len(rs),
                        "not rewritten": sum(not r["rewritten"] for r in rs) / len(rs),
                        "refused": sum(r["mode"] == "refused" for r in rs) / len(rs),
                        "ms (median)": statistics.median(r["ms"] for r in rs)})
    return out


def run_ambiguity(lib, kb, plan, llm=None) -> list[dict]:
    """The ambiguity set (flagged rate) and 100 questions that name their subject (false flags)."""
    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.search.retrieval import Retriever

    llm = llm or LLMSettings()
    rows = []
    for item in ambiguity_set():
        a = answer_question(Retriever(lib, kb), llm, item["question"])
        rows.append({"set": "ambiguous", "question": item["question"], "text": a.text,
                     "flagged": "份文档给出不同答案" in a.text[:20],
                     "docs": sorted({c.doc for c in a.citations})})
    rng = random.Random(SEED)
    plain = []
    texts = {}
    for key, (questions, names, _) in plan.items():
        pool = list(questions)
        if key == "cail2019_dev":  # CAIL questions that name their subject: a name only their judgment has
            for d in names:
                texts[d] = (DATASETS[key] / "docs" / d).read_text(encoding="utf-8")
            pool = [q for q in pool if (found := [m.group() for m in MASKED_NAME.finditer(q.question)])
                    and all(sum(f in t for t in texts.values()) == 1 for f in found)]
        rng.shuffle(pool)
        plain.append([(key, q) for q in pool])
    cail = plain[2][:34]  # as many CAIL questions as name their subject (up to 34), the rest from CMRC and DRCD
    rest = 100 - len(cail)
    plain = plain[0][:rest // 2] + plain[1][:rest - rest // 2] + cail
    kbs = {k: v for k, v in KBS.items()}
    for key, q in plain:
        a = answer_question(Retriever(lib, kbs[key]), llm, q.question)
        rows.append({"set": "unambiguous", "question": q.question, "text": a.text,
                     "flagged": "份文档给出不同答案" in a.text[:20], "docs": sorted({c.doc for c in a.citations})})
    return rows


KBS: dict = {}


def _reader_name() -> str:
    from services.answers.reader import reader_folder

    folder = reader_folder()
    return str(folder) if folder else "none (heuristics)"


def run_llm(lib, kbs, plan, args) -> None:
    """Follow-ups (`--llm-n` of each kind, CAIL and DRCD interleaved) and ambiguity (`--llm-n` each)
    with a real LLM: the same context rules for its rewrite and its sources. The answer check before
    answering is off (it is measured in bench/answers.py); each row is printed as it finishes."""
    from services.config import LLMSettings

    llm = LLMSettings(base_url=args.llm_url, api_key="local", model=args.llm_model, timeout=900, max_retries=0,
                      max_tokens=200, temperature=0.0, verify_answerable=False)
    dialogues = load_followups(plan) if "followups" in args.llm_sets else []
    chosen = []
    for kind in ("follow-up", "self-contained"):
        drcd = [d for d in dialogues if d["kind"] == kind and d["source"] == "drcd_dev"]
        cail = [d for d in dialogues if d["kind"] == kind and d["source"] == "cail2019_dev"]
        mixed = [d for pair in zip(cail, drcd) for d in pair]
        chosen += mixed[:args.llm_n]
    rows = []
    for i, d in enumerate(chosen, 1):
        rows.append(run_dialogue(lib, kbs[d["source"]], d, llm))
        print(f"  llm dialogue {i}/{len(chosen)} {json.dumps(rows[-1], ensure_ascii=False)}", file=sys.stderr, flush=True)
    if rows:
        print("\nfollow-ups with the LLM")
        print(table(followup_table(rows)))
    from services.answers.answer import answer_question
    from services.search.retrieval import Retriever

    amb = []
    for item in ambiguity_set()[:args.llm_n] if "ambiguity" in args.llm_sets else []:
        a = answer_question(Retriever(lib, kbs["cail2019_dev"]), llm, item["question"])
        amb.append({"flagged": "份文档给出不同答案" in a.text[:20] + a.notice, "mode": a.mode,
                    "docs": len({c.doc for c in a.citations})})
        print(f"  llm ambiguity {len(amb)} {json.dumps(amb[-1], ensure_ascii=False)} {a.text[:80]!r}", file=sys.stderr, flush=True)
    if not amb:
        return
    print("\nambiguity with the LLM (flagged: the answer or its notice says the documents differ)")
    print(table([{"n": len(amb), "flagged": sum(r["flagged"] for r in amb) / len(amb),
                  "LLM answer cites 2+ documents": sum(r["docs"] >= 2 for r in amb) / len(amb),
                  "fell back to the extract": sum(r["mode"] == "extractive" for r in amb) / len(amb)}]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=150)
    p.add_argument("--dev", action="store_true", help="the development sample: other questions of the same documents "
                                                       "(extractive set only; never the reported ones)")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--dump", help="write the extractive rows (JSONL) here, to read the misses")
    p.add_argument("--baseline", help="an older extractive.py to compare with (see old_extractive)")
    p.add_argument("--baseline-answer", help="an older answer.py: follow-ups answered the old way, for comparison")
    p.add_argument("--sets", default="extractive,followups,ambiguity")
    p.add_argument("--context-modes", default="boost", help="CONTEXT_MODE values to compare: filter,boost")
    p.add_argument("--llm-url", help="also answer with this OpenAI-compatible LLM (follow-ups and ambiguity)")
    p.add_argument("--llm-model", default="local")
    p.add_argument("--llm-n", type=int, default=20, help="questions or dialogues of each kind with the LLM")
    p.add_argument("--llm-sets", default="followups,ambiguity")
    p.add_argument("--reader", help="a trained reader folder (services.tuning.reader): the extractive set is measured "
                                    "without it and with it, the follow-ups and ambiguity sets with it")
    args = p.parse_args()
    if args.reader:
        os.environ["WENDAO_READER_MODEL"] = args.reader
    from services.index.library import Library

    plan = sample(args.n, dev=args.dev)
    if args.dev and args.sets != "extractive":
        p.error("--dev measures the extractive set only (--sets extractive)")
    lib = Library(BENCH / "pinpoint")
    kbs = build_kbs(lib, plan)
    KBS.update(kbs)
    if args.build_only:
        return
    sets = args.sets.split(",")
    if "followups" in sets:
        from services.answers import answer as A

        dialogues = load_followups(plan)
        for mode in args.context_modes.split(","):
            A.CONTEXT_MODE = mode
            rows = [run_dialogue(lib, kbs[d["source"]], d) for d in dialogues]
            if args.dump:
                Path(args.dump + f".followups-{mode}").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
            print(f"\nfollow-ups (no LLM, context mode {mode})")
            print(table(followup_table(rows)))
        A.CONTEXT_MODE = "filter"
        if args.baseline_answer:
            import importlib.util

            global OLD_ANSWER
            spec = importlib.util.spec_from_file_location("old_answer", args.baseline_answer)
            OLD_ANSWER = importlib.util.module_from_spec(spec)
            sys.modules["old_answer"] = OLD_ANSWER
            spec.loader.exec_module(OLD_ANSWER)
            rows = [run_dialogue(lib, kbs[d["source"]], d, old=True) for d in dialogues]
            print("\nfollow-ups before (--baseline-answer: rewrite only, whole KB)")
            print(table(followup_table(rows)))
    if args.llm_url:
        run_llm(lib, kbs, plan, args)
    if "ambiguity" in sets:
        rows = run_ambiguity(lib, kbs["cail2019_dev"], plan)
        if args.dump:
            Path(args.dump + ".ambiguity").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
        amb = [r for r in rows if r["set"] == "ambiguous"]
        plain = [r for r in rows if r["set"] == "unambiguous"]
        print("\nambiguity (no LLM)")
        print(table([{"set": "answer differs across judgments", "n": len(amb), "flagged": sum(r["flagged"] for r in amb) / len(amb)},
                     {"set": "names its subject (CMRC, DRCD, CAIL)", "n": len(plain),
                      "flagged": sum(r["flagged"] for r in plain) / len(plain)}]))
    if "extractive" not in sets:
        return
    retrieved = retrieve_all(lib, kbs, plan, BENCH / f"pinpoint-retrieved{'-dev' if args.dev else ''}-n{args.n}.json")
    extractive_rows({k: (v[0][:3], v[1], v[2]) for k, v in plan.items()}, retrieved)  # warm up (jieba, the tagger)
    if args.reader:
        rows = extractive_rows(plan, retrieved, reader=False)
        print("extractive answers (hybrid retrieval, no LLM), heuristics only (no reader)")
        print(table(extractive_table(rows)))
        if args.dump:
            Path(args.dump + ".heuristic").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    rows = extractive_rows(plan, retrieved)
    if args.dump:
        Path(args.dump).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    print(f"extractive answers (hybrid retrieval, no LLM), reader: {_reader_name()}")
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
