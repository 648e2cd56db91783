"""Retriever: BM25 + dense -> fuse -> rerank -> merge neighbouring windows.

Each stage is a small step with one input and one output type, so stages can be swapped and
measured one at a time; every Hit carries each stage's rank and score (the retrieval lab shows
them side by side) and timings are reported per stage.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

from services import errors

from services.search import fusion
from services.index.bm25 import query_vector
from services.documents.chunking import Chunk
from services.config import RetrievalSettings
from services.index.embedding import embed_query
from services.index.library import Library
from services.index.store import KnowledgeBase
from services.documents.tokenizer import highlight_terms, query_terms

MODES = {"bm25": "BM25 关键词", "dense": "向量", "hybrid": "混合"}


@dataclass
class Hit:
    """A retrieved passage: a chunk (or several merged windows) plus per-stage diagnostics."""

    chunk: Chunk
    doc: str  # filename
    start: int
    end: int
    text: str
    page_start: int
    page_end: int
    scores: dict = field(default_factory=dict)  # bm25 / dense / fused / rerank
    ranks: dict = field(default_factory=dict)
    chunk_ids: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The score the final order is based on."""
        for stage in ("rerank", "fused", "dense", "bm25"):
            if stage in self.scores:
                return self.scores[stage]
        return 0.0

    @property
    def page(self) -> int:
        return self.page_start

    def to_json(self) -> dict:
        return {"doc": self.doc, "doc_id": self.chunk.doc_id, "start": self.start, "end": self.end, "page": self.page_start,
                "pages": [self.page_start, self.page_end], "text": self.text,
                "scores": {k: round(v, 6) for k, v in self.scores.items()}, "ranks": dict(self.ranks),
                "chunk_ids": self.chunk_ids}


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    timings_ms: dict
    terms: list[str]
    candidates: list[Hit] = field(default_factory=list)  # everything scored, before top-k
    notice: str = ""  # e.g. why reranking was skipped
    ranked: list[Hit] = field(default_factory=list)  # every candidate after merging, final order (hits: its head)
    marked: list[str] = field(default_factory=list)  # terms passages highlight (tokenizer.highlight_terms)


class DenseStage(Protocol):
    """Where the dense stage gets its query embedder and its candidates."""

    def embedder(self): ...

    def search(self, embedder, vector, limit: int, doc_ids: list[str] | None = None) -> list: ...


class KbDense:
    """The dense stage users get: the KB's embedder and its recorded index
    (services.index.dense.DenseIndex.search)."""

    def __init__(self, lib: Library, kb: KnowledgeBase):
        self.lib, self.kb = lib, kb

    def embedder(self):
        return self.lib.embedder(self.kb)

    def search(self, embedder, vector, limit: int, doc_ids: list[str] | None = None) -> list:
        return self.lib.dense.search(self.kb, embedder, vector, limit, doc_ids)


class Retriever:
    def __init__(self, lib: Library, kb: KnowledgeBase, settings: RetrievalSettings | None = None,
                 doc_ids: list[str] | None = None, dense: DenseStage | None = None):
        """`doc_ids`: search only these documents of the KB (None: every switched-on document).
        `dense`: the dense stage (default: the KB's model and index); fine-tuning passes a candidate
        model's vectors held in memory (services.index.dense.MemoryDense) to measure it by this
        same pipeline without building an index."""
        self.lib, self.kb = lib, kb
        self.settings = settings or RetrievalSettings()
        self.doc_ids = list(doc_ids) if doc_ids is not None else None
        self.dense = dense or KbDense(lib, kb)

    def search(self, query: str, top_k: int | None = None, mode: str | None = None,
               rerank: bool | None = None) -> SearchResult:
        s = self.settings
        mode = mode or s.mode
        top_k = top_k or s.top_k
        rerank = s.rerank if rerank is None else rerank
        timings: dict[str, float] = {}
        stages: dict[str, dict[int, float]] = {}
        if mode in ("bm25", "hybrid"):
            with _timed(timings, "bm25"):
                found = self.lib.keyword.search(self.kb, query_vector(query), s.bm25_top_k, self.doc_ids)
                stages["bm25"] = {p.id: p.score for p in found}
        server_down = ""
        if mode in ("dense", "hybrid"):
            try:
                with _timed(timings, "embed_query"):
                    embedder = self.dense.embedder()
                    vector = embed_query(embedder, query)
            except errors.ModelServerError as exc:  # hybrid answers by keywords while the model server is down
                if mode == "dense":
                    raise
                server_down = f"{exc.message_zh}（本次只按关键词检索）"
            else:
                with _timed(timings, "dense"):
                    found = self.dense.search(embedder, vector, s.dense_top_k, self.doc_ids)
                    stages["dense"] = {p.id: p.score for p in found}
        with _timed(timings, "fusion"):
            fused = self._fuse(stages, mode)
        with _timed(timings, "load"):
            candidates = self._hits(stages, fused)
        notice = server_down
        pending = len(self.lib.store.dense_pending(self.kb.id)) if mode != "bm25" and not server_down else 0
        if pending:
            notice = f"向量化进行中（{pending} 个文档），这些文档暂时只按关键词检索。"
        if rerank and candidates:
            with _timed(timings, "rerank"):
                try:
                    candidates = self._rerank(query, candidates)
                except errors.ModelLoadError as exc:  # answer without reranking rather than not at all
                    notice = (notice + " " if notice else "") + f"{exc.message_zh}（本次未重排）"
                    skipped = True
                else:
                    skipped = False
            if skipped:  # nothing was reranked: the attempt's time under its own name, never as 「重排 1.1 毫秒」
                timings["rerank_attempt"] = timings.pop("rerank")
        if s.merge_windows:
            with _timed(timings, "merge"):
                ranked = merge_windows(self.lib, self.kb, candidates)
        else:
            ranked = candidates
        timings["total"] = sum(timings.values())
        return SearchResult(query, ranked[:top_k], timings, query_terms(query), candidates, notice, ranked,
                            highlight_terms(query))

    def term_shares(self, terms: list[str]) -> dict[str, float]:
        """Share of the KB's searchable chunks that hold each term (BM25 document frequency / N), and
        the number of chunks as key "" — how specific a word is here (a name: few; 原告: most)."""
        from services.index.bm25 import term_index

        index = self.lib.keyword.index(self.kb)
        with index.lock:
            n = max(1, index.n)
            out = {"": float(index.n)}
            for t in terms:
                col = index.columns.get(term_index(t))
                out[t] = float(index.df[col]) / n if col is not None else 0.0
        return out

    def _fuse(self, stages: dict[str, dict[int, float]], mode: str) -> dict[int, float]:
        if mode != "hybrid":
            return dict(next(iter(stages.values()), {}))
        s = self.settings
        if s.fusion == "rrf":
            return fusion.rrf(stages, k=s.rrf_k)
        return fusion.weighted(stages, {"dense": s.dense_weight, "bm25": 1.0 - s.dense_weight})

    def _hits(self, stages, fused) -> list[Hit]:
        chunks = self.lib.store.get_chunks(list(fused))  # only chunks of 'ready' documents
        names = self.lib.store.filenames(self.kb.id)
        stage_ranks = {stage: fusion.ranks(scores) for stage, scores in stages.items()}
        fused_ranks = fusion.ranks({i: v for i, v in fused.items() if i in chunks})
        hits = []
        for chunk_id, r in sorted(fused_ranks.items(), key=lambda kv: kv[1]):
            c = chunks[chunk_id]
            hit = Hit(c, names.get(c.doc_id, "?"), c.start, c.end, c.text, c.page_start, c.page_end,
                      chunk_ids=[chunk_id])
            for stage, scores in stages.items():
                if chunk_id in scores:
                    hit.scores[stage] = scores[chunk_id]
                    hit.ranks[stage] = stage_ranks[stage][chunk_id]
            hit.scores["fused"], hit.ranks["fused"] = fused[chunk_id], r
            hits.append(hit)
        return hits

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        from services.search.rerank import load_reranker

        name = self.settings.reranker_model
        reranker = load_reranker(name, self.lib.server_key(self.kb, name))
        head, tail = hits[: self.settings.rerank_top_n], hits[self.settings.rerank_top_n:]
        scores = reranker.score(query, [h.text for h in head])
        for hit, score in zip(head, scores):
            hit.scores["rerank"] = score
        weight = self.settings.rerank_weight
        if weight >= 1.0:
            head.sort(key=lambda h: -h.scores["rerank"])
        else:  # blend the reranker's rank with the first stage's (the head's order as it came)
            k = self.settings.rrf_k
            by_score = sorted(range(len(head)), key=lambda i: -head[i].scores["rerank"])
            rerank_rank = {i: r for r, i in enumerate(by_score, start=1)}
            blended = {i: weight / (k + rerank_rank[i]) + (1 - weight) / (k + i + 1) for i in range(len(head))}
            head = [head[i] for i in sorted(range(len(head)), key=lambda i: -blended[i])]
        for r, hit in enumerate(head, start=1):
            hit.ranks["rerank"] = r
        return head + tail


def merge_windows(lib: Library, kb: KnowledgeBase, hits: list[Hit]) -> list[Hit]:
    """Merge window hits of one document whose sentences overlap or touch into one continuous passage.

    Reads each document's text from the store (once) and delegates to `merge_hits`.
    """
    texts: dict[str, str] = {}

    def text_of(doc_id: str) -> str:
        if doc_id not in texts:
            texts[doc_id] = lib.store.document_text(kb.id, doc_id)
        return texts[doc_id]

    return merge_hits(hits, text_of)


def merge_hits(hits: list[Hit], text_of: Callable[[str], str]) -> list[Hit]:
    """Merge ranked hits into non-overlapping passages; `text_of(doc_id)` gives a document's text.

    Window chunks of one document merge when their sentence ranges overlap or touch, transitively
    (windows 0-4 and 4-8 joined by a hit on 2-6 become one passage 0-8), so no sentence is returned
    twice as separate sources. A merged passage takes the place of its best-ranked member, spans the
    document text between its members' outermost offsets (nothing cut mid-thought) and keeps, per
    stage, the best score and rank of any member. Other chunks pass through unchanged.
    """
    groups: dict[int, list[Hit]] = {}
    for hit, group in zip(hits, _window_groups(hits)):
        groups.setdefault(group, []).append(hit)
    return [_merged(members, text_of) for members in groups.values()]


def _window_groups(hits: list[Hit]) -> list[int]:
    """A group number per hit: connected components of overlapping/touching windows per document;
    every other hit is a group of its own. Group numbers are hit positions (the first member's)."""
    group = list(range(len(hits)))
    by_doc: dict[str, list[int]] = {}
    for i, hit in enumerate(hits):
        c = hit.chunk
        if c.strategy == "window" and c.sentence_start >= 0:
            by_doc.setdefault(c.doc_id, []).append(i)
    for members in by_doc.values():
        members.sort(key=lambda i: (hits[i].chunk.sentence_start, hits[i].chunk.sentence_end))
        component: list[int] = []
        reach = -1
        for i in members + [None]:
            if i is None or hits[i].chunk.sentence_start > reach:  # a gap: close the component
                first = min(component, default=0)
                for j in component:
                    group[j] = first
                component, reach = [], -1
            if i is not None:
                component.append(i)
                reach = max(reach, hits[i].chunk.sentence_end)
    return group


def _merged(members: list[Hit], text_of: Callable[[str], str]) -> Hit:
    """One passage from ranked members of a group (the first is the best ranked)."""
    best = members[0]
    hit = replace(best, chunk_ids=list(best.chunk_ids), scores=dict(best.scores), ranks=dict(best.ranks))
    if len(members) == 1:
        return hit
    hit.start, hit.end = min(m.start for m in members), max(m.end for m in members)
    hit.page_start, hit.page_end = min(m.page_start for m in members), max(m.page_end for m in members)
    hit.text = text_of(best.chunk.doc_id)[hit.start:hit.end]
    hit.chunk_ids = list(dict.fromkeys(i for m in members for i in m.chunk_ids))
    hit.chunk = replace(best.chunk, sentence_start=min(m.chunk.sentence_start for m in members),
                        sentence_end=max(m.chunk.sentence_end for m in members))
    for m in members[1:]:  # every stage score is "higher is better", every rank "lower is better"
        for stage, score in m.scores.items():
            hit.scores[stage] = max(score, hit.scores.get(stage, score))
        for stage, rank in m.ranks.items():
            hit.ranks[stage] = min(rank, hit.ranks.get(stage, rank))
    return hit


class _timed:
    def __init__(self, timings: dict, stage: str):
        self.timings, self.stage = timings, stage

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (time.perf_counter() - self.t) * 1000
        return False
