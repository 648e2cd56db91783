"""SQLite store: knowledge bases, documents and chunks — the source of truth.

BM25 and dense vectors are derived indexes (services.vectors) rebuilt from here when needed.
Schema changes are numbered migrations applied in order (PRAGMA user_version), from day one.
A document is written together with its chunks in one transaction with status 'indexing' and
flipped to 'ready' once its indexes are written, so a crash leaves it 'indexing' and
`stale_documents()` lets the next start remove it (see services.library.Library.reconcile).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services import errors
from services.chunking import Chunk
from services.parsing import PageSpan

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE kbs(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE documents(
        kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        pages INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL DEFAULT '',
        page_spans TEXT NOT NULL DEFAULT '[]',
        skipped_pages TEXT NOT NULL DEFAULT '[]',
        encoding TEXT,
        chunking TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        PRIMARY KEY (kb_id, id)
    );
    CREATE INDEX documents_filename ON documents(kb_id, filename);
    CREATE TABLE chunks(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kb_id INTEGER NOT NULL,
        doc_id TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        text TEXT NOT NULL,
        page_start INTEGER NOT NULL,
        page_end INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        params TEXT NOT NULL,
        sentence_start INTEGER NOT NULL DEFAULT -1,
        sentence_end INTEGER NOT NULL DEFAULT -1,
        FOREIGN KEY (kb_id, doc_id) REFERENCES documents(kb_id, id) ON DELETE CASCADE
    );
    CREATE INDEX chunks_doc ON chunks(kb_id, doc_id, ordinal);
    """,
]

DOC_STATUSES = ("indexing", "ready", "failed")


@dataclass
class KnowledgeBase:
    id: int
    name: str
    created_at: float
    settings: dict = field(default_factory=dict)


@dataclass
class Document:
    kb_id: int
    id: str
    filename: str
    size: int
    pages: int
    status: str
    error: str | None
    created_at: float
    chunk_count: int = 0
    skipped_pages: list[int] = field(default_factory=list)
    encoding: str | None = None
    chunking: dict = field(default_factory=dict)


class Store:
    """One SQLite file; safe to share across threads (writes are serialised by a lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    # --- schema -----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self.db.execute("BEGIN")
                try:
                    for statement in filter(str.strip, script.split(";")):
                        self.db.execute(statement)
                    self.db.execute(f"PRAGMA user_version={number}")
                    self.db.execute("COMMIT")
                except Exception:
                    self.db.execute("ROLLBACK")
                    raise
            return len(MIGRATIONS)

    def transaction(self):
        return _Transaction(self)

    def close(self) -> None:
        self.db.close()

    # --- knowledge bases --------------------------------------------------------------------
    def create_kb(self, name: str) -> KnowledgeBase:
        name = (name or "").strip()
        if not name or len(name) > 64:
            raise errors.InvalidName()
        with self._lock:
            if self.find_kb(name):
                raise errors.KnowledgeBaseError(f"知识库「{name}」已存在。")
            cur = self.db.execute("INSERT INTO kbs(name, created_at) VALUES (?, ?)", (name, time.time()))
            return self.get_kb(cur.lastrowid)

    def find_kb(self, name: str) -> KnowledgeBase | None:
        row = self.db.execute("SELECT * FROM kbs WHERE name=?", (name.strip(),)).fetchone()
        return _kb(row) if row else None

    def get_kb(self, kb_id: int) -> KnowledgeBase:
        row = self.db.execute("SELECT * FROM kbs WHERE id=?", (kb_id,)).fetchone()
        if row is None:
            raise errors.KnowledgeBaseNotFound()
        return _kb(row)

    def list_kbs(self) -> list[KnowledgeBase]:
        return [_kb(r) for r in self.db.execute("SELECT * FROM kbs ORDER BY created_at")]

    def update_kb_settings(self, kb_id: int, **changes) -> dict:
        """Merge `changes` into the KB's settings JSON and return the result."""
        with self._lock:
            settings = self.get_kb(kb_id).settings
            settings.update(changes)
            self.db.execute("UPDATE kbs SET settings=? WHERE id=?", (json.dumps(settings, ensure_ascii=False), kb_id))
            return settings

    def delete_kb(self, kb_id: int) -> None:
        with self._lock, self.transaction():
            self.db.execute("DELETE FROM chunks WHERE kb_id=?", (kb_id,))
            self.db.execute("DELETE FROM documents WHERE kb_id=?", (kb_id,))
            self.db.execute("DELETE FROM kbs WHERE id=?", (kb_id,))

    # --- documents --------------------------------------------------------------------------
    def get_document(self, kb_id: int, doc_id: str) -> Document | None:
        row = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents d WHERE kb_id=? AND id=?", (kb_id, doc_id)).fetchone()
        return _doc(row) if row else None

    def find_by_filename(self, kb_id: int, filename: str) -> list[Document]:
        rows = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents d WHERE kb_id=? AND filename=?", (kb_id, filename))
        return [_doc(r) for r in rows]

    def list_documents(self, kb_id: int) -> list[Document]:
        rows = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents d WHERE kb_id=? ORDER BY created_at", (kb_id,))
        return [_doc(r) for r in rows]

    def document_text(self, kb_id: int, doc_id: str) -> str:
        row = self.db.execute("SELECT text FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id)).fetchone()
        if row is None:
            raise errors.DocumentNotFound()
        return row[0]

    def page_spans(self, kb_id: int, doc_id: str) -> list[PageSpan]:
        row = self.db.execute(
            "SELECT page_spans FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id)).fetchone()
        return [PageSpan(**span) for span in json.loads(row[0])] if row else []

    def add_document(self, kb_id: int, doc_id: str, filename: str, *, size: int, pages: int, text: str,
                     page_spans: list[dict], skipped_pages: list[int], encoding: str | None,
                     chunking: dict, chunks: list[Chunk], replace: bool = False) -> list[int]:
        """Insert a document (status 'indexing') and its chunks in one transaction.

        With `replace`, an existing row with the same id (and its chunks) is swapped out in the same
        transaction (re-chunking).

        Returns the new chunk ids (in order), which also become the vector-index point ids.
        """
        with self._lock, self.transaction():
            if replace:
                self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=?", (kb_id, doc_id))
                self.db.execute("DELETE FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id))
            self.db.execute(
                "INSERT INTO documents(kb_id, id, filename, size, pages, status, text, page_spans,"
                " skipped_pages, encoding, chunking, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (kb_id, doc_id, filename, size, pages, "indexing", text, json.dumps(page_spans),
                 json.dumps(skipped_pages), encoding, json.dumps(chunking), time.time()))
            return self._insert_chunks(kb_id, doc_id, chunks)

    def _insert_chunks(self, kb_id: int, doc_id: str, chunks: list[Chunk]) -> list[int]:
        ids = []
        for c in chunks:
            cur = self.db.execute(
                "INSERT INTO chunks(kb_id, doc_id, ordinal, start, end, text, page_start, page_end, strategy,"
                " params, sentence_start, sentence_end) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (kb_id, doc_id, c.ordinal, c.start, c.end, c.text, c.page_start, c.page_end, c.strategy,
                 json.dumps(c.params), c.sentence_start, c.sentence_end))
            c.id, c.doc_id = cur.lastrowid, doc_id
            ids.append(cur.lastrowid)
        return ids

    def set_status(self, kb_id: int, doc_id: str, status: str, error: str | None = None) -> None:
        assert status in DOC_STATUSES
        with self._lock:
            self.db.execute("UPDATE documents SET status=?, error=? WHERE kb_id=? AND id=?",
                            (status, error, kb_id, doc_id))

    def delete_document(self, kb_id: int, doc_id: str) -> list[int]:
        """Delete a document and its chunks; returns the chunk ids removed (to drop from indexes)."""
        with self._lock, self.transaction():
            ids = self.chunk_ids(kb_id, doc_id)
            self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=?", (kb_id, doc_id))
            self.db.execute("DELETE FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id))
            return ids

    def stale_documents(self) -> list[Document]:
        """Documents left 'indexing' by a crash (no ingest runs while the store is being opened)."""
        rows = self.db.execute(f"SELECT {_DOC_COLUMNS} FROM documents d WHERE status='indexing'")
        return [_doc(r) for r in rows]

    # --- chunks -----------------------------------------------------------------------------
    def chunk_ids(self, kb_id: int, doc_id: str) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM chunks WHERE kb_id=? AND doc_id=? ORDER BY ordinal", (kb_id, doc_id))]

    def chunks_of(self, kb_id: int, doc_id: str) -> list[Chunk]:
        rows = self.db.execute("SELECT * FROM chunks WHERE kb_id=? AND doc_id=? ORDER BY ordinal", (kb_id, doc_id))
        return [_chunk(r) for r in rows]

    def get_chunks(self, ids: list[int]) -> dict[int, Chunk]:
        """Chunks by id (only those that still exist and whose document is ready)."""
        found: dict[int, Chunk] = {}
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            rows = self.db.execute(
                f"SELECT c.* FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
                f"WHERE d.status='ready' AND c.id IN ({','.join('?' * len(part))})", part)
            found.update((r["id"], _chunk(r)) for r in rows)
        return found

    def filenames(self, kb_id: int) -> dict[str, str]:
        """doc_id -> filename for a KB."""
        return dict(self.db.execute("SELECT id, filename FROM documents WHERE kb_id=?", (kb_id,)).fetchall())

    def count_chunks(self, kb_id: int) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
            "WHERE c.kb_id=? AND d.status='ready'", (kb_id,)).fetchone()[0]

    def iter_chunks(self, kb_id: int, batch: int = 2000):
        """All chunks of ready documents in a KB, in batches (for re-indexing)."""
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT c.* FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
                "WHERE c.kb_id=? AND d.status='ready' AND c.id>? ORDER BY c.id LIMIT ?", (kb_id, last, batch)).fetchall()
            if not rows:
                return
            yield [_chunk(r) for r in rows]
            last = rows[-1]["id"]


class _Transaction:
    def __init__(self, store: Store):
        self.store = store

    def __enter__(self):
        self.store.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.store.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


_DOC_COLUMNS = ("d.kb_id, d.id, d.filename, d.size, d.pages, d.status, d.error, d.created_at, d.skipped_pages,"
                " d.encoding, d.chunking, (SELECT COUNT(*) FROM chunks c WHERE c.kb_id=d.kb_id AND c.doc_id=d.id)"
                " AS chunk_count")


def _kb(row) -> KnowledgeBase:
    return KnowledgeBase(row["id"], row["name"], row["created_at"], json.loads(row["settings"] or "{}"))


def _doc(row) -> Document:
    return Document(row["kb_id"], row["id"], row["filename"], row["size"], row["pages"], row["status"],
                    row["error"], row["created_at"], row["chunk_count"], json.loads(row["skipped_pages"]),
                    row["encoding"], json.loads(row["chunking"]))


def _chunk(row) -> Chunk:
    return Chunk(ordinal=row["ordinal"], start=row["start"], end=row["end"], text=row["text"],
                 page_start=row["page_start"], page_end=row["page_end"], strategy=row["strategy"],
                 params=json.loads(row["params"]), sentence_start=row["sentence_start"],
                 sentence_end=row["sentence_end"], id=row["id"], doc_id=row["doc_id"])
