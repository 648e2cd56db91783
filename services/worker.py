"""One execution model for long work: jobs in SQLite, run one at a time by the data dir's worker.

Anything that can take more than a second — ingest of an upload, a document's missing vectors,
re-embedding with another model, reindex, re-chunking a document, optimising the dense index, an
evaluation run (chunker variants included), the sample KB, fine-tuning — is queued as a job row
(services.index.repositories.JobRows) and run by the worker thread of the process that owns the data
dir (the app; the CLI runs the same handlers in-line). A handler reports stage / done / total to the
row as it goes and checks `cancelled()` between steps, so pages only submit and poll: users can switch
pages, reload, open a second tab or leave and come back. A job left 'running' by a process that died
is queued again by the next owner (services.index.library.Library.reconcile); its inputs (an upload's
bytes under `<data>/uploads/`, the params) are still there. The worker starts with the owner, so
queued work resumes without waiting for a new submission.

A new kind of long work is one handler registered in HANDLERS (services.jobs registers them all; the
core imports it).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services import errors
from services.index.library import Library
from services.index.repositories import ACTIVE, Job  # noqa: F401 - Job/ACTIVE are the worker's view types
from services.index.store import KnowledgeBase

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.3
VECTORS_RETRY_S = float(os.environ.get("WENDAO_VECTORS_RETRY_S", "30"))  # idle worker: are model servers back?
STOP_WAIT_S = 30.0  # closing a data dir waits this long for the worker to leave its job step
# kinds whose handler checks `cancelled()` while running; others can be cancelled only while queued
CANCELLABLE_WHILE_RUNNING = {"finetune", "finetune_reranker", "evaluate", "reembed", "sample"}


class Cancelled(Exception):
    """Raised by a handler that saw its job cancelled; the job ends 'cancelled', nothing half-done kept."""


@dataclass
class JobContext:
    """What a handler gets: the library, the KB, the job's params and ways to report and to stop."""

    lib: Library
    kb: KnowledgeBase
    job_id: int
    name: str
    params: dict
    path: str | None
    progress: Callable[..., None]  # progress(stage, done, total, **extra)
    cancelled: Callable[[], bool]

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise Cancelled()


Handler = Callable[[JobContext], dict]
HANDLERS: dict[str, Handler] = {}


def handler(kind: str):
    """Register the function that runs jobs of `kind` (returns the job's result dict)."""
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register


# --- submitting and reading jobs -----------------------------------------------------------------
def submit(lib: Library, kb: KnowledgeBase, kind: str, name: str, params: dict | None = None,
           data: bytes | None = None, background: bool = True, caps: dict[str, int] | None = None) -> int:
    """Queue a job of `kind` for the KB; `data` (an upload's bytes) is kept under <data>/uploads/ until
    the job ends. Only the data dir's owner queues jobs (DataDirBusy otherwise). `caps` ({tag: limit}):
    TooManyUploads when a tag already has `limit` active jobs of `kind`, checked atomically with the
    job's insert (JobRows.add)."""
    if kind not in HANDLERS:
        raise errors.WendaoError(f"未知的任务类型：{kind}")
    lib.require_owner()
    if caps:
        lib.store.jobs.check_caps(kind, caps)  # refused before the bytes are written; decided at the insert
    path = None
    if data is not None:
        lib.ensure_space(2 * len(data))  # the upload waits here, then is kept as the original: refused now if short
        folder = lib.root / "uploads"
        folder.mkdir(exist_ok=True)
        path = folder / uuid.uuid4().hex
        path.write_bytes(data)
    try:
        job_id = lib.store.jobs.add(kb.id, kind, name, params or {}, str(path) if path else None, caps)
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    if background:
        worker_for(lib).wake()
    return job_id


def jobs(lib: Library, kb: KnowledgeBase, since: float | None = None, kinds=("ingest", "vectors")) -> list[Job]:
    """A KB's jobs of `kinds`: all active ones plus those finished after `since` (default: the last hour)."""
    since = time.time() - 3600 if since is None else since
    return lib.store.jobs.of_kb(kb.id, tuple(kinds), since)


def get(lib: Library, job_id: int) -> Job:
    job = lib.store.jobs.get(job_id)
    if job is None:
        raise errors.JobNotFound()
    return job


def cancel(lib: Library, job_id: int) -> bool:
    """Cancel a job: one not started is cancelled at once; a running one of a kind that checks for it
    stops at its next step ('cancelling'). True when something was cancelled."""
    job = get(lib, job_id)
    if job.status == "running" and job.kind not in CANCELLABLE_WHILE_RUNNING:
        return False
    outcome = lib.store.jobs.cancel(job_id)
    if outcome == "cancelled":
        _remove_upload(lib, job_id)
    return outcome is not None


# --- the worker ------------------------------------------------------------------------------------
class Runner:
    """Runs claimed jobs of one Library through their handlers, writing progress and end state."""

    def __init__(self, lib: Library):
        self.lib = lib

    def run_one(self, job_id: int, kb_id: int, name: str, path: str | None, params: str | dict, kind: str,
                listener: Callable | None = None) -> None:
        """Run one claimed job to its end state (done / failed / cancelled); never raises. `listener`
        also gets every progress report (the CLI prints them)."""
        import json

        params = json.loads(params or "{}") if isinstance(params, str) else params
        try:
            kb = self.lib.store.get_kb(kb_id)
            ctx = JobContext(self.lib, kb, job_id, name, params, path, self._progress(job_id, listener),
                             self._cancelled(job_id))
            result = HANDLERS[kind](ctx)
            status = "failed" if result.get("status") == "failed" else "done"
            self._finish(job_id, status, result)
        except Cancelled:
            if self.lib.closed:  # the process is closing the data dir: the next owner runs the job again
                return
            self._finish(job_id, "cancelled", {"reason": "已取消"})
        except errors.WendaoError as exc:  # a typed failure keeps its Chinese reason
            log.error("job %s (%s) failed: %s", job_id, kind, exc.message_zh, exc_info=exc.__cause__ is not None)
            self._finish(job_id, "failed", {"reason": exc.message_zh})
        except Exception as exc:  # noqa: BLE001 - a job's failure must never stop the worker
            log.exception("job %s (%s) failed", job_id, kind)
            disk = errors.storage_error(exc)
            try:
                self._finish(job_id, "failed", {"reason": disk.message_zh if disk else
                                                "处理时发生内部错误（详情见服务器日志），知识库未改变。"})
            except Exception:  # noqa: BLE001 - e.g. the disk is full: the next owner queues it again
                log.exception("job %s could not be marked failed", job_id)
        finally:
            if not self.lib.closed:  # a job interrupted by closing keeps its upload for the next run
                _remove_upload(self.lib, job_id)

    def _cancelled(self, job_id: int) -> Callable[[], bool]:
        def cancelled() -> bool:
            return self.lib.closed or self.lib.store.jobs.status(job_id) in (None, "cancelling", "cancelled")
        return cancelled

    def _progress(self, job_id: int, listener: Callable | None = None):
        last = [0.0, None]  # when the row was last written, and the stage it was written with
        stage_started: dict[str, float] = {}
        stage_done: dict[str, int] = {}

        def report(stage: str, done: int, total: int, **extra) -> None:
            if listener:
                listener(stage, done, total, extra)
            now = time.time()
            if done < stage_done.get(stage, 0):  # the stage counts again from the start (评测's next re-chunk)
                stage_started.pop(stage, None)
            stage_done[stage] = done
            stage_started.setdefault(stage, now)
            # a new stage is always written (an ingest's "keywords n/n" must not stand for its embedding)
            if stage == last[1] and now - last[0] < PROGRESS_EVERY_S and done < total and not extra.get("force"):
                return
            last[0], last[1] = now, stage
            seconds = now - stage_started[stage]
            rate = done / seconds if seconds > 0.2 and done else 0.0
            info = {"rate": round(rate, 2), "eta_s": round((total - done) / rate, 1) if rate else None,
                    **{k: v for k, v in extra.items() if k != "force"}}
            self.lib.store.jobs.progress(job_id, stage, done, total, info)

        return report

    def _finish(self, job_id: int, status: str, result: dict) -> None:
        self.lib.store.jobs.finish(job_id, status, result)


class Worker(Runner):
    """The data dir's background runner: one thread per Library, one job at a time."""

    def __init__(self, lib: Library):
        super().__init__(lib)
        self._wake = threading.Event()
        self._in_job = False  # inside run_one: a job's end state is written before its upload is removed
        self._thread = threading.Thread(target=self._loop, name="wendao-worker", daemon=True)
        self._thread.start()
        lib.on_close(self.stop)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop the thread (the Library is closing: `lib.closed` is already true, so a running job stops at
        its next cancellation check and stays queued for the next owner); wait for it to leave SQLite."""
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the worker is still inside a job step %.0f s after close was asked", timeout)

    def idle(self) -> bool:
        """No job queued or running, and this worker has finished its last one (upload removed too)."""
        return not self._in_job and not self.lib.store.jobs.any_active()

    def _loop(self) -> None:
        last_retry = time.monotonic()
        while not self.lib.closed:
            try:
                job = self._next()
            except Exception:  # noqa: BLE001 - e.g. a full disk: the worker waits and tries again
                log.exception("the worker could not take the next job")
                job = None
            if job is None:
                if time.monotonic() - last_retry >= VECTORS_RETRY_S and self.lib.owner:
                    last_retry = time.monotonic()
                    self._retry_vectors()
                self._wake.wait(timeout=2.0)
                self._wake.clear()
                continue
            self._in_job = True
            try:
                self.run_one(*job)
            finally:
                self._in_job = False

    def _retry_vectors(self) -> None:
        """Queue the vectors a model server's outage left pending, once it answers again."""
        from services.index.pending import queue_when_servers_back

        try:
            queue_when_servers_back(self.lib)
        except Exception:  # noqa: BLE001 - a retry tick must never stop the worker
            log.exception("retrying pending vectors failed")

    def _next(self):
        if self.lib.closed or not (self.lib.owner or self.lib.try_own()):
            return None  # not the owner (yet): try again at the next wake-up (every 2 s)
        return self.lib.store.jobs.claim_next()


def _remove_upload(lib: Library, job_id: int) -> None:
    path = lib.store.jobs.path(job_id)
    if path and Path(path).parent == lib.root / "uploads":
        Path(path).unlink(missing_ok=True)


_WORKERS: dict[int, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(lib: Library) -> Worker:
    """The worker of this Library (started on first use; queued jobs of an earlier run resume)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(id(lib))
        if worker is None or worker.lib is not lib:
            worker = _WORKERS[id(lib)] = Worker(lib)
        return worker


def start(lib: Library) -> Worker:
    """Start the data dir's background worker with the process that serves it (the app opens the data
    dir through services.workspace), not only at the next upload: jobs queued by an earlier run —
    uploads, and the vectors of documents a killed process left keyword-only, which Library.reconcile
    queues — run now. A process that is not the owner yet (a CLI command holds the data dir) keeps
    trying to become it every few seconds and then runs them."""
    worker = worker_for(lib)
    lib.when_owner(worker.wake)
    return worker


def wait_idle(lib: Library, timeout: float = 60.0) -> bool:
    """Block until no job is queued or running (tests, CLI); True when idle."""
    deadline = time.time() + timeout
    worker = worker_for(lib)
    while time.time() < deadline:
        if worker.idle():
            return True
        time.sleep(0.05)
    return False


def run_inline(lib: Library, job_id: int, listener: Callable | None = None) -> Job:
    """Run a queued job in this thread (the CLI: same handler, same rows, no waiting on a thread).
    Returns the finished job."""
    row = lib.store.jobs.claim(job_id)
    if row is not None:
        Runner(lib).run_one(*row, listener=listener)
    return get(lib, job_id)
