"""With an LLM configured, the chat bubble is never blank while the answer is prepared (walkthrough s26 #10).

Before: the LLM client was built (the `openai` SDK imported, ~2 s of CPU on the first question) before
retrieval, so the bubble stayed empty until then, and only after it came the extract preview with
「正在阅读 N 段资料…」 that the README promises at once. Now the bubble says 「正在检索相关段落…」 at once and
the preview follows retrieval; the client is built when it is first used, after the preview.
"""
import sys
import time

import pytest

from llm_server import FakeLLMServer
from test_pinpoint import JUDGMENT_A, JUDGMENT_B
from services.answers.answer import stream_answer
from services.config import LLMSettings
from services.documents.chunking import ChunkingConfig
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever

QUESTION = "被告每月向原告支付李x6的生活费多少钱？"


def test_the_preview_comes_before_the_llm_client_is_built(lib, kb, monkeypatch):
    from services.answers import llm as llm_module

    ingest_bytes(lib, kb, JUDGMENT_A.encode(), "a.txt", ChunkingConfig("sentence", 300, 0))
    events = []
    built = llm_module.LLMClient.__init__

    def building(self, settings, *rest):
        events.append("client")
        built(self, settings, *rest)

    monkeypatch.setattr(llm_module.LLMClient, "__init__", building)
    with FakeLLMServer() as server:
        settings = LLMSettings(base_url=server.url, api_key="sk-test", model="echo", timeout=10)
        stream = stream_answer(Retriever(lib, kb), settings, QUESTION,
                               on_preview=lambda extract, status: events.append(("preview", status)))
        text = "".join(stream)
    assert events[0] == ("preview", "正在阅读 1 段资料…") and events[1:] == ["client"]
    assert stream.answer.mode == "llm" and "800元" in text


@pytest.mark.browser
def test_the_chat_bubble_is_never_blank_while_the_llm_works(tmp_path):
    """A fresh app, its first question, a model that takes 4 s per request: from the moment the question
    is shown, the answer bubble says what is happening (searching, then the extract and 正在阅读…)."""
    import os
    import subprocess

    from test_browser import CHROMIUM, browser_page, running_app, wait_idle

    if not CHROMIUM:
        pytest.skip("Debian chromium not installed")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(JUDGMENT_A, encoding="utf-8")
    (docs / "b.txt").write_text(JUDGMENT_B, encoding="utf-8")
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "services", "ingest", "--kb", "资料", str(docs)], check=True,
                   capture_output=True, env={**os.environ, "WENDAO_DATA_DIR": str(data)}, timeout=300)
    with FakeLLMServer(delay_seconds=4) as llm, running_app(data, OPENAI_BASE_URL=llm.url, OPENAI_API_KEY="sk-test",
                                                           WENDAO_LLM_MODEL="echo") as url, browser_page([]) as page:
        page.goto(url)
        box = page.get_by_placeholder("就文档提问，例如：合同的有效期是多久？")
        box.wait_for()
        wait_idle(page)
        box.fill(QUESTION)
        box.press("Enter")
        bubbles = page.locator('[data-testid="stChatMessage"]')
        bubbles.nth(1).wait_for(timeout=60_000)  # the question and the (still empty) answer bubble
        shown_at, seen, blank_since = time.time(), [], None
        while time.time() - shown_at < 20 and not llm.requests:
            text = bubbles.nth(1).inner_text().replace("smart_toy", "").strip()
            if not text:
                blank_since = blank_since or time.time()
                assert time.time() - blank_since < 1.5, f"the answer bubble stayed blank; seen so far: {seen}"
            else:
                blank_since = None
                if not seen or seen[-1] != text:
                    seen.append(text)
            time.sleep(0.05)
        assert llm.requests, "the model was never asked"
        assert any(t.startswith("正在阅读 2 段资料…") and "800元" in t for t in seen), seen  # the preview, before the model answers
