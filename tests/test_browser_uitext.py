"""A fresh-eyes walkthrough's layout findings on 文档库, in Chromium against `wendao serve` at
1280x800: the document-delete confirmation is seen without scrolling; the uploader's file chips are
not cut off inside the drop box; 评测's retrieval choices are whole."""
import os

import pytest

from fixtures import serve_geography
from test_browser import CHROMIUM, sized_page, visit, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]
WIDTH, HEIGHT = 1280, 800


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_geography(tmp_path_factory.mktemp("uitext-data"), tmp_path_factory.mktemp("uitext-docs"))


@pytest.fixture(scope="module")
def page(server):
    with sized_page(WIDTH, HEIGHT) as pg:
        yield pg


def in_view(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= HEIGHT


def test_uploader_chips_grow_with_the_files_instead_of_being_cut(page, server, tmp_path):
    visit(page, server + "/library")
    files = []
    for i in range(12):
        f = tmp_path / f"cail2019_dev_{i:04d}.txt"
        f.write_text(f"第{i}份文书。", encoding="utf-8")
        files.append(str(f))
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
    page.get_by_role("button", name="开始索引 12 个文件").wait_for()
    wait_idle(page)
    got = page.evaluate("""() => {
        const area = document.querySelector('[data-testid="stFileChips"]');
        const zone = document.querySelector('[data-testid="stFileUploaderDropzone"]').getBoundingClientRect();
        const chips = [...document.querySelectorAll('[data-testid="stFileChip"]')].map(c => c.getBoundingClientRect());
        return {n: chips.length, scroll: area.scrollHeight, client: area.clientHeight,
                rows: new Set(chips.map(c => Math.round(c.top))).size,
                cut: chips.filter(c => c.bottom > zone.bottom + 0.5 || c.top < zone.top - 0.5).length};
    }""")
    assert got["n"] == 12 and got["rows"] >= 3, got
    assert got["cut"] == 0 and got["scroll"] <= got["client"] + 1, got  # every chip whole inside the box


def test_document_delete_confirmation_is_in_view_at_1280x800(page, server):
    visit(page, server + "/library")
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    wait_idle(page)
    box = grid.bounding_box()
    delete = page.get_by_role("button", name="删除选中的 1 个文档")
    for _ in range(3):  # a click that lands during a rerun is dropped: click the row again
        page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)  # the first row's checkbox (row marker column)
        try:
            delete.wait_for(timeout=20_000)
            break
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError
            wait_idle(page)
    wait_idle(page)
    delete.click()
    dialog = page.get_by_role("dialog").filter(has_text="确定删除「")
    dialog.wait_for()
    wait_idle(page)
    question = dialog.get_by_text("确定删除「")
    confirm, cancel = dialog.get_by_role("button", name="确认删除"), dialog.get_by_role("button", name="取消")
    assert in_view(question) and in_view(confirm) and in_view(cancel)  # seen without scrolling
    cancel.click()
    wait_idle(page)
    dialog.wait_for(state="detached", timeout=30_000)  # closed (after its closing animation)
    assert page.locator('[data-testid="stDataFrame"]').first.is_visible()  # nothing deleted
    # the sidebar's count, written when the page's rerun ends (waited for: a loaded machine ends it later)
    page.get_by_text("3 个文档 · ").wait_for(timeout=30_000)


def test_evaluation_retrieval_choices_are_not_cut_at_1280(page, server):
    """评测's 检索方式 box holds its three chosen modes whole at 1280 px (in a third of the row the third was cut)."""
    visit(page, server + "/evaluation")
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="检索方式").first
    tags = box.locator("[data-tag]")
    tags.first.wait_for()
    field = box.locator('[data-testid="stMultiSelectTagsContainer"]').bounding_box()
    shown = [tags.nth(i).bounding_box() for i in range(tags.count())]
    cut = [t for t in shown if t["x"] + t["width"] > field["x"] + field["width"] + 0.5
           or t["y"] + t["height"] > field["y"] + field["height"] + 0.5]
    assert len(shown) == 3 and not cut, (field, shown)
