"""More formats (issue 11 items 6, 9, 10): .xlsx sheets and .pptx slides as pages, OCR of scanned
PDF pages, CJK line wraps and quote boundaries. Fixtures are generated here (openpyxl,
python-pptx, reportlab + pypdfium2 + Pillow); OCR tests use one small page."""
from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from fixtures import ZH_PARAGRAPHS, make_pdf
from services import errors
from services.documents.chunking import ChunkingConfig
from services.documents.parsing import PageSpan, SUPPORTED_EXTENSIONS, parse


# --- fixtures -------------------------------------------------------------------------------
def make_xlsx(sheets: dict[str, list[list]]) -> bytes:
    """A workbook with one sheet per item, rows as given (None = empty cell)."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def make_pptx(slides: list[dict]) -> bytes:
    """A deck: each slide dict may have title, body (lines), notes, table (rows), group (texts)."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for spec in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1 if "body" in spec else 5])
        if "title" in spec:
            slide.shapes.title.text = spec["title"]
        if "body" in spec:
            slide.placeholders[1].text = "\n".join(spec["body"])
        if "table" in spec:
            rows = spec["table"]
            table = slide.shapes.add_table(len(rows), len(rows[0]), Inches(1), Inches(4), Inches(6), Inches(1)).table
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
        if "group" in spec:
            group = slide.shapes.add_group_shape()
            for i, text in enumerate(spec["group"]):
                group.shapes.add_textbox(Inches(1), Inches(5 + i * 0.5), Inches(4), Inches(0.4)).text_frame.text = text
        if "notes" in spec:
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


STAFF = [
    ["2023年员工名单"],
    ["姓名", "部门", "电话", "入职日期", "工资"],
    ["张三", "研发部", "13800000001", dt.datetime(2020, 3, 1), 12000.0],
    ["李四", None, "13800000002", dt.datetime(2021, 5, 6, 9, 30), 9500.5],
]


# --- item 9: XLSX ---------------------------------------------------------------------------
def test_xlsx_and_pptx_are_supported_extensions():
    assert ".xlsx" in SUPPORTED_EXTENSIONS and ".pptx" in SUPPORTED_EXTENSIONS


def test_xlsx_rows_under_their_header_and_sheets_are_pages():
    doc = parse(make_xlsx({"员工": STAFF, "空表": [], "产品": [["产品", "价格", "上市"], ["问道", 0.1 + 0.2, True]]}),
                "staff.xlsx")
    lines = doc.text.split("\n")
    assert lines[:5] == ["工作表：员工", "2023年员工名单", "姓名 | 部门 | 电话 | 入职日期 | 工资",
                         "张三 | 研发部 | 13800000001 | 2020-03-01 | 12000",
                         # an empty cell keeps its place; a time of day is kept; no "None", no "9500.5000001"
                         "李四 |  | 13800000002 | 2021-05-06 09:30:00 | 9500.5"]
    assert "问道 | 0.3 | TRUE" in lines
    # sheet number = page; the empty sheet is skipped like a blank PDF page, and said so
    assert [p.page for p in doc.pages] == [1, 3] and doc.skipped_pages == [2]
    assert doc.page_at(doc.text.index("张三")) == 1 and doc.page_at(doc.text.index("问道")) == 3
    assert doc.text[doc.pages[1].start:doc.pages[1].end].startswith("工作表：产品")
    assert any("工作表" in w and "2" in w for w in doc.warnings)


def test_xlsx_header_is_repeated_through_a_long_sheet():
    """Every stretch of HEADER_EVERY characters of rows starts with the column names, so a chunk
    from the middle of the sheet still says which value is which (bench/xlsx_rows.py)."""
    from services.documents.office import HEADER_EVERY

    header = ["姓名", "部门", "电话"]
    rows = [header] + [[f"员工{i:03d}", "研发部", f"138{i:08d}"] for i in range(200)]
    lines = parse(make_xlsx({"员工": rows}), "long.xlsx").text.split("\n")
    assert lines[1] == "姓名 | 部门 | 电话" and lines.count("姓名 | 部门 | 电话") > 10
    run = 0
    for line in lines[2:]:
        run = 0 if line == "姓名 | 部门 | 电话" else run + len(line) + 1
        assert run <= HEADER_EVERY + len(line) + 1
    assert sum(line.startswith("员工") for line in lines) == 200  # every row once


def test_xlsx_padded_to_column_xfd_is_capped(monkeypatch):
    """A sheet with a value in column XFD costs one cell per column of every row: the cell cap stops
    it with a Chinese message instead of running on."""
    from services.documents import office

    monkeypatch.setattr(office, "MAX_SHEET_CELLS", 50_000)
    rows = [["甲"] + [None] * 16382 + ["乙"] for _ in range(10)]
    with pytest.raises(errors.DocumentTooLong, match="单元格太多"):
        parse(make_xlsx({"宽表": rows}), "wide.xlsx")


def test_xlsx_text_is_capped_by_the_document_budget(monkeypatch):
    monkeypatch.setenv("WENDAO_MAX_DOC_CHARS", "2000")
    rows = [["编号", "内容"]] + [[i, "长江是中国第一大河" * 3] for i in range(500)]
    with pytest.raises(errors.DocumentTooLong):
        parse(make_xlsx({"长表": rows}), "long.xlsx")


@pytest.mark.parametrize("name", ["bad.xlsx", "bad.pptx"])
def test_office_garbage_and_zip_bombs_are_refused_in_chinese(name):
    kind = name.rsplit(".", 1)[1].upper()
    with pytest.raises(errors.CorruptFile, match=kind):
        parse(b"PK\x03\x04 this is not really a zip file", name)
    with pytest.raises(errors.CorruptFile, match=kind):  # a zip, but not a workbook / deck
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("hello.txt", "你好")
        parse(buf.getvalue(), name)
    buf = io.BytesIO()  # 20 MB of zeros in about 20 KB
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("xl/sharedStrings.xml" if kind == "XLSX" else "ppt/slides/slide1.xml", "w") as f:
            block = b"\0" * (1 << 20)
            for _ in range(20):
                f.write(block)
    with pytest.raises(errors.FileTooLarge, match=kind):
        parse(buf.getvalue(), name)
    with pytest.raises(errors.EncryptedOrLegacyOffice, match="加密"):  # password-protected = OLE file
        parse(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, name)


def test_xlsx_without_any_values_is_empty():
    with pytest.raises(errors.EmptyDocument, match="工作表"):
        parse(make_xlsx({"一": [], "二": [[None, None]]}), "empty.xlsx")


# --- item 9: PPTX ---------------------------------------------------------------------------
def test_pptx_slides_in_order_with_titles_tables_groups_and_notes():
    data = make_pptx([
        {"title": "第一章 长江", "body": ["长江是中国第一大河。", "全长约六千三百公里。"], "notes": "讲到这里停顿一下。"},
        {},  # a slide with nothing on it
        {"title": "第二章 黄河", "table": [["河流", "长度"], ["黄河", "5464公里"]], "group": ["黄河流域是中华文明的发源地之一。"]},
    ])
    doc = parse(data, "rivers.pptx")
    first = doc.text[doc.pages[0].start:doc.pages[0].end]
    assert first.split("\n") == ["第一章 长江", "长江是中国第一大河。", "全长约六千三百公里。", "备注：讲到这里停顿一下。"]
    third = doc.text[doc.pages[1].start:doc.pages[1].end]
    assert third.split("\n") == ["第二章 黄河", "河流 | 长度", "黄河 | 5464公里", "黄河流域是中华文明的发源地之一。"]
    assert [p.page for p in doc.pages] == [1, 3] and doc.skipped_pages == [2]
    assert doc.page_at(doc.text.index("5464")) == 3 and doc.page_count == 3


def test_xlsx_and_pptx_pages_reach_citations(lib, kb):
    """An answer's citation says the sheet / slide number the quote is on."""
    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.index.ingest import ingest_bytes
    from services.search.retrieval import Retriever

    filler = [["编号", "说明"]] + [[i, f"第{i}行记录的普通说明文字"] for i in range(3)]
    xlsx = make_xlsx({"说明": filler, "员工": STAFF})
    pptx = make_pptx([{"title": "目录", "body": ["本次汇报分为三个部分。"]},
                      {"title": "珠穆朗玛峰", "body": [ZH_PARAGRAPHS[2]]}])
    config = ChunkingConfig("sentence", 60, 0)
    assert ingest_bytes(lib, kb, xlsx, "staff.xlsx", config).status == "ok"
    assert ingest_bytes(lib, kb, pptx, "talk.pptx", config).status == "ok"
    retriever = Retriever(lib, kb)
    answer = answer_question(retriever, LLMSettings(), "张三的电话是多少？")
    cited = [c for c in answer.citations if "13800000001" in c.quote]
    assert cited and cited[0].doc == "staff.xlsx" and cited[0].page == 2
    answer = answer_question(retriever, LLMSettings(), "珠穆朗玛峰海拔多少米？")
    cited = [c for c in answer.citations if "八千八百" in c.quote]
    assert cited and cited[0].doc == "talk.pptx" and cited[0].page == 2


# --- PageSpan stays backwards compatible ----------------------------------------------------
def test_page_span_from_old_json_rows():
    """SQLite rows written before the OCR flag existed build PageSpans as before."""
    span = PageSpan(**{"page": 2, "start": 0, "end": 5})
    assert span.page == 2 and span.ocr is False


# --- item 10: OCR of scanned pages ----------------------------------------------------------
def _bench_ocr():
    """bench/ocr.py (the scanned-page generator and the accuracy measure)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location("bench_ocr", bench / "ocr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text_then_scanned_page(bench) -> bytes:
    """Page 1 with a text layer, page 2 a small scanned image of bench.SMALL_TEXT."""
    import pypdfium2 as pdfium

    merged = pdfium.PdfDocument(make_pdf([ZH_PARAGRAPHS[1]]))
    scanned = pdfium.PdfDocument(bench.make_scanned_pdf([bench.SMALL_TEXT], width=300, height=100, chars_per_line=20))
    merged.import_pages(scanned)
    buf = io.BytesIO()
    merged.save(buf)
    return buf.getvalue()


# Measured with bench/ocr.py: 1.000 on this page and 0.995 on a full A4 page (150 dpi scans).
OCR_MIN_ACCURACY = 0.9


@pytest.fixture
def ocr_ready(monkeypatch):
    monkeypatch.delenv("WENDAO_OCR", raising=False)
    from services.documents import ocr

    if ocr.engine() is None:
        pytest.fail(f"OCR should be installed with the project: {ocr.unavailable_reason()}")
    return ocr


def test_scanned_page_is_ocrd_keeps_its_page_and_is_marked(ocr_ready):
    bench = _bench_ocr()
    doc = parse(_text_then_scanned_page(bench), "mixed.pdf")
    assert [(p.page, p.ocr) for p in doc.pages] == [(1, False), (2, True)] and doc.skipped_pages == []
    scanned = doc.text[doc.pages[1].start:doc.pages[1].end]
    assert bench.char_accuracy(bench.SMALL_TEXT, scanned) >= OCR_MIN_ACCURACY
    assert "大河，全长" in scanned  # one line wraps into the next with no space between CJK characters
    assert doc.page_at(doc.text.index("珠穆朗玛峰")) == 2 and doc.page_at(doc.text.index("黄河")) == 1
    assert any("OCR" in w and "2" in w for w in doc.warnings)


def test_ocr_flag_is_stored_with_the_document(ocr_ready, lib, kb):
    from services.index.ingest import ingest_bytes

    bench = _bench_ocr()
    result = ingest_bytes(lib, kb, _text_then_scanned_page(bench), "mixed.pdf")
    assert result.status == "ok"
    assert [(s.page, s.ocr) for s in lib.store.page_spans(kb.id, result.doc_id)] == [(1, False), (2, True)]


def test_without_ocr_scanned_pages_are_skipped_with_the_reason(monkeypatch):
    from services.documents import ocr

    bench = _bench_ocr()
    data = _text_then_scanned_page(bench)
    monkeypatch.setenv("WENDAO_OCR", "0")
    doc = parse(data, "mixed.pdf")
    assert doc.skipped_pages == [2] and [p.page for p in doc.pages] == [1]
    assert any("未做 OCR" in w and "WENDAO_OCR=0" in w for w in doc.warnings)
    # the package missing (or OpenCV failing to load) reads the same way, in Chinese
    monkeypatch.delenv("WENDAO_OCR")
    monkeypatch.setitem(__import__("sys").modules, "rapidocr_onnxruntime", None)
    monkeypatch.setattr(ocr, "_engine", None)
    monkeypatch.setattr(ocr, "_engine_error", None)
    doc = parse(data, "mixed.pdf")
    assert doc.skipped_pages == [2] and any("未安装" in w for w in doc.warnings)
    with pytest.raises(errors.NoExtractableText, match="请先做 OCR"):
        parse(bench.make_scanned_pdf([bench.SMALL_TEXT], width=300, height=100), "scan.pdf")


def test_blank_pages_cost_no_ocr(monkeypatch):
    """A page with nothing to read (no image, no text objects) is never rendered for OCR."""
    from services.documents import ocr

    monkeypatch.setattr(ocr, "recognise", lambda image: pytest.fail("a blank page was OCR'd"))
    with pytest.raises(errors.NoExtractableText):
        parse(make_pdf(["", ""]), "blank.pdf")


def test_ocr_lines_are_rebuilt_from_boxes():
    boxes = [  # two lines, the second given first and split in two boxes; a low-confidence speck
        ([[10, 50], [90, 50], [90, 70], [10, 70]], "第二行左", 0.99),
        ([[100, 52], [200, 52], [200, 72], [100, 72]], "第二行右", 0.98),
        ([[10, 10], [200, 10], [200, 30], [10, 30]], "First line", 0.97),
        ([[300, 10], [400, 10], [400, 30], [300, 30]], "continues", 0.97),
        ([[5, 90], [8, 90], [8, 93], [5, 93]], "~", 0.2),
    ]
    from services.documents.ocr import lines_from_boxes

    assert lines_from_boxes(boxes) == "First line continues\n第二行左第二行右"


# --- item 6: CJK line wraps and quote boundaries --------------------------------------------
def _hit(text: str, start: int = 100, doc: str = "d.pdf", page: int = 1):
    from services.documents.chunking import Chunk
    from services.search.retrieval import Hit

    chunk = Chunk(0, start, start + len(text), text, page, page, id=7, doc_id="x")
    return Hit(chunk, doc, start, start + len(text), text, page, page, chunk_ids=[7])


def test_wrapped_cjk_pdf_lines_join_without_spaces():
    """make_pdf wraps every 35 characters; the joined text reads as the paragraphs did."""
    text = "".join(ZH_PARAGRAPHS)
    doc = parse(make_pdf([text]), "wrapped.pdf")
    assert doc.text == text  # no "描述 各种" spaces, no leftover line breaks inside sentences


def test_extractive_quotes_start_and_end_at_sentence_boundaries():
    from services.answers.extractive import extractive_answer

    # the passage starts mid-sentence (chunk cut), and a sentence goes on after a closing quote
    passage = ("，各种方法都试过了。记者问道：“长江有多长？”，专家回答说长江全长约六千三百公里。"
               "黄河是中国第二长河。")
    text, picks = extractive_answer("长江全长多少公里？", [_hit(passage)])
    assert picks, text
    for p in picks:
        assert p.text[0] not in "，、；：。？”" and p.text == passage[p.start - 100:p.end - 100]
    quote = next(p.text for p in picks if "六千三百" in p.text)
    assert quote == "记者问道：“长江有多长？”，专家回答说长江全长约六千三百公里。"
    assert "\n，" not in text and "[1]" in text


def test_llm_citation_quotes_start_at_a_sentence():
    from services.answers.citations import map_citations

    passage = "，前一句的后半截。他问“为什么？”，大家回答说长江全长约六千三百公里。"
    [citation] = map_citations("长江全长约六千三百公里[1]。", [_hit(passage)])
    assert citation.quote == "他问“为什么？”，大家回答说长江全长约六千三百公里。"
    assert citation.quote == passage[citation.start - 100:citation.end - 100]
    [citation] = map_citations("前一句说的是后半截[1]。", [_hit(passage)])
    assert citation.quote.startswith("前一句的后半截。")  # not "，前一句…"


def test_citation_of_a_scanned_page_says_it_was_ocrd(ocr_ready, data_dir):
    """The chat's page view of a quote from an OCR'd page says the text was recognised by OCR."""
    from test_ui_everyday import app, ask, click

    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("扫描", create=True)
    data = _text_then_scanned_page(_bench_ocr())
    assert ingest_bytes(lib, kb, data, "scan.pdf", ChunkingConfig("sentence", 40, 0)).status == "ok"
    at = app("chat")
    ask(at, "珠穆朗玛峰海拔多少米？")
    chip = next(b.label for b in at.button if b.label.startswith("\\[1\\]"))
    assert "第2页" in chip
    click(at, chip)
    assert any(c.value.startswith("原文 第2页") and "OCR 识别" in c.value for c in at.caption)
