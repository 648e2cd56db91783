"""Retrieval: fusion, BM25 tokens, window merge, Qdrant server path, real model loading code
(tiny random BERT embedder and cross-encoder), re-embedding, embedding cache, CLI search/eval."""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from fixtures import ZH_PARAGRAPHS
from services import errors
from services.search import fusion
from services.index.bm25 import document_vector, query_vector, term_index
from services.documents.chunking import ChunkingConfig
from services.config import RetrievalSettings
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever
from services.documents.tokenizer import tokenize
from tiny_models import tiny_cross_encoder, tiny_embedder

GEO = "中国地理\n" + "".join(ZH_PARAGRAPHS) + "北京是中国的首都。上海是最大的城市。"


# --- units ----------------------------------------------------------------------------------
def test_rrf_and_weighted_fusion():
    bm25 = {1: 10.0, 2: 5.0, 3: 1.0}
    dense = {3: 0.9, 1: 0.8, 4: 0.7}
    rrf = fusion.rrf({"bm25": bm25, "dense": dense}, k=60)
    assert rrf[1] == pytest.approx(1 / 61 + 1 / 62) and max(rrf, key=rrf.get) == 1
    w = fusion.weighted({"bm25": bm25, "dense": dense}, {"bm25": 0.3, "dense": 0.7})
    assert w[1] == pytest.approx(0.3 * 1 + 0.7 * 0.5) and w[4] == pytest.approx(0.0) and w[2] == pytest.approx(0.3 * 4 / 9)
    assert fusion.min_max({5: 2.0}) == {5: 1.0}


def test_tokens_drop_punctuation_and_stopwords_and_handle_traditional():
    assert tokenize("长江的长度是多少？！") == ["长江", "长度"]
    assert tokenize("臺灣的首都在哪裡") == tokenize("台湾的首都在哪里") == ["台湾", "首都", "哪里"]


def test_term_spans_highlight_traditional_text():
    from services.documents.tokenizer import query_terms, term_spans

    text = "馬祖列島距離中國大陸很近。"
    spans = term_spans(text, query_terms("马祖列岛离大陆多远"))
    assert [text[a:b] for a, b in spans] == ["馬祖列島", "離", "大陸"]


def test_term_spans_highlight_full_width_and_keep_offsets_after_length_changing_case():
    from services.documents.tokenizer import query_terms, term_spans

    text = "İİ中国的ＧＤＰ增长，Gdp 与 gdp。"
    spans = term_spans(text, query_terms("中国GDP增长"))
    assert [text[a:b] for a, b in spans] == ["中国", "ＧＤＰ增长", "Gdp", "gdp"]
    kangxi = "⽤⽔量"  # Kangxi radicals as PDFs emit them (⽤ U+2F64 for 用)
    assert [kangxi[a:b] for a, b in term_spans(kangxi, query_terms("用水量"))] == [kangxi]


_VARIANTS = {c: [c, c.upper(), chr(ord(c) - 0x20 + 0xFF00), chr(ord(c.upper()) - 0x20 + 0xFF00)]
             for c in "gdpxyz"} | {"长": ["长", "長"], "江": ["江"], "用": ["用", "⽤"], "水": ["水", "⽔"]}
_ALPHABET = "".join(v for vs in _VARIANTS.values() for v in vs) + "İıßΣσ\u0301\u00a0 ，。的e"


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=_ALPHABET, max_size=40), query=st.text(alphabet=_ALPHABET, max_size=12))
def test_every_highlighted_span_normalises_to_a_query_term(text, query):
    from services.documents.tokenizer import comparable, query_terms, term_matches, term_spans

    terms = query_terms(query)
    matches = term_matches(text, terms)
    assert all(comparable(text[a:b]) == term and term in terms for a, b, term in matches)
    spans = term_spans(text, terms)
    assert all(a < b and b < c for (a, b), (c, _) in zip(spans, spans[1:]))  # ordered, apart
    covered = {i for a, b, _ in matches for i in range(a, b)}
    assert covered == {i for a, b in spans for i in range(a, b)}  # spans are exactly the matches


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["gdp", "长江", "用水", "xyz"]), st.integers(0, 3), st.integers(0, 2 ** 12)),
                min_size=1, max_size=6))
def test_every_spelling_of_a_term_is_highlighted(parts):
    """Terms written in any mix of full-width, upper-case, traditional or radical forms are found
    at their exact offsets."""
    from services.documents.tokenizer import term_spans

    text, placed = "", []
    for term, gap, choice in parts:
        text += "，的" * gap
        spelled = "".join(_VARIANTS[c][(choice >> (2 * i)) % len(_VARIANTS[c])] for i, c in enumerate(term))
        placed.append((len(text), len(text) + len(spelled)))
        text += spelled + "。"
    spans = term_spans(text, ["gdp", "长江", "用水", "xyz"])
    assert all(any(a <= x and y <= b for a, b in spans) for x, y in placed), (text, spans)


def test_user_dictionary_keeps_domain_terms(tmp_path, monkeypatch):
    assert "量子纠缠态" not in tokenize("量子纠缠态的制备")
    d = tmp_path / "dict.txt"
    d.write_text("量子纠缠态 100 n\n", encoding="utf-8")
    monkeypatch.setenv("WENDAO_USER_DICT", str(d))
    assert "量子纠缠态" in tokenize("量子纠缠态的制备")


def test_bm25_vectors_saturate_and_normalise_length():
    short = document_vector(["长江"] * 3, avgdl=10)
    long = document_vector(["长江"] * 3 + ["其他"] * 30, avgdl=10)
    i = short.indices.index(term_index("长江"))
    assert short.values[i] > long.values[long.indices.index(term_index("长江"))]
    assert document_vector(["长江"] * 100, avgdl=100).values[0] < 2.2 + 1e-9  # k1 + 1
    assert query_vector("长江的长度").indices == sorted({term_index("长江"), term_index("长度")})


# --- retrieval end to end -------------------------------------------------------------------
def test_modes_and_per_stage_diagnostics(lib, kb):
    ingest_bytes(lib, kb, GEO.encode(), "geo.txt", ChunkingConfig("sentence", 50, 0))
    r = Retriever(lib, kb)
    for mode in ("bm25", "dense", "hybrid"):
        hits = r.search("珠穆朗玛峰的海拔", mode=mode).hits
        assert "珠穆朗玛峰" in hits[0].text
    hit = r.search("珠穆朗玛峰的海拔", mode="hybrid").hits[0]
    assert set(hit.scores) >= {"bm25", "dense", "fused"} and hit.ranks["bm25"] == 1
    rrf = Retriever(lib, kb, RetrievalSettings(fusion="rrf")).search("黄河 母亲河").hits[0]
    assert "黄河" in rrf.text and rrf.scores["fused"] <= 2 / 61


def test_window_hits_merge_into_one_continuous_passage(lib, kb):
    text = "".join(f"第{i}句讲的是长江的第{i}个特点。" for i in range(12))
    ingest_bytes(lib, kb, text.encode(), "w.txt", ChunkingConfig("window", window=3, stride=1))
    hits = Retriever(lib, kb, RetrievalSettings(mode="bm25", top_k=3)).search("长江 特点").hits
    top = hits[0]
    assert len(top.chunk_ids) > 1
    assert top.text == text[top.start:top.end]
    spans = sorted((h.start, h.end) for h in hits)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # merged passages do not overlap
    unmerged = Retriever(lib, kb, RetrievalSettings(mode="bm25", top_k=3, merge_windows=False)).search("长江 特点").hits
    assert all(len(h.chunk_ids) == 1 for h in unmerged)


def test_qdrant_server_code_path(data_dir):
    """The server backend (qdrant-client; its :memory: mode stands in for a server) behaves the same."""
    from qdrant_client import QdrantClient

    from services.index.library import Library
    from services.index.vectors import ServerBackend

    lib = Library(data_dir, backend=ServerBackend(client=QdrantClient(":memory:")))
    kb = lib.kb("server", create=True)
    r = ingest_bytes(lib, kb, GEO.encode(), "geo.txt", ChunkingConfig("sentence", 50, 0))
    assert lib.backend.count(lib.dense.collection(kb)) == r.chunks == len(lib.keyword.index(kb).ids)
    for mode in ("bm25", "dense", "hybrid"):
        assert "黄河" in Retriever(lib, kb).search("母亲河是哪条河", mode=mode).hits[0].text
    lib.delete_document(kb, r.doc_id)
    assert lib.backend.count(lib.dense.collection(kb)) == 0


def test_embedding_cache_avoids_re_embedding(lib, kb):
    first = ingest_bytes(lib, kb, GEO.encode(), "geo.txt")
    other = lib.kb("别的库", create=True)
    again = ingest_bytes(lib, other, GEO.encode(), "geo.txt")
    assert first.embedded == first.chunks and again.embedded == 0


# --- real model loading code with tiny local models -------------------------------------------
@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return tiny_embedder(root / "emb"), tiny_cross_encoder(root / "ce")


@pytest.mark.torch
def test_local_sentence_transformer_embedder_and_reembed(lib, kb, tiny_paths):
    from services.index.embedding import load_embedder
    from services.index.reembed import reembed

    emb_path, _ = tiny_paths
    r = ingest_bytes(lib, kb, GEO.encode(), "geo.txt", ChunkingConfig("sentence", 50, 0))
    embedder = load_embedder(str(emb_path))
    assert embedder.dim == 32 and embedder.encode_query("长江").shape == (32,)
    seen = []
    assert reembed(lib, kb, str(emb_path), lambda d, t: seen.append((d, t))) == r.chunks
    assert seen[-1] == (r.chunks, r.chunks)
    assert lib.embedding_model(lib.kb(kb.name)) == str(emb_path)
    hits = Retriever(lib, lib.kb(kb.name)).search("长江", mode="dense").hits
    assert len(hits) == 5 and all(h.scores["dense"] <= 1.0 for h in hits)


@pytest.mark.torch
def test_cross_encoder_reranks_candidates(lib, kb, tiny_paths):
    _, ce_path = tiny_paths
    ingest_bytes(lib, kb, GEO.encode(), "geo.txt", ChunkingConfig("sentence", 50, 0))
    settings = RetrievalSettings(rerank=True, reranker_model=str(ce_path), rerank_top_n=4)
    hits = Retriever(lib, kb, settings).search("长江有多长").hits
    reranked = [h for h in hits if "rerank" in h.scores]
    assert len(reranked) == 4 and [h.ranks["rerank"] for h in reranked] == [1, 2, 3, 4]
    assert [h.scores["rerank"] for h in reranked] == sorted((h.scores["rerank"] for h in reranked), reverse=True)


@pytest.mark.torch
def test_reranker_token_budget_batches_and_oom_fallback(tiny_paths):
    from services.search.rerank import Reranker

    r = Reranker(str(tiny_paths[1]), device="cpu", token_budget=4096)
    # padded length x batch size stays within the budget: three short pairs together, the long one alone
    assert r._batches([("问", "短")] * 3 + [("问", "长" * 50)], 64) == [[0, 1, 2], [3]]
    calls = []
    real = r._score

    def flaky(pairs, budget):
        calls.append(budget)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pairs, budget)

    r._score, r.device = flaky, "cuda"
    r.model.model.to = lambda *a, **k: r.model.model  # stay on CPU in this test
    assert len(r.score("问", ["一", "二"])) == 2
    assert calls == [4096, 2048]  # retried with half the token budget


@pytest.mark.torch
def test_unloadable_model_fails_fast_with_chinese_error(monkeypatch):
    """An uncached hub model with the hub unreachable fails in seconds (not after the hub client's
    retries, 78 s here), naming the model and what to do."""
    import time

    from services.index.embedding import load_embedder
    from services.search.rerank import Reranker

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(errors.ModelLoadError) as exc:
        load_embedder("no-such-org/no-such-model")
    assert "no-such-org/no-such-model" in exc.value.message_zh and "HF_ENDPOINT" in exc.value.message_zh
    with pytest.raises(errors.ModelLoadError):
        Reranker("bge-reranker-base")
    assert time.perf_counter() - started < 10


@pytest.mark.torch
def test_search_without_reranker_model_still_answers(lib, kb, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    ingest_bytes(lib, kb, GEO.encode(), "geo.txt")
    result = Retriever(lib, kb, RetrievalSettings(rerank=True, reranker_model="bge-reranker-large")).search("黄河")
    assert result.hits and "bge-reranker-large" in result.notice and "未重排" in result.notice


# --- CLI ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_search_batch_and_eval(tmp_path, data_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "geo.txt").write_text(GEO, encoding="utf-8")
    start = GEO.index("珠穆朗玛峰")
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        {"id": "a", "question": "世界最高峰是哪座山", "doc_file": "docs/geo.txt",
         "answer_spans": [{"text": "珠穆朗玛峰", "start_in_doc": start}]},
        {"id": "b", "question": "黄河被称为什么", "doc_file": "docs/geo.txt",
         "answer_spans": [{"text": "母亲河", "start_in_doc": GEO.index("母亲河")}]}]), encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("ingest", "--kb", "k", str(docs))
    lines = [json.loads(x) for x in cli("search", "--kb", "k", "--mode", "hybrid", "--queries", str(questions)).splitlines()]
    assert [x["id"] for x in lines] == ["a", "b"]
    hit = lines[0]["hits"][0]
    assert set(hit) >= {"doc", "start", "end", "page", "text", "scores", "ranks"}
    assert GEO[hit["start"]:hit["end"]] == hit["text"] and "珠穆朗玛峰" in hit["text"]
    single = json.loads(cli("search", "--kb", "k", "--mode", "bm25", "--top-k", "2", "--json", "黄河"))
    assert len(single["hits"]) <= 2 and "bm25" in single["hits"][0]["scores"]
    report = json.loads(cli("eval", "--kb", "k", "--questions", str(questions), "--json"))
    for mode in ("bm25", "dense", "hybrid"):
        r = report["results"][mode]
        assert set(r) >= {"recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10", "doc_recall@5",
                          "p50_ms", "p95_ms"}
        assert r["recall@5"] == 1.0
    batch = json.loads(cli("ask", "--kb", "k", "--questions", str(questions), "--json", "--no-llm"))
    assert batch["answer_contains_gold"] >= 0.5 and batch["refusal_rate"] == 0.0
