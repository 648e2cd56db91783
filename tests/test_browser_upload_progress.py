"""Upload progress that tells the truth, in Chromium against `wendao serve`: in a batch, each document
appears in the list (and the sidebar's count) as soon as it is searchable by keywords, while the next
files still wait; the embedding step shows the vectors' own progress ("向量 2/6，语义检索稍后可用"), not
a full "关键词可检索 6/6" bar. The vectors come from a slow fake model server (1 s per request of 2
texts), so each file spends a few seconds between "searchable" and "vectors in"."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import ZH_PARAGRAPHS, free_port, serving, stop
from model_server import FakeModelServer
from test_browser import ARGS, CHROMIUM, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]


@pytest.fixture()
def server(tmp_path):
    with FakeModelServer(models=["fake-e5"], delay=1.0) as models:
        env = {**os.environ, "WENDAO_DATA_DIR": str(tmp_path / "data"), "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "",
               "WENDAO_LLM_MODEL": "", "WENDAO_EMBEDDING_BASE_URL": models.url, "WENDAO_EMBEDDING_MODEL": "fake-e5",
               "WENDAO_EMBEDDING_API_KEY": "", "WENDAO_MODEL_SERVER_BATCH": "2", "WENDAO_MODEL_SERVER_CONCURRENCY": "1"}
        port = free_port()
        proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
        yield url
        stop(proc)


def test_documents_appear_as_each_file_is_searchable_and_vectors_show_apart(server, tmp_path):
    from playwright.sync_api import sync_playwright

    files = []
    for i in range(3):
        f = tmp_path / f"资料{i + 1}.txt"
        f.write_text("\n\n".join(f"第{i + 1}份资料第{k + 1}节。" + ZH_PARAGRAPHS[k % 3] * 3 for k in range(6)),
                     encoding="utf-8")
        files.append(str(f))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN").new_page()
        page.set_default_timeout(120_000)
        page.goto(server + "/library")
        page.wait_for_selector('[data-testid="stSidebar"]')
        wait_idle(page)
        page.get_by_label("知识库名称").fill("进度测试")
        page.get_by_role("button", name="创建").click()
        page.get_by_text("知识库：进度测试").wait_for()
        wait_idle(page)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
        page.get_by_role("button", name="开始索引 3 个文件").click()

        # the first file is searchable by keywords: its vectors' progress is shown apart
        vectors = page.get_by_text("语义检索稍后可用").first
        vectors.wait_for(timeout=120_000)
        line = vectors.inner_text()
        assert "已可按关键词检索" in line and "向量 " in line, line
        main = page.locator('[data-testid="stMain"]')
        assert "关键词可检索 " not in main.inner_text().replace("已可按关键词检索", "")

        # ... and it is in the document list and the sidebar's count while the others still wait
        page.get_by_role("heading", name="文档列表").wait_for(timeout=30_000)
        # (1 or 2: on a loaded machine the second file can finish before the sidebar is redrawn)
        page.locator('[data-testid="stSidebar"]').get_by_text(re.compile(r"^[12] 个文档 · ")).wait_for(timeout=30_000)
        assert "后台进行中" in main.inner_text(), main.inner_text()

        # the whole batch ends with every document listed and the log folded
        page.locator('[data-testid="stExpander"]').filter(has_text="文件 3/3（全部完成）").wait_for(timeout=180_000)
        page.locator('[data-testid="stSidebar"]').get_by_text("3 个文档 · ").wait_for(timeout=30_000)
        browser.close()
