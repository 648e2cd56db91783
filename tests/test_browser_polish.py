"""Issue 22, items 9, 12 and 13 in Chromium against `wendao serve`: every page speaks Chinese (the page
is zh-CN; no English word outside an allow-list of product terms, model names and file names, in text
or in visible aria-labels, titles and placeholders — Streamlit's own included); the library keeps its
document list after an upload, folds the finished upload log, deletes a document from its row and
shows its buttons whole; the lab's score charts use the page width."""
import os
import re
import urllib.request

import pytest

from fixtures import ZH_PARAGRAPHS, serve_geography
from test_browser import CHROMIUM, create_kb, sized_page, visit, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]

PAGES = {"问答": "/", "文档库": "/library", "检索实验室": "/lab", "评测": "/evaluation", "微调": "/finetune",
         "设置": "/settings"}
# English that stays: product and format names, metric names, units, the services and licences named.
ALLOWED = set("""BM25 RRF LLM API Key PDF DOCX TXT MD CSV HTML HTM XLSX PPTX JSON JSONL PNG SVG MRR nDCG Recall
HNSW SQLite OCR GPU CPU MB KB GB CMRC DRCD CAIL OpenAI DeepSeek Moonshot vLLM Ollama Infinity TEI Xinference Jina
Cohere jieba MIT Apache Hugging Face BAAI Ctrl WPS Word Excel PowerPoint Office""".split())
WORD = re.compile(r"\.?[A-Za-z][A-Za-z0-9@._/+:\-]*")

# Every string a person sees or a screen reader reads: text nodes (also those Streamlit hides with
# font-size 0 — screen readers still read them), and the aria-label / title / placeholder / alt of
# rendered elements. Icon ligatures (Material icons) and code spans (model ids, prefixes) are left out.
SCAN = """() => {
  const out = [];
  const rendered = el => {
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || e.getAttribute('aria-hidden') === 'true') return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const skipped = el => el.closest('[data-testid="stIconMaterial"], code, script, style, noscript');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode, t = n.nodeValue.trim(), el = n.parentElement;
    if (t && el && !skipped(el) && rendered(el)) out.push('text: ' + t);
  }
  for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], [alt]')) {
    if (!rendered(el) || skipped(el)) continue;
    for (const a of ['aria-label', 'title', 'placeholder', 'alt']) {
      const v = el.getAttribute(a);
      if (v) out.push(a + ': ' + v);
    }
  }
  return out;
}"""


def english(strings: list[str]) -> list[str]:
    """The strings holding an English word outside the allow-list (words with a digit, a dot, a hyphen,
    a slash or an @ are names: files, models, versions, URLs, R@5; one letter is a symbol: 片段长度 N)."""
    found = []
    for s in strings:
        value = s.split(": ", 1)[1]
        words = [w.rstrip(".:-/") for w in WORD.findall(value)]
        if any(w not in ALLOWED and len(w) > 1 and not re.search(r"[0-9@./\-]", w) for w in words):
            found.append(s)
    return sorted(set(found))


@pytest.fixture(scope="module")
def polish_data(tmp_path_factory):
    return tmp_path_factory.mktemp("polish-data")


@pytest.fixture(scope="module")
def server(tmp_path_factory, polish_data):
    yield from serve_geography(polish_data, tmp_path_factory.mktemp("polish-docs"))


@pytest.fixture(scope="module")
def page(server):
    with sized_page(1400, 1000) as pg:
        yield pg


def test_every_page_is_zh_cn_without_english_outside_the_allow_list(page, server):
    """Item 9."""
    raw = urllib.request.urlopen(server + "/library", timeout=10).read().decode()
    assert '<html lang="zh-CN">' in raw and "<title>Streamlit</title>" not in raw  # before any script runs
    seen: dict[str, list[str]] = {}
    for title, path in PAGES.items():
        visit(page, server + path)
        assert page.evaluate("document.documentElement.lang") == "zh-CN", title
        if title == "问答":  # an answer with its citations and details
            box = page.get_by_placeholder("就文档提问")
            box.fill("长江有多长？")
            box.press("Enter")
            page.locator('[data-testid="stChatMessage"]').nth(1).wait_for()
            wait_idle(page)
        if title == "检索实验室":  # results: the score table (its toolbar) and the charts
            page.get_by_label("查询", exact=True).fill("长江有多长")
            page.keyboard.press("Enter")
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
            page.locator('[data-testid="stDataFrame"]').first.hover()  # the table's toolbar shows
            page.locator('[data-testid="stElementToolbar"] button').first.hover()  # and a tooltip
            page.wait_for_timeout(800)
        if title == "评测":  # the question-file uploader
            page.get_by_text("上传 JSONL").click()
            page.locator('[data-testid="stFileUploader"]').wait_for()
            wait_idle(page)
        if title == "设置":  # a form's input instruction ("Press Enter to submit form")
            page.get_by_label("模型名", exact=True).fill("x")
            page.locator('[data-testid="InputInstructions"]').first.wait_for()
            assert "回车" in page.locator('[data-testid="InputInstructions"]').first.inner_text()
        seen[title] = english(page.evaluate(SCAN))
    assert not any(seen.values()), seen


def test_library_keeps_its_list_folds_the_log_deletes_from_a_row_and_shows_whole_buttons(page, server, tmp_path):
    """Item 12."""
    visit(page, server + "/library")
    create_kb(page, "上传测试")
    files = []
    for i, text in enumerate(ZH_PARAGRAPHS[:2]):
        f = tmp_path / f"河流{i + 1}.txt"
        f.write_text(text * 2, encoding="utf-8")
        files.append(str(f))
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
    page.get_by_role("button", name="开始索引 2 个文件").click()
    log = page.locator('[data-testid="stExpander"]').filter(has_text="文件 2/2（全部完成）")
    log.wait_for(timeout=180_000)
    wait_idle(page)
    page.wait_for_timeout(1500)
    # the heading and the list are there at once, without a reload
    assert page.get_by_role("heading", name="文档列表").is_visible()
    assert page.locator('[data-testid="stDataFrame"]').first.is_visible()
    # the finished log is folded into one line that sums it up
    assert "2 个已索引" in log.inner_text()
    assert not log.get_by_text("「河流1.txt」：已索引").is_visible()
    log.locator("summary").click()
    log.get_by_text("「河流1.txt」：已索引").wait_for()
    # no button's words are cut off or wrapped
    cut = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] button')]
        .filter(b => b.offsetParent && b.innerText.trim())
        .filter(b => b.scrollWidth > b.clientWidth + 1 || [...b.querySelectorAll('p')]
            .filter(p => getComputedStyle(p).fontSize !== '0px')  // the uploader's words, replaced by CSS
            .some(p => p.scrollWidth > p.clientWidth + 1
                       || p.getBoundingClientRect().height > 1.8 * parseFloat(getComputedStyle(p).lineHeight)))
        .map(b => b.innerText.trim())""")
    assert not cut, cut
    # delete a document from its row: tick its box in the table, delete, confirm
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)  # the first row's checkbox (row marker column)
    page.get_by_role("button", name="删除选中的 1 个文档").click()
    page.get_by_text("确定删除「河流1.txt」").wait_for()
    page.get_by_role("button", name="确认删除").click()
    wait_idle(page)
    page.get_by_text("1 个文档 · ").wait_for()  # the sidebar's count
    assert page.get_by_role("heading", name="文档列表").is_visible()


def test_lab_score_charts_use_the_page_width(page, server):
    """Item 13: the charts stand side by side and together span most of the page."""
    visit(page, server + "/lab")
    page.get_by_label("查询", exact=True).fill("黄河 母亲河")
    page.keyboard.press("Enter")
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.first.wait_for()
    wait_idle(page)
    boxes = [charts.nth(i).bounding_box() for i in range(charts.count())]
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    assert len(boxes) >= 3
    assert len({round(b["y"]) for b in boxes}) == 1  # one row
    assert max(b["x"] + b["width"] for b in boxes) - min(b["x"] for b in boxes) > 0.8 * main["width"]


def test_deleting_a_conversation_asks_in_view_and_names_it_in_a_900px_window(page, server, polish_data):
    """Issue 22 item 14: with a long conversation list, the confirmation of 删除当前对话 appeared below
    the fold of a 900 px window (the button seemed to do nothing) and did not name the conversation."""
    from services import conversations
    from services.index.library import open_library

    lib = open_library(polish_data)
    kb = lib.store.find_kb("地理资料")
    keys = [f"fold{i:02d}" for i in range(30)]
    for i, key in enumerate(keys):
        conversations.create(lib.store, kb.id, title=f"黄河的第 {i + 1} 个问题", key=key)
    page.set_viewport_size({"width": 1400, "height": 900})
    try:
        visit(page, server + "/?c=" + keys[0])  # the oldest: its button is the last in the list
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("管理当前对话").click()
        sidebar.get_by_role("button", name="删除当前对话").click()
        question = page.get_by_text("确定删除对话「黄河的第 1 个问题」？")
        question.wait_for()
        wait_idle(page)

        def in_view(locator) -> bool:
            box = locator.bounding_box()
            return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 900

        assert page.get_by_role("dialog").filter(has_text="确定删除对话").is_visible()
        assert in_view(question)  # seen without scrolling
        confirm = page.get_by_role("dialog").get_by_role("button", name="确认删除")
        assert in_view(confirm)
        confirm.click()
        page.get_by_text("已删除对话「黄河的第 1 个问题」").wait_for()
        wait_idle(page)
        assert [c.key for c in conversations.list_for(lib.store, kb.id)].count(keys[0]) == 0
        assert not sidebar.get_by_role("button", name="黄河的第 1 个问题（0 问）").count()
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
