"""Bytes + filename -> ParsedDocument: the document's text and which page each part is on.

One parser function per format, registered in PARSERS by extension; a new format is one new
function. Parsers raise the typed errors of services.errors, never library exceptions.

PDF: pypdf (pure Python, no native dependency, honours ToUnicode maps so CJK fonts extract
correctly, detects encryption). Pages whose text is empty or mostly garbage (scanned images, broken
font maps) are reported in `skipped_pages` instead of being indexed as mojibake.
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Callable

from services import errors
from services.config import max_file_bytes
from services.text import fold_chars, join_wrapped_lines

PAGE_SEPARATOR = "\n\n"


@dataclass
class PageSpan:
    """Text [start, end) of the document text is on page `page` (1-based)."""

    page: int
    start: int
    end: int


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


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode text bytes, returning (text, encoding). Never raises on undecodable bytes.

    Order: BOM -> strict UTF-8 -> BOM-less UTF-16 (many NUL bytes) -> the better of GB18030 and
    Big5 by share of common Chinese characters -> charset-normalizer's guess -> UTF-8 with
    replacement characters.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding.replace("-sig", ""), errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if data[:4000].count(b"\x00") > len(data[:4000]) // 4:
        even_nuls = data[0:4000:2].count(b"\x00")
        odd_nuls = data[1:4000:2].count(b"\x00")
        encoding = "utf-16-le" if odd_nuls >= even_nuls else "utf-16-be"
        return data.decode(encoding, errors="replace"), encoding
    candidates = []
    for encoding in ("gb18030", "big5"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        common = sum(1 for ch in text if ch in _COMMON_ZH)
        candidates.append((common, encoding, text))
    if candidates:
        _, encoding, text = max(candidates, key=lambda c: c[0])
        return text, encoding
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        return str(best), best.encoding
    return data.decode("utf-8", errors="replace"), "utf-8 (lossy)"


def parse_text(data: bytes, filename: str) -> ParsedDocument:
    text, encoding = decode_text(data)
    return ParsedDocument(filename, text, [PageSpan(1, 0, len(text))], encoding=encoding)


# --- HTML -----------------------------------------------------------------------------------
def parse_html(data: bytes, filename: str) -> ParsedDocument:
    """Visible text only: script/style/template/noscript and comments are dropped."""
    from bs4 import BeautifulSoup, Comment

    raw, encoding = decode_text(data)
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "template", "noscript", "head", "svg"]):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return ParsedDocument(filename, text, [PageSpan(1, 0, len(text))], encoding=encoding)


# --- PDF ------------------------------------------------------------------------------------
_GOOD_CHAR = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbfA-Za-z0-9\s，。！？；：、“”‘’（）《》—…,.!?;:()\-%]")


def is_garbage(text: str) -> bool:
    """True for text that is empty or mostly not language (broken font maps, binary noise)."""
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) < 2:
        return True
    good = sum(1 for ch in visible if _GOOD_CHAR.match(ch))
    bad = sum(1 for ch in visible if ch == "\ufffd" or 0xE000 <= ord(ch) <= 0xF8FF or ord(ch) < 32)
    return good / len(visible) < 0.6 or bad / len(visible) > 0.1


def parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise errors.EncryptedPDF()
        pages = list(reader.pages)
    except errors.WendaoError:
        raise
    except Exception as exc:  # pypdf raises many types for broken files
        if "encrypt" in str(exc).lower() or "password" in str(exc).lower():
            raise errors.EncryptedPDF() from exc
        raise errors.CorruptFile(f"PDF 文件已损坏，无法读取：{type(exc).__name__}") from exc
    doc = ParsedDocument(filename, "")
    parts: list[str] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        try:
            page_text = join_wrapped_lines(fold_chars(page.extract_text() or "")).strip()
        except (PdfReadError, Exception):
            page_text = ""
        if is_garbage(page_text):
            doc.skipped_pages.append(number)
            continue
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        parts.append(page_text)
        doc.pages.append(PageSpan(number, offset, offset + len(page_text)))
        offset += len(page_text)
    doc.text = "".join(parts)
    if not pages:
        raise errors.EmptyDocument("PDF 没有任何页面。")
    if not doc.pages:
        raise errors.NoExtractableText(
            f"PDF 共 {len(pages)} 页，但没有可提取的文字（可能是扫描件或字体损坏），请先做 OCR。")
    if doc.skipped_pages:
        doc.warnings.append(f"以下页面没有可用文字，已跳过：{', '.join(map(str, doc.skipped_pages))}")
    return doc


# --- DOCX -----------------------------------------------------------------------------------
MAX_DOCX_UNCOMPRESSED = 300 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200


def check_zip_bomb(data: bytes) -> None:
    """Refuse archives that would expand to an absurd size (zip bombs) before opening them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise errors.CorruptFile("DOCX 文件已损坏（不是有效的 zip 包）。") from exc
    total = sum(info.file_size for info in infos)
    compressed = max(1, sum(info.compress_size for info in infos))
    if total > MAX_DOCX_UNCOMPRESSED or (total > 10 * 1024 * 1024 and total / compressed > MAX_COMPRESSION_RATIO):
        raise errors.FileTooLarge("DOCX 解压后体积异常巨大（疑似压缩炸弹），已拒绝。")


def parse_docx(data: bytes, filename: str) -> ParsedDocument:
    """Paragraphs and tables in body order; headings on their own line; table rows as `a | b`."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip_bomb(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise errors.CorruptFile("DOCX 文件已损坏或不是 Word 文档，无法读取。") from exc
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if text:
                lines.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = cell.text.strip().replace("\n", " ")
                    if not cells or cells[-1] != value:  # merged cells repeat
                        cells.append(value)
                if any(cells):
                    lines.append(" | ".join(cells))
    text = "\n".join(lines)
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
}
SUPPORTED_EXTENSIONS = sorted(PARSERS)


def parse(data: bytes, filename: str) -> ParsedDocument:
    """Parse an uploaded file; raises a services.errors.DocumentError subclass on bad input."""
    extension = PurePath(filename).suffix.lower()
    parser = PARSERS.get(extension)
    if parser is None:
        raise errors.UnsupportedFileType(
            f"不支持的文件类型「{extension or '无扩展名'}」。支持：{'、'.join(SUPPORTED_EXTENSIONS)}")
    limit = max_file_bytes()
    if len(data) > limit:
        raise errors.FileTooLarge(f"文件大小 {len(data) / 1e6:.1f} MB，超过上限 {limit / 1e6:.0f} MB。")
    if not data.strip():
        raise errors.EmptyDocument()
    doc = parser(data, filename)
    if not doc.text.strip():
        raise errors.EmptyDocument()
    return doc
