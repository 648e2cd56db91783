"""Switching a knowledge base to another embedding model: re-embed every chunk into a new dense
collection, then flip the KB's setting and drop the old collection (so search keeps working on the
old model until the new index is complete, and a failure leaves the KB as it was)."""
from __future__ import annotations

from typing import Callable

from services.embedding import embed_with_cache, load_embedder
from services.ingest import document_title, index_text
from services.library import Library
from services.store import KnowledgeBase
from services.vectors import IndexSpec


def reembed(lib: Library, kb: KnowledgeBase, model: str, progress: Callable[[int, int], None] | None = None) -> int:
    """Re-embed all chunks of `kb` with `model`; returns the number of chunks. Raises ModelLoadError."""
    embedder = load_embedder(model)
    old_name = lib.dense_collection(kb)
    new_name = lib.dense_collection(kb, embedder.name)
    if new_name == old_name:
        return lib.store.count_chunks(kb.id)
    lib.backend.drop(new_name)
    lib.backend.ensure(new_name, IndexSpec(embedder.name, embedder.dim))
    total, done = lib.store.count_chunks(kb.id), 0
    titles: dict[str, str] = {}
    with lib.write_lock:
        for batch in lib.store.iter_chunks(kb.id, 256):
            for c in batch:
                if c.doc_id not in titles:
                    doc = lib.store.get_document(kb.id, c.doc_id)
                    titles[c.doc_id] = document_title(lib.store.document_text(kb.id, c.doc_id), doc.filename)
            vectors, _ = embed_with_cache(embedder, lib.cache, [index_text(titles[c.doc_id], c) for c in batch])
            lib.backend.upsert(new_name, [c.id for c in batch], vectors, [c.doc_id for c in batch])
            done += len(batch)
            if progress:
                progress(done, total)
        lib.store.update_kb_settings(kb.id, embedding_model=model)
        lib.backend.drop(old_name)
    return total
