"""Offline OCR of scanned PDF pages: pages without a usable text layer are rendered and recognised.

Engine: rapidocr-onnxruntime (Apache-2.0), which ships PaddleOCR's PP-OCRv4 Chinese detection and
recognition models (Apache-2.0) inside its wheel, so it works with no network. It is optional at
run time: when the package (or OpenCV / ONNX Runtime under it) cannot be imported, `PageReader`
reads nothing and scanned pages are skipped as before, with the reason in Chinese.

Only pages that hold something to read are recognised (an image, text objects whose text is
garbage, or many vector paths such as outlined glyphs): a blank page or one that is a single
filled rectangle costs nothing. Pages are rendered at OCR_SCALE (144 dpi, 12 pt text ~24 px high),
the longest side capped at MAX_SIDE pixels. Recognised boxes are put back into lines top to
bottom, each line left to right, with no space between CJK characters. The text is marked as OCR
output (PageSpan.ocr, a document warning), so citations can say the quote may hold misread
characters. Accuracy on a rendered page of known text: bench/ocr.py.

WENDAO_OCR=0 switches OCR off; WENDAO_OCR_MAX_PAGES (default 100) caps the pages recognised per
document (a page takes seconds on a small CPU), later scanned pages are skipped and listed;
WENDAO_OCR_THREADS sets ONNX Runtime's threads (default 1).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

OCR_SCALE = 2.0
MAX_SIDE = 2000  # pixels; rapidocr shrinks larger images itself, so rendering more is wasted
MIN_PATHS = 50  # vector paths on a page that may be outlined text
MIN_SCORE = 0.5  # recognition confidence below which a box is dropped as noise
# Text detection runs on the page shrunk to this longest side (RapidOCR's default instead scales the
# shortest side up to 736 px: a 600 x 200 px strip became 2208 x 736 and took 10x longer).
DET_SIDE = 1280
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")

_engine = None
_engine_error: str | None = None
_engine_lock = threading.Lock()  # loading once; one recognition at a time (2 cores are shared)


def enabled() -> bool:
    """OCR is on unless WENDAO_OCR is 0/false/off/no."""
    return os.environ.get("WENDAO_OCR", "1").strip().lower() not in {"0", "false", "off", "no"}


def max_pages() -> int:
    """Most pages recognised per document (WENDAO_OCR_MAX_PAGES, default 100)."""
    return max(0, int(float(os.environ.get("WENDAO_OCR_MAX_PAGES", "100"))))


def threads() -> int:
    """ONNX Runtime threads per model (WENDAO_OCR_THREADS, default 1): on a small shared CPU one
    thread was faster than all cores (no spinning threads fighting the embedder and the UI)."""
    return max(1, int(os.environ.get("WENDAO_OCR_THREADS", "1")))


def engine():
    """The shared RapidOCR engine, loaded once per process; None (with `unavailable_reason()`
    set) when OCR is switched off or its packages cannot be imported."""
    global _engine, _engine_error
    if not enabled():
        return None
    with _engine_lock:
        if _engine is None and _engine_error is None:
            try:
                from rapidocr_onnxruntime import RapidOCR

                _engine = RapidOCR(det_limit_type="max", det_limit_side_len=DET_SIDE, intra_op_num_threads=threads())
            except Exception as exc:  # ImportError, or OpenCV's libGL / ONNX Runtime failing to load
                log.warning("OCR unavailable: %s", exc)
                _engine_error = "未安装或无法加载 OCR 组件 rapidocr-onnxruntime"
        return _engine


def unavailable_reason() -> str | None:
    """Why OCR cannot run now, in Chinese; None when it can."""
    if not enabled():
        return "OCR 已关闭，WENDAO_OCR=0"
    return None if engine() is not None else _engine_error


def lines_from_boxes(results) -> str:
    """RapidOCR results [(box, text, score)] as text: boxes whose vertical centres fall inside one
    another's height form a line, read left to right; lines top to bottom. Neighbouring pieces are
    joined without a space when either side is CJK, with one space between Latin words."""
    boxes = []
    for box, text, score in results or []:
        text = str(text).strip()
        if not text or float(score) < MIN_SCORE:
            continue
        ys, xs = [p[1] for p in box], [p[0] for p in box]
        boxes.append((min(ys), max(ys), min(xs), text))
    boxes.sort(key=lambda b: (b[0] + b[1]) / 2)
    lines: list[list[tuple]] = []
    for box in boxes:
        centre = (box[0] + box[1]) / 2
        if lines:
            top, bottom = min(b[0] for b in lines[-1]), max(b[1] for b in lines[-1])
            if top <= centre <= bottom and box[0] <= (top + bottom) / 2 <= box[1]:
                lines[-1].append(box)
                continue
        lines.append([box])
    out = []
    for line in lines:
        pieces = [b[3] for b in sorted(line, key=lambda b: b[2])]
        text = pieces[0]
        for piece in pieces[1:]:
            glue = "" if _CJK.match(text[-1]) or _CJK.match(piece[0]) else " "
            text += glue + piece
        out.append(text)
    return "\n".join(out)


def recognise(image) -> str:
    """Text of one page image (an H x W x 3 uint8 array in BGR order, as OpenCV reads images)."""
    ocr = engine()
    if ocr is None:
        return ""
    with _engine_lock:
        results, _ = ocr(image)
    return lines_from_boxes(results)


def page_has_content(page) -> bool:
    """Whether a PDF page holds anything OCR could read: an image, text objects (their text layer
    was garbage), or many vector paths (text converted to outlines)."""
    import pypdfium2.raw as pdfium_c

    paths = 0
    for obj in page.get_objects():
        if obj.type in (pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_TEXT):
            return True
        if obj.type == pdfium_c.FPDF_PAGEOBJ_PATH:
            paths += 1
            if paths >= MIN_PATHS:
                return True
    return False


def render_page(page):
    """The page as a BGR array at OCR_SCALE, longest side at most MAX_SIDE pixels."""
    import numpy as np

    width, height = page.get_size()
    scale = min(OCR_SCALE, MAX_SIDE / max(1.0, width, height))
    bitmap = page.render(scale=scale)
    try:
        image = np.array(bitmap.to_numpy(), copy=True)  # the bitmap's buffer is freed on close
    finally:
        bitmap.close()
    return image[:, :, :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)


@dataclass
class PageReader:
    """Reads the scanned pages of one open PDF: `read(number)` returns the recognised text of page
    `number` (1-based), or None when the page has nothing to read, OCR is unavailable or the
    per-document cap was reached. PDFium calls happen under `lock` (PDFium is not thread-safe);
    recognition runs outside it, so other threads can render and parse PDFs meanwhile."""

    pdf: object
    lock: threading.Lock
    recognised: list[int] = field(default_factory=list)
    over_cap: list[int] = field(default_factory=list)  # scanned pages past WENDAO_OCR_MAX_PAGES
    not_read: list[int] = field(default_factory=list)  # scanned pages left unread: OCR unavailable

    def read(self, number: int) -> str | None:
        with self.lock:
            try:
                page = self.pdf[number - 1]
            except Exception as exc:  # a page PDFium cannot load is skipped, as its text was
                log.info("PDF page %d unreadable for OCR: %s", number, exc)
                return None
            try:
                if not page_has_content(page):
                    return None
                if engine() is None:  # loaded on the first scanned page, not for text PDFs
                    self.not_read.append(number)
                    return None
                if len(self.recognised) >= max_pages():
                    self.over_cap.append(number)
                    return None
                image = render_page(page)
            finally:
                page.close()
        self.recognised.append(number)
        try:
            return recognise(image)
        except Exception as exc:  # one page failing to recognise does not lose the document
            log.warning("OCR failed on page %d: %s", number, exc)
            return None
