"""What the indexes see for a chunk: the document title, then the chunk text (normalised).

Shared by ingest, re-embedding, re-indexing and the BM25 backfill of older data dirs, so every
path derives exactly the same index text — and therefore the same BM25 terms and embedding-cache
keys — from what SQLite stores.
"""
from __future__ import annotations

from pathlib import Path

from services.bm25 import terms_blob
from services.embedding import EmbeddingCache
from services.text import normalize
from services.tokenizer import tokenize


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
