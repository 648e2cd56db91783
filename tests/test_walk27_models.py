"""Walkthrough s27 (models, fine-tuning, uploads): model-server errors worded like the LLM's (no
exception class names; a malformed address said to be malformed), an embedding server tested before
a KB is switched to it, a fine-tuned model that measured worse marked wherever it is listed and
switched to only with a confirmation, jobs named as users know them (never a data dir path) with
what a queued one waits for, and the few-questions caveat under a fine-tuning result."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services import errors

CLASS_NAMES = ("APIStatusError", "HTTPStatusError", "APIConnectionError", "Error（")


class _Refuses(BaseHTTPRequestHandler):
    """Answers every request 405, as a web app (Streamlit) on the port a model server was expected at."""

    def _refuse(self):
        body = b"Method Not Allowed"
        self.send_response(405)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def refusing_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ws(data_dir):
    """The data dir's workspace without a background worker: queued jobs stay queued."""
    from services.workspace import open_workspace

    return open_workspace(data_dir, background=False)


@pytest.fixture
def fresh_models():
    from services.index import embedding
    from services.search import rerank

    for cache in (embedding._EMBEDDERS, embedding._FAILED, rerank._RERANKERS):
        cache.clear()
    yield
    for cache in (embedding._EMBEDDERS, embedding._FAILED, rerank._RERANKERS):
        cache.clear()


# --- #5: model-server errors in the LLM's words ------------------------------------------------------
def test_a_refusing_server_is_worded_like_the_llm_test_and_names_the_missing_interface(ws, refusing_url, fresh_models):
    from services.config import LLMSettings

    kb = ws.session().create_kb("测试库")
    with pytest.raises(errors.ModelServerError) as embed:
        kb.try_embedding_server(refusing_url + "/v1", "bge-m3")
    with pytest.raises(errors.ModelServerError) as rerank:
        kb.use_rerank_server(refusing_url, "bge-reranker-base")
    with pytest.raises(errors.LLMError) as llm:
        kb.test_llm(LLMSettings(base_url=refusing_url + "/v1", model="qwen", api_key="x"))
    for caught, api in ((embed, "/embeddings"), (rerank, "/rerank"), (llm, "/chat/completions")):
        text = caught.value.message_zh
        assert not any(name in text for name in CLASS_NAMES), text  # was 「调用失败：APIStatusError（405）」
        assert "拒绝了请求（HTTP 405）" in text and f"这个地址不提供 {api} 接口" in text, text
        assert "请检查：接口地址是否正确" in text, text  # one wording for all three (errors.request_rejected_zh)
    assert embed.value.message_zh.startswith("向量模型服务") and rerank.value.message_zh.startswith("重排模型服务")


@pytest.mark.parametrize("url", ["not a url", "127.0.0.1:7997", "http://"])
def test_a_malformed_address_is_said_to_be_malformed_not_unreachable(ws, url, fresh_models):
    kb = ws.session().create_kb("测试库")
    for call in (lambda: kb.try_embedding_server(url, "bge-m3"), lambda: kb.use_embedding_server(url, "bge-m3"),
                 lambda: kb.use_rerank_server(url, "bge-reranker-base")):
        with pytest.raises(errors.MalformedEndpoint) as caught:
            call()
        assert "格式不对" in caught.value.message_zh and "无法连接" not in caught.value.message_zh


def test_an_unknown_failure_never_shows_an_exception_class_name():
    from services.index.served import translate

    class WeirdSDKError(Exception):
        pass

    text = translate(WeirdSDKError("boom"), "http://127.0.0.1:1/v1", "m").message_zh
    assert "WeirdSDKError" not in text and "向量模型服务" in text


# --- #6: the switch to an embedding server is tested first -------------------------------------------
def test_switching_to_an_unreachable_embedding_server_is_refused_before_any_job(ws, fresh_models):
    kb = ws.session().create_kb("测试库")
    with pytest.raises(errors.ModelServerUnreachable) as caught:
        kb.use_embedding_server("http://127.0.0.1:9/v1", "bge-m3")
    assert "无法连接到向量模型服务" in caught.value.message_zh
    assert not kb.jobs(kinds=("reembed",))  # nothing queued: no failure later, on whatever page is open
    assert not kb.embedding_model().startswith("served:")


def test_switching_to_a_working_embedding_server_queues_the_reembed(ws, fresh_models):
    from model_server import FakeModelServer

    kb = ws.session().create_kb("测试库")
    with FakeModelServer(models=["fake-e5"]) as s:
        job = kb.use_embedding_server(s.url, "fake-e5")
    assert [j.id for j in kb.jobs(kinds=("reembed",))] == [job]
    assert any(r["path"].endswith("/embeddings") for r in s.requests)  # probed before the job was queued


# --- #3 and #17: a fine-tuned model that measured worse; few questions --------------------------------
def _metrics(mrr: float) -> dict:
    return {kind: {"recall@1": 0.5, "recall@5": 0.8, "recall@10": 0.9, "mrr@10": mrr} for kind in ("dense", "hybrid")}


def write_card(data_dir, kb, name="小微调", better=False, heldout=6, questions=47) -> str:
    """A fine-tuned model folder as services.tuning.finetune leaves it (card only: nothing loads it here)."""
    folder = data_dir / "models" / name
    folder.mkdir(parents=True)
    card = {"name": name, "base_model": "multilingual-e5-small", "kb": kb.name, "kb_id": kb.id,
            "created_at": time.time() + 1, "pairs": {"train": 34, "heldout": heldout, "dev": 0},
            "settings": {"epochs": 1}, "before": {**_metrics(0.917), "queries": heldout},
            "after": {**_metrics(0.833), "queries": heldout}, "better": better, "losses": [1.0]}
    if questions:
        card.update(questions={"n": questions, "total": 59, "before": _metrics(0.886), "after": _metrics(0.881)},
                    better_on="questions")
    (folder / "wendao_card.json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return str(folder)


def test_a_model_measured_worse_is_marked_with_its_numbers_and_switched_to_only_when_confirmed(ws, data_dir):
    kb = ws.session().create_kb("测试库")
    path = write_card(data_dir, kb)
    [model] = ws.session().finetuned_models()
    verdict = model["verdict"]
    assert verdict["warning"] == "微调后检测变差（0.886 → 0.881），不建议使用"  # the decisive set: the KB's questions
    assert not verdict["better"] and verdict["on"] == "questions"
    assert kb.not_recommended(path) == verdict["warning"]
    with pytest.raises(errors.NeedsConfirmation) as caught:
        kb.reembed(path)
    assert "微调后检测变差（0.886 → 0.881）" in caught.value.message_zh
    assert not kb.jobs(kinds=("reembed",))
    assert kb.reembed(path, confirmed=True)  # the user's explicit choice
    assert kb.not_recommended("multilingual-e5-small") == ""  # other models need no confirmation


def test_few_held_out_questions_carry_a_caveat_and_the_decision_says_so(ws, data_dir):
    from services.tuning.finetune import verdict

    kb = ws.session().create_kb("测试库")
    write_card(data_dir, kb, questions=0)  # decided on the 6 held-out questions
    [model] = ws.session().finetuned_models()
    v = model["verdict"]
    assert v["caveats"]["heldout"] == "检验题只有 6 道，差异可能只是偶然"
    assert v["on"] == "heldout" and v["warning"] == "微调后检测变差（0.917 → 0.833），不建议使用"
    assert "检验题只有 6 道，差异可能只是偶然" in v["decision"] and "不提供切换" in v["decision"]
    many = {**model, "before": {**_metrics(0.8), "queries": 40}, "after": {**_metrics(0.9), "queries": 40},
            "better": True}
    assert verdict(many)["caveats"]["heldout"] == "" and verdict(many)["warning"] == ""
    assert "偶然" not in verdict(many)["decision"]
    few_better = {**many, "before": {**_metrics(0.8), "queries": 12}, "after": {**_metrics(0.9), "queries": 12}}
    assert "检验题只有 12 道" in verdict(few_better)["decision"]  # offered, with the caveat


# --- #12: jobs named as users know them, and what a queued one waits for ------------------------------
def test_a_queued_switch_is_named_by_the_model_and_says_what_it_waits_for(ws, data_dir):
    session = ws.session()
    other = session.create_kb("进度测试")
    kb = session.create_kb("测试库")
    path = write_card(data_dir, kb)
    upload = other.upload("a.txt", "长江是中国最长的河流。".encode())
    job_id = kb.reembed(path, confirmed=True)
    job = kb.job(job_id)
    assert kb.job_label(job) == "切换向量模型到「微调：小微调（测试库）」"
    assert kb.waiting_for(job) == "排在知识库「进度测试」的上传「a.txt」之后"
    assert str(data_dir) not in kb.job_label(job) + kb.waiting_for(job)
    assert other.waiting_for(other.job(upload)) == ""  # first in line
    ws.lib.store.jobs.claim(upload)  # the upload runs now: still what the switch waits for
    assert kb.waiting_for(job) == "排在知识库「进度测试」的上传「a.txt」之后"


def test_a_job_of_a_kb_one_may_not_see_is_not_named(data_dir, monkeypatch):
    from services.access import Principal
    from services.workspace import open_workspace

    monkeypatch.setenv("WENDAO_AUTH", "local")
    ws = open_workspace(data_dir, background=False)
    root = ws.session()
    users = {n: root.add_user(n, "password-123", admin=(n == "admin")) for n in ("admin", "alice", "bob")}
    who = {n: Principal("user", u.id, u.name, u.admin) for n, u in users.items()}
    secret = ws.session(who["alice"]).create_kb("机密")
    secret.upload("x.txt", "机密内容。".encode())
    mine = ws.session(who["bob"]).create_kb("公开")
    job = mine.job(mine.reindex())
    assert mine.waiting_for(job) == "排在另一个知识库的后台任务之后"  # bob may not learn 机密 exists


# --- the pages: 设置 marks the model and asks for a confirmation; the waiting line ---------------------
def _settings(kb_id: int):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["kb_id"] = kb_id
    at.run()
    at.switch_page("components/pages/settings.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "warning", "info", "success", "error")
                     for e in at.get(kind))


@pytest.mark.slow  # AppTest runs of the whole settings page
def test_settings_marks_a_worse_model_and_switches_only_after_the_confirmation(ws, data_dir):
    kb = ws.session().create_kb("测试库")
    path = write_card(data_dir, kb)
    at = _settings(kb.id)
    picker = at.selectbox(key=f"settings_{kb.id}_embedder")
    assert picker.format_func(path) == "微调：小微调（测试库）（不建议使用）"
    picker.set_value(path).run()
    assert "微调后检测变差（0.886 → 0.881），不建议使用" in _shown(at)
    switch = next(b for b in at.button if b.label.startswith("切换到「微调：小微调"))
    assert switch.disabled  # not before the explicit confirmation
    at.checkbox(key=f"settings_{kb.id}_reembed_confirm").check().run()
    switch = next(b for b in at.button if b.label.startswith("切换到「微调：小微调"))
    assert not switch.disabled
    switch.click().run()
    assert not at.exception, [e.value for e in at.exception]
    [job] = kb.jobs(kinds=("reembed",))
    assert job.filename == path
    text = _shown(at)
    # the queued switch by its name, never the folder's path (「等待中：「/tmp/walk27/models/小微调」」)
    assert "切换向量模型到「微调：小微调（测试库）」" in text and str(data_dir) not in text, text


@pytest.mark.slow
def test_settings_says_existing_documents_keep_their_chunking(ws):
    kb = ws.session().create_kb("测试库")
    text = _shown(_settings(kb.id))
    assert "已上传的文档保持原来的切分" in text and "按这些设置重新切分" in text


@pytest.mark.slow
def test_finetune_page_shows_the_caveat_the_decision_and_not_a_switch_made_on_settings(ws, data_dir, tmp_path):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.index.ingest import ingest_bytes
    from tiny_models import tiny_embedder

    kb = ws.session().create_kb("测试库")
    row = ws.lib.kb("测试库")
    ws.lib.store.update_kb_settings(kb.id, embedding_model=str(tiny_embedder(tmp_path / "base")))
    ingest_bytes(ws.lib, ws.lib.kb("测试库"), "长江是中国最长的河流，全长约6300公里。".encode(), "长江.txt")
    assert row.id == kb.id
    write_card(data_dir, kb)  # 6 held-out questions, decided on the 47 saved ones
    from services.config import served_name

    served = served_name("http://127.0.0.1:9/v1", "bge-m3")
    failed = ws.lib.store.jobs.add(kb.id, "reembed", served, {"model": served})
    ws.lib.store.jobs.claim(failed)
    ws.lib.store.jobs.finish(failed, "failed", {"reason": "无法连接到向量模型服务 http://127.0.0.1:9/v1，请检查接口地址是否正确、服务是否已启动。"})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["kb_id"] = kb.id
    at.run()
    at.switch_page("components/pages/finetune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = _shown(at)
    assert "检验题只有 6 道，差异可能只是偶然" in text, text
    assert "没有变好，因此不提供切换（向量检索的名次得分 0.886 → 0.881）" in text, text
    assert "微调后检测变差（0.886 → 0.881），不建议使用" in text  # in the list of fine-tuned models too
    assert "无法连接到向量模型服务" not in text, text  # a switch made on 设置 reports there, not under 开始微调
    settings = _settings(kb.id)
    shown = _shown(settings)  # where it was made, saying what failed: the switch, not a fine-tuning
    assert "重新向量化「模型服务 · bge\\-m3 · http" in shown and "」：失败 — 无法连接到向量模型服务" in shown, shown
