"""SQLite store: knowledge bases, documents and chunks — the source of truth.

BM25 (services.index.bm25, in memory) and dense vectors (services.index.vectors) are derived from here and can
be rebuilt from here (`reindex`). Schema changes are numbered migrations (PRAGMA user_version).

Every change of what is searchable is one SQLite transaction, so there is never a half state:
- a new document and its chunks are written as 'indexing' and become 'ready' in `finalize_document`,
  which in the same transaction removes the version it `replaces` (same file name, new content);
- re-chunking stages the new chunks as `pending` and `swap_chunks` makes them live while deleting the
  old ones, so the old version stays searchable until the new one is complete;
- each such commit bumps the knowledge base's `generation`, which tells in-memory indexes (in this or
  another process) that they must catch up.
Rows left 'indexing' / 'pending' by a dead process are removed by the data-dir owner at start
(services.index.library.Library.reconcile); only the owner writes (services.index.ownership).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services import errors
from services.documents.chunking import Chunk
from services.documents.parsing import PageSpan

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
    # 2: explicit state: staged re-chunks, atomic replacement, BM25 terms from SQLite, change counter
    """
    ALTER TABLE chunks ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chunks ADD COLUMN terms BLOB;
    ALTER TABLE chunks ADD COLUMN length INTEGER;
    ALTER TABLE chunks ADD COLUMN embed_key TEXT;
    ALTER TABLE documents ADD COLUMN replaces TEXT;
    ALTER TABLE kbs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: kept conversations, documents that can be switched off, background ingest jobs
    """
    CREATE TABLE conversations(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX conversations_kb ON conversations(kb_id, updated_at);
    CREATE TABLE turns(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        question TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX turns_conversation ON turns(conversation_id, id);
    ALTER TABLE documents ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE documents ADD COLUMN dense_state TEXT NOT NULL DEFAULT 'done';
    CREATE TABLE jobs(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        filename TEXT NOT NULL,
        path TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        stage TEXT NOT NULL DEFAULT '',
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_status ON jobs(status, id);
    CREATE INDEX documents_search ON documents(kb_id, id, status, enabled, dense_state);
    """,
    # 4: conversations belong to a user and are addressed by an unguessable id
    """
    ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN public_id TEXT;
    UPDATE conversations SET public_id = lower(hex(randomblob(16))) WHERE public_id IS NULL;
    CREATE UNIQUE INDEX conversations_public ON conversations(public_id);
    CREATE INDEX conversations_owner ON conversations(kb_id, owner, updated_at);
    """,
    # 5: team use: users, per-KB roles (user_id 0 = everyone), API keys (hashed), sign-in sessions, audit
    """
    CREATE TABLE users(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT,
        admin INTEGER NOT NULL DEFAULT 0,
        sso_subject TEXT UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE memberships(
        kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (kb_id, user_id)
    );
    CREATE TABLE api_keys(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        last_used REAL,
        revoked_at REAL
    );
    CREATE TABLE sessions(
        hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE audit(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_at ON audit(at)
    """,
    # 6: the user who made an API key (a key never grants more than its maker still holds)
    """
    ALTER TABLE api_keys ADD COLUMN creator_id INTEGER
    """,
    # 7: KB names are unique per owner, not across the data dir (a member creating "财务" must not
    # learn that someone else's private "财务" exists). owner_id: the user who created the KB (0: the
    # local user, the command line, hidden evaluation copies). The table is rebuilt (SQLite cannot
    # drop a column's UNIQUE); foreign keys are off during migrations (Store.migrate).
    """
    CREATE TABLE kbs_new(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        generation INTEGER NOT NULL DEFAULT 0,
        owner_id INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO kbs_new(id, name, created_at, settings, generation, owner_id)
        SELECT id, name, created_at, settings, generation,
               COALESCE((SELECT MIN(m.user_id) FROM memberships m
                         WHERE m.kb_id = kbs.id AND m.role = 'owner' AND m.user_id > 0), 0)
        FROM kbs;
    DROP TABLE kbs;
    ALTER TABLE kbs_new RENAME TO kbs;
    CREATE UNIQUE INDEX kbs_owner_name ON kbs(owner_id, name);
    CREATE INDEX kbs_name ON kbs(name)
    """,
    # 8: an LLM endpoint that refused our last request (HTTP 401/404/405/5xx…), per endpoint, model and
    # a digest of the key, so the chat header says so after a restart too (services.answers.llm)
    """
    CREATE TABLE llm_refusals(
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY(endpoint, model, key_digest)
    )
    """,
]

DOC_STATUSES = ("indexing", "ready", "failed")


@dataclass
class KnowledgeBase:
    id: int
    name: str
    created_at: float
    settings: dict = field(default_factory=dict)
    owner_id: int = 0  # the user who created it (0: the local user / command line): names are unique per owner


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
    enabled: bool = True
    dense_state: str = "done"  # 'pending': searchable by keywords, vectors still being computed


class Store:
    """One SQLite file; safe to share across threads (writes are serialised by a lock)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """Open (and migrate) the store; with `readonly` (the disk cannot be written) open the existing
        file read-only without migrating (services.index.storage.open_sqlite_readonly)."""
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly:
            from services.index.storage import open_sqlite_readonly

            self.db = open_sqlite_readonly(self.path)
            self.db.row_factory = sqlite3.Row
            if self.db.execute("PRAGMA user_version").fetchone()[0] != len(MIGRATIONS):
                self.db.close()
                raise errors.ReadOnlyStorage("数据目录需要升级到当前版本的格式，但所在磁盘无法写入（已满或只读），"
                                             "因此无法打开。请腾出空间或改为可写后重试。")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA secure_delete=ON")  # deleted documents' text is overwritten, not left in free pages
        self.migrate()
        from services.index.repositories import AccessRows, AuditRows, ConversationRows, JobRows, KeyRows, UserRows

        self.jobs = JobRows(self)
        self.conversations = ConversationRows(self)
        self.users = UserRows(self)
        self.access = AccessRows(self)
        self.keys = KeyRows(self)
        self.audit = AuditRows(self)

    def locked(self):
        """The write lock: repositories sharing this connection hold it around their writes."""
        return self._lock

    # --- schema -----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version >= len(MIGRATIONS):
                return len(MIGRATIONS)
            # a migration may rebuild a table others refer to (7: kbs): foreign keys are off meanwhile
            # (no cascade from the DROP) and checked before each commit
            self.db.execute("PRAGMA foreign_keys=OFF")
            try:
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    self.db.execute("BEGIN")
                    try:
                        for statement in filter(str.strip, script.split(";")):
                            self.db.execute(statement)
                        broken = self.db.execute("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise errors.WendaoError(f"数据目录升级失败：第 {number} 步之后有 {len(broken)} 条记录的引用无效。")
                        self.db.execute(f"PRAGMA user_version={number}")
                        self.db.execute("COMMIT")
                    except Exception:
                        self.db.execute("ROLLBACK")
                        raise
            finally:
                self.db.execute("PRAGMA foreign_keys=ON")
            return len(MIGRATIONS)

    def transaction(self):
        return _Transaction(self)

    def close(self) -> None:
        """Close the connection, waiting for a write in progress on another thread (closing under a
        running statement frees memory that statement still uses)."""
        with self._lock:
            self.db.close()

    # --- knowledge bases --------------------------------------------------------------------
    def create_kb(self, name: str, owner_id: int = 0) -> KnowledgeBase:
        """A new KB of `owner_id` (0: the local user / command line). Names are unique per owner only:
        the refusal speaks of the owner's own KB, never of someone else's."""
        name = (name or "").strip()
        if not name or len(name) > 64:
            raise errors.InvalidName()
        with self._lock:
            if self.find_kb(name, owner_id):
                raise errors.KnowledgeBaseError(f"你已经有一个叫「{name}」的知识库了，请换一个名称。")
            cur = self.db.execute("INSERT INTO kbs(name, created_at, owner_id) VALUES (?, ?, ?)",
                                  (name, time.time(), int(owner_id or 0)))
            return self.get_kb(cur.lastrowid)

    def find_kb(self, name: str, owner_id: int | None = None) -> KnowledgeBase | None:
        """The KB named `name` of `owner_id`; with no owner given, the oldest of that name (the single
        local user's data dir has one owner; team callers resolve through `kbs_named`)."""
        if owner_id is None:
            row = self.db.execute("SELECT * FROM kbs WHERE name=? ORDER BY created_at, id LIMIT 1",
                                  (name.strip(),)).fetchone()
        else:
            row = self.db.execute("SELECT * FROM kbs WHERE name=? AND owner_id=?",
                                  (name.strip(), int(owner_id or 0))).fetchone()
        return _kb(row) if row else None

    def kbs_named(self, name: str) -> list[KnowledgeBase]:
        """Every KB named `name` (of any owner), oldest first; the caller keeps those the principal may see."""
        return [_kb(r) for r in self.db.execute("SELECT * FROM kbs WHERE name=? ORDER BY created_at, id",
                                                 ((name or "").strip(),))]

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

    def has_documents(self, kb_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM documents WHERE kb_id=? LIMIT 1", (kb_id,)).fetchone() is not None

    def delete_kb(self, kb_id: int) -> None:
        with self._lock, self.transaction():
            self.db.execute("DELETE FROM turns WHERE conversation_id IN (SELECT id FROM conversations WHERE kb_id=?)",
                            (kb_id,))
            self.db.execute("DELETE FROM conversations WHERE kb_id=?", (kb_id,))
            self.db.execute("DELETE FROM jobs WHERE kb_id=?", (kb_id,))
            self.db.execute("DELETE FROM memberships WHERE kb_id=?", (kb_id,))
            self.db.execute("DELETE FROM api_keys WHERE kb_id=?", (kb_id,))
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
                     chunking: dict, chunks: list[Chunk], index_rows: list[tuple] | None = None,
                     replaces: str | None = None) -> list[int] | None:
        """Insert a document (status 'indexing') and its chunks in one transaction.

        The duplicate check and the insert are one statement under the write transaction, so two
        uploads of the same content at once cannot both insert: the second gets None.
        `replaces` names the document (same file name, older content) that `finalize_document` will
        remove in the same transaction that makes this one ready. `index_rows[i]` is chunk i's
        (BM25 terms blob, BM25 length, embedding-cache key), see services.index.bm25.

        Returns the new chunk ids (in order), which also become the vector-index point ids.
        """
        with self._lock, self.transaction():
            cur = self.db.execute(
                "INSERT INTO documents(kb_id, id, filename, size, pages, status, text, page_spans,"
                " skipped_pages, encoding, chunking, created_at, replaces, dense_state)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending')"
                " ON CONFLICT(kb_id, id) DO NOTHING",
                (kb_id, doc_id, filename, size, pages, "indexing", text, json.dumps(page_spans),
                 json.dumps(skipped_pages), encoding, json.dumps(chunking), time.time(), replaces))
            if cur.rowcount == 0:
                return None
            return self._insert_chunks(kb_id, doc_id, chunks, index_rows)

    def finalize_document(self, kb_id: int, doc_id: str) -> list[int]:
        """Make an 'indexing' document searchable and, in the same transaction, delete the version it
        replaces. Returns the chunk ids of the removed version (their points are dropped afterwards)."""
        with self._lock, self.transaction():
            row = self.db.execute("SELECT replaces FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id)).fetchone()
            if row is None:
                raise errors.DocumentNotFound()
            removed: list[int] = []
            if row[0] and row[0] != doc_id:
                removed = self._all_chunk_ids(kb_id, row[0])
                self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=?", (kb_id, row[0]))
                self.db.execute("DELETE FROM documents WHERE kb_id=? AND id=?", (kb_id, row[0]))
            self.db.execute("UPDATE documents SET status='ready', error=NULL, replaces=NULL WHERE kb_id=? AND id=?",
                            (kb_id, doc_id))
            self._bump(kb_id)
            return removed

    def set_dense_done(self, kb_id: int, doc_ids: list[str] | None = None) -> None:
        """Record that a document's (or, with None, every ready document's) vectors are in the index."""
        with self._lock, self.transaction():
            if doc_ids is None:
                self.db.execute("UPDATE documents SET dense_state='done' WHERE kb_id=? AND status='ready'", (kb_id,))
            else:
                self.db.executemany("UPDATE documents SET dense_state='done' WHERE kb_id=? AND id=?",
                                    [(kb_id, d) for d in doc_ids])
            self._bump(kb_id)

    def dense_pending(self, kb_id: int | None = None) -> list[tuple[int, str]]:
        """(kb_id, doc_id) of ready documents searchable by keywords whose vectors are not written yet."""
        if kb_id is None:
            return [tuple(r) for r in self.db.execute(
                "SELECT kb_id, id FROM documents WHERE status='ready' AND dense_state='pending'")]
        return [tuple(r) for r in self.db.execute(
            "SELECT kb_id, id FROM documents WHERE kb_id=? AND status='ready' AND dense_state='pending'", (kb_id,))]

    def stage_chunks(self, kb_id: int, doc_id: str, chunks: list[Chunk], index_rows: list[tuple] | None = None) -> list[int]:
        """Write a new version of a document's chunks as `pending` (invisible to search)."""
        with self._lock, self.transaction():
            return self._insert_chunks(kb_id, doc_id, chunks, index_rows, pending=True)

    def swap_chunks(self, kb_id: int, doc_id: str, chunking: dict) -> list[int]:
        """Make the pending chunks of a document live and delete the old ones, in one transaction.
        Returns the old chunk ids (their points are dropped afterwards)."""
        with self._lock, self.transaction():
            old = [r[0] for r in self.db.execute(
                "SELECT id FROM chunks WHERE kb_id=? AND doc_id=? AND pending=0", (kb_id, doc_id))]
            self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=? AND pending=0", (kb_id, doc_id))
            self.db.execute("UPDATE chunks SET pending=0 WHERE kb_id=? AND doc_id=?", (kb_id, doc_id))
            self.db.execute("UPDATE documents SET chunking=? WHERE kb_id=? AND id=?",
                            (json.dumps(chunking), kb_id, doc_id))
            self._bump(kb_id)
            return old

    def discard_pending(self, kb_id: int, doc_id: str) -> list[int]:
        """Delete a document's staged (pending) chunks; returns their ids."""
        with self._lock, self.transaction():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM chunks WHERE kb_id=? AND doc_id=? AND pending=1", (kb_id, doc_id))]
            self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=? AND pending=1", (kb_id, doc_id))
            return ids

    def _bump(self, kb_id: int) -> None:
        self.db.execute("UPDATE kbs SET generation=generation+1 WHERE id=?", (kb_id,))

    def generation(self, kb_id: int) -> int:
        """A counter bumped by every commit that changes what a KB's search can return."""
        row = self.db.execute("SELECT generation FROM kbs WHERE id=?", (kb_id,)).fetchone()
        return row[0] if row else -1

    def _insert_chunks(self, kb_id: int, doc_id: str, chunks: list[Chunk], index_rows: list[tuple] | None = None,
                       pending: bool = False) -> list[int]:
        ids = []
        for n, c in enumerate(chunks):
            terms, length, embed_key = index_rows[n] if index_rows else (None, None, None)
            cur = self.db.execute(
                "INSERT INTO chunks(kb_id, doc_id, ordinal, start, end, text, page_start, page_end, strategy,"
                " params, sentence_start, sentence_end, pending, terms, length, embed_key)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (kb_id, doc_id, c.ordinal, c.start, c.end, c.text, c.page_start, c.page_end, c.strategy,
                 json.dumps(c.params), c.sentence_start, c.sentence_end, int(pending),
                 terms, length, embed_key))
            c.id, c.doc_id = cur.lastrowid, doc_id
            ids.append(cur.lastrowid)
        return ids

    def embed_keys_of(self, kb_id: int, doc_id: str | None = None) -> set[str]:
        """The embedding-cache keys of a KB's (or one document's) chunks, live and pending."""
        sql, args = "SELECT DISTINCT embed_key FROM chunks WHERE kb_id=? AND embed_key IS NOT NULL", [kb_id]
        if doc_id is not None:
            sql, args = sql + " AND doc_id=?", [kb_id, doc_id]
        return {r[0] for r in self.db.execute(sql, args)}

    def embed_keys_in_use(self, keys: set[str]) -> set[str]:
        """Those of `keys` that some chunk of any KB still has."""
        keys, used = list(keys), set()
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            used.update(r[0] for r in self.db.execute(
                f"SELECT DISTINCT embed_key FROM chunks WHERE embed_key IN ({','.join('?' * len(part))})", part))
        return used

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file (after a deletion: the deleted text does
        not linger in wendao.db-wal); skipped quietly while another connection reads."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass

    def delete_document(self, kb_id: int, doc_id: str) -> list[int]:
        """Delete a document and all its chunks (live and pending); returns the chunk ids removed
        (to drop from indexes)."""
        with self._lock, self.transaction():
            ids = self._all_chunk_ids(kb_id, doc_id)
            self.db.execute("DELETE FROM chunks WHERE kb_id=? AND doc_id=?", (kb_id, doc_id))
            cur = self.db.execute("DELETE FROM documents WHERE kb_id=? AND id=?", (kb_id, doc_id))
            if cur.rowcount:
                self._bump(kb_id)
            return ids

    def stale_documents(self) -> list[Document]:
        """Documents left 'indexing' (only meaningful to the data-dir owner: see Library.reconcile)."""
        rows = self.db.execute(f"SELECT {_DOC_COLUMNS} FROM documents d WHERE status='indexing'")
        return [_doc(r) for r in rows]

    def stale_pending(self) -> list[tuple[int, str]]:
        """(kb_id, doc_id) of documents with staged chunks (a re-chunk that did not finish)."""
        return [tuple(r) for r in self.db.execute("SELECT DISTINCT kb_id, doc_id FROM chunks WHERE pending=1")]

    # --- chunks -----------------------------------------------------------------------------
    def chunk_ids(self, kb_id: int, doc_id: str) -> list[int]:
        """Live chunk ids of a document, in order."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM chunks WHERE kb_id=? AND doc_id=? AND pending=0 ORDER BY ordinal", (kb_id, doc_id))]

    def _all_chunk_ids(self, kb_id: int, doc_id: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE kb_id=? AND doc_id=?", (kb_id, doc_id))]

    def chunk_id_set(self, kb_id: int, searchable: bool = True, enabled_only: bool = False) -> set[int]:
        """Ids of a KB's indexed chunks (ready, live; with `enabled_only` only of switched-on documents),
        or with `searchable=False` of every chunk row."""
        if searchable:
            enabled = " AND d.enabled=1" if enabled_only else ""
            return {r[0] for r in self.db.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
                "WHERE c.kb_id=? AND d.status='ready' AND c.pending=0" + enabled, (kb_id,))}
        return {r[0] for r in self.db.execute("SELECT id FROM chunks WHERE kb_id=?", (kb_id,))}

    def chunk_ids_of(self, kb_id: int, doc_ids) -> set[int]:
        """Live chunk ids of some documents (a search restricted to selected documents)."""
        found: set[int] = set()
        doc_ids = list(doc_ids)
        for i in range(0, len(doc_ids), 900):
            part = doc_ids[i:i + 900]
            found.update(r[0] for r in self.db.execute(
                f"SELECT id FROM chunks WHERE kb_id=? AND pending=0 AND doc_id IN ({','.join('?' * len(part))})",
                (kb_id, *part)))
        return found

    def disabled_documents(self, kb_id: int) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM documents WHERE kb_id=? AND enabled=0", (kb_id,))}

    def set_enabled(self, kb_id: int, doc_id: str, enabled: bool) -> None:
        """Switch a document off (kept and indexed, but not searched) or on again."""
        with self._lock, self.transaction():
            cur = self.db.execute("UPDATE documents SET enabled=? WHERE kb_id=? AND id=?", (int(enabled), kb_id, doc_id))
            if not cur.rowcount:
                raise errors.DocumentNotFound()
            self._bump(kb_id)

    def rename_kb(self, kb_id: int, name: str) -> KnowledgeBase:
        name = (name or "").strip()
        if not name or len(name) > 64:
            raise errors.InvalidName()
        with self._lock:
            other = self.find_kb(name, self.get_kb(kb_id).owner_id)
            if other and other.id != kb_id:
                raise errors.KnowledgeBaseError(f"这个知识库的所有者已经有一个叫「{name}」的知识库了，请换一个名称。")
            self.db.execute("UPDATE kbs SET name=? WHERE id=?", (name, kb_id))
            return self.get_kb(kb_id)

    def bm25_rows(self, kb_id: int, ids: list[int] | None = None):
        """(id, length, terms, doc_id) of searchable chunks (all, or those in `ids`)."""
        base = ("SELECT c.id, c.length, c.terms, c.doc_id FROM chunks c JOIN documents d "
                "ON d.kb_id=c.kb_id AND d.id=c.doc_id WHERE c.kb_id=? AND d.status='ready' AND c.pending=0")
        # (callers pass the ids they want; search uses chunk_id_set(enabled_only=True))
        if ids is None:
            yield from self.db.execute(base + " ORDER BY c.id", (kb_id,))
            return
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            yield from self.db.execute(base + f" AND c.id IN ({','.join('?' * len(part))}) ORDER BY c.id",
                                       (kb_id, *part))

    def embed_keys(self, kb_id: int) -> list[tuple[int, str]]:
        """(chunk id, embedding-cache key) of a KB's searchable chunks (read-only dense search)."""
        return [tuple(r) for r in self.db.execute(
            "SELECT c.id, c.embed_key FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
            "WHERE c.kb_id=? AND d.status='ready' AND c.pending=0 AND c.embed_key IS NOT NULL", (kb_id,))]

    def set_chunk_terms(self, rows: list[tuple[int, bytes, int, str]]) -> None:
        """Store recomputed BM25 terms / lengths / embedding keys: [(id, terms, length, embed_key)]."""
        with self._lock, self.transaction():
            self.db.executemany("UPDATE chunks SET terms=?, length=?, embed_key=? WHERE id=?",
                                [(t, n, k, i) for i, t, n, k in rows])

    def chunks_of(self, kb_id: int, doc_id: str) -> list[Chunk]:
        rows = self.db.execute("SELECT * FROM chunks WHERE kb_id=? AND doc_id=? AND pending=0 ORDER BY ordinal",
                               (kb_id, doc_id))
        return [_chunk(r) for r in rows]

    def get_chunks(self, ids: list[int]) -> dict[int, Chunk]:
        """Chunks by id (only those that still exist and whose document is ready and switched on)."""
        found: dict[int, Chunk] = {}
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            rows = self.db.execute(
                f"SELECT c.* FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
                f"WHERE d.status='ready' AND d.enabled=1 AND c.pending=0 AND c.id IN ({','.join('?' * len(part))})", part)
            found.update((r["id"], _chunk(r)) for r in rows)
        return found

    def filenames(self, kb_id: int) -> dict[str, str]:
        """doc_id -> filename for a KB."""
        return dict(self.db.execute("SELECT id, filename FROM documents WHERE kb_id=?", (kb_id,)).fetchall())

    def count_chunks(self, kb_id: int) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
            "WHERE c.kb_id=? AND d.status='ready' AND c.pending=0", (kb_id,)).fetchone()[0]

    def iter_chunks(self, kb_id: int, batch: int = 2000):
        """All chunks of ready documents in a KB, in batches (for re-indexing)."""
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT c.* FROM chunks c JOIN documents d ON d.kb_id=c.kb_id AND d.id=c.doc_id "
                "WHERE c.kb_id=? AND d.status='ready' AND c.pending=0 AND c.id>? ORDER BY c.id LIMIT ?", (kb_id, last, batch)).fetchall()
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
                " d.encoding, d.chunking, d.enabled, d.dense_state, (SELECT COUNT(*) FROM chunks c WHERE c.kb_id=d.kb_id AND c.doc_id=d.id AND c.pending=0)"
                " AS chunk_count")


def _kb(row) -> KnowledgeBase:
    return KnowledgeBase(row["id"], row["name"], row["created_at"], json.loads(row["settings"] or "{}"),
                         row["owner_id"])


def _doc(row) -> Document:
    return Document(row["kb_id"], row["id"], row["filename"], row["size"], row["pages"], row["status"],
                    row["error"], row["created_at"], row["chunk_count"], json.loads(row["skipped_pages"]),
                    row["encoding"], json.loads(row["chunking"]), bool(row["enabled"]),
                    row["dense_state"])


def _chunk(row) -> Chunk:
    return Chunk(ordinal=row["ordinal"], start=row["start"], end=row["end"], text=row["text"],
                 page_start=row["page_start"], page_end=row["page_end"], strategy=row["strategy"],
                 params=json.loads(row["params"]), sentence_start=row["sentence_start"],
                 sentence_end=row["sentence_end"], id=row["id"], doc_id=row["doc_id"])
