"""One owner per data directory: the only process that writes SQLite rows and opens index shards.

The owner holds an OS file lock on `<data>/wendao.lock` (filelock: flock on POSIX, LockFileEx on
Windows) for as long as it keeps the data dir open. The kernel releases the lock when the process
dies, however it dies (kill -9 included), so:
- whoever gets the lock knows no live process is writing, and may clean rows a dead one left
  half-written (Library.reconcile) — a live ingest in another process is never touched;
- a process that cannot get the lock (the CLI while the app runs) never opens a Qdrant Edge shard
  (a failed EdgeShard.load in a second process corrupts the holder's next flush), writes nothing,
  and serves read-only commands from SQLite (see services.index.library.Library.read_only).
Who owns is recorded in `<data>/owner.json` (pid, command, since) for the error message.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

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
