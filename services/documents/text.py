"""Chinese text normalisation and sentence splitting.

Two normalisations with different jobs:
- `fold_chars` is length-preserving (one character in, one out), so offsets into the folded text
  are offsets into the original: used on PDF extraction, where Kangxi radicals (⽤ U+2F64) and
  full-width forms are artefacts of the font, not of the document.
- `normalize` is full NFKC + whitespace collapsing, used only for index/query text (BM25 tokens,
  embeddings, document hashing), never for what is quoted back to the user.
"""
from __future__ import annotations

import re
import unicodedata

SENTENCE_END = "。！？!?；;…"
CLOSERS = "」』”’）)]】》〉\"'"
_SENTENCE = re.compile(
    rf"[^{SENTENCE_END}\n]*(?:[{SENTENCE_END}]+[{re.escape(CLOSERS)}]*[ \t\r\u3000]*\n?|\n|$)"
)
_WHITESPACE = re.compile(r"\s+")


# CJK Radicals Supplement forms that PDF fonts emit for ordinary characters; NFKC leaves these alone.
RADICAL_SUPPLEMENT = str.maketrans({
    "⺁": "厂", "⺇": "几", "⺌": "小", "⺍": "小", "⺏": "尣", "⺐": "尢", "⺓": "幺", "⺔": "彑", "⺝": "月",
    "⺟": "母", "⺠": "民", "⻁": "虎", "⻂": "衤", "⻄": "西", "⻅": "见", "⻆": "角", "⻉": "贝", "⻋": "车",
    "⻓": "长", "⻔": "门", "⻘": "青", "⻙": "韦", "⻚": "页", "⻛": "风", "⻜": "飞", "⻝": "食", "⻢": "马",
    "⻣": "骨", "⻤": "鬼", "⻥": "鱼", "⻦": "鸟", "⻧": "卤", "⻨": "麦", "⻩": "黄", "⻬": "齐", "⻮": "齿",
    "⻯": "竜", "⻰": "龙", "⻳": "龟",
})


def _foldable(ch: str) -> bool:
    """Characters that are font artefacts, not authorial choices: Kangxi radicals, CJK
    compatibility ideographs and full-width letters/digits. Chinese punctuation (，。：) stays."""
    o = ord(ch)
    return (0x2F00 <= o <= 0x2FDF or 0xF900 <= o <= 0xFAFF or 0xFF10 <= o <= 0xFF19
            or 0xFF21 <= o <= 0xFF3A or 0xFF41 <= o <= 0xFF5A)


def fold_chars(text: str) -> str:
    """Length-preserving clean-up of PDF-extracted text (one character in, one character out)."""
    out = []
    for ch in text:
        if not ch.isascii() and _foldable(ch):
            folded = unicodedata.normalize("NFKC", ch)
            out.append(folded if len(folded) == 1 else ch)
        else:
            out.append(ch)
    return "".join(out).translate(RADICAL_SUPPLEMENT)


def normalize(text: str) -> str:
    """NFKC (full-width ASCII, Kangxi radicals, compatibility forms) and collapsed whitespace."""
    folded = unicodedata.normalize("NFKC", text).translate(RADICAL_SUPPLEMENT)
    return _WHITESPACE.sub(" ", folded).strip()


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Split into contiguous [start, end) sentence spans that cover the whole text.

    A sentence ends at 。！？!?；;… (runs of them, e.g. ……) plus any closing quotes/brackets
    right after, or at a newline — except a layout line wrap of a hard-wrapped text (`soft_wraps`). Whitespace-only pieces are attached to the previous sentence,
    so every span holds visible text (except for an all-blank text).
    """
    spans: list[tuple[int, int]] = []
    for match in _SENTENCE.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if spans and not text[start:end].strip():
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    if spans and not text[spans[0][0]:spans[0][1]].strip() and len(spans) > 1:
        spans[1] = (spans[0][0], spans[1][1])
        spans.pop(0)
    wraps = set(soft_wraps(text)) if "\n" in text else set()
    if wraps:  # a hard-wrapped text file: a layout line break does not end a sentence
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and merged[-1][1] - 1 in wraps:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        spans = merged
    return spans



def sentence_ends(text: str) -> set[int]:
    """Offsets at which a sentence ends (used to check chunk boundaries)."""
    return {end for _, end in split_sentences(text)}


_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


# A gap between two ideographs or numbers (table cells, columns set apart on one line), which
# flowing CJK text rarely has: two such lines in a row are table rows, not a wrapped sentence.
_CELL_GAP = re.compile(r"[\u3400-\u9fff0-9%][ \t\u3000]+[\u3400-\u9fff0-9]")


WRAP_MIN_WIDTH = 30  # display columns (a CJK character is two): a narrower line is a heading or a label
WRAP_NEIGHBOURS = 2  # lines to either side that give a line's local column width
WRAP_MANY_LINES = 12  # lines (not blank) that tell the text's own width: a page, not a passage of one
WRAP_LOCAL = 0.9  # a line this full of its local column is wrapped (when a neighbour is about as wide)


def soft_wraps(text: str) -> list[int]:
    """Offsets of newlines that are layout line wraps, not the author's: the line before does not
    end a sentence, the next line starts right away (no indent, not blank), the two lines are not
    table rows (both with a gap between ideographs or numbers), and the line runs (nearly) to the
    width of its column — the text's (85% to 150% of the 90th-percentile line length: a line far longer
    is a paragraph joined already, or never wrapped), or, where boxes of
    different widths share a page (a mind map, a poster: 「是在纸面表示|分子结构的一种方法」 in a box of 21
    characters beside lines of 60), its own box's (`_locally_full`). A much narrower next line (less than half)
    is the paragraph's last only when the paragraph began on an earlier line or that line ends a sentence
    (「…容易书写|线形结构」 is a paragraph, then a heading; 「↓代表…无固体|非结构式」 an item, then a heading), unless the
    line is as wide as the text's lines and there are WRAP_MANY_LINES of them (a page, whose width is known:
    「…单糖环形结构的一|种常用方法」)."""
    lines = text.split("\n")
    lengths = sorted(len(line.rstrip()) for line in lines if line.strip())
    if len(lengths) < 3:
        return []
    full = lengths[int(0.9 * (len(lengths) - 1))]
    widths = [display_width(line.rstrip()) for line in lines]
    wraps, offset = [], 0
    for i, (line, following) in enumerate(zip(lines, lines[1:])):
        offset += len(line)
        body = line.rstrip()
        continued = bool(wraps) and wraps[-1] == offset - len(line) - 1
        page_wide = 0.85 * full <= len(body) <= 1.5 * full
        if (body and following[:1].strip() and body[-1] not in SENTENCE_END + CLOSERS + "：:"
                and (page_wide or _locally_full(lines, widths, i))
                and (page_wide and len(lengths) >= WRAP_MANY_LINES or continued or widths[i + 1] >= widths[i] / 2
                     or following.rstrip()[-1:] in SENTENCE_END + CLOSERS)
                and not (_CELL_GAP.search(body) and _CELL_GAP.search(following))):
            wraps.append(offset)
        offset += 1
    return wraps


def display_width(text: str) -> int:
    """Columns `text` takes in a fixed-pitch layout: two for a CJK (wide or full-width) character, one otherwise."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


# A line that opens a list item: a bullet or symbol (↑, ↓, •, -), a number (1. 2、 (3) 四、) or an article (第二条)
_ITEM_START = re.compile(r"[^\w\s（(“\"‘'《「『【\[]|[0-9]{1,2}[.、．)）]|[（(][0-9一二三四五六七八九十]{1,2}[)）]|[一二三四五六七八九十]{1,2}、"
                         r"|第[0-9一二三四五六七八九十百零〇]{1,4}[条章节款项篇部]")


def _locally_full(lines: list[str], widths: list[int], i: int) -> bool:
    """Whether line i fills the width of its own box (see `soft_wraps`; `widths`: the lines' display widths):
    it is at least WRAP_MIN_WIDTH wide, a line next to it is about
    as wide (a paragraph's full lines), no line of its box within WRAP_NEIGHBOURS lines is wider by more than
    1 - WRAP_LOCAL (a list of items of different lengths, 楔形线…的键 | 虚线…的键 | 波形线…即分子为, is no
    paragraph; the box ends at a line less than half as wide: a heading or a paragraph's last line), and the
    next line opens no list item (↓代表…, 2.如…)."""
    width = widths[i]
    if width < WRAP_MIN_WIDTH or i + 1 >= len(lines) or _ITEM_START.match(lines[i + 1]):
        return False
    box = [width]
    for step in (-1, 1):
        j = i + step
        while 0 <= j < len(widths) and abs(j - i) <= WRAP_NEIGHBOURS and widths[j] >= width / 2:
            box.append(widths[j])
            j += step
    beside = [widths[j] for j in (i - 1, i + 1) if 0 <= j < len(widths)]
    return width >= WRAP_LOCAL * max(box) and any(WRAP_LOCAL * width <= w <= width / WRAP_LOCAL for w in beside)


def _wrap_glue(line: str, after: str) -> str:
    """What replaces a layout line wrap after `line`: nothing in a line holding CJK text (CJK
    layout breaks lines anywhere, also inside a number such as "200|7年" or a Latin word such as
    "OpenCour|seWare"), a space only where Latin-only text was wrapped at a word boundary."""
    return "" if _CJK_CHAR.search(line) or _CJK_CHAR.match(after or " ") else " "


def join_wrapped_lines(text: str) -> str:
    """Undo a PDF's layout line wraps (see `soft_wraps`): the newline is removed in CJK text
    and becomes a space between Latin words, so sentences, chunks and quotes follow the author's
    sentences, not the page width. Headings, list items and paragraph ends keep their newline."""
    out, start = [], 0
    for pos in soft_wraps(text):
        raw, after = text[start:pos], text[pos + 1:pos + 2]
        before = raw.rstrip()
        line = before[before.rfind("\n") + 1:]
        # a space typeset at the end of the line is the author's ("Kevin |Padian") and stays one
        out.append(before + (" " if len(before) < len(raw) else _wrap_glue(line, after)))
        start = pos + 1
    out.append(text[start:])
    return "".join(out)


# Characters that change how a line is displayed rather than what it says: bidi embeddings,
# overrides and isolates, and the direction marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def display_name(name: object) -> str:
    """A file (or knowledge-base) name as it may be shown in a terminal, a log line or a page:
    what it says, never what it does. The stored name is not changed.

    Untrusted names can carry ANSI escape sequences (ESC [31m recolours or clears a terminal), line
    breaks (which split a progress line or a table cell) and bidi overrides (`invoice\\u202eexe.txt`
    displays as "invoicetxt.exe"). Every such character is shown as its code point, `<U+0007>`,
    `<U+001B>`, `<U+202E>`: plain ASCII every font draws (Unicode's control pictures ␇ ␛ are
    empty boxes in the CJK fonts), and one rule for pages, terminals and exports. Everything else,
    Chinese included, is unchanged."""
    out = []
    for ch in str(name):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F or ch in _BIDI or ch in "\u2028\u2029":
            out.append(f"<U+{o:04X}>")
        else:
            out.append(ch)
    return "".join(out)


_LINE_BREAKS = re.compile(r"[ \t]*(?:\r\n|[\n\r\v\f\u2028\u2029\x85])[ \t]*")


def display_text(text: object, keep_lines: bool = False) -> str:
    """Document or answer text as it may be printed in a terminal: line breaks and tabs are layout,
    not danger, so a quote's breaks (a PDF's wrapped lines) become one space each — or stay real
    line breaks (`keep_lines`, for an answer of several lines) — and tabs become spaces; every
    other control or bidi character is made visible as in `display_name` (`<U+001B>`), so text
    from a document can never recolour or rewrite the terminal."""
    text = _LINE_BREAKS.sub("\n" if keep_lines else " ", str(text)).replace("\t", " ")
    if keep_lines:
        return "\n".join(display_name(line) for line in text.split("\n"))
    return display_name(text)
