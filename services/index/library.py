"""Library: one open data dir — the store and the indexes derived from it — opened once per process.

It keeps the invariants that span SQLite and the indexes (../shared/DESIGN.md §3) by composing
collaborators that each own one concern, and holds the KB-level operations that touch several:
- `ownership` (services.index.ownership): only the data dir's owner writes rows or opens Qdrant Edge
  shards; another process (the CLI while the app runs) is read-only and every write raises
  DataDirBusy before doing anything. Becoming the owner runs services.index.reconcile first.
- `store` (SQLite, the truth) and `cache` (the embedding cache, keyed by model fingerprint).
- `keyword` (services.index.keyword): BM25 computed in memory from SQLite rows, following every commit.
- `dense` (services.index.dense.DenseIndex): each KB's recorded collection and model identity, and
  dense search (exact over the cached vectors in a read-only process).
- `originals` (services.index.originals): the uploaded files kept for the page view.
- `llm_refusals` (services.index.repositories.LLMRefusalRows): LLM endpoints that refused our last request,
  kept across restarts (services.answers.llm reads and writes it; only the owner writes).
Per-KB settings live in services.index.kb_settings.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from services import errors
from services.config import data_dir
from services.index import storage
from services.index.dense import DenseIndex
from services.index.embedding import EmbeddingCache, load_embedder
from services.index.keyword import KeywordIndex
from services.index.originals import Originals
from services.index.ownership import Ownership
from services.index.reconcile import reconcile
from services.index.repositories import LLMRefusalRows
from services.index.store import KnowledgeBase, Store
from services.index.vectors import Backend

log = logging.getLogger(__name__)
OPTIMIZE_FROM_CHUNKS = 20_000  # below this, unoptimised exact search is already a few ms


class Library:
    """One open data dir. `backend`: a vector engine to use instead of the data dir's own."""

    def __init__(self, root: str | Path | None = None, backend: Backend | None = None):
        self.root = Path(root) if root else data_dir()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # for its owner only (config.data_dir)
        # A full or read-only disk: open for reading only (never the owner, no vector shards), and
        # every write says why it is refused (services.index.storage).
        problem = storage.probe(self.root)
        if problem is not None and not (self.root / "wendao.db").exists():
            raise storage.new_data_dir_error(problem)  # nothing to read here: say why nothing can be written
        self.ownership = Ownership(self.root, problem)
        readonly = problem is not None
        self.store = Store(self.root / "wendao.db", readonly=readonly)
        self.cache = EmbeddingCache(self.root / "embeddings.db", readonly=readonly)
        self.write_lock = threading.RLock()  # one ingest/delete/rebuild at a time per process
        self._embedding: set[tuple[int, str]] = set()  # (kb id, doc id) whose vectors are being written now
        self._embedding_lock = threading.Lock()
        self.keyword = KeywordIndex(self.store, lambda: self.ownership.owner)
        self.dense = DenseIndex(self.root, self.store, self.cache, self.ownership, backend)
        self.originals = Originals(self.root)
        self.llm_refusals = LLMRefusalRows(self.store, lambda: self.ownership.owner)
        self._closed = False
        self._on_close: list = []
        self.ownership.when_owner(self.reconcile)  # first: later hooks see what a dead owner left queued
        self.try_own()

    # --- ownership (services.index.ownership) --------------------------------------------------
    @property
    def owner(self) -> bool:
        return self.ownership.owner

    @property
    def storage_problem(self) -> errors.WendaoError | None:
        return self.ownership.storage_problem

    def try_own(self) -> bool:
        """Become the data dir's owner if no live process is; reconcile on becoming owner."""
        return self.ownership.try_own()

    def when_owner(self, callback) -> None:
        """Call `callback()` now if this process owns the data dir, else each time it becomes the owner
        (after reconcile has queued what a dead owner left). The background worker starts this way."""
        self.ownership.when_owner(callback)

    def require_owner(self) -> None:
        """DataDirBusy unless this process owns the dir; DiskFull / ReadOnlyStorage on a bad disk."""
        self.ownership.require_owner()

    def claim_embedding(self, kb_id: int, doc_id: str) -> bool:
        """Claim the writing of one document's vectors for this thread; False when another thread of
        this process (the only one that writes: the owner) is writing them now. A document is
        'pending' both while its first ingest embeds it and after that ingest died, and only the
        second case is work left over for a re-upload or the worker."""
        with self._embedding_lock:
            if (kb_id, doc_id) in self._embedding:
                return False
            self._embedding.add((kb_id, doc_id))
            return True

    def release_embedding(self, kb_id: int, doc_id: str) -> None:
        with self._embedding_lock:
            self._embedding.discard((kb_id, doc_id))

    def ensure_space(self, needed: int) -> None:
        """DiskFull / ReadOnlyStorage (nothing written yet) unless a write of `needed` bytes fits."""
        self.ownership.ensure_space(needed)

    @property
    def read_only(self) -> bool:
        return self.ownership.read_only

    def reconcile(self) -> int:
        """Owner only: remove what dead processes left half-done (services.index.reconcile)."""
        return reconcile(self.store, self.dense, self.originals, self.write_lock)

    @property
    def backend(self) -> Backend:
        """The vector engine (services.index.dense.DenseIndex.backend)."""
        return self.dense.backend

    # --- knowledge bases and their models -------------------------------------------------------
    def kb(self, name: str, create: bool = False) -> KnowledgeBase:
        """The KB named `name`; created (owner only) when `create`, else KnowledgeBaseNotFound."""
        kb = self.store.find_kb(name)
        if kb is None:
            if not create:
                raise errors.KnowledgeBaseNotFound(f"找不到知识库「{name}」。")
            self.require_owner()
            kb = self.store.create_kb(name)
        return kb

    def rename_kb(self, kb: KnowledgeBase, name: str) -> KnowledgeBase:
        self.require_owner()
        return self.store.rename_kb(kb.id, name)

    def delete_kb(self, kb: KnowledgeBase) -> None:
        """Delete a KB — its rows first (the truth), then every collection and file named for it —
        and the hidden evaluation copies made from it (services.tuning.evaluation.chunker_variant)."""
        self.require_owner()
        with self.write_lock:
            copies = [k for k in self.store.list_kbs() if k.settings.get("source_kb") == kb.id]
            for victim in [kb, *copies]:
                keys = self.store.embed_keys_of(victim.id)
                self.store.delete_kb(victim.id)
                self.keyword.forget(victim.id)
                self.originals.remove_kb(victim.id)
                shutil.rmtree(self.kb_folder(victim.id), ignore_errors=True)
                self.dense.drop_kb(victim.id)
                self._forget_vectors(keys)
            self.store.checkpoint()

    def _forget_vectors(self, keys: set[str]) -> None:
        """Drop cached vectors of texts no chunk holds any more (services.index.embedding_cache.forget)."""
        if self.cache is not None:
            self.cache.forget(keys - self.store.embed_keys_in_use(keys))

    def kb_folder(self, kb_id: int) -> Path:
        """A folder for files kept for one KB (its saved question set); removed with the KB."""
        return self.root / "kb_files" / str(kb_id)

    def embedding_model(self, kb: KnowledgeBase) -> str:
        """The KB's embedding model (services.index.dense.DenseIndex.model)."""
        return self.dense.model(kb)

    def embedder(self, kb: KnowledgeBase):
        """The KB's embedder (loaded once per process); for a served model, with the key for its
        endpoint (`server_key`)."""
        name = self.embedding_model(kb)
        return load_embedder(name, self.server_key(kb, name))

    def server_key(self, kb: KnowledgeBase, name: str) -> str:
        """The API key for a served model's endpoint: one saved in this KB for exactly that base_url,
        else a server-side key configured for the same endpoint, else "" (services.index.served.key_for).
        "" for in-process models."""
        from services.index.served import key_for, parse_served

        served = parse_served(name)
        if served is None:
            return ""
        return key_for(served.base_url, self.store.get_kb(kb.id).settings.get("model_server_keys") or [])

    def optimize(self, kb: KnowledgeBase) -> None:
        """Merge segments and build the HNSW graph of the dense index (bench at 100k chunks: 62 s;
        dense search 12.6 -> 6.0 ms). Blocks (and holds the GIL on the embedded engine)."""
        self.require_owner()
        with self.write_lock:
            self.dense.optimize(kb)

    # --- documents ------------------------------------------------------------------------------
    def set_enabled(self, kb: KnowledgeBase, doc_id: str, enabled: bool) -> None:
        """Switch a document off (kept, indexed, not searched) or on; takes effect at the next search."""
        self.require_owner()
        self.store.set_enabled(kb.id, doc_id, enabled)

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        """Delete a document's rows, then its points and its kept original (DocumentNotFound if none)."""
        self.require_owner()
        with self.write_lock:
            if self.store.get_document(kb.id, doc_id) is None:
                raise errors.DocumentNotFound()
            keys = self.store.embed_keys_of(kb.id, doc_id)
            self.dense.drop_points(kb, self.store.delete_document(kb.id, doc_id))
            self.originals.remove(kb.id, doc_id)
            self._forget_vectors(keys)
            self.store.checkpoint()

    # --- closing --------------------------------------------------------------------------------
    def on_close(self, callback) -> None:
        """Call `callback()` when this Library closes, before its store does: the background worker
        stops there, so no thread is inside SQLite when the connection closes (that crashes the process)."""
        self._on_close.append(callback)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the store; the last owner in this process also closes the shards and the lock."""
        if self._closed:
            return
        self._closed = True
        for callback in list(self._on_close):
            try:
                callback()
            except Exception:  # noqa: BLE001 - closing must go on
                log.exception("a close hook failed")
        self.store.close()
        if self.ownership.release():
            from services.index.vectors import close_backend

            close_backend(self.root)


_LIBRARIES: dict[str, Library] = {}
_LOCK = threading.Lock()


def open_library(root: str | Path | None = None) -> Library:
    """The process-wide Library for a data directory (created on first use)."""
    key = str(Path(root or data_dir()).resolve())
    with _LOCK:
        if key not in _LIBRARIES:
            _LIBRARIES[key] = Library(key)
        return _LIBRARIES[key]
