"""Dense vectors searched exactly in memory.

- `ExactVectors`: chunk ids with one vector each, searched by inner product (the vectors are
  normalised, so this is cosine) — what a read-only process searches instead of the vector store.
- `MemoryDense`: a model's vectors for a KB's chunks, embedded (through the embedding cache) and
  held in memory. It is a dense stage for `services.search.retrieval.Retriever`, so a model the KB's
  index was not built with (a fine-tuning candidate) is measured by the same search pipeline and
  evaluator users get, without building a collection.
"""
from __future__ import annotations

import numpy as np

from services.index.embedding import embed_with_cache
from services.index.index_text import StoredIndexTexts
from services.index.vectors import ScoredId


class ExactVectors:
    """Chunk ids and their vectors (one row each), searched exactly."""

    def __init__(self, ids, matrix: np.ndarray):
        self.ids = np.asarray(ids, np.int64)
        self.matrix = matrix
        self.row = {int(i): n for n, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, vector, limit: int, allowed: set[int] | None = None) -> list[ScoredId]:
        """The `limit` best chunks for a query vector, best first; only `allowed` ids when given."""
        if not len(self.ids):
            return []
        scores = self.matrix @ np.asarray(vector, np.float32)
        if allowed is not None:
            scores = np.where(np.isin(self.ids, np.fromiter(allowed, np.int64)), scores, -np.inf)
        top = [i for i in np.argsort(-scores)[:limit] if np.isfinite(scores[i])]
        return [ScoredId(int(self.ids[i]), float(scores[i])) for i in top]

    def score(self, vector, chunk_id: int) -> float:
        """One chunk's score for a query vector (-1 when the chunk has no vector here)."""
        row = self.row.get(chunk_id)
        return float(self.matrix[row] @ vector) if row is not None else -1.0


def searchable_documents(store, kb_id: int, doc_ids: list[str] | None) -> list[str] | None:
    """The documents a search covers: `doc_ids` when given, else every switched-on document (None
    when none is switched off, meaning all)."""
    if doc_ids is not None:
        return doc_ids
    off = store.disabled_documents(kb_id)
    return [d for d in store.filenames(kb_id) if d not in off] if off else None


class MemoryDense:
    """A dense stage over `embedder`'s vectors for a KB's chunks (all of them, or `chunks`), held in
    memory. With `cache` (the library's embedding cache) vectors already computed are reused and new
    ones kept, so switching the KB to this model later embeds nothing again."""

    def __init__(self, store, kb_id: int, embedder, chunks: list | None = None, cache=None):
        self.store, self.kb_id, self.model = store, kb_id, embedder
        if chunks is None:
            chunks = [c for batch in store.iter_chunks(kb_id, 1000) for c in batch]
        matrix, _ = embed_with_cache(embedder, cache, StoredIndexTexts(store, kb_id)(chunks))
        self.vectors = ExactVectors([c.id for c in chunks], matrix)

    def embedder(self):
        return self.model

    def search(self, embedder, vector, limit: int, doc_ids: list[str] | None = None) -> list[ScoredId]:
        """Like Library.dense_search: switched-on documents only, or only `doc_ids`."""
        doc_ids = searchable_documents(self.store, self.kb_id, doc_ids)
        allowed = self.store.chunk_ids_of(self.kb_id, doc_ids) if doc_ids is not None else None
        return self.vectors.search(vector, limit, allowed)
