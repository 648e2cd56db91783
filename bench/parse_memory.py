"""Peak memory and time of parsing hostile files at their real sizes (issue 9 item 8).

Each file is written to a temp dir, then parsed in a fresh interpreter that reports its outcome,
wall time and peak RSS (resource.getrusage). The budget is 1 GB for any single file within the
size limit (WENDAO_MAX_FILE_MB, default 200). tests/test_bad_input.py runs scaled-down versions.

    python bench/parse_memory.py [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table

sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time


def peak_mb():
    # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's at fork time)
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from services import errors
from services.documents.parsing import parse
start = time.perf_counter()
data = open(sys.argv[1], "rb").read()
try:
    doc = parse(data, sys.argv[2])
    outcome = f"ok: {len(doc.text):,} chars"
except errors.WendaoError as exc:
    outcome = f"{type(exc).__name__}: {exc.message_zh[:60]}"
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start,
                  "peak_mb": peak_mb()}))
"""


def write_cases(folder: Path, only: str | None) -> list[tuple[str, Path]]:
    from fixtures import ZH_PARAGRAPHS, make_pdf
    from test_bad_input import VERBOSE, docx_package, one_paragraph_xml, paragraphs_xml

    text_line = ("".join(ZH_PARAGRAPHS) + "\n").encode("utf-8")
    cases = {
        "docx-60MB-xml.docx": lambda: docx_package(paragraphs_xml(60)),
        "docx-60MB-verbose-xml.docx": lambda: docx_package(paragraphs_xml(60, VERBOSE)),
        "docx-60MB-one-paragraph.docx": lambda: docx_package(one_paragraph_xml(60)),
        "docx-290MB-xml-announced-1KB.docx": lambda: docx_package(
            (b"<w:p/>" * 10_000 for _ in range(290 * 1024 * 1024 // 60_000)), lie_file_size=1000),
        "docx-290MB-xml-compressed-size-lie.docx": lambda: docx_package(
            (b"<w:p/>" * 10_000 for _ in range(290 * 1024 * 1024 // 60_000)), lie_compress_size=40_000_000),
        "text-150MB.txt": lambda: text_line * (150 * 1024 * 1024 // len(text_line)),
        "text-8.5MB-near-char-cap.txt": lambda: text_line * (17 * 512 * 1024 // len(text_line)),
        "html-6MB.html": lambda: b"<html><body>" + b"".join(
            f"<div class='c{i % 7}'><p>{i}: ".encode() + text_line + b"</p></div>\n" for i in range(6 * 1024 * 1024 // 400)
        ) + b"</body></html>",
        "html-2.9MB-of-tags.html": lambda: b"<html><body>" + b"<i>x</i>" * (2_900_000 // 8) + b"</body></html>",
        "pdf-1000-pages.pdf": lambda: make_pdf(["".join(ZH_PARAGRAPHS) * 6] * 1000),
    }
    out = []
    for name, make in cases.items():
        if only and only not in name:
            continue
        path = folder / name
        path.write_bytes(make())
        out.append((name, path))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="run only cases whose name contains this")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_cases(Path(tmp), args.only):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, str(path), name], cwd=ROOT, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode:
                rows.append({"file": name, "size_mb": path.stat().st_size / 2 ** 20, "outcome": proc.stderr[-80:]})
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"file": name, "size_mb": round(path.stat().st_size / 2 ** 20, 2),
                         "seconds": round(result["seconds"], 2), "peak_rss_mb": round(result["peak_mb"]),
                         "outcome": result["outcome"], "wall_s": round(time.perf_counter() - start, 1)})
    print(table(rows, ["file", "size_mb", "seconds", "peak_rss_mb", "outcome"]))


if __name__ == "__main__":
    main()
