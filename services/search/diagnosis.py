"""Why a passage was or was not found: the retrieval lab's 「期望找到的内容」, explained per case.

The expected text is matched the way a user means it — in `tokenizer.squeezed` form (NFKC, lower case,
simplified characters, no whitespace / line breaks / punctuation), so a sentence pasted from a PDF whose
line wraps inside it still matches; failing that, a passage holding at least `CLOSE` of it (in order)
counts as a close match and is reported as one. Then, case by case:

- found among the results: each stage's rank, the final rank, whether neighbouring chunks were merged
  into it, and whether the chat sees it (the chat uses only the KB's top-k);
- a candidate below the final cut: its final rank and the counts the lab shows and the chat uses;
- in a document but no candidate: per stage that actually ran, the chunk's rank and score (BM25) or
  similarity (vectors) against the last candidate's, and which of the question's words it shares or
  lacks; or that it crosses a chunk boundary, or that its document is switched off / filtered out;
- in no document at all.
"""
from __future__ import annotations

import heapq
import re
import time
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from services.documents.text import display_name
from services.documents.tokenizer import comparable, squeezed, tokenize

CLOSE = 0.8  # share of the expected text found in order in a passage for a close (not exact) match
DENSE_DEPTH = 2000  # how deep the vector ranking is computed for a chunk that is no candidate
STAGE_WORDS = (("bm25", "关键词检索"), ("dense", "向量检索"), ("fused", "两路合并后"), ("rerank", "重排后"))
SIMILAR_HITS = 30  # at most this many ranked passages are aligned for a close match (the alignment is costly)
SIMILAR_BUDGET_S = 2.0  # and for at most this long in all (repetitive text: one alignment can take 30 s)
BLOCK = 16_384  # a document is checked block by block; only the block(s) holding the text are squeezed
IGNORED = "已忽略空白、换行、标点、全半角和繁简差异"


@dataclass
class ExpectedReport:
    """`state`: found (the chat sees it) | hidden (found, below the chat's top-k) | cut (a candidate below
    the lab's count) | missed (in a document, no candidate) | filtered (its document is not searched) |
    absent (in no document) | empty (nothing comparable was typed). `lines`: what the lab shows."""
    state: str
    lines: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.state == "found"


def span_words(start: int, end: int) -> str:
    return f"第 {start + 1}–{end} 字"


def merged_note(hit) -> str:
    """「（由相邻的 N 个片段合并）」 for a passage joined from neighbouring chunks, else ""."""
    n = len(hit.chunk_ids)
    return f"（由相邻的 {n} 个片段合并）" if n > 1 else ""


def chat_note(rank: int, chat_top_k: int) -> str:
    """Whether the chat would see the passage at final `rank` (the chat uses the KB's top-k)."""
    return "" if rank <= chat_top_k else f"在问答中看不到（问答只用前 {chat_top_k} 条）"


def chat_cut_line(chat_top_k: int, shown: int) -> str:
    """The line next to the lab's results: which of them the chat would see."""
    if shown <= chat_top_k:
        return f"问答使用前 {chat_top_k} 条（设置 → 最终返回条数），这里的 {shown} 条问答都能看到。"
    return (f"问答只用前 {chat_top_k} 条（设置 → 最终返回条数）：这里第 1–{chat_top_k} 名问答能看到，"
            f"第 {chat_top_k + 1} 名起在问答中看不到。")


def _bigram_share(expected: str, text: str) -> float:
    grams = {expected[i:i + 2] for i in range(len(expected) - 1)}
    return sum(g in text for g in grams) / len(grams) if grams else float(expected in text)


def similarity(expected: str, text: str, beat: float = 0.0, deadline: float | None = None) -> float:
    """Share of `expected` (squeezed) found in order in `text` (squeezed), in runs of 2+ characters.
    A passage sharing few of its character pairs is skipped cheaply (the alignment is quadratic), and so
    is one that cannot score above `beat` (difflib's quick ratios bound the characters in common): 0.0.
    The alignment is difflib's (get_matching_blocks), longest regions first; past `deadline`
    (time.monotonic()) it stops with the share aligned so far (repetitive text: ~30 s for 2,000 characters)."""
    if not expected or _bigram_share(expected, text) < 0.5:
        return 0.0
    matcher = SequenceMatcher(None, expected, text, autojunk=False)
    bound = (len(expected) + len(text)) / (2 * len(expected))  # ratio() * bound >= the share matched
    if beat > 0 and (matcher.real_quick_ratio() * bound <= beat or matcher.quick_ratio() * bound <= beat):
        return 0.0
    matched, regions = 0, [(-len(expected), 0, len(expected), 0, len(text))]
    while regions and (deadline is None or time.monotonic() < deadline):
        _size, alo, ahi, blo, bhi = heapq.heappop(regions)
        i, j, k = matcher.find_longest_match(alo, ahi, blo, bhi)
        if not k:
            continue
        matched += k if k >= 2 else 0  # no junk: blocks are maximal, never adjacent (nothing to merge)
        if alo < i and blo < j:
            heapq.heappush(regions, (-(i - alo), alo, i, blo, j))
        if i + k < ahi and j + k < bhi:
            heapq.heappush(regions, (-(ahi - i - k), i + k, ahi, j + k, bhi))
    return matched / len(expected)


def _closest(expected: str, texts: list[str], ranked) -> tuple[float, int, object] | None:
    """(similarity, rank, hit) of the ranked passage closest to `expected`, the best-ranked on a tie; only
    the first SIMILAR_HITS passages, for at most SIMILAR_BUDGET_S seconds."""
    best, deadline = None, time.monotonic() + SIMILAR_BUDGET_S
    for r, (text, h) in enumerate(zip(texts[:SIMILAR_HITS], ranked), start=1):
        score = similarity(expected, text, beat=best[0] if best else 0.0, deadline=deadline)
        if best is None or score > best[0]:
            best = (score, r, h)
        if best[0] >= 1.0 or time.monotonic() > deadline:
            break
    return best


def _stage_ranks(hit, hybrid: bool, depth: dict[str, int]) -> str:
    """Each stage's rank; a stage that ran without finding the passage (it came from the other) says so."""
    return "；".join(f"{label}第 {hit.ranks[k]} 名" if k in hit.ranks else f"{label}未进前 {depth[k]} 名"
                    for k, label in STAGE_WORDS
                    if (k in hit.ranks or (hybrid and k in depth)) and (k != "fused" or hybrid))


def explain(retriever, result, expected_text: str, chat_top_k: int) -> ExpectedReport:
    """Where `expected_text` sits for the search `result` that `retriever` (its KB, settings and document
    filter) produced, and why; `chat_top_k`: how many passages the chat uses (the KB's setting)."""
    expected = squeezed(expected_text)[0]
    if not expected:
        return ExpectedReport("empty", ["期望的内容里没有可比较的文字（只有空白或标点）。"])
    ran = {k for k in ("bm25", "dense") if k in result.timings_ms}
    hybrid = ran == {"bm25", "dense"}
    shown = len(result.hits)
    ranked = result.ranked or result.hits
    texts = [squeezed(h.text)[0] for h in ranked]  # once per hit
    exact = [(r, h) for r, (text, h) in enumerate(zip(texts, ranked), start=1) if expected in text]
    close = None
    if not exact:
        close = _closest(expected, texts, ranked)
        if close and close[0] >= CLOSE:
            exact = [(close[1], close[2])]
    if exact:
        lines, best = [], exact[0][0]
        for r, h in exact[:3]:
            prefix = "" if close is None else f"没有逐字相同的段落；最接近的是第 {r} 名（相似 {close[0]:.0%}）。"
            depth = {"bm25": retriever.settings.bm25_top_k, "dense": retriever.settings.dense_top_k}
            stages = _stage_ranks(h, hybrid, depth)
            where = f"最终第 {r} 名" if r <= shown else f"最终第 {r} 名，未进入这里显示的前 {shown} 条"
            notes = "；".join(filter(None, [stages, where, chat_note(r, chat_top_k)]))
            lines.append(f"{prefix}《{display_name(h.doc)}》{span_words(h.start, h.end)}{merged_note(h)}：{notes}。")
        if close is not None:  # the whole text may be in a document, across a chunk boundary
            place = _locate(retriever, expected)
            if place:
                doc, _text, a, b = place
                chunks = [c for c in retriever.lib.store.chunks_of(retriever.kb.id, doc.id) if c.start < b and a < c.end]
                if len(chunks) > 1 and not [c for c in chunks if c.start <= a and b <= c.end]:
                    lines.append(f"完整的这段文字在《{display_name(doc.filename)}》{span_words(a, b)}，" + _crossing(chunks))
        state = "found" if best <= chat_top_k else ("hidden" if best <= shown else "cut")
        return ExpectedReport(state, lines)
    return _not_candidate(retriever, result, expected, ran, close)


def _crossing(chunks) -> str:
    parts = "、".join(span_words(c.start, c.end) for c in chunks)
    return (f"它跨越了 {len(chunks)} 个片段（{parts}），没有一个片段完整包含它；可以只粘贴其中一段，"
            "或在文档库 → 切分预览中调整切分。")


def _locate(retriever, expected: str):
    """(document, its text, start, end) of a ready document holding `expected` (squeezed), or None: a
    searched one (switched on, inside the document filter) before one filtered out, before one switched off."""
    lib, kb, only = retriever.lib, retriever.kb, retriever.doc_ids
    docs = [d for d in lib.store.list_documents(kb.id) if d.status == "ready"]
    for doc in sorted(docs, key=lambda d: (not d.enabled, only is not None and d.id not in only)):  # stable
        text = lib.store.document_text(kb.id, doc.id)
        span = find_squeezed(text, expected)
        if span:
            return doc, text, *span
    return None


_CUT = re.compile(r"[\s\W]")  # a block ends before whitespace or punctuation: no fold or word spans it


def _blocks(text: str):
    """[start, end) blocks of about BLOCK characters covering `text`, cut where a character folds alone."""
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + BLOCK)
        cut = _CUT.search(text, end, min(len(text), end + 256)) if end < len(text) else None
        if cut:
            end = cut.start()
        while end < len(text) and (unicodedata.combining(text[end]) or 0x1160 <= ord(text[end]) <= 0x11FF):
            end += 1  # never between a character and its combining marks
        yield pos, end
        pos = end


def find_squeezed(text: str, expected: str) -> tuple[int, int] | None:
    """[start, end) in `text` of the first occurrence of `expected` (squeezed form), or None. Each block is
    folded cheaply (comparable, then letters and digits only); only the blocks holding the match are
    squeezed with offsets (per character: ~10 s for millions of characters)."""
    blocks, cheap, size = [], [], 0
    for a, b in _blocks(text):
        piece = re.sub(r"[\W_]+", "", comparable(text[a:b]))
        blocks.append((size, a, b))
        cheap.append(piece)
        size += len(piece)
    at = "".join(cheap).find(expected)
    if at < 0:
        return None
    first = max(i for i, blk in enumerate(blocks) if blk[0] <= at)
    last = max(i for i, blk in enumerate(blocks) if blk[0] <= at + len(expected) - 1)
    start, end = blocks[max(first - 1, 0)][1], blocks[min(last + 1, len(blocks) - 1)][2]
    for a, b in ((start, end), (0, len(text))):  # the whole text if the blocks' folds disagree with it
        folded, origin = squeezed(text[a:b])
        found = folded.find(expected)
        if found >= 0:
            return a + origin[found][0], a + origin[found + len(expected) - 1][1]
    return None


def _not_candidate(retriever, result, expected: str, ran: set[str], close) -> ExpectedReport:
    lib, kb = retriever.lib, retriever.kb
    place = _locate(retriever, expected)
    if place is None:
        lines = [f"这段文字不在知识库的任何文档中（{IGNORED}）。请检查是否完整复制、文档是否已上传并处理完成。"]
        if close and close[0] >= 0.5:
            lines.append(f"候选中最接近的是第 {close[1]} 名《{display_name(close[2].doc)}》（相似 {close[0]:.0%}）。")
        return ExpectedReport("absent", lines)
    doc, text, a, b = place
    head = f"在《{display_name(doc.filename)}》{span_words(a, b)}"
    if not doc.enabled:
        return ExpectedReport("filtered", [f"{head}，但这个文档已停用（文档库中可重新启用），所以没有被检索。"])
    if retriever.doc_ids is not None and doc.id not in retriever.doc_ids:
        return ExpectedReport("filtered", [f"{head}，但这个文档不在本次选择的检索范围内（文档筛选）。"])
    chunks = [c for c in lib.store.chunks_of(kb.id, doc.id) if c.start < b and a < c.end]
    whole = [c for c in chunks if c.start <= a and b <= c.end]
    crossing = not whole and len(chunks) > 1
    if whole:
        head += f"（所在片段{span_words(whole[0].start, whole[0].end)}）"
    lines = [f"{head}。" if crossing else f"{head}，但没有进入候选。"]
    if crossing:
        lines.append(_crossing(chunks))
    targets = whole or chunks
    if not targets:
        return ExpectedReport("missed", lines)
    ids = {c.id for c in targets}
    from services.index.index_text import document_title, index_text

    title = document_title(text, doc.filename)
    if "bm25" in ran:
        lines.append(_bm25_line(retriever, result, targets, ids, title, index_text))
    if "dense" in ran:
        lines.append(_dense_line(retriever, result, ids))
    if "dense" not in ran and "bm25" in ran and not _shared(result.terms, targets, title, index_text):
        lines.append("只按关键词检索找不到这样的片段：试试「向量」或「混合」检索，或用原文中的词提问。")
    return ExpectedReport("missed", lines)


def _shared(terms, chunks, title, index_text) -> list[str]:
    words = {w for c in chunks for w in tokenize(index_text(title, c))}
    return [t for t in terms if t in words]


def _bm25_line(retriever, result, chunks, ids, title, index_text) -> str:
    from services.index.bm25 import query_vector

    lib, kb, s = retriever.lib, retriever.kb, retriever.settings
    found = lib.keyword.search(kb, query_vector(result.query), 1_000_000, retriever.doc_ids)
    mine = [(r, p.score) for r, p in enumerate(found, start=1) if p.id in ids]
    shared = _shared(result.terms, chunks, title, index_text)
    lacking = [t for t in result.terms if t not in shared]
    words = (f"问题的词中它含有「{' / '.join(shared)}」" if shared
             else f"它不含问题中的任何一个词（「{' / '.join(lacking)}」都不在其中）") + \
        (f"，缺少「{' / '.join(lacking)}」" if lacking and shared else "")
    if mine:
        r, score = mine[0]
        last = found[min(s.bm25_top_k, len(found)) - 1].score if found else 0.0
        return (f"关键词检索：这个片段排第 {r} 名（得分 {score:.2f}），候选只取前 {s.bm25_top_k} 名"
                f"（第 {min(s.bm25_top_k, len(found))} 名得分 {last:.2f}）；{words}。")
    return f"关键词检索：这个片段得分为 0，没有排上名；{words}。"


def _dense_line(retriever, result, ids) -> str:
    from services.index.embedding import embed_query

    s = retriever.settings
    try:
        embedder = retriever.dense.embedder()
        found = retriever.dense.search(embedder, embed_query(embedder, result.query), DENSE_DEPTH, retriever.doc_ids)
    except Exception:  # the explanation must not fail the lab: say what could not be computed
        return "向量检索：这次无法算出这个片段的向量名次。"
    mine = [(r, p.score) for r, p in enumerate(found, start=1) if p.id in ids]
    cut = min(s.dense_top_k, len(found))
    last = f"（第 {cut} 名相似度 {found[cut - 1].score:.3f}）" if cut else ""
    if mine:
        r, score = mine[0]
        return f"向量检索：这个片段排第 {r} 名（相似度 {score:.3f}），候选只取前 {s.dense_top_k} 名{last}。"
    return f"向量检索：这个片段不在前 {len(found)} 名内，候选只取前 {s.dense_top_k} 名{last}。"
