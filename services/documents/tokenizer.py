"""Jieba tokenisation for BM25 (and for highlighting query terms in the UI).

Search mode (`cut_for_search`) also emits the short words inside long ones (中华人民共和国 ->
中华, 华人, 人民, 共和, 共和国, ...), which raises recall for Chinese keyword search. Text is
NFKC-normalised and lower-cased first; punctuation, whitespace and stopwords are dropped. Works on
traditional Chinese too: jieba's dictionary is simplified, but queries and documents are cut the
same way, so their tokens still meet — and better still, traditional characters are mapped to
simplified ones first (OpenCC t2s, ~20M chars/s), so jieba's dictionary applies and a traditional
query matches a simplified document and vice versa.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path

from services.documents.text import normalize

_WORD = re.compile(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", re.IGNORECASE)

STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 也 而 就 都 又 并 被 把 将 对 于 从 以 之 其 这 那 这个 那个 这些 那些 "
    "一个 一种 我 你 他 她 它 我们 你们 他们 她们 它们 着 过 吗 呢 吧 啊 呀 么 么 什么 哪 哪些 哪个 "
    "谁 怎么 怎样 如何 为什么 为何 多少 几 是否 有 没有 个 们 等 等等 所 该 此 由 为 因为 所以 但 "
    "但是 如果 则 即 及其 以及 而且 并且 还 还是 已 已经 曾 曾经 呢 啦 哦 嗯 "
    "這 那 這個 這些 們 為 於 與 對 從 將 麼 甚麼 什麼 哪裡 誰 怎麼 為什麼 為何 幾 個 沒有 "
    "a an the of to in on for and or is are was were be by with as at".split()
)

_lock = threading.Lock()
# jieba's HMM finds out-of-dictionary words (names) but costs ~40% of tokenising speed
# (350k vs 580k chars/s here); see bench/retrieval.py for the quality side. WENDAO_JIEBA_HMM=1 turns it on.
USE_HMM = os.environ.get("WENDAO_JIEBA_HMM", "0") == "1"


@lru_cache(maxsize=1)
def _t2s():
    """OpenCC traditional->simplified converter, or None when opencc is not installed."""
    try:
        import opencc

        return opencc.OpenCC("t2s")
    except Exception:
        return None


def to_simplified(text: str) -> str:
    converter = _t2s()
    return converter.convert(text) if converter else text


def comparable(text: str) -> str:
    """Text in the form tokens are matched against: NFKC, lower-case, simplified characters."""
    return to_simplified(normalize(text).lower())


def term_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Where the terms occur in `text` as merged [start, end) spans of the original text, for
    highlighting matches; built from `term_matches`, so full-width, upper-case, traditional or
    Kangxi-radical spellings are highlighted where the query's terms match them."""
    merged: list[tuple[int, int]] = []
    for a, b, _term in term_matches(text, terms):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def term_matches(text: str, terms: list[str]) -> list[tuple[int, int, str]]:
    """Every occurrence of each term (a `query_terms` token) in `text`: sorted (start, end, term)
    with exact offsets into the original text, such that `comparable(text[start:end]) == term`.

    Matching runs on the comparable form (NFKC, lower case, simplified), built piece by piece so
    each folded character knows the original characters it came from; a length-changing fold
    (ＧＤＰ -> gdp is 1:1, but 'İ'.lower() is two characters) therefore cannot shift offsets.
    """
    folded, owner, pieces = _folded_with_origin(text)
    found = set()
    for term in {t for t in terms if t}:
        i = folded.find(term)
        while i >= 0:
            a, b = pieces[owner[i]][0], pieces[owner[i + len(term) - 1]][1]
            if comparable(text[a:b]) == term:  # a match inside one piece's fold is no match
                found.add((a, b, term))
            i = folded.find(term, i + 1)
    return sorted(found)


def _folded_with_origin(text: str) -> tuple[str, list[int], list[tuple[int, int]]]:
    """`text` in comparable form, the piece each folded character comes from, and the pieces'
    [start, end) offsets. A piece is a character with the combining marks that follow it (NFKC
    composes across those); whitespace folds to one space, as `normalize` collapses it."""
    pieces = _pieces(text)
    parts, owner = [], []
    for k, (a, b) in enumerate(pieces):
        piece = text[a:b]
        part = " " if piece.isspace() else normalize(piece).lower()
        parts.append(part)
        owner.extend([k] * len(part))
    folded = "".join(parts)
    simplified = to_simplified(folded)
    return (simplified if len(simplified) == len(folded) else folded), owner, pieces


def _pieces(text: str) -> list[tuple[int, int]]:
    """[start, end) of each base character plus its combining marks (and Hangul vowel/final jamo)."""
    pieces: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if pieces and (unicodedata.combining(ch) or 0x1160 <= ord(ch) <= 0x11FF):
            pieces[-1] = (pieces[-1][0], i + 1)
        else:
            pieces.append((i, i + 1))
    return pieces


@lru_cache(maxsize=8)
def segmenter(user_dict: str | None):
    """cut_for_search for a user dictionary, built once per process.

    Prefers rjieba (jieba-rs: same dictionary and search mode, ~7M vs ~0.35-0.6M chars/s for
    Python jieba here), which makes indexing far faster; falls back to jieba where it is missing.
    """
    try:
        import rjieba

        segmenter = rjieba.Jieba()
        for word, freq in _user_words(user_dict):
            segmenter.add_word(word, freq, None)
        return lambda text: segmenter.cut_for_search(text, hmm=USE_HMM)
    except ImportError:
        pass
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    with _lock:
        tokenizer.initialize()
        if user_dict:
            tokenizer.load_userdict(user_dict)
    return lambda text: tokenizer.cut_for_search(text, HMM=USE_HMM)


def _user_words(user_dict: str | None) -> list[tuple[str, int | None]]:
    """(word, frequency) pairs of a jieba-format user dictionary ("词语 [词频] [词性]" per line)."""
    if not user_dict:
        return []
    words = []
    for line in Path(user_dict).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts:
            words.append((parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None))
    return words


def is_term(token: str) -> bool:
    """A token worth indexing: has a letter/digit/CJK character and is not a stopword."""
    return bool(_WORD.search(token)) and token not in STOPWORDS


def tokenize(text: str, user_dict: str | Path | None = None) -> list[str]:
    """BM25 terms of `text` (with repeats, in order).

    `user_dict` (or the WENDAO_USER_DICT environment variable) is a jieba dictionary file of domain
    terms, one per line ("词语 [词频] [词性]"), kept whole by the segmenter. Re-index after changing it.
    """
    user_dict = user_dict or os.environ.get("WENDAO_USER_DICT") or None
    words = segmenter(str(user_dict) if user_dict else None)(comparable(text))
    return [w for w in (w.strip() for w in words) if w and is_term(w)]


def query_terms(text: str, user_dict: str | Path | None = None) -> list[str]:
    """Distinct terms of a query in order of first appearance (for display and highlighting)."""
    return list(dict.fromkeys(tokenize(text, user_dict)))


# Single characters that, standing alone in a query, carry no subject of their own (positions,
# times, measure and linking words): highlighting every 「内」「中」「年」 of a passage is noise.
_FILLER_CHARS = frozenset("中内外上下前后里间边时年月日号次若会能要可到给让向往多少大小第每各某本该去来说做用得地之其")


@lru_cache(maxsize=1)
def _precise_cut():
    """jieba's precise (not search-mode) cut: every character of the text in exactly one word."""
    try:
        import rjieba

        segmenter = rjieba.Jieba()
        return lambda text: segmenter.cut(text, hmm=USE_HMM)
    except ImportError:
        import jieba

        return lambda text: list(jieba.cut(text, HMM=USE_HMM))


def highlight_terms(query: str, user_dict: str | Path | None = None) -> list[str]:
    """The query's terms as passages highlight them (the retrieval lab): its words of two or more
    characters (search-mode terms, as BM25 matched them); adjacent single characters of the precise
    cut joined into one term (「尤 / 金」 -> 尤金, 「王 / 0」 -> 王0, 「中 / 离」 -> 中离), so a name is
    marked as a whole and never character by character; and a lone single character only when it can
    name something by itself — never a digit, a Latin letter or a filler like 「内」「中」「年」."""
    user_dict = user_dict or os.environ.get("WENDAO_USER_DICT") or None
    folded = comparable(query)
    multi = [t for t in query_terms(query, user_dict) if len(t) > 1]
    words = _precise_cut()(folded)
    out: list[str] = list(multi)
    run: list[str] = []
    for w in [*(w.strip() for w in words), ""]:
        if len(w) == 1 and w.isalnum() and w not in STOPWORDS:
            run.append(w)
            continue
        if len(run) > 1:
            out.append("".join(run))
        elif run and not (run[0].isdigit() or run[0].isascii() or run[0] in _FILLER_CHARS):
            out.append(run[0])
        run = []
    return list(dict.fromkeys(out))


def squeezed(text: str) -> tuple[str, list[tuple[int, int]]]:
    """`text` in comparable form (NFKC, lower case, simplified) with whitespace, line breaks and
    punctuation left out, and each kept character's [start, end) in `text`: what 「期望找到的内容」 is
    matched in, so a sentence pasted from a PDF whose line wraps inside it, or typed with other
    punctuation or full-width letters, still matches the passage."""
    folded, owner, pieces = _folded_with_origin(text)
    keep = [i for i, ch in enumerate(folded) if ch.isalnum()]
    return "".join(folded[i] for i in keep), [pieces[owner[i]] for i in keep]
