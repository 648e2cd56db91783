"""What a new user's walkthrough of every page in Chromium found, checked in Chromium against
`wendao serve` (the AppTest side is tests/test_walkthrough_polish.py): tables that fit the page on
检索实验室 and 评测 (no column pushed out of sight), widget labels shown whole on 设置 in a narrower
window, one list of background work on 评测, and one colour per configuration in its charts (legend,
lines, points and bars)."""
import json
import os

import pytest

from fixtures import ZH_PARAGRAPHS, serve_geography
from test_browser import CHROMIUM, launched_chromium, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]

# Tables whose columns run past the table's right edge (a horizontal scroll bar: columns out of sight).
OVERFLOWING_TABLES = """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
    .map(df => df.querySelector('.dvn-scroller'))
    .filter(s => s && s.offsetParent && s.scrollWidth > s.clientWidth + 1)
    .map(s => [s.scrollWidth, s.clientWidth, s.closest('[data-testid="stDataFrame"]').innerText.slice(0, 80)])"""
# Widget labels (toggles and checkboxes included) whose words Streamlit cut off with an ellipsis.
CUT_LABELS = """() => [...document.querySelectorAll(
        '[data-testid="stMain"] [data-testid="stWidgetLabel"] *, [data-testid="stMain"] [data-testid="stCheckbox"] label *')]
    .filter(el => el.offsetParent && el.innerText && el.innerText.trim())
    .filter(el => getComputedStyle(el).textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth + 1)
    .map(el => el.innerText.trim())"""
# The colours of a Vega chart (SVG): legend entries (label -> symbol fill), lines, points and bars.
CHART_COLOURS = """chart => {
  const fill = el => el.getAttribute('fill') || getComputedStyle(el).fill;
  const labels = [...chart.querySelectorAll('g.role-legend-label text')].map(t => t.textContent);
  const symbols = [...chart.querySelectorAll('g.role-legend-symbol path')].map(fill);
  const legend = Object.fromEntries(labels.map((label, i) => [label, symbols[i]]));
  const marks = kind => [...chart.querySelectorAll('g.mark-' + kind + '.role-mark path')];
  return {legend, lines: marks('line').map(p => p.getAttribute('stroke')),
          points: marks('symbol').map(fill), bars: marks('rect').map(fill)};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_geography(tmp_path_factory.mktemp("walk-data"), tmp_path_factory.mktemp("walk-docs"))


@pytest.fixture(scope="module")
def browser():
    with launched_chromium() as chromium:
        yield chromium


def new_page(browser, width=1400):
    page = browser.new_context(viewport={"width": width, "height": 1000}, locale="zh-CN").new_page()
    page.set_default_timeout(180_000)
    return page


def visit(page, url):
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"]')
    wait_idle(page)
    page.wait_for_timeout(1500)


def question_file(path):
    """One question per document of the fixture's KB, its answer where the document has it."""
    lines = []
    for i, text in enumerate(ZH_PARAGRAPHS):
        answer = text[:4]
        lines.append(json.dumps({"question": f"{answer}是什么？", "doc_file": f"docs/地理{i + 1}.txt",
                                 "answer_spans": [{"text": answer, "start_in_doc": 0}]}, ensure_ascii=False))
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def test_lab_tables_fit_the_page(browser, server):
    """Item 1 on 检索实验室: the hits and all candidates, one result and two side by side."""
    page = new_page(browser)
    visit(page, server + "/lab")
    page.get_by_label("查询", exact=True).fill("黄河 母亲河")
    page.keyboard.press("Enter")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    wait_idle(page)
    page.get_by_text("个候选").first.click()  # the expander with every candidate
    page.wait_for_timeout(1500)
    assert page.locator('[data-testid="stDataFrame"] .dvn-scroller').count() == 2
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.get_by_text("对比两组设置").click()
    wait_idle(page)
    page.wait_for_timeout(1500)
    assert page.locator('[data-testid="stDataFrame"] .dvn-scroller').count() >= 2
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.context.close()


def test_settings_labels_are_whole_in_a_narrower_window(browser, server):
    """Item 1 on 设置 (the reranker toggle's words were cut off) at 900 px and at 1400 px."""
    for width in (900, 1400):
        page = new_page(browser, width)
        visit(page, server + "/settings")
        page.get_by_text("启用重排").first.wait_for()
        assert page.evaluate(CUT_LABELS) == [], width
        page.context.close()


def test_evaluation_tables_fit_one_job_list_and_one_colour_per_configuration(browser, server, tmp_path):
    """Items 1, 5 and 6 on 评测, after a run of three configurations."""
    page = new_page(browser)
    visit(page, server + "/evaluation")
    page.get_by_text("上传 JSONL").click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(question_file(tmp_path / "q.jsonl"))
    wait_idle(page)
    page.get_by_role("button", name="开始评测").click()
    page.get_by_text("最近一次评测").wait_for()
    wait_idle(page)
    page.wait_for_timeout(2500)
    # 5: one list of the page's background work, under 开始评测
    clear = page.get_by_role("button", name="清除这些记录")
    assert clear.count() == 1
    assert clear.bounding_box()["y"] > page.get_by_role("button", name="开始评测").bounding_box()["y"]
    # 6: each configuration has one colour: in the curve's legend, its line and points, and its latency bars
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(1).scroll_into_view_if_needed()
    page.wait_for_function("""() => {
        const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"]');
        return charts.length >= 2 && charts[0].querySelectorAll('g.role-legend-label text').length === 3
            && charts[1].querySelectorAll('g.mark-rect.role-mark path').length === 6;
    }""")
    page.wait_for_timeout(1000)
    curve = charts.nth(0).evaluate(CHART_COLOURS)
    bars = charts.nth(1).evaluate(CHART_COLOURS)
    legend = curve["legend"]
    assert len(legend) == 3 and len(set(legend.values())) == 3, curve
    assert set(curve["lines"]) == set(legend.values()), curve
    assert set(curve["points"]) == set(legend.values()), curve
    assert set(bars["bars"]) == set(legend.values()), bars  # p50 and p95 told apart by shade, not by colour
    # 1: the results' tables fit the page
    assert page.locator('[data-testid="stDataFrame"] .dvn-scroller').count() == 2
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.context.close()
