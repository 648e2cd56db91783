"""The types every document parser shares: parsed text with its page spans, the size and
length limits, and the zip-bomb check of OOXML containers (DOCX, XLSX, PPTX).

Kept apart from services.documents.parsing so the format modules (parsing, office) import these
without importing each other.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

from services import errors
from services.config import max_document_chars, max_file_bytes

PAGE_SEPARATOR = "\n\n"
MIB = 1024 * 1024


@dataclass
class PageSpan:
    """Text [start, end) of the document text is on page `page` (1-based); `ocr` when that text
    was recognised from the page image (a scanned page), not read from a text layer."""

    page: int
    start: int
    end: int
    ocr: bool = False


@dataclass
class ParsedDocument:
    filename: str
    text: str
    pages: list[PageSpan] = field(default_factory=list)
    skipped_pages: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    encoding: str | None = None

    @property
    def page_count(self) -> int:
        return max([p.page for p in self.pages] + self.skipped_pages + [1])

    def page_at(self, offset: int) -> int:
        """The page number holding character `offset` (1 for documents without pages)."""
        return page_for_offset(self.pages, offset)


def page_for_offset(spans: list[PageSpan], offset: int) -> int:
    """The page holding `offset`; an offset in the separator between two pages belongs to the page
    before it (so a chunk ending in that separator does not end on an earlier page)."""
    page = spans[0].page if spans else 1
    for span in spans:
        if span.start > offset:
            break
        page = span.page
    return page


def page_ranges(numbers, unit: str = "页", most: int = 20) -> str:
    """Page numbers as ranges in Chinese: [2, 3, …, 5000] -> "第2–5000页", [1, 3, 4, 5, 9] ->
    "第1、3–5、9页". More than `most` ranges: the first `most`, then how many pages in all
    (a PDF of 4,999 empty pages once produced a 28,900-character warning)."""
    ordered = sorted(set(numbers))
    ranges: list[list[int]] = []
    for n in ordered:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    parts = [str(a) if a == b else f"{a}–{b}" for a, b in ranges[:most]]
    more = f"等，共 {len(ordered)} {unit}" if len(ranges) > most else ""
    return f"第{'、'.join(parts)}{unit}{more}"


# --- limits ---------------------------------------------------------------------------------
def format_mb(size: int) -> str:
    """A byte count in the unit of the size limit (MB of 1024 x 1024 bytes, as Streamlit's
    maxUploadSize), so "200 MB" in a message means the same as WENDAO_MAX_FILE_MB=200."""
    return f"{size / MIB:.2f}".rstrip("0").rstrip(".")


def format_size(size: int, base: int = 1000) -> str:
    """A file's size for people, as Streamlit's uploader chips write it (its frontend's file-size helper),
    so the document table shows what the chip showed for the same file: bytes up to half a KB ("43 B"),
    then the next unit as soon as the number passes half of it ("643 B" is "0.6 KB", "558,200 B" is
    "0.6 MB"), with one decimal rounded half up as JavaScript's toFixed does. `base` 1000 is what the
    chips count everywhere but on Windows (1024, like Explorer). components/assets/zh.js writes the
    chip's "0.6KB" / "43.0B" with the same spacing ("0.6 KB", "43 B")."""
    from decimal import ROUND_HALF_UP, Decimal

    value, unit = float(size), 0
    while unit < 3 and value > base / 2:
        value /= base
        unit += 1
    if unit == 0:
        return f"{size} B"
    shown = Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)  # the float's exact value
    return f"{shown} {('B', 'KB', 'MB', 'GB')[unit]}"


def check_size(size: int) -> None:
    """Refuse a file over the size limit; called with the size from the upload or from `stat`,
    before the file is read."""
    limit = max_file_bytes()
    if size > limit:
        size_text, limit_text = f"{format_mb(size)} MB", f"{format_mb(limit)} MB"
        if size_text == limit_text:  # just over the limit: show bytes, not two equal numbers
            size_text, limit_text = f"{size:,} 字节", f"{limit_text}（{limit:,} 字节）"
        raise errors.FileTooLarge(f"文件大小 {size_text}，超过上限 {limit_text}。")


class TextBudget:
    """Counts the characters and lines a parser has produced so far and stops it, with a clear
    message, as soon as a document would exceed the per-document caps (memory stays bounded)."""

    def __init__(self, max_chars: int | None = None, max_lines: int | None = None):
        self.max_chars = max_document_chars() if max_chars is None else max_chars
        self.max_lines = max_lines if max_lines is not None else max(1000, self.max_chars // 10)
        self.chars = 0
        self.lines = 0

    def add(self, chars: int, lines: int = 0) -> None:
        self.chars += chars
        self.lines += lines
        if self.chars > self.max_chars:
            raise errors.DocumentTooLong(
                f"文档文字太多（超过 {self.max_chars:,} 个字符的上限），请拆分成几个较小的文件后再上传。")
        if self.lines > self.max_lines:
            raise errors.DocumentTooLong(
                f"文档段落太多（超过 {self.max_lines:,} 段的上限），请拆分成几个较小的文件后再上传。")


MAX_DOCX_UNCOMPRESSED = 300 * MIB
MAX_COMPRESSION_RATIO = 200


def check_zip_bomb(data: bytes, kind: str = "DOCX") -> list[zipfile.ZipInfo]:
    """Refuse archives whose directory announces an absurd size (honest zip bombs) or claims more
    compressed data than the file holds (a directory that lies); returns the entries. The bytes
    actually inflated are capped again while reading (`_read_capped`), whatever the directory says;
    zipfile itself never inflates an entry past the size its directory entry states. `kind` names
    the format in the messages (DOCX, XLSX, PPTX)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise errors.CorruptFile(f"{kind} 文件已损坏（不是有效的 zip 包）。") from exc
    total = sum(info.file_size for info in infos)
    compressed = sum(info.compress_size for info in infos)
    if compressed > len(data):
        raise errors.CorruptFile(f"{kind} 文件已损坏（压缩包目录与实际内容不符），已拒绝。")
    if total > MAX_DOCX_UNCOMPRESSED or (total > 10 * MIB and total / max(1, compressed) > MAX_COMPRESSION_RATIO):
        raise errors.FileTooLarge(f"{kind} 解压后体积异常巨大（疑似压缩炸弹），已拒绝。")
    return infos


class _PrologEnd(Exception):
    pass


def refuse_dtd(data: bytes, kind: str) -> None:
    """Raise UnsafeXml when any XML part of an Office package declares a DTD (where entities are
    declared). Only each part's prolog is read — a DOCTYPE can only come before the root element —
    so the cost is a few bytes per part, whatever the part's size. Parts that are not well-formed
    are left to the format's own parser (and its "damaged" message)."""
    import xml.parsers.expat

    def doctype(*_):
        raise errors.UnsafeXml(f"{kind} " + errors.UnsafeXml.default_message)

    def root(*_):
        raise _PrologEnd

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        return
    with archive:
        for info in archive.infolist():
            if not info.filename.lower().endswith((".xml", ".rels", ".vml")):
                continue
            parser = xml.parsers.expat.ParserCreate()
            parser.StartDoctypeDeclHandler = doctype
            parser.StartElementHandler = root
            try:
                with archive.open(info) as part:
                    read = 0
                    while read < MAX_DOCX_UNCOMPRESSED:
                        chunk = part.read(16384)
                        read += len(chunk)
                        parser.Parse(chunk, not chunk)
                        if not chunk:
                            break
            except (_PrologEnd, xml.parsers.expat.ExpatError, zipfile.BadZipFile, OSError, ValueError,
                    EOFError, NotImplementedError, RuntimeError):
                continue
