"""Team mode in a real browser (issue 19): against `wendao serve` with WENDAO_AUTH=local, Chromium is sent
to the sign-in page, signs in, uploads, asks, signs out; a reload shows the sign-in page again; a second
browser context signed in as another user sees none of the first user's KBs or conversations."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import ZH_PARAGRAPHS, free_port, serving, stop
from test_browser import ARGS, CHROMIUM, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("WENDAO_REQUIRE_BROWSER"), reason="Debian chromium not installed")]
PASSWORD = "team-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("team-data")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data), "WENDAO_AUTH": "local", "OPENAI_BASE_URL": "",
           "OPENAI_API_KEY": "", "WENDAO_LLM_MODEL": ""}
    for name in ("alice", "bob"):
        subprocess.run([sys.executable, "-m", "services", "user", "add", name, "--password-stdin"], cwd=ROOT, env=env,
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
    yield url, data
    stop(proc)


def sign_in(page, url, name):
    page.goto(url + "/")
    page.wait_for_url("**/api/auth/login")  # nothing of the app before sign-in
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(url + "/**")
    page.get_by_text(f"已登录：{name}").wait_for()


def test_sign_in_upload_ask_sign_out_and_privacy(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, data = server
    doc = tmp_path / "河流.txt"
    doc.write_text("".join(ZH_PARAGRAPHS), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        alice = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN").new_page()
        alice.set_default_timeout(120_000)
        # a wrong password is refused in Chinese, no cookie
        alice.goto(url + "/api/auth/login")
        alice.get_by_label("用户名").fill("alice")
        alice.get_by_label("密码").fill("wrong-password")
        alice.get_by_role("button", name="登录").click()
        alice.get_by_text("用户名或密码不正确").wait_for()
        assert alice.get_by_label("用户名").input_value() == "alice"  # kept: only the password is typed again
        assert alice.get_by_label("密码").input_value() == ""
        alice.screenshot(path="/tmp/team-login-wrong.png")
        sign_in(alice, url, "alice")
        # 退出登录 is drawn like the sidebar's buttons (it was a blue underlined link)
        look = alice.locator("a.wd-sign-out").evaluate(
            "e => {const s = getComputedStyle(e); return [s.textDecorationLine, s.borderTopStyle, s.color, e.offsetHeight]}")
        assert look[0] == "none" and look[1] == "solid" and look[2] != "rgb(0, 0, 238)" and look[3] >= 36, look
        alice.goto(url + "/library")
        wait_idle(alice)
        alice.get_by_label("知识库名称").fill("爱丽丝的资料")
        alice.get_by_role("button", name="创建").click()
        alice.get_by_text("知识库：爱丽丝的资料").wait_for()
        wait_idle(alice)
        alice.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(doc)])
        alice.get_by_role("button", name="开始索引 1 个文件").click()
        alice.get_by_text("文件 1/1（全部完成）").wait_for(timeout=180_000)
        alice.goto(url + "/")
        box = alice.get_by_placeholder("就文档提问")
        box.fill("长江有多长？")
        box.press("Enter")
        answer = alice.locator('[data-testid="stChatMessage"]').nth(1)
        answer.locator("button.wd-cite").first.wait_for()  # the kept turn, with its citation
        wait_idle(alice)
        alice.screenshot(path="/tmp/team-chat.png")
        assert "六千三百公里" in answer.inner_text()
        assert "c=" in alice.url  # the conversation's public id is in the URL
        conversation_url = alice.url

        # bob, in another browser context, sees none of alice's KBs, and not her conversation by its URL
        bob = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN").new_page()
        bob.set_default_timeout(120_000)
        sign_in(bob, url, "bob")
        wait_idle(bob)
        assert "爱丽丝的资料" not in bob.inner_text("body")
        bob.goto(conversation_url)
        wait_idle(bob)
        body = bob.inner_text("body")
        assert "爱丽丝的资料" not in body and "长江有多长" not in body

        # alice signs out; a reload shows the sign-in page
        alice.get_by_text("退出登录").click()
        alice.wait_for_url("**/api/auth/login")
        alice.goto(url + "/")
        alice.wait_for_url("**/api/auth/login")
        assert alice.get_by_role("button", name="登录").is_visible()
        browser.close()
    # nothing of the passwords in the data dir in clear
    raw = b"".join(f.read_bytes() for f in data.glob("wendao.db*"))
    assert PASSWORD.encode() not in raw
