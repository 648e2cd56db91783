"""Which way of writing spreadsheet rows retrieves best (issue 11 item 9).

A 300-row staff sheet (姓名, 部门, 电话, 城市, 入职年份; generated, seeded) is ingested once per row
format, and 100 questions ("X的电话是多少？", "X在哪个部门？", ...) are searched with BM25, dense
(the bundled e5) and hybrid retrieval. A hit is right when it holds the person's row with the
asked value. Formats: the header once with "a | b" rows; every cell labelled "列名：值"; and what
services/documents/office.py does: "a | b" rows with the header repeated every HEADER_EVERY characters.

    python bench/xlsx_rows.py [--questions 100]
"""
from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
import time

from common import table  # noqa: E402  (puts the repo root on sys.path)

from services.documents import office
from services.documents.chunking import ChunkingConfig


def staff_sheet(n: int = 300, seed: int = 7) -> tuple[bytes, list[list]]:
    import openpyxl

    rng = random.Random(seed)
    surnames, given = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰红"
    names: set[str] = set()
    while len(names) < n:
        names.add(rng.choice(surnames) + rng.choice(given) + rng.choice(given))
    rows = [[name, rng.choice(["研发部", "市场部", "财务部", "人事部", "销售部", "法务部"]), f"138{rng.randrange(10**8):08d}",
             rng.choice(["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安"]), rng.randrange(2005, 2024)]
            for name in sorted(names)]
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "员工"
    sheet.append(["姓名", "部门", "电话", "城市", "入职年份"])
    for row in rows:
        sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue(), rows


def questions(rows: list[list], count: int, seed: int = 7) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for name, dept, phone, city, year in rng.sample(rows, count):
        out.append(rng.choice([(f"{name}的电话是多少？", name, phone), (f"{name}在哪个部门？", name, dept),
                               (f"{name}在哪个城市工作？", name, city), (f"{name}哪一年入职？", name, str(year))]))
    return out


def header_once(rows, budget, cells):
    for row in rows:
        values = [office.cell_text(v) for v in row]
        if any(values):
            line = office.ROW_SEPARATOR.join(values)
            budget.add(len(line) + 1, 1)
            yield line


def labelled(rows, budget, cells):
    header = None
    for row in rows:
        values = [office.cell_text(v) for v in row]
        if not any(values):
            continue
        if header is None:
            header, line = values, office.ROW_SEPARATOR.join(values)
        else:
            line = office.ROW_SEPARATOR.join(f"{h}：{v}" for h, v in zip(header, values) if v)
        budget.add(len(line) + 1, 1)
        yield line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args()
    from services.index.ingest import ingest_bytes
    from services.index.library import Library
    from services.search.retrieval import Retriever

    data, rows = staff_sheet()
    asked = questions(rows, args.questions)
    results = []
    shipped = office.sheet_lines
    for name, lines in [("header once, a | b", header_once), ("every cell 列名：值", labelled),
                        (f"a | b, header every {office.HEADER_EVERY} chars (shipped)", shipped)]:
        office.sheet_lines = lines
        with tempfile.TemporaryDirectory() as folder:
            os.environ["WENDAO_DATA_DIR"] = folder
            lib = Library(folder)
            kb = lib.kb("rows", create=True)
            started = time.perf_counter()
            ingest_bytes(lib, kb, data, "staff.xlsx", ChunkingConfig("sentence", 300, 0))
            row = {"rows": name, "ingest s": time.perf_counter() - started}
            retriever = Retriever(lib, kb)
            for mode in ("bm25", "dense", "hybrid"):
                right = []
                for question, person, gold in asked:
                    hits = retriever.search(question, top_k=5, mode=mode).hits[:5]
                    right.append([person in h.text and gold in h.text.split(person, 1)[1][:60] for h in hits])
                row[f"{mode} R@1"] = sum(r[:1] == [True] for r in right) / len(right)
                row[f"{mode} R@5"] = sum(any(r) for r in right) / len(right)
            results.append(row)
            lib.close()
        office.sheet_lines = shipped
    print(table(results))


if __name__ == "__main__":
    main()
