"""The 7 Dec walkthrough (s26) item 6: what FastAPI itself answers — validation errors, malformed JSON,
unknown routes and methods, oversize bodies — comes back in the README's shape
{"error": {"message": 中文, "type", "code"}} with its HTTP status and the field named; the OpenAPI
document declares the API key and the session cookie (Swagger UI's Authorize button) and Chinese tags."""
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fixtures import ZH_PARAGRAPHS

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def client(data_dir):
    """The API mounted under /api as components/server.py mounts it, over a KB 资料 with one TXT; a
    write key for it."""
    from services import worker
    from services.access import LOCAL
    from services.api import create_api
    from services.workspace import open_workspace

    ws = open_workspace(data_dir)
    kb = ws.session(LOCAL).create_kb("资料")
    kb.upload("rivers.txt", "".join(ZH_PARAGRAPHS).encode())
    assert worker.wait_idle(ws.lib, 120)
    key = kb.create_key("write")
    outer = FastAPI()
    outer.mount("/api", create_api())
    test_client = TestClient(outer)
    test_client.headers["Authorization"] = f"Bearer {key.key}"
    yield test_client
    ws.lib.close()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "detail" not in response.text, body  # was {"detail": [...]} in English
    error = body["error"]
    assert error["code"] == status and error["type"] and CJK.search(error["message"]), error
    return error


def test_upload_under_the_wrong_field_name_says_to_use_file(client):
    r = client.post("/api/v1/kbs/资料/documents", files={"files": ("a.txt", "新的内容。".encode())})
    error = error_of(r, 422)
    assert error["param"] == "file" and "file 字段" in error["message"] and "收到的字段：files" in error["message"]
    error = error_of(client.post("/api/v1/kbs/资料/documents", data={"file": "合同.pdf"}), 422)  # -F file=合同.pdf, no @
    assert error["param"] == "file" and "应为上传的文件" in error["message"] and "file=@" in error["message"]
    assert client.post("/api/v1/kbs/资料/documents", files={"file": ("a.txt", "新的内容。".encode())}).status_code == 202


def test_an_unexpected_failure_is_a_500_in_the_same_shape(client, monkeypatch):
    from services.api import app

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "_workspace", broken)
    client = TestClient(client.app, raise_server_exceptions=False)
    error = error_of(client.get("/api/v1/kbs"), 500)
    assert error["type"] == "InternalError" and "boom" not in error["message"]


@pytest.mark.parametrize("body, field, said", [
    ({"kb": "资料"}, "query", "请求体字段 query：缺少（必填）"),
    ({"kb": "资料", "query": ["长江"]}, "query", "请求体字段 query：应为字符串"),
    ({"kb": "资料", "query": "长江", "top_k": 0}, "top_k", "请求体字段 top_k：不能小于 1（收到「0」）"),
    ({"kb": "资料", "query": "长江", "top_k": "many"}, "top_k", "请求体字段 top_k：应为整数（收到「many」）"),
])
def test_retrieval_validation_errors_name_the_field(client, body, field, said):
    error = error_of(client.post("/api/v1/retrieval", json=body), 422)
    assert error["param"] == field and said in error["message"], error


def test_path_parameter_malformed_json_and_missing_body(client):
    error = error_of(client.get("/api/v1/jobs/None"), 422)
    assert "路径参数 job_id：应为整数（收到「None」）" in error["message"] and error["param"] == "job_id"
    error = error_of(client.post("/api/v1/retrieval", content='{"kb": "资料",'.encode(), headers={"Content-Type": "application/json"}), 400)
    assert "不是有效的 JSON" in error["message"]  # cannot be parsed: 400, as the README's table says
    assert "缺少请求体" in error_of(client.post("/api/v1/retrieval"), 422)["message"]


def test_unknown_route_and_wrong_method(client):
    error = error_of(client.get("/api/v1/nothing-here"), 404)
    assert "/api/v1/nothing-here" in error["message"] and "/api/docs" in error["message"]
    r = client.put("/api/v1/retrieval", json={})
    error = error_of(r, 405)
    assert r.headers["allow"] == "POST" and "PUT" in error["message"] and "POST" in error["message"]


def test_oversize_body_has_the_same_shape(client, monkeypatch):
    from services.api import app

    monkeypatch.setattr(app, "JSON_LIMIT", 1024)
    error = error_of(client.post("/api/v1/retrieval", content=b"x" * 4096, headers={"Content-Type": "application/json"}), 413)
    assert "过大" in error["message"]


def test_the_official_openai_client_reads_the_chinese_message(client):
    import openai

    api = openai.OpenAI(base_url="http://testserver/api/v1", api_key=client.headers["Authorization"][7:],
                        http_client=client, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        api.chat.completions.create(model="资料", messages=[{"content": "长江有多长？"}])
    assert "messages[0].role：缺少（必填）" in refused.value.message and refused.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        api.chat.completions.create(model="资料", messages=[{"role": "user", "content": "长江有多长？"}],
                                    extra_body={"top_k": "many"})
    assert "top_k" in refused.value.message and CJK.search(refused.value.message)


def test_openapi_declares_the_key_and_the_cookie_and_tags_every_route(client):
    from services import auth
    from services.api.framework import TAGS

    schema = client.get("/api/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKey"] == {**schemes["APIKey"], "type": "http", "scheme": "bearer"}  # Swagger's Authorize button
    assert schemes["SessionCookie"]["in"] == "cookie" and schemes["SessionCookie"]["name"] == auth.COOKIE
    assert all(CJK.search(t["description"]) for t in schema["tags"])
    names = {t["name"] for t in TAGS}
    operations = [(path, op) for path, ops in schema["paths"].items() for op in ops.values()]
    assert len(operations) >= 7
    for path, op in operations:
        assert op["tags"] and set(op["tags"]) <= names, (path, op.get("tags"))  # was the group "default"
        assert {"APIKey": []} in op["security"] and {"SessionCookie": []} in op["security"], path
    upload = schema["paths"]["/v1/kbs/{kb}/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = schema["components"]["schemas"][upload["$ref"].rsplit("/", 1)[-1]] if "$ref" in upload else upload
    assert form["required"] == ["file"] and "file 字段" in form["properties"]["file"]["description"]


@pytest.mark.slow
@pytest.mark.browser
def test_api_docs_page_has_an_authorize_button_and_chinese_groups(tmp_path):
    """Swagger UI at /api/docs on `wendao serve`: the Authorize button (shown only when the OpenAPI
    document declares security schemes) offers the API key, and the routes are grouped by the Chinese tags."""
    import os
    import sys

    from conftest import ROOT
    from fixtures import free_port, serving, stop
    from test_browser import ARGS, CHROMIUM

    if not CHROMIUM:
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port,
                        {**os.environ, "WENDAO_DATA_DIR": str(tmp_path / "data")}, ROOT)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url + "/api/docs")
            page.locator("button.authorize").first.click()
            page.get_by_text("APIKey").first.wait_for()
            page.get_by_text("SessionCookie").first.wait_for()
            page.keyboard.press("Escape")
            for tag in ("问答", "检索", "知识库与文档", "任务"):
                page.locator(f"h3.opblock-tag >> text={tag}").first.wait_for()
            assert page.locator("h3.opblock-tag >> text=default").count() == 0
            browser.close()
    finally:
        stop(proc)
