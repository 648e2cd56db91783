"""Answerability check without a large model (issue 21 item 7): a cross-encoder reads the question
with each of the best retrieved passages and gives the probability that the passage answers it;
the question counts as answerable when the best of them reaches the model's threshold.

The check is used only where its model folder exists: `WENDAO_ANSWERABILITY_MODEL` (a folder), else
`<data dir>/models/answerability`. It is trained by `python -m services.tuning.answerability` from
public question sets (services/tuning/answerability.py; the README says which data and why none of
it ships): a normal sentence-transformers CrossEncoder folder whose `wendao_card.json` holds the
threshold chosen by measurement. It runs in every retrieval mode and needs no LLM and no network.

Where the folder also holds `combiner.json` (trained with it), the cross-encoder's score is one input
of a small calibrated model: a logistic regression over the question's character n-grams (what it
asks: CAIL's unanswerable questions follow recognisable patterns — 判决结果, 是否认罪, 有无前科 — that
the judgment's facts section never states), cheap text signals of the passages (is a clause with the
asked-for value type there, are the question's names and terms there: `signals`) and the
cross-encoder's logit. A few milliseconds on top of the cross-encoder call.

Where an extractive reader is installed as well (services.answers.reader, optional and never shipped)
and the combiner was fitted with that same reader (`Combiner.reader`, keyed by the reader card's name
and creation time), its no-answer score — the best span's start + end logits minus the no-answer
logits, over the first passages (`reader_score`) — is one more input of the combination, with its own
threshold. The answer path then reads the same passages with the reader again to mark the answer,
from its cache. Without the reader (or with another one) the combiner scores exactly as before.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
FOLDER = "answerability"
CARD = "wendao_card.json"
COMBINER = "combiner.json"
TOP = 3  # passages read per question (the answer's first sources)
KINDS = ("date", "title", "country", "place", "person", "amount", "number", "reason")  # answer_types.answer_type
GRAMS = (1, 2, 3)  # character n-grams of the question
_TRAILING = re.compile(r"[?？。.!！\s]+$")
READER_CLIP = 20.0  # the reader's no-answer score is clipped to ±this (no span at all: the floor)


def question_text(question: str) -> str:
    """The question as its n-grams are taken: folded (NFKC, lower-case, simplified), without its final
    punctuation (a half-width ? or a full-width ？ says nothing about the question)."""
    from services.documents.tokenizer import comparable

    return _TRAILING.sub("", comparable(question).strip())


def question_grams(question: str) -> Counter:
    """Counts of the question's character n-grams (GRAMS)."""
    t = question_text(question)
    return Counter(t[i:i + n] for n in GRAMS for i in range(len(t) - n + 1))


def signals(question: str, passages: list[str]) -> dict[str, float]:
    """Cheap text signals of whether the passages hold what the question asks for: its answer type
    (answer_types.answer_type; yes/no), the coverage of its key terms by the best sentence and by all
    passages, its names and terms missing from them, and whether a clause holds a value of the asked
    type (a date for 何时, an amount for 多少钱, a name for 谁) and how well its sentence covers the
    question — the judgment states 身份 / 年龄 / 判决结果 or it does not."""
    from services.answers import answer_types as T
    from services.answers import extractive as X
    from services.answers.refusal import best_sentence_coverage, coverage, key_terms
    from services.documents.text import split_sentences
    from services.documents.tokenizer import comparable, query_terms

    terms = key_terms(question) or query_terms(question)
    kind = T.answer_type(question)
    yesno = T.asks_yes_no(question)
    text = comparable("\n".join(passages))
    out = {f"kind_{k}": float(kind == k) for k in KINDS}
    out["kind_none"] = float(kind is None and not yesno)
    out["yesno"] = float(yesno)
    out["sentence"] = max((best_sentence_coverage(terms, p) for p in passages), default=0.0)
    out["pool"] = coverage(terms, text)
    missing = [t for t in terms if t not in text]
    out["missing"] = float(len(missing))
    out["missing_long"] = float(sum(len(t) >= 2 for t in missing))
    out["names_held"] = float(X.names_held(question, text))
    names = X.question_names(question)
    out["names"] = float(len(names))
    out["names_missing"] = float(sum(n not in text for n in names))
    typed = kind in T.TYPED or kind == "reason"
    best_typed, n_typed = 0.0, 0
    for p in passages:
        for a, b in split_sentences(p):
            cov = coverage(terms, p[a:b])
            for x, y in (X.clause_spans(p, a, b) if typed else []):
                if T.has_type(kind, p[x:y]):
                    n_typed += 1
                    best_typed = max(best_typed, 0.5 * cov + 0.5 * coverage(terms, p[x:y]))
    out["typed_clause"] = best_typed
    out["typed_count"] = math.log1p(n_typed)
    out["typed_absent"] = float(typed and n_typed == 0)
    # what a question copied from the text shares with it: its bigrams and trigrams found in the passages
    # and in their best sentence, its longest run found (answerable questions are mostly written by
    # rephrasing the sentence that answers them; the never-stated ones around it)
    q = question_text(question)
    sentences = [comparable(p[a:b]) for p in passages for a, b in split_sentences(p)]
    for n in (2, 3):
        grams = {q[i:i + n] for i in range(len(q) - n + 1)}
        out[f"gram{n}_pool"] = sum(g in text for g in grams) / max(1, len(grams))
        out[f"gram{n}_sentence"] = max((sum(g in s for g in grams) / max(1, len(grams)) for s in sentences), default=0.0)
    out["longest"] = _longest_found(q, text) / max(1, len(q))
    verbs = T.asked_verbs(question) if yesno else []
    out["verbs_missing"] = sum(v not in text for v in verbs) / max(1, len(verbs))
    out["q_len"] = math.log1p(len(q))
    out["p_len"] = math.log1p(len(text))
    out["terms"] = math.log1p(len(terms))
    return out


def _longest_found(q: str, text: str) -> int:
    """Length of the longest substring of `q` that occurs in `text`."""
    best = 0
    for i in range(len(q)):
        n = best + 1
        while i + n <= len(q) and q[i:i + n] in text:
            best = n
            n += 1
    return best


def logit(p: float) -> float:
    p = min(1 - 1e-6, max(1e-6, p))
    return math.log(p / (1 - p))


def reader_score(question: str, passages: list[str], reader) -> float:
    """The reader's no-answer score of the question over its first passages: its best span's start + end
    logits minus the no-answer (<s>) logits of the same window, the best over the passages, clipped to
    ±READER_CLIP (no span at all: -READER_CLIP). Above 0 the reader prefers an answer to none."""
    spans = reader.read(question, passages[:reader.top])
    best = max((s.score for s in spans), default=-READER_CLIP)
    return max(-READER_CLIP, min(READER_CLIP, best))


@dataclass
class Combiner:
    """The calibrated model over the cross-encoder's score, the question's n-grams and `signals`
    (services.tuning.answerability fits it). `text` is a logistic regression over the question's
    TF-IDF n-grams (sublinear tf, l2-normed: {gram: [idf, weight]}) and the standardised signals
    ({name: [mean, scale, weight]}); the combined logit is a * text + b * logit(check) + c. `reader`, where
    the combiner was fitted with a reader: {"a", "b", "c", "d", "threshold", "reader"} — the combination
    a * text + b * logit(check) + d * reader_score + c used when that reader ("reader": its card's
    `reader_identity`) is installed, and the threshold chosen for it."""
    grams: dict[str, list[float]]
    signals: dict[str, list[float]]
    text_intercept: float
    a: float
    b: float
    c: float
    reader: dict | None = None

    @classmethod
    def from_json(cls, d: dict) -> "Combiner":
        reader = d.get("reader")
        if reader is not None:
            reader = {**{k: float(reader[k]) for k in ("a", "b", "c", "d", "threshold")}, "reader": str(reader["reader"])}
        return cls(d["grams"], d["signals"], float(d["text_intercept"]), float(d["a"]), float(d["b"]), float(d["c"]),
                   reader)

    def to_json(self) -> dict:
        return {"grams": self.grams, "signals": self.signals, "text_intercept": self.text_intercept,
                "a": self.a, "b": self.b, "c": self.c, **({"reader": self.reader} if self.reader else {})}

    def text_logit(self, question: str, passages: list[str]) -> float:
        """The question-and-signals model's logit (higher: answerable)."""
        weighted = {g: (1 + math.log(n)) * self.grams[g][0] for g, n in question_grams(question).items() if g in self.grams}
        norm = math.sqrt(sum(v * v for v in weighted.values())) or 1.0
        z = self.text_intercept + sum(v / norm * self.grams[g][1] for g, v in weighted.items())
        found = signals(question, passages)
        return z + sum((found.get(k, 0.0) - mean) / scale * w for k, (mean, scale, w) in self.signals.items())

    def probability(self, question: str, passages: list[str], check_score: float,
                    reader_score: float | None = None) -> float:
        """The combined probability; with `reader_score` (the reader it was fitted with), the reader's
        combination (compare it with `reader["threshold"]`)."""
        text = self.text_logit(question, passages)
        if reader_score is not None and self.reader:
            r = self.reader
            z = r["a"] * text + r["b"] * logit(check_score) + r["d"] * reader_score + r["c"]
        else:
            z = self.a * text + self.b * logit(check_score) + self.c
        return 1 / (1 + math.exp(-max(-60.0, min(60.0, z))))


@dataclass
class Check:
    path: str
    threshold: float
    top: int = TOP
    combiner: Combiner | None = field(default=None, repr=False)


def check_folder() -> Path | None:
    """Where the check's model is, if it is installed: WENDAO_ANSWERABILITY_MODEL, else the data dir's
    models/answerability (WENDAO_DATA_DIR, default ./data) — only a folder with a model card counts."""
    configured = os.environ.get("WENDAO_ANSWERABILITY_MODEL", "").strip()
    data = Path(os.environ.get("WENDAO_DATA_DIR", "./data"))  # (read only: services.config.data_dir creates it)
    folder = Path(configured).expanduser() if configured else data.expanduser() / "models" / FOLDER
    return folder if (folder / CARD).is_file() else None


_CHECKS: dict[str, Check | None] = {}
_LOCK = threading.Lock()


def load_check() -> Check | None:
    """The installed check (its folder and threshold), or None when there is none or it is unreadable."""
    folder = check_folder()
    if folder is None:
        return None
    key = str(folder.resolve())
    with _LOCK:
        if key not in _CHECKS:
            try:
                card = json.loads((folder / CARD).read_text(encoding="utf-8"))
                combiner = None
                if card.get("combiner"):
                    combiner = Combiner.from_json(json.loads((folder / card["combiner"]).read_text(encoding="utf-8")))
                _CHECKS[key] = Check(key, float(card["threshold"]), int(card.get("top", TOP)), combiner)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable answerability card in %s", folder)
                _CHECKS[key] = None
        return _CHECKS[key]


def answerability(query: str, passages: list[str], check: Check | None = None) -> float | None:
    """Probability that the first passages answer `query` — the cross-encoder's best score, or, where
    the check has a combiner, the combiner's probability from it — or None when no check is installed
    or its model cannot be loaded (refusal then uses its other signals). Compare it with `assess`'s
    threshold: the combiner's reader combination has its own."""
    found = assess(query, passages, check)
    return None if found is None else found[0]


def combiner_reader(check: Check):
    """The installed reader when the check's combiner was fitted with it (services.answers.reader's
    `load_reader`, the same card name and creation time), else None: the combiner then scores without it."""
    if check.combiner is None or not check.combiner.reader:
        return None
    from services.answers.reader import load_reader

    reader = load_reader()
    if reader is None or reader.identity != check.combiner.reader["reader"]:
        return None
    return reader


def assess(query: str, passages: list[str], check: Check | None = None) -> tuple[float, float, bool] | None:
    """(probability that the first passages answer `query`, the threshold it is compared with, whether
    the reader's no-answer score was used), or None when no check is installed or its model cannot be
    loaded (see `answerability`)."""
    from services import errors
    from services.search.rerank import load_reranker

    check = check or load_check()
    if check is None or not passages:
        return None
    try:
        scores = load_reranker(check.path).score(query, passages[:check.top])
    except errors.WendaoError as exc:
        log.warning("answerability check unavailable: %s", exc.message_zh)
        return None
    if check.combiner is None:
        return max(scores), check.threshold, False
    reader = combiner_reader(check)
    read = None
    if reader is not None:
        try:
            read = reader_score(query, passages[:check.top], reader)
        except Exception as exc:  # noqa: BLE001 - a failing optional reader must not break answering
            log.warning("reader unavailable for the answerability check: %s", type(exc).__name__)
    probability = check.combiner.probability(query, passages[:check.top], max(scores), read)
    if read is None:
        return probability, check.threshold, False
    return probability, check.combiner.reader["threshold"], True
