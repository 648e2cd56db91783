"""The embedding cache: passage vectors in their own SQLite file (embeddings.db), keyed by (model
fingerprint id, sha1(text)), so re-chunking, re-uploading or re-embedding text a model has already
seen costs nothing. Part of the store layer (with services.index.store and .repositories)."""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """SQLite cache of passage vectors keyed by (model fingerprint id, sha1(text))."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """`readonly`: the disk cannot be written; read the existing cache (or an empty one) and
        drop writes (vectors computed meanwhile are simply not kept)."""
        self.readonly = readonly
        self._lock = threading.Lock()
        if readonly:
            from services.index.storage import open_sqlite_readonly

            try:
                self.db = open_sqlite_readonly(path)
                return
            except Exception:  # noqa: BLE001 - no readable cache: an empty one (nothing cached)
                self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA secure_delete=ON")  # forgotten vectors are overwritten, not left in free pages
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors(model TEXT, hash TEXT, vector BLOB, PRIMARY KEY(model, hash))")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        """Cached vectors by text key (see `key`)."""
        keys = list(set(keys))
        found = {}
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            rows = self.db.execute(
                f"SELECT hash, vector FROM vectors WHERE model=? AND hash IN ({','.join('?' * len(part))})",
                [model, *part])
            found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
        return found

    def vectors_for(self, model: str, keys: list[str], dim: int) -> dict[str, np.ndarray]:
        """Cached vectors of the right dimension only (a read-only search uses these)."""
        return {k: v for k, v in self.get_many(model, keys).items() if v.shape[0] == dim}

    def put_many(self, model: str, keys: list[str], vectors: np.ndarray) -> None:
        if self.readonly:
            return
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?)",
                                [(model, k, np.asarray(v, np.float32).tobytes()) for k, v in zip(keys, vectors)])
            self.db.execute("COMMIT")

    def forget(self, keys: set[str] | list[str]) -> None:
        """Drop the vectors of these texts under every model: text no KB holds any more must not stay
        behind (in team mode "vectors from the cache" would tell a user that someone had the same text)."""
        keys = list(keys)
        if self.readonly or not keys:
            return
        with self._lock:
            self.db.execute("BEGIN")
            for i in range(0, len(keys), 900):
                part = keys[i:i + 900]
                self.db.execute(f"DELETE FROM vectors WHERE hash IN ({','.join('?' * len(part))})", part)
            self.db.execute("COMMIT")
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the vectors do not linger in the log
            except sqlite3.Error:
                pass  # another process is reading: the log is folded in later
