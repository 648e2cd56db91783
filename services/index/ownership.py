"""One owner per data directory: the only process that writes SQLite rows and opens index shards.

The owner holds an OS file lock on `<data>/wendao.lock` (filelock: flock on POSIX, LockFileEx on
Windows) for as long as it keeps the data dir open. The kernel releases the lock when the process
dies, however it dies (kill -9 included), so:
- whoever gets the lock knows no live process is writing, and may clean rows a dead one left
  half-written (services.index.reconcile) — a live ingest in another process is never touched;
- a process that cannot get the lock (the CLI while the app runs) never opens a Qdrant Edge shard
  (a failed EdgeShard.load in a second process corrupts the holder's next flush), writes nothing,
  and serves read-only commands from SQLite (see `Ownership.read_only`).
Who owns is recorded in `<data>/owner.json` (pid, command, since) for the error message.
`Ownership` is one open data dir's side of this: whether it owns, what runs when it becomes the
owner, and the checks every write makes first.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from services import errors
from services.index import storage

_HELD: dict[str, list] = {}  # resolved path -> [FileLock, refcount]
_LOCK = threading.Lock()


def try_acquire(root: Path) -> bool:
    """Take (or share, within this process) the data dir's owner lock without waiting."""
    key = str(Path(root).resolve())
    Path(key).mkdir(parents=True, exist_ok=True)
    with _LOCK:
        held = _HELD.get(key)
        if held:
            held[1] += 1
            return True
        lock = FileLock(str(Path(key) / "wendao.lock"), timeout=0, thread_local=False, fallback_to_soft=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        _HELD[key] = [lock, 1]
    _write_owner(Path(key))
    return True


def release(root: Path) -> bool:
    """Drop one reference to this process's lock on `root`; True when that released the lock."""
    key = str(Path(root).resolve())
    with _LOCK:
        held = _HELD.get(key)
        if not held:
            return False
        held[1] -= 1
        if held[1]:
            return False
        del _HELD[key]
        held[0].release()
        return True


def owner_info(root: Path) -> dict:
    """Who holds the lock, as recorded by them (may be stale when nobody holds it)."""
    try:
        return json.loads((Path(root) / "owner.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def describe_owner(root: Path) -> str:
    """A short Chinese description of the owning process, for messages."""
    info = owner_info(root)
    if not info:
        return "另一个进程"
    return f"另一个进程（PID {info.get('pid')}，{info.get('command', '')}）"


def _write_owner(root: Path) -> None:
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    info = {"pid": os.getpid(), "command": command[:120], "since": time.time()}
    try:
        tmp = root / "owner.json.tmp"
        tmp.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, root / "owner.json")
    except OSError:
        pass


class Ownership:
    """Whether this process owns one open data dir, and the checks a write makes before it starts.

    `storage_problem` (services.index.storage.probe: a full or read-only disk) keeps it a reader for
    good: never the owner, every write refused with that reason. Hooks added with `when_owner` run in
    order each time this process becomes the owner (the Library's reconcile is the first)."""

    def __init__(self, root: Path, storage_problem: errors.WendaoError | None = None):
        self.root = root
        self.storage_problem = storage_problem
        self.owner = False
        self.hooks: list = []

    def try_own(self) -> bool:
        """Become the owner if no live process is (running the hooks then); True when owner."""
        if self.storage_problem is not None:  # full / read-only disk: stay a reader
            return False
        if not self.owner and try_acquire(self.root):
            self.owner = True
            for hook in list(self.hooks):
                hook()
        return self.owner

    def when_owner(self, hook) -> None:
        """Call `hook()` now if this process owns the data dir, and each time it becomes the owner."""
        self.hooks.append(hook)
        if self.owner:
            hook()

    def require_owner(self) -> None:
        """Raise DataDirBusy (before anything is read or written) unless this process owns the dir;
        DiskFull / ReadOnlyStorage when the disk could not be written when the data dir was opened."""
        if self.storage_problem is not None:
            raise fresh(self.storage_problem)
        if not self.try_own():
            raise errors.DataDirBusy(f"数据目录正被{describe_owner(self.root)}使用，本操作需要写入，"
                                     "因此未做任何修改。请在网页应用中操作，或关闭它后重试。")

    def ensure_space(self, needed: int) -> None:
        """Before a write of about `needed` bytes: DiskFull / ReadOnlyStorage (nothing written yet)
        unless the disk has room for it and the vector store's headroom."""
        if self.storage_problem is not None:
            raise fresh(self.storage_problem)
        storage.ensure_space(self.root, needed)

    @property
    def read_only(self) -> bool:
        return not self.try_own()

    def release(self) -> bool:
        """Stop owning; True when that released this process's lock (no other open copy holds it)."""
        was, self.owner = self.owner, False
        return was and release(self.root)


def fresh(error: errors.WendaoError) -> errors.WendaoError:
    """A new instance of a kept error (raising one instance again would chain its old traceback)."""
    return copy.copy(error).with_traceback(None)
