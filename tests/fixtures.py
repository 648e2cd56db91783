"""Generated test documents (no files from ../shared): PDFs, DOCX, encodings, bombs."""
from __future__ import annotations

import io
from pathlib import Path
import zipfile

ZH_PARAGRAPHS = [
    "长江是中国第一大河，全长约六千三百公里。它发源于青藏高原，流经十一个省级行政区，最后注入东海。",
    "黄河是中国第二长河，被称为中华民族的母亲河。黄河流域是中华文明最主要的发源地之一。",
    "珠穆朗玛峰是世界最高峰，海拔八千八百四十八点八六米，位于中国与尼泊尔边境。",
]


def make_pdf(pages: list[str], encrypt_password: str | None = None) -> bytes:
    """A text PDF with Chinese text (reportlab's built-in STSong-Light CID font), one string per page.
    An empty string makes a page with no text (like a scanned page without OCR)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for text in pages:
        c.setFont("STSong-Light", 12)
        y = 800
        for i in range(0, len(text), 35):
            c.drawString(40, y, text[i:i + 35])
            y -= 18
        if not text:
            c.rect(50, 50, 400, 600, fill=1)  # an "image" and no text
        c.showPage()
    c.save()
    data = buf.getvalue()
    if encrypt_password is not None:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
        writer.encrypt(user_password=encrypt_password, owner_password="owner")
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    return data


def make_pdf_text_layer(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer says exactly `lines` (any Unicode, non-BMP included; at most
    91 distinct characters): each character is drawn as an ASCII glyph of the standard Helvetica font
    and the font's ToUnicode map says which character it is, as PDFs typeset with math fonts (𝑄, 𝐻)
    do. PDFium reports a non-BMP character as two character indices and a hyphen that ends a line
    (before a letter on the next) as U+0002, as it does for real chemistry handouts."""
    codes = [c for c in map(chr, range(0x21, 0x7F)) if c not in "()\\"]
    table = {}
    for line in lines:
        for ch in line:
            if ch != " " and ch not in table:
                table[ch] = codes[len(table)]
    body = ["BT /F1 14 Tf 18 TL 50 780 Td"]
    for line in lines:
        body.append("(" + "".join(" " if ch == " " else table[ch] for ch in line) + ") Tj T*")
    body.append("ET")
    content = "\n".join(body).encode("latin-1")
    utf16 = {ch: ch.encode("utf-16-be").hex().upper() for ch in table}
    cmap = ("/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
            "/CMapName /Mapped def /CMapType 2 def\n1 begincodespacerange <00> <FF> endcodespacerange\n"
            f"{len(table) + 1} beginbfchar\n<20> <0020>\n"
            + "".join(f"<{ord(code):02X}> <{utf16[ch]}>\n" for ch, code in table.items())
            + "endbfchar\nendcmap CMapName currentdict /CMap defineresource pop end end\n").encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_docx(heading: str = "第一章 总则", paragraphs=None, table=None) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(heading, level=1)
    for p in paragraphs or ZH_PARAGRAPHS[:2]:
        d.add_paragraph(p)
    rows = table or [["城市", "人口"], ["北京", "2189万"], ["上海", "2487万"]]
    t = d.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            t.cell(r, c).text = value
    d.add_paragraph("表格之后的段落。")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_zip_bomb_docx(megabytes: int = 40) -> bytes:
    """A 'DOCX' whose document.xml inflates to `megabytes` MB of zeros (compresses ~1000x)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w") as f:
            block = b"\0" * (1024 * 1024)
            for _ in range(megabytes):
                f.write(block)
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serving(command: list[str], port: int, env: dict, cwd, health: str = "/_stcore/health", wait_s: float = 120):
    """Start `command` (a server on 127.0.0.1:`port`) and wait until `health` answers; (process, URL).
    Fails the test with the server's output when it does not come up."""
    import subprocess
    import time
    import urllib.request

    import pytest

    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + health, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)  # the server is up within ~0.1 s of answering, not up to 0.5 s later
    proc.kill()
    pytest.fail("server did not start: " + proc.stdout.read().decode(errors="replace")[-3000:])


def stop(proc) -> None:
    """Terminate a server started by `serving` (hard after 20 s: a busy machine, a worker mid-write)."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def serve_geography(data, docs):
    """`wendao serve` (a real process on 127.0.0.1, no LLM) over the KB 地理资料 of the three geography
    paragraphs, ingested by the CLI into `data`; yields the URL (browser tests of pages; use as a
    module fixture's body: `yield from serve_geography(data, docs)`)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    for i, text in enumerate(ZH_PARAGRAPHS):
        (docs / f"地理{i + 1}.txt").write_text(text * 3, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data), "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "",
           "WENDAO_LLM_MODEL": ""}
    subprocess.run([sys.executable, "-m", "services", "ingest", "--kb", "地理资料", str(docs)], cwd=root, env=env,
                   check=True, capture_output=True)
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, root)
    yield url
    stop(proc)
