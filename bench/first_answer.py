"""Time from upload to the first answerable question, and a 1,000-page PDF end to end.

A document is searchable by keywords as soon as it is parsed, chunked and written (services.index.ingest);
its vectors follow. This measures, per file, seconds until BM25 finds it (the "keywords" stage) and
until it is fully hybrid, and — for a generated 1,000-page Chinese PDF — wall time and the peak RSS
of the ingesting process (VmHWM, measured in a child process so this one does not count).

    python bench/first_answer.py [--docs 20] [--pages 1000]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATASETS, ROOT, table

CHILD = r"""
import json, sys, time
from pathlib import Path
from services.index.library import Library
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever
lib = Library(sys.argv[1]); kb = lib.kb("bench", create=True)
rows = []
for path in sys.argv[3:]:
    data = Path(path).read_bytes()
    t0 = time.perf_counter(); marks = {}
    def progress(stage, done, total):
        if stage == "keywords" and "keywords" not in marks:
            marks["keywords"] = time.perf_counter() - t0
            doc = [d for d in lib.store.list_documents(kb.id) if d.filename == Path(path).name][0]
            probe = lib.store.document_text(kb.id, doc.id).strip()[:30]  # a phrase the new file holds
            hits = Retriever(lib, kb).search(probe, mode="bm25").hits
            marks["found"] = bool(hits) and hits[0].doc == Path(path).name
    r = ingest_bytes(lib, kb, data, Path(path).name, progress=progress)
    rows.append({"file": Path(path).name, "chunks": r.chunks, "keywords_s": marks.get("keywords"),
                 "hybrid_s": time.perf_counter() - t0, "found": marks.get("found"), "status": r.status})
peak = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")), 0)
print(json.dumps({"rows": rows, "peak_rss_mb": round(peak / 1024, 1)}))
"""


def run_child(data_dir: Path, files: list[Path]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), "-", *map(str, files)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def big_pdf(pages: int, path: Path) -> None:
    """A text PDF of `pages` pages of Chinese prose (reportlab, built-in CID font)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    text = "".join(f.read_text(encoding="utf-8") for f in sorted((DATASETS["cmrc2018_trial"] / "docs").glob("*.txt")))
    text = text.replace("\n", "")
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    pos = 0
    for _ in range(pages):
        c.setFont("STSong-Light", 11)
        y = 800
        for _ in range(40):
            c.drawString(40, y, text[pos % len(text):pos % len(text) + 38])
            pos += 38
            y -= 19
        c.showPage()
    c.save()
    path.write_bytes(buf.getvalue())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--pages", type=int, default=1000)
    args = p.parse_args()
    docs = sorted((DATASETS["drcd_dev"] / "docs").glob("*.txt"))[: args.docs]
    if docs:
        upload_to_answer(docs)
    if args.pages:
        big_pdf_row(args.pages)


def upload_to_answer(docs: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_child(Path(tmp) / "data", docs)
    rows = result["rows"]
    print(f"## Upload to first answer ({len(rows)} DRCD dev articles, bundled embedder, one file at a time)\n")
    print(table([{"measure": "seconds to keyword-searchable, median (max)",
                  "value": f"{statistics.median(r['keywords_s'] for r in rows):.2f} "
                           f"({max(r['keywords_s'] for r in rows):.2f})"},
                 {"measure": "seconds to fully hybrid, median (max)",
                  "value": f"{statistics.median(r['hybrid_s'] for r in rows):.2f} "
                           f"({max(r['hybrid_s'] for r in rows):.2f})"},
                 {"measure": "ratio hybrid / keyword (median)",
                  "value": f"{statistics.median(r['hybrid_s'] / r['keywords_s'] for r in rows):.0f}x"},
                 {"measure": "found by BM25 at the keywords stage", "value": f"{sum(r['found'] for r in rows)}/{len(rows)}"},
                 {"measure": "chunks per article, median", "value": statistics.median(r["chunks"] for r in rows)}]))


def big_pdf_row(pages: int) -> None:
    if pages:
        with tempfile.TemporaryDirectory() as tmp:
            pdf = Path(tmp) / f"book-{pages}.pdf"
            t = time.perf_counter()
            big_pdf(pages, pdf)
            made = time.perf_counter() - t
            size_mb = pdf.stat().st_size / 1e6
            result = run_child(Path(tmp) / "data", [pdf])
        r = result["rows"][0]
        print(f"\n## A generated {pages}-page Chinese PDF ({size_mb:.1f} MB, made in {made:.0f} s)\n")
        print(table([{"measure": "status / chunks", "value": f"{r['status']} / {r['chunks']}"},
                     {"measure": "seconds to keyword-searchable", "value": round(r["keywords_s"], 1)},
                     {"measure": "seconds to fully hybrid", "value": round(r["hybrid_s"], 1)},
                     {"measure": "found by BM25 at the keywords stage", "value": r["found"]},
                     {"measure": "peak RSS of the ingesting process (MB)", "value": result["peak_rss_mb"]}]))


if __name__ == "__main__":
    main()
