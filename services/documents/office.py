"""Spreadsheets (.xlsx) and slide decks (.pptx) -> ParsedDocument, one "page" per sheet / slide.

A sheet or slide plays the part a page plays in a PDF: its text is one PageSpan numbered by the
sheet's / slide's position (1-based), pages are separated by PAGE_SEPARATOR, and a citation of a
passage in sheet 2 or slide 7 says 第2页 / 第7页 exactly as it would for a PDF page.

Sheets: openpyxl in read-only, values-only mode streams each sheet's XML row by row (no cell
objects kept). Rows are written as "a | b" (empty cells kept, trailing ones dropped), like DOCX
table rows; the header row (the first with two or more values) is written again every
HEADER_EVERY characters, so nearly every chunk of a long sheet holds the column names. Measured
with bench/xlsx_rows.py (a generated 300-row staff sheet, 100 "X的电话/部门/城市/入职年份"
questions, 300-character sentence chunks; R@1 / R@5):

    rows                                BM25         dense (e5)   hybrid
    header once, "a | b"                0.52 / 0.98  0.76 / 0.97  0.84 / 0.98
    every cell "列名：值 | 列名：值"      0.78 / 0.89  0.67 / 0.85  0.73 / 0.89
    "a | b", header every 200 chars     0.89 / 1.00  0.80 / 1.00  0.88 / 1.00

With the header once, its words ("电话") occur in one chunk only, so BM25 ranks that chunk first
for every question naming a column, and a chunk from the middle of the sheet does not say which
number is the 电话; labelling every cell fixes both but the repeated labels dilute the rows'
embeddings. The repeated header fixes both at a small cost in length.
Rows before the header (titles above a table) are kept as plain lines.

Slides: python-pptx, slides in presentation order; on each slide the title first, then the text of
every shape top-to-bottom, left-to-right (group shapes opened, tables as "a | b" rows), then the
speaker notes as "备注：…".

Both formats are zip packages: the same zip-bomb checks as DOCX run first (sizes announced and
actually inflated), plus a cap on the XML a deck may hold (python-pptx builds trees) and on the
cells a workbook may have (a sheet padded out to column XFD costs time per cell, not per value).
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import zipfile
from typing import Iterable, Iterator

from services import errors
from services.documents.doctypes import (MIB, PAGE_SEPARATOR, PageSpan, ParsedDocument, TextBudget, check_zip_bomb,
                                         page_ranges, refuse_dtd)

log = logging.getLogger(__name__)

MAX_SHEET_CELLS = 2_000_000  # cells visited (empty ones included) over all sheets of a workbook
MAX_SHARED_STRINGS = 64 * MIB  # openpyxl holds the shared-strings table in memory
MAX_PPTX_XML = 64 * MIB  # python-pptx parses every XML part into a tree
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted OOXML and legacy .xls/.ppt are OLE files
ROW_SEPARATOR = " | "
HEADER_EVERY = 200  # characters of rows after which the header row is written again


# --- shared -----------------------------------------------------------------------------------
def _open_package(data: bytes, kind: str) -> list[zipfile.ZipInfo]:
    """The zip entries of an Office package after the bomb checks; an OLE file (password-protected
    OOXML or the legacy binary format) gets its own message instead of "not a zip"."""
    if data.startswith(_OLE_MAGIC):
        raise errors.EncryptedOrLegacyOffice(
            f"文件是加密的 Office 文档或旧版（.xls/.ppt）格式，无法读取。请去掉密码，"
            f"或在 Office/WPS 中另存为 .{kind.lower()} 后再上传。")
    infos = check_zip_bomb(data, kind)
    refuse_dtd(data, kind)  # openpyxl expands entities, python-pptx drops the text after one
    return infos


def _assemble(filename: str, pages: Iterable[tuple[int, str]], total: int, measure: str, unit: str) -> ParsedDocument:
    """Pages (number, text) -> one document text with exact PageSpans; pages without text are
    listed in `skipped_pages` with a warning, as for PDF pages."""
    doc = ParsedDocument(filename, "")
    parts: list[str] = []
    offset = 0
    for number, text in pages:
        text = text.strip()
        if not text:
            doc.skipped_pages.append(number)
            continue
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        parts.append(text)
        doc.pages.append(PageSpan(number, offset, offset + len(text)))
        offset += len(text)
    doc.text = "".join(parts)
    if not total:
        raise errors.EmptyDocument(f"文件里没有任何{unit}。")
    if not doc.pages:
        raise errors.EmptyDocument(f"文件共 {total} {measure}{unit}，但都没有文字。")
    if doc.skipped_pages:
        doc.warnings.append(f"以下{unit}没有文字，已跳过：{page_ranges(doc.skipped_pages, measure)}")
    return doc


# --- XLSX -------------------------------------------------------------------------------------
def cell_text(value) -> str:
    """A cell value as people read it: integers without ".0", at most 15 significant digits,
    dates without a midnight time, TRUE/FALSE as Excel shows them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, ".15g")
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d" if value.time() == dt.time() else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())  # line breaks inside a cell would split the row


def sheet_lines(rows: Iterable[tuple], budget: TextBudget, cells: list[int]) -> Iterator[str]:
    """The lines of one sheet: rows before the header as they are, then every row as "a | b" (empty
    cells kept so columns line up, trailing ones dropped), the header row repeated whenever HEADER_EVERY characters of rows have passed
    since it last appeared. `cells` is a one-item counter of cells visited, shared by the sheets of
    a workbook and capped at MAX_SHEET_CELLS."""
    header: str | None = None
    since_header = 0
    for row in rows:
        cells[0] += max(1, len(row))
        if cells[0] > MAX_SHEET_CELLS:
            raise errors.DocumentTooLong(
                f"表格单元格太多（超过 {MAX_SHEET_CELLS:,} 个的上限），请删去空白行列或拆分成几个较小的文件后再上传。")
        values = [cell_text(v) for v in row]
        while values and not values[-1]:  # the padding up to the sheet's widest row
            values.pop()
        if not values:
            continue
        line = ROW_SEPARATOR.join(values)  # empty cells kept in between: columns stay aligned
        if header is None and sum(1 for v in values if v) >= 2:
            header, since_header = line, 0
        elif header is not None and since_header >= HEADER_EVERY:
            budget.add(len(header) + 1, 1)
            yield header
            since_header = 0
        since_header += len(line) + 1
        budget.add(len(line) + 1, 1)
        yield line


def parse_xlsx(data: bytes, filename: str) -> ParsedDocument:
    """Every worksheet in workbook order, streamed row by row; page = sheet number."""
    import openpyxl

    infos = _open_package(data, "XLSX")
    if sum(i.file_size for i in infos if i.filename.lower().endswith("sharedstrings.xml")) > MAX_SHARED_STRINGS:
        raise errors.FileTooLarge("XLSX 的共享文字表解压后超过上限（疑似压缩炸弹或异常文件），已拒绝。")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except errors.WendaoError:
        raise
    except Exception as exc:
        log.info("XLSX could not be opened: %s", exc)
        raise errors.CorruptFile("XLSX 文件已损坏或不是 Excel 工作簿，无法读取。") from exc
    budget, cells = TextBudget(), [0]
    try:
        sheets = list(book.worksheets)

        def pages():
            for number, sheet in enumerate(sheets, start=1):
                sheet.reset_dimensions()  # trust the rows present, not a declared A1:XFD1048576
                lines = list(sheet_lines(sheet.iter_rows(values_only=True), budget, cells))
                yield number, "\n".join([f"工作表：{sheet.title}"] + lines) if lines else ""

        return _assemble(filename, pages(), len(sheets), "个", "工作表")
    except errors.WendaoError:
        raise
    except Exception as exc:
        log.info("XLSX sheet unreadable: %s", exc)
        raise errors.CorruptFile("XLSX 文件已损坏（工作表内容无法读取）。") from exc
    finally:
        book.close()


# --- PPTX -------------------------------------------------------------------------------------
def _shape_lines(shapes) -> Iterator[str]:
    """Text of shapes top-to-bottom, left-to-right; groups opened, tables row by row."""
    from pptx.shapes.group import GroupShape

    def position(shape):
        return (shape.top if shape.top is not None else 1 << 62, shape.left if shape.left is not None else 1 << 62)

    for shape in sorted(shapes, key=position):
        if isinstance(shape, GroupShape):
            yield from _shape_lines(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                if any(cells):
                    yield ROW_SEPARATOR.join(cells)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:  # a line break inside one is "\v"
                for line in paragraph.text.replace("\v", "\n").split("\n"):
                    if line.strip():
                        yield line.strip()


def slide_text(slide) -> str:
    """One slide: its title, the other shapes' text, then the speaker notes."""
    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None and title_shape.has_text_frame else ""
    others = [s for s in slide.shapes if title_shape is None or s.shape_id != title_shape.shape_id]
    lines = ([title] if title else []) + list(_shape_lines(others))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            lines.append("备注：" + notes)
    return "\n".join(lines)


def parse_pptx(data: bytes, filename: str) -> ParsedDocument:
    """Slides in order with titles and notes; page = slide number."""
    from pptx import Presentation

    infos = _open_package(data, "PPTX")
    xml = sum(i.file_size for i in infos if i.filename.lower().endswith((".xml", ".rels")))
    if xml > MAX_PPTX_XML:
        raise errors.FileTooLarge("PPTX 的文字内容解压后超过上限（疑似压缩炸弹或异常文件），已拒绝。")
    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as exc:
        log.info("PPTX could not be opened: %s", exc)
        raise errors.CorruptFile("PPTX 文件已损坏或不是 PowerPoint 演示文稿，无法读取。") from exc
    budget = TextBudget()
    slides = list(deck.slides)

    def pages():
        for number, slide in enumerate(slides, start=1):
            text = slide_text(slide)
            budget.add(len(text) + len(PAGE_SEPARATOR), text.count("\n") + 1)
            yield number, text

    return _assemble(filename, pages(), len(slides), "张", "幻灯片")
