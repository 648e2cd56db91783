"""A data dir's keyword side: one in-memory BM25 index per KB (services.index.bm25), kept equal to SQLite.

SQLite stores each chunk's BM25 terms; the index is built from those rows on first use and follows
every commit through the KB's generation counter (only changed chunks are applied), so its
statistics always equal a fresh build's. It holds switched-on documents only.
"""
from __future__ import annotations

from typing import Callable

from services.index.bm25 import BM25Index, SparseVector
from services.index.index_text import StoredIndexTexts, index_rows
from services.index.store import KnowledgeBase, Store
from services.index.vectors import ScoredId


class KeywordIndex:
    """The BM25 indexes of one open data dir's KBs. `can_write()` says whether terms missing from
    older rows may be stored back (only the owner writes)."""

    def __init__(self, store: Store, can_write: Callable[[], bool]):
        self.store = store
        self.can_write = can_write
        self.indexes: dict[int, BM25Index] = {}

    def index(self, kb: KnowledgeBase) -> BM25Index:
        """The KB's BM25 index, brought up to date with SQLite (cheap when nothing changed)."""
        index = self.indexes.setdefault(kb.id, BM25Index())
        with index.lock:
            generation = self.store.generation(kb.id)
            if index.generation != generation:
                live = self.store.chunk_id_set(kb.id, enabled_only=True)
                index.remove(index.ids - live)
                added = sorted(live - index.ids)
                if added:
                    index.add(self.rows(kb, added if index.ids else None, live))
                index.generation = generation
        return index

    def search(self, kb: KnowledgeBase, query: SparseVector, limit: int,
               doc_ids: list[str] | None = None) -> list[ScoredId]:
        """BM25 over the KB's switched-on documents (or only `doc_ids`), best first."""
        allowed = self.store.chunk_ids_of(kb.id, doc_ids) if doc_ids is not None else None
        return [ScoredId(i, s) for i, s in self.index(kb).search(query, limit, allowed)]

    def rows(self, kb: KnowledgeBase, ids: list[int] | None,
             only: set[int] | None = None) -> list[tuple[int, int, bytes]]:
        """(id, length, terms) of chunks `ids` (None: all indexed chunks, restricted to `only`)."""
        rows, missing = [], []
        for chunk_id, length, blob, doc_id in self.store.bm25_rows(kb.id, ids):
            if only is not None and chunk_id not in only:
                continue
            (rows if blob is not None else missing).append((chunk_id, length, blob, doc_id))
        if missing:  # chunks written before BM25 terms lived in SQLite
            rows.extend(self.backfill(kb, missing))
        return [(i, n, b) for i, n, b, _ in rows]

    def backfill(self, kb: KnowledgeBase, missing: list[tuple]) -> list[tuple]:
        """Compute the terms of rows stored without them (older data dirs) from their index text;
        stored back when this process may write."""
        chunks = self.store.get_chunks([m[0] for m in missing])
        texts_of = StoredIndexTexts(self.store, kb.id)
        out, updates = [], []
        for chunk_id, _, _, doc_id in missing:
            blob, length, key = index_rows(texts_of([chunks[chunk_id]]))[0]
            out.append((chunk_id, length, blob, doc_id))
            updates.append((chunk_id, blob, length, key))
        if self.can_write():
            self.store.set_chunk_terms(updates)
        return out

    def forget(self, kb_id: int) -> None:
        """Drop a KB's index; the next search rebuilds it from SQLite (after reindex or deletion)."""
        self.indexes.pop(kb_id, None)
