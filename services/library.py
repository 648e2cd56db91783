"""Library: the store plus its derived indexes and models, opened once per process.

It owns the invariants that span SQLite and Qdrant: a document is searchable only when 'ready';
deleting a document removes its points; on open, documents left 'indexing' by a crash are removed
from the store and the indexes (`reconcile`).
"""
from __future__ import annotations

import threading
from pathlib import Path

from services import errors
from services.config import data_dir
from services.embedding import EmbeddingCache, load_embedder
from services.models import DEFAULT_EMBEDDER
from services.store import KnowledgeBase, Store
from services.vectors import Backend, IndexSpec, collection_name, default_backend

BM25_SPEC = IndexSpec("bm25", 0)
OPTIMIZE_FROM_CHUNKS = 20_000  # below this, unoptimised exact search is already a few ms


class Library:
    def __init__(self, root: str | Path | None = None, backend: Backend | None = None):
        self.root = Path(root) if root else data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.root / "wendao.db")
        self.backend = backend or default_backend(self.root)
        self.cache = EmbeddingCache(self.root / "embeddings.db")
        self.write_lock = threading.Lock()  # one ingest/delete at a time per process
        self.reconcile()

    # --- knowledge bases --------------------------------------------------------------------
    def kb(self, name: str, create: bool = False) -> KnowledgeBase:
        kb = self.store.find_kb(name)
        if kb is None:
            if not create:
                raise errors.KnowledgeBaseNotFound(f"找不到知识库「{name}」。")
            kb = self.store.create_kb(name)
        return kb

    def embedding_model(self, kb: KnowledgeBase) -> str:
        return self.store.get_kb(kb.id).settings.get("embedding_model", DEFAULT_EMBEDDER)

    def embedder(self, kb: KnowledgeBase):
        return load_embedder(self.embedding_model(kb))

    def bm25_collection(self, kb: KnowledgeBase) -> str:
        return collection_name(kb.id, BM25_SPEC)

    def dense_collection(self, kb: KnowledgeBase, model: str | None = None) -> str:
        return collection_name(kb.id, IndexSpec(model or self.embedding_model(kb), 1))

    def optimize(self, kb: KnowledgeBase) -> None:
        """Merge segments and build the HNSW graph of both indexes (bench at 100k chunks: 62 s;
        dense search 12.6 -> 6.0 ms). Blocks (and holds the GIL on the embedded engine)."""
        with self.write_lock:
            self.backend.optimize(self.bm25_collection(kb))
            self.backend.optimize(self.dense_collection(kb))

    def delete_kb(self, kb: KnowledgeBase) -> None:
        with self.write_lock:
            self.backend.drop(self.bm25_collection(kb))
            self.backend.drop(self.dense_collection(kb))
            self.store.delete_kb(kb.id)

    # --- documents --------------------------------------------------------------------------
    def drop_points(self, kb: KnowledgeBase, chunk_ids: list[int]) -> None:
        """Remove chunk ids from both indexes of a KB."""
        if chunk_ids:
            self.backend.delete(self.bm25_collection(kb), chunk_ids)
            self.backend.delete(self.dense_collection(kb), chunk_ids)

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        with self.write_lock:
            if self.store.get_document(kb.id, doc_id) is None:
                raise errors.DocumentNotFound()
            self.drop_points(kb, self.store.chunk_ids(kb.id, doc_id))  # IndexLocked here changes nothing
            self.store.delete_document(kb.id, doc_id)

    def reconcile(self) -> int:
        """Remove documents a crash left half-written; returns how many were removed.

        Their points are dropped too when the index can be opened; points that stay behind (index
        locked by another process) are harmless: chunk ids are never reused and search only returns
        chunks of 'ready' documents.
        """
        stale = self.store.stale_documents()
        for doc in stale:
            self.discard(self.store.get_kb(doc.kb_id), doc.id)
        return len(stale)

    def discard(self, kb: KnowledgeBase, doc_id: str) -> None:
        """Delete a document's rows, then (best effort) its points."""
        chunk_ids = self.store.delete_document(kb.id, doc_id)
        try:
            self.drop_points(kb, chunk_ids)
        except errors.IndexLocked:
            pass

    def ensure_indexes(self, kb: KnowledgeBase, embedder) -> None:
        """Open (or create) both indexes of a KB; raises IndexLocked before anything is written."""
        self.backend.ensure(self.bm25_collection(kb), BM25_SPEC)
        self.backend.ensure(self.dense_collection(kb, embedder.name), IndexSpec(embedder.name, embedder.dim))

    def close(self) -> None:
        self.store.close()


_LIBRARIES: dict[str, Library] = {}
_LOCK = threading.Lock()


def open_library(root: str | Path | None = None) -> Library:
    """The process-wide Library for a data directory (created on first use)."""
    key = str(Path(root or data_dir()).resolve())
    with _LOCK:
        if key not in _LIBRARIES:
            _LIBRARIES[key] = Library(key)
        return _LIBRARIES[key]


# --- per-knowledge-base settings (persisted in the KB's settings JSON) -----------------------
def retrieval_settings(lib: Library, kb: KnowledgeBase):
    from services.config import RetrievalSettings

    saved = lib.store.get_kb(kb.id).settings.get("retrieval", {})
    return RetrievalSettings(**{k: v for k, v in saved.items() if k in RetrievalSettings.__dataclass_fields__})


def chunking_config(lib: Library, kb: KnowledgeBase):
    from services.chunking import ChunkingConfig

    saved = lib.store.get_kb(kb.id).settings.get("chunking", {})
    try:
        return ChunkingConfig(**{k: v for k, v in saved.items() if k in ChunkingConfig.__dataclass_fields__})
    except ValueError:
        return ChunkingConfig()


def llm_settings(lib: Library, kb: KnowledgeBase, session_key: str = "", secrets: dict | None = None):
    """Endpoint settings, later sources winning: environment (OPENAI_BASE_URL, OPENAI_API_KEY,
    WENDAO_LLM_MODEL) < `secrets` (st.secrets, passed in by the UI) < settings saved for the KB
    (the key only when the user chose to save it) < the key typed in this session."""
    from dataclasses import replace

    from services.config import LLMSettings

    base = replace(LLMSettings.from_env(), **{k: v for k, v in (secrets or {}).items() if v})
    saved = lib.store.get_kb(kb.id).settings.get("llm", {})
    fields = {k: v for k, v in saved.items() if k in LLMSettings.__dataclass_fields__ and v not in ("", None)}
    settings = replace(base, **fields)
    if session_key:
        settings = replace(settings, api_key=session_key)
    return settings


def save_settings(lib: Library, kb: KnowledgeBase, section: str, values: dict) -> None:
    """Persist one settings section ('retrieval', 'chunking', 'llm') for a KB."""
    lib.store.update_kb_settings(kb.id, **{section: values})


def save_llm_settings(lib: Library, kb: KnowledgeBase, settings, save_key: bool = False) -> None:
    """Persist endpoint settings; the API key only when the user explicitly asks."""
    values = dict(settings.__dict__)
    if not save_key:
        values.pop("api_key", None)
    save_settings(lib, kb, "llm", values)
