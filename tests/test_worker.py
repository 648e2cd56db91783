"""The background worker and the Library's lifetime: closing a data dir while a job runs must never
crash the process (CI once died with SIGSEGV: the worker wrote a job's end state through a SQLite
connection that another thread had just closed) and must leave the job for the next owner."""
import threading
import time
from pathlib import Path

from services import worker
from services.index.library import Library

STARTED = threading.Event()


@worker.handler("test_slow")
def _slow(ctx):
    """A long job that writes progress and checks for cancellation, like fine-tuning does."""
    STARTED.set()
    for step in range(10_000):
        ctx.progress("working", step, 10_000, force=True)
        ctx.check_cancelled()
        time.sleep(0.005)
    return {"status": "done"}


def test_closing_the_library_stops_the_worker_and_keeps_the_job_for_the_next_owner(tmp_path):
    root = tmp_path / "data"
    lib = Library(root)
    kb = lib.store.create_kb("库")
    STARTED.clear()
    job_id = worker.submit(lib, kb, "test_slow", "slow", data=b"input bytes")
    upload = lib.store.jobs.path(job_id)
    w = worker.start(lib)
    assert STARTED.wait(30)
    started = time.monotonic()
    lib.close()  # the worker is mid-job, writing progress every step
    assert time.monotonic() - started < 10
    assert not w._thread.is_alive()
    assert upload and Path(upload).exists(), "the interrupted job keeps its input"

    again = Library(root)  # the next owner: the job runs again instead of being lost or marked failed
    try:
        job = worker.get(again, job_id)
        assert job.status == "queued"
    finally:
        again.close()


def test_many_open_close_cycles_with_a_busy_worker_never_crash(tmp_path):
    """Open, start a job, close at once: repeated, the race the segfault needed."""
    for cycle in range(15):
        lib = Library(tmp_path / f"d{cycle % 3}")
        kb = lib.store.find_kb("库") or lib.store.create_kb("库")
        STARTED.clear()
        worker.submit(lib, kb, "test_slow", "slow")
        worker.start(lib)
        STARTED.wait(0.01 * cycle)
        lib.close()


@worker.handler("test_quick")
def _quick(ctx):
    return {"status": "done"}


def test_idle_means_the_last_job_is_wholly_finished_its_upload_removed_too(tmp_path, monkeypatch):
    """A job's end state is written before its upload is removed; waiting for an idle worker must wait
    for both (a fast-loop test saw the upload still there right after wait_idle)."""
    remove = worker._remove_upload

    def slow_remove(lib, job_id):
        time.sleep(0.5)
        remove(lib, job_id)

    monkeypatch.setattr(worker, "_remove_upload", slow_remove)
    lib = Library(tmp_path / "data")
    try:
        kb = lib.store.create_kb("库")
        job_id = worker.submit(lib, kb, "test_quick", "quick", data=b"input bytes")
        upload = Path(lib.store.jobs.path(job_id))
        assert worker.wait_idle(lib, 30)
        assert worker.get(lib, job_id).status == "done"
        assert not upload.exists()
    finally:
        lib.close()
