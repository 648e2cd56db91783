"""Visual items of a fresh-eyes walkthrough in Chromium against `wendao serve` (the AppTest and unit side
is tests/test_walkthrough_fixes.py): the uploader's file chips show whole names, and the lab's score
chart keeps a hybrid curve visible where it equals BM25's."""
import os

import pytest

from fixtures import serve_geography
from test_browser import ARGS, CHROMIUM, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_geography(tmp_path_factory.mktemp("fix-data"), tmp_path_factory.mktemp("fix-docs"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def open_page(browser, url, width=1400):
    page = browser.new_context(viewport={"width": width, "height": 1000}, locale="zh-CN").new_page()
    page.set_default_timeout(180_000)
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"]', state="attached")  # folded in a narrow window
    wait_idle(page)
    return page


# --- 4. the uploader's file chips show whole names --------------------------------------------------
def test_upload_chips_show_whole_file_names(browser, server, tmp_path):
    names = ["2023年度上海市某某区人民法院民事判决书（第一审）附件.txt", "公司员工手册与考勤制度实施细则（2024修订版）.txt"]
    for name in names:
        (tmp_path / name).write_text("长江是中国第一大河。" * 5, encoding="utf-8")
    for width in (1400, 700):  # a narrow window wraps a long name inside its chip, never cuts it
        page = open_page(browser, server + "/library", width)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(tmp_path / n) for n in names])
        page.locator('[data-testid="stFileChipName"]').nth(1).wait_for()
        page.wait_for_timeout(500)
        chips = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stFileChipName"]')].map(e =>
            ({text: e.innerText, title: e.getAttribute('title'), cut: e.scrollWidth > e.clientWidth + 1}))""")
        assert [c["text"] for c in chips] == names, chips  # was "2023年度上...第一审）附件.txt"
        assert [c["title"] for c in chips] == names and not any(c["cut"] for c in chips), chips
        page.context.close()
