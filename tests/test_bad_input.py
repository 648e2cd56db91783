"""The bad-input battery (issue 9): hostile and careless files, all generated here.

Each file gives a correct document or a clear Chinese reason (a typed DocumentError, never a
library's English text), failures leave the knowledge base unchanged, and parsing stays within
bounded memory (peak RSS measured in a subprocess, at sizes small enough for CI but large enough
that the old code — python-docx trees, whole-file decodes — blew past the bounds).
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from fixtures import ZH_PARAGRAPHS, make_docx, make_pdf, make_zip_bomb_docx
from services import errors
from services.documents.parsing import parse

ROOT = Path(__file__).resolve().parent.parent
TEXT = "".join(ZH_PARAGRAPHS)
TRADITIONAL = "臺灣是一個位於東亞的島嶼，這裡的人們說國語與臺灣話。馬祖列島距離中國大陸最近點約九公里。"


# --- generators -----------------------------------------------------------------------------
def png_bytes(width: int = 64, height: int = 64) -> bytes:
    """A real (random-pixel) PNG image."""
    rnd = random.Random(7)
    raw = b"".join(b"\x00" + rnd.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encrypted_pdf(password: str, algorithm: str) -> bytes:
    """make_pdf's text PDF encrypted by pypdf with `algorithm` (RC4-40, RC4-128, AES-128, AES-256)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([ZH_PARAGRAPHS[0]]))))
    writer.encrypt(user_password=password, owner_password="owner-pw", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zero_page_pdf() -> bytes:
    from pypdf import PdfWriter

    out = io.BytesIO()
    PdfWriter().write(out)
    return out.getvalue()


W_NS = b"http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOC_HEAD = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="' + W_NS + b'"><w:body>'
DOC_TAIL = b"<w:sectPr/></w:body></w:document>"
RELS = (b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
        b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
CONTENT_TYPES = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                 b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
                 b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
                 b'"/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
                 b'document.main+xml"/></Types>')


def docx_package(body_parts, lie_file_size: int | None = None, lie_compress_size: int | None = None) -> bytes:
    """A minimal DOCX whose document.xml is DOC_HEAD + body_parts + DOC_TAIL, streamed into the zip
    (so huge XML is never held at once). `lie_*` overwrite the sizes that the zip's local header and
    central directory announce for document.xml."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", RELS)
        with archive.open("word/document.xml", "w") as f:
            f.write(DOC_HEAD)
            for part in body_parts:
                f.write(part)
            f.write(DOC_TAIL)
    raw = bytearray(buf.getvalue())
    name = b"word/document.xml"
    for signature, compress_at, size_at, name_at in ((b"PK\x03\x04", 18, 22, 30), (b"PK\x01\x02", 20, 24, 46)):
        pos = raw.find(signature)
        while pos >= 0:
            if raw[pos + name_at:pos + name_at + len(name)] == name:
                if lie_compress_size is not None:
                    struct.pack_into("<I", raw, pos + compress_at, lie_compress_size)
                if lie_file_size is not None:
                    struct.pack_into("<I", raw, pos + size_at, lie_file_size)
            pos = raw.find(signature, pos + 4)
    return bytes(raw)


def paragraphs_xml(megabytes: float, inner: str = "<w:r><w:t>第{}段：长江是中国第一大河。</w:t></w:r>") -> object:
    """Body XML of about `megabytes` MB: one short paragraph (`inner`, numbered) after another."""
    size = 0
    i = 0
    while size < megabytes * 1024 * 1024:
        part = f"<w:p>{inner.format(i)}</w:p>".encode()
        size += len(part)
        i += 1
        yield part


# A paragraph as Word writes it: style, spacing and run properties around a little text.
VERBOSE = ('<w:pPr><w:pStyle w:val="Normal"/><w:spacing w:after="0" w:line="360"/></w:pPr><w:r><w:rPr>'
           '<w:rFonts w:ascii="SimSun" w:eastAsia="SimSun" w:hAnsi="SimSun"/><w:sz w:val="24"/></w:rPr>'
           '<w:t>第{}段，长江。</w:t></w:r>')


def one_paragraph_xml(megabytes: float) -> object:
    """Body XML of about `megabytes` MB in a single paragraph of one-character runs."""
    yield b"<w:p>"
    runs = [f"<w:r><w:t>{chr(0x4e00 + i)}</w:t></w:r>".encode() for i in range(3000)]
    for i in range(int(megabytes * 1024 * 1024 / len(runs[0]))):
        yield runs[(i * 7919) % len(runs)]
    yield b"</w:p>"


# --- the battery ----------------------------------------------------------------------------
def _ok(expected: str):
    return ("ok", expected)


BATTERY = {
    # PDFs
    "corrupt.pdf": (lambda: b"%PDF-1.7\n" + random.Random(1).randbytes(3000), errors.CorruptFile),
    "truncated.pdf": (lambda: make_pdf([TEXT])[:300], errors.CorruptFile),
    "rc4-40-empty-pw.pdf": (lambda: encrypted_pdf("", "RC4-40"), _ok("长江是中国第一大河")),
    "rc4-128-empty-pw.pdf": (lambda: encrypted_pdf("", "RC4-128"), _ok("长江是中国第一大河")),
    "aes-128-empty-pw.pdf": (lambda: encrypted_pdf("", "AES-128"), _ok("长江是中国第一大河")),
    "aes-256-empty-pw.pdf": (lambda: encrypted_pdf("", "AES-256"), _ok("长江是中国第一大河")),
    "rc4-40-password.pdf": (lambda: encrypted_pdf("secret", "RC4-40"), errors.EncryptedPDF),
    "rc4-128-password.pdf": (lambda: encrypted_pdf("secret", "RC4-128"), errors.EncryptedPDF),
    "aes-256-password.pdf": (lambda: encrypted_pdf("secret", "AES-256"), errors.EncryptedPDF),
    "no-pages.pdf": (zero_page_pdf, errors.EmptyDocument),
    "scanned.pdf": (lambda: make_pdf(["", ""]), errors.NoExtractableText),
    "not-a-pdf.pdf": (lambda: TEXT.encode(), errors.CorruptFile),
    # binary content behind a text extension
    "photo.png.txt": (png_bytes, errors.BinaryContent),
    "archive.txt": (lambda: zlib.compress(random.Random(2).randbytes(50_000)), errors.BinaryContent),
    "page.html": (png_bytes, errors.BinaryContent),
    "nul-padded.txt": (lambda: ("正文内容。" * 20).encode() + b"\x00" * 200_000, errors.BinaryContent),
    "only-nul.txt": (lambda: b"\x00" * 5000, errors.BinaryContent),
    "utf16-bom-binary.txt": (lambda: b"\xff\xfe" + random.Random(3).randbytes(20_000), errors.BinaryContent),
    "zero-width.txt": (lambda: ("\u200b\u200c\u200d\u2060\ufeff" * 400).encode(), errors.EmptyDocument),
    "zero-width-utf16.txt": (lambda: ("\u200b \u200d\n" * 300).encode("utf-16"), errors.EmptyDocument),
    "blank.md": (lambda: b" \n\t\r\n ", errors.EmptyDocument),
    # encodings
    "gbk.txt": (lambda: TEXT.encode("gbk"), _ok(TEXT)),
    "big5.txt": (lambda: TRADITIONAL.encode("big5"), _ok(TRADITIONAL)),
    "utf16.txt": (lambda: TEXT.encode("utf-16"), _ok(TEXT)),
    "utf16le-no-bom.txt": (lambda: ("Chapter 1 " + TEXT).encode("utf-16-le"), _ok("Chapter 1 " + TEXT)),
    "utf8-bom.txt": (lambda: TEXT.encode("utf-8-sig"), _ok(TEXT)),
    # archives
    "honest-bomb.docx": (lambda: make_zip_bomb_docx(40), errors.FileTooLarge),
    "lying-small-size.docx": (lambda: docx_package(paragraphs_xml(2), lie_file_size=1000), errors.CorruptFile),
    "lying-compressed-size.docx": (lambda: docx_package(paragraphs_xml(2), lie_compress_size=50_000_000),
                                   errors.CorruptFile),
    "not-a-zip.docx": (lambda: b"PK\x03\x04 not really a zip", errors.CorruptFile),
    "password.docx": (lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + random.Random(4).randbytes(4000),
                      errors.EncryptedOrLegacyOffice),
    "zip-without-document.docx": (lambda: _zip({"hello.txt": b"hi"}), errors.CorruptFile),
    "dtd.docx": (lambda: _zip({"word/document.xml": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]>'
                               b'<w:document xmlns:w="' + W_NS + b'"><w:body><w:p><w:r><w:t>&a;</w:t></w:r>'
                               b'</w:p></w:body></w:document>'}), errors.UnsafeXml),
    "small-docx-big-xml.docx": (lambda: docx_package(paragraphs_xml(3)), _ok("第0段：长江是中国第一大河。")),
    "table.docx": (make_docx, _ok("北京 | 2189万")),
    # other
    "script.html": (lambda: b"<html><body><p>\xe6\xad\xa3\xe6\x96\x87\xe3\x80\x82</p><script>alert(document.cookie)"
                    b"</script><img src=x onerror=alert(1)></body></html>", _ok("正文。")),
    "../../etc/passwd.txt": (lambda: TEXT.encode(), _ok(TEXT)),
    "..\\..\\windows\\win.ini.txt": (lambda: TEXT.encode(), _ok(TEXT)),
    "virus.exe": (lambda: b"MZ\x90\x00", errors.UnsupportedFileType),
}


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


# A message users read: Chinese, and none of a library's English (exception names, errno text).
_ENGLISH_ERROR = re.compile(r"[A-Z][a-z]+(Error|Exception)\b|No such file|Errno|Traceback|[A-Za-z]{12,}")


def assert_chinese_reason(message: str) -> None:
    assert re.search(r"[\u4e00-\u9fff]{4}", message), message
    assert not _ENGLISH_ERROR.search(message), message


@pytest.mark.parametrize("name", list(BATTERY))
def test_battery_file_gives_document_or_chinese_reason(name):
    make, expected = BATTERY[name]
    data = make()
    if isinstance(expected, tuple):
        doc = parse(data, name)
        assert expected[1] in doc.text
        assert doc.pages and all(0 <= p.start <= p.end <= len(doc.text) for p in doc.pages)
    else:
        with pytest.raises(expected) as caught:
            parse(data, name)
        assert type(caught.value) is expected
        assert_chinese_reason(caught.value.message_zh)


def test_failures_leave_the_knowledge_base_unchanged(lib, kb):
    from services.index.ingest import ingest_bytes

    first = ingest_bytes(lib, kb, TEXT.encode(), "rivers.txt")
    assert first.status == "ok"
    before = ([d.id for d in lib.store.list_documents(kb.id)], lib.store.count_chunks(kb.id))
    failing = [name for name, (_, expected) in BATTERY.items() if not isinstance(expected, tuple)]
    for name in failing:
        result = ingest_bytes(lib, kb, BATTERY[name][0](), name)
        assert result.status == "failed", name
        assert_chinese_reason(result.reason)
    assert ([d.id for d in lib.store.list_documents(kb.id)], lib.store.count_chunks(kb.id)) == before


def test_traversal_like_names_are_indexed_and_write_nothing_outside(lib, kb, tmp_path):
    from services.index.ingest import ingest_bytes

    outside = set(tmp_path.parent.iterdir())
    result = ingest_bytes(lib, kb, TEXT_B.encode(), "../../etc/passwd.txt")
    assert result.status == "ok" and result.chunks >= 1
    assert set(tmp_path.parent.iterdir()) == outside
    assert not (tmp_path.parent.parent / "etc" / "passwd.txt").exists()


TEXT_B = "太阳系有八大行星。木星是太阳系中体积最大的行星。土星以其美丽的光环而闻名。"


# --- sizes ----------------------------------------------------------------------------------
def test_size_limit_uses_one_unit(monkeypatch):
    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "200")
    from services.documents.parsing import check_size

    check_size(200 * 1024 * 1024)  # exactly at the limit: accepted
    with pytest.raises(errors.FileTooLarge) as caught:
        check_size(210 * 1024 * 1024)
    assert "上限 200 MB" in caught.value.message_zh and "210 MB" in caught.value.message_zh
    with pytest.raises(errors.FileTooLarge) as caught:
        check_size(200 * 1024 * 1024 + 1)  # just over: bytes, not "200 MB > 200 MB"
    assert "209,715,201 字节" in caught.value.message_zh


def test_over_and_near_limit_files(monkeypatch):
    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "0.01")  # 10,485 bytes
    limit = int(0.01 * 1024 * 1024)
    line = "长江是中国第一大河。\n".encode()
    near = (line * (limit // len(line) + 1))[:limit - 1] + b"\n"
    assert parse(near, "near.txt").text.startswith("长江")
    with pytest.raises(errors.FileTooLarge) as caught:
        parse(near + b"x", "over.txt")
    assert "上限 0.01 MB" in caught.value.message_zh
    assert_chinese_reason(caught.value.message_zh)


def test_ingest_paths_checks_size_before_reading(lib, kb, tmp_path, monkeypatch):
    from services.index.ingest import ingest_paths

    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "200")
    big = tmp_path / "huge.txt"
    with open(big, "wb") as f:  # sparse: 3 GB announced, nothing on disk
        f.truncate(3 * 1024 ** 3)
    read = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or real_read_bytes(self))
    report = ingest_paths(lib, kb, [big, tmp_path / "missing.txt"])
    too_big, missing = report.results
    assert too_big.status == "failed" and "上限 200 MB" in too_big.reason and big not in read
    assert missing.status == "failed" and "文件不存在" in missing.reason
    for result in report.results:
        assert_chinese_reason(result.reason)


# --- bounded memory (peak RSS in a subprocess) --------------------------------------------------
CHILD = r"""
import json, resource, sys


def peak_mb():
    # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's at fork time)
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

for module in ("lxml.etree", "docx", "bs4", "html.parser", "pypdfium2", "charset_normalizer"):
    try:
        __import__(module)
    except ImportError:
        pass
from services import errors
from services.documents.parsing import parse
data = open(sys.argv[1], "rb").read()
before = peak_mb()
try:
    doc = parse(data, sys.argv[2])
    outcome = {"chars": len(doc.text)}
except errors.WendaoError as exc:
    outcome = {"error": type(exc).__name__, "message": exc.message_zh}
outcome["growth_mb"] = peak_mb() - before
print(json.dumps(outcome))
"""


def parse_in_subprocess(path: Path, name: str, **env: str) -> dict:
    """Parse a file in a fresh interpreter; returns the outcome and the peak-RSS growth in MB."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), name], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # peak memory of a parse in a child process (issue 18 item 9: memory tests are slow)
def test_small_docx_with_huge_xml_parses_in_bounded_memory(tmp_path):
    path = tmp_path / "big-xml.docx"
    path.write_bytes(docx_package(paragraphs_xml(8, VERBOSE)))  # ~8 MB of Word-like XML in ~100 KB
    assert path.stat().st_size < 1024 * 1024
    outcome = parse_in_subprocess(path, "big-xml.docx")
    assert outcome.get("chars", 0) > 400_000, outcome
    assert outcome["growth_mb"] < 40, outcome  # python-docx's tree: 111 MB here (2.1 GB for 60 MB)


@pytest.mark.slow  # peak memory of a parse in a child process (issue 18 item 9: memory tests are slow)
def test_one_giant_paragraph_is_capped_in_bounded_memory(tmp_path):
    path = tmp_path / "one-paragraph.docx"
    path.write_bytes(docx_package(one_paragraph_xml(8)))
    outcome = parse_in_subprocess(path, "one-paragraph.docx", WENDAO_MAX_DOC_CHARS="100000")
    assert outcome.get("error") == "DocumentTooLong", outcome
    assert_chinese_reason(outcome["message"])
    assert outcome["growth_mb"] < 60, outcome


@pytest.mark.slow  # peak memory of a parse in a child process (issue 18 item 9: memory tests are slow)
def test_lying_zip_directory_never_inflates_past_what_it_announces(tmp_path):
    # 100 MB of XML (~100 KB compressed) announced as 1,000 bytes: zipfile.read() inflates the
    # whole stream in one call before it truncates and fails the CRC check.
    path = tmp_path / "lying.docx"
    path.write_bytes(docx_package((b"<w:p/>" * 10_000 for _ in range(100 * 1024 * 1024 // 60_000)),
                                  lie_file_size=1000))
    outcome = parse_in_subprocess(path, "lying.docx")
    assert outcome.get("error") == "CorruptFile", outcome
    assert_chinese_reason(outcome["message"])
    assert outcome["growth_mb"] < 50, outcome


@pytest.mark.slow  # peak memory of a parse in a child process (issue 18 item 9: memory tests are slow)
def test_html_of_many_tiny_elements_parses_in_bounded_memory(tmp_path):
    path = tmp_path / "tags.html"
    path.write_bytes(b"<html><body>" + b"<i>x</i>" * 200_000 + b"</body></html>")  # 1.6 MB
    outcome = parse_in_subprocess(path, "tags.html")
    assert outcome.get("chars", 0) >= 200_000 * 2 - 1, outcome
    assert outcome["growth_mb"] < 60, outcome  # a BeautifulSoup tree: ~150 bytes per byte of tags


@pytest.mark.slow  # peak memory of a parse in a child process (issue 18 item 9: memory tests are slow)
def test_large_text_file_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "big.txt"
    line = (TEXT + "\n").encode("gbk")
    with open(path, "wb") as f:
        for _ in range(30 * 1024 * 1024 // len(line)):
            f.write(line)
    outcome = parse_in_subprocess(path, "big.txt")  # 30 MB of GBK: over 5 million characters
    assert outcome.get("error") == "DocumentTooLong", outcome
    assert_chinese_reason(outcome["message"])
    assert outcome["growth_mb"] < 30, outcome


def test_docx_stream_reader_keeps_structure():
    """The streaming DOCX reader: tabs, line breaks, hyperlinks and insertions kept; deleted text and
    text boxes (repeated in fallbacks) dropped; merged cells repeated; nested tables inside their cell."""
    def p(*runs: str) -> bytes:
        return ("<w:p>" + "".join(runs) + "</w:p>").encode()

    def r(text: str) -> str:
        return f"<w:r><w:t>{text}</w:t></w:r>"

    def tc(inner: str, merge: str = "") -> str:
        return f"<w:tc><w:tcPr>{merge}</w:tcPr>{inner}</w:tc>"

    body = [
        p(r("第一章"), "<w:r><w:tab/><w:t>总则</w:t></w:r>"),
        p("<w:hyperlink>" + r("链接文字") + "</w:hyperlink>", r("之后"), "<w:r><w:br/><w:t>换行</w:t></w:r>"),
        p("<w:r><w:pict><w:txbxContent>" + p(r("文本框")).decode() + "</w:txbxContent></w:pict></w:r>", r("正文")),
        p("<w:del><w:r><w:delText>删掉</w:delText></w:r></w:del>", "<w:ins>" + r("插入") + "</w:ins>"),
        ("<w:tbl><w:tr>" + tc(p(r("华北")).decode(), '<w:vMerge w:val="restart"/>') + tc(p(r("北京")).decode())
         + "</w:tr><w:tr>" + tc("<w:p/>", "<w:vMerge/>")
         + tc(p(r("天津")).decode() + "<w:tbl><w:tr>" + tc(p(r("内")).decode()) + tc(p(r("表")).decode())
              + "</w:tr></w:tbl>")
         + "</w:tr></w:tbl>").encode(),
        p(r("表后")),
    ]
    doc = parse(docx_package(body), "structure.docx")
    assert doc.text.split("\n") == ["第一章\t总则", "链接文字之后", "换行", "正文", "插入",
                                    "华北 | 北京", "华北 | 天津 内 | 表", "表后"]


def test_unforeseen_library_failure_becomes_a_chinese_reason(monkeypatch, caplog):
    from services.documents import parsing

    def broken(data, filename):
        raise KeyError("/Root object missing in /tmp/secret/path")

    monkeypatch.setitem(parsing.PARSERS, ".pdf", broken)
    with pytest.raises(errors.CorruptFile) as caught:
        parse(b"%PDF-1.4 whatever", "x.pdf")
    assert_chinese_reason(caught.value.message_zh)
    assert "/tmp" not in caught.value.message_zh and "KeyError" in caplog.text  # logged server-side


def test_stray_nul_bytes_are_dropped_from_text():
    doc = parse(TEXT.encode() + b"\x00" + TEXT.encode(), "stray.txt")
    assert "\x00" not in doc.text and doc.text == TEXT + TEXT
