"""Bytes + filename -> ParsedDocument: the document's text and which page each part is on.

One parser function per format, registered in PARSERS by extension; a new format is one new
function. Parsers raise the typed errors of services.errors, never library exceptions, and every
message is Chinese.

Hostile input is expected: sizes are checked before anything is decoded, text files that are
really binary (an image renamed .txt, a file of NUL bytes) are refused, DOCX XML is streamed (never
held as a tree, and the inflated bytes actually read are capped whatever the zip directory
claims), and every document is capped in characters and lines (`DocumentTooLong`), so parsing one
file within the size limit stays well under 1 GB of memory.

PDF: pypdfium2 (PDFium, Apache-2.0/BSD-3). Measured against pypdf and pdfplumber in
bench/pdf_extractors.py: it keeps table rows on one line, follows reading order in multi-column
layouts, does not put spaces inside CJK text or numbers, opens RC4/AES-128/AES-256 files with an
empty password without extra dependencies and is ~7x faster than pypdf per page. Pages whose text
is empty or mostly garbage (scanned images, broken font maps) are reported in `skipped_pages`
instead of being indexed as mojibake.
"""
from __future__ import annotations

import io
import logging
import re
import threading
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Callable, Iterable

from services import errors
from services.documents import office
from services.documents.doctypes import (MAX_COMPRESSION_RATIO, MAX_DOCX_UNCOMPRESSED, MIB, PAGE_SEPARATOR,  # noqa: F401
                                         PageSpan, ParsedDocument, TextBudget, check_size, check_zip_bomb,
                                         format_mb, page_for_offset, page_ranges)
from services.documents.text import fold_chars, join_wrapped_lines

log = logging.getLogger(__name__)

# --- text files -----------------------------------------------------------------------------
_BOMS = [
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
]
_CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
# Characters common in real Chinese text; GBK-decoded Big5 (and vice versa) yields rare ones.
_COMMON_ZH = set(
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里"
    "用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实"
    "日軍於與這個們來時會學國說對後裡為發過經還當現動與產關開將業區體點專應無長東門問題資實們華語臺灣"
)
_SAMPLE = 256 * 1024  # bytes used to choose an encoding or judge a file as binary
# Decoded characters that are noise, not text: controls, replacement characters, private use.
_SPACE = re.compile(r"\s+")
_BAD_CHARS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd\ue000-\uf8ff]")


def _utf16_guess(data: bytes) -> tuple[str, str] | None:
    """(text, encoding) for a BOM-less UTF-16 file: it has NUL bytes (high bytes of ASCII, some
    CJK), decodes strictly in one byte order, and gives text, not control characters; else None.
    Of two valid byte orders the one giving more ASCII and common Chinese characters wins."""
    if data.count(b"\x00", 0, _SAMPLE) <= max(2, min(len(data), _SAMPLE) // 1000):
        return None
    best = None
    for encoding in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        sample = text[:_SAMPLE // 2]
        if len(_BAD_CHARS.findall(sample)) > len(sample) // 100:
            continue
        score = sum(1 for ch in sample if " " <= ch <= "~" or ch in _COMMON_ZH)
        if best is None or score > best[0]:
            best = (score, text, encoding)
    return (best[1], best[2]) if best else None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode text bytes, returning (text, encoding). Never raises on undecodable bytes.

    Order: BOM -> strict UTF-8 -> BOM-less UTF-16 (NUL bytes in alternate positions) -> the better
    of GB18030 and Big5 by share of common Chinese characters (judged on a sample, so large files
    cost one decode) -> charset-normalizer's guess -> UTF-8 with replacement characters.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding.replace("-sig", ""), errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    utf16 = _utf16_guess(data)
    if utf16:
        return utf16
    candidates = []
    for encoding in ("gb18030", "big5"):
        try:
            sample = data[:_SAMPLE].decode(encoding, errors="strict" if len(data) <= _SAMPLE else "ignore")
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        common = sum(1 for ch in sample if ch in _COMMON_ZH)
        candidates.append((common, encoding, text))
        del text
    if candidates:
        _, encoding, text = max(candidates, key=lambda c: c[0])
        return text, encoding
    from charset_normalizer import from_bytes

    best = from_bytes(data[:_SAMPLE]).best()
    if best is not None and best.encoding:
        try:
            return data.decode(best.encoding, errors="replace"), best.encoding
        except LookupError:
            pass
    return data.decode("utf-8", errors="replace"), "utf-8 (lossy)"


# Signatures of binary formats that users rename by mistake; the message names what the file is.
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "PNG 图片"), (b"\xff\xd8\xff", "JPEG 图片"), (b"GIF87a", "GIF 图片"),
    (b"GIF89a", "GIF 图片"), (b"BM", None), (b"%PDF-", "PDF 文件（请使用 .pdf 扩展名上传）"),
    (b"PK\x03\x04", "压缩包或 Office 文档（如 DOCX/XLSX）"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "旧版 Office 文档（DOC/XLS）"),
    (b"\x1f\x8b", "gzip 压缩包"), (b"7z\xbc\xaf\x27\x1c", "7z 压缩包"), (b"Rar!\x1a\x07", "RAR 压缩包"),
    (b"BZh", None), (b"\x7fELF", "可执行程序"), (b"SQLite format 3\x00", "SQLite 数据库"),
    (b"RIFF", None), (b"OggS", "音频文件"), (b"ID3", "音频文件"), (b"wOFF", "字体文件"),
]
# C0 control bytes that never occur in text in any supported encoding (tab, newlines, form
# feed and escape excluded); a text file is binary when more than 1% of its bytes are these.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27)) + b"\x7f"
_NOT_TEXT = "文件内容不是文本（{what}），无法作为文本文档索引。请上传 PDF、DOCX、TXT、MD、CSV 或 HTML 格式的原始文件。"


def check_text_bytes(data: bytes) -> None:
    """Refuse bytes that are not text whatever their file name says: known binary formats by
    signature, files of NUL bytes that are not UTF-16, and files full of control bytes."""
    head = data[:16]
    for magic, what in _MAGIC:
        if what and head.startswith(magic):
            raise errors.BinaryContent(_NOT_TEXT.format(what=f"看起来是{what}"))
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return  # UTF-16 with BOM: judged after decoding
    nuls = data.count(b"\x00")
    if nuls > max(2, len(data) // 1000):
        if _utf16_guess(data):
            return  # UTF-16 without BOM
        raise errors.BinaryContent(_NOT_TEXT.format(what=f"其中 {nuls / len(data):.0%} 是空字节 NUL，看起来是二进制文件"))
    middle = len(data) // 2
    sample = data[:_SAMPLE] + data[middle:middle + _SAMPLE] + data[-_SAMPLE:]
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if controls > len(sample) // 100:
        raise errors.BinaryContent(_NOT_TEXT.format(what="含有大量控制字符，看起来是图片、压缩包或程序等二进制文件"))


def check_decoded_text(text: str) -> None:
    """Refuse decoded text that is mostly noise (e.g. binary bytes behind a UTF-16 BOM)."""
    middle = len(text) // 2
    sample = text[:_SAMPLE] + text[middle:middle + _SAMPLE] + text[-_SAMPLE:]
    visible = len(_SPACE.sub("", sample))
    if visible and len(_BAD_CHARS.findall(sample)) > 0.1 * visible:
        raise errors.BinaryContent(_NOT_TEXT.format(what="解码后大部分是乱码或控制字符"))


def _decode_document(data: bytes) -> tuple[str, str]:
    """Text of a text-like file (TXT/MD/CSV/HTML), refusing binary content, and refusing
    over-long text before decoding when the byte count alone proves it (a character takes at
    most 4 bytes in any supported encoding)."""
    check_text_bytes(data)
    TextBudget().add(len(data) // 4)
    text, encoding = decode_text(data)
    check_decoded_text(text)
    if "\x00" in text:  # a few stray NUL bytes (more are refused above): never stored or shown
        text = text.replace("\x00", "")
    TextBudget().add(len(text))
    return text, encoding


def parse_text(data: bytes, filename: str) -> ParsedDocument:
    text, encoding = _decode_document(data)
    return ParsedDocument(filename, text, [PageSpan(1, 0, len(text))], encoding=encoding)


# --- HTML -----------------------------------------------------------------------------------
_HTML_HIDDEN = {"script", "style", "template", "noscript", "head", "svg", "iframe", "object"}


class _HtmlText(HTMLParser):
    """Visible text of an HTML page, one line per text node, streamed (no DOM: a page of a million
    tiny elements costs its text, not a tree of a million objects; BeautifulSoup took 700 MB for
    4.7 MB of tags). Script/style/template/noscript/head/svg content and comments are dropped."""

    def __init__(self, budget: TextBudget):
        super().__init__(convert_charrefs=True)
        self.budget = budget
        self.lines: list[str] = []
        self.hidden: list[str] = []  # open hidden elements, innermost last

    def handle_starttag(self, tag, attrs):
        if tag == "body" and "head" in self.hidden:  # an unclosed <head> ends where <body> starts
            del self.hidden[self.hidden.index("head"):]
        if tag in _HTML_HIDDEN:
            self.hidden.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass  # <svg/>, <br/>: nothing to open or show

    def handle_endtag(self, tag):
        if tag in self.hidden:
            del self.hidden[len(self.hidden) - 1 - self.hidden[::-1].index(tag):]

    def handle_data(self, data):
        if self.hidden:
            return
        for line in data.splitlines():
            line = line.strip()
            if line:
                self.budget.add(len(line) + 1, 1)
                self.lines.append(line)


def parse_html(data: bytes, filename: str) -> ParsedDocument:
    """Visible text only: script/style/template/noscript/head and comments are dropped."""
    raw, encoding = _decode_document(data)
    reader = _HtmlText(TextBudget())
    for start in range(0, len(raw), 1 << 20):
        reader.feed(raw[start:start + (1 << 20)])
    reader.close()
    text = "\n".join(reader.lines)
    return ParsedDocument(filename, text, [PageSpan(1, 0, len(text))], encoding=encoding)


# --- PDF ------------------------------------------------------------------------------------
_GOOD_CHAR = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbfA-Za-z0-9\s，。！？；：、“”‘’（）《》—…,.!?;:()\-%]")
# PDFium is not thread-safe (pypdfium2 docs); Streamlit sessions and the ingest worker are threads.
PDFIUM_LOCK = threading.Lock()
# PDFium reports a hyphen that ends a line as U+0002 (it may be a real one: "27日-|10月", "zh-|hk",
# so it stays a hyphen) and soft hyphens as U+FFFE (dropped). The page view reads the same marks one
# character index at a time (services.documents.pageview) and must make the same of them.
PDFIUM_MARKS = {"\x02": "-", "\ufffe": "", "\x00": ""}
_PDFIUM_TEXT = str.maketrans({"\r": "", **PDFIUM_MARKS})


def is_garbage(text: str) -> bool:
    """True for text that is empty or mostly not language (broken font maps, binary noise)."""
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) < 2:
        return True
    good = sum(1 for ch in visible if _GOOD_CHAR.match(ch))
    bad = sum(1 for ch in visible if ch == "\ufffd" or 0xE000 <= ord(ch) <= 0xF8FF or ord(ch) < 32)
    return good / len(visible) < 0.6 or bad / len(visible) > 0.1


def _open_pdf(data: bytes):
    """A pypdfium2 document (empty user password tried, as viewers do); typed errors otherwise."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # PDFium's last-error code is process-global and may be stale (a zero-page file fails
        # without setting it), so "password" is believed only for a file with an /Encrypt entry.
        code = getattr(exc, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY) and b"/Encrypt" in data:
            raise errors.EncryptedPDF() from exc
        log.info("PDF could not be opened: %s", exc)
        if re.search(rb"/Count\s+0\b", data) and not re.search(rb"/Count\s+[1-9]", data):
            raise errors.EmptyDocument("PDF 没有任何页面。") from exc
        raise errors.CorruptFile("PDF 文件已损坏或不是有效的 PDF，无法读取。") from exc


def _pdf_page_text(pdf, index: int) -> str:
    """One page's text as PDFium lays it out (lines in reading order, table rows on one line);
    "" for a page PDFium cannot read, so one broken page does not lose the others."""
    try:
        page = pdf[index]
    except Exception as exc:
        log.info("PDF page %d unreadable: %s", index + 1, exc)
        return ""
    try:
        textpage = page.get_textpage()
        try:
            return textpage.get_text_bounded().replace("\r\n", "\n").translate(_PDFIUM_TEXT)
        finally:
            textpage.close()
    except Exception as exc:
        log.info("PDF page %d unreadable: %s", index + 1, exc)
        return ""
    finally:
        page.close()


def pdf_document(filename: str, page_texts: Iterable[str],
                 ocr: Callable[[int], str | None] | None = None) -> ParsedDocument:
    """A PDF's ParsedDocument from its pages' raw texts, whichever extractor produced them:
    characters folded, layout line wraps joined, garbage pages skipped, pages separated by
    PAGE_SEPARATOR with exact [start, end) spans. (bench/pdf_extractors.py feeds it pypdf and
    pdfplumber text to compare extractors under the same post-processing.) `ocr(page number)`,
    when given, is asked for the text of a page without a usable text layer (None: not read);
    such a page's span is marked `ocr`."""
    doc = ParsedDocument(filename, "")
    budget = TextBudget()
    parts: list[str] = []
    offset = page_total = 0
    recognised: list[int] = []
    tried = False  # OCR was asked and read some page (even if it found no text)
    for number, raw in enumerate(page_texts, start=1):
        page_total = number
        page_text = join_wrapped_lines(fold_chars(raw)).strip()
        from_ocr = False
        if is_garbage(page_text) and ocr is not None:
            read = ocr(number)
            tried = tried or read is not None
            page_text, from_ocr = join_wrapped_lines(fold_chars(read or "")).strip(), read is not None
        if is_garbage(page_text):
            doc.skipped_pages.append(number)
            continue
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        budget.add(len(page_text) + len(PAGE_SEPARATOR), page_text.count("\n") + 1)
        parts.append(page_text)
        doc.pages.append(PageSpan(number, offset, offset + len(page_text), ocr=from_ocr))
        recognised += [number] if from_ocr else []
        offset += len(page_text)
    doc.text = "".join(parts)
    if not page_total:
        raise errors.EmptyDocument("PDF 没有任何页面。")
    if not doc.pages:
        raise errors.NoExtractableText(
            f"PDF 共 {page_total} 页，但没有可提取的文字（可能是扫描件或字体损坏）"
            + ("，OCR 也没有识别出文字。" if tried else "，请先做 OCR。"))
    if recognised:
        doc.warnings.append(f"以下页面是扫描件，文字由 OCR 识别，可能有错字：{page_ranges(recognised)}")
    if doc.skipped_pages:
        doc.warnings.append(f"以下页面没有可用文字，已跳过：{page_ranges(doc.skipped_pages)}")
    return doc


def _locked_page_text(pdf, index: int) -> str:
    with PDFIUM_LOCK:
        return _pdf_page_text(pdf, index)


def parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    """Text layer page by page; pages without one are OCR'd when services.documents.ocr can run (PDFium is
    locked per call, not while a page is being recognised)."""
    from services.documents import ocr

    with PDFIUM_LOCK:
        pdf = _open_pdf(data)
        count = len(pdf)
    try:
        reader = ocr.PageReader(pdf, PDFIUM_LOCK)
        doc = pdf_document(filename, (_locked_page_text(pdf, i) for i in range(count)), reader.read)
    finally:
        with PDFIUM_LOCK:
            pdf.close()
    if reader.over_cap:
        doc.warnings.append(f"扫描页超过 OCR 上限（每个文档 {ocr.max_pages()} 页），未识别：{', '.join(map(str, reader.over_cap))}")
    if reader.not_read:
        doc.warnings.append(f"扫描页未做 OCR（{ocr.unavailable_reason()}）：{', '.join(map(str, reader.not_read))}")
    return doc


# --- DOCX -----------------------------------------------------------------------------------
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_OFFICE_DOCUMENT = "/officeDocument"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # password-protected OOXML and legacy .doc are OLE files
# Text inside these is not body text (text boxes are repeated in fallbacks; deleted revisions).
_W_P = _W + "p"
_W_T = _W + "t"
_W_BR = _W + "br"
_W_TYPE = _W + "type"
_W_TBL = _W + "tbl"
_W_TR = _W + "tr"
_W_TC = _W + "tc"
_W_GRIDSPAN = _W + "gridSpan"
_W_VMERGE = _W + "vMerge"
_W_VAL = _W + "val"
_DOCX_SKIP = {_W + "txbxContent", _W + "del", _W + "moveFrom"}
_DOCX_CHARS = {_W + "tab": "\t", _W + "ptab": "\t", _W + "cr": "\n", _W + "noBreakHyphen": "-"}


def _read_capped(archive: zipfile.ZipFile, name: str, sink: Callable[[bytes], None], cap: int) -> None:
    """Stream one zip entry into `sink` in 64 KiB pieces, stopping once `cap` inflated bytes have
    actually been read (the sizes in the zip directory may lie)."""
    total = 0
    try:
        with archive.open(name) as stream:
            while chunk := stream.read(64 * 1024):
                total += len(chunk)
                if total > cap:
                    raise errors.FileTooLarge(
                        f"DOCX 解压后超过 {format_mb(cap)} MB（疑似压缩炸弹），已拒绝。")
                sink(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        log.info("DOCX entry %s unreadable: %s", name, exc)
        raise errors.CorruptFile("DOCX 文件已损坏（压缩数据无法解开或校验失败）。") from exc


class _DocxBody:
    """lxml parser target for word/document.xml: emits one line per paragraph and `a | b` per
    table row, in body order, as the XML streams by. No tree is built, so memory is bounded by the
    text kept (capped by `budget`), not by the size of the XML."""

    def __init__(self, budget: TextBudget):
        self.budget = budget
        self.lines: list[str] = []
        self.paragraph: io.StringIO | None = None  # (a list of millions of one-character runs is 60x larger)
        self.in_text = False
        self.skip = 0
        self.tables: list[dict] = []  # stack (nested tables): row cells, open cell, merges

    def doctype(self, *_):
        raise errors.UnsafeXml("DOCX " + errors.UnsafeXml.default_message)

    def start(self, tag, attrib):
        if tag in _DOCX_SKIP:
            self.skip += 1
        if self.skip:
            return
        if tag == _W_P and self.paragraph is None:
            self.paragraph = io.StringIO()
        elif tag == _W_T:
            self.in_text = True
        elif self.paragraph is not None and tag in _DOCX_CHARS:
            self._add(_DOCX_CHARS[tag])
        elif self.paragraph is not None and tag == _W_BR:
            if attrib.get(_W_TYPE, "textWrapping") == "textWrapping":
                self._add("\n")
        elif tag == _W_TBL:
            self.tables.append({"row": None, "cell": None, "col": 0, "span": 1, "vmerge": None, "merged": {}})
        elif self.tables:
            self._table_start(tag, attrib, self.tables[-1])

    def _table_start(self, tag, attrib, table):
        if tag == _W_TR:
            table["row"], table["col"] = [], 0
        elif tag == _W_TC:
            table["cell"], table["span"], table["vmerge"] = [], 1, None
        elif tag == _W_GRIDSPAN and table["cell"] is not None:
            table["span"] = max(1, min(64, int(attrib.get(_W_VAL, "1") or 1)))
        elif tag == _W_VMERGE and table["cell"] is not None:
            table["vmerge"] = attrib.get(_W_VAL, "continue")

    def data(self, text):
        if self.in_text and self.paragraph is not None and not self.skip:
            self._add(text)

    def _add(self, text: str) -> None:
        self.budget.add(len(text))
        self.paragraph.write(text)

    def end(self, tag):
        if tag in _DOCX_SKIP:
            self.skip -= 1
            return
        if self.skip:
            return
        if tag == _W_T:
            self.in_text = False
        elif tag == _W_P and self.paragraph is not None:
            text, self.paragraph = self.paragraph.getvalue().strip(), None
            self._emit(text, self.tables)
        elif self.tables:
            self._table_end(tag)

    def _table_end(self, tag):
        table = self.tables[-1]
        if tag == _W_TC and table["cell"] is not None and table["row"] is not None:
            value = " ".join(p for p in table["cell"] if p).replace("\n", " ")
            if table["vmerge"] == "restart":
                table["merged"][table["col"]] = value
            elif table["vmerge"] == "continue" and not value:
                value = table["merged"].get(table["col"], "")  # vertically merged: repeat the value
            if not table["row"] or table["row"][-1] != value:  # horizontally merged cells repeat
                table["row"].append(value)
            table["col"] += table["span"]
            table["cell"] = None
        elif tag == _W_TR and table["row"] is not None:
            cells, table["row"] = table["row"], None
            if any(cells):  # a nested table's row goes into the enclosing cell
                self._emit(" | ".join(cells), self.tables[:-1])
        elif tag == _W_TBL:
            self.tables.pop()

    def _emit(self, text: str, tables: list[dict]) -> None:
        """A finished paragraph or row goes into the innermost open table cell, or is a body line."""
        if tables and tables[-1]["cell"] is not None:
            tables[-1]["cell"].append(text)
        elif text:
            self.budget.add(1, 1)
            self.lines.append(text)

    def close(self):
        return "\n".join(self.lines)


def _docx_main_part(archive: zipfile.ZipFile, names: set[str]) -> str:
    """The main document part named by the package relationships (word/document.xml usually)."""
    from lxml import etree

    if "_rels/.rels" in names:
        chunks: list[bytes] = []
        _read_capped(archive, "_rels/.rels", chunks.append, MIB)
        try:
            root = etree.fromstring(b"".join(chunks), etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            raise errors.CorruptFile("DOCX 文件已损坏（包关系文件格式错误）。") from exc
        for rel in root.iter(_REL + "Relationship"):
            if rel.get("Type", "").endswith(_OFFICE_DOCUMENT):
                target = rel.get("Target", "").lstrip("/")
                if target in names:
                    return target
    if "word/document.xml" in names:
        return "word/document.xml"
    raise errors.CorruptFile("DOCX 文件已损坏或不是 Word 文档（找不到正文部分）。")


def parse_docx(data: bytes, filename: str) -> ParsedDocument:
    """Paragraphs and tables in body order; headings on their own line; table rows as `a | b`.

    The XML is streamed through an lxml target parser (no tree, no python-docx object model),
    so a small DOCX holding huge XML costs time in proportion to its XML and bounded memory."""
    from lxml import etree

    if data.startswith(_OLE_MAGIC):
        raise errors.EncryptedOrLegacyOffice(
            "文件是加密的 Word 文档或旧版 .doc 格式，无法读取。请去掉密码，或在 Word/WPS 中另存为 .docx 后再上传。")
    infos = check_zip_bomb(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = {info.filename for info in infos}
        part = _docx_main_part(archive, names)
        body = _DocxBody(TextBudget())
        parser = etree.XMLParser(target=body, resolve_entities=False, no_network=True, huge_tree=False)
        try:
            _read_capped(archive, part, parser.feed, MAX_DOCX_UNCOMPRESSED)
            text = parser.close()
        except etree.XMLSyntaxError as exc:
            log.info("DOCX XML broken: %s", exc)
            raise errors.CorruptFile("DOCX 文件已损坏（正文 XML 格式错误）。") from exc
    return ParsedDocument(filename, text, [PageSpan(1, 0, len(text))])


PARSERS: dict[str, Callable[[bytes, str], ParsedDocument]] = {
    ".txt": parse_text,
    ".md": parse_text,
    ".markdown": parse_text,
    ".csv": parse_text,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".html": parse_html,
    ".htm": parse_html,
    ".xlsx": office.parse_xlsx,
    ".pptx": office.parse_pptx,
}
SUPPORTED_EXTENSIONS = sorted(PARSERS)
# Whitespace and invisible format characters (zero-width space/joiners, BOM, soft hyphen, bidi marks).
_INVISIBLE = re.compile(r"[\s\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\x00-\x1f\x7f]*")


def has_visible_text(text: str) -> bool:
    """True when the text holds at least one visible character (not only blanks/zero-width)."""
    return _INVISIBLE.fullmatch(text) is None


# Old binary Office formats: what to save them as (Word/Excel/PowerPoint and WPS all can).
LEGACY_FORMATS = {".doc": (".docx", "Word"), ".xls": (".xlsx", "Excel"), ".ppt": (".pptx", "PowerPoint"),
                  ".wps": (".docx", "WPS 文字"), ".et": (".xlsx", "WPS 表格"), ".dps": (".pptx", "WPS 演示")}


def unsupported(filename: str) -> errors.UnsupportedFileType | None:
    """Why a file of this name is not read (None when its type is supported): an old Office format
    says what to save it as ("请另存为 .docx 后上传"), any other type lists the supported ones."""
    extension = PurePath(filename).suffix.lower()
    if extension in PARSERS:
        return None
    if extension in LEGACY_FORMATS:
        new, app = LEGACY_FORMATS[extension]
        return errors.LegacyOfficeFormat(f"不支持旧版 {app} 格式「{extension}」：请另存为 {new} 后上传。")
    return errors.UnsupportedFileType(f"不支持的文件类型「{extension or '无扩展名'}」。支持：{'、'.join(SUPPORTED_EXTENSIONS)}")


def parse(data: bytes, filename: str) -> ParsedDocument:
    """Parse an uploaded file; raises a services.errors.DocumentError subclass on bad input."""
    extension = PurePath(filename).suffix.lower()
    parser = PARSERS.get(extension)
    if parser is None:
        raise unsupported(filename)
    check_size(len(data))
    if not data or data.isspace():  # (not data.strip(): that copies a 200 MB file)
        raise errors.EmptyDocument()
    try:
        doc = parser(data, filename)
    except errors.WendaoError:
        raise
    except Exception as exc:  # a library failing in a way not foreseen: logged, and said in Chinese
        log.exception("parsing %r failed", filename)
        raise errors.CorruptFile(f"文件无法解析（{extension[1:].upper()} 格式异常或已损坏）。") from exc
    if not doc.text.strip():
        raise errors.EmptyDocument()
    if not has_visible_text(doc.text):
        raise errors.EmptyDocument("文件里只有空白或不可见字符（如零宽字符），没有可以索引的文字。")
    return doc
