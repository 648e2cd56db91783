"""Embedding and rerank models behind model servers (OpenAI-compatible /embeddings, /rerank), against
a real HTTP server in the test process (tests/model_server.py). The real third-party server
(Infinity) is exercised in tests/test_infinity.py."""
from __future__ import annotations

import pytest

from model_server import FakeModelServer
from services import errors

DOCS = {
    "rivers.txt": "长江是中国最长的河流，全长约6300公里，流经十一个省级行政区。黄河是中国第二长河，被称为中华民族的母亲河。",
    "mountains.txt": "珠穆朗玛峰是世界最高峰，海拔约8849米，位于中国与尼泊尔边境。泰山位于山东，是五岳之首。",
    "leave.txt": "员工工作满一年后每年可享受五天带薪年假，满十年后每年可享受十天年假。病假需要提供医院证明。",
}


@pytest.fixture
def server():
    with FakeModelServer(models=["fake-e5", "fake-reranker"]) as s:
        yield s


@pytest.fixture
def fresh_models():
    """Forget loaded models (as in a new process) before and after the test."""
    from services.index import embedding
    from services.search import rerank

    for cache in (embedding._EMBEDDERS, embedding._FAILED, rerank._RERANKERS):
        cache.clear()
    embedding.clear_query_cache()
    yield
    for cache in (embedding._EMBEDDERS, embedding._FAILED, rerank._RERANKERS):
        cache.clear()
    embedding.clear_query_cache()


@pytest.fixture
def served_env(monkeypatch, server, fresh_models):
    monkeypatch.setenv("WENDAO_EMBEDDING_BASE_URL", server.url)
    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", "fake-e5")
    monkeypatch.delenv("WENDAO_EMBEDDING_API_KEY", raising=False)
    return server


def ingest_all(lib, kb, docs=DOCS):
    from services.index.ingest import ingest_bytes

    return [ingest_bytes(lib, kb, text.encode("utf-8"), name) for name, text in docs.items()]


def search(lib, kb, query, mode="dense", **settings):
    from services.config import RetrievalSettings
    from services.search.retrieval import Retriever

    return Retriever(lib, kb, RetrievalSettings(mode=mode, **settings)).search(query)


def test_env_server_embeds_new_kbs_and_search_finds_answers(served_env, lib):
    kb = lib.kb("服务库", create=True)
    assert all(r.status == "ok" and not r.warnings for r in ingest_all(lib, kb))
    assert lib.embedding_model(kb).startswith("served:")
    assert "fake-e5" in lib.embedding_model(kb) and served_env.url in lib.embedding_model(kb)
    assert search(lib, kb, "珠穆朗玛峰海拔多少").hits[0].doc == "mountains.txt"
    assert search(lib, kb, "带薪年假有几天").hits[0].doc == "leave.txt"
    # e5-style names get e5's prefixes: passages and queries arrive at the server prefixed
    sent = [t for batch in served_env.embedding_requests() for t in batch]
    assert any(t.startswith("passage: 长江") for t in sent) and "query: 带薪年假有几天" in sent
    from services.index.maintenance import check

    assert check(lib, kb)["ok"]


def test_prefixes_are_settings_of_the_served_entry(monkeypatch, served_env, lib):
    monkeypatch.setenv("WENDAO_EMBEDDING_QUERY_PREFIX", "为这个句子生成表示以用于检索相关文章：")
    monkeypatch.setenv("WENDAO_EMBEDDING_PASSAGE_PREFIX", "")
    kb = lib.kb("前缀", create=True)
    ingest_all(lib, kb)
    search(lib, kb, "泰山在哪里")
    sent = [t for batch in served_env.embedding_requests() for t in batch]
    assert "为这个句子生成表示以用于检索相关文章：泰山在哪里" in sent
    assert not any(t.startswith("passage: ") for t in sent)


def test_requests_are_batched_by_count_and_tokens_with_limited_concurrency(monkeypatch, served_env):
    from services.index.embedding import load_embedder
    from services.index.models import default_embedder

    monkeypatch.setenv("WENDAO_MODEL_SERVER_BATCH", "4")
    monkeypatch.setenv("WENDAO_MODEL_SERVER_BATCH_TOKENS", "200")
    monkeypatch.setenv("WENDAO_MODEL_SERVER_CONCURRENCY", "2")
    served_env.delay = 0.05
    embedder = load_embedder(default_embedder())
    texts = [f"第{i}段：" + "长江流经十一个省" * (1 + i % 5) for i in range(30)] + ["很长的一段" * 60]
    served_env.requests.clear()
    served_env.max_in_flight = 0
    vectors = embedder.encode_passages(texts)
    batches = served_env.embedding_requests()
    assert sum(len(b) for b in batches) == len(texts) and max(len(b) for b in batches) <= 4
    from services.index.served import estimate_tokens

    assert all(sum(estimate_tokens(t) for t in b) <= 200 for b in batches if len(b) > 1)
    assert served_env.max_in_flight == 2  # concurrent, but never more than the limit
    from model_server import fake_vector

    expected = fake_vector("passage: " + texts[7], embedder.dim)
    assert abs(float(vectors[7] @ expected) - 1.0) < 1e-5  # vectors come back in input order


@pytest.mark.parametrize("base64", ["yes", "ignore", "reject"])
def test_vectors_arrive_whichever_number_format_the_server_speaks(base64, served_env):
    from model_server import fake_vector
    from services.index.embedding import load_embedder
    from services.index.models import default_embedder

    served_env.base64 = base64
    embedder = load_embedder(default_embedder())
    vector = embedder.encode_passages(["黄河是中国第二长河"])[0]
    assert abs(float(vector @ fake_vector("passage: 黄河是中国第二长河", embedder.dim)) - 1.0) < 1e-5
    assert embedder.encoding == ("float" if base64 == "reject" else "base64")


@pytest.mark.parametrize("case, error, words", [
    ("unreachable", "ModelServerUnreachable", "无法连接"),
    ("wrong key", "ModelServerAuth", "API Key"),
    ("not served", "ModelNotServed", "没有提供模型"),
    ("not listed", "ModelNotServed", "它提供：fake-e5"),
])
def test_clear_chinese_errors(case, error, words, fresh_models):
    from services import errors
    from services.config import served_name
    from services.index.embedding import load_embedder

    with FakeModelServer(models=["fake-e5"], key="right-key") as s:
        url, model, key = s.url, "fake-e5", "right-key"
        if case == "unreachable":
            s.stop()
        elif case == "wrong key":
            key = "wrong-key"
        elif case == "not served":
            model = "bge-m3"
        elif case == "not listed":  # a single-model server answers any name, but lists its one model
            s.models.append("bge-m3")
            s.listed = ["fake-e5"]
            model = "bge-m3"
        with pytest.raises(getattr(errors, error)) as caught:
            load_embedder(served_name(url, model), key)
    assert words in caught.value.message_zh
    assert "right-key" not in caught.value.message_zh and "wrong-key" not in caught.value.message_zh


def test_wrong_dimension_midway_is_a_clear_error(served_env):
    from services import errors
    from services.index.embedding import load_embedder
    from services.index.models import default_embedder

    embedder = load_embedder(default_embedder())
    served_env.dim = 128  # the server swaps to a 128-d model
    with pytest.raises(errors.ModelServerBadResponse) as caught:
        embedder.encode_passages(["长江"])
    assert "维度是 128" in caught.value.message_zh and "重建索引" in caught.value.message_zh


def test_another_model_under_the_same_name_asks_for_a_rebuild(served_env, lib):
    from services import errors
    from services.index import embedding
    from services.index.maintenance import check, reindex

    kb = lib.kb("换模型", create=True)
    ingest_all(lib, kb)
    assert search(lib, kb, "泰山", mode="hybrid").hits
    served_env.variant = 1  # same name, same dimension, other weights
    embedding._EMBEDDERS.clear()  # the app restarts (or re-probes)
    embedding.clear_query_cache()
    with pytest.raises(errors.IndexMismatch) as caught:
        search(lib, kb, "泰山")
    assert "重建索引" in caught.value.message_zh and "模型服务 · fake-e5" in caught.value.message_zh
    assert not check(lib, kb)["ok"]
    reindex(lib, kb)
    assert search(lib, kb, "珠穆朗玛峰海拔").hits[0].doc == "mountains.txt"
    assert check(lib, kb)["ok"]


def test_a_running_app_notices_the_swap_at_its_next_probe(monkeypatch, served_env, lib):
    from services import errors

    monkeypatch.setenv("WENDAO_MODEL_SERVER_REPROBE_S", "0")  # probe before every use (default: every 10 minutes)
    kb = lib.kb("运行中换模型", create=True)
    ingest_all(lib, kb)
    assert search(lib, kb, "泰山").hits
    served_env.variant = 2  # swapped behind the same name while the app keeps its client
    with pytest.raises(errors.IndexMismatch):
        search(lib, kb, "珠穆朗玛峰")


def test_same_model_again_keeps_its_identity(served_env, lib):
    """A restart (new client, new probe) of the same model reuses the index without a rebuild."""
    from services.index import embedding

    kb = lib.kb("重启", create=True)
    ingest_all(lib, kb)
    before = lib.dense.record(kb)["fingerprint"]
    embedding._EMBEDDERS.clear()
    assert lib.embedder(kb).fingerprint_id == before
    assert search(lib, kb, "黄河被称为什么").hits[0].doc == "rivers.txt"


def test_server_key_goes_only_to_its_own_endpoint(monkeypatch, lib, fresh_models):
    from services.config import served_name
    from services.index.model_servers import use_embedding_server

    with FakeModelServer(models=["fake-e5"], key="server-secret") as mine, FakeModelServer(models=["fake-e5"]) as other:
        monkeypatch.setenv("WENDAO_EMBEDDING_BASE_URL", mine.url)
        monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", "fake-e5")
        monkeypatch.setenv("WENDAO_EMBEDDING_API_KEY", "server-secret")
        kb = lib.kb("密钥", create=True)
        ingest_all(lib, kb)
        assert set(mine.auth_headers) == {"Bearer server-secret"}
        # a visitor points this KB at another host: the server's key is not sent there
        use_embedding_server(lib, kb, other.url, "fake-e5", "query: ", "passage: ")
        search(lib, kb, "泰山")
        assert other.auth_headers and "Bearer server-secret" not in other.auth_headers
        settings = lib.store.get_kb(kb.id).settings
        assert "server-secret" not in repr(settings)
        # a key typed for the other host is saved for that host only and sent only there
        use_embedding_server(lib, kb, other.url, "fake-e5", "query: ", "passage: ", api_key="visitor-key")
        search(lib, kb, "珠穆朗玛峰")
        assert "Bearer visitor-key" in other.auth_headers and "Bearer visitor-key" not in mine.auth_headers
        assert lib.server_key(kb, served_name(mine.url, "fake-e5")) == "server-secret"


def test_server_down_mid_ingest_leaves_kb_consistent_and_vectors_follow(monkeypatch, served_env, lib):
    from services.index.maintenance import check
    from services.index.pending import queue_when_servers_back
    from services import worker

    monkeypatch.setenv("WENDAO_MODEL_SERVER_RETRIES", "0")  # fail fast; retries are the SDK's own
    kb = lib.kb("断线", create=True)
    names = list(DOCS)
    first = ingest_all(lib, kb, {names[0]: DOCS[names[0]]})[0]
    assert first.status == "ok" and not first.warnings
    served_env.stop()  # the server goes away mid-ingest
    rest = ingest_all(lib, kb, {n: DOCS[n] for n in names[1:]})
    assert all(r.status == "ok" for r in rest)
    assert all("模型服务恢复后会在后台自动补全向量" in r.warnings[-1] and "无法连接" in r.warnings[-1] for r in rest)
    report = check(lib, kb)
    assert report["ok"], report["problems"]
    assert report["indexes"]["dense"]["vectors_pending"] > 0
    result = search(lib, kb, "带薪年假 天", mode="hybrid")  # keyword search keeps working
    assert result.hits[0].doc == "leave.txt" and "无法连接" in result.notice and "只按关键词" in result.notice
    assert queue_when_servers_back(lib) == 0  # still down: nothing queued, no failed jobs
    served_env.start()  # back on the same port
    assert queue_when_servers_back(lib) == 2
    assert worker.wait_idle(lib, 60)
    assert not lib.store.dense_pending(kb.id)
    assert search(lib, kb, "带薪年假有几天").hits[0].doc == "leave.txt"
    report = check(lib, kb)
    assert report["ok"] and report["indexes"]["dense"]["vectors_pending"] == 0


def test_server_down_before_first_upload_still_indexes_keywords(monkeypatch, lib, fresh_models):
    import time

    with FakeModelServer(models=["fake-e5"]) as s:
        monkeypatch.setenv("WENDAO_EMBEDDING_BASE_URL", s.url)
        monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", "fake-e5")
        s.stop()
        kb = lib.kb("未启动", create=True)
        result = ingest_all(lib, kb, {"leave.txt": DOCS["leave.txt"]})[0]
        assert result.status == "ok" and "无法连接" in result.warnings[-1]
        assert search(lib, kb, "年假", mode="bm25").hits[0].doc == "leave.txt"
        from services.index.maintenance import check

        assert check(lib, kb)["ok"]
        started = time.perf_counter()  # searches meanwhile answer by keywords at once, without waiting on the server
        result_down = search(lib, kb, "带薪年假有几天", mode="hybrid")
        assert time.perf_counter() - started < 1.0 and "只按关键词" in result_down.notice
        assert result_down.hits[0].doc == "leave.txt"
        s.start()
        from services.index import embedding
        from services.index.ingest import complete_pending_vectors

        embedding._FAILED.clear()  # as SERVER_RETRY_AFTER_S later

        assert complete_pending_vectors(lib, kb, result.doc_id) > 0
        assert search(lib, kb, "带薪年假有几天").hits[0].doc == "leave.txt"


@pytest.mark.parametrize("shape", ["cohere", "tei"])
def test_rerank_server_in_either_shape(shape, monkeypatch, lib, fresh_models):
    from services.config import RetrievalSettings

    with FakeModelServer(models=["fake-reranker"], rerank_shape=shape) as s:
        monkeypatch.setenv("WENDAO_RERANK_BASE_URL", s.url.removesuffix("/v1"))
        monkeypatch.setenv("WENDAO_RERANK_MODEL", "fake-reranker")
        monkeypatch.setenv("WENDAO_MODEL_SERVER_BATCH", "2")
        settings = RetrievalSettings(mode="bm25")
        assert settings.rerank and settings.reranker_model.startswith("served:")  # on by default with a server
        kb = lib.kb("重排", create=True)
        ingest_all(lib, kb)
        from services.search.retrieval import Retriever

        result = Retriever(lib, kb, settings).search("珠穆朗玛峰海拔多少米")
        assert not result.notice
        assert result.hits[0].doc == "mountains.txt"
        scored = [h for h in result.candidates if "rerank" in h.scores]
        assert scored and sorted(h.ranks["rerank"] for h in scored) == list(range(1, len(scored) + 1))
        assert all(len(r["body"].get("documents") or r["body"].get("texts")) <= 2 for r in s.requests)


def test_rerank_server_down_answers_without_reranking(monkeypatch, lib, fresh_models):
    from services.config import RetrievalSettings, served_name
    from services.search.retrieval import Retriever

    with FakeModelServer(models=["fake-reranker"]) as s:
        kb = lib.kb("重排断线", create=True)
        ingest_all(lib, kb)
        s.stop()
        settings = RetrievalSettings(mode="bm25", rerank=True, reranker_model=served_name(s.url, "fake-reranker"))
        result = Retriever(lib, kb, settings).search("年假")
        assert result.hits[0].doc == "leave.txt" and "无法连接到重排模型服务" in result.notice
        again = Retriever(lib, kb, settings).search("年假")  # right after: not waiting on the server again
        assert again.timings_ms["rerank_attempt"] < 100 and "rerank" not in again.timings_ms and "无法连接到重排模型服务" in again.notice


def test_use_rerank_server_saves_settings_and_key(lib, fresh_models):
    from services import errors
    from services.index.kb_settings import retrieval_settings
    from services.search.rerank import use_rerank_server

    with FakeModelServer(models=["fake-reranker"], key="rk") as s:
        kb = lib.kb("重排设置", create=True)
        with pytest.raises(errors.ModelServerAuth):
            use_rerank_server(lib, kb, s.url, "fake-reranker", "bad")
        assert not retrieval_settings(lib, kb).rerank  # nothing saved on failure
        use_rerank_server(lib, kb, s.url, "fake-reranker", "rk")
        r = retrieval_settings(lib, kb)
        assert r.rerank and "fake-reranker" in r.reranker_model and "rk" not in r.reranker_model
        assert lib.server_key(kb, r.reranker_model) == "rk"


@pytest.mark.slow
def test_lab_shows_rerank_ranks_and_scores_from_a_rerank_server(data_dir, monkeypatch, fresh_models):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.index.library import open_library

    with FakeModelServer(models=["fake-reranker"]) as s:
        monkeypatch.setenv("WENDAO_RERANK_BASE_URL", s.url)
        monkeypatch.setenv("WENDAO_RERANK_MODEL", "fake-reranker")
        lib = open_library(data_dir)
        ingest_all(lib, lib.kb("地理", create=True))
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("components/pages/lab.py").run()
        at.text_input[0].input("珠穆朗玛峰海拔").run()
        assert not at.exception, [e.value for e in at.exception]
        table = at.dataframe[0].value
        assert table.iloc[0]["文档"] == "mountains.txt"
        # one column per stage, "第n名·score": the rerank server ranked every hit, in the table's order
        assert table["重排"].tolist() == [f"第{i}名·{c.split('·')[1]}" for i, c in enumerate(table["重排"], start=1)]
        assert all(len(c.split("·")) == 2 and float(c.split("·")[1]) >= -1e9 for c in table["重排"])
        assert any(r["path"].endswith("/rerank") for r in s.requests)


@pytest.mark.slow
def test_settings_page_switches_a_kb_to_an_embedding_server(data_dir, monkeypatch, fresh_models):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("地理", create=True)
    ingest_all(lib, kb)
    with FakeModelServer(models=["fake-e5"], key="team-key") as s:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("components/pages/settings.py").run()

        def field(label):
            return next(t for t in at.text_input if t.label == label)
        field("模型服务地址").input(s.url)
        field("服务端的模型名").input("fake-e5")
        next(b for b in at.button if b.label == "测试模型服务").click().run()
        assert any("API Key" in e.value for e in at.error)  # 401, said in Chinese, nothing saved
        assert not lib.embedding_model(kb).startswith("served:")
        field("查询前缀").input("query: ")
        field("段落前缀").input("passage: ")
        field("模型服务 API Key").input("team-key")
        next(b for b in at.button if b.label == "切换到该服务并重新向量化").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("重新向量化" in x.value for x in at.success), [e.value for e in at.error]
        from services import worker

        assert worker.wait_idle(lib, 120)  # the re-embed runs as a background job
        assert "fake-e5" in lib.embedding_model(kb) and "team-key" not in lib.embedding_model(kb)
        assert search(lib, kb, "珠穆朗玛峰海拔多少").hits[0].doc == "mountains.txt"
        fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)  # another visit: the key stays server-side
        fresh.run()
        fresh.switch_page("components/pages/settings.py").run()
        key_field = next(t for t in fresh.text_input if t.label == "模型服务 API Key")
        assert key_field.value == "" and "已保存" in key_field.proto.placeholder
        assert "team-key" not in "".join(str(t.value) for t in fresh.text_input)


def test_fine_tuning_a_served_kb_starts_from_the_served_model_or_says_why_not(lib, tmp_path):
    """A KB embedded by a model server: fine-tuning trains locally from the folder the server runs
    (its weights are reachable here) and otherwise refuses in Chinese with what to do."""
    from services.config import served_name
    from services.tuning.finetune import trainable_base

    kb = lib.store.create_kb("served-ft")
    folder = tmp_path / "my-e5"
    folder.mkdir()
    lib.store.update_kb_settings(kb.id, embedding_model=served_name("http://127.0.0.1:9/v1", str(folder)))
    assert trainable_base(lib, kb) == str(folder)
    lib.store.update_kb_settings(kb.id, embedding_model=served_name("http://127.0.0.1:9/v1", "bge-on-gpu"))
    with pytest.raises(errors.ModelLoadError) as caught:
        trainable_base(lib, kb)
    assert "模型服务" in caught.value.message_zh and "bge-on-gpu" in caught.value.message_zh
