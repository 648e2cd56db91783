"""A refusal through the OpenAI-compatible API delivers what it promises (walkthrough s26 #7): the text
「以下是最接近的段落，供参考。」 is followed by those passages, listed as the chat, the export and the CLI
list them, streamed or not; before, nothing followed and the client had no passages in the text."""
import threading
import time

import pytest

from fixtures import ZH_PARAGRAPHS, free_port
from services import worker
from services.answers.answer import REFUSAL_TEXT

QUESTION = "合同的有效期是多久？"  # the README's example; no contract in the KB


@pytest.fixture
def api_url(data_dir, monkeypatch):
    import uvicorn

    from services.api import create_api
    from services.workspace import open_workspace

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "WENDAO_LLM_MODEL", "WENDAO_AUTH"):
        monkeypatch.delenv(name, raising=False)
    ws = open_workspace(data_dir)
    kb = ws.session().create_kb("河流")
    kb.upload("rivers.txt", "".join(ZH_PARAGRAPHS).encode())
    assert worker.wait_idle(ws.lib, 120)
    key = kb.create_key("read").key
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", key
    server.should_exit = True
    thread.join(10)
    ws.lib.close()


def test_api_refusal_lists_the_closest_passages(api_url, data_dir):
    from openai import OpenAI

    from services.workspace import open_workspace

    url, key = api_url
    client = OpenAI(base_url=url + "/v1", api_key=key)
    reply = client.chat.completions.create(model="河流", messages=[{"role": "user", "content": QUESTION}])
    text = reply.choices[0].message.content
    extra = reply.model_extra["wendao"]
    assert extra["mode"] == "refused" and text.startswith(REFUSAL_TEXT + "以下是最接近的段落，供参考。")
    sources = extra["sources"]
    assert sources and reply.model_extra["citations"] == []
    listed = text.split("供参考。", 1)[1]
    for n, s in enumerate(sources, start=1):  # each passage, numbered, with its document, as the chat lists them
        assert f"[{n}] 《{s['doc']}》" in listed and s["text"].strip().splitlines()[0] in listed
    chunks = list(client.chat.completions.create(model="河流", stream=True, messages=[{"role": "user", "content": QUESTION}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    # the chat's export of the same refusal lists the same passages
    kb = open_workspace(data_dir).session().kb("河流")
    stream = kb.ask(QUESTION)
    stream.finish()
    assert listed.strip() in kb.export_conversation(stream.conversation)[1]


@pytest.mark.slow  # starts Python processes
def test_cli_refusal_lists_the_closest_passages(tmp_path, data_dir):
    import os
    import subprocess
    import sys

    (tmp_path / "rivers.txt").write_text("".join(ZH_PARAGRAPHS), encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "OPENAI_BASE_URL": ""}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "services", "ingest", "--kb", "河流", str(tmp_path / "rivers.txt")],
                   cwd=root, env=env, check=True, capture_output=True, timeout=180)
    out = subprocess.run([sys.executable, "-m", "services", "ask", "--kb", "河流", QUESTION],
                         cwd=root, env=env, capture_output=True, text=True, timeout=180)
    head, _, listed = out.stdout.partition("供参考。")
    assert head.startswith(REFUSAL_TEXT) and "- [1] 《rivers.txt》" in listed and "  > " in listed
