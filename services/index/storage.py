"""What the data dir's disk allows: room to write, or only reading (full disk, read-only mount).

Reads must keep working when the disk is full or read-only, and a write must be refused in Chinese
before it starts rather than fail half-way ("database or disk is full" tracebacks, or SIGBUS: the
embedded vector store memory-maps 32 MB segments — WAL, vectors, payloads — and a process touching a
page the disk cannot back is killed). So:
- `probe` is asked once when a Library opens: can a file be written here, and is at least
  RESERVE_BYTES free? If not, the Library opens read-only (services.index.library): SQLite opened
  read-only (`open_sqlite_readonly`), never the owner, never the vector shards (dense search and
  `check` use the vectors cached in SQLite).
- Every write first calls `ensure_space(root, estimate)`, which raises DiskFull ("磁盘空间不足：
  还需约 N MB") while nothing has been written yet.
- Failures that still happen (the disk filled meanwhile) are mapped by errors.storage_error.
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from services import errors

MIB = 1024 * 1024
RESERVE_BYTES = 96 * MIB  # opening / growing the vector shards takes 32 MB segments; SQLite's WAL grows too
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
_READONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def free_bytes(root: str | Path) -> int:
    """Bytes free for this user on the disk holding `root`."""
    return shutil.disk_usage(root).free


def probe(root: str | Path) -> errors.StorageError | None:
    """None when `root` can be written and has RESERVE_BYTES free, else the error that says why
    (ReadOnlyStorage or DiskFull). Writes and removes one small file."""
    root = Path(root)
    test = root / f".wendao-write-test-{os.getpid()}"
    try:
        fd = os.open(test, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            test.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno in _FULL:
            return errors.DiskFull(needed_bytes=RESERVE_BYTES, free_bytes=_free_or_none(root))
        if exc.errno in _READONLY:
            return errors.ReadOnlyStorage()
        raise
    free = free_bytes(root)
    if free < RESERVE_BYTES:
        return errors.DiskFull(needed_bytes=RESERVE_BYTES - free, free_bytes=free)
    return None


def new_data_dir_error(problem: errors.StorageError) -> errors.StorageError:
    """The error for a data dir without data yet (nothing to read) on a disk that cannot take one:
    too little room says how much more is needed, a read-only disk says it is read-only."""
    if isinstance(problem, errors.DiskFull):
        head = problem.message_zh.split("。")[0]  # 磁盘空间不足：还需约 N MB（数据目录所在磁盘剩余 M MB）
        return errors.DiskFull(f"{head}。这里还没有知识库数据，无法新建数据目录；请清理磁盘或换一个数据目录后重试。",
                               needed_bytes=problem.needed_bytes)
    return errors.ReadOnlyStorage("数据目录所在的磁盘无法写入，且这里还没有知识库数据，无法打开。")


def _free_or_none(root: Path) -> int | None:
    try:
        return free_bytes(root)
    except OSError:
        return None


def ensure_space(root: str | Path, needed: int) -> None:
    """Raise DiskFull unless `needed` bytes plus RESERVE_BYTES are free on `root`'s disk. Called
    before a write starts, so a refused write has changed nothing."""
    free = free_bytes(root)
    if free < needed + RESERVE_BYTES:
        raise errors.DiskFull(needed_bytes=needed + RESERVE_BYTES - free, free_bytes=free)


def estimate_ingest(size: int, text_bytes: int = 0, chunks: int = 0, dim: int = 0) -> int:
    """Bytes an ingest may write: the kept original (`size`), the document text with its chunks and
    BM25 terms (about 3x the text, overlap included), and per chunk its vector three times
    (embedding cache, vector store, its WAL) plus row overhead. Before parsing only `size` is known
    (ingest checks again once the text and chunks are known, still before writing anything)."""
    return size + 3 * text_bytes + chunks * (3 * 4 * dim + 600)


def open_sqlite_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file on a disk that cannot be written.

    `mode=ro` first (it still reads a write-ahead log left by a crash, when its -shm file exists);
    when SQLite cannot even create its shared-memory file (read-only directory, full disk) the file
    is opened `immutable=1`: no locks, no -shm, the main file as it is (a clean shutdown leaves no
    log, and nobody can be writing a disk that cannot be written). Raises ReadOnlyStorage when the
    file does not exist (a new data dir cannot be created here)."""
    path = Path(path).resolve()
    if not path.exists():
        raise errors.ReadOnlyStorage("数据目录所在的磁盘无法写入，且这里还没有知识库数据，无法打开。")
    last = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"{path.as_uri()}?{mode}", uri=True, check_same_thread=False,
                                 isolation_level=None, timeout=30)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            last = exc
    raise errors.ReadOnlyStorage("数据目录所在的磁盘无法写入，数据库也无法以只读方式打开。") from last
