"""Rebuild a KB's indexes from SQLite (`reindex`) and verify they agree with it (`check`).

SQLite is the truth; BM25 and the dense collection derive from it. `reindex` recomputes every
chunk's BM25 terms and embedding-cache key from the stored text (picking up a changed tokenizer or
user dictionary) and builds a fresh dense collection (cached vectors reused), then switches to it.
`check` compares SQLite with each index — chunk ids missing from an index, points with no chunk
(orphans), BM25 statistics against a from-scratch computation, the dense collection's recorded model
fingerprint, stray collections and half-written rows — and says `ok` only when all agree. Documents
SQLite records as keyword-only ("vectors pending", being embedded) are counted, not mismatches.
"""
from __future__ import annotations

import time
from typing import Callable

from services import errors
from services.index.bm25 import BM25Index, decode_terms
from services.index.index_text import StoredIndexTexts, index_rows
from services.index.library import Library
from services.index.reembed import build_dense
from services.index.storage import estimate_ingest
from services.index.store import KnowledgeBase
from services.index.vectors import kb_prefix


def reindex(lib: Library, kb: KnowledgeBase, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Rebuild BM25 terms and the dense collection of `kb` from SQLite; returns counts and seconds."""
    lib.require_owner()
    dim = int((lib.dense.record(kb) or {}).get("dim") or 1024)  # a new collection is built beside the old one
    lib.ensure_space(estimate_ingest(0, 0, lib.store.count_chunks(kb.id), dim))
    progress = progress or (lambda *_: None)
    started = time.perf_counter()
    with lib.write_lock:
        updates = list(_recomputed_rows(lib, kb))
        lib.store.set_chunk_terms([(i, blob, n, key) for i, (blob, n, key) in updates])
        lib.keyword.forget(kb.id)  # rebuilt from SQLite at the next search
        progress("bm25", len(updates), len(updates))
        bm25_seconds = time.perf_counter() - started
        embedder = lib.embedder(kb)
        chunks = build_dense(lib, kb, embedder, lib.embedding_model(kb), lambda d, t: progress("dense", d, t))
        for name in lib.backend.collections(kb_prefix(kb.id)):
            if name != lib.dense.collection(kb):
                lib.backend.drop(name)
    return {"kb": kb.name, "chunks": chunks, "bm25_seconds": round(bm25_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3), "collection": lib.dense.collection(kb)}


def _recomputed_rows(lib: Library, kb: KnowledgeBase):
    """(chunk id, (terms blob, length, embed key)) for every searchable chunk, from stored text."""
    texts_of = StoredIndexTexts(lib.store, kb.id)
    for batch in lib.store.iter_chunks(kb.id, 1000):
        yield from zip((c.id for c in batch), index_rows(texts_of(batch)))


def check(lib: Library, kb: KnowledgeBase) -> dict:
    """Compare SQLite with every index of `kb`. Read-only; `ok` is False on any disagreement.

    `vectors_pending` names the documents searchable by keywords only (their vectors are still to
    be computed: not a disagreement, but `check --strict` fails on them). A process that does not
    own the data dir (the app is running, or the disk is full / read-only) checks the dense side
    against the vectors cached in SQLite — what its searches use — and says so in `dense.mode`."""
    with lib.write_lock:
        live = lib.store.chunk_id_set(kb.id)
        report = {"kb": kb.name, "sqlite": _sqlite_counts(lib, kb, live), "indexes": {
            "bm25": _check_bm25(lib, kb, live), "dense": _check_dense(lib, kb, live)}}
    problems = [f"{name}: {key}" for name, r in report["indexes"].items() for key in ("missing", "orphans")
                if r.get(key)]
    problems += [f"bm25: {p}" for p in report["indexes"]["bm25"]["problems"]]
    problems += [f"dense: {p}" for p in report["indexes"]["dense"].get("problems", [])]
    report["vectors_pending"] = [d.filename for d in lib.store.list_documents(kb.id)
                                 if d.status == "ready" and d.dense_state == "pending"]
    if report["sqlite"]["indexing"] or report["sqlite"]["pending_chunks"]:
        problems.append("sqlite: half-written rows (a dead process's ingest or re-chunk; reconciled when the app restarts)")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def _sqlite_counts(lib: Library, kb: KnowledgeBase, live: set[int]) -> dict:
    docs = lib.store.list_documents(kb.id)
    every = lib.store.chunk_id_set(kb.id, searchable=False)
    return {"documents": len(docs), "ready": sum(d.status == "ready" for d in docs),
            "indexing": sum(d.status == "indexing" for d in docs), "chunks": len(live),
            "pending_chunks": len(every - live)}


def _check_bm25(lib: Library, kb: KnowledgeBase, live: set[int]) -> dict:
    """The live BM25 index against SQLite: same ids, same statistics as a fresh build, and stored
    terms equal to what the tokenizer gives for the stored text today."""
    index = lib.keyword.index(kb)
    live = lib.store.chunk_id_set(kb.id, enabled_only=True)  # BM25 holds switched-on documents only
    fresh = BM25Index()
    fresh.add(lib.keyword.rows(kb, sorted(live)))
    problems = []
    if index.stats() != fresh.stats():
        problems.append("statistics differ from a fresh build")
    stored = {i: (blob, n) for i, n, blob, _ in lib.store.bm25_rows(kb.id) if blob is not None}
    stale = sum(1 for i, (blob, n, _) in _recomputed_rows(lib, kb)
                if i in stored and (stored[i][1] != n or not _same_terms(stored[i][0], blob)))
    if stale:
        problems.append(f"{stale} chunks' stored terms differ from the current tokenizer (run reindex)")
    return {"points": len(index.ids), "missing": len(live - index.ids), "orphans": len(index.ids - live),
            "stale_terms": stale, "problems": problems}


def _same_terms(a: bytes, b: bytes) -> bool:
    (ia, ca), (ib, cb) = decode_terms(a), decode_terms(b)
    return ia.tolist() == ib.tolist() and ca.tolist() == cb.tolist()


def _check_dense(lib: Library, kb: KnowledgeBase, live: set[int]) -> dict:
    record = lib.dense.record(kb)
    if record is not None and lib.dense.from_cache:
        return _check_dense_cache(lib, kb, live, record)
    stray = [] if lib.dense.from_cache else [
        n for n in lib.backend.collections(kb_prefix(kb.id)) if not record or n != record["collection"]]
    if record is None:
        pending = lib.store.chunk_ids_of(kb.id, [d for _, d in lib.store.dense_pending(kb.id)])
        return {"collection": None, "points": 0, "missing": len(live - pending), "orphans": 0,
                "vectors_pending": len(pending), "stray_collections": stray,
                "problems": ["no dense collection recorded"] if live - pending else []}
    problems = []
    if not lib.backend.exists(record["collection"]):
        problems.append("recorded collection does not exist")
        ids: set[int] = set()
    else:
        ids = lib.backend.ids(record["collection"])
    pending = lib.store.chunk_ids_of(kb.id, [d for _, d in lib.store.dense_pending(kb.id)])
    notes = []
    try:
        embedder = lib.embedder(kb)
        if embedder.fingerprint_id != record["fingerprint"]:
            problems.append("the embedding model changed since the collection was built (run reindex)")
    except errors.ModelServerError as exc:  # the indexes still agree with SQLite; the model is checked when it is back
        notes.append(f"embedding model server not answering, model identity not verified: {type(exc).__name__}")
    except Exception as exc:  # noqa: BLE001 - a model that cannot load is a finding, not a crash
        problems.append(f"embedding model cannot be loaded: {type(exc).__name__}")
    if stray:
        problems.append(f"{len(stray)} collections not recorded for this KB")
    return {"collection": record["collection"], "fingerprint": record["fingerprint"], "points": len(ids),
            "missing": len(live - ids - pending), "orphans": len(ids - live), "vectors_pending": len(pending - ids),
            "stray_collections": stray, "problems": problems, "notes": notes}


def _check_dense_cache(lib: Library, kb: KnowledgeBase, live: set[int], record: dict) -> dict:
    """Read-only dense check (the shards belong to another process or the disk cannot be written):
    every searchable chunk must have its vector, of the recorded model and dimension, in the cache."""
    pending = lib.store.chunk_ids_of(kb.id, [d for _, d in lib.store.dense_pending(kb.id)])
    keys = dict(lib.store.embed_keys(kb.id))  # chunks written before keys were stored are not checkable here
    dim = int(record.get("dim") or 0)  # 0: a legacy collection not yet settled by its owner
    found = lib.cache.vectors_for(record["fingerprint"], list(set(keys.values())), dim) if dim else {}
    have = {i for i, k in keys.items() if k in found}
    missing = (live & set(keys)) - have - pending if dim else set()
    return {"collection": record["collection"], "fingerprint": record["fingerprint"], "mode": "cache",
            "points": len(have & live), "missing": len(missing), "orphans": 0,
            "vectors_pending": len(pending - have), "stray_collections": [], "problems": [], "notes": []}
