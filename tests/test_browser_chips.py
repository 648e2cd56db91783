"""Issue 22 (walkthrough leftovers), in Chromium against `wendao serve`: the uploader's file chips
and the document table agree — a file's size reads the same (Streamlit's chip counts 1 KB as 1000
bytes off Windows; the table showed a 43-byte file as 「0」 KB), and a name with a control character
shows it as `<U+0007>` in the chip as in the table (the chip drew a box); a name that happens to be
one of Streamlit's English words ("Remove …") is the user's and stays as it is."""
import os

import pytest

from fixtures import serve_geography
from test_browser import CHROMIUM, sized_page, visit, wait_idle
from test_browser_polish import SCAN, english

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]

CHIPS = """() => [...document.querySelectorAll('[data-testid="stFileChip"]')].map(c => {
    const name = c.querySelector('[data-testid="stFileChipName"]');
    return {name: name.innerText, title: name.getAttribute('title'), text: c.innerText,
            cancel: (c.querySelector('button') || {getAttribute: () => ''}).getAttribute('aria-label')};
})"""
CELLS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"] td')].map(c => [c.id, c.innerText])"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_geography(tmp_path_factory.mktemp("chips-data"), tmp_path_factory.mktemp("chips-docs"))


def test_chips_and_table_agree_on_sizes_and_names(server, tmp_path):
    tiny = tmp_path / "报告\x07附件.txt"
    tiny.write_bytes(("长江" * 7 + "a").encode())  # 43 bytes
    larger = tmp_path / "长江资料.txt"
    larger.write_bytes(("长江是中国第一长河。" * 84)[:830].encode()[:2490] + b"0123456789")  # 2,500 bytes
    named = tmp_path / "Remove me.txt"
    named.write_text("黄河是中国第二长河。", encoding="utf-8")
    small = tmp_path / "短文.txt"  # 643 bytes: the chip said 0.6KB, the table 643 B (walkthrough s26)
    small.write_bytes(("长江是中国第一长河。" * 30).encode()[:640] + b"end")
    big = tmp_path / "长文.txt"  # 558,200 bytes: 0.6MB in the chip, 558.2 KB in the table (mostly blank: quick to index)
    head = "长江是中国第一长河，全长六千三百公里。".encode()
    big.write_bytes(head + b" " * (558_200 - len(head) - 10) + b"0123456789")
    assert (tiny.stat().st_size, larger.stat().st_size, small.stat().st_size, big.stat().st_size) == (43, 2500, 643, 558_200)
    with sized_page(1400, 1000) as page:
        visit(page, server + "/library")
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            [str(tiny), str(larger), str(named), str(small), str(big)])
        page.get_by_role("button", name="开始索引 5 个文件").wait_for()
        wait_idle(page)
        page.wait_for_timeout(500)
        chips = {c["title"]: c for c in page.evaluate(CHIPS)}
        assert set(chips) == {"报告<U+0007>附件.txt", "长江资料.txt", "Remove me.txt", "短文.txt", "长文.txt"}, chips
        bell = chips["报告<U+0007>附件.txt"]
        assert bell["name"] == "报告<U+0007>附件.txt" and "\x07" not in bell["text"], bell
        assert chips["Remove me.txt"]["name"] == "Remove me.txt"  # not translated: it is a file name
        assert bell["cancel"].startswith(("移除 ", "取消上传 ")), bell  # "Remove …" / "Cancel upload of …"
        chip_size = {t: c["text"].split("\n")[-1] for t, c in chips.items()}
        assert chip_size["报告<U+0007>附件.txt"] == "43 B" and chip_size["长江资料.txt"] == "2.5 KB", chip_size
        assert chip_size["短文.txt"] == "0.6 KB" and chip_size["长文.txt"] == "0.6 MB", chip_size
        page.screenshot(path="/tmp/chips-sizes.png")
        # nothing English on the page with the chips shown, but the file name that is one
        left = [s for s in english(page.evaluate(SCAN)) if "Remove" not in s]
        assert not left, left

        page.get_by_role("button", name="开始索引 5 个文件").click()
        page.get_by_text("文件 5/5（全部完成）").wait_for(timeout=180_000)
        wait_idle(page)
        page.wait_for_timeout(1500)
        cells = dict(page.evaluate(CELLS))
        rows = {}
        for cell_id, text in cells.items():
            col, row = map(int, cell_id.removeprefix("glide-cell-").split("-"))
            rows.setdefault(row, {})[col] = text
        header = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] th')]
                                  .map(c => c.innerText)""")
        first = min(min(r) for r in rows.values())  # the row markers' column has no cells
        name_col, size_col = header.index("文件名") + first, header.index("大小") + first
        table = {r[name_col]: r[size_col] for r in rows.values()}
        assert table["报告<U+0007>附件.txt"] == "43 B" and table["长江资料.txt"] == "2.5 KB", table
        for title, shown in chip_size.items():  # the same words as the chip showed
            assert title in table, (title, list(table))
            assert table[title] == shown, (title, shown, table[title])
