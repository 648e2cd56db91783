"""Visual items of a fresh-eyes walkthrough in Chromium against `wendao serve` (the AppTest and unit side
is tests/test_walkthrough_fixes.py): the uploader's file chips show whole names, and the lab's score
chart keeps a hybrid curve visible where it equals BM25's."""
import os

import pytest

from fixtures import serve_geography
from test_browser import CHROMIUM, launched_chromium, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_geography(tmp_path_factory.mktemp("fix-data"), tmp_path_factory.mktemp("fix-docs"))


@pytest.fixture(scope="module")
def browser():
    with launched_chromium() as chromium:
        yield chromium


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


# --- 6. curves that coincide stay visible ------------------------------------------------------------
CURVE_MARKS = """chart => ({
  legend: [...chart.querySelectorAll('g.role-legend-label text')].map(t => t.textContent),
  lines: [...chart.querySelectorAll('g.mark-line.role-mark path')].map(p => [p.getAttribute('stroke'),
          parseFloat(p.getAttribute('stroke-width') || getComputedStyle(p).strokeWidth)]),
  points: [...chart.querySelectorAll('g.mark-symbol.role-mark path')].map(p => p.getAttribute('transform')),
})"""


def test_equal_recall_curves_stay_visible_and_are_named(browser, server, tmp_path):
    """Every configuration finds every answer of the three geography questions: BM25, 向量 and 混合 give
    the same curve, which used to hide all but the last drawn."""
    import json

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"question": q, "doc_file": f"地理{i}.txt", "answer": a}, ensure_ascii=False)
                                   for q, i, a in (("长江全长多少", 1, "六千三百公里"), ("黄河被称为什么", 2, "母亲河"),
                                                   ("世界最高峰是哪座", 3, "珠穆朗玛峰"))), encoding="utf-8")
    page = open_page(browser, server + "/evaluation")
    page.get_by_text("上传 JSONL").click()
    wait_idle(page)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(questions))
    wait_idle(page)
    page.get_by_role("button", name="开始评测").click()
    page.get_by_text("最近一次评测").wait_for()
    wait_idle(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    marks = chart.evaluate(CURVE_MARKS)
    assert len(marks["lines"]) == 3 and len(marks["points"]) == 12, marks
    assert len(set(marks["points"])) == 12, marks["points"]  # no point hidden under another's
    assert len({w for _, w in marks["lines"]}) == 3, marks["lines"]  # widest underneath, narrower on top
    assert all("重合" in label for label in marks["legend"]), marks["legend"]
    assert page.get_by_text("曲线重合", exact=False).count() == 1
    page.context.close()


# --- issue 22's second walkthrough: the /chat address opens the chat ----------------------------------
def test_the_chat_address_opens_the_chat_with_its_conversation(browser, server):
    """/library, /lab… open their pages, but /chat said 「页面不存在…已打开首页」: the chat is the default
    page, which Streamlit serves at /. /chat (and /chat?c=<conversation>) now opens the chat."""
    page = open_page(browser, server + "/")
    page.get_by_role("textbox").last.fill("长江全长多少公里？")
    page.keyboard.press("Enter")
    page.wait_for_function("() => new URL(location.href).searchParams.get('c')")
    wait_idle(page)
    key = page.evaluate("() => new URL(location.href).searchParams.get('c')")
    page.context.close()

    for address in ("/chat", f"/chat?c={key}"):
        page = open_page(browser, server + address)
        page.wait_for_timeout(1000)
        if "c=" in address:  # the saved answer, once the page's run has drawn it (later on a loaded machine)
            page.get_by_text("六千三百").first.wait_for(timeout=30_000)
        body = page.locator("body").inner_text()
        assert "页面不存在" not in body and "Page not found" not in body, body[:300]
        assert page.locator('[data-testid="stChatInput"]').count() == 1, body[:300]  # the chat itself
        nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
        assert sum("问答" in t for t in nav) == 1, nav  # the /chat page itself is not listed
        if "c=" in address:
            assert "长江全长多少公里？" in body and "六千三百" in body, body[:600]
            assert new_query(page) == {"c": key}
        page.context.close()


def new_query(page) -> dict:
    return page.evaluate("() => Object.fromEntries(new URL(location.href).searchParams)")
