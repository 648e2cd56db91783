"""Citations: parse [n] markers, judge each against its passage, repair mis-numbered ones.

Support is always judged between an answer sentence (the claim) and the passage it cites, never
between a quote and itself. A citation whose passage does not support its sentence is re-attached
to the source that does (`corrected`, the text's marker is rewritten to the right number), or
flagged as unsupported when no source does. Small local models often cite [2] for a fact in [1].
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from services.search.retrieval import Hit
from services.documents.text import normalize, split_sentences
from services.documents.tokenizer import comparable, tokenize

SUPPORT_THRESHOLD = 0.5
# Texts that are not claims (labels and refusals) and are never cited.
NOT_CLAIMS = {"文档中没有找到这个问题的答案。", "以下内容摘自文档："}

_MARKER = re.compile(r"[\[【［]\s*([0-9０-９]+(?:\s*[,，、;；]\s*[0-9０-９]+)*)\s*[\]】］]")


@dataclass
class Citation:
    n: int  # the source number (after repair)
    doc: str
    page: int
    start: int  # quote offsets in the document text
    end: int
    quote: str
    supported: bool
    support: float
    sentence: int  # index of the citing answer sentence
    chunk_id: int | None = None
    posthoc: bool = False  # added by matching, not written by the model
    corrected: bool = False  # the model cited another number; re-attached to the supporting source
    cited_n: int | None = None  # the number the model wrote, when corrected
    doc_id: str = ""  # the cited document's id (what a follow-up question is about)

    def to_json(self) -> dict:
        return {"n": self.n, "doc": self.doc, "page": self.page, "start": self.start, "end": self.end,
                "quote": self.quote, "supported": self.supported, "support": round(self.support, 3),
                "posthoc": self.posthoc, "corrected": self.corrected, "cited_n": self.cited_n, "doc_id": self.doc_id}


@dataclass
class Sentence:
    """One answer sentence: its text (markers included), cited numbers and marker spans in the answer."""

    text: str
    numbers: list[int]
    markers: list[tuple[int, int, list[int]]]

    @property
    def claim(self) -> str:
        return strip_markers(self.text).strip()


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """Citation markers as (start, end, numbers): [1], [1,2], [1][2], 【1】, ［1］."""
    out = []
    for m in _MARKER.finditer(text):
        numbers = [int(normalize(x)) for x in re.split(r"[,，、;；]", m.group(1))]
        out.append((m.start(), m.end(), numbers))
    return out


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text)


def split_answer(text: str) -> list[Sentence]:
    """Answer split into sentences with their markers; markers that open a sentence (written after
    the previous sentence's 。) belong to the previous one."""
    sentences: list[Sentence] = []
    markers = parse_markers(text)
    for a, b in split_sentences(text):
        lead = re.match(r"^(\s*(?:" + _MARKER.pattern + r")\s*)+", text[a:b])
        own = [m for m in markers if a <= m[0] < b]
        if lead and sentences:
            moved = [m for m in own if m[0] < a + lead.end()]
            sentences[-1].markers.extend(moved)
            own = [m for m in own if m[0] >= a + lead.end()]
            a += lead.end()
        piece = text[a:b]
        if strip_markers(piece).strip():
            sentences.append(Sentence(piece, [], own))
        elif sentences:
            sentences[-1].markers.extend(own)
    for s in sentences:
        s.numbers = list(dict.fromkeys(n for _, _, ns in s.markers for n in ns))
    return sentences


def answer_sentences(text: str) -> list[tuple[str, list[int]]]:
    """(sentence, cited numbers) pairs; see split_answer."""
    return [(s.text, s.numbers) for s in split_answer(text)]


def _bigrams(text: str) -> set[str]:
    t = re.sub(r"\W+", "", comparable(text))
    return {t[i:i + 2] for i in range(len(t) - 1)} or ({t} if t else set())


def support_score(claim: str, evidence: str) -> float:
    """How much of the claim is found in the evidence: max of jieba-term recall and character-
    bigram recall (robust to re-segmentation and light paraphrase)."""
    claim = strip_markers(claim)
    terms = set(tokenize(claim))
    haystack = comparable(evidence)
    term_recall = (sum(1 for t in terms if t in haystack) / len(terms)) if terms else 0.0
    grams = _bigrams(claim)
    gram_recall = len(grams & _bigrams(evidence)) / len(grams) if grams else 0.0
    return max(term_recall, gram_recall)


# A quote never opens with these (a span that does continues the sentence before it, as after
# "……" or "？”", or is the tail of a sentence cut at the passage start) nor ends with a pause mark
# (a sentence cut at the passage end).
_NO_OPEN = "，、；：,;:。！？!?…）)」』”’》〉】］]"
_NO_CLOSE = "，、,"


def quote_bounds(text: str, a: int, b: int) -> tuple[int, int]:
    """[a, b) of `text` narrowed to start and end where a sentence can: surrounding whitespace,
    leading punctuation that cannot open a sentence ("，各种…") and a trailing comma dropped."""
    while a < b and (text[a].isspace() or text[a] in _NO_OPEN):
        a += 1
    while b > a and (text[b - 1].isspace() or text[b - 1] in _NO_CLOSE):
        b -= 1
    return a, b


def quote_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of a passage as quotable [start, end) spans: a piece that opens with a comma
    or a closing mark is joined to the sentence before it ("他问“为什么？”，大家都笑了。" is one
    quote, not "，大家都笑了。"), and every span is narrowed by `quote_bounds`; empty ones dropped."""
    spans: list[tuple[int, int]] = []
    for a, b in split_sentences(text):
        head = text[a:b].lstrip()
        if spans and head[:1] in _NO_OPEN and head:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [(a, b) for a, b in (quote_bounds(text, a, b) for a, b in spans) if a < b]


def best_quote(claim: str, hit: Hit) -> tuple[int, int, float]:
    """The sentence(s) of a passage that best support `claim`: (start, end) in document offsets, score."""
    spans = quote_spans(hit.text) or [(0, len(hit.text))]
    scored = [(support_score(claim, hit.text[a:b]), a, b) for a, b in spans if hit.text[a:b].strip()]
    if not scored:
        return hit.start, hit.end, 0.0
    score, a, b = max(scored)
    # two adjacent sentences may support together what neither does alone
    for (_, a1, _), (_, _, b2) in zip(scored, scored[1:]):
        both = support_score(claim, hit.text[a1:b2])
        if both > score + 0.15:
            score, a, b = both, a1, b2
    a, b = quote_bounds(hit.text, a, b)
    return hit.start + a, hit.start + b, score


def map_citations(answer_text: str, sources: list[Hit], page_of=None, posthoc: bool = True) -> list[Citation]:
    """Citations for every [n], each judged against the claim of its sentence (see repair_citations)."""
    return repair_citations(answer_text, sources, page_of, posthoc)[1]


def repair_citations(answer_text: str, sources: list[Hit], page_of=None,
                     posthoc: bool = True) -> tuple[str, list[Citation]]:
    """Judge, repair and complete the citations of an LLM answer; returns (text with markers
    rewritten to the repaired numbers, citations).

    A cited source that does not support the sentence is replaced by the best-supporting source
    (marked `corrected`) when one reaches SUPPORT_THRESHOLD, else kept and flagged unsupported.
    Numbers with no source ([9] of 3) are repaired the same way or dropped. With `posthoc`, uncited
    sentences get the best-supporting source when it supports them.
    """
    citations: list[Citation] = []
    renumber: dict[int, dict[int, int | None]] = {}  # marker start -> {old: new or None (drop)}
    for index, sentence in enumerate(split_answer(answer_text)):
        claim = sentence.claim
        if not claim or claim in NOT_CLAIMS or not sources:
            continue
        scores: list[tuple[int, int, float]] | None = None

        def quotes():
            nonlocal scores
            scores = scores or [best_quote(claim, hit) for hit in sources]
            return scores

        chosen: dict[int, tuple[int, bool, bool, int | None]] = {}  # n -> (n, corrected, posthoc, cited)
        mapping: dict[int, int | None] = {}
        for n in sentence.numbers:
            valid = 1 <= n <= len(sources)
            if valid and quotes()[n - 1][2] >= SUPPORT_THRESHOLD:
                mapping[n] = n
                chosen.setdefault(n, (n, False, False, None))
                continue
            best = max(range(len(sources)), key=lambda i: quotes()[i][2]) + 1
            if quotes()[best - 1][2] >= SUPPORT_THRESHOLD:
                mapping[n] = best
                if best not in chosen:
                    chosen[best] = (best, best != n, False, n if best != n else None)
            elif valid:
                mapping[n] = n
                chosen.setdefault(n, (n, False, False, None))
            else:
                mapping[n] = None
        if not sentence.numbers and posthoc and len(claim) >= 4:
            best = max(range(len(sources)), key=lambda i: quotes()[i][2]) + 1
            if quotes()[best - 1][2] >= SUPPORT_THRESHOLD:
                chosen[best] = (best, False, True, None)
        for start, _, _ in sentence.markers:
            renumber[start] = mapping
        for n, corrected, added, cited in chosen.values():
            hit = sources[n - 1]
            start, end, score = quotes()[n - 1]
            page = page_of(hit, start) if page_of else hit.page_start
            citations.append(Citation(n, hit.doc, page, start, end, _quote_text(hit, start, end),
                                      score >= SUPPORT_THRESHOLD, score, index,
                                      hit.chunk_ids[0] if hit.chunk_ids else None, added, corrected, cited,
                                      getattr(hit.chunk, "doc_id", "") or ""))
    return _rewrite_markers(answer_text, renumber), citations


def _rewrite_markers(text: str, renumber: dict[int, dict[int, int | None]]) -> str:
    """The answer with each marker's numbers mapped (duplicates and dropped numbers removed)."""
    out, pos, seen_in_sentence = [], 0, {}
    for start, end, numbers in parse_markers(text):
        mapping = renumber.get(start)
        if mapping is None:
            continue
        key = id(mapping)
        seen = seen_in_sentence.setdefault(key, set())
        new = [mapping.get(n, n) for n in numbers]
        new = [n for n in dict.fromkeys(new) if n is not None and n not in seen]
        seen.update(new)
        if new == numbers:
            continue
        out.append(text[pos:start])
        out.append("".join(f"[{n}]" for n in new))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _quote_text(hit: Hit, start: int, end: int) -> str:
    return hit.text[start - hit.start:end - hit.start]
