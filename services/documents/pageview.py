"""The page view: the original file at the cited spot.

For a PDF, the cited page is rendered with PDFium and the quoted sentence is highlighted from the
text page's character boxes. The parser (services.documents.parsing) built the document text from PDFium's page
text, folded (services.documents.text.fold_chars), with layout line wraps joined and each page stripped; so a
document offset maps to the page's character index by walking both texts over their non-blank
characters, which those steps never add, drop or reorder. The page's characters are read one PDFium
index at a time and made what the parser made of them: a character outside the Basic Multilingual
Plane (the math italics 𝐻 and 𝑄 of a chemistry formula) is two indices, a surrogate pair, joined into
one character; a line-end hyphen (U+0002) is a hyphen and a soft hyphen nothing (`PDFIUM_MARKS`).
Where the texts still disagree (a document parsed by another extractor version) the two are aligned
character by character and the quote follows the alignment. For other formats (DOCX, TXT, …) the
passage is shown in its surrounding document text (`context_window`).

Pure Python (no streamlit): the UI shows the PNG and draws nothing itself.
"""
from __future__ import annotations

import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

from services.documents.parsing import PDFIUM_LOCK, PDFIUM_MARKS, PageSpan
from services.documents.text import fold_chars

HIGHLIGHT_RGBA = (255, 214, 0, 110)
OUTLINE_RGB = (181, 71, 42)


@dataclass
class PageImage:
    """One rendered page: PNG bytes, its pixel size, and the highlight rectangles drawn on it
    (pixels, (left, top, right, bottom)). `found` is False when the quote could not be located on
    the page (the page is still shown, without a highlight)."""

    png: bytes
    width: int
    height: int
    page: int
    pages: int
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.boxes)


# The formats whose parsers record real pages (services.documents.parsing, office) and what a page is
# called there; the others (TXT, MD, CSV, HTML, DOCX) are one "page" 1 that a reader never sees.
PAGE_UNITS = {".pdf": "页", ".pptx": "张幻灯片", ".xlsx": "个工作表"}


def page_label(first: int, last: int | None = None, doc: str | None = None) -> str:
    """"第9页" or "第9–10页": one wording for a passage's pages everywhere (chips, details, dialog,
    exports, the lab, the CLI). Given the file name `doc`: slides and sheets are called so
    ("第3张幻灯片"), and a format without pages gives "" (a TXT has no 「第1页」)."""
    unit = "页" if doc is None else PAGE_UNITS.get(Path(str(doc)).suffix.lower())
    if unit is None:
        return ""
    last = first if last is None else last
    return f"第{first}{unit}" if last <= first else f"第{first}–{last}{unit}"


def has_pages(doc: object) -> bool:
    """Whether the file named `doc` has pages a reader sees (PDF pages, PPTX slides, XLSX sheets)."""
    return Path(str(doc)).suffix.lower() in PAGE_UNITS


def public_pages(data):
    """JSON for callers outside (CLI --json, the HTTP API): a copy of `data` (a hit, citation or source,
    or an answer, list or dict holding them) where every record naming a `doc` of a format without
    pages has `page` and `pages` null — inside, such a document is one page 1, which the README says
    nobody sees. The fields stay present; what the core stores (conversations) is unchanged."""
    if isinstance(data, list):
        return [public_pages(x) for x in data]
    if not isinstance(data, dict):
        return data
    out = {k: public_pages(v) for k, v in data.items()}
    if "doc" in out and not has_pages(out["doc"]):
        out.update({k: None for k in ("page", "pages") if k in out})
    return out


def _visible(text: str) -> list[int]:
    """Positions of the non-blank characters of `text`."""
    return [i for i, ch in enumerate(text) if not ch.isspace()]


def _page_chars(textpage) -> str:
    """The page's characters by PDFium index (one string position per character index), each what
    the parser made of it: a surrogate pair is one character at its first index and a blank at its
    second, PDFium's marks are translated as the parser translates them (a dropped one is a blank),
    and the text is folded like the document's."""
    import pypdfium2.raw as pdfium_c

    codes = [pdfium_c.FPDFText_GetUnicode(textpage.raw, i) for i in range(textpage.count_chars())]
    chars = []
    for i, code in enumerate(codes):
        if 0xD800 <= code < 0xDC00 and i + 1 < len(codes) and 0xDC00 <= codes[i + 1] < 0xE000:
            chars.append(chr(0x10000 + ((code - 0xD800) << 10) + (codes[i + 1] - 0xDC00)))
        elif 0xD800 <= code < 0xE000 or not 0 < code < 0x110000:
            chars.append(" ")  # the second half of a pair (or a lone half, or no character)
        else:
            ch = chr(code)
            chars.append(PDFIUM_MARKS.get(ch, ch) or " ")
    return fold_chars("".join(chars))


# Below this share of a quote's characters found in the aligned page text, the quote is not there.
MIN_ALIGNED = 0.8


def map_to_page_chars(doc_text: str, span: PageSpan, page_chars: str, start: int, end: int) -> list[int]:
    """PDFium character indices of document text [start, end) on the page `span` covers.

    The k-th non-blank character of the page's document text is the k-th non-blank character of
    PDFium's page text (see the module docstring); when the two disagree (an extractor change, a
    re-parse) the quote is searched for on the page, and failing that the two texts are aligned
    (difflib, runs of two or more characters) and the quote's characters that the alignment pairs are
    used, if they are at least `MIN_ALIGNED` of it. Returns [] when it is not there."""
    start, end = max(start, span.start), min(end, span.end)
    if start >= end:
        return []
    page_text = doc_text[span.start:span.end]
    doc_visible = _visible(page_text)
    pdf_visible = _visible(page_chars)
    wanted = [k for k, pos in enumerate(doc_visible) if start - span.start <= pos < end - span.start]
    if not wanted:
        return []
    if len(doc_visible) == len(pdf_visible) and all(
            page_text[doc_visible[k]] == page_chars[pdf_visible[k]] for k in (wanted[0], wanted[-1])):
        return [pdf_visible[k] for k in wanted]
    # the quote's non-blank characters verbatim in the page's, nearest the expected place
    needle = "".join(page_text[doc_visible[k]] for k in wanted)
    hay = "".join(page_chars[i] for i in pdf_visible)
    best, pos = None, hay.find(needle)
    while pos >= 0:
        if best is None or abs(pos - wanted[0]) < abs(best - wanted[0]):
            best = pos
        pos = hay.find(needle, pos + 1)
    if best is not None:
        return pdf_visible[best:best + len(needle)]
    # else align the page's document text with the page's text and follow the quote through it
    ours = "".join(page_text[i] for i in doc_visible)
    pairs = {}
    for a, b, size in difflib.SequenceMatcher(None, ours, hay, autojunk=False).get_matching_blocks():
        if size > 1:  # one character in common is no evidence of the same text
            pairs.update((a + j, b + j) for j in range(size))
    found = [pdf_visible[pairs[k]] for k in wanted if k in pairs]
    return found if len(found) >= MIN_ALIGNED * len(wanted) else []


def _line_boxes(char_boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """Character boxes (left, bottom, right, top in PDF points) merged into one box per line."""
    lines: list[list[float]] = []
    for left, bottom, right, top in char_boxes:
        if right <= left or top <= bottom:
            continue
        last = lines[-1] if lines else None
        # same line: vertical ranges overlap by at least half the smaller height
        if last and min(top, last[3]) - max(bottom, last[1]) >= 0.5 * min(top - bottom, last[3] - last[1]):
            last[0], last[1] = min(last[0], left), min(last[1], bottom)
            last[2], last[3] = max(last[2], right), max(last[3], top)
        else:
            lines.append([left, bottom, right, top])
    return [tuple(line) for line in lines]


def render_pdf_page(path: str | Path, doc_text: str, spans: list[PageSpan], page: int,
                    quotes: list[tuple[int, int]], scale: float = 1.6) -> PageImage:
    """Page `page` (1-based) of the PDF at `path` as a PNG, each document-text range in `quotes`
    that lies on this page highlighted (a translucent mark with an outline, one box per line)."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    span = next((s for s in spans if s.page == page), None)
    with PDFIUM_LOCK:  # PDFium is not thread-safe
        pdf = pdfium.PdfDocument(str(path))
        try:
            count = len(pdf)
            pg = pdf[min(max(page, 1), count) - 1]
            try:
                width_pt, height_pt = pg.get_size()
                left0, bottom0 = pg.get_mediabox()[:2] if hasattr(pg, "get_mediabox") else (0, 0)
                image = pg.render(scale=scale).to_pil().convert("RGBA")
                rects: list[tuple[float, float, float, float]] = []
                if span is not None:
                    textpage = pg.get_textpage()
                    try:
                        chars = _page_chars(textpage)
                        for start, end in quotes:
                            indices = map_to_page_chars(doc_text, span, chars, start, end)
                            rects.extend(_line_boxes([textpage.get_charbox(i) for i in indices]))
                    finally:
                        textpage.close()
            finally:
                pg.close()
        finally:
            pdf.close()
    boxes = []
    for left, bottom, right, top in rects:
        pad = 1.5
        boxes.append((int((left - left0 - pad) * scale), int((height_pt - (top - bottom0) - pad) * scale),
                      int((right - left0 + pad) * scale) + 1, int((height_pt - (bottom - bottom0) + pad) * scale) + 1))
    if boxes:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for box in boxes:
            draw.rectangle(box, fill=HIGHLIGHT_RGBA, outline=OUTLINE_RGB + (255,), width=2)
        image = Image.alpha_composite(image, overlay)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", optimize=False)
    return PageImage(out.getvalue(), image.width, image.height, page, count, boxes)


def context_window(doc_text: str, start: int, end: int, chars: int = 600) -> tuple[int, int]:
    """[a, b) of the text around [start, end): about `chars` characters either side, widened to
    paragraph (or, failing that, sentence) boundaries so the surrounding text reads naturally."""
    a, b = max(0, start - chars), min(len(doc_text), end + chars)
    if a > 0:
        cut = doc_text.find("\n", a, start)
        a = cut + 1 if cut >= 0 else a
    if b < len(doc_text):
        cut = doc_text.rfind("\n", end, b)
        b = cut if cut >= 0 else b
    return a, b


def focus_crop(image: PageImage, context_px: int = 140, pad_px: int = 24) -> bytes:
    """The rendered page cut down to the highlighted quote: the band from a few lines above the first
    box to a few lines below the last, trimmed to the inked width of that band (and, on a wide page, to the
    boxes' neighbourhood). A whole page scaled into
    the dialog makes the quote tiny and often far below the fold; this crop shows it readable at once
    (the whole page stays available beside it). b"" when nothing is boxed or the band is most of the page."""
    if not image.boxes:
        return b""
    from PIL import Image, ImageChops

    top = max(0, min(box[1] for box in image.boxes) - context_px)
    bottom = min(image.height, max(box[3] for box in image.boxes) + context_px)
    if bottom - top > 0.6 * image.height:
        return b""
    band = Image.open(io.BytesIO(image.png)).convert("RGB").crop((0, top, image.width, bottom))
    inked = ImageChops.difference(band, Image.new("RGB", band.size, "white")).getbbox() or (0, 0, band.width, 0)
    side = 3 * context_px  # a wide page (a poster, a mind map) is cut to the boxes' neighbourhood too
    left = max(inked[0] - pad_px, min(box[0] for box in image.boxes) - side, 0)
    right = min(inked[2] + pad_px, max(box[2] for box in image.boxes) + side, band.width)
    out = io.BytesIO()
    band.crop((left, 0, right, band.height)).save(out, format="PNG")
    return out.getvalue()
