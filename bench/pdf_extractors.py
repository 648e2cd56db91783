"""PDF text extractors compared under the same post-processing (issue 9 item 5).

pypdf (the old parser), pypdfium2 (PDFium; the current parser) and pdfplumber (pdfminer.six)
each give page texts; every one then goes through services.documents.parsing.pdf_document (character
folding, layout line-wrap joining, page spans), so the columns measure the extractor:

  rows_ok        generated reportlab tables: share of rows whose cells sit on one line, in order,
                 with no other row's cell on that line ("首都，政治文化中心上海" is a glued row)
  pages_ok       generated 40-page PDF: share of per-page markers that page_at() puts on their page
  order_ok       the MinerU mind-map sample (multi-column): share of six multi-line sentences
                 found intact (a reading-order probe)
  answers_ok     generated CMRC/DRCD PDFs: share of gold answers found verbatim in the text
  source_8grams  same PDFs: share of the source passages' 8-grams (NFKC, whitespace removed)
                 found in the extracted text (fidelity: nothing lost, nothing garbled)
  extra_spaces   same PDFs + sample: spaces between two CJK characters or digits, per 1,000
                 characters, beyond those in the source (pypdf's "6 个碳原⼦", "200 7年")
  split_numbers  a hard-wrapped PDF of the CMRC trial documents (35 characters a line, so numbers
                 and Latin words break across lines): "digit space digit" sequences beyond those in
                 the source (the old pypdf pipeline gave "200 7年")
  ms_page_gen    extraction time per page of the generated 40-page PDF (reportlab, CJK font
                 not embedded; PDFium spends ~20 ms per document finding a substitute font)
  ms_page_real   the same for the MinerU sample (embedded fonts, 1 dense A3-sized page)

    python bench/pdf_extractors.py [--samples ../shared/data/upload_samples]
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import re
import sys
import time
import unicodedata
from pathlib import Path

from common import ROOT, SHARED, table

sys.path.insert(0, str(ROOT / "tests"))

from services.documents.parsing import pdf_document  # noqa: E402

PROBES = [  # sentences that wrap over 2-5 lines inside one box of the mind map
    "又称化学反应式、化学反应方程式，是用化学式来描述各种物质之间的不同化学反应的式子（类似于数学公式，注意特殊符号表达）",
    "各反应物与各生成物之间用“+”号连接，读作“和”，在反应物与生成物之间用“→”连接，读作“生成”",
    "是用元素符号及各元素个数表示物质（单质、化合物）分子的组成、该物质分子量的化学式；分子式仅能表示一个分子所含每种原子的数目，并不能表明分子的结构。",
    "对化合物来说，它们的分子式是最简式的整数倍，或者说分子量是最简式的整数倍。仅当分子量和最简式式量相同时，最简式才和分子式相同，这时最简式就是分子式。",
    "表示简化结构式的化学式称为示性式，所以一般用来表示有机物。结构简式通常包括烃基及官能团两部分。",
    "注意：实验式并不能区分最简整数比相同的几种化学物质，更不能解释结构或区分同分异构体",
]
TABLES = [
    [["城市", "简介"], ["北京", "首都，政治文化中心"], ["上海", "经济中心，人口2487万"], ["广州", "华南门户"],
     ["深圳", "科技创新城市"]],
    [["年份", "营业收入（亿元）", "同比增长"], ["2019年", "1,234.5", "3.2%"], ["2020年", "1,301.7", "5.4%"],
     ["2021年", "1,456.0", "11.9%"], ["2022年", "1,502.3", "3.2%"]],
    [["河流", "长度", "流经省份"], ["长江", "约6300公里", "青海、西藏、四川、云南、重庆、湖北、湖南、江西、安徽、江苏、上海"],
     ["黄河", "约5464公里", "青海、四川、甘肃、宁夏、内蒙古、山西、陕西、河南、山东"], ["珠江", "约2320公里", "云南、贵州、广西、广东"]],
]
_SPACED_DIGITS = re.compile(r"\d[ \t]+\d")
_CJK_OR_DIGIT_GAP = re.compile(r"(?<=[\u4e00-\u9fff0-9])[ \t]+(?=[\u4e00-\u9fff0-9])")


# --- extractors: bytes -> page texts ----------------------------------------------------------
def pages_pypdf(data: bytes) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def pages_pypdfium2(data: bytes) -> list[str]:
    from services.documents.parsing import _open_pdf, _pdf_page_text

    pdf = _open_pdf(data)
    try:
        return [_pdf_page_text(pdf, i) for i in range(len(pdf))]
    finally:
        pdf.close()


def pages_pdfplumber(data: bytes) -> list[str]:
    import pdfplumber

    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return [page.extract_text() or "" for page in pdf.pages]


EXTRACTORS = {"pypdf": pages_pypdf, "pypdfium2": pages_pypdfium2, "pdfplumber": pages_pdfplumber}


# --- generated inputs -------------------------------------------------------------------------
def table_pdf(rows: list[list[str]]) -> bytes:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import SimpleDocTemplate, Table

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    SimpleDocTemplate(buf).build([Table(rows, style=[("FONT", (0, 0), (-1, -1), "STSong-Light", 10)])])
    return buf.getvalue()


def paged_pdf(pages: int = 40) -> tuple[bytes, list[str]]:
    from fixtures import ZH_PARAGRAPHS, make_pdf

    markers = [f"第{n}页专属标记{chr(0x4e00 + 97 * n)}" for n in range(1, pages + 1)]
    texts = [m + "。" + "".join(ZH_PARAGRAPHS) * 4 for m in markers]
    return make_pdf(texts), markers


def wrapped_pdf(samples: Path) -> tuple[bytes, str] | None:
    """The CMRC trial documents set 35 characters a line by make_pdf (1,540 a page), and their text."""
    from fixtures import make_pdf

    docs = sorted((samples.parent / "cmrc2018_trial" / "docs").glob("*.txt"))
    if not docs:
        return None
    text = "".join(d.read_text(encoding="utf-8").replace("\n", "") for d in docs)
    return make_pdf([text[i:i + 1540] for i in range(0, len(text), 1540)]), text


def squash(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def rows_ok(text: str, rows: list[list[str]]) -> tuple[int, int]:
    """Rows found as one line holding exactly that row's cells, in order."""
    lines = {tuple(line.split()) for line in text.split("\n")}
    return sum(tuple(row) in lines for row in rows), len(rows)


def qa_pdfs(samples: Path) -> list[tuple[Path, list[str], list[str]]]:
    """(pdf, source passages, gold answers) for the generated CMRC/DRCD upload samples."""
    out = []
    for folder in sorted((samples / "generated").glob("*")):
        questions = folder / "questions.jsonl"
        if not questions.exists():
            continue
        by_doc: dict[str, tuple[set, list]] = {}
        for line in questions.read_text(encoding="utf-8").splitlines():
            q = json.loads(line)
            passages, answers = by_doc.setdefault(Path(q["doc_file"]).stem, (set(), []))
            passages.add(q["context_text"])
            answers.extend(a for a in q["answers"] if a.strip())
        for stem, (passages, answers) in sorted(by_doc.items()):
            pdf = folder / f"{stem}.pdf"
            if pdf.exists():
                out.append((pdf, sorted(passages), answers))
    return out


def measure(name: str, extract, samples: Path) -> dict:
    pages_total, seconds = 0, 0.0

    def run(data: bytes, filename: str):
        nonlocal pages_total, seconds
        start = time.perf_counter()
        page_texts = extract(data)
        seconds += time.perf_counter() - start
        pages_total += len(page_texts)
        return pdf_document(filename, page_texts)

    good = total = 0
    for rows in TABLES:
        g, t = rows_ok(run(table_pdf(rows), "table.pdf").text, rows)
        good, total = good + g, total + t
    row_share = good / total

    data, markers = paged_pdf()
    seconds_before = seconds
    doc = run(data, "paged.pdf")
    ms_gen = 1000 * (seconds - seconds_before) / len(markers)
    pages_ok = sum(doc.page_at(doc.text.find(m)) == n for n, m in enumerate(markers, start=1) if m in doc.text)

    sample = samples / "mineru_chemical_symbols_zh.pdf"
    extra = chars = 0
    order = 0.0
    ms_real = 0.0
    if sample.exists():
        seconds_before = seconds
        text = run(sample.read_bytes(), sample.name).text
        ms_real = 1000 * (seconds - seconds_before)
        order = sum(squash(p) in squash(text) for p in PROBES) / len(PROBES)
        extra += len(_CJK_OR_DIGIT_GAP.findall(text))
        chars += len(text)

    found = answers_total = grams_found = grams_total = 0
    for pdf, passages, answers in qa_pdfs(samples):
        text = run(pdf.read_bytes(), pdf.name).text
        found += sum(a in text for a in answers)
        answers_total += len(answers)
        flat = squash(text)
        for passage in passages:
            source = squash(passage)
            grams = [source[i:i + 8] for i in range(0, max(1, len(source) - 7))]
            grams_found += sum(g in flat for g in grams)
            grams_total += len(grams)
        extra += max(0, len(_CJK_OR_DIGIT_GAP.findall(text)) - sum(len(_CJK_OR_DIGIT_GAP.findall(p)) for p in passages))
        chars += len(text)
    split_numbers = "-"
    wrapped = wrapped_pdf(samples)
    if wrapped:
        text = run(wrapped[0], "wrapped.pdf").text
        split_numbers = len(_SPACED_DIGITS.findall(text)) - len(_SPACED_DIGITS.findall(wrapped[1]))
    return {
        "extractor": name,
        "rows_ok": f"{good}/{total} ({row_share:.0%})",
        "pages_ok": f"{pages_ok}/{len(markers)}",
        "order_ok": f"{order:.0%}",
        "answers_ok": f"{found}/{answers_total}" if answers_total else "-",
        "source_8grams": grams_found / grams_total if grams_total else 0.0,
        "extra_spaces": round(1000 * extra / max(1, chars), 2),
        "split_numbers": split_numbers,
        "ms_page_gen": round(ms_gen, 1),
        "ms_page_real": round(ms_real, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=Path, default=SHARED / "data" / "upload_samples")
    args = parser.parse_args()
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    if not args.samples.exists():
        print(f"(no samples at {args.samples}: only the generated PDFs are measured; set WENDAO_SHARED or --samples)")
    rows = []
    for name, extract in EXTRACTORS.items():
        extract(table_pdf(TABLES[0]))  # warm-up (imports, font caches)
        rows.append(measure(name, extract, args.samples))
    print(table(rows))


if __name__ == "__main__":
    main()
