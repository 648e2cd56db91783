"""Background ingestion: one worker thread per data dir, jobs and their progress in SQLite.

The page that receives an upload only stores the bytes (`<data>/uploads/`) and queues a job; the
worker (a daemon thread in the owner process — the app) indexes queued jobs one at a time with the
same `ingest_bytes` the CLI uses, writing stage / done / total / rate to the job row as it goes. Pages
poll the rows, so users can switch pages, ask about what is already indexed, close the tab and come
back; other sessions are never blocked. A job left 'running' by a process that died is queued again
by the next owner (services.index.library.Library.reconcile); its upload file is still there.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services import errors
from services.documents.chunking import ChunkingConfig
from services.index.library import Library
from services.index.store import KnowledgeBase

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.3
ACTIVE = ("queued", "running", "cancelling")


@dataclass
class Job:
    id: int
    kb_id: int
    filename: str
    status: str  # queued | running | done | failed | cancelled (kind 'vectors': a keyword-only doc's vectors)
    stage: str
    done: int
    total: int
    result: dict
    created_at: float
    started_at: float | None
    updated_at: float
    kind: str = "ingest"  # ingest | vectors | finetune | finetune_reranker

    @property
    def elapsed(self) -> float:
        return (self.updated_at if self.status not in ACTIVE else time.time()) - (self.started_at or self.created_at)


def submit(lib: Library, kb: KnowledgeBase, filename: str, data: bytes, config: ChunkingConfig) -> int:
    """Queue one upload for background indexing; returns the job id. Only the owner queues jobs."""
    lib.require_owner()
    folder = lib.root / "uploads"
    folder.mkdir(exist_ok=True)
    path = folder / uuid.uuid4().hex
    path.write_bytes(data)
    now = time.time()
    with lib.store._lock:
        cur = lib.store.db.execute(
            "INSERT INTO jobs(kb_id, kind, filename, path, params, status, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (kb.id, "ingest", filename, str(path), json.dumps(config.to_dict()), "queued", now, now))
    worker_for(lib).wake()
    return cur.lastrowid


def jobs(lib: Library, kb: KnowledgeBase, since: float | None = None, kinds=("ingest", "vectors")) -> list[Job]:
    """A KB's jobs of `kinds`: all active ones plus those finished after `since` (default: the last hour)."""
    since = time.time() - 3600 if since is None else since
    marks = ",".join("?" * len(kinds))
    rows = lib.store.db.execute(
        "SELECT id, kb_id, filename, status, stage, done, total, result, created_at, started_at, updated_at, kind"
        f" FROM jobs WHERE kb_id=? AND kind IN ({marks}) AND (status IN ('queued','running','cancelling')"
        " OR updated_at>=?) ORDER BY id", (kb.id, *kinds, since))
    return [Job(*r[:7], json.loads(r[7] or "{}"), *r[8:]) for r in rows]


def cancel(lib: Library, job_id: int) -> bool:
    """Cancel a job: one not started is cancelled at once; a running fine-tuning stops at its next
    step ('cancelling'). True when something was cancelled."""
    now = time.time()
    with lib.store._lock:
        cur = lib.store.db.execute("UPDATE jobs SET status='cancelled', updated_at=? WHERE id=? AND status='queued'",
                                   (now, job_id))
        if not cur.rowcount:
            running = lib.store.db.execute("UPDATE jobs SET status='cancelling', updated_at=? WHERE id=?"
                                           " AND status='running' AND kind IN ('finetune','finetune_reranker')",
                                           (now, job_id))
            return bool(running.rowcount)
    _remove_upload(lib, job_id)
    return True


def submit_finetune(lib: Library, kb: KnowledgeBase, name: str, settings=None, kind: str = "embedding") -> int:
    """Queue a fine-tuning run in the background: of the KB's embedding model (services.tuning.finetune)
    or, with kind="reranker", of a reranker trained on the KB (services.tuning.rerank_training)."""
    from dataclasses import asdict

    from services.tuning.finetune import FinetuneSettings, _valid_name
    from services.tuning.rerank_training import RerankSettings

    lib.require_owner()
    default = RerankSettings() if kind == "reranker" else FinetuneSettings()
    params = {"name": _valid_name(name), "settings": asdict(settings or default)}
    now = time.time()
    with lib.store._lock:
        cur = lib.store.db.execute(
            "INSERT INTO jobs(kb_id, kind, filename, params, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
            (kb.id, "finetune_reranker" if kind == "reranker" else "finetune", params["name"],
             json.dumps(params, ensure_ascii=False), "queued", now, now))
    worker_for(lib).wake()
    return cur.lastrowid


class IngestWorker:
    """The data dir's background indexer (one thread)."""

    def __init__(self, lib: Library):
        self.lib = lib
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wendao-ingest", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        return not self.lib.store.db.execute(
            "SELECT 1 FROM jobs WHERE status IN ('queued','running','cancelling')").fetchone()

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                self._wake.wait(timeout=2.0)
                self._wake.clear()
                continue
            try:
                self._run(*job)
            except errors.WendaoError as exc:  # a typed failure keeps its Chinese reason
                log.error("job %s failed: %s", job[0], exc.message_zh, exc_info=True)
                self._finish(job[0], "failed", {"reason": exc.message_zh})
            except Exception:  # noqa: BLE001 - a job's failure must never stop the worker
                log.exception("ingest job %s failed", job[0])
                self._finish(job[0], "failed", {"reason": "处理该文件时发生内部错误（详情见服务器日志），知识库未改变。"})

    def _next(self):
        if self.lib._closed or not self.lib.owner:
            return None
        with self.lib.store._lock:
            row = self.lib.store.db.execute(
                "SELECT id, kb_id, filename, path, params, kind FROM jobs WHERE status='queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            self.lib.store.db.execute("UPDATE jobs SET status='running', started_at=?, updated_at=? WHERE id=?",
                                      (now, now, row[0]))
        return row

    def _run(self, job_id: int, kb_id: int, filename: str, path: str, params: str, kind: str) -> None:
        from services.index.ingest import complete_pending_vectors, ingest_bytes

        if kind in ("finetune", "finetune_reranker"):
            self._finetune(job_id, kb_id, json.loads(params), kind)
            return
        if kind == "vectors":  # a keyword-only document left by a crash: `path` holds its doc id
            kb = self.lib.store.get_kb(kb_id)
            n = complete_pending_vectors(self.lib, kb, path, self._progress(job_id))
            self._finish(job_id, "done", {"embedded": n}, remove_upload=False)
            return
        try:
            kb = self.lib.store.get_kb(kb_id)
            data = Path(path).read_bytes()
        except (errors.WendaoError, OSError):
            self._finish(job_id, "failed", {"reason": "知识库或上传的文件已不存在。"})
            return
        config = ChunkingConfig(**json.loads(params))
        result = ingest_bytes(self.lib, kb, data, filename, config, self._progress(job_id))
        self._finish(job_id, "failed" if result.status == "failed" else "done", result.to_dict())

    def _finetune(self, job_id: int, kb_id: int, params: dict, kind: str = "finetune") -> None:
        from services.tuning.finetune import Cancelled, FinetuneSettings, finetune
        from services.tuning.rerank_training import RerankSettings, finetune_reranker

        kb = self.lib.store.get_kb(kb_id)
        if kind == "finetune_reranker":
            settings, finetune = RerankSettings(**params.get("settings", {})), finetune_reranker
        else:
            settings = FinetuneSettings(**{k: tuple(v) if k == "negatives_range" else v
                                           for k, v in params.get("settings", {}).items()})
        state = {"stage": "data", "losses": [], "step": 0, "steps": 0, "eta": None}

        def save():
            with self.lib.store._lock:
                self.lib.store.db.execute(
                    "UPDATE jobs SET stage=?, done=?, total=?, result=?, updated_at=? WHERE id=?",
                    (state["stage"], state["step"], state["steps"],
                     json.dumps({"losses": state["losses"], "eta_s": state["eta"]}), time.time(), job_id))

        def on_stage(stage):
            state["stage"] = stage
            save()

        def on_step(p):
            state.update(losses=p.losses, step=p.step, steps=p.steps, eta=p.eta_s)
            save()

        def cancelled():
            row = self.lib.store.db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            return row is None or row[0] == "cancelling"

        try:
            llm = _finetune_llm(self.lib, kb) if settings.method == "llm" else None
            card = finetune(self.lib, kb, params["name"], settings, on_step, cancelled, llm, on_stage=on_stage)
            self._finish(job_id, "done", card, remove_upload=False)
        except Cancelled:
            self._finish(job_id, "cancelled", {"reason": "已取消"}, remove_upload=False)
        except errors.WendaoError as exc:
            self._finish(job_id, "failed", {"reason": exc.message_zh}, remove_upload=False)

    def _progress(self, job_id: int):
        last = [0.0]
        stage_started: dict[str, float] = {}

        def report(stage: str, done: int, total: int) -> None:
            now = time.time()
            stage_started.setdefault(stage, now)
            if now - last[0] < PROGRESS_EVERY_S and done < total:
                return
            last[0] = now
            seconds = now - stage_started[stage]
            rate = done / seconds if seconds > 0.2 and done else 0.0
            info = {"rate": round(rate, 2), "eta_s": round((total - done) / rate, 1) if rate else None}
            with self.lib.store._lock:
                self.lib.store.db.execute(
                    "UPDATE jobs SET stage=?, done=?, total=?, result=?, updated_at=? WHERE id=?",
                    (stage, done, total, json.dumps(info), now, job_id))

        return report

    def _finish(self, job_id: int, status: str, result: dict, remove_upload: bool = True) -> None:
        with self.lib.store._lock:
            self.lib.store.db.execute("UPDATE jobs SET status=?, result=?, updated_at=? WHERE id=?",
                                      (status, json.dumps(result, ensure_ascii=False), time.time(), job_id))
        if remove_upload:
            _remove_upload(self.lib, job_id)


def _finetune_llm(lib: Library, kb: KnowledgeBase):
    """The LLM that writes pseudo-queries: the server's or the KB's saved endpoint (a key typed in a
    browser session is never written to a job row, so it cannot reach the worker)."""
    from services.index.library import llm_settings
    from services.answers.llm import LLMClient

    settings = llm_settings(lib, kb)
    if not settings.configured:
        raise errors.LLMError("没有可供后台任务使用的大模型接口（需在服务器配置，或在设置页保存接口地址和模型名）。")
    return LLMClient(settings)


def _remove_upload(lib: Library, job_id: int) -> None:
    row = lib.store.db.execute("SELECT path FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row and row[0]:
        Path(row[0]).unlink(missing_ok=True)


_WORKERS: dict[int, IngestWorker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(lib: Library) -> IngestWorker:
    """The worker of this Library (started on first use; queued jobs of an earlier run resume)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(id(lib))
        if worker is None or worker.lib is not lib:
            worker = _WORKERS[id(lib)] = IngestWorker(lib)
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
