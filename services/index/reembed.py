"""Building a KB's dense collection from SQLite: switching the embedding model (re-embed) and
rebuilding with the same one (reindex). Either way a new collection is built next to the one in use,
then the KB's record flips to it in one settings write and the old one is dropped — search keeps
working on the old collection until the new one is complete, and a failure leaves the KB as it was.
Vectors come from the embedding cache where the same model already embedded the same text."""
from __future__ import annotations

from typing import Callable

from services.index.embedding import embed_with_cache, load_embedder
from services.index.index_text import StoredIndexTexts
from services.index.library import Library
from services.index.storage import estimate_ingest
from services.index.store import KnowledgeBase
from services.index.vectors import IndexSpec


def reembed(lib: Library, kb: KnowledgeBase, model: str, progress: Callable[[int, int], None] | None = None) -> int:
    """Re-embed all chunks of `kb` with `model`; returns the number of chunks. Raises ModelLoadError.
    When `model` resolves to the model the index was built with, only the setting changes."""
    lib.require_owner()
    embedder = load_embedder(model, lib.server_key(kb, model))
    record = lib.dense.record(kb)
    if record and record["fingerprint"] == embedder.fingerprint_id:
        lib.store.update_kb_settings(kb.id, embedding_model=model, dense_index={**record, "model": model})
        return lib.store.count_chunks(kb.id)
    lib.ensure_space(estimate_ingest(0, 0, lib.store.count_chunks(kb.id), embedder.dim))
    return build_dense(lib, kb, embedder, model, progress)


def build_dense(lib: Library, kb: KnowledgeBase, embedder, model: str,
                progress: Callable[[int, int], None] | None = None) -> int:
    """Embed every searchable chunk into a new collection, then switch the KB to it."""
    with lib.write_lock:
        old = lib.dense.collection(kb)
        record = {**lib.dense.new_record(kb, embedder), "model": model}
        lib.backend.ensure(record["collection"], IndexSpec(model, embedder.dim, embedder.fingerprint_id))
        total, done = lib.store.count_chunks(kb.id), 0
        texts_of = StoredIndexTexts(lib.store, kb.id)
        try:
            for batch in lib.store.iter_chunks(kb.id, 256):
                vectors, _ = embed_with_cache(embedder, lib.cache, texts_of(batch))
                lib.backend.upsert(record["collection"], [c.id for c in batch], vectors, [c.doc_id for c in batch])
                done += len(batch)
                if progress:
                    progress(done, total)
        except BaseException:
            lib.backend.drop(record["collection"])
            raise
        lib.store.update_kb_settings(kb.id, embedding_model=model, dense_index=record)
        lib.store.set_dense_done(kb.id)  # every ready document's vectors are in the new collection
        if old and old != record["collection"]:
            lib.backend.drop(old)
    return total
