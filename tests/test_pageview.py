"""The page view finds a quote on its PDF page whatever PDFium's per-character text looks like.

PDFs typeset with math fonts (chemistry handouts: 「△𝐻=𝑄」) have characters outside the BMP, which
PDFium reports as two character indices (a surrogate pair), and a hyphen at a line end becomes
U+0002; the parser's document text has one 𝑄 and a "-" there. A quote holding either used to open
the page with no box (「未能在页面上定位引用句」)."""
from __future__ import annotations

import pypdfium2 as pdfium
import pytest

from fixtures import make_pdf_text_layer
from services.documents.pageview import _page_chars, map_to_page_chars, render_pdf_page
from services.documents.parsing import parse_pdf

LINES = [
    "热化学方程式",
    "在配平完的方程式后写上“△𝐻=𝑄”，其中𝑄代表放出或吸收的热量。",
    "放热反应，𝑄<0；吸热反应，𝑄>0。",
    "只有杂原子、碳-",
    "碳键和立体化学特征表现出来。",
]


@pytest.fixture()
def chemistry(tmp_path):
    data = make_pdf_text_layer(LINES)
    path = tmp_path / "chemistry.pdf"
    path.write_bytes(data)
    return path, parse_pdf(data, "chemistry.pdf")


def _page_text(path):
    pdf = pdfium.PdfDocument(str(path))
    textpage = pdf[0].get_textpage()
    try:
        return _page_chars(textpage)
    finally:
        textpage.close()
        pdf.close()


@pytest.mark.parametrize("quote, lines", [
    ("其中𝑄代表放出或吸收的热量。", 1),  # math italics: a surrogate pair per character on the page
    ("放热反应，𝑄<0；", 1),
    ("只有杂原子、碳-碳键和立体化学特征表现出来。", 2),  # the hyphen ends the line (PDFium's U+0002)
], ids=["math-italic", "formula", "line-end-hyphen"])
def test_quote_with_formula_or_line_end_hyphen_is_boxed(chemistry, quote, lines):
    path, doc = chemistry
    start = doc.text.find(quote)
    assert start >= 0, doc.text
    image = render_pdf_page(path, doc.text, doc.pages, 1, [(start, start + len(quote))])
    assert image.found and len(image.boxes) == lines  # one box per line the quote is on
    chars = _page_text(path)
    indices = map_to_page_chars(doc.text, doc.pages[0], chars, start, start + len(quote))
    assert "".join(chars[i] for i in indices) == quote


def test_page_characters_read_as_the_parser_reads_them(chemistry):
    path, doc = chemistry
    chars = _page_text(path)
    assert "".join(chars.split()) == "".join(doc.text.split())


def test_quote_found_through_alignment_when_the_texts_differ(chemistry):
    """A document text that disagrees with the page here and there (parsed by another extractor
    version: 𝑄 read as Q, the U+0002 hyphen dropped) still gets its quote boxed, by aligning the two
    texts; a quote that is mostly not on the page is not boxed."""
    path, doc = chemistry
    text = doc.text.replace("𝑄", "Q").replace("碳-碳", "碳碳")
    chars = _page_text(path)
    span = type(doc.pages[0])(1, 0, len(text))
    quote = "其中Q代表放出或吸收的热量。\n放热反应，Q<0；"
    start = text.find(quote)
    indices = map_to_page_chars(text, span, chars, start, start + len(quote))
    got = "".join(chars[i] for i in indices)
    assert got == quote.replace("Q", "").replace("\n", "")  # every character the page has, in order
    # a passage of the same length that the page does not hold
    other = text[:start] + "某物质名称代表此物质为催化剂反应条件均以文字标明" + text[start + len(quote):]
    span = type(doc.pages[0])(1, 0, len(other))
    assert map_to_page_chars(other, span, chars, start, start + len(quote)) == []
