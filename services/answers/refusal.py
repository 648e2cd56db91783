"""Refusal: decide whether the retrieved passages can answer the question at all.

The decision uses signals that exist in every retrieval mode (BM25-only, dense-only, hybrid,
reranked), so a mode without dense scores does not refuse what it found:
  - `sentence`: query-term coverage (terms weighted by length: long terms are specific) of the best
    sentence (or adjacent pair) of the top passages — does one place in the text say it?
  - `pool`: share of the query's key terms found anywhere in the retrieved candidates — a key term
    missing from every candidate (拜占庭 after its only document was deleted) means the knowledge
    base does not talk about it;
  - `subject_missing`: a specific key term (≥ 3 characters) from the first third of the question —
    usually its subject — occurs in no candidate, although other words of the question do (asking
    about 拜占庭帝国的皇帝 when only 元朝 documents mention 帝国 and 皇帝);
  - `bm25`: the top BM25 score per query term (normalised), when BM25 ran;
  - `dense`: the top dense similarity, when dense retrieval ran;
  - `rerank`: a cross-encoder's score, when reranking ran;
  - `answerability`: the answerability check's probability that one of the first passages answers the
    question (services.answers.answerability), where that model is installed, with its threshold;
and, with an LLM, its own structured judgement (`answerable`), applied in services.answers.answer.
Thresholds are calibrated by bench/answers.py on CMRC / DRCD / CAIL2019 (answerable vs. questions
asked against a knowledge base without their document, and CAIL's real unanswerable questions).
"""
from __future__ import annotations

from services.search.retrieval import Hit
from services.documents.text import split_sentences
from services.documents.tokenizer import comparable, query_terms

# Refuse when the best sentence covers less than this share of the query's key terms ...
REFUSE_BELOW_SENTENCE = 0.34
# ... or when fewer than this share of the key terms occur anywhere in the candidates,
REFUSE_BELOW_POOL = 0.5
# unless dense similarity (when present) is at least this high.
ANSWER_ABOVE_DENSE = 0.9
# A missing subject refuses unless one sentence covers at least this share of the key terms.
SUBJECT_SPAN = 0.34
SUBJECT_OVERRULED_ABOVE = 0.75

# Question words carry the question's shape, not its topic; they rarely occur in the answer text.
QUESTION_WORDS = frozenset("哪一年 一年 哪年 哪里 哪儿 哪位 哪家 哪种 哪天 何时 何地 何人 何处 多久 多长 多大 多高 多远 多重 "
                           "几年 几个 几次 几位 几种 何 因何 为何 是不是 有没有 能否 可否 请问 主要 分别 一共 共有 总共 "
                           "哪一 哪一个 哪一位 什么样 怎么样 甚么".split())


def key_terms(query: str) -> list[str]:
    """The query's content terms (question words removed)."""
    return [t for t in query_terms(query) if t not in QUESTION_WORDS]


def coverage(terms: list[str], text: str) -> float:
    """Share of `terms` (weighted by length) found in text."""
    if not terms:
        return 0.0
    haystack = comparable(text)
    total = sum(len(t) for t in terms)
    return sum(len(t) for t in terms if t in haystack) / total


def term_coverage(query: str, text: str) -> float:
    """Share of the query's key terms (weighted by length) found in text."""
    return coverage(key_terms(query), text)


def best_sentence_coverage(terms: list[str], text: str) -> float:
    """Coverage of the best sentence or pair of adjacent sentences of a passage."""
    pieces = [text[a:b] for a, b in split_sentences(text)] or [text]
    best = max(coverage(terms, p) for p in pieces)
    for p1, p2 in zip(pieces, pieces[1:]):
        best = max(best, coverage(terms, p1 + p2))
    return best


def subject_missing(query: str, terms: list[str], pool_text: str) -> bool:
    """Whether a key term of >= 3 characters in the first third of the query occurs in no candidate,
    not even through a shorter term inside it."""
    q = comparable(query)

    def absent(t: str) -> bool:  # neither the term nor any shorter term inside it (法律效力 -> 法律, 效力)
        return t not in pool_text and not any(u != t and u in t and u in pool_text for u in terms)

    return any(len(t) >= 3 and 0 <= q.find(t) <= SUBJECT_SPAN * len(q) and absent(t) for t in terms)


def evidence_strength(query: str, hits: list[Hit], candidates: list[Hit] | None = None) -> dict:
    """Signals the refusal decision is based on (also shown in the UI for transparency)."""
    from services.answers.answerability import assess, load_check

    terms = key_terms(query) or query_terms(query)
    if not hits or not terms:
        return {"sentence": 0.0, "pool": 0.0, "subject_missing": True, "bm25": None, "dense": None, "rerank": None,
                "answerability": None}
    check = load_check()
    top = hits[:3]
    pool = (candidates or []) + hits
    pool_text = comparable("\n".join(h.text for h in pool[:60]))
    bm25 = [h.scores["bm25"] for h in top if "bm25" in h.scores]
    dense = [h.scores["dense"] for h in top if "dense" in h.scores]
    rerank = [h.scores["rerank"] for h in top if "rerank" in h.scores]
    checked = assess(query, [h.text for h in hits], check) if check else None
    return {"sentence": max(best_sentence_coverage(terms, h.text) for h in top),
            "pool": coverage(terms, pool_text),
            "subject_missing": subject_missing(query, terms, pool_text),
            "bm25": max(bm25) / max(1, len(terms)) if bm25 else None,
            "dense": max(dense) if dense else None,
            "rerank": max(rerank) if rerank else None,
            "answerability": checked[0] if checked else None,
            **({"answerability_threshold": checked[1] if checked else check.threshold} if check else {}),
            **({"answerability_reader": True} if checked and checked[2] else {})}


def should_refuse(strength: dict) -> bool:
    """Refuse when no sentence of the top passages covers the query's key terms, most key terms or
    the question's subject are missing from every candidate, unless dense similarity or a reranker
    vouches for the passages.

    A reranker's judgement can only overrule a refusal (sigmoid score >= 0.5, i.e. logit >= 0, means
    "relevant" for bge-rerankers); it was not calibrated here because no reranker ships offline.
    Where the answerability check is installed, a score below its threshold refuses as well
    (measured in bench/answerability.py: see the README).
    """
    if strength.get("answerability") is not None and strength["answerability"] < strength["answerability_threshold"]:
        return True
    weak = strength["sentence"] < REFUSE_BELOW_SENTENCE or strength["pool"] < REFUSE_BELOW_POOL
    if strength.get("subject_missing") and strength["sentence"] < SUBJECT_OVERRULED_ABOVE:
        weak = True
    if weak and strength.get("dense") is not None and strength["dense"] >= ANSWER_ABOVE_DENSE:
        weak = False
    if weak and strength.get("rerank") is not None:
        return strength["rerank"] < 0.5
    return weak


# --- a refusal's closest passages ---------------------------------------------------------------------
def _joined(a: tuple[int, int, str], b: tuple[int, int, str]) -> tuple[int, int, str] | None:
    """Two overlapping spans (start, end, text) of one document as one; None when a text is not its
    span's slice of the document (its length differs), so the two cannot be joined."""
    (sa, ea, ta), (sb, eb, tb) = a, b
    if len(ta) != ea - sa or len(tb) != eb - sb:
        return None
    start, end = min(sa, sb), max(ea, eb)
    text = (tb[:sa - sb] if sb < sa else "") + ta + (tb[ea - sb:] if eb > ea else "")
    return start, end, text


def _distinct(items: list, span, merge) -> list:
    """Ranked passages with those of one document that overlap merged into the better-ranked one
    (`merge(kept, other, joined)`; `joined` None: the other is dropped), rank order kept.
    `span(item)` gives (document, start, end, text)."""
    out: list = []
    for item in items:
        doc, start, end, text = span(item)
        for i, kept in enumerate(out):
            kdoc, kstart, kend, ktext = span(kept)
            if kdoc == doc and start < kend and kstart < end:
                joined = _joined((kstart, kend, ktext), (start, end, text))
                out[i] = merge(kept, item, joined)
                break
        else:
            out.append(item)
    return out if len(out) == len(items) else _distinct(out, span, merge)  # a merged one may now overlap another


def distinct_hits(hits: list[Hit]) -> list[Hit]:
    """A refusal's closest passages without any text twice: sliding-window (and overlapping sentence)
    chunks of one document overlap by design, so [1] (characters 180–475) and [2] (0–300) of one
    judgment become one passage 0–475 in [1]'s place; rank order is kept."""
    from dataclasses import replace

    def merge(kept: Hit, other: Hit, joined) -> Hit:
        if joined is None:
            return kept
        start, end, text = joined
        return replace(kept, start=start, end=end, text=text, page_start=min(kept.page_start, other.page_start),
                       page_end=max(kept.page_end, other.page_end),
                       scores={**other.scores, **{k: max(v, other.scores.get(k, v)) for k, v in kept.scores.items()}},
                       ranks={**other.ranks, **{k: min(v, other.ranks.get(k, v)) for k, v in kept.ranks.items()}},
                       chunk_ids=list(dict.fromkeys(kept.chunk_ids + other.chunk_ids)))

    return _distinct(hits, lambda h: (h.chunk.doc_id or h.doc, h.start, h.end, h.text), merge)


def distinct_passages(sources: list[dict]) -> list[dict]:
    """distinct_hits for an answer's JSON sources (kept turns, the API, the CLI and the export)."""
    def merge(kept: dict, other: dict, joined) -> dict:
        if joined is None:
            return kept
        start, end, text = joined
        pages = [kept.get("pages") or [kept.get("page", 1)] * 2, other.get("pages") or [other.get("page", 1)] * 2]
        first, last = min(p[0] for p in pages), max(p[1] for p in pages)
        ranks, oranks = kept.get("ranks") or {}, other.get("ranks") or {}
        return {**kept, "start": start, "end": end, "text": text, "page": first, "pages": [first, last],
                "ranks": {**oranks, **{k: min(v, oranks.get(k, v)) for k, v in ranks.items()}},
                "chunk_ids": list(dict.fromkeys((kept.get("chunk_ids") or []) + (other.get("chunk_ids") or [])))}

    return _distinct(sources, lambda s: (s.get("doc_id") or s.get("doc", ""), int(s.get("start", 0)),
                                         int(s.get("end", 0)), s.get("text", "")), merge)


def joined_sources(answer: dict) -> list[dict]:
    """An answered turn's sources as 检索详情 lists them: those of one document that overlap shown once, joined
    as a refusal's closest passages are (`distinct_passages`; sentence chunks overlap by design, windows are
    joined by the retriever already) — each {"numbers": [1, 2], "quotes": [(start, end)…]} plus the joined
    source's fields (text between the outermost offsets, the best rank per stage), its citations' quotes
    relative to the joined text, in the order of its first number. The answer's own sources, scores and
    ranks stay as they are (its [n] markers, the API, the CLI)."""
    items = [{**s, "numbers": [n]} for n, s in enumerate(answer.get("sources") or [], start=1)]

    def merged(kept: dict, other: dict, joined) -> dict:
        if joined is None:  # not slices of the document (cannot happen for kept sources): listed apart
            return kept
        return {**distinct_passages([kept, other])[0], "numbers": sorted(kept["numbers"] + other["numbers"])}

    out = [dict(s) for s in _distinct(items, lambda s: (s.get("doc_id") or s.get("doc", ""), int(s.get("start", 0)),
                                                         int(s.get("end", 0)), s.get("text", "")), merged)]
    listed = {n for s in out for n in s["numbers"]}
    out += [s for s in items if s["numbers"][0] not in listed]  # any source a failed join left out
    for s in out:
        s["quotes"] = [(c["start"] - s["start"], c["end"] - s["start"]) for c in answer.get("citations") or []
                       if c.get("n") in s["numbers"] and isinstance(c.get("start"), int) and isinstance(c.get("end"), int)]
    return sorted(out, key=lambda s: s["numbers"][0])
