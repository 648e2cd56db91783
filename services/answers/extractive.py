"""Extractive answers (no LLM): the sentence or clause(s) of the top passages that answer the question,
with the answer itself marked.

Units. A passage is cut into sentences (services.answers.citations.quote_spans); a sentence longer than
CLAUSE_FROM characters — court judgments often have no 。 at all, so "the sentence" would be a whole
chunk — is cut further into clauses at ，；： (not inside numbers or brackets), keeping exact document
offsets. Clauses shorter than MIN_CLAUSE join the next one ("经审理查明："). Units of one document that overlap
(the windows of a sliding chunker) are read once, from the passage whose window did not cut them (`_unit_owners`),
and a passage opening on a formula's tail (-SO3H等…) starts after it (`_FORMULA_TAIL`).

Scoring. A unit scores by the query terms it contains, each weighted by length x local IDF (terms found
in few candidate units are the specific ones), plus character-bigram overlap with the question, a small
prior for the passage's rank, a bonus when it holds a value of the asked-for type (services.answers.answer_types:
number, amount, date, title, country; less for person and place, whose patterns are looser), and a
share of the query terms named just before it (the previous sentence, or for a clause the earlier
clauses of its sentence: the subject is often there). When the question opens with a subject its passages name
verbatim (斯氏腔吻鳕主要以什么为食？, `_named_subject`), every unit of a passage naming it gets SUBJECT_CONTEXT of
the subject's weight and its bigrams: an article's units need not repeat their subject ("几乎是以多毛类为食").
For a number question asking in a unit (多少公分, 体长, 血量, 多少比例), only units holding a value in that unit
count as holding the asked-for type; for a date question naming its event (建于, 逝世: `_event_verbs`), only units
holding a date and the event, if any do. A unit holding a word the text uses for a question term (卒 for 逝世,
生于 for 出生, 尖刀 for 凶器, 之母 for 母亲: `_ALIASES`) covers that term. Units that only restate the question are
discounted and followed by the next one; a consequence ("因此，…") brings its cause.

Pinpointing. For a question asking for a number, amount, date, title or country, a unit holding such a
value wins when it scores at least TYPED_RATIO of the best (a person or place: LOOSE_TYPED_RATIO); for a why-question (`asks_why`) a unit stating a
cause of what it asks about (`answer_types.cause_spans`, `_cause_of_the_asked`) does, and the cause is marked. The best unit is extended by one unit to
either side when it names the subject but not the asked-for type and the neighbour holds it (射击断续器
in one sentence, 荷兰 in the next), and a clause too short to read alone takes its neighbour. For a "X的Y是？"
question (`_asked_attribute`: 投资人, 权利范围) a unit stating Y (Y是/为/有/：…) wins over a best unit that does not
when it scores ATTRIBUTE_RATIO of it; its clause is the span, and a value right after the statement. For a "X代表什么？"
question (`answer_types.asked_meaning`: X表示 / 是指 / 指的是什么, X是什么意思) a unit saying what X stands for
(`answer_types.meaning_spans`: 其中𝑄代表放出或吸收的热量; the question's Q and the text's 𝑄 meet folded) gets TYPE_BONUS and wins
the same way, with the unit before it when that names more of the question (its heading); the words after 代表 to the
clause's end are the span (MEANING_KIND: shown as an answer line), and further units must name X. Further
units are added only when they score at least FOLLOW_RATIO of the best and answer the question
themselves, up to MAX_CHARS (CLAUSE_MAX_CHARS when the best unit is a clause). Adjacent units are quoted
as one continuous piece of the document; in unpunctuated judgments a quote's tail and the marked span stop before words
opening the next clause (…800元|因此, …房屋一套|本案在审理过程中: `_NEXT_CLAUSE`). Inside the quote the answer span is marked: the value of the
asked-for type whose clause holds most of the question's words (not a value the question itself names, nor
a name made only of its characters: 国立大学; a value in the asked unit or of the asked kind of place —
哪一所大学 — first; for who someone lives with or is raised by — 跟谁生活, 由谁抚养 — the carer of a clause stating
the arrangement, a role such as 原告 included, the one that holds now — 一直随原告生活至今 — first, or the one of the
frame the question names — 离婚协议约定…由谁抚养 —, never one a party asks for — 请求变更…由原告抚养; for 由谁 V the agent
right after 由 before V — 由泰国国家铁路局捐献; for 什么时期 a period's name — 战国时代; for a date question's event the
date right before its verb — 于2012年2月10日出生 —, 离婚后 being no telling of 离婚), a list of names as a whole (方某、黄某2、张某、方某1; for 哪些 the whole enumeration), or
for other questions the best clause — with the clauses beside it that follow the same frame when it is one
of a run dividing things up (房屋归男方所有，存款归女方所有: `_parallel_run`), whose units are then quoted too.

Reader. Where a trained reader is installed (services.answers.reader, WENDAO_READER_MODEL or the data
dir's models/reader) it reads the question with the first passages; when its best span scores at
least the model's threshold, the units holding that span are the best units (their neighbours and
further units are added as above) and the span itself is the marked answer, clipped to the quoted
units, with its exact document offsets. Below that threshold the heuristics choose the quote, and the
reader's best span inside it is marked when it reaches the model's `inside_threshold`. Without a
reader, or below both, the heuristics above mark the answer.

Ambiguity. When strong units of different documents (within AMBIGUITY_PASSAGES passages, plus the best
passage of each other document among the first AMBIGUITY_DEPTH retrieval candidates — `ambiguity_passages`,
read for this only: the top passages are often windows of one or two judgments — scoring at least
AMBIGUITY_RATIO of the best, their quote supported) hold different values of the asked-for type, the
extract says so ("有 2 份文档给出不同答案：…", each with its citation, at most AMBIGUITY_SHOWN others)
instead of picking one. Values are compared written one way (5万元 = 50000元 = 伍万元, 2015年07月03日 =
2015年7月3日; 800元 is not part of 1800元); a number or amount counts only in the chosen answer's unit
(15% is no answer to 36个月; durations are one unit). Both documents must be about what the question
names: the names it gives (原告周0; the parties' roles are no names) and all but a third of the terms of
its opening noun phrase (蓍, 天瑞公司). When the best unit's document lacks them and a strong unit of the
answer's own passages whose document holds them has a value of the asked-for type, the answer comes from
that one (`_named_instead`: "徐0每月需要支付多少生活费？" from the judgment naming 徐0). A yes/no question's
span is the asked verb's phrase with its negation (`_verb_phrase`: 「原告未再婚」), and documents whose phrases
disagree (`negated`: 未再婚 vs 现已再婚) are reported the same way.

Support is judged against the question, never against the quote itself (`check_picks`): the key-term
coverage a quoted passage reaches, and for a number/amount/date/title/country question only when it
holds such a value. Without the reader no embeddings, a few ms per answer. Measured by bench/pinpoint.py (README).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from services.answers.answer_types import (DOTTED_NAME, MASKED_NAME, NAMED_AS_WHAT, NUM, SHARE_Q, TYPED, UNIT, aligned,
                                          agent_spans, answer_type, asked_agent, asks_period, period_spans, asked_meaning, asked_verbs, asks_carer, carer_spans, cause_spans,
                                          entity_spans, has_type, meaning_spans, merge_spans, pos_tags,
                                          numeral_value, typed_values)
from services.answers.citations import quote_bounds, quote_spans
from services.answers.refusal import key_terms
from services.documents.tokenizer import comparable, query_terms
from services.search.retrieval import Hit

EXTRACTIVE_LABEL = "以下内容摘自文档："
AMBIGUOUS_TEMPLATE = "有 {n} 份文档给出不同答案："
# A picked unit "answers" the question when it covers this share of the key terms (length-weighted).
ANSWERS_THRESHOLD = 0.4
CONTEXT_WEIGHT = 0.25  # weight of the query terms named by the preceding unit
CLAUSE_CONTEXT_WEIGHT = 0.5  # ... by the earlier clauses of a clause's sentence
FOLLOW_RATIO = 0.6  # a further unit scores at least this share of the best one
TYPE_BONUS = 0.15
VERB_BONUS = 0.15  # a yes/no question: a unit holding the verb it asks about (再婚 of 原告再婚了吗？)
TYPED_RATIO = 0.5  # for a strictly typed question, a unit with a value wins if it scores this share of the best
LOOSE_TYPED_RATIO = 0.7  # ... for a person or place question (names and places are found less reliably: 葛家菜窖内)
LOOSE_TYPE_BONUS = 0.05  # person and place values are found less reliably
CLAUSE_FROM = 100  # sentences longer than this (characters) are cut into clauses
MIN_CLAUSE = 8  # a shorter clause joins the next one
SHORT_QUOTE = 16  # a quote shorter than this takes its neighbouring clause, to be readable
SPAN_BEST_BONUS = 0.2  # a value in the best unit is preferred by this much (see _locate)
SPAN_WHOLE = 30  # a unit this short is marked whole for an untyped question ...
SPAN_SENTENCE = 60  # ... and one up to this long unless a clause of it only introduces a topic (关于财产，…)
SPAN_SIDE_WEIGHT = 0.5  # an untyped question's clause: weight of the question words beside it ...
SPAN_NOVELTY_FLOOR = 0.3  # ... and the floor of its share of new words (see _best_clause)
MAX_CHARS = 240  # quoted characters at most (the best unit always counts)
CLAUSE_MAX_CHARS = 120  # ... when the best unit is a clause of a long sentence (unpunctuated text)
# Ambiguity: another document's best unit scores at least this share of the best and covers the key terms.
AMBIGUITY_RATIO = 0.7
AMBIGUITY_SUPPORT = ANSWERS_THRESHOLD  # ... and its quote would be a supported citation
AMBIGUITY_PASSAGES = 6  # passages searched for other documents' answers
AMBIGUITY_DEPTH = 20  # ... and the best passage of each other document among this many retrieval candidates
AMBIGUITY_DOCUMENTS = 8  # ... at most this many documents
AMBIGUITY_SHOWN = 3  # other documents' answers listed at most (best first)
# Types whose values the patterns find reliably: a unit without one does not answer such a question.
STRICT_TYPES = frozenset({"number", "amount", "date", "title", "country"})
REASON_KIND = "reason"  # a why-question (为什么, 因何): the clause stating the cause is its answer
READER_KIND = "reader"  # the kind of an answer span the reader marked for an untyped question
YES_NO_KIND = "yesno"  # the kind of the span of a yes/no question: the asked verb's phrase (原告未再婚)
MEANING_KIND = "meaning"  # ... of a "X代表什么？" question: what the text says X stands for (放出或吸收的热量（焓变）)

# --- units ---------------------------------------------------------------------------------------
@dataclass
class Pick:
    """A unit chosen for the answer: source number, document offsets, text, relevance to the question."""

    n: int
    start: int
    end: int
    text: str
    score: float
    support: float = 0.0
    doc: str = ""  # file name
    doc_id: str = ""
    clause: bool = False  # a clause of a longer sentence
    sentence: int = 0  # which sentence of the passages it is (clauses of one sentence share it)


@dataclass
class AnswerSpan:
    """The marked answer: its text and document offsets (inside a quote), and the source it is in."""

    text: str
    doc: str
    start: int
    end: int
    n: int
    kind: str | None = None  # the type it is a value of; None: the best clause of an untyped question

    def to_json(self) -> dict:
        return {"text": self.text, "doc": self.doc, "start": self.start, "end": self.end}


@dataclass
class Extract:
    """The pinpointed extract: quoted units, the marked answer, the answer text and where to bold it."""

    picks: list[Pick]
    span: AnswerSpan | None = None
    kind: str | None = None
    alternatives: list[AnswerSpan] = field(default_factory=list)  # other documents' different answers
    text: str = ""
    emphasis: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of `text` shown bold
    reading: tuple[str, float] | None = None  # how the reader marked the span ("span" | "inside", score), if it did
    more_sources: list[Hit] = field(default_factory=list)  # passages of `more` the alternatives quote, numbered after the hits

    @property
    def ambiguous(self) -> bool:
        return bool(self.alternatives)


def clause_spans(text: str, a: int, b: int, min_clause: int = MIN_CLAUSE) -> list[tuple[int, int]]:
    """Clauses of text[a:b] as [start, end) spans (cut after ，,；;：: outside brackets and numbers);
    a clause shorter than `min_clause` joins the next one."""
    pieces, start, depth = [], a, 0
    for i in range(a, b):
        ch = text[i]
        if ch in "（(《“「[【":
            depth += 1
        elif ch in "）)》”」]】":
            depth = max(0, depth - 1)
        elif ch in "，,；;：:" and depth == 0 and i + 1 < b:
            if ch in ",:" and i > a and text[i - 1].isdigit() and text[i + 1].isdigit():
                continue  # 1,000 / 10:30
            pieces.append((start, i + 1))
            start = i + 1
    pieces.append((start, b))
    merged: list[tuple[int, int]] = []
    for p in pieces:
        if merged and len(text[merged[-1][0]:merged[-1][1]].strip()) < min_clause:
            merged[-1] = (merged[-1][0], p[1])
        else:
            merged.append(p)
    if len(merged) > 1 and len(text[merged[-1][0]:merged[-1][1]].strip()) < min_clause:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def _bigrams(text: str) -> set[str]:
    t = re.sub(r"\W+", "", text)
    return {t[i:i + 2] for i in range(len(t) - 1)}


def _passage_units(hit: Hit) -> list[tuple[int, int, bool, int]]:
    """(start, end, is a clause, sentence index) of a passage's units, offsets in its text (see _candidates)."""
    out = []
    for k, (sa, sb) in enumerate(quote_spans(hit.text)):
        long_sentence = sb - sa > CLAUSE_FROM
        spans = clause_spans(hit.text, sa, sb) if long_sentence else [(sa, sb)]
        for a, b in spans:
            a, b = quote_bounds(hit.text, a, b)
            out.append((a, b, long_sentence and (a, b) != quote_bounds(hit.text, sa, sb), k))
    return out


# a passage that opens inside a formula (a window cut at "-NO2、|-SO3H等…"): the formula's tail — a bond
# or group mark before letters, or letters with digits (SO3H, C6H5), never a year (2011年) or a word (DNA) —
# is no unit's start
_FORMULA_TAIL = re.compile(r"^(?:[-−–—=≡]+[A-Za-z][A-Za-z0-9()]*|(?=[A-Za-z0-9()]*[A-Z])(?=[A-Za-z0-9()]*[0-9])[A-Za-z0-9()]+)"
                           r"(?=[\u4e00-\u9fff、，,])")


def _unit_owners(hits: list[Hit], units: list[list[tuple]], read: list[bool], answer_passages: int) -> set[tuple[int, int]]:
    """The (passage number, unit start) of the units to read: of units of one document that overlap (windows
    of a sliding chunker overlap, and cut a sentence at their edges differently), the first-ranked one is
    read — unless it is cut by its window's edge (it starts where its passage starts, or ends where it ends)
    and another passage holds more of it on that side: then that passage's unit is read instead. So the same
    text is never quoted twice ([1] and [2] of one sentence), and a sentence is quoted whole where a passage
    holds it whole. A unit of a passage beyond `answer_passages` (read only for ambiguity) never displaces
    one of the answer's own passages."""
    kept: dict[str, list[list]] = {}  # doc -> [[n, doc start, doc end, cut at start, cut at end, unit start]]
    for n, (hit, spans) in enumerate(zip(hits, units), start=1):
        if not read[n - 1]:
            continue
        body = hit.text.strip()
        head = len(hit.text) - len(hit.text.lstrip())
        tail = head + len(body)
        for a, b, _clause, _k in spans:
            if b - a < 4:
                continue
            unit = [n, hit.start + a, hit.start + b, hit.start > 0 and a <= head + 1, b >= tail - 1, a]
            same = kept.setdefault(hit.doc, [])
            overlapping = [u for u in same if u[1] < unit[2] and unit[1] < u[2]]
            if not overlapping:
                same.append(unit)
                continue
            wider = all((u[3] and unit[1] < u[1] or u[4] and unit[2] > u[2])
                        and (n <= answer_passages or u[0] > answer_passages) for u in overlapping)
            if wider:  # each unit it overlaps was cut by its window where this one goes on
                for u in overlapping:
                    same.remove(u)
                same.append(unit)
    return {(u[0], u[5]) for same in kept.values() for u in same}


def _candidates(hits: list[Hit], max_passages: int, read_from: int | None = None,
                answer_passages: int | None = None) -> tuple[list[Pick], list[int | None], list[int | None]]:
    """Distinct units of the top passages (clauses of long sentences, else sentences), and for each
    the index of the unit before and after it in the same passage (None at a passage edge).
    `read_from`: passages from this number on are read too (those added for the ambiguity check).
    Overlapping units of one document are read once (`_unit_owners`); a passage opening inside a formula
    (`_FORMULA_TAIL`, a window's cut) has its first unit start after the formula's tail."""
    read = [n <= max_passages or read_from is not None and n >= read_from for n in range(1, len(hits) + 1)]
    units = [_passage_units(hit) for hit in hits]
    owners = _unit_owners(hits, units, read, answer_passages or max_passages)
    seen_text, out, previous, following = set(), [], [], []
    sentence_no = 0
    for n, (hit, spans) in enumerate(zip(hits, units), start=1):
        if not read[n - 1]:
            continue
        last, k_last = None, None
        doc_id = getattr(hit.chunk, "doc_id", "") or ""
        for a, b, clause, k in spans:
            if k != k_last:
                sentence_no += 1
                k_last = k
            owner = (n, a) in owners
            if owner and hit.start > 0 and a <= len(hit.text) - len(hit.text.lstrip()) + 1:
                cut = _FORMULA_TAIL.match(hit.text, a, b)
                if cut and b - cut.end() >= 4:
                    a, b = quote_bounds(hit.text, cut.end(), b)
            unit = hit.text[a:b]
            key = comparable(unit)
            if not owner or len(unit) < 4 or key in seen_text:
                last = None
                continue  # windows overlap: the same unit is quoted once
            seen_text.add(key)
            out.append(Pick(n, hit.start + a, hit.start + b, unit, 0.12 / (n + 1), doc=hit.doc, doc_id=doc_id,
                            clause=clause, sentence=sentence_no))
            previous.append(last)
            following.append(None)
            if last is not None:
                following[last] = len(out) - 1
            last = len(out) - 1
    return out, previous, following


class _Asked(set):
    """The values of the type a question names itself, its folded text (`chars`), and whether it asks who
    someone lives with or is raised by (`carer`: 那孩子跟谁生活？)."""

    chars = ""
    carer = False
    agent = ""  # the verb of a 由谁 V question (捐献): its agent is the value
    period = False  # 什么时期: a period's name (战国时代) is the value, not a date

    def own_spans(self, text: str) -> list[tuple[int, int]] | None:
        """The values of the question's own kind in `text` (offsets), for a question that has one: the carers
        of clauses stating an arrangement (`carer`), the agent before the asked verb (`agent`), a period's
        name (`period`); None for any other question. The three never hold together (`_question_values`)."""
        if self.carer:
            return carer_spans(text)
        if self.agent:
            return agent_spans(text, self.agent)
        if self.period:
            return period_spans(text)
        return None


def _question_values(kind: str | None, question: str) -> set[str]:
    """Values of the type the question itself names (they are not its answer), with the question's folded
    text as `chars` (a name or place made only of the question's characters restates it: 国立大学)."""
    out = _Asked(comparable(question[a:b]) for a, b in typed_values(kind, question)) if kind in TYPED else _Asked()
    out.chars = comparable(question)
    out.carer = kind == "person" and asks_carer(question)
    out.agent = asked_agent(question) if kind == "person" and not out.carer else ""
    out.period = kind == "date" and asks_period(question)
    return out


# 一座, 一种: an article, not a count; 百分 (of 百分之…): not a value
_ARTICLE = re.compile(r"^(?:其中)?[一两][个种座条位名项件家所只部本批些类次]$|^[百千万]分$")


def _values(kind: str | None, unit: Pick, exclude: _Asked) -> list[tuple[int, int]]:
    """Typed values of a unit (offsets in the unit's text) that the question does not name itself. For a
    question with values of its own kind (`_Asked.own_spans`: 原告 of 随原告生活至今 for who someone lives
    with, a role being the answer; the agent of 由谁 V; a period's name), those when the unit has any."""
    out = []
    found = exclude.own_spans(unit.text) or typed_values(kind, unit.text)
    for a, b in found:
        value = comparable(unit.text[a:b])
        if value in exclude or any(value in e or kind in ("person", "place") and len(e) >= 2 and e in value
                                   and len(value) - len(e) <= 1 for e in exclude) \
                or kind in ("number", "amount") and _ARTICLE.match(value) \
                or kind in ("person", "place", "country") and all(ch in getattr(exclude, "chars", "") for ch in value) \
                or "分之" in value and not SHARE_Q.search(getattr(exclude, "chars", "")):  # 百分之五十 is no 期限
            continue
        out.append((a, b))
    return out


SUBJECT_CONTEXT = 0.8  # the share of the subject's weight a unit of a passage naming it gets without naming it itself
_SUBJECT_END = re.compile(r"的|是|为|主要|在|有|以|于|被|把|将|和|与|共|曾|从|自|对|由")


def _named_subject(q: str, passages: list[str]) -> str:
    """The subject a question opens with when its passages name it verbatim (斯氏腔吻鳕 of 斯氏腔吻鳕主要以什么为食？):
    the opening of the question up to a particle or verb (的, 是, 主要, 在…), 3 to 12 characters, found in a passage;
    "" if none."""
    m = _SUBJECT_END.search(q, 2)
    head = (q[:m.start()] if m else "").rstrip("上中里内")  # 发票上有什么: 发票, a word, not an article's subject
    if len(head) < 3 or len(head) > 12 or _ROLE.search(head) or MASKED_NAME.search(head) or not any(head in p for p in passages):
        return ""  # a party of a judgment (被告人罗某甲, 李某) is named all over it: no article's subject
    return head


# Words a question asks with and the text says otherwise (the question's 逝世, the text's 卒; 建于 and 兴建;
# 凶器 and the 尖刀 it was): a unit holding one of a term's `_ALIASES` covers the term. Folded (simplified) forms.
_ALIAS_GROUPS = [
    ("逝世 去世 病逝 病故 死于 过世 辞世 身故 亡故 逝于 卒 殁 驾崩", "逝世 去世 病逝 病故 死于 过世 辞世 身故 亡故 逝于 驾崩 死亡"),
    ("出生 生于 诞生 出世 降生", "出生 生于 诞生 出世 降生"),
    ("兴建 建成 建造 落成 始建 修建 竣工 建于", "建于 兴建 建造 建成 修建 落成 始建 竣工"),
    ("成立 创立 创建 创办 设立 创设", "成立 创立 创建 创办 设立 创设"),
    ("废除 废止 撤销 裁撤 撤废 废除", "废除 废止 撤销 裁撤 撤废"),
    ("被誉为 誉为 称为 称作 之称 美誉 美称 号称", "被誉为 誉为 称为 称作 美誉 美称 号称"),
    ("刀 枪 棍 棒 斧 锤 匕首 铁锹 钢管 砖头 石块 凶器 作案工具", "凶器 作案工具"),
    ("母亲 之母 生母 所生 妈妈", "母亲"), ("父亲 之父 生父 爸爸", "父亲"),  # 梁秀珍系张x2之母; 夫人高容姬所生
    ("定义 是指 指的是", "定义"),  # 类比讯号的定义: 类比讯号是指…
    ("上学 读书 就读 念书 求学", "上学"),  # 沈x7在哪里上学？ — 沈x7现在阳朔镇中心小学读书
]


def _alias_table() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for said, asked in _ALIAS_GROUPS:
        for word in asked.split():
            out[word] = tuple(w for w in said.split() if w != word)
    return out


_ALIASES = _alias_table()


_ENDS_WITH_DATE = re.compile(r"[0-9零〇一二两三四五六七八九十]+[年月日号][初底末]?[，,\s]*$")


def _told(scorer, p: Pick) -> bool:
    """Whether a pick tells the asked event (`_Scorer.told` of its candidate, else the event's words in it)."""
    told = getattr(scorer, "told", None)
    for i, c in enumerate(scorer.candidates):
        if c is p and told is not None:
            return told[i]
    return any(_tells(v, comparable(p.text)) for v in scorer.events)


def _holds(term: str, text: str) -> bool:
    """Whether folded `text` holds the query term or a word saying the same (`_ALIASES`)."""
    return term in text or any(a in text for a in _ALIASES.get(term, ()))


_LIGHT_VERBS = frozenset("是 有 为 进行 发生 作出 做出 开始 采取 出现 存在 成为 称为 属于 位于 需要 应当 可以".split())


def _event_verbs(question: str) -> list[str]:
    """The verbs of a date question naming the event it asks the date of (建于, 逝世, 废除; folded), not light
    verbs (进行, 发生)."""
    t = aligned(question)
    out = []
    for a, b, flag in pos_tags(t):
        word = comparable(t[a:b])
        dated = _DATED_NOUN.match(word)  # 出生日期: the event before the date noun
        if dated and flag.startswith("n"):
            word, flag = dated.group(1), "v"
        if flag in ("v", "vn") and len(word) >= 2 and word not in _LIGHT_VERBS:
            out.append(word)
    return out


_DATED_NOUN = re.compile(r"^([\u4e00-\u9fff]{2,})(?:日期|时间|年份|日子)$")
# 离婚后, 结婚以前: the event as a time reference for something else, not the event told
_EVENT_AS_TIME = re.compile(r"^(?:以?后|之后|以?前|之前)")
# a date governed by the event: right before it (于2012年2月10日出生) or right after the verb and 于/在 (生于1980年)
EVENT_DATE_BONUS = 0.5


def _tells(event: str, text: str) -> bool:
    """Whether folded `text` tells the event (or a word saying the same), not only as a time reference (离婚后)."""
    for word in (event, *_ALIASES.get(event, ())):
        if any(not _EVENT_AS_TIME.match(text[m.end():]) for m in re.finditer(re.escape(word), text)):
            return True
    return False


def _governs(events: list[str], text: str, a: int, b: int) -> bool:
    """Whether the date text[a:b] is the one the event tells: the verb right after it (于2012年2月10日出生, at most
    two characters between) or right before it with 于/在/是 (生于1980年)."""
    folded = comparable(text)
    if len(folded) != len(text):
        return False
    after, before = folded[b:b + 2 + 6], folded[max(0, a - 8):a]
    for v in events:
        for word in (v, *_ALIASES.get(v, ())):
            i = after.find(word)
            if 0 <= i <= 2 and not any(ch in "，,；;。！？：:" for ch in after[:i]) or re.search(re.escape(word) + r"(?:于|在|是|为)$", before):
                return True
    return False


# "X的Y是？": the attribute Y asked about (权利范围, 投资人, 社长, 英文) and a unit stating it (权利范围是全部权利,
# 投资人为邓x7, 英文：League…)
_ATTRIBUTE_Q = re.compile(r"的([\u4e00-\u9fff]{2,6}?)(?:是|为|有)?(?:什么|甚么|谁|多少|哪些|哪个|何)?[？?。\s]*$")
_STATES = r"(?:是|为|系|有|：|:)"
ATTRIBUTE_RATIO = 0.4  # a unit stating the asked attribute wins over a best unit without it at this share


def _asked_attribute(question: str) -> str:
    """The attribute a "X的Y是？" question asks for (folded), or ""."""
    m = _ATTRIBUTE_Q.search(comparable(question))
    return m.group(1) if m and not _OTHER_WORDS.search(m.group(1)) else ""


_OTHER_WORDS = re.compile(r"什么|哪|谁|多少|时间|时候|原因|情况|内容|结果|意思")


class _Scorer:
    """Scores the candidate units of one question (see the module docstring)."""

    def __init__(self, query: str, hits: list[Hit], max_passages: int, read_from: int | None = None,
                 asked: str | None = None):
        self.query = query
        self.passages = [h.text for h in hits]
        self.starts = [h.start for h in hits]
        self.max_passages = max_passages  # the answer's own units; ambiguity looks a little further
        self.candidates, self.previous, self.following = _candidates(hits, max(max_passages, AMBIGUITY_PASSAGES), read_from,
                                                                     max_passages)
        self.kind = answer_type(query)
        self.verbs = asked_verbs(query) if self.kind is None else []
        self.why = self.kind == REASON_KIND and asks_why(query)
        self.names = question_names(query if asked is None else asked)  # those the user named, not carried ones
        self.role = question_role(query) if self.kind in TYPED else None
        self.exclude = _question_values(self.kind, query)
        self.terms = key_terms(query) or query_terms(query)
        self.q_grams = _bigrams(comparable(query))
        lowered = [comparable(c.text) for c in self.candidates]
        self.lowered = lowered
        n = len(self.candidates)
        self.weights = {t: len(t) * math.log(1 + n / (1 + sum(_holds(t, x) for x in lowered))) for t in self.terms}
        folded = [comparable(p) for p in self.passages]
        subject = _named_subject(comparable(query), folded[:max_passages])
        subject_terms = {t for t in self.terms if t in subject}
        self.subject_terms = subject_terms if subject else set()
        total = sum(self.weights.values()) or 1.0
        self.covered = [{t for t in self.terms if _holds(t, text)} for text in lowered]
        attribute = self.attribute = _asked_attribute(query)
        self.states = [bool(attribute) and bool(re.search(re.escape(attribute) + _STATES, x)) for x in lowered]
        # "X代表什么？" (Q of 热化学方程式中Q代表什么？): the units saying what X stands for (其中𝑄代表放出或吸收的热量)
        meaning = self.meaning = asked_meaning(query) if self.kind is None and not self.verbs else ""
        self.means = [bool(meaning) and meaning in x and bool(meaning_spans(c.text, meaning))
                      for c, x in zip(self.candidates, lowered)]
        self.meant: int | None = None  # the quoted unit saying it (set by _pick)
        self.typed = [bool(_values(self.kind, c, self.exclude)) if self.kind in TYPED else
                      (self.kind == REASON_KIND and bool(_reasons(c.text))) for c in self.candidates]
        if self.kind in ("number", "amount"):  # 多少公分: a unit with a value in 公分 answers, one with 12月 does not
            in_unit = [any(_unit_match(query, c.text[a:b]) for a, b in _values(self.kind, c, self.exclude))
                       for c in self.candidates]
            if any(in_unit):
                self.typed = in_unit
        # a unit with a value of the question's own kind: 跟谁生活 one stating the living arrangement (随原告生活),
        # not one naming a party; 由谁捐献 one naming the agent (由泰国国家铁路局捐献), not a road's name;
        # 什么时期的武将 one naming a period (战国时代), not only a lifespan
        own = [bool(self.exclude.own_spans(c.text)) for c in self.candidates]
        if any(own):
            self.typed = own
        events = self.events = _event_verbs(query) if self.kind == "date" else []
        if events:  # 建于哪一年: a date of the building (建于1988年), not of the renaming (1998年，…改名为…)
            told = [any(_tells(v, x) for v in events) for x in lowered]
            # a date clause before the clause telling the event (2013年11月21日,|双方在…协议离婚) dates that event
            self.told = [t or (c.clause and self.following[i] is not None and told[self.following[i]]
                               and c.sentence == self.candidates[self.following[i]].sentence
                               and _ENDS_WITH_DATE.search(c.text) is not None)
                         for i, (t, c) in enumerate(zip(told, self.candidates))]
            with_event = [t and e for t, e in zip(self.typed, self.told)]
            if any(with_event):
                self.typed = with_event
        for i, (c, text) in enumerate(zip(self.candidates, lowered)):
            c.score += sum(self.weights[t] for t in self.covered[i]) / total
            before = self._before(i)
            if before:  # the subject is often named just before ("X 是…。它于 2004 年发行。", "X（…）位于…，兴建于…")
                weight = CLAUSE_CONTEXT_WEIGHT if c.clause else CONTEXT_WEIGHT
                c.score += weight * sum(self.weights[t] for t in set().union(*before) - self.covered[i]) / total
            grams = _bigrams(text)
            if subject and subject in folded[c.n - 1] and not subject_terms <= self.covered[i]:
                # a passage naming the subject (斯氏腔吻鳕) is about it: its units need not repeat it ("几乎是以多毛类为食")
                c.score += SUBJECT_CONTEXT * sum(self.weights[t] for t in subject_terms - self.covered[i]) / total
                grams = grams | _bigrams(subject)
            c.score += 0.3 * len(self.q_grams & grams) / max(1, len(self.q_grams))
            if self.means[i]:
                c.score += TYPE_BONUS  # says what the asked X stands for (△代表加热: a symbol is no query term)
            if self.verbs and all(v in text for v in self.verbs):
                c.score += VERB_BONUS  # a yes/no question: the clause saying whether (现已再婚), not one sharing its nouns
            if self.typed[i]:
                c.score += TYPE_BONUS if self.kind in STRICT_TYPES or self.kind == REASON_KIND or self.exclude.carer \
                    else LOOSE_TYPE_BONUS
                if self.exclude.carer and _carer_held(self.query).search(text):
                    c.score += CARER_NOW_UNIT  # the arrangement that holds now (一直随原告生活至今)
            if _novel_chars(text, self.q_grams) < 6:
                c.score *= 0.6  # restates the question (or is a title): holds no answer
            if _other_party(self.role, c.text):
                c.score *= ROLE_PENALTY  # 被告…？ answered by what 原告王x0 pays: another party's value

    def _before(self, i: int) -> list[set[str]]:
        """The query terms named by the unit before, or, for a clause, by the clauses of its
        sentence before it (the sentence's subject)."""
        c, out, j = self.candidates, [], self.previous[i]
        if j is None:
            return out
        out.append(self.covered[j])
        while c[i].clause and j is not None and c[j].sentence == c[i].sentence and self.previous[j] is not None \
                and c[self.previous[j]].sentence == c[i].sentence:
            j = self.previous[j]
            out.append(self.covered[j])
        return out

    def clause_score(self, piece: str) -> float:
        """How much of the question a piece of text holds: its specific query terms (weighted as in
        the unit scores) and its bigram overlap with the question."""
        folded = comparable(piece)
        total = sum(self.weights.values()) or 1.0
        return (sum(w for t, w in self.weights.items() if _holds(t, folded)) / total
                + 0.3 * len(self.q_grams & _bigrams(folded)) / max(1, len(self.q_grams)))

    def order(self, everywhere: bool = False) -> list[int]:
        """Units by score, best first: those of the first `max_passages` passages, or all."""
        return sorted((i for i, c in enumerate(self.candidates) if everywhere or c.n <= self.max_passages),
                      key=lambda i: -self.candidates[i].score)

    def around(self, first: int, max_chars: int) -> list[int]:
        """The best unit with the neighbours it needs (see the module docstring), in document order."""
        c, kind = self.candidates, self.kind
        group = [first]
        used = len(c[first].text)

        def add(i: int | None) -> bool:
            nonlocal used
            if i is None or i in group or used + len(c[i].text) > max_chars and used >= SHORT_QUOTE:
                return False
            group.append(i)
            used += len(c[i].text)
            return True

        best = c[first]
        before, after = self.previous[first], self.following[first]
        names = self.names
        if before is not None and (
                names and not all(n in self.lowered[first] for n in names) and all(n in self.lowered[before] for n in names)
                or self.verbs and best.clause and c[before].sentence == best.sentence
                and self.covered[before] - self.covered[first]):
            # "…原告曹0系…职工,收入比较稳定,现已再婚": the party the question names (or, for a yes/no
            # question, its subject) is named just before
            add(before)
        if before is not None and self.subject_terms and not self.subject_terms <= self.covered[first] \
                and self.subject_terms <= self.covered[before]:
            add(before)  # "这个由荷兰人所发明的装置…" answers; the sentence before names 射击断续器
        if before is not None and self.means[first] and any(len(t) >= 2 for t in self.covered[before] - self.covered[first]):
            add(before)  # 热化学方程式 | …其中𝑄代表…: the heading naming where the question places X (热化学方程式中Q)
        if _CONSEQUENCE.match(best.text) and before is not None:
            add(before)
        elif (_novel_chars(self.lowered[first], self.q_grams) < 6 or len(best.text) < 12) and after is not None:
            add(after)
        if (kind in TYPED or self.why) and not self.typed[first]:
            # the unit names the subject but not the value (or cause) asked for: one unit to either side may hold it
            side = [i for i in (after, before) if i is not None and self.typed[i]]
            if side:
                add(max(side, key=lambda i: c[i].score))
        if used < SHORT_QUOTE or (best.clause and used < 2 * SHORT_QUOTE):
            # a clause alone is hard to read: take the neighbour naming more of the question
            side = [i for i in (before, after) if i is not None and i not in group]
            if self.why and self.typed[first]:  # the cause is there: only a neighbour naming more of the question
                told = set().union(*(self.covered[i] for i in group))
                side = [i for i in side if any(len(t) >= 2 for t in self.covered[i] - told)]
            if side:
                add(max(side, key=lambda i: (len(self.covered[i]), i == before)))
        return sorted(group)


_CONSEQUENCE = re.compile(r"^(因此|所以|故而|故|因而|于是|从而|以致|这使|这让|此后)")


def _novel_chars(text: str, q_grams: set[str]) -> int:
    """Characters of a unit outside the question's bigrams: what it says beyond the question."""
    t = re.sub(r"\W+", "", text)
    inside = set()
    for i in range(len(t) - 1):
        if t[i:i + 2] in q_grams:
            inside.update((i, i + 1))
    return len(t) - len(inside)


def pick_sentences(query: str, hits: list[Hit], max_sentences: int = 3, max_chars: int = MAX_CHARS,
                   max_passages: int = 4) -> list[Pick]:
    """The units that best answer `query`, in document order (see the module docstring)."""
    scorer = _Scorer(query, hits, max_passages)
    return _pick(scorer, max_sentences, max_chars)


def _pick(scorer: _Scorer, max_sentences: int, max_chars: int, forced: list[int] | None = None) -> list[Pick]:
    """The picks, best unit first chosen by the scores, or `forced`: the units holding the reader's
    answer (all of them are quoted)."""
    c = scorer.candidates
    order = scorer.order()
    if not order:  # no usable unit in the answer's passages (those further on only serve ambiguity)
        return []
    named = None if forced else _naming_documents(scorer)
    if named:  # the question names a party (曹0): another document's unit is never the answer, nor quoted
        order = [i for i in order if (c[i].doc_id or c[i].doc) in named]
    best = forced[0] if forced else order[0]
    if forced:
        pass
    elif (scorer.kind in TYPED or scorer.why) and not any(scorer.typed[i] for i in scorer.around(best, max_chars)):
        # a question asking for a number, date, title or country: a unit holding one, if it is close; for a
        # why-question a cause of what it asks about (离婚 of 因何离婚, in the cause's clause or the next)
        typed = next((i for i in order if scorer.typed[i] and (not scorer.why or _cause_of_the_asked(scorer, i))), None)
        ratio = TYPED_RATIO if scorer.kind in STRICT_TYPES or scorer.why else LOOSE_TYPED_RATIO
        if typed is not None and c[typed].score >= ratio * c[best].score:
            best = typed
    if not forced and any(scorer.states) and not any(scorer.states[i] for i in scorer.around(best, max_chars)):
        stated = next((i for i in order if scorer.states[i]), None)  # X的投资人是谁？ — 投资人为邓x7
        if stated is not None and c[stated].score >= ATTRIBUTE_RATIO * c[best].score:
            best = stated
    if not forced and any(scorer.means) and not any(scorer.means[i] for i in scorer.around(best, max_chars)):
        meant = next((i for i in order if scorer.means[i]), None)  # 反应条件中△代表什么？ — △代表加热
        if meant is not None and c[meant].score >= ATTRIBUTE_RATIO * c[best].score:
            best = meant
    if c[best].clause:  # unpunctuated text (a judgment): quote the clauses, not a whole run of them
        max_chars = min(max_chars, CLAUSE_MAX_CHARS)
    group = sorted(set(scorer.around(best, max_chars)) | set(forced or []))
    first = max(group, key=lambda i: c[i].score)
    scorer.group, scorer.first = group, first
    scorer.stated = next((i for i in group if scorer.states[i]), None)  # 权利范围是全部权利: the span's unit
    scorer.meant = next((i for i in group if scorer.means[i]), None)  # 𝑄代表放出或吸收的热量: the span's unit
    picked = [c[i] for i in group]
    used = sum(len(p.text) for p in picked)
    max_sentences += len(group) - 1
    for i in order[1:]:
        u = c[i]
        if len(picked) >= max_sentences or u.score < FOLLOW_RATIO * c[first].score:
            break
        if u in picked:
            continue
        if used + len(u.text) > max_chars or check_picks(scorer.query, [u])[0].support < ANSWERS_THRESHOLD:
            continue  # a unit that merely shares a word with the question adds nothing
        if (scorer.kind in STRICT_TYPES or scorer.why and u.clause) and not scorer.typed[i]:
            continue  # a why-question over a judgment's run of clauses: a further clause stating no cause is none
        if scorer.verbs and not all(v in scorer.lowered[i] for v in scorer.verbs):
            continue  # a yes/no question: a unit without the verb asked about says nothing about it
        if scorer.meant is not None and scorer.meaning not in scorer.lowered[i]:
            continue  # X代表什么 is answered: a unit not naming X (the definition of 方程式 for Q) says nothing about it
        picked.append(u)
        used += len(u.text)
    check_picks(scorer.query, picked)
    return sorted(picked, key=lambda p: (p.n, p.start))


def _merged(scorer: _Scorer, picks: list[Pick]) -> list[Pick]:
    """Adjacent picks of one passage as one Pick whose text is the passage between them (the comma a
    clause was trimmed of included), so each quote, its citation and its highlight are one
    continuous piece of the document."""
    out = []
    for group in _groups(picks):
        first, last = group[0], group[-1]
        if len(group) == 1:
            out.append(first)
            continue
        base = scorer.starts[first.n - 1]
        text = scorer.passages[first.n - 1][first.start - base:last.end - base]
        out.append(Pick(first.n, first.start, last.end, text, max(p.score for p in group), min(p.support for p in group),
                        first.doc, first.doc_id, any(p.clause for p in group), first.sentence))
    return out


def _groups(picks: list[Pick]) -> list[list[Pick]]:
    """Picks that follow each other in one source read as one passage."""
    groups: list[list[Pick]] = []
    for p in sorted(picks, key=lambda p: (p.n, p.start)):
        if groups and groups[-1][-1].n == p.n and 0 <= p.start - groups[-1][-1].end <= 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def check_picks(query: str, picks: list[Pick], kind: str | None = "auto") -> list[Pick]:
    """Set each pick's `support`: how well the quoted passage it belongs to answers the question —
    key-term coverage, plus a little when it holds the expected answer type; for a question asking
    for a number, amount, date, title, country, person or place, a passage without such a value gets
    at most half the threshold (each quote on its own: a second quote that only shares the question's
    words is not supported). Judged against the question, never against the quote itself, so an off-topic
    sentence or a sentence that names the subject but not the answer is not marked supported."""
    terms = key_terms(query) or query_terms(query)
    kind = answer_type(query) if kind == "auto" else kind
    exclude = _question_values(kind, query)
    total = sum(len(t) for t in terms) or 1
    for group in _groups(picks):
        joined = "".join(p.text for p in group)
        text = comparable(joined)
        coverage = sum(len(t) for t in terms if _holds(t, text)) / total
        typed = bool(_values(kind, Pick(0, 0, 0, joined, 0), exclude)) if kind in TYPED else has_type(kind, joined)
        support = min(1.0, coverage + (0.1 if kind and typed and coverage > 0 else 0.0))
        if kind in TYPED and not typed:  # a quote without the asked-for number, date, name or place
            support = min(support, ANSWERS_THRESHOLD / 2)
        if kind == REASON_KIND and all(p.clause for p in group) and asks_why(query) \
                and not _reasons(joined):  # a why-question: clauses of a judgment stating no cause
            support = min(support, ANSWERS_THRESHOLD / 2)
        for p in group:
            p.support = support
    return picks


# --- the marked answer -----------------------------------------------------------------------------
def _locate(scorer: _Scorer, picks: list[Pick], best: Pick) -> AnswerSpan | None:
    """The answer span inside the picks: the typed value whose clause (and the clauses beside it)
    holds most of the question's specific words, in the best unit first; or, for an untyped question
    (and when no value is found), the best clause of the best unit."""
    kind = scorer.kind
    terms = [t for t in scorer.terms if len(t) >= 2] or scorer.terms
    best_value = None
    if kind in TYPED or kind == REASON_KIND:
        # a value in the unit the question asks in (多少公里, 多少比例: 五分之一) rules out those in other units
        in_unit = kind in ("number", "amount") and any(_unit_match(scorer.query, p.text[a:b])
                                                       for p in picks for a, b in _values(kind, p, scorer.exclude))
        now = kind == "place" and bool(_NOW_Q.search(comparable(scorer.query)))  # 目前在何处: where someone is now
        own = any(scorer.exclude.own_spans(p.text) for p in picks)
        carer = scorer.exclude.carer and own
        held = _carer_held(scorer.query)
        if scorer.events:  # a date question's event (建于): the dates of units telling it, if one does
            told = [p for p in picks if _told(scorer, p)]
            picks = told if any(_values(kind, p, scorer.exclude) for p in told) else picks
        for p in picks:
            values = _values(kind, p, scorer.exclude) if kind in TYPED else _reasons(p.text)
            if own:  # only the question's own kind of value: a carer of a clause stating the arrangement (not a
                # party named elsewhere), the agent named before the asked verb, a period's name
                values = [v for v in values if v in scorer.exclude.own_spans(p.text)]
            if in_unit:
                values = [(a, b) for a, b in values if _unit_match(scorer.query, p.text[a:b])]
            if not values:
                continue
            clauses = clause_spans(p.text, 0, len(p.text), min_clause=4)
            scores = [scorer.clause_score(p.text[x:y]) for x, y in clauses]
            folded = comparable(p.text)
            hits = [m.start() for t in terms for m in re.finditer(re.escape(t), folded)] if len(folded) == len(p.text) else []
            stated = [m.end() for m in re.finditer(re.escape(scorer.attribute) + _STATES, folded)] \
                if scorer.attribute and len(folded) == len(p.text) else []
            for a, b in values:
                k = next((i for i, (x, y) in enumerate(clauses) if x <= a < y), 0)
                side = max([scores[j] for j in (k - 1, k + 1) if 0 <= j < len(scores)], default=0.0)
                distance = min((abs(h - a) for h in hits), default=60)
                score = (scores[k] + 0.3 * side + (SPAN_BEST_BONUS if p is best else 0.0) + 0.2 / (1 + distance / 10)
                         + (0.3 if _unit_match(scorer.query, p.text[a:b]) or _noun_match(scorer.query, p.text[a:b]) else 0.0)
                         + (_where_now(p.text, a) if now else 0.0)
                         + (CARER_NOW_BONUS if carer and held.search(
                             p.text[clauses[max(0, k - 1)][0] if held is not _CARER_NOW else clauses[k][0]:clauses[k][1]])
                            else 0.0)
                         + (EVENT_DATE_BONUS if scorer.events and _governs(scorer.events, p.text, a, b) else 0.0)
                         + (1.0 if any(e <= a <= e + 2 for e in stated) else 0.0))  # 投资人为邓x7: the value stated
                if best_value is None or score > best_value[0]:
                    best_value = (score, p, a, b)
    if best_value is not None:
        _, p, a, b = best_value
        if kind in ("person", "place"):
            a, b = _listed(p.text, _values(kind, p, scorer.exclude), a, b, bool(_LIST_Q.search(comparable(scorer.query))))
        if kind == "place":
            a, b = _place_phrase(p.text, a, b)
        elif kind == "number" and _COUNTS_Q.search(comparable(scorer.query)):
            a, b = _counts(p.text, _values(kind, p, scorer.exclude), a, b, comparable(scorer.query))
        a, b = _trim(p.text, a, b)
        return AnswerSpan(p.text[a:b], p.doc, p.start + a, p.start + b, p.n, kind)
    if scorer.meant is not None:  # X代表什么？: what the text says X stands for (其中𝑄代表|放出或吸收的热量（焓变）)
        unit = scorer.candidates[scorer.meant]
        if unit in picks:
            a, b = meaning_spans(unit.text, scorer.meaning)[0]
            return AnswerSpan(unit.text[a:b], unit.doc, unit.start + a, unit.start + b, unit.n, MEANING_KIND)
    best = _topic_told(scorer.candidates, best)
    a, b = _best_clause(scorer, best)
    said = _verb_phrase(scorer.verbs, best.text, a, b) if scorer.verbs else None
    if said:  # a yes/no question: what the text says of the asked verb, negation included (原告未再婚)
        a, b = said
        return AnswerSpan(best.text[a:b], best.doc, best.start + a, best.start + b, best.n, YES_NO_KIND)
    return AnswerSpan(best.text[a:b], best.doc, best.start + a, best.start + b, best.n, None)


# Parallel clauses that divide things up (房屋归男方所有，存款归女方所有; 债务由被告偿还): one frame, each
# clause a different thing and party. `_parallel_run` marks the whole run when the marked clause is one of them.
_FRAMES = [re.compile(r"归[^，,；;。：:、\s]{1,8}?(?:所有|使用|管理|承担|偿还|负担|抚养|继承)"),
           re.compile(r"由[^，,；;。：:、\s]{1,8}?(?:承担|负担|偿还|抚养|支付|继承|所有|管理|使用)")]
_CLAUSE_MARK = "，,；;、"
PARALLEL_SUBJECT = 20  # characters at most before a clause's frame (房屋, 东系山平房包括南厢耳房)


def _parallel_run(text: str, a: int, b: int, limit: int = CLAUSE_MAX_CHARS) -> tuple[int, int]:
    """[a, b) widened over the clauses beside it that follow the same frame as the marked clause
    text[a:b] (…归男方所有，存款归女方所有): the other halves of the answer. A clause after it counts up to
    its frame's end (「存款归女方所有」 of 「存款归女方所有原、被告离婚后」, a judgment without 。); the run
    stays within `limit` characters. Unchanged when the marked clause does not end in a frame."""
    frame = next((f for f in _FRAMES if any(m.end() >= b - 1 for m in f.finditer(text, a, b))), None)
    if frame is None:
        return a, b
    start, end = a, b
    while end < len(text) and text[end] in _CLAUSE_MARK:
        m = frame.search(text, end + 1, min(len(text), end + 1 + PARALLEL_SUBJECT + 12))
        gap = text[end + 1:m.start()] if m else ""
        if not m or len(gap) > PARALLEL_SUBJECT or any(ch in _CLAUSE_MARK + "。：:" for ch in gap) \
                or m.end() - start > limit:
            break
        end = m.end()
    while start > 0 and text[start - 1] in _CLAUSE_MARK:
        before = start - 1
        begin = max((text.rfind(ch, 0, before) for ch in _CLAUSE_MARK + "。：:"), default=-1) + 1
        ends = [m for m in frame.finditer(text, begin, before) if m.end() == before]
        if not ends or ends[0].start() - begin > PARALLEL_SUBJECT or end - begin > limit:
            break
        start = begin
    return start, end


def _with_parallel_run(scorer: "_Scorer", span: AnswerSpan | None,
                       picks: list[Pick]) -> tuple[AnswerSpan | None, list[Pick]]:
    """The marked clause of an untyped question widened over its parallel clauses (`_parallel_run`),
    and the units they are in quoted too."""
    if span is None or span.kind not in (None, READER_KIND):
        return span, picks
    base, passage = scorer.starts[span.n - 1], scorer.passages[span.n - 1]
    a, b = _parallel_run(passage, span.start - base, span.end - base)
    if (a, b) == (span.start - base, span.end - base):
        return span, picks
    a, b = base + a, base + b
    more = [u for u in scorer.candidates if u.n == span.n and u.start < b and u.end > a and u not in picks]
    picks = sorted(picks + more, key=lambda p: (p.n, p.start))
    check_picks(scorer.query, picks)
    return replace(span, text=passage[a - base:b - base], start=a, end=b), picks


_NEGATED = re.compile(r"(?:未|没有|没|不|无|拒|尚未|并未|从未)(?:能|曾|得|再)?(?:按时|按约|依约|如期|及时|足额|全额|全部|再)?$")


def _verb_phrase(verbs: list[str], text: str, a: int, b: int) -> tuple[int, int] | None:
    """[start, end) of the phrase that says whether the asked verb happened: from its clause's start to
    the verb's end (「原告未再婚」 of 「原告未再婚离婚时大女儿…」), inside the chosen clause [a, b) when it holds the
    verb, else the unit's first clause that does; None when the text does not hold the verb."""
    folded = comparable(text)
    if len(folded) != len(text):
        return None
    found = [(m.start(), m.end()) for v in verbs for m in re.finditer(re.escape(v), folded)]
    if not found:
        return None
    inside = [f for f in found if a <= f[0] < b]
    at, end = min(inside or found)
    start = max((i + 1 for i in range(at) if text[i] in "，,；;：:。！？!?\n"), default=0)
    start = max(start, a) if inside else start
    start, end = _trim(text, start, end)
    return (start, end) if end > start else None


def negated(phrase: str, verbs: list[str]) -> bool:
    """Whether a yes/no span (`_verb_phrase`) says the verb did not happen (原告未再婚, 被告没有按时支付)."""
    folded = comparable(phrase)
    at = max((folded.rfind(v) for v in verbs), default=-1)
    return at > 0 and bool(_NEGATED.search(folded[max(0, at - 6):at]))


def _topic_told(units: list[Pick], best: Pick) -> Pick:
    """The unit after `best` when `best` only introduces the topic (…双方不付抚养费关于财产, | 约定平房归男方所有):
    what the text says about it comes next."""
    if not _TOPIC_END.search(comparable(best.text)):
        return best
    end = best.start + len(best.text)
    after = [u for u in units if u.doc == best.doc and end <= u.start <= end + 2]
    return min(after, key=lambda p: p.start) if after else best


# 跟谁生活 asks about the arrangement now: the clause saying it still holds (一直随原告生活至今) over the one it replaced
# (调解书载明…随被告张x1生活)
_CARER_NOW = re.compile(r"至今|现在|目前|如今|现仍|仍然|一直|现随|现由")
# ... unless the question names the arrangement's frame (离婚协议约定…由谁抚养？): then the clause stating that one
# (协议内容为:婚生女孩马62由女方别x2抚养), or the clause after its introduction, over the arrangement now
_CARER_FRAME = re.compile(r"协议|约定|调解|判决")
CARER_NOW_BONUS = 0.3  # ... for the marked carer
CARER_NOW_UNIT = 0.1  # ... for the unit


def _carer_held(question: str) -> re.Pattern:
    """The words of the arrangement a 跟谁生活 / 由谁抚养 question asks about: those of its frame when it names
    one (协议, 约定, 调解, 判决), else those saying it holds now (至今, 一直)."""
    return _CARER_FRAME if _CARER_FRAME.search(comparable(question)) else _CARER_NOW


_NOW_Q = re.compile(r"目前|现在|如今|现今|眼下|至今|现居|现住|现就读")
_FROM_BEFORE = re.compile(r"(?:从|由|自)$")
_TO_BEFORE = re.compile(r"(?:转入|转到|转至|转学到|转学至|迁至|迁往|迁入|迁到|搬到|搬至|搬往|调到|调入|调至|调往|改到|去了|来到|到|至)$")


def _where_now(text: str, a: int) -> float:
    """For a question about where someone is now (目前在何处上学, `_NOW_Q`), the place at `a` when it follows
    a move (从内乡县第二小学转入沈阳…附属小学): the destination gains, the place moved from loses."""
    before = text[max(0, a - 4):a]
    if _FROM_BEFORE.search(before):
        return -0.4
    return 0.3 if _TO_BEFORE.search(before) else 0.0


_LIST_Q = re.compile(r"哪些|哪几|有谁|都有谁|是谁们|分别|几人|几个人|成员")  # the answer may be several names
_LIST_JOIN = re.compile(r"[、和及与跟同]|以及")
_LIST_ITEM = re.compile(r"(?:、|以及|及|和|与)[^、，,。；;：:！？!?（(及和与]{1,15}?(?=、|以及|及|和|与|等|[，,。；;：:！？!?]|$)")
_LIST_REST = re.compile(r"[^、，,。；;：:！？!?（(及和与等]{0,12}")
_LIST_END = re.compile(r"等(?:人|地|国|处|地区|国家)?")


def _listed(text: str, values: list[tuple[int, int]], a: int, b: int, several: bool) -> tuple[int, int]:
    """The value [a, b) widened to the list it is part of — values of the same type joined by 、/和/及
    (方某、黄某2、张某、方某1), with a closing 等(人) — when the question asks for several names (`several`:
    哪些, 有谁) or the list closes with 等 (张某、罗某、周某等人 带来鱼叉: the answer to 谁 is all of them)."""
    spans = sorted(values)
    i = next((k for k, v in enumerate(spans) if v[0] <= a < v[1]), None)
    if i is None:
        return a, b
    lo = hi = i
    while hi + 1 < len(spans) and _LIST_JOIN.fullmatch(text[spans[hi][1]:spans[hi + 1][0]]):
        hi += 1
    while lo > 0 and _LIST_JOIN.fullmatch(text[spans[lo - 1][1]:spans[lo][0]]):
        lo -= 1
    end = spans[hi][1]
    if several:  # the rest of the enumeration, items the patterns missed included (…、台北市古亭国小、台北市万华女中)
        rest = _LIST_REST.match(text, end)
        if rest and rest.end() > end and text.startswith(("、", "及", "和", "与", "以及"), rest.end()):
            end = rest.end()  # the item the value is the start of (台北市 of 台北市古亭国小)
        while (sep := _LIST_ITEM.match(text, end)) is not None:
            end = sep.end()
    m = _LIST_END.match(text, end)
    if end == b and (lo == hi or not (several or m)):
        return a, b
    return spans[lo][0], m.end() if m else end


_PLACE_PHRASE_TAGS = frozenset({"n", "ns", "nt", "nz", "nr", "nrt", "j", "s", "m", "x", "ng", "zg"})
_PLACE_PHRASE_END = frozenset({"n", "ns", "nt", "nz", "s", "nr", "ng"})
_PLACE_PHRASE_SUFFIX = re.compile(r"(?:公司|网吧|车间|菜馆|饭店|酒店|宾馆|商场|超市|市场|工厂|厂|医院|学校|小学|中学|大学|学院|"
                                  r"法院|派出所|公安局|民政局|银行|小班|林班|大楼|大厦|广场|楼|室|号|路|街|巷|村|镇|乡|区|县|市|省)$")
PLACE_PHRASE = 30  # characters at most of a place widened over the nouns after it (`_place_phrase`)


def _place_phrase(text: str, a: int, b: int) -> tuple[int, int]:
    """A place value [a, b) widened over the nouns that follow it, before the next verb, preposition or
    punctuation, to the last one that names a place or an institution (成都市金牛区玉居庵东路菲城 + 网吧, 中国 +
    人民财产保险股份有限公司: `_PLACE_PHRASE_SUFFIX`): the whole place a judgment names, at most PLACE_PHRASE characters."""
    t = aligned(text)
    tags = pos_tags(t)
    k = next((i for i, w in enumerate(tags) if w[0] < b <= w[1]), None)
    if k is None or tags[k][1] != b:
        return a, b
    end = b
    for w in tags[k + 1:]:
        word = t[w[0]:w[1]]
        if w[1] - a > PLACE_PHRASE or w[2] not in _PLACE_PHRASE_TAGS \
                or w[2] == "x" and not (word == "、" and w[0] > 0 and t[w[0] - 1].isdigit() or word.isdigit()):
            break
        if w[2] in _PLACE_PHRASE_END and _PLACE_PHRASE_SUFFIX.search(word):
            end = w[1]
    return a, end


# a question asking for two counts at once (有几个村和社区？): the answer is the list of counts (8个村、2个社区)
_COUNTS_Q = re.compile(r"(?:几|多少)[个座名位条所家种只台部间]?[\u4e00-\u9fff]{1,6}?(?:和|及|与|、|以及)[\u4e00-\u9fff]{1,6}")
_COUNT_JOIN = re.compile(r"[\u4e00-\u9fff]{0,4}?(?:、|和|及|与|以及)")


def _counts(text: str, values: list[tuple[int, int]], a: int, b: int, asked: str) -> tuple[int, int]:
    """The count [a, b) widened to the list of counts it is part of, with the last one's noun when the
    question (`asked`, folded) names it (8个村、2个社区), for a question asking for two counts at once (`_COUNTS_Q`)."""
    spans = sorted(values)
    i = next((k for k, v in enumerate(spans) if v[0] <= a < v[1]), None)
    if i is None:
        return a, b
    lo = hi = i
    while hi + 1 < len(spans) and _COUNT_JOIN.fullmatch(text, spans[hi][1], spans[hi + 1][0]):
        hi += 1
    while lo > 0 and _COUNT_JOIN.fullmatch(text, spans[lo - 1][1], spans[lo][0]):
        lo -= 1
    if lo == hi:
        return a, b
    end = spans[hi][1]
    noun = next((end + k for k in range(4, 0, -1) if end + k <= len(text) and comparable(text[end:end + k]) in asked), end)
    return spans[lo][0], noun


# A why-question (REASON_KIND asks for the cause): not 名为什么 / 称为什么 / 被誉为什么 (为 + 什么: "what is it called") nor
# 什么事 (what happened).
_WHY_Q = re.compile(NAMED_AS_WHAT + r"为什么|为何|因何|何故|为啥|怎么会|原因|缘故|由来")


def asks_why(question: str) -> bool:
    """Whether a question asks for a cause (`_WHY_Q`): not 为 + 什么 + a noun's (当时为什么部落的官称: which tribe)."""
    q = aligned(question)
    if not _WHY_Q.search(comparable(q)):
        return False
    tags = pos_tags(q)
    for k, (a, b, _flag) in enumerate(tags):
        if comparable(q[a:b]) in ("为什么", "为何") and k + 2 < len(tags) and tags[k + 1][2].startswith("n") \
                and q[tags[k + 2][0]:tags[k + 2][1]] == "的":
            return bool(_WHY_Q.search(comparable(q[:a] + q[b:])))
    return True


def _cause_of_the_asked(scorer: "_Scorer", i: int) -> bool:
    """Whether unit i (stating a cause) is about what the why-question asks: it or the next unit of its
    sentence holds a term of the question of two or more characters that is no name nor party role
    (离婚 of 原告曹0与被告张x1因何离婚？ in 「原、被告因夫妻感情破裂,|在…调解离婚」), or the question has none."""
    asked = [t for t in scorer.terms if len(t) >= 2 and not _ROLE_WORDS.match(t) and not _ROLE.fullmatch(t)
             and not any(t in n or n in t for n in scorer.names)]
    if not asked:
        return True
    near = [i] + [j for j in (scorer.following[i],) if j is not None and scorer.candidates[j].sentence == scorer.candidates[i].sentence]
    return any(t in scorer.lowered[j] for j in near for t in asked)


_CAUSE_NEXT = re.compile(r"^(?:因此|所以|故而|因而|于是|从而|以致|才|遂)")


def _reasons(text: str) -> list[tuple[int, int]]:
    """Spans of a unit that state a cause: "因/由于/为了 …" to the end of its clause, and the clause
    before "因此/所以 …"."""
    spans = [(a, b) for a, b in cause_spans(text) if not _CAUSE_NEXT.match(aligned(text)[a:])]
    clauses = clause_spans(text, 0, len(text), min_clause=4)
    for i, (a, b) in enumerate(clauses[1:], start=1):
        if _CAUSE_NEXT.match(aligned(text[a:b]).lstrip()):
            spans.append(clauses[i - 1])
    return spans


def _best_clause(scorer: _Scorer, unit: Pick) -> tuple[int, int]:
    """[start, end) in the unit's text of the clause that best answers an untyped question, with its
    neighbour when it is too short to read; the whole unit when it is short already. The answer is
    where the question's words meet words the question does not have: a clause scores by the specific
    query terms it and its neighbours hold, times its share of new words — "属维多利亚港的一部份", not
    "九龙湾原指香港九龙半岛东面的海湾" that only restates the subject."""
    text = unit.text
    if len(text) <= SPAN_WHOLE:
        return 0, len(text)
    clauses = clause_spans(text, 0, len(text), min_clause=4)
    if len(text) <= SPAN_SENTENCE and not any(_TOPIC_END.search(comparable(text[a:b])) for a, b in clauses):
        return 0, len(text)  # a short sentence answers as a whole (CMRC's answers are sentences)
    pieces = [comparable(text[a:b]) for a, b in clauses]
    near = [scorer.clause_score(p) for p in pieces]

    def score(k: int) -> float:
        side = max([near[j] for j in (k - 1, k + 1) if 0 <= j < len(near)], default=0.0)
        novel = _novel_chars(pieces[k], scorer.q_grams) / max(1, len(re.sub(r"\W+", "", pieces[k])))
        return (near[k] + SPAN_SIDE_WEIGHT * side) * (SPAN_NOVELTY_FLOOR + novel)

    stating = [k for k, p in enumerate(pieces) if scorer.attribute and re.search(re.escape(scorer.attribute) + _STATES, p)]
    i = stating[0] if stating else max(range(len(clauses)), key=score)  # 权利范围是全部权利: the clause stating Y
    a, b = clauses[i]
    if b - a < SHORT_QUOTE and len(clauses) > 1:
        j = i + 1 if i + 1 < len(clauses) else i - 1
        a, b = min(a, clauses[j][0]), max(b, clauses[j][1])
        i = max(i, j)
    if _TOPIC_END.search(comparable(text[a:b])) and i + 1 < len(clauses):
        a, b = clauses[i + 1]  # what follows "…，关于财产，" is what the text says about it
    return _trim(text, a, b)


_TOPIC_END = re.compile(r"(?:关于|对于|至于)[^，,；;：:]{1,8}(?:问题|方面|部分)?[，,；;：:]?$")
_UNIT_IN_Q = re.compile(rf"(?:多少|几)({UNIT})")
_UNIT_CUES = [(re.compile(r"多长(?!时间)|多远|长度|全长|体长|身长|距离|多宽|多深|宽度|深度|身高"), re.compile(r"(?:米|公里|千米|公尺|英尺|英里|海里|公分)$")),
              (re.compile(r"血量|容量|容积|体积|排量"), re.compile(r"(?:升|毫升|ml|立方米|立方厘米|cc)$")),
              (re.compile(r"多高|海拔|高度"), re.compile(r"(?:米|公尺|英尺|公分)$")),
              (re.compile(r"多重|重量|体重"), re.compile(r"(?:吨|公斤|千克|克|磅|斤)$")),
              (re.compile(r"面积|多大"), re.compile(r"(?:平方公里|平方千米|平方米|公顷|亩|平方英里)$")),
              (re.compile(r"多久|多长时间|期限|几年"), re.compile(r"(?:年|个月|天|日|小时|分钟|周|星期)$")),
              (re.compile(r"几岁|多大年纪|年龄|岁数"), re.compile(r"岁$")),
              (re.compile(r"人口|多少人|几个人|人数"), re.compile(r"(?:人|万|亿|名)$")),
              (re.compile(r"利率|比例|百分比|税率|占比|比率|利息率"), re.compile(r"(?:%|‰|分|成)$|分之"))]


_PLACE_NOUN_Q = re.compile(r"哪(?:一|些)?[个所座家]?(城市|省份?|县|市|区|镇|乡|村|学校|医院|大学|学院|中学|小学|公司|法院|车站|机场|港口|寺|山|河|湖|岛|州)")
_PLACE_NOUNS = {"城市": ("市",), "省份": ("省",), "学校": ("学校", "学院", "大学", "中学", "小学", "学堂")}


def _noun_match(question: str, value: str) -> bool:
    """Whether a place value is of the kind the question asks for (哪一所大学 -> …大学, 哪个城市 -> …市)."""
    m = _PLACE_NOUN_Q.search(comparable(question))
    return bool(m) and comparable(value).endswith(_PLACE_NOUNS.get(m.group(1), (m.group(1),)))


def _unit_match(question: str, value: str) -> bool:
    """Whether the value carries the unit the question asks in (多少公里 -> …公里, 多长 -> …米)."""
    q, v = comparable(question), comparable(value)
    m = _UNIT_IN_Q.search(q)
    if m and v.endswith(m.group(1)):
        return True
    # the cue nearest the question word decides (人口的多少比例: a share, not a number of people)
    asked = re.search(r"多少|几|多[大长高远重久宽深]", q)
    at = asked.start() if asked else 0
    found = [(min(abs(c.start() - at) for c in cue.finditer(q)), unit) for cue, unit in _UNIT_CUES if cue.search(q)]
    return bool(found) and bool(min(found, key=lambda f: f[0])[1].search(v))


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and (text[a].isspace() or text[a] in "，,、；;：:"):
        a += 1
    while b > a and (text[b - 1].isspace() or text[b - 1] in "，,、；;：:。"):
        b -= 1
    return a, b


_VALUE_PREFIX = re.compile(r"^(?:人民币|约|近|共|达|逾|超过|计|合计|共计)+")
_FULL_DATE = re.compile(r"([0-9]{4})年0?([0-9]{1,2})月(?:0?([0-9]{1,2})[日号])?")


def _normal_value(value: str) -> str:
    """A value written one way: 5万元 / 50,000元 / 伍万元整 -> 50000元, 2015年07月03日 -> 2015年7月3日,
    ｍｇ／１００ｍｌ -> mg/100ml; other text folded as `comparable`."""
    v = _VALUE_PREFIX.sub("", re.sub(r"\s", "", comparable(value)))
    v = re.sub(r"整$", "", v)
    v = _FULL_DATE.sub(lambda m: f"{m.group(1)}年{int(m.group(2))}月" + (f"{int(m.group(3))}日" if m.group(3) else ""), v)
    m = re.fullmatch(rf"({NUM}(?:万|亿|千)?)(?:余|多)?(.*)", v)
    if m:
        n = numeral_value(m.group(1))
        if n is not None:
            unit = m.group(2)
            if unit == "‰":  # 20‰ = 2%
                n, unit = n / 10, "%"
            return ("%.6f" % n).rstrip("0").rstrip(".") + unit
    return v


def _same_value(x: str, y: str) -> bool:
    """Whether two values are the same answer (one contains the other once both are written one way)."""
    x, y = _normal_value(x), _normal_value(y)
    return x == y or (len(x) > 1 and len(y) > 1 and (_inside(x, y) or _inside(y, x)))


def _inside(x: str, y: str) -> bool:
    """Whether value x is part of value y, not the tail or head of a longer number (800元 is not in 1800元)."""
    digits = "0123456789.零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟"
    for m in re.finditer(re.escape(x), y):
        a, b = m.span()
        if not (a > 0 and y[a - 1] in digits and x[0] in digits) and not (b < len(y) and y[b] in digits and x[-1] in digits):
            return True
    return False


_ROLE_WORDS = re.compile(r"^[原被告人上诉申请第三双方]+$")  # 原被告, 被告人: the parties' roles, no names
# a party's role as a judgment names it; 原、被告 names both (被告人 is 被告, 被上诉人 is not 上诉人)
_ROLE = re.compile(r"原、?被告|被上诉人|上诉人|被申请人|申请人|被告人?|原告|第三人")
_QUESTION_ROLE = re.compile(r"^(?:那么?|那个|请问)?(被上诉人|上诉人|被申请人|申请人|被告人?|原告|第三人)(?![、和与及跟同])")
ROLE_PENALTY = 0.5  # a unit naming another party and not the one the question asks about (被告 … 原告王x0每月支付1000元)


def _roles(text: str) -> set[str]:
    out: set[str] = set()
    for m in _ROLE.finditer(text):
        w = m.group()
        out |= {"原告", "被告"} if w.startswith("原") and w.endswith("被告") else {"被告" if w == "被告人" else w}
    return out


def _clause_around(unit, span: AnswerSpan) -> str:
    """The clause of `unit` (a Pick: text and document offsets) that holds `span` (`clause_spans`, no
    merging of short ones): the party paying is named in it (离婚后原告支付了1200元抚养费)."""
    a, b = span.start - unit.start, span.end - unit.start
    if not (0 <= a <= b <= len(unit.text)):
        return unit.text
    return next((unit.text[x:y] for x, y in clause_spans(unit.text, 0, len(unit.text), min_clause=1)
                 if x <= a < y), unit.text)


def question_role(query: str) -> str | None:
    """The party a question asks about when it opens with one's role (被告 of 被告每月支付多少抚养费？)."""
    m = _QUESTION_ROLE.match(aligned(query).strip())
    return None if m is None else ("被告" if m.group(1) == "被告人" else m.group(1))


def _other_party(role: str | None, text: str) -> bool:
    """Whether a unit names another party's role and not `role` (its value is that party's, not the asked one's)."""
    if role is None:
        return False
    found = _roles(text)
    return bool(found) and role not in found


def question_names(query: str) -> list[str]:
    """The names a question gives (people, places, masked parties, dotted foreign names), folded."""
    spans = entity_spans(query, frozenset({"nr", "nrt", "nrfg", "ns", "masked"}))
    spans += [m.span() for m in DOTTED_NAME.finditer(aligned(query))]
    names = [comparable(query[a:b]) for a, b in merge_spans(spans)]
    return [n for n in names if not _ROLE_WORDS.match(n)]


_SUBJECT_JOINS = frozenset("与和及同跟、·・")


def _subject_terms(query: str, terms: list[str]) -> list[str]:
    """The question's key terms that name its subject: those in its opening noun phrase, up to the first
    verb, pronoun, adverb or particle ("蓍" of 蓍分布在哪些地区, "天瑞 公司 旻 12" of 天瑞公司与旻12公司
    什么时候…, "原告 被告" of 原告和被告何时离婚)."""
    t = aligned(query)
    end = 0
    for a, b, flag in pos_tags(t):
        word = t[a:b]
        if word in _SUBJECT_JOINS or flag == "m" and word.isdigit():
            continue
        if flag[:1] in ("v", "r", "d", "u", "c", "p", "f", "m", "x") and flag != "vn" or flag == "vn" and a == 0:
            break
        end = b
    head = comparable(t[:end])
    return [x for x in terms if x in head and not _ROLE_WORDS.match(x)]


def _naming_documents(scorer: _Scorer) -> set[str] | None:
    """The documents of the answer's own passages that hold every name the question gives (曹0, 张x6;
    not the parties' roles), when the question gives any and some documents, not all, hold them; else None."""
    names = scorer.names
    if not names:
        return None
    texts: dict[str, str] = {}
    for n in sorted({u.n for u in scorer.candidates if u.n <= scorer.max_passages}):
        doc = next(u.doc_id or u.doc for u in scorer.candidates if u.n == n)
        texts[doc] = texts.get(doc, "") + comparable(scorer.passages[n - 1])
    named = {doc for doc, text in texts.items() if all(name in text for name in names)}
    return named if named and len(named) < len(texts) else None


def names_held(question: str, text: str) -> bool:
    """Whether a text (folded) holds what the question names: its names (曹0) and its subject's terms
    (洋菜胶 of 洋菜胶由于具有什么特质…; time words such as 后来 and the parties' roles are not the subject)."""
    if not all(n in text for n in question_names(question)):
        return False
    t = aligned(question)
    times = {comparable(t[a:b]) for a, b, flag in pos_tags(t) if flag == "t"}
    subject = [x for x in _subject_terms(question, key_terms(question) or query_terms(question)) if x not in times]
    return sum(x not in text for x in subject) <= len(subject) // 3


def _about(scorer: _Scorer):
    """Whether a document (its passages read) is about what the question names: it holds the names the
    question gives and all but a third of the terms of its subject."""
    texts: dict[str, str] = {}
    for n in sorted({u.n for u in scorer.candidates}):
        doc = next(u.doc_id or u.doc for u in scorer.candidates if u.n == n)
        texts[doc] = texts.get(doc, "") + comparable(scorer.passages[n - 1])
    names = question_names(scorer.query)
    subject = _subject_terms(scorer.query, scorer.terms)

    def about(doc: str) -> bool:
        return all(n in texts[doc] for n in names) and sum(t not in texts[doc] for t in subject) <= len(subject) // 3

    return about


def _named_instead(scorer: _Scorer, first: int, span: AnswerSpan | None, max_chars: int, n_hits: int):
    """When the best unit's document is not about what the question names (徐0, 蓍) and a unit of one
    that is, among the answer's own passages, scores at least AMBIGUITY_RATIO of it with a supported
    quote holding a value of the asked-for type: (its index, its group, the marked value); else None."""
    c = scorer.candidates
    if scorer.kind not in TYPED or span is None or span.kind is None:
        return None
    about = _about(scorer)
    if about(c[first].doc_id or c[first].doc):
        return None
    for i in scorer.order(everywhere=True):
        u = c[i]
        if u.score < AMBIGUITY_RATIO * c[first].score:
            break
        if u.n > n_hits or not about(u.doc_id or u.doc):
            continue
        group = scorer.around(i, min(max_chars, CLAUSE_MAX_CHARS) if u.clause else max_chars)
        picks = check_picks(scorer.query, [c[j] for j in group], scorer.kind)
        if min(p.support for p in picks) < AMBIGUITY_SUPPORT:
            continue
        other = _locate(scorer, picks, u)
        if other is not None and other.kind is not None:
            return i, group, other
    return None


def _alternatives(scorer: _Scorer, first: int, span: AnswerSpan | None, max_chars: int) -> list[tuple[AnswerSpan, list[Pick]]]:
    """Other documents' answers of the asked-for type that differ from the best one (see the module
    docstring): [(span, picks)] for each such document, best first. Both documents must hold the names
    the question gives and all but a third of the terms of its subject (`_subject_terms`)."""
    c = scorer.candidates
    yes_no = span is not None and span.kind == YES_NO_KIND
    if (scorer.kind not in TYPED and not yes_no) or span is None or span.kind is None:
        return []
    best_doc = c[first].doc_id or c[first].doc
    about = _about(scorer)
    if not about(best_doc):
        return []  # the chosen document is not (only) about what the question names: no disagreement to report
    out, seen_docs, values = [], {best_doc}, [span.text]
    rate = _as_rate if _RATE_Q.search(comparable(scorer.query)) else (lambda v: v)
    for i in scorer.order(everywhere=True):
        u = c[i]
        doc = u.doc_id or u.doc
        if u.score < AMBIGUITY_RATIO * c[first].score:
            break
        if doc in seen_docs:
            continue
        seen_docs.add(doc)
        if not about(doc):
            continue  # the question names someone (or something: 蓍, 天瑞公司) this document does not
        picks = [c[j] for j in scorer.around(i, max_chars)]
        check_picks(scorer.query, picks, scorer.kind)
        if min(p.support for p in picks) < AMBIGUITY_SUPPORT:
            continue
        other = _locate(scorer, picks, u)
        if other is None or other.kind is None or (yes_no and other.kind != YES_NO_KIND):
            continue
        if yes_no and any(negated(other.text, scorer.verbs) == negated(v, scorer.verbs) for v in values):
            continue  # says the same: both did, or both did not
        if not yes_no and any(_same_value(rate(other.text), rate(v)) for v in values):
            continue
        if scorer.kind in ("amount", "number") and _value_unit(rate(other.text)) != _value_unit(rate(span.text)):
            continue  # 15% or an account number is no other answer to 36个月 or 50000元
        values.append(other.text)
        out.append((other, picks))
        if len(out) >= AMBIGUITY_SHOWN:
            break
    return out


_RATE_Q = re.compile(r"利率|利息率|年息|月息|费率|税率|比率|比例|百分")


def _as_rate(value: str) -> str:
    """A rate as a percentage, for a rate question (月利率 2分 = 2% = 20‰, 1.5厘 = 0.15%): 分 and 厘 read as
    percent and tenths of a percent (‰ is read as such by `_normal_value`)."""
    v = _normal_value(value)
    m = re.fullmatch(r"([0-9.]+)(分|厘)", v)
    if m:
        n = float(m.group(1)) / (1 if m.group(2) == "分" else 10)
        return ("%.6f" % n).rstrip("0").rstrip(".") + "%"
    return v


def _value_unit(value: str) -> str:
    """The unit of a number or amount written one way (元 of 5万元, mg/100ml, 个月; "" for a bare number;
    "%" for a rate in % or ‰)."""
    v = _normal_value(value)
    m = re.match(r"[0-9.]+", v)
    unit = v[m.end():] if m else v
    if unit == "年" and m and len(m.group()) == 4:
        return "year"  # 2014年: a date, not a duration
    return "duration" if unit in _DURATIONS else unit


_DURATIONS = frozenset("年 个月 月 周 星期 天 日 小时 分钟 个小时 周年 年半".split())


def _read(scorer: _Scorer, query: str, hits: list[Hit], reader) -> tuple[list[int], AnswerSpan, str, float] | None:
    """The reader's own answer (services.answers.reader) when it scores at least the model's threshold
    for the question's type: (the candidate units holding it, the span clipped to them with exact
    document offsets, "span", its score); None otherwise (the quote is chosen by the heuristics)."""
    from services.answers.reader import read_spans

    if not reader:
        return None
    top = hits[:min(reader.top, scorer.max_passages)]
    c = scorer.candidates
    found = read_spans(query, [h.text for h in top], reader)[:1]
    for r in found:
        if r.score < reader.threshold_for(scorer.kind):
            break
        hit = top[r.passage]
        start, end = hit.start + r.start, hit.start + r.end
        doc_id = getattr(hit.chunk, "doc_id", "") or ""
        units = [i for i, u in enumerate(c) if u.doc == hit.doc and (u.doc_id or "") == doc_id
                 and u.start < end and start < u.end and u.n <= scorer.max_passages]
        if not units or len({c[i].n for i in units}) > 1:
            break  # the answer is in no quotable unit (a heading, a deduplicated window)
        units.sort(key=lambda i: c[i].start)
        unit = c[units[0]]
        start, end = max(start, unit.start), min(end, c[units[-1]].end)
        base = scorer.starts[unit.n - 1]
        text = scorer.passages[unit.n - 1][start - base:end - base]
        a, b = _trim(text, 0, len(text))
        if b <= a:
            break
        kind = scorer.kind if scorer.kind in TYPED else READER_KIND
        return units, AnswerSpan(text[a:b], unit.doc, start + a, start + b, unit.n, kind), "span", r.score
    return None


def _read_inside(scorer: _Scorer, query: str, reader, span: AnswerSpan | None) -> tuple[AnswerSpan, float] | None:
    """The reader's best span inside the units the heuristics chose (scorer.group) when it scores at
    least the model's `inside_threshold`: (the span, its score); None otherwise."""
    if reader is None or reader.inside_threshold is None:
        return None
    c = scorer.candidates
    units = [c[i] for i in scorer.group if c[i].n <= min(reader.top, len(scorer.passages))]
    if not units:
        return None
    passages = scorer.passages[:reader.top]
    ranges = [(u.n - 1, u.start - scorer.starts[u.n - 1], u.end - scorer.starts[u.n - 1]) for u in units]
    r = reader.best_in(query, passages, ranges)
    if r is None or r.score < reader.inside_threshold:
        return None
    unit = next(u for u in units if u.n - 1 == r.passage and u.start - scorer.starts[u.n - 1] <= r.start)
    start = scorer.starts[r.passage]
    kind = scorer.kind if scorer.kind in TYPED else READER_KIND
    return AnswerSpan(r.text, unit.doc, start + r.start, start + r.end, unit.n, kind), r.score


def pinpoint(query: str, hits: list[Hit], max_sentences: int = 3, max_chars: int = MAX_CHARS,
             max_passages: int = 4, ambiguity: bool = True, reader=None, more: list[Hit] | None = None,
             asked: str | None = None) -> Extract:
    """The pinpointed extract for `query` from `hits` (see the module docstring); an Extract with no
    picks when no passage has a usable unit. `ambiguity=False` never reports different answers
    (a follow-up whose document is fixed by the conversation). `reader`: None — the installed reader
    (services.answers.reader) marks the answer when there is one, False — the heuristics only, or a
    Reader to use. `more`: further passages (one per other document, see `ambiguity_passages`) read only
    to find other documents' answers; those quoted are numbered after `hits` and returned in
    `Extract.more_sources`. `asked`: the question as the user asked it when `query` is a rewrite (the names
    that keep the answer to the documents holding them are those the user gave, not the ones carried over)."""
    scorer = _Scorer(query, hits, max_passages, asked=asked)
    if reader is None:
        from services.answers.reader import load_reader

        reader = load_reader()
    found = _read(scorer, query, hits, reader)
    picks = _pick(scorer, max_sentences, max_chars, forced=found[0] if found else None)
    if not picks:
        return Extract([], kind=scorer.kind)
    first = scorer.first
    best = scorer.candidates[first]
    reading = (found[2], found[3]) if found else None
    span = found[1] if found else _locate(scorer, [scorer.candidates[i] for i in scorer.group],
                                          best if scorer.stated is None else scorer.candidates[scorer.stated])
    inside = None if found or reader is False or span is not None and span.kind == MEANING_KIND \
        else _read_inside(scorer, query, reader, span)
    if inside:
        span, reading = inside[0], ("inside", inside[1])
    span, picks = _with_parallel_run(scorer, span, picks)
    wide = _Scorer(query, hits + list(more), max_passages, read_from=len(hits) + 1, asked=asked) if ambiguity and more else scorer
    named = _named_instead(wide, first, span, max_chars, len(hits)) if ambiguity else None
    if named:  # the question names its subject and the best unit's document does not: answer from one that does
        first, group, span = named
        best, reading = wide.candidates[first], None
        picks = [wide.candidates[i] for i in group]
    picks = _merged(wide, picks)
    span = _span_before_next_clause(span)
    picks = [_before_next_clause(p, span) for p in picks]
    extract = Extract(picks, span, scorer.kind, reading=reading)
    others = _alternatives(wide, first, span, max_chars) if ambiguity else []
    if others:
        primary = [p for p in picks if (p.doc_id or p.doc) == (best.doc_id or best.doc)]
        for p in primary:
            p.support = max(p.support, ANSWERS_THRESHOLD)
        others = [(o, _merged(wide, ps)) for o, ps in others]
        others, extract.more_sources = _renumbered(others, len(hits), list(more or []))
        extract.picks = sorted(primary + [p for _, ps in others for p in ps], key=lambda p: (p.n, p.start))
        extract.alternatives = [s for s, _ in others]
        extract.text, extract.emphasis = ambiguous_text(span, primary, others)
    else:
        if span is not None and _other_party(wide.role, _clause_around(best, span)):
            span = extract.span = None  # another party's value (原告支付了1200元 for 被告…？): quoted, never marked
        extract.text, extract.emphasis = marked_text(picks, span)
    return extract


# Judgments without punctuation run one clause into the next (…的房屋一套本案在审理过程中, …生活费800元因此,
# …随母亲曹0生活上述事实): words that open a new clause there, right after a character that is no punctuation
_NEXT_CLAUSE = re.compile(r"(?<=[^\s，,；;。！？!?：:、（(“\"并而也亦就都才正又])"
                          r"(?:本案|因此|上述事实|经审理查明|另查明|又查明|庭审中|庭审过程中|审理过程中|本院认为|综上)")


_TRAILING_DATE = re.compile(r"(?<=[\u4e00-\u9fff])(?<![于在至到为是止起及和与、从自截即或满后前今])"
                            r"[0-9]{4}年[0-9]{1,2}月[0-9]{1,2}日$")


def _next_clause_at(text: str, at_least: int = 2) -> int | None:
    """Where a judgment's next clause starts inside `text` without punctuation before it, if it does."""
    m = _NEXT_CLAUSE.search(text, at_least)
    return m.start() if m else None


def _span_before_next_clause(span: AnswerSpan | None) -> AnswerSpan | None:
    """The marked span cut before a next clause it runs into (荣昌县…的房屋一套|本案在审理过程中)."""
    if span is None:
        return span
    cut = _next_clause_at(span.text)
    return span if cut is None else replace(span, text=span.text[:cut], end=span.start + cut)


def _before_next_clause(pick: Pick, span: AnswerSpan | None) -> Pick:
    """A clause's quote cut before the tail it runs into when that tail is the start of a next clause with no
    punctuation after it (…生活费800元|因此); never before the marked span's end."""
    if not pick.clause:
        return pick
    cut = _next_clause_at(pick.text)
    if cut is None:  # …于2012年2月10日出生|2013年1月14日: a full date at the end right after a word opens the next clause
        m = _TRAILING_DATE.search(pick.text)
        cut = m.start() if m and m.start() >= 2 else None
    if cut is None or any(ch in "，,；;。！？!?：:" for ch in pick.text[cut:]):
        return pick
    if span is not None and (span.doc, span.n) == (pick.doc, pick.n) and pick.start <= span.start < pick.end \
            and span.end > pick.start + cut:
        return pick
    return replace(pick, text=pick.text[:cut], end=pick.start + cut)


def _renumbered(others: list[tuple[AnswerSpan, list[Pick]]], n_hits: int,
                more: list[Hit]) -> tuple[list[tuple[AnswerSpan, list[Pick]]], list[Hit]]:
    """Alternatives quoting passages of `more` renumbered n_hits + 1, n_hits + 2, … in the order they are
    first quoted; (the alternatives, those passages)."""
    used: dict[int, int] = {}
    for _, ps in others:
        for p in ps:
            if p.n > n_hits and p.n not in used:
                used[p.n] = n_hits + 1 + len(used)
    if not used:
        return others, []
    out = [(replace(s, n=used.get(s.n, s.n)), [replace(p, n=used.get(p.n, p.n)) for p in ps]) for s, ps in others]
    return out, [more[n - n_hits - 1] for n in used]


def ambiguity_passages(candidates: list[Hit], hits: list[Hit], depth: int | None = None,
                       documents: int | None = None) -> list[Hit]:
    """The best passage of each document the answer's `hits` do not come from, among the first `depth`
    retrieval candidates (AMBIGUITY_DEPTH), at most `documents` of them (AMBIGUITY_DOCUMENTS): where other
    judgments' answers are, when the top passages all come from one or two documents."""
    seen = {getattr(h.chunk, "doc_id", "") or h.doc for h in hits}
    out = []
    for h in candidates[:depth or AMBIGUITY_DEPTH]:
        doc = getattr(h.chunk, "doc_id", "") or h.doc
        if doc not in seen:
            seen.add(doc)
            out.append(h)
            if len(out) >= (documents or AMBIGUITY_DOCUMENTS):
                break
    return out


# --- the answer text ---------------------------------------------------------------------------------
def _quote_lines(picks: list[Pick], span: AnswerSpan | None, offset: int) -> tuple[str, list[tuple[int, int]]]:
    """Each group of adjacent picks as one line ending with its [n]; the span's position in the text."""
    lines, emphasis, pos = [], [], offset
    for g in _groups(picks):
        line = "".join(p.text for p in g)
        if span is not None and g[0].n == span.n:
            inside = [p for p in g if p.start <= span.start and span.end <= p.end]
            if inside:
                a = pos + sum(len(p.text) for p in g[:g.index(inside[0])]) + span.start - inside[0].start
                emphasis.append((a, a + span.end - span.start))
        lines.append(line + f"[{g[0].n}]")
        pos += len(lines[-1]) + 1
    return "\n".join(lines), emphasis


def extractive_text(picks: list[Pick]) -> str:
    """The plain answer text: the label, then each quoted passage followed by its [n]."""
    return EXTRACTIVE_LABEL + "\n\n" + _quote_lines(picks, None, 0)[0]


def marked_text(picks: list[Pick], span: AnswerSpan | None) -> tuple[str, list[tuple[int, int]]]:
    """(text, emphasis): a typed answer (800元, 荷兰, 2011年7月21日) first on its own line, then the label
    and each quoted passage with its [n]; `emphasis` holds the [start, end) of the text to show bold
    (the answer line, and the span inside its quote)."""
    head = (span.text + "\n\n") if span is not None and span.kind is not None else ""
    quotes, emphasis = _quote_lines(picks, span, len(head) + len(EXTRACTIVE_LABEL) + 2)
    return head + EXTRACTIVE_LABEL + "\n\n" + quotes, ([(0, len(span.text))] if head else []) + emphasis


def ambiguous_text(span: AnswerSpan, primary: list[Pick],
                   others: list[tuple[AnswerSpan, list[Pick]]]) -> tuple[str, list[tuple[int, int]]]:
    """"有 N 份文档给出不同答案：" then one line per document: its answer, its file, its quote [n]."""
    text = AMBIGUOUS_TEMPLATE.format(n=1 + len(others)) + "\n\n"
    emphasis = []
    for s, picks in [(span, primary)] + others:
        lead = f"{s.text}（{s.doc}）："
        emphasis.append((len(text), len(text) + len(s.text)))
        quotes, _ = _quote_lines(picks, None, 0)
        text += lead + quotes.replace("\n", "") + "\n"
    return text.rstrip("\n"), emphasis


def extractive_answer(query: str, hits: list[Hit], **kwargs) -> tuple[str, list[Pick]]:
    """(answer text, picks) for `query` from `hits`; ("", []) when no passage has a usable unit."""
    extract = pinpoint(query, hits, **kwargs)
    return (extract.text, extract.picks) if extract.picks else ("", [])
