"""AppTest: each page's main path, headless (no browser)."""
import re

import pytest
from streamlit.testing.v1 import AppTest

from fixtures import ZH_PARAGRAPHS, make_pdf
from llm_server import FakeLLMServer
from conftest import ROOT

GBK_TEXT = "第一章 江河\n" + "".join(ZH_PARAGRAPHS)


def app(page=None):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"components/pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


def finish_jobs(at):
    """Wait for the background indexer to finish what the page queued, then re-run the page."""
    from services import worker
    from services.index.library import open_library

    assert worker.wait_idle(open_library(), 120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def answer_texts(at) -> list[str]:
    """The answers shown (the text of each answer component, its [n] markers as "[n]")."""
    import json

    return ["".join(p["t"] if "t" in p else f"[{p['n']}]" for p in json.loads(e.proto.json)["parts"])
            for e in at.get("bidi_component") if e.proto.component_name == "wendao_answer"]


def plain(markdown: str) -> str:
    """What Markdown source displays: untrusted text (file names…) is backslash-escaped."""
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.fixture
def filled(data_dir):
    """A knowledge base with one document, made through the services (same process)."""
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("地理", create=True)
    ingest_bytes(lib, kb, GBK_TEXT.encode("gbk"), "rivers.txt")
    return lib, kb


def test_library_create_upload_list_delete(data_dir):
    at = app("library")
    at.text_input[0].input("我的资料")
    at.button[0].click().run()  # the form's 创建 button
    assert "知识库：我的资料" in [s.value for s in at.subheader]
    pdf = make_pdf(["第一页" + ZH_PARAGRAPHS[0], "第二页" + ZH_PARAGRAPHS[2]])
    at.get("file_uploader")[0].set_value([("rivers.txt", GBK_TEXT.encode("gbk"), "text/plain"),
                                          ("geo.pdf", pdf, "application/pdf"),
                                          ("locked.pdf", make_pdf(["x"], encrypt_password="p"), "application/pdf")])
    at.run()
    button(at, "开始索引").click().run()
    assert not at.exception
    finish_jobs(at)
    assert any("文件 3/3（全部完成）" in e.label for e in at.expander)  # the finished log is folded
    assert sum("已索引" in s.value for s in at.success) == 2
    assert any("locked.pdf" in plain(w.value) and "加密" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert sorted(table["文件名"]) == ["geo.pdf", "rivers.txt"] and (table["片段数"] > 0).all()
    assert at.metric[0].label == "片段数"  # chunk preview is shown
    # delete a document: tick its row in the table (the one way to delete), delete, confirm
    assert not [b for b in at.button if b.label == "删除这个文档"]
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    button(at, "删除选中的 1 个文档").click().run()
    assert any("确定删除「" in w.value and table["文件名"][0].split(".")[0] in w.value for w in at.warning), [w.value for w in at.warning]
    next(b for b in at.button if b.label == "确认删除").click().run()
    assert len(at.dataframe[0].value) == 1


def test_library_duplicate_upload_reported(filled):
    at = app("library")
    at.get("file_uploader")[0].set_value([("copy.txt", GBK_TEXT.encode("utf-8"), "text/plain")])
    at.run()
    button(at, "开始索引").click().run()
    finish_jobs(at)
    assert any("copy.txt" in plain(w.value) and "内容相同" in w.value for w in at.info)


def test_chat_answers_with_citations(filled):
    at = app("chat")
    at.chat_input[0].set_value("长江全长多少公里？").run()
    assert not at.exception
    texts = " ".join(answer_texts(at))
    assert "六千三百公里" in texts and "以下内容摘自文档" in texts
    assert any("检索详情" in e.label for e in at.expander)


def test_chat_empty_kb_points_to_library(data_dir):
    at = app("chat")
    assert any("还没有可以检索的文档" in i.value for i in at.info)


def test_lab_shows_stage_scores_and_compares(filled):
    at = app("lab")
    at.text_input[0].input("黄河 母亲河").run()
    table = at.dataframe[0].value
    assert {"关键词", "向量", "合并", "内容"} <= set(table.columns)
    assert table.iloc[0]["文档"] == "rivers.txt"  # a TXT has no pages
    at.text_input[1].input("不存在的一句话").run()
    assert any("不在知识库的任何文档中" in w.value for w in at.warning)
    at.text_input[1].input("母亲河").run()
    assert any("关键词检索第 1 名" in i.value and "最终第 1 名" in i.value for i in at.info)
    at.toggle(key="lab_compare").set_value(True).run()
    assert [m.label for m in at.metric][:3] == ["两组都找到的段落", "只有 A 找到的段落", "只有 B 找到的段落"]


@pytest.mark.slow
def test_evaluation_sample_run(data_dir):
    at = app("evaluation")
    button(at, "创建「示例」知识库").click().run()
    assert not at.exception
    finish_jobs(at)  # the sample documents are indexed by the background worker
    at.multiselect[0].set_value(["bm25", "hybrid"]).run()
    button(at, "开始评测").click().run()
    assert not at.exception
    finish_jobs(at)  # so is the evaluation
    table = at.dataframe[0].value
    assert len(table) == 2 and (table["前5条命中"] > 0.5).all()
    assert any("下载逐题结果" in b.label for b in at.get("download_button"))


def test_settings_persist_and_test_connection(filled):
    lib, kb = filled
    at = app("settings")
    at.radio(key=f"settings_{kb.id}_mode").set_value("bm25").run()
    assert lib.store.get_kb(kb.id).settings["retrieval"]["mode"] == "bm25"
    with FakeLLMServer() as server:
        at.text_input[0].input(server.url)
        at.text_input[1].input("echo")
        at.text_input[2].input("sk-not-saved")
        next(b for b in at.button if b.label == "测试连接").click().run()
        assert any("连接成功" in s.value for s in at.success), [e.value for e in at.error]
        assert server.requests[-1]["auth"] == "Bearer sk-not-saved"
        assert "llm" not in lib.store.get_kb(kb.id).settings  # testing never saves
        next(b for b in at.button if b.label == "保存").click().run()
    saved = lib.store.get_kb(kb.id).settings["llm"]
    assert saved["model"] == "echo" and saved["base_url"] == server.url and "api_key" not in saved


@pytest.mark.slow
def test_cli_ask_and_the_chat_page_give_the_same_mode_and_citations(data_dir, monkeypatch):
    """Issue 18: the CLI and the chat page resolve a KB's saved LLM endpoint the same way (through
    the core's kb.ask), so the same question gets the same kind of answer with the same citations."""
    import json
    import os
    import subprocess
    import sys

    from services.config import LLMSettings
    from services.index.ingest import ingest_bytes
    from services.index.library import Library
    from services.index.vectors import close_all
    from services.workspace import Workspace

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "WENDAO_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)  # only the KB's saved endpoint configures an LLM
    question = "长江全长多少公里？"
    with FakeLLMServer() as server:
        lib = Library(data_dir)  # set up, then let go of the data dir (the CLI process opens it next)
        kb = Workspace(lib, background=False).session().create_kb("地理")
        ingest_bytes(lib, kb.row, GBK_TEXT.encode("gbk"), "rivers.txt")
        kb.save_llm(LLMSettings(base_url=server.url, model="echo"))
        lib.close()
        close_all()
        cli = subprocess.run([sys.executable, "-m", "services", "ask", "--kb", "地理", "--json", question],
                             cwd=ROOT, env={**os.environ, "WENDAO_DATA_DIR": str(data_dir)},
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr[-2000:]
        from_cli = json.loads(cli.stdout.strip().splitlines()[-1])

        at = app("chat")
        at.chat_input[0].set_value(question).run()
        assert not at.exception, [e.value for e in at.exception]
        from services.workspace import open_workspace

        handle = open_workspace().session().kb("地理")
        [turn] = handle.turns(at.query_params["c"])
        from_page = turn["answer"]

    def cited(answer):
        return [(c["n"], c["doc"], c["page"], c["quote"], c["supported"]) for c in answer["citations"]]

    assert from_page["mode"] == "llm" and cited(from_page)  # the saved endpoint answered on the page
    assert from_cli["mode"] == from_page["mode"], "CLI ask does not use the KB's saved LLM endpoint"
    from services.documents.pageview import public_pages  # outside, a TXT's page is null (walkthrough s26 item 14)

    assert cited(from_cli) == cited(public_pages(from_page))
