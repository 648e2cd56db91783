"""Ingest pipeline: parse -> chunk -> embed -> store -> index, atomic per document.

Order matters for crash safety: the slow, side-effect-free stages (parse, chunk, tokenise, embed)
run first; then the document and its chunks are written in one SQLite transaction as 'indexing';
then BM25 and dense points are upserted; then the document flips to 'ready'. A crash before the
flip leaves an 'indexing' row that Library.reconcile removes (with its points) on the next start.
A same-named file with new content replaces the old version only after the new one is ready.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from services import errors
from services.bm25 import average_length, document_vector
from services.chunking import ChunkingConfig, chunk_text
from services.embedding import embed_with_cache
from services.library import Library
from services.parsing import SUPPORTED_EXTENSIONS, ParsedDocument, parse
from services.store import KnowledgeBase
from services.text import normalize
from services.tokenizer import tokenize

Progress = Callable[[str, int, int], None]  # (stage, done, total)
STAGES = ("parse", "chunk", "embed", "index")
STAGE_ZH = {"parse": "解析", "chunk": "切分", "embed": "向量化", "index": "写入索引"}


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
    """Index one uploaded file into `kb`. Bad input gives a 'failed' result, never an exception."""
    progress = progress or (lambda *_: None)
    timer = _StageTimer()
    try:
        with timer("parse"):
            progress("parse", 0, 1)
            doc = parse(data, filename)
            progress("parse", 1, 1)
        doc_id = document_id(doc.text)
        existing = lib.store.get_document(kb.id, doc_id)
        if existing is not None and existing.status == "ready":
            return FileResult(filename, "duplicate", f"与已有文档「{existing.filename}」内容相同，未重复索引",
                              doc_id, existing.chunk_count, seconds=timer.seconds)
        with lib.write_lock:
            if existing is not None:  # an earlier failed attempt
                lib.discard(kb, doc_id)
            return _index_document(lib, kb, doc, doc_id, len(data), config, progress, timer)
    except errors.WendaoError as exc:
        return FileResult(filename, "failed", exc.message_zh, seconds=timer.seconds)


def _index_document(lib, kb, doc: ParsedDocument, doc_id, size, config, progress, timer,
                    replace: bool = False) -> FileResult:
    """Chunk, embed and index a parsed document. With `replace` (re-chunking), its old chunks are
    swapped out only once the new ones are chunked and embedded, so a failure in those (slow) stages
    keeps the old version; a failure while writing the indexes removes the document."""
    embedder = lib.embedder(kb)
    with timer("chunk"):
        count = embedder.count_tokens if config.unit == "tokens" else None
        chunks = chunk_text(doc.text, config, doc.page_at, count)
        if not chunks:
            raise errors.EmptyDocument()
        title = document_title(doc.text, doc.filename)
        index_texts = [index_text(title, c) for c in chunks]
        tokens = [tokenize(t) for t in index_texts]
        progress("chunk", len(chunks), len(chunks))
    with timer("embed"):
        vectors, embedded = embed_with_cache(embedder, lib.cache, index_texts,
                                             lambda done, total: progress("embed", done, total))
        progress("embed", len(chunks), len(chunks))
    with timer("index"):
        lib.ensure_indexes(kb, embedder)
        avgdl = _bm25_avgdl(lib, kb, tokens)
        old_ids = lib.store.chunk_ids(kb.id, doc_id) if replace else []
        ids = lib.store.add_document(
            kb.id, doc_id, doc.filename, size=size, pages=doc.page_count, text=doc.text,
            page_spans=[asdict(p) for p in doc.pages], skipped_pages=doc.skipped_pages,
            encoding=doc.encoding, chunking=config.to_dict(), chunks=chunks, replace=replace)
        lib.drop_points(kb, old_ids)
        try:
            _fault_injection_pause()
            _write_points(lib, kb, ids, doc_id, [document_vector(t, avgdl) for t in tokens], vectors, embedder)
            lib.store.set_status(kb.id, doc_id, "ready")
        except errors.WendaoError:
            lib.discard(kb, doc_id)
            raise
        except Exception as exc:
            lib.discard(kb, doc_id)
            raise errors.WendaoError(f"写入索引失败：{type(exc).__name__}: {exc}") from exc
        progress("index", len(chunks), len(chunks))
    replaced = [d for d in lib.store.find_by_filename(kb.id, doc.filename) if d.id != doc_id]
    for old in replaced:
        lib.discard(kb, old.id)
    return FileResult(doc.filename, "replaced" if replaced else "ok", "", doc_id, len(chunks), doc.page_count,
                      doc.warnings, timer.seconds, embedded)


def document_title(text: str, filename: str) -> str:
    """The document's title: its first line when that is short (a heading), else the file name."""
    first = text.lstrip().split("\n", 1)[0].strip()
    if 0 < len(first) <= 40 and len(text) > len(first) + 20:
        return first
    return Path(filename).stem


def index_text(title: str, chunk) -> str:
    """What BM25 and the embedder see for a chunk: the document title, then the chunk text.

    Chunks after the first lose the subject their document is about (the title names it); putting
    the title in front of every chunk's index text lets queries that name the subject find them.
    The stored and quoted chunk text is unchanged.
    """
    text = normalize(chunk.text)
    if chunk.start == 0 or text.startswith(normalize(title)):
        return text
    return f"{normalize(title)}\n{text}"


def _write_points(lib, kb, ids, doc_id, sparse, dense, embedder) -> None:
    doc_ids = [doc_id] * len(ids)
    lib.backend.upsert(lib.bm25_collection(kb), ids, sparse, doc_ids)
    lib.backend.upsert(lib.dense_collection(kb, embedder.name), ids, dense, doc_ids)


def _bm25_avgdl(lib: Library, kb: KnowledgeBase, tokens: list[list[str]]) -> float:
    """avgdl is fixed at a KB's first ingest (see services.bm25)."""
    settings = lib.store.get_kb(kb.id).settings
    if "bm25_avgdl" not in settings:
        settings = lib.store.update_kb_settings(kb.id, bm25_avgdl=average_length(tokens))
    return float(settings["bm25_avgdl"])


def _fault_injection_pause() -> None:
    """Test hook: WENDAO_FAULT_PAUSE_S sleeps between the SQLite write and the index write,
    so the crash-safety test can kill -9 the process at the worst moment."""
    pause = float(os.environ.get("WENDAO_FAULT_PAUSE_S", "0") or 0)
    if pause:
        time.sleep(pause)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (recursively, supported extensions only, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS))
        else:
            files.append(p)
    return files


def ingest_paths(lib: Library, kb: KnowledgeBase, paths: Iterable[str | Path],
                 config: ChunkingConfig = ChunkingConfig(),
                 on_file: Callable[[int, int, FileResult], None] | None = None,
                 progress: Callable[[str, str, int, int], None] | None = None) -> IngestReport:
    """Ingest files/folders; `on_file(i, n, result)` after each, `progress(file, stage, done, total)`."""
    start = time.perf_counter()
    files = expand_paths(paths)
    results = []
    for i, path in enumerate(files, start=1):
        try:
            data = path.read_bytes()
        except OSError as exc:
            result = FileResult(path.name, "failed", f"无法读取文件：{exc.strerror}")
        else:
            result = ingest_bytes(lib, kb, data, path.name, config,
                                  (lambda s, d, t, name=path.name: progress(name, s, d, t)) if progress else None)
        results.append(result)
        if on_file:
            on_file(i, len(files), result)
    return IngestReport(results, time.perf_counter() - start)


def rechunk_document(lib: Library, kb: KnowledgeBase, doc_id: str, config: ChunkingConfig,
                     progress: Progress | None = None) -> FileResult:
    """Re-split an indexed document with new settings (re-embeds only text not in the cache)."""
    document = lib.store.get_document(kb.id, doc_id)
    if document is None:
        raise errors.DocumentNotFound()
    text = lib.store.document_text(kb.id, doc_id)
    parsed = ParsedDocument(document.filename, text, lib.store.page_spans(kb.id, doc_id), document.skipped_pages,
                            encoding=document.encoding)
    with lib.write_lock:
        return _index_document(lib, kb, parsed, doc_id, document.size, config, progress or (lambda *_: None),
                               _StageTimer(), replace=True)


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
