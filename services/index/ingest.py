"""Ingest pipeline: parse -> chunk -> BM25 terms -> SQLite (keyword-searchable) -> embed -> dense index.

Only the data dir's owner ingests (Library.require_owner, checked before parsing, so a refused
command reads, embeds and writes nothing), and free disk space is checked first. Order matters for
crash safety: parse, chunk and tokenise run first (no side effects); then the document, its chunks and
their BM25 terms are written as 'indexing' (the duplicate check is part of that insert), the original
file is kept, and one transaction makes the document 'ready' — searchable by keywords, its vectors
'pending' — and removes the version it replaces (same file name). Then the chunks are embedded (cache
first) and upserted, and the document's vectors are marked done. A crash before 'ready' leaves an
'indexing' row the next owner removes (Library.reconcile); a crash after it leaves a keyword-only
document whose vectors the worker completes ('vectors' jobs), and at most orphan points, which search
ignores and reconcile deletes. While an upload writes a document's vectors it holds a claim on them
(Library.claim_embedding, taken before the commit), so a concurrent upload of the same content is told
it is a duplicate rather than "completing" vectors that are being written. Re-chunking stages the new chunks as pending and swaps them in one
transaction, so the old version stays searchable until then. Every failure of a file becomes a
'failed' FileResult with a Chinese reason, never an exception. Named checkpoints (`fault_point`) are
no-ops unless a crash test installs a hook (tests/faults.py).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from services import errors
from services.documents.chunking import ChunkingConfig, chunk_text
from services.index.embedding import embed_with_cache
from services.index.index_text import document_title, index_rows, index_text  # noqa: F401 (re-exported)
from services.index import storage
from services.index.library import Library
from services.index.storage import estimate_ingest
from services.documents.files import list_files, read_regular_file
from services.documents.parsing import SUPPORTED_EXTENSIONS, ParsedDocument, parse
from services.index.store import KnowledgeBase
from services.documents.text import normalize

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
STAGES = ("parse", "chunk", "keywords", "embed", "index")
STAGE_ZH = {"parse": "解析", "chunk": "切分", "keywords": "关键词可检索", "embed": "向量化", "index": "写入向量索引"}


@dataclass
class FileResult:
    file: str
    status: str  # ok | replaced | duplicate | failed
    reason: str = ""
    doc_id: str | None = None
    chunks: int = 0
    pages: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    embedded: int = 0  # chunks actually embedded (others came from the cache)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestReport:
    results: list[FileResult]
    seconds: float

    @property
    def documents(self) -> int:
        return sum(r.status in ("ok", "replaced") for r in self.results)

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("ok", "replaced"))

    @property
    def skipped(self) -> list[dict]:
        return [{"file": r.file, "reason": r.reason} for r in self.results if r.status in ("duplicate", "failed")]

    def stage_seconds(self) -> dict:
        total: dict[str, float] = {}
        for r in self.results:
            for stage, s in r.seconds.items():
                total[stage] = total.get(stage, 0.0) + s
        return total

    def to_json(self) -> dict:
        return {"documents": self.documents, "chunks": self.chunks, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds().items()},
                "files": [r.to_dict() for r in self.results]}


def document_id(text: str) -> str:
    """Document id: sha256 of the normalised text (so any re-upload of the same content dedupes)."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def ingest_bytes(lib: Library, kb: KnowledgeBase, data: bytes, filename: str,
                 config: ChunkingConfig = ChunkingConfig(), progress: Progress | None = None) -> FileResult:
    """Index one uploaded file into `kb`. Bad input gives a 'failed' result, never an exception.

    The document is searchable by keywords as soon as it is chunked (seconds); its vectors follow
    (embedding is most of the time) and make it fully hybrid."""
    progress = progress or (lambda *_: None)
    timer = _StageTimer()
    try:
        lib.require_owner()
        lib.ensure_space(estimate_ingest(len(data)))  # refused before parsing when the disk is short
        with timer("parse"):
            progress("parse", 0, 1)
            doc = parse(data, filename)
            progress("parse", 1, 1)
        doc_id = document_id(doc.text)
        existing = lib.store.get_document(kb.id, doc_id)
        if existing is not None and existing.status == "ready" and existing.dense_state == "pending":
            return _complete_keyword_only(lib, kb, existing, filename, progress, timer)
        if existing is not None:
            return _duplicate(filename, existing, timer)
        return _index(lib, kb, doc, doc_id, len(data), config, progress, timer, data)
    except errors.WendaoError as exc:
        return FileResult(filename, "failed", exc.message_zh, seconds=timer.seconds)
    except Exception as exc:  # noqa: BLE001 - a file's failure is a result; the traceback goes to the log
        log.exception("ingest of %r failed", filename)
        disk = _storage_error(lib, exc)  # the disk filled (or became read-only) meanwhile
        return FileResult(filename, "failed", disk.message_zh if disk else
                          "处理该文件时发生内部错误（详情见服务器日志），知识库未改变。", seconds=timer.seconds)


def index_parsed(lib: Library, kb: KnowledgeBase, doc: ParsedDocument, doc_id: str, size: int,
                 config: ChunkingConfig, progress: Progress | None = None) -> FileResult:
    """Index an already parsed document (e.g. stored text copied into an evaluation variant KB).
    Raises WendaoError on failure (the KB is then unchanged)."""
    lib.require_owner()
    return _index(lib, kb, doc, doc_id, size, config, progress or (lambda *_: None), _StageTimer())


def _storage_error(lib, exc: BaseException):
    """errors.storage_error with the data dir's free space for the message."""
    try:
        free = storage.free_bytes(lib.root)
    except OSError:
        free = None
    return errors.storage_error(exc, free)


def _index(lib, kb, doc, doc_id, size, config, progress, timer, original: bytes | None = None) -> FileResult:
    prepared = _prepare(lib, kb, doc, config, progress, timer)
    # now the text and chunk count are known: refuse before the first row is written
    lib.ensure_space(estimate_ingest(size, len(doc.text.encode("utf-8")), len(prepared.chunks),
                                     getattr(prepared.embedder, "dim", 0) or 0))
    # claimed before the commit, so a concurrent upload of the same content that finds it 'pending'
    # knows its vectors are being written now (complete_pending_vectors) rather than left over
    claimed = lib.claim_embedding(kb.id, doc_id)
    try:
        with lib.write_lock, timer("index"):
            committed = _commit_keywords(lib, kb, doc, doc_id, size, config, prepared, timer, original)
        if isinstance(committed, FileResult):  # a concurrent duplicate
            return committed
        return _embed_committed(lib, kb, doc, doc_id, committed, prepared, progress, timer)
    finally:
        if claimed:
            lib.release_embedding(kb.id, doc_id)


def _embed_committed(lib, kb, doc, doc_id, committed, prepared, progress, timer) -> FileResult:
    """Write the vectors of a document just committed keyword-searchable; a failure leaves it so."""
    ids, replaces = committed
    progress("keywords", len(ids), len(ids))
    warnings = list(doc.warnings)
    embedded = 0
    try:
        if prepared.embedder is None:
            raise prepared.embedder_error
        embedded = _complete_dense(lib, kb, doc_id, ids, prepared.texts, prepared.embedder, progress, timer)
    except Exception as exc:  # noqa: BLE001 - keyword search keeps working; the vectors can be rebuilt
        log.warning("vectors of %r not written: %s", doc.filename, type(exc).__name__,
                    exc_info=not isinstance(exc, errors.ModelServerError))  # a server outage needs no traceback
        disk = _storage_error(lib, exc)
        reason = (disk or exc).message_zh if disk or isinstance(exc, errors.WendaoError) else "内部错误（详情见服务器日志）"
        later = ("模型服务恢复后会在后台自动补全向量" if isinstance(exc, errors.ModelServerError)
                 else "可在文档库“重建索引”")
        warnings.append(f"向量化未完成：{reason}。该文档暂时只能按关键词检索，{later}。")
    return FileResult(doc.filename, "replaced" if replaces else "ok", "", doc_id, len(ids), doc.page_count,
                      warnings, timer.seconds, embedded)


def _complete_keyword_only(lib, kb, existing, filename, progress, timer) -> FileResult:
    """The same content was indexed before but its vectors never got written (the process was killed
    while embedding, or embedding failed): uploading it again completes it rather than being told
    it is a duplicate of a document that dense search cannot find."""
    embedded = complete_pending_vectors(lib, kb, existing.id, progress, timer)
    done = lib.store.get_document(kb.id, existing.id)
    if done is None or done.dense_state != "done":  # deleted or re-chunked meanwhile
        return _duplicate(filename, existing, timer)
    note = (f"与已有文档「{existing.filename}」内容相同；它此前只建立了关键词索引（向量化曾被中断），"
            f"这次补全了它的向量（{embedded} 个片段），现在也可按语义检索。")
    return FileResult(existing.filename, "ok", "", existing.id, done.chunk_count, done.pages, [note],
                      timer.seconds, embedded)


def _duplicate(filename: str, existing, timer) -> FileResult:
    if existing.status == "ready":
        reason = f"与已有文档「{existing.filename}」内容相同，未重复索引"
    else:
        reason = f"相同内容的文档「{existing.filename}」正在索引中，未重复索引"
    return FileResult(filename, "duplicate", reason, existing.id, existing.chunk_count, seconds=timer.seconds)


@dataclass
class _Prepared:
    """The side-effect-free part of indexing: chunks, their index rows and index texts."""

    chunks: list
    rows: list
    texts: list
    embedder: object  # None when the KB's model server is down (keywords now, vectors later)
    embedder_error: Exception | None = None


def _prepare(lib, kb, doc: ParsedDocument, config, progress, timer, need_vectors: bool = False) -> _Prepared:
    from services.index.served import estimate_tokens

    try:
        embedder, embedder_error = lib.embedder(kb), None
    except errors.ModelServerError as exc:  # keyword search needs no model server
        if need_vectors:
            raise
        embedder, embedder_error = None, exc
    with timer("chunk"):
        progress("chunk", 0, 0)  # says 切分 from now on (loading the tokenizer can take seconds), not a finished 解析 1/1
        count = (embedder.count_tokens if embedder is not None else estimate_tokens) if config.unit == "tokens" else None
        chunks = chunk_text(doc.text, config, doc.page_at, count)
        if not chunks:
            raise errors.EmptyDocument()
        title = document_title(doc.text, doc.filename)
        texts = [index_text(title, c) for c in chunks]
        rows = index_rows(texts)
        progress("chunk", len(chunks), len(chunks))
    return _Prepared(chunks, rows, texts, embedder, embedder_error)


def _commit_keywords(lib, kb, doc, doc_id, size, config, p: _Prepared, timer, original: bytes | None):
    """Write the document, its chunks and BM25 terms ('indexing'), keep the original file, then in one
    transaction make it 'ready' (keyword-searchable, vectors pending) and remove the same-named
    version it replaces. Returns (chunk ids, replaced doc id) or a duplicate FileResult."""
    if p.embedder is not None:
        lib.dense.for_writing(kb, p.embedder)  # IndexMismatch here, before anything is written
    replaces = next((d.id for d in lib.store.find_by_filename(kb.id, doc.filename)
                     if d.id != doc_id and d.status == "ready"), None)
    ids = lib.store.add_document(
        kb.id, doc_id, doc.filename, size=size, pages=doc.page_count, text=doc.text,
        page_spans=[asdict(x) for x in doc.pages], skipped_pages=doc.skipped_pages, encoding=doc.encoding,
        chunking=config.to_dict(), chunks=p.chunks, index_rows=p.rows, replaces=replaces)
    if ids is None:  # the same content was inserted meanwhile (another session)
        return _duplicate(doc.filename, lib.store.get_document(kb.id, doc_id), timer)
    try:
        fault_point("rows_written")
        if original is not None:
            lib.originals.save(kb.id, doc_id, doc.filename, original)
        removed = lib.store.finalize_document(kb.id, doc_id)
    except BaseException as exc:
        lib.dense.drop_points(kb, lib.store.delete_document(kb.id, doc_id))
        lib.originals.remove(kb.id, doc_id)
        if isinstance(exc, errors.WendaoError) or not isinstance(exc, Exception):
            raise
        raise (_storage_error(lib, exc) or errors.WendaoError("写入索引失败，知识库未改变。")) from exc
    fault_point("finalized")
    lib.dense.drop_points(kb, removed)
    if replaces:
        lib.originals.remove(kb.id, replaces)
    return ids, replaces


def _complete_dense(lib, kb, doc_id, ids, texts, embedder, progress, timer) -> int:
    """Embed a keyword-ready document's chunks and write its vectors; returns how many were computed
    (the rest came from the cache). Skips quietly when the document changed meanwhile."""
    with timer("embed"):
        progress("embed", 0, len(ids))  # the stage starts now (speed and time left are measured from here)
        def on_batch(done, total):
            fault_point("embedding")  # crash tests: kill -9 while the vectors are being computed
            progress("embed", done, total)

        vectors, embedded = embed_with_cache(embedder, lib.cache, texts, on_batch)
        progress("embed", len(ids), len(ids))
    with lib.write_lock, timer("index"):
        if lib.store.chunk_ids(kb.id, doc_id) != list(ids):  # deleted or re-chunked meanwhile
            return embedded
        collection = lib.dense.for_writing(kb, embedder)  # the current one (a rebuild may have switched)
        lib.backend.upsert(collection, ids, vectors, [doc_id] * len(ids))
        fault_point("points_written")
        lib.store.set_dense_done(kb.id, [doc_id])
    progress("index", len(ids), len(ids))
    return embedded


def complete_pending_vectors(lib: Library, kb: KnowledgeBase, doc_id: str, progress: Progress | None = None,
                             timer: "_StageTimer | None" = None) -> int:
    """Write the vectors of a document left keyword-only (a crash or a failed embedding); returns how
    many chunks were embedded (0 when there was nothing to do)."""
    lib.require_owner()
    if not lib.claim_embedding(kb.id, doc_id):
        return 0  # its upload (or another completion) is writing them right now
    try:
        document = lib.store.get_document(kb.id, doc_id)
        if document is None or document.status != "ready" or document.dense_state != "pending":
            return 0
        chunks = lib.store.chunks_of(kb.id, doc_id)
        title = document_title(lib.store.document_text(kb.id, doc_id), document.filename)
        return _complete_dense(lib, kb, doc_id, [c.id for c in chunks], [index_text(title, c) for c in chunks],
                               lib.embedder(kb), progress or (lambda *_: None), timer or _StageTimer())
    finally:
        lib.release_embedding(kb.id, doc_id)


class Checkpoints:
    """The named moments of an ingest or re-chunk where a crash matters ("rows_written",
    "points_written", "finalized"). No-op in production; crash tests install a hook (tests/faults.py)
    that pauses there so the process can be killed at that exact moment."""

    def __init__(self):
        self.hook: Callable[[str], None] | None = None

    def __call__(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)


fault_point = Checkpoints()


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (recursively, supported extensions only, sorted); symbolic links and
    special files found in folders are left out (ingest_paths reports them)."""
    return [p for p, reason in list_files(paths, SUPPORTED_EXTENSIONS) if reason is None]


def ingest_paths(lib: Library, kb: KnowledgeBase, paths: Iterable[str | Path],
                 config: ChunkingConfig = ChunkingConfig(),
                 on_file: Callable[[int, int, FileResult], None] | None = None,
                 progress: Callable[[str, str, int, int], None] | None = None) -> IngestReport:
    """Ingest files/folders; `on_file(i, n, result)` after each, `progress(file, stage, done, total)`.
    Raises DataDirBusy before reading anything when another process owns the data dir.

    Only regular files are read, each at most up to the size limit (services.documents.files):
    symbolic links (never followed), FIFOs, devices and /proc files become 'failed' results with
    their Chinese reason."""
    lib.require_owner()
    start = time.perf_counter()
    files = list_files(paths, SUPPORTED_EXTENSIONS)
    results = []
    for i, (path, refused) in enumerate(files, start=1):
        try:
            if refused:
                raise errors.NotARegularFile(refused)
            data = read_regular_file(path)  # size checked on the open file before reading, read bounded
        except errors.DocumentError as exc:
            result = FileResult(path.name, "failed", exc.message_zh)
        else:
            result = ingest_bytes(lib, kb, data, path.name, config,
                                  (lambda s, d, t, name=path.name: progress(name, s, d, t)) if progress else None)
        results.append(result)
        if on_file:
            on_file(i, len(files), result)
    return IngestReport(results, time.perf_counter() - start)


def rechunk_document(lib: Library, kb: KnowledgeBase, doc_id: str, config: ChunkingConfig,
                     progress: Progress | None = None) -> FileResult:
    """Re-split an indexed document with new settings (re-embeds only text not in the cache).

    The new chunks are staged as pending, their points written, and one transaction swaps them in;
    until then — and if anything fails — the old version stays searchable."""
    lib.require_owner()
    document = lib.store.get_document(kb.id, doc_id)
    if document is None or document.status != "ready":
        raise errors.DocumentNotFound()
    text = lib.store.document_text(kb.id, doc_id)
    parsed = ParsedDocument(document.filename, text, lib.store.page_spans(kb.id, doc_id), document.skipped_pages,
                            encoding=document.encoding)
    timer = _StageTimer()
    progress = progress or (lambda *_: None)
    p = _prepare(lib, kb, parsed, config, progress, timer, need_vectors=True)
    lib.ensure_space(estimate_ingest(0, len(text.encode("utf-8")), len(p.chunks), getattr(p.embedder, "dim", 0) or 0))
    with timer("embed"):
        vectors, embedded = embed_with_cache(p.embedder, lib.cache, p.texts,
                                             lambda done, total: progress("embed", done, total))
    with lib.write_lock, timer("index"):
        collection = lib.dense.for_writing(kb, p.embedder)
        ids = lib.store.stage_chunks(kb.id, doc_id, p.chunks, p.rows)
        try:
            fault_point("rows_written")
            lib.backend.upsert(collection, ids, vectors, [doc_id] * len(ids))
            fault_point("points_written")
            old = lib.store.swap_chunks(kb.id, doc_id, config.to_dict())
            if document.dense_state != "done":
                lib.store.set_dense_done(kb.id, [doc_id])
        except BaseException as exc:
            lib.dense.drop_points(kb, lib.store.discard_pending(kb.id, doc_id))
            if isinstance(exc, errors.WendaoError) or not isinstance(exc, Exception):
                raise
            disk = _storage_error(lib, exc)
            raise errors.WendaoError(("重新切分失败，文档保持原来的版本。" + disk.message_zh) if disk
                                     else "重新切分失败，文档保持原来的版本。") from exc
        fault_point("finalized")
        lib.dense.drop_points(kb, old)
    progress("index", len(ids), len(ids))
    return FileResult(document.filename, "ok", "", doc_id, len(ids), document.pages, [], timer.seconds, embedded)


class _StageTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - self.t
                return False

        return _Ctx()
