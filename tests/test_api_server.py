"""The HTTP API on a server started the way the README says (`wendao serve`, team mode): the official
`openai` client (stream and not) and curl get cited answers; the pages and health check still answer
on the same port."""
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from fixtures import ZH_PARAGRAPHS, free_port, serving, stop

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _wendao(*args, env, stdin=None):
    out = subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, input=stdin,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    docs = tmp_path_factory.mktemp("docs")
    (docs / "rivers.txt").write_text("".join(ZH_PARAGRAPHS), encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data), "WENDAO_AUTH": "local", "OPENAI_BASE_URL": "",
           "OPENAI_API_KEY": "", "WENDAO_LLM_MODEL": ""}
    _wendao("user", "add", "admin", "--admin", "--password-stdin", env=env, stdin="a-long-password\n")
    _wendao("ingest", "--kb", "河流", str(docs), env=env)
    key = json.loads(_wendao("key", "add", "--kb", "河流", "--scope", "read", "--json", env=env))
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
    yield url, key
    stop(proc)


def test_official_openai_client_gets_cited_answers(server):
    from openai import OpenAI

    url, key = server
    client = OpenAI(base_url=url + "/api/v1", api_key=key["key"])
    reply = client.chat.completions.create(model="河流", messages=[{"role": "user", "content": "长江有多长？"}])
    text = reply.choices[0].message.content
    citations = reply.model_extra["citations"]
    assert "[1]" in text and citations and citations[0]["doc"] == "rivers.txt"
    assert {"doc", "page", "start", "end", "quote"} <= set(citations[0]) and citations[0]["quote"] in "".join(ZH_PARAGRAPHS)
    chunks = list(client.chat.completions.create(model="河流", stream=True,
                                                 messages=[{"role": "user", "content": "长江有多长？"}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "六千三百公里" in streamed
    assert chunks[-1].model_extra["citations"][0]["doc"] == "rivers.txt"
    with pytest.raises(Exception) as refused:  # a read key for 河流 names no other KB
        client.chat.completions.create(model="别的库", messages=[{"role": "user", "content": "长江有多长？"}])
    assert getattr(refused.value, "status_code", None) == 404


def test_curl_retrieval_and_the_pages_on_the_same_port(server):
    url, key = server
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"kb": "河流", "query": "长江有多长", "top_k": 3}, ensure_ascii=False)
    out = subprocess.run([curl, "-s", "-H", f"Authorization: Bearer {key['key']}", "-H", "Content-Type: application/json",
                          "-d", body, url + "/api/v1/retrieval"], capture_output=True, text=True, timeout=60)
    hits = json.loads(out.stdout)["hits"]
    assert 1 <= len(hits) <= 3 and hits[0]["doc"] == "rivers.txt" and "bm25" in hits[0]["scores"]
    anonymous = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", body,
                                url + "/api/v1/retrieval"], capture_output=True, text=True, timeout=60)
    assert anonymous.stdout == "401"
    page = urllib.request.urlopen(url + "/", timeout=10)
    assert page.status == 200 and "frame-ancestors" in page.headers["Content-Security-Policy"]
    docs = urllib.request.urlopen(url + "/api/docs", timeout=10).read().decode()
    assert "swagger" in docs.lower()


def test_api_docs_load_nothing_from_another_host(data_dir):
    """Issue 22: /api/docs (Swagger UI) uses the script and style shipped by fastapi-offline, served under
    /api/docs-assets, so an offline install shows it (FastAPI's own page loads them from a CDN)."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (a dependency since issue 22) is not installed")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from services.api import create_api

    outer = FastAPI()
    outer.mount("/api", create_api())
    client = TestClient(outer)
    page = client.get("/api/docs").text
    assert "cdn." not in page and "https://" not in page.replace("https://fastapi.tiangolo.com", "")
    for asset in ("/api/docs-assets/swagger-ui-bundle.js", "/api/docs-assets/swagger-ui.css"):
        assert asset in page and client.get(asset).status_code == 200
    assert client.get("/api/openapi.json").json()["info"]["title"] == "问道 Wendao API"


def test_stopping_wendao_serve_stops_the_server_on_its_port(tmp_path):
    """`wendao serve` becomes the server (same pid): a SIGTERM to it frees the port. Before, it ran
    Streamlit as a child that kept serving after the command was stopped."""
    import time

    env = {**os.environ, "WENDAO_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
    proc.terminate()
    proc.wait(30)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
        except OSError:
            return
        time.sleep(0.5)
    pytest.fail("the server still answers after `wendao serve` was stopped")
