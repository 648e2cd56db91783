"""What the indexes see for a chunk: the document title, then the chunk text (normalised).

Shared by ingest, re-embedding, re-indexing and the BM25 backfill of older data dirs, so every
path derives exactly the same index text — and therefore the same BM25 terms and embedding-cache
keys — from what SQLite stores.
"""
from __future__ import annotations

from pathlib import Path

from services.index.bm25 import terms_blob
from services.index.embedding import EmbeddingCache
from services.documents.text import normalize
from services.documents.tokenizer import tokenize


def document_title(text: str, filename: str) -> str:
    """The document's title: its first line when that is short (a heading), else the file name."""
    first = text.lstrip().split("\n", 1)[0].strip()
    if 0 < len(first) <= 40 and len(text) > len(first) + 20:
        return first
    return Path(filename).stem


def index_text(title: str, chunk) -> str:
    """What BM25 and the embedder see for a chunk: the document title, then the chunk text.

    Chunks after the first lose the subject their document is about (the title names it); putting
    the title in front of every chunk's index text lets queries that name the subject find them.
    The stored and quoted chunk text is unchanged.
    """
    text = normalize(chunk.text)
    if chunk.start == 0 or text.startswith(normalize(title)):
        return text
    return f"{normalize(title)}\n{text}"


def index_rows(texts: list[str]) -> list[tuple[bytes, int, str]]:
    """(BM25 terms blob, BM25 length, embedding-cache key) for each index text, as SQLite stores them."""
    return [(*terms_blob(tokenize(t)), EmbeddingCache.key(t)) for t in texts]


class StoredIndexTexts:
    """Index texts of chunks already in SQLite (re-embedding, re-indexing, fine-tuning, backfill):
    each document's title is read once, however many of its chunks are asked for."""

    def __init__(self, store, kb_id: int):
        self.store, self.kb_id = store, kb_id
        self._titles: dict[str, str] = {}

    def title(self, doc_id: str) -> str:
        if doc_id not in self._titles:
            doc = self.store.get_document(self.kb_id, doc_id)
            self._titles[doc_id] = document_title(self.store.document_text(self.kb_id, doc_id), doc.filename)
        return self._titles[doc_id]

    def __call__(self, chunks) -> list[str]:
        return [index_text(self.title(c.doc_id), c) for c in chunks]
