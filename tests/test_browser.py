"""Real-browser tests: Debian's Chromium driven by Playwright against `streamlit run app.py`.

Upload a Chinese PDF and a GBK .txt, ask a question, see the streamed answer and open a citation,
run the retrieval lab and a small evaluation. Screenshots of each page go to a temp dir
(printed; kept under $WENDAO_SCREENSHOTS when set).
"""
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import ROOT
from fixtures import ZH_PARAGRAPHS, make_pdf
from llm_server import FakeLLMServer

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
GBK_TEXT = "公司制度\n第一条 员工每天工作八小时。第二条 员工每年享有十五天带薪年假。第三条 加班需提前申请。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots():
    path = Path(os.environ.get("WENDAO_SCREENSHOTS") or tempfile.mkdtemp(prefix="wendao-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path


@contextlib.contextmanager
def running_app(data: Path, **env_vars):
    """`streamlit run app.py` on a free 127.0.0.1 port with WENDAO_DATA_DIR=data; yields its URL."""
    port = free_port()
    env = {**os.environ, "WENDAO_DATA_DIR": str(data), **env_vars}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            proc.kill()
            pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # a busy machine (or a worker mid-write): stop it hard
            proc.kill()
            proc.wait(10)


def new_page(browser, outside: list[str]):
    """A page in a fresh context of `browser`; every request to a host other than 127.0.0.1 is
    appended to `outside`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
    context.on("request", lambda request: outside.append(request.url) if is_outside(request.url) else None)
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    return pg


@contextlib.contextmanager
def launched_chromium():
    """Debian's Chromium through Playwright (headless, no sandbox), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(outside: list[str]):
    """A Chromium page (its own browser); every request to a host other than 127.0.0.1 is appended to
    `outside`."""
    with launched_chromium() as browser:
        yield new_page(browser, outside)


@contextlib.contextmanager
def sized_page(width: int = 1400, height: int = 1000):
    """A page of its own Chromium with this viewport, speaking zh-CN."""
    with launched_chromium() as browser:
        page = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN").new_page()
        page.set_default_timeout(120_000)
        yield page


def visit(page, url: str) -> None:
    """Open `url` and wait until the app has rendered and finished its script run."""
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"]')
    wait_idle(page)
    page.wait_for_timeout(500)


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module's tests (Playwright's sync API allows one instance at a time)."""
    with launched_chromium() as browser:
        yield browser


def is_outside(url: str) -> bool:
    """A request that leaves this machine (data:/blob: URLs and 127.0.0.1 stay home)."""
    parts = urlsplit(url)
    return parts.scheme not in ("data", "blob", "about") and parts.hostname not in ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-data")


@pytest.fixture(scope="module")
def app_url(data_path):
    with FakeLLMServer() as llm:
        with running_app(data_path, OPENAI_BASE_URL=llm.url,
                         OPENAI_API_KEY="sk-test", WENDAO_LLM_MODEL="echo") as url:
            yield url


@pytest.fixture(scope="module")
def outside_requests():
    return []


@pytest.fixture(scope="module")
def page(app_url, outside_requests, chromium):
    pg = new_page(chromium, outside_requests)
    yield pg
    pg.context.close()


def wait_idle(page):
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=180_000)


def create_kb(page, name: str):
    """Create a KB on 文档库 (the 新建知识库 form is folded when a KB exists, open when none does),
    clicking again when a click landed during a rerun and was dropped (seen once in a CI run)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    name_box = page.get_by_label("知识库名称")
    for _ in range(3):
        page.get_by_text("新建知识库").first.wait_for()  # the page has rendered
        wait_idle(page)
        if not name_box.is_visible():
            page.get_by_text("新建知识库").first.click()
        name_box.fill(name)
        wait_idle(page)
        page.get_by_role("button", name="创建").click()
        try:
            page.get_by_text(f"知识库：{name}").wait_for(timeout=40_000)
            wait_idle(page)
            return
        except PlaywrightTimeout:
            continue
    pytest.fail(f"creating the KB {name} never took effect")


def test_upload_pdf_and_gbk_text(page, app_url, shots, tmp_path):
    page.goto(app_url + "/library")
    create_kb(page, "浏览器测试")
    # the uploader speaks Chinese (Streamlit's own words are replaced) and states WENDAO_MAX_FILE_MB
    hint = page.locator('[data-testid="stFileUploaderDropzoneInstructions"] span').first
    assert "单个文件不超过 200 MB" in hint.evaluate("e => getComputedStyle(e, '::after').content")
    junk = tmp_path / "归档.zip"
    junk.write_bytes(b"PK\x03\x04junk")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(junk)])
    page.get_by_text("不支持的文件类型").wait_for()
    assert "files are not allowed" not in page.inner_text("body")
    pdf = tmp_path / "地理.pdf"
    pdf.write_bytes(make_pdf(["第一页 " + ZH_PARAGRAPHS[0], "第二页 " + ZH_PARAGRAPHS[2]]))
    txt = tmp_path / "制度.txt"
    txt.write_bytes(GBK_TEXT.encode("gbk"))
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(pdf), str(txt)])
    page.get_by_role("button", name="开始索引 2 个文件").click()
    try:
        page.get_by_text("文件 2/2（全部完成）").wait_for()  # indexed by the background worker
    finally:
        page.screenshot(path=str(shots / "1-library.png"), full_page=True)
    wait_idle(page)
    # the finished log is folded into one line (issue 22); opened, it lists each file
    page.locator('[data-testid="stExpander"]').filter(has_text="文件 2/2（全部完成）").locator("summary").click()
    page.get_by_text("「制度.txt」：已索引").wait_for()
    assert page.locator('[data-testid="stFileChip"]').count() == 0  # the uploader cleared


def test_upload_xlsx_and_a_scanned_pdf(page, app_url, tmp_path):
    """Issue 11: an .xlsx and a PDF with a scanned page go through the browser upload and the
    background worker; the scanned page's text is recognised (OCR) and answers a question."""
    from test_formats import _bench_ocr, _text_then_scanned_page, make_xlsx

    bench = _bench_ocr()
    sheet = tmp_path / "员工.xlsx"
    sheet.write_bytes(make_xlsx({"名单": [["姓名", "部门", "电话"], ["张三", "财务部", "6001"], ["李四", "研发部", "6002"]]}))
    scan = tmp_path / "扫描件.pdf"
    scan.write_bytes(_text_then_scanned_page(bench))
    page.goto(app_url + "/library")
    wait_idle(page)
    create_kb(page, "格式测试")  # a KB of its own
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(sheet), str(scan)])
    page.get_by_role("button", name="开始索引 2 个文件").click()
    page.get_by_text("文件 2/2（全部完成）").wait_for(timeout=240_000)
    wait_idle(page)
    page.locator('[data-testid="stExpander"]').filter(has_text="文件 2/2（全部完成）").locator("summary").click()
    page.get_by_text("「扫描件.pdf」：已索引").wait_for()  # the folded log, opened
    body = page.inner_text("body")
    assert "员工.xlsx" in body and "扫描件.pdf" in body and "失败" not in body
    assert "OCR" in body  # the scanned page is said to be recognised text


def yellow_pixels(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    import numpy as np

    px = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return int(((r > 220) & (g > 190) & (g < 240) & (b < 160)).sum())


def test_chat_inline_citation_opens_the_pdf_page_with_the_quote_highlighted(page, app_url, shots):
    page.goto(app_url + "/")  # the chat page is the default page
    box = page.get_by_placeholder("就文档提问")
    box.fill("珠穆朗玛峰海拔多少米？")
    box.press("Enter")
    answer = page.locator('[data-testid="stChatMessage"]').nth(1)
    inline = answer.locator("button.wd-cite")  # every [n] inside the answer text is a button
    inline.first.wait_for()  # the kept turn, shown once the answer has streamed
    wait_idle(page)
    assert "八千八百四十八" in answer.inner_text() and inline.first.inner_text() == "[1]"
    inline.first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("mark").first.wait_for()
    assert "珠穆朗玛峰" in dialog.locator("mark").first.inner_text()
    dialog.get_by_text("引用句已用黄色标出").wait_for()
    image = dialog.locator('[data-testid="stImage"] img, img').first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert dialog.get_by_text("原文 第2页").count() == 1
    assert yellow_pixels(image.screenshot()) > 500  # the quoted sentence is marked on the page
    page.screenshot(path=str(shots / "2-chat-page-view.png"))
    page.keyboard.press("Escape")
    chip = answer.get_by_role("button", name="[1] 地理.pdf · 第1–2页")  # the chip (the passage spans both pages)
    chip.click()
    page.get_by_role("dialog").get_by_text("引用句已用黄色标出").wait_for()
    page.keyboard.press("Escape")


def test_reload_keeps_the_conversation(page, app_url):
    assert "c=" in page.url  # the open conversation is in the URL
    page.reload()
    answer = page.locator('[data-testid="stChatMessage"]').nth(1)
    answer.get_by_text("八千八百四十八").first.wait_for()
    assert page.locator('[data-testid="stChatMessage"]').nth(0).get_by_text("珠穆朗玛峰海拔多少米？").count() == 1
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert sidebar.get_by_role("button", name="珠穆朗玛峰海拔多少米？（1 问）").count() == 1
    wait_idle(page)


def test_background_ingestion_while_asking(page, app_url, data_path, shots, tmp_path):
    """A long upload indexes in the background: the library shows the running file and its stage,
    and a question about an indexed file is answered (in another tab's session) before the upload
    has finished."""
    import sqlite3

    files = []
    for n in range(3):  # indexed one after another: the batch outlasts a question's answer
        files.append(tmp_path / f"长文{n}.txt")
        files[-1].write_text("\n".join(
            f"第{n}卷第{i}段：第{i}号水文站记录了第{i}条支流的流量，其年均流量为{(i * 37 + n) % 991}立方米每秒，"
            f"汛期在{i % 12 + 1}月，监测员{i % 97}号负责巡查。" for i in range(400)), encoding="utf-8")
    page.goto(app_url + "/library")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(f) for f in files])
    page.get_by_role("button", name="开始索引 3 个文件").click()
    page.get_by_text("正在处理「长文0.txt」").wait_for()
    page.get_by_text("等待中：「长文1.txt」、「长文2.txt」").wait_for()  # files waiting are listed
    other = page.context.new_page()
    other.set_default_timeout(300_000)
    try:
        other.goto(app_url + "/")
        box = other.get_by_placeholder("就文档提问")
        box.fill("员工每年有几天带薪年假？")
        box.press("Enter")
        other.locator('[data-testid="stChatMessage"]').nth(1).get_by_text("十五天").first.wait_for()
        with sqlite3.connect(f"file:{data_path / 'wendao.db'}?mode=ro", uri=True) as db:
            active = db.execute("SELECT COUNT(*) FROM jobs WHERE filename LIKE '长文%'"
                                " AND status IN ('queued', 'running')").fetchone()[0]
    finally:
        other.close()
    assert active >= 1  # answered while the uploads were still being indexed
    page.screenshot(path=str(shots / "1-library-background-ingest.png"), full_page=True)
    if page.get_by_role("button", name="取消等待中的文件").count():  # waiting files can be cancelled
        page.get_by_role("button", name="取消等待中的文件").click()
        page.get_by_text("已取消").first.wait_for()
    wait_idle(page)  # (the running file finishes in the background while the next tests run)


def ask_to_delete(page):
    """Click 删除知识库 until the confirmation shows (a click landing during a rerun can be dropped)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        page.get_by_role("button", name="删除知识库", exact=True).click()
        try:
            page.get_by_text("确定删除知识库「临时库」").wait_for(timeout=20_000)
            return
        except PlaywrightTimeout:
            wait_idle(page)
    pytest.fail("the delete confirmation never showed")


def test_kb_delete(page, app_url):
    page.goto(app_url + "/library")
    create_kb(page, "临时库")
    page.get_by_text("重命名或删除知识库").click()
    ask_to_delete(page)
    page.get_by_role("button", name="取消", exact=True).click()  # cancel keeps it
    page.get_by_text("确定删除知识库「临时库」").wait_for(state="detached")
    wait_idle(page)
    ask_to_delete(page)
    page.get_by_role("button", name="确认删除知识库", exact=True).click()
    page.get_by_text("知识库：浏览器测试").wait_for()
    wait_idle(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    options = page.get_by_role("option").all_inner_texts()
    assert "临时库" not in options and "浏览器测试" in options
    page.keyboard.press("Escape")


def rename(page, name: str):
    """Rename the current KB, clicking again when a click landed during a rerun and was dropped."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        page.get_by_label("新名称").fill(name)
        wait_idle(page)
        page.get_by_role("button", name="重命名", exact=True).click()
        try:
            page.get_by_text(f"知识库：{name}").wait_for(timeout=30_000)
            wait_idle(page)
            return
        except PlaywrightTimeout:
            wait_idle(page)
            if not page.get_by_label("新名称").is_visible():
                page.get_by_text("重命名或删除知识库").click()
    pytest.fail("the rename never took effect")


def test_renamed_kb_stays_current_and_its_delete_names_it(page, app_url):
    """Issue 22 item 1: after renaming a KB, the page stays on it (not another KB) and the delete
    confirmation names it with its new name."""
    page.goto(app_url + "/library")
    create_kb(page, "临时库C")
    page.get_by_text("重命名或删除知识库").click()
    rename(page, "临时库D")
    if not page.get_by_role("button", name="删除知识库").is_visible():
        page.get_by_text("重命名或删除知识库").click()
    page.get_by_role("button", name="删除知识库").click()
    page.get_by_text("确定删除知识库「临时库D」").wait_for(timeout=30_000)  # the renamed KB, at the first click
    assert "知识库：临时库D" in page.inner_text("body")
    page.get_by_role("button", name="确认删除知识库", exact=True).click()
    page.get_by_text("知识库：临时库D").wait_for(state="detached")
    wait_idle(page)


def test_retrieval_lab(page, app_url, shots):
    page.goto(app_url + "/lab")
    page.get_by_label("查询").fill("年假有几天")
    page.get_by_label("查询").press("Enter")
    page.get_by_text("问题切成的词").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    page.locator("mark").first.wait_for()
    page.screenshot(path=str(shots / "3-lab.png"), full_page=True)


def test_small_evaluation(page, app_url, shots):
    page.goto(app_url + "/evaluation")
    page.get_by_role("button", name="创建「示例」知识库并导入示例文档").click()
    try:  # indexed by the background worker, after what earlier tests left it (a long upload)
        page.get_by_text("示例知识库已就绪").wait_for(timeout=300_000)
    finally:
        page.screenshot(path=str(shots / "4-evaluation-sample.png"), full_page=True)
    wait_idle(page)
    page.get_by_role("button", name="开始评测").click()
    try:
        page.get_by_role("button", name="下载逐题结果 CSV").wait_for()
    finally:
        page.screenshot(path=str(shots / "4-evaluation.png"), full_page=True)
    wait_idle(page)
    page.screenshot(path=str(shots / "4-evaluation.png"), full_page=True)


def test_settings_page(page, app_url, shots):
    page.goto(app_url + "/settings")
    page.get_by_text("向量模型").first.wait_for()
    wait_idle(page)
    page.get_by_role("button", name="测试连接").click()
    page.get_by_text("连接成功").wait_for()
    page.screenshot(path=str(shots / "5-settings.png"), full_page=True)


def pick_options(page, label: str, options: list[str]) -> None:
    """Add `options` to the multiselect labelled `label`."""
    box = page.locator('[data-testid="stMultiSelect"]').filter(has=page.get_by_text(label, exact=True))
    for option in options:
        box.locator("input").click()
        page.get_by_role("option", name=option, exact=True).click()
        wait_idle(page)
    page.keyboard.press("Escape")


def pick_select(page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label` (typed to filter a long list)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True))
    box.locator("input").click()
    box.locator("input").fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


@pytest.mark.slow
def test_reembed_and_chunker_evaluation_keep_running_across_a_reload(chromium, tmp_path, shots):
    """Issue 18: an evaluation comparing chunkers and a switch of the embedding model, started in the
    browser, are background jobs (one worker runs them in turn): after a reload (a new session) and
    in a second tab the pages still show their progress from the job rows, and then their results."""
    torch_model = "multilingual-e5-small（内置，推荐）"  # the bundled torch entry as the pickers name it
    evaluating = re.compile(r"^评测：|等待中：评测")  # the running line, or waiting its turn
    switching = re.compile(f"^重新向量化「{re.escape(torch_model)}」：|等待中：切换向量模型到「{re.escape(torch_model)}」")
    with running_app(tmp_path / "data") as url:
        page = new_page(chromium, [])
        page.goto(url + "/evaluation")
        page.get_by_role("button", name="创建「示例」知识库并导入示例文档").click()
        page.get_by_text("示例知识库已就绪").wait_for()  # the sample ingest is a job too
        wait_idle(page)
        pick_options(page, "切分方式", ["固定 300 字 / 重叠 50", "滑动窗口 4 句 / 步长 2", "按句子 300 字 / 重叠 120"])
        page.get_by_role("button", name="开始评测").click()
        page.get_by_text(evaluating).first.wait_for()
        page.reload()  # a new session: the running evaluation is found again in its job row
        page.get_by_text(evaluating).first.wait_for()
        page.screenshot(path=str(shots / "6-evaluation-after-reload.png"), full_page=True)
        other = page.context.new_page()  # and in a second tab
        try:
            other.goto(url + "/evaluation")
            other.get_by_text(evaluating).first.wait_for()
        finally:
            other.close()

        page.goto(url + "/settings")
        page.get_by_text("向量模型").first.wait_for()
        wait_idle(page)
        pick_select(page, "模型", torch_model)
        page.get_by_role("button", name=f"切换到「{torch_model}」并重新向量化").click()
        page.get_by_text(switching).first.wait_for()  # queued behind the evaluation, or running
        page.reload()
        page.get_by_text(switching).first.wait_for()
        page.screenshot(path=str(shots / "7-reembed-after-reload.png"), full_page=True)
        page.get_by_text(f"已切换到「{torch_model}」").wait_for(timeout=300_000)  # polled until it ends
        page.reload()
        page.get_by_text(f"已切换到「{torch_model}」").wait_for()  # the result stays after a reload

        page.goto(url + "/evaluation")  # the latest finished evaluation's table and charts
        page.get_by_role("button", name="下载逐题结果 CSV").wait_for()
        wait_idle(page)
        body = page.inner_text("body")
        assert "评测完成：33 个问题 × 12 种配置" in body
        assert page.locator('[data-testid="stDataFrame"]').count() >= 1
        assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 2  # Recall@k curves and latency
        page.screenshot(path=str(shots / "8-evaluation-result.png"), full_page=True)
        page.context.close()


PAGES = ("chat", "library", "lab", "evaluation", "settings")


def test_no_page_loads_anything_from_outside(page, app_url, outside_requests):
    """Every page (and everything the tests above did) stays on 127.0.0.1: the page icon is a local
    image, not a :material: / emoji icon that Chromium fetches from a CDN."""
    for name in PAGES:
        page.goto(f"{app_url}/{name}")
        page.locator('[data-testid="stSidebar"]').wait_for()
        wait_idle(page)
    icon = page.locator('link[rel~="icon"]').first.get_attribute("href")
    assert not is_outside(page.evaluate("href => new URL(href, document.baseURI).href", icon)), icon
    assert outside_requests == []
