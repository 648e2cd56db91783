"""Pseudo-queries for fine-tuning: what a user might type to find a passage, made from the passage.

Offline (no LLM), two kinds, both measured in bench/finetune.py:
- *Answer-masked questions*: a sentence (or clause run) that states a fact with a recognisable
  answer — a date, an amount of money, a number with its unit, a 《title》 — becomes a question by
  replacing that answer with a question word ("被告每月支付生活费800元" → "被告每月支付生活费多少钱？").
  The positive is the passage *with* the sentence: like a real user's question, the query shares the
  passage's context words but not the answer. Preferred when a chunk has such a sentence.
- *Inverse cloze* (fallback): a sentence is the query and the passage without it the positive.

Sentences at a chunk's cut edges are skipped (a query starting mid-word teaches nothing), text
without sentence punctuation (court judgments, OCR) is cut at clause marks instead, and positives are
a window of the passage around the sentence so training can truncate at 128 tokens (~3x cheaper
per step than 256) without losing the part the query is about.

With an LLM: 2–3 questions per passage in the passage's script (one call each).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from services import errors
from services.documents.text import split_sentences
from services.documents.tokenizer import to_simplified

WINDOW = 220  # characters of passage kept around the query's sentence (~128 e5 tokens with the title)
_NUMBER = r"(?<!第)(?:[0-9][0-9,.]*|[一二三四五六七八九十百千万两零〇点點]+)"
_UNITS = ("个月|個月|平方公里|平方米|公里|千米|公斤|千克|小时|小時|个|個|年|天|日|次|人|名|岁|歲|米|吨|噸|件|台|辆|輛|"
          "户|戶|股|份|项|項|座|所|种|種|届|屆|倍|位|条|條|家|%|％")
_PLACE = ("省|市|县|縣|区|區|镇|鎮|乡|鄉|村|路|街|医院|醫院|法院|派出所|公安局|银行|銀行|公司|学校|學校|小学|小學|中学|中學|"
          "大学|大學|事务所|事務所")
_REGIONS = set("省市县縣区區镇鎮乡鄉村路街")


def _where(m: re.Match) -> tuple[str, str]:
    """哪里 for a region, 哪个/哪家 + the kind of place for an institution ("在哪家医院")."""
    kind = m.group("kind")
    if kind in _REGIONS:
        return "哪里", "哪裡"
    return ("哪家" + kind, "哪家" + kind) if kind in ("公司", "银行", "銀行", "医院", "醫院") else ("哪个" + kind, "哪個" + kind)


# (pattern, question words as (simplified, traditional) pairs or a function of the match); the
# first pattern that matches a sentence wins; several words: one at random (users ask both ways)
_ANSWERS = [
    (re.compile(r"(?:\d{4}|[一二〇零○]{4})年(?!龄|齡)(?:\d{1,2}月(?:\d{1,2}日)?)?|\d{1,2}月\d{1,2}日"),
     [("何时", "何時"), ("什么时候", "什麼時候")]),
    (re.compile(rf"(?:人民币)?{_NUMBER}(?:万|亿|億)?元"), [("多少钱", "多少錢"), ("多少", "多少")]),
    (re.compile(rf"{_NUMBER}(?={_UNITS})"), [("多少", "多少")]),
    (re.compile(r"《[^》]{1,30}》"), [("什么", "什麼")]),
    (re.compile(rf"(?<=[在于於至到往向])[\u4e00-\u9fff]{{2,10}}(?P<kind>{_PLACE})"), _where),
]
_CLAUSE_END = "，,：:；;"
_SENTENCE_END = "。！？!?；;…」』”）)"
_TRIM = "。！？!?；;，,：:、 "


@dataclass
class PseudoQuery:
    query: str
    positive: str  # the passage text the query should find
    kind: str  # "question" (answer-masked) | "cloze" (inverse cloze)


def offline_queries(passage: str, body: str, rng: random.Random, limit: int = 1,
                    cut_start: bool = False) -> list[PseudoQuery]:
    """Up to `limit` pseudo-queries from one chunk, each from a different sentence.

    `passage` is the chunk's index text (title line + `body`), `body` its text; `cut_start` says the
    chunk starts inside a sentence of its document (its first sentence is a fragment)."""
    prefix = _title_line(passage, body)
    units = _units(body, cut_start)
    traditional = to_simplified(body) != body
    questions = {q: span for span in units if (q := _masked_question(body[span[0]:span[1]], traditional, rng))}
    questions = [(span, q) for q, span in questions.items()]  # one per distinct question
    rng.shuffle(questions)
    out: list[PseudoQuery] = []
    used = set()
    for (a, b), question in questions[:limit]:
        out.append(PseudoQuery(question, prefix + _window(body, a, b), "question"))
        used.add((a, b))
    for a, b in _most_informative(units, body, rng):
        if len(out) >= limit:
            break
        if (a, b) in used:
            continue
        query = body[a:b].strip().rstrip(_TRIM)
        rest = _window(body, a, b).replace(body[a:b], "", 1).strip()
        if len(rest) >= max(20, len(query)):  # enough of the passage left to be found by
            out.append(PseudoQuery(query, prefix + rest, "cloze"))
    return out


def _title_line(passage: str, body: str) -> str:
    """What the chunk's index text `passage` puts in front of its text `body` (the title line, or "")."""
    return passage[:len(passage) - len(body)] if passage.endswith(body) else ""


def starts_inside_a_sentence(document: str, start: int) -> bool:
    """Whether a chunk starting at `start` of `document` starts in the middle of a sentence or clause."""
    return start > 0 and document[start - 1] not in _SENTENCE_END + _CLAUSE_END + "\n"


def _units(text: str, cut_start: bool, shortest: int = 8, longest: int = 80) -> list[tuple[int, int]]:
    """Spans of whole sentences of `shortest`–`longest` characters (clause runs when the text has
    fewer than two sentences), without fragments cut by the chunk's edges."""
    spans = [(a, b) for a, b in split_sentences(text) if text[a:b].strip()]
    if len(spans) < 2:
        spans = _clause_runs(text, shortest, min(longest, 60))
    if spans and cut_start:
        spans = [s for s in spans if s[0] > 0]
    end = len(text.rstrip())
    if text[:end][-1:] not in _SENTENCE_END + _CLAUSE_END:  # the chunk ends mid-sentence
        spans = [s for s in spans if s[1] < end]
    return [(a, b) for a, b in spans if shortest <= len(text[a:b].strip()) <= longest]


def _clause_runs(text: str, shortest: int = 8, longest: int = 60) -> list[tuple[int, int]]:
    """Spans of one to three consecutive clauses (split at ，,：:；;) of `shortest`–`longest` characters."""
    bounds = [0] + [m.end() for m in re.finditer(f"[{_CLAUSE_END}]", text)] + [len(text)]
    bounds = sorted(set(bounds))
    runs = []
    for i in range(len(bounds) - 1):
        for n in (1, 2, 3):
            if i + n < len(bounds) and shortest <= len(text[bounds[i]:bounds[i + n]].strip()) <= longest:
                runs.append((bounds[i], bounds[i + n]))
                break
    return runs


def _masked_question(sentence: str, traditional: bool, rng: random.Random) -> str | None:
    """The sentence as a question about one of its answers (date, money, number, title, place), or None."""
    for pattern, words in _ANSWERS:
        matches = list(pattern.finditer(sentence))
        if matches:
            m = rng.choice(matches)
            simplified, trad = words(m) if callable(words) else rng.choice(words)
            a, b = _clause_around(sentence, m.start(), m.end())
            question = (sentence[a:m.start()] + (trad if traditional else simplified) + sentence[m.end():b])
            question = question.strip().strip(_TRIM)
            if len(re.findall(r"[\u4e00-\u9fff]", question)) >= 8:  # enough context to tell passages apart
                return question + "？"
            return None
    return None


def _clause_around(sentence: str, start: int, end: int, shortest: int = 12, longest: int = 60) -> tuple[int, int]:
    """The clause holding [start, end), widened by preceding clauses while shorter than `shortest`."""
    bounds = [0] + [m.end() for m in re.finditer(f"[{_CLAUSE_END}]", sentence)] + [len(sentence)]
    a = max(x for x in bounds if x <= start)
    b = min(x for x in bounds if x >= end)
    while b - a < shortest and a > 0:
        previous = max(x for x in bounds if x < a)
        if b - previous > longest:
            break
        a = previous
    return a, b


def _most_informative(units: list[tuple[int, int]], text: str, rng: random.Random) -> list[tuple[int, int]]:
    """Units ordered best-first for an inverse-cloze query: a random one of the three with the most
    distinct Chinese characters, then the rest."""
    ranked = sorted(units, key=lambda s: -len(set(re.findall(r"[\u4e00-\u9fff]", text[s[0]:s[1]]))))
    head = ranked[:3]
    rng.shuffle(head)
    return head + ranked[3:]


def _window(text: str, start: int, end: int, size: int = WINDOW) -> str:
    """About `size` characters of `text` around [start, end), always holding all of it."""
    spare = max(0, size - (end - start))
    a = max(0, start - spare // 2)
    b = min(len(text), end + spare - (start - a))
    a = max(0, min(a, b - size))
    return text[a:b].strip()


def window_for(passage: str, body: str, question: str, size: int = WINDOW) -> str:
    """The ~`size`-character window of `body` sharing the most character bigrams with `question`
    (an LLM's question says nothing of where its answer is), behind `passage`'s title line."""
    prefix = _title_line(passage, body)
    if len(body) <= size:
        return prefix + body
    wanted = {question[i:i + 2] for i in range(len(question) - 1)}
    starts = range(0, len(body) - size + 50, 50)
    best = max(starts, key=lambda a: sum(body[i:i + 2] in wanted for i in range(a, min(len(body), a + size) - 1)))
    return prefix + body[best:best + size].strip()


def llm_queries(llm, text: str) -> list[str]:
    """2–3 questions a user would type about a passage, in its script (one LLM call)."""
    prompt = ("根据下面的资料，写出 2 到 3 个用户可能会问、且资料能回答的问题。使用与资料相同的文字（简体或繁体），"
              "每行一个问题，不要编号，不要其他内容。\n\n资料：\n" + text[:1200])
    try:
        reply = llm.complete([{"role": "user", "content": prompt}], max_tokens=200)
    except errors.LLMError:
        return []
    lines = [re.sub(r"^[\s\d.、\-*]+", "", line).strip() for line in reply.splitlines()]
    return [q for q in lines if 4 <= len(q) <= 80][:3]
