"""A reranker trained on the KB's own documents (issue 20): training pairs from the fine-tuning
pipeline, a tiny cross-encoder run saved as a CrossEncoder folder the retriever reranks with, offered
and switched on only when better, the background job, the CLI."""
import json
import os
import subprocess
import sys

import pytest

from services.index.ingest import ingest_bytes
from services.tuning import rerank_training as rt
from services.tuning.finetune import delete_model, finetuned_models, generate_pairs, mine_negatives
from services.tuning.rerank_training import RerankSettings, examples_from_pairs, finetune_reranker
from test_finetune import CONFIG, TOPICS, question_lines
from tiny_models import tiny_embedder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = RerankSettings(batch_size=8, max_pairs=40, max_length=64)


@pytest.fixture
def tiny_kb(lib, tmp_path, monkeypatch):
    """The fine-tuning tests' six-topic KB on a tiny random embedder, which also serves as the
    reranker's starting point. Its random scores would make positive-aware mining reject every
    candidate, so mining runs without the dense model here (that rule is tested in test_finetune)."""
    model = tiny_embedder(tmp_path / "base")
    kb = lib.kb("重排", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(model))
    for name, text in TOPICS.items():
        ingest_bytes(lib, kb, text.encode(), f"{name}.txt", CONFIG)
    monkeypatch.setattr(rt, "current_embedder", lambda lib_, kb_: None)
    return kb, str(model)


@pytest.mark.torch
def test_each_query_gets_its_chunk_as_positive_and_non_overlapping_chunks_as_negatives(lib, tiny_kb):
    kb, _ = tiny_kb
    data = TINY.data_settings()
    pairs = mine_negatives(lib, kb, generate_pairs(lib, kb, data), data, count=3, same_document=True)
    examples = examples_from_pairs(lib, kb, pairs)
    groups = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    assert len(groups) >= 8
    for group in groups.values():
        assert [e.label for e in group].count(1.0) == 1 and 1 <= len(group) - 1 <= 3
        assert len({e.query for e in group}) == 1
    chunks = {c.id: c for batch in lib.store.iter_chunks(kb.id, 1000) for c in batch}
    for p in pairs:
        own = chunks[p.chunk_id]
        for i in p.negative_ids:  # another document, or a part of its own that does not overlap the chunk
            other = chunks[i]
            assert other.doc_id != own.doc_id or other.end <= own.start or other.start >= own.end
        if p.kind == "cloze" and p.negative_ids:
            positive = next(e for e in examples if e.query == p.query and e.label == 1.0)
            assert p.query not in positive.passage  # the query's own sentence is taken out


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_tiny_reranker_is_a_crossencoder_folder_the_retriever_reranks_with(lib, tiny_kb):
    from dataclasses import replace

    from sentence_transformers import CrossEncoder

    from services.index.kb_settings import retrieval_settings
    from services.search.retrieval import Retriever
    from services.tuning.evaluation import save_question_set

    kb, base = tiny_kb
    save_question_set(lib, kb, question_lines())
    steps, stages = [], []
    card = finetune_reranker(lib, kb, "小重排", TINY, on_step=lambda p: steps.append(p.step), base=base,
                             on_stage=stages.append)
    assert stages == ["data", "before", "train", "after"]
    assert steps == list(range(1, len(card["losses"]) + 1)) and steps
    assert set(card["results"]) == {"heldout", "questions"}
    for result in card["results"].values():
        assert {"recall@1", "recall@5", "mrr@10", "coverage@1000chars"} <= set(result["off"]) == set(result["on"])
    assert card["results"]["questions"]["off"]["questions"] == 4  # the question off the KB is left out
    assert card["kind"] == "reranker" and card["better_on"] == "questions"
    assert [m["name"] for m in finetuned_models(lib, "reranker")] == ["小重排"]
    assert finetuned_models(lib) == []  # not offered as an embedding model
    scores = CrossEncoder(card["path"], device="cpu").predict([("长江流到哪里", "长江最后注入东海。")])
    assert 0.0 <= float(scores[0]) <= 1.0  # a plain CrossEncoder folder with a sigmoid score
    settings = replace(retrieval_settings(lib, kb), rerank=True, reranker_model=card["path"])
    hits = Retriever(lib, kb, settings).search("长江最后注入哪个海").hits
    assert hits and all("rerank" in h.scores for h in hits)


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_reranking_is_switched_on_only_when_the_reranker_is_better(lib, tiny_kb, monkeypatch):
    from services.index.kb_settings import retrieval_settings

    kb, base = tiny_kb
    mrr = {"off": 0.5, "on": 0.6}

    def fake_evaluate(lib_, kb_, questions, model_path, progress=None, weight=1.0):
        value = mrr["on" if model_path else "off"]
        return {"recall@1": value, "recall@5": value, "mrr@10": value, "coverage@1000chars": 1.0, "p50_ms": 10.0,
                "questions": len(questions)}

    monkeypatch.setattr(rt, "evaluate_reranker", fake_evaluate)
    card = finetune_reranker(lib, kb, "更好", TINY, base=base)
    assert card["better"] and card["applied"]
    settings = retrieval_settings(lib, kb)
    assert settings.rerank and settings.reranker_model == card["path"]
    with pytest.raises(Exception):
        delete_model(lib, "更好")  # the KB reranks with it
    mrr["on"] = 0.45
    card = finetune_reranker(lib, kb, "更差", TINY, base=base)
    assert not card["better"] and not card["applied"]
    assert retrieval_settings(lib, kb).reranker_model.endswith("更好")  # unchanged


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_the_rerankers_share_of_the_order_is_chosen_by_measurement_and_saved(lib, tiny_kb, monkeypatch):
    from services.index.kb_settings import retrieval_settings

    kb, base = tiny_kb
    mrr = {None: 0.5, 1.0: 0.45, 0.5: 0.6}  # alone it is worse; blended with the first stage, better

    def fake_evaluate(lib_, kb_, questions, model_path, progress=None, weight=1.0):
        value = mrr[weight if model_path else None]
        return {"recall@1": value, "recall@5": value, "mrr@10": value, "coverage@1000chars": 1.0, "p50_ms": 10.0,
                "questions": len(questions)}

    monkeypatch.setattr(rt, "evaluate_reranker", fake_evaluate)
    card = finetune_reranker(lib, kb, "混合", TINY, base=base)
    assert card["rerank_weight"] == 0.5 and card["better"] and card["applied"]
    assert card["weights_tried"]["1.0"]["heldout"]["mrr@10"] == 0.45
    assert card["results"]["heldout"]["on"]["mrr@10"] == 0.6
    settings = retrieval_settings(lib, kb)
    assert settings.rerank and settings.rerank_weight == 0.5


@pytest.mark.torch
def test_a_rerank_weight_below_one_blends_the_first_stage_order(lib, tiny_kb, monkeypatch):
    from dataclasses import replace

    from services.index.kb_settings import retrieval_settings
    from services.search import rerank
    from services.search.retrieval import Retriever

    kb, _ = tiny_kb

    class Reversing:  # scores the first stage's last candidate highest
        def score(self, query, passages):
            return [float(i) for i in range(len(passages))]

    monkeypatch.setattr(rerank, "load_reranker", lambda *a, **k: Reversing())
    base = replace(retrieval_settings(lib, kb), mode="bm25", merge_windows=False, top_k=20)
    first = [h.chunk_ids for h in Retriever(lib, kb, replace(base, rerank=False)).search("长江").hits]
    assert len(first) >= 3
    alone = [h.chunk_ids for h in Retriever(lib, kb, replace(base, rerank=True, rerank_weight=1.0)).search("长江").hits]
    assert alone == first[::-1]
    kept = [h.chunk_ids for h in Retriever(lib, kb, replace(base, rerank=True, rerank_weight=0.0)).search("长江").hits]
    assert kept == first
    blended = [h.chunk_ids for h in Retriever(lib, kb, replace(base, rerank=True, rerank_weight=0.5)).search("长江").hits]
    assert blended[:2] == [first[0], first[-1]]  # equal shares: both stages' first candidates lead


def test_a_reranker_never_worsens_any_set_it_is_offered_on():
    def result(off, on):
        return {"off": {"recall@5": off, "mrr@10": off}, "on": {"recall@5": on, "mrr@10": on}}

    assert rt.is_better({"heldout": result(0.5, 0.6)})
    assert not rt.is_better({"heldout": result(0.5, 0.5)})
    assert not rt.is_better({"heldout": result(0.5, 0.7), "questions": result(0.5, 0.49)})  # the questions decide
    assert not rt.is_better({"heldout": result(0.5, 0.4), "questions": result(0.5, 0.6)})  # no set worse


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_listwise_loss_trains_too(lib, tiny_kb, tmp_path):
    kb, base = tiny_kb
    data = TINY.data_settings()
    pairs = mine_negatives(lib, kb, generate_pairs(lib, kb, data), data, count=3, same_document=True)
    progress = rt.train_cross_encoder(base, examples_from_pairs(lib, kb, pairs), tmp_path / "out",
                                      RerankSettings(loss="listwise", batch_size=8, max_length=64), device="cpu")
    assert progress.steps >= 1 and len(progress.losses) == progress.steps
    assert rt.is_cross_encoder(str(tmp_path / "out"))


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_from_an_embedder_the_bottom_layers_are_kept_and_a_mean_pooling_layer_is_added(tmp_path):
    """An embedder trained with mean pooling leaves its first token's output the same for every input,
    so the classifier would start constant: one more layer makes that token the mean of all tokens.
    The folder stays a plain BertForSequenceClassification (servable by Infinity / TEI)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModel

    base = tiny_embedder(tmp_path / "base", num_hidden_layers=3)
    model = rt.load_cross_encoder(str(base), max_length=32, layers=2, device="cpu")
    layers = model.model.bert.encoder.layer
    assert len(layers) == model.model.config.num_hidden_layers == 3  # two of the base's, then the pooling layer
    original = AutoModel.from_pretrained(str(base)).encoder.layer
    assert all(torch.equal(a, b) for a, b in zip(layers[1].parameters(), original[1].parameters()))
    hidden = torch.randn(2, 5, 32)
    model.model.eval()
    out = layers[2](hidden)
    out = out[0] if isinstance(out, tuple) else out  # (a tuple in older transformers)
    mean = hidden.mean(dim=1, keepdim=True)
    expected = torch.nn.functional.layer_norm(torch.nn.functional.layer_norm(hidden + mean, (32,)), (32,))
    assert torch.allclose(out, expected, atol=1e-4)
    rt.train_cross_encoder(str(base), [rt.Example("问题", "答案", 1.0, 0), rt.Example("问题", "别的", 0.0, 0)],
                           tmp_path / "out", RerankSettings(layers=2, max_length=32), device="cpu")
    saved = CrossEncoder(str(tmp_path / "out"), device="cpu")
    assert type(saved.model).__name__ == "BertForSequenceClassification" and saved.model.config.num_hidden_layers == 3


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_reranker_training_runs_as_a_background_job(lib, tiny_kb):
    from services import worker

    kb, base = tiny_kb
    rt_settings = RerankSettings(batch_size=8, max_pairs=24, max_length=64)
    original = rt.bundled_base
    rt.bundled_base = lambda: base  # the job starts from the bundled weights; here the tiny model
    try:
        from dataclasses import asdict

        job = worker.submit(lib, kb, "finetune_reranker", "后台重排",
                            {"name": "后台重排", "kind": "reranker", "settings": asdict(rt_settings)})
        assert worker.wait_idle(lib, 300)
    finally:
        rt.bundled_base = original
    [done] = [j for j in worker.jobs(lib, kb, kinds=("finetune_reranker",)) if j.id == job]
    assert done.status == "done", done.result
    assert done.done == done.total > 0 and done.result["kind"] == "reranker" and "results" in done.result


@pytest.mark.slow
def test_cli_finetune_kind_reranker_prints_the_table_with_rerank_off_and_on(tmp_path, data_dir):
    from services.index.library import Library
    from services.index.vectors import close_all

    base = tiny_embedder(tmp_path / "base")
    lib = Library(data_dir)
    kb = lib.kb("k", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(base))
    for name, text in TOPICS.items():
        ingest_bytes(lib, kb, text.encode(), f"{name}.txt", CONFIG)
    lib.close()
    close_all()
    # The CLI starts from the bundled weights; a stand-in module points it at the tiny model instead.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import services.tuning.rerank_training as rt\n"
        "rt.current_embedder = lambda lib, kb: None\n"
        f"rt.bundled_base = lambda: {str(base)!r}\n", encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "PYTHONPATH": f"{shim}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "services", "finetune", "--kb", "k", "--name", "r1", "--kind",
                          "reranker", "--max-pairs", "24", "--batch-size", "8", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kind"] == "reranker" and report["name"] == "r1"
    assert [(r["set"], r["rerank"]) for r in report["table"]] == [("heldout", "off"), ("heldout", "on")]
    assert {"recall@1", "recall@5", "mrr@10", "coverage@1000chars"} <= set(report["table"][0])
    human = subprocess.run([sys.executable, "-m", "services", "finetune", "--kb", "k", "--name", "r2", "--kind",
                            "reranker", "--max-pairs", "24", "--batch-size", "8"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert human.returncode == 0, human.stderr
    assert "重排关" in human.stdout and "重排开" in human.stdout and "MRR@10" in human.stdout
