"""Citations: parse [n] markers, judge each against its passage, repair mis-numbered ones.

Support is always judged between an answer sentence (the claim) and the passage it cites, never
between a quote and itself. A citation whose passage does not support its sentence is re-attached
to the source that does (`corrected`, the text's marker is rewritten to the right number), or
flagged as unsupported when no source does. Small local models often cite [2] for a fact in [1].
A claim's words are not enough: every number, amount, date and name it states (`claim_values`)
must be in the cited passage too, written any way (800元 / 八百元, ８００, 1,000 / 1000, 5万 / 50000),
else the passage does not support it ("被告每月支付生活费4200元" against a judgment saying 800元
shares every other word). The quote shown is the part of the passage (a sentence, or clauses of a
long unpunctuated one, as court judgments are) that best supports the claim.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from services.answers.answer_types import (CN_BIG, CN_DIGITS, CN_UNITS, MASKED_NAME, UNIT, aligned, numeral_value, pos_tags,
                                          typed_values)
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
                "posthoc": self.posthoc, "corrected": self.corrected, "cited_n": self.cited_n, "doc_id": self.doc_id,
                "sentence": self.sentence}


@dataclass
class Sentence:
    """One answer sentence: its text (markers included), cited numbers and marker spans in the answer."""

    text: str
    numbers: list[int]
    markers: list[tuple[int, int, list[int]]]
    start: int = 0  # where `text` starts in the answer

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
            sentences.append(Sentence(piece, [], own, a))
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
    bigram recall (robust to re-segmentation and light paraphrase). Words only: see `claim_values`."""
    return _Claim(claim).recall(evidence)


class _Claim:
    """A claim's terms and bigrams, computed once for scoring many spans."""

    def __init__(self, claim: str):
        claim = strip_markers(claim)
        self.terms = set(tokenize(claim))
        self.grams = _bigrams(claim)

    def recall(self, evidence: str) -> float:
        haystack = comparable(evidence)
        term_recall = (sum(1 for t in self.terms if t in haystack) / len(self.terms)) if self.terms else 0.0
        gram_recall = len(self.grams & _bigrams(evidence)) / len(self.grams) if self.grams else 0.0
        return max(term_recall, gram_recall)


# --- the values a claim states: numbers, amounts, dates, names -------------------------------
_CN_RUN = "[" + "".join(CN_DIGITS) + "".join(CN_UNITS) + "".join(CN_BIG) + "]+"
_DIGITS = r"[0-9]+(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?"
_NUMERAL = re.compile(rf"(?P<d>{_DIGITS})(?P<big>[万亿千](?![米克瓦]))?|(?P<c>{_CN_RUN})")
_UNIT_AFTER = re.compile(rf"(?:余|多)?(?:{UNIT})")
_LIST_MARK = re.compile(r"^\s*(?:[0-9]{1,2}[.、)）](?![0-9])|[（(][0-9]{1,2}[)）]|[①-⑳])\s*")
_MASK_DIGITS = re.compile(r"(?<=[xX×])[0-9]{2,}")  # 张x62011年: the name 张x6 runs into the year 2011


def _number_text(value: float) -> str:
    return ("%.6f" % value).rstrip("0").rstrip(".")


def _numbers(text: str, strict: bool) -> list[tuple[str, str]]:
    """(number as written, value) of the numerals in comparable `text`. `strict` (a claim): a Chinese
    numeral counts only where it is clearly a number (a multi-character one, 四千二百, or one before a
    unit, 两个): 一直 and 统一 state no number. Otherwise (a passage) every numeral counts, and a
    number with 万/亿 also as written (5万 is 50000 and 5)."""
    out = []
    for m in _NUMERAL.finditer(text):
        if m.group("d"):
            value = float(m.group("d").replace(",", ""))
            if m.group("big"):
                if not strict:
                    out.append((m.group("d"), _number_text(value)))
                value *= {"万": 10 ** 4, "亿": 10 ** 8, "千": 1000}[m.group("big")]
            out.append((m.group(), _number_text(value)))
            continue
        run = m.group("c")
        if strict and len(run) == 1 and (run == "一" or not _UNIT_AFTER.match(text, m.end())):
            continue  # 一个/一种 is an article, 三 alone (三国) no count
        if strict and run in ("万", "亿", "千", "百", "十"):
            continue
        value = numeral_value(run)
        if value is not None:
            out.append((run, _number_text(value)))
    return out


def claim_values(claim: str, asked: str = "") -> list[str]:
    """The values a claim states, as written: its numbers (amounts, dates, counts; list numbering
    "1." and the article 一 of 一个/一种 are none) and names (masked ones as judgments write them,
    张x6 / 曹0 / 王某甲, people's names, 《titles》); a passage that supports the claim states them
    too (`missing_values`). A name the question `asked` states is the user's, not the claim's: an
    answer restating its subject (喬治·居維葉…, where the passage says 他…) is not held to it. Numbers
    always are (被告每月支付4200元吗？ is no source for 4200元)."""
    return list(dict.fromkeys(written for written, _ in _claim_values(claim, asked)))


_PERSON_TAGS = frozenset({"nr", "nrfg", "nrt"})


def _claim_values(claim: str, asked: str = "") -> list[tuple[str, str | None]]:
    """(as written, the number's value or None for a name) of each value of the claim."""
    text = aligned(_LIST_MARK.sub("", strip_markers(claim)))
    names = [m.group() for m in MASKED_NAME.finditer(text) if m.group()[0] != "于"]  # 于16世纪: a preposition
    names += [text[a:b] for a, b, tag in pos_tags(text) if tag in _PERSON_TAGS and b - a >= 2]
    names += [text[a:b] for a, b in typed_values("title", text)]
    rest = text
    for name in names:  # 张x6 is a name, its 6 no number of the claim
        rest = rest.replace(name, " ")
    given = comparable(asked)
    names = [n for n in dict.fromkeys(names) if comparable(n) not in given]
    return [(name, None) for name in names] + _numbers(comparable(rest), strict=True)


def missing_values(claim: str, passage: str, asked: str = "") -> list[str]:
    """The claim's values (`claim_values`) that the passage does not state: a number is found by its
    value however it is written (800元 / 八百元 / ８００元, 1,000 / 1000, 5万 / 50000), a name as written
    (full/half width and traditional characters folded)."""
    return _missing(_claim_values(claim, asked), passage)


def _missing(values: list[tuple[str, str | None]], passage: str) -> list[str]:
    if not values:
        return []
    held = comparable(passage)
    numbers: set[str] = set()
    for cut in (0, 1, 2) if _MASK_DIGITS.search(held) else (0,):  # 张x62011年: the name 张x6 (or 张x62) runs into the year
        split = _MASK_DIGITS.sub(lambda m: m.group()[:cut] + " " + m.group()[cut:], held) if cut else held
        numbers |= {v for _, v in _numbers(split, strict=False)}
    return list(dict.fromkeys(written for written, value in values
                              if (value not in numbers if value is not None else comparable(written) not in held)))


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


QUOTE_CLAUSES_FROM = 100  # a sentence longer than this (a judgment's unpunctuated run) is quoted by clauses
QUOTE_CLAUSES = 3  # ... at most this many consecutive ones
QUOTE_TOLERANCE = 0.05  # ... whose words support the claim within this of the whole sentence


def _clause_runs(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """Runs of up to QUOTE_CLAUSES consecutive clauses of the sentence text[a:b]."""
    from services.answers.extractive import clause_spans  # extractive builds on this module

    clauses, out = clause_spans(text, a, b), []
    for i in range(len(clauses)):
        for j in range(i, min(len(clauses), i + QUOTE_CLAUSES)):
            x, y = quote_bounds(text, clauses[i][0], clauses[j][1])
            if x < y and (x, y) != (a, b):
                out.append((x, y))
    return out


def best_quote(claim: str, hit: Hit, asked: str = "") -> tuple[int, int, float]:
    """The part of a passage that best supports `claim`: (start, end) in document offsets, score.

    The sentence holding most of the claim's words, then of its values (`claim_values`), wins (or two
    adjacent ones that together support it far better); of a long sentence (a judgment's
    unpunctuated run), the shortest run of its clauses holding as many values with words within
    QUOTE_TOLERANCE of it. The score is the quote's word support, 0 when the passage lacks one of
    the claim's values: a number the passage does not state is no support, whatever the words."""
    info, values, text = _Claim(claim), _claim_values(claim, asked), hit.text
    stated = list(dict.fromkeys(written for written, _ in values))

    def rate(a: int, b: int) -> tuple[float, float, int, int]:
        held = 1.0 if not values else (len(stated) - len(_missing(values, text[a:b]))) / len(stated)
        return held, info.recall(text[a:b]), a, b

    scored = [rate(a, b) for a, b in (quote_spans(text) or [(0, len(text))]) if text[a:b].strip()]
    if not scored:
        return hit.start, hit.end, 0.0
    held, score, a, b = max(scored, key=lambda s: (s[1], s[0], s[2]))
    # two adjacent sentences may support together what neither does alone
    for (_, _, a1, _), (_, _, _, b2) in zip(scored, scored[1:]):
        both = rate(a1, b2)
        if both[1] > score + 0.15:
            held, score, a, b = both
    if b - a > QUOTE_CLAUSES_FROM:
        floor = score - QUOTE_TOLERANCE if score - QUOTE_TOLERANCE >= SUPPORT_THRESHOLD or score < SUPPORT_THRESHOLD \
            else SUPPORT_THRESHOLD  # a shorter quote never turns a supported claim unsupported
        runs = [r for r in map(lambda s: rate(*s), _clause_runs(text, a, b)) if r[0] >= held and r[1] >= floor]
        if runs:
            _, score, a, b = min(runs, key=lambda r: (r[3] - r[2], -r[1], r[2]))
    a, b = quote_bounds(text, a, b)
    if _missing(values, text):
        score = 0.0
    return hit.start + a, hit.start + b, score


def map_citations(answer_text: str, sources: list[Hit], page_of=None, posthoc: bool = True,
                  asked: str = "") -> list[Citation]:
    """Citations for every [n], each judged against the claim of its sentence (see repair_citations)."""
    return repair_citations(answer_text, sources, page_of, posthoc, asked)[1]


def repair_citations(answer_text: str, sources: list[Hit], page_of=None,
                     posthoc: bool = True, asked: str = "") -> tuple[str, list[Citation]]:
    """Judge, repair and complete the citations of an LLM answer; returns (text with markers
    rewritten to the repaired numbers, citations).

    A cited source that does not support the sentence is replaced by the best-supporting source
    (marked `corrected`) when one reaches SUPPORT_THRESHOLD, else kept and flagged unsupported.
    Numbers with no source ([9] of 3) are repaired the same way or dropped. With `posthoc`, uncited
    sentences get the best-supporting source when it supports them. `asked`: the question (and the
    query searched with); the names it states are not required of a passage (`claim_values`).
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
            scores = scores or [best_quote(claim, hit, asked) for hit in sources]
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


UNVERIFIED_MARK = "（未核实）"
_SENTENCE_END = "。！？!?；;…．.\n "


def mark_unverified(text: str, citations: list[Citation]) -> str:
    """An LLM answer with UNVERIFIED_MARK after each claim no supported citation backs (before the
    sentence's closing mark: "…4200元（未核实）。[1]"), so every surface (chat, CLI, API, export) says
    which sentences the sources do not confirm. `citations` are those of `repair_citations(text)`."""
    backed = {c.sentence for c in citations if c.supported}
    out, pos = [], 0
    for index, sentence in enumerate(split_answer(text)):
        claim = sentence.claim
        if index in backed or len(claim) < 4 or claim in NOT_CLAIMS or claim.endswith(("：", ":")):
            continue
        end = sentence.start + len(sentence.text.rstrip())
        while end > sentence.start and text[end - 1] in _SENTENCE_END:
            end -= 1
        out.append(text[pos:end] + UNVERIFIED_MARK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def source_claims(answer: dict, n: int) -> list[dict]:
    """The claims citing source n of an answer's JSON, one per citation (citations are per claim), in
    answer order: {"claim", "quote", "supported"}. An LLM answer's claim is its citing sentence
    (`sentence`) without markers or UNVERIFIED_MARK; an extract's is the quote itself (its `sentence`
    counts quotes). What a chip counts ("1 处未核实") and its dialog lists, so one unsupported claim
    never reads as if the whole source were unverified."""
    citations = answer.get("citations") or []
    sentences = split_answer(answer.get("answer", "")) if answer.get("mode") == "llm" else []
    out = []
    for c in citations:
        if c.get("n") != n:
            continue
        i = c.get("sentence", -1)
        claim = sentences[i].claim.replace(UNVERIFIED_MARK, "") if isinstance(i, int) and 0 <= i < len(sentences) else ""
        out.append({"claim": claim or c.get("quote", ""), "quote": c.get("quote", ""), "supported": bool(c.get("supported", True))})
    return out


def _rewrite_markers(text: str, renumber: dict[int, dict[int, int | None]]) -> str:
    """The answer with each marker's numbers mapped (duplicates and dropped numbers removed).

    A number is a duplicate only within one run of adjacent markers ("[3][1]" with 3 repaired to 1
    gives "[1]"): the same [n] after two claims of one sentence ("…离婚[1]，…800元[1]。") is kept,
    so every marker the model wrote stays in the shown text."""
    out, pos, seen, last_end = [], 0, set(), -1
    for start, end, numbers in parse_markers(text):
        mapping = renumber.get(start)
        if mapping is None:
            continue
        if text[last_end:start].strip() or last_end < 0:
            seen = set()  # text between: a new run of markers
        last_end = end
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
