"""OCR accuracy on a scanned page of known Chinese text (issue 11 item 10).

A page of known text is typeset with reportlab (STSong-Light), rendered with pypdfium2 at the
scan resolution and saved by Pillow as an image-only PDF (no text layer, like a scanner's output).
That PDF goes through the real upload path (services.documents.parsing.parse -> services.documents.ocr), and the
recognised text is compared with the known text: character accuracy = 1 - CER, where CER is the
edit distance (insertions, deletions, substitutions) over the known text's length, whitespace
ignored and both sides folded the same way as PDF text (full-width forms, Kangxi radicals).
tests/test_formats.py runs one small page against a threshold measured here.

    python bench/ocr.py [--dpi 150] [--repeat 1]
"""
from __future__ import annotations

import argparse
import io
import re
import time

from common import table  # noqa: E402  (puts the repo root on sys.path)

from services.documents.text import fold_chars

TEXT = (
    "长江是中国第一大河，全长约六千三百公里。它发源于青藏高原，流经十一个省级行政区，最后注入东海。"
    "黄河是中国第二长河，被称为中华民族的母亲河。黄河流域是中华文明最主要的发源地之一。"
    "珠穆朗玛峰是世界最高峰，海拔八千八百四十八点八六米，位于中国与尼泊尔边境。"
    "二〇二三年，全国粮食总产量达到六千九百五十四亿公斤，比上年增长百分之一点三。"
    "合同双方应当按照约定全面履行自己的义务，不得擅自变更或者解除合同。"
)
SMALL_TEXT = "长江是中国第一大河，全长约六千三百公里。珠穆朗玛峰海拔八千八百四十八点八六米。"


def make_scanned_pdf(pages: list[str], width: float = 595, height: float = 842, font_size: float = 12,
                     chars_per_line: int = 35, dpi: int = 150) -> bytes:
    """An image-only PDF: each text typeset on a page of width x height points, rasterised at `dpi`
    and stored as a picture (no text layer), like a scanner's output."""
    import pypdfium2 as pdfium
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(width, height))
    for text in pages:
        c.setFont("STSong-Light", font_size)
        y = height - 2 * font_size
        for i in range(0, len(text), chars_per_line):
            c.drawString(font_size, y, text[i:i + chars_per_line])
            y -= 1.5 * font_size
        c.showPage()
    c.save()
    pdf = pdfium.PdfDocument(buf.getvalue())
    images = [pdf[i].render(scale=dpi / 72).to_pil().convert("L") for i in range(len(pdf))]
    pdf.close()
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out.getvalue()


def _comparable(text: str) -> str:
    return re.sub(r"\s+", "", fold_chars(text))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (one row at a time)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_accuracy(expected: str, recognised: str) -> float:
    """1 - CER over non-whitespace characters, floored at 0."""
    expected, recognised = _comparable(expected), _comparable(recognised)
    return max(0.0, 1 - edit_distance(expected, recognised) / max(1, len(expected)))


def measure(text: str, **page) -> dict:
    """Parse a scanned page of `text` through the upload path; accuracy, seconds, OCR flag."""
    from services.documents.parsing import parse

    data = make_scanned_pdf([text], **page)
    started = time.perf_counter()
    doc = parse(data, "scan.pdf")
    seconds = time.perf_counter() - started
    return {"chars": len(_comparable(text)), "accuracy": char_accuracy(text, doc.text), "seconds": seconds,
            "ocr_flag": all(p.ocr for p in doc.pages), "text": doc.text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dpi", type=int, nargs="*", default=[150, 200])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from services.documents import ocr

    started = time.perf_counter()
    if ocr.engine() is None:
        raise SystemExit(f"OCR unavailable: {ocr.unavailable_reason()}")
    print(f"engine load: {time.perf_counter() - started:.2f} s")
    rows = []
    for dpi in args.dpi:
        for name, text, page in [("A4 page, 12 pt", TEXT, {}),
                                 ("small page (test)", SMALL_TEXT, {"width": 300, "height": 100, "chars_per_line": 20})]:
            for _ in range(args.repeat):
                r = measure(text, dpi=dpi, **page)
                rows.append({"page": name, "scan dpi": dpi, "chars": r["chars"], "accuracy": r["accuracy"],
                             "seconds": r["seconds"], "ocr flag": r["ocr_flag"]})
                if r["accuracy"] < 1:
                    print(f"[{name}, {dpi} dpi] {r['text']!r}")
    print(table(rows))


if __name__ == "__main__":
    main()
