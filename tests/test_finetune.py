"""Fine-tuning on a KB's own documents (issue 13): offline data, negative mining, a tiny-model
training run that lowers the loss and saves a loadable model, the registry, the CLI."""
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from services.documents.chunking import ChunkingConfig
from services.tuning.finetune import (FinetuneSettings, delete_model, finetune, finetuned_models, generate_pairs,
                               mine_negatives, near_duplicate)
from services.index.ingest import ingest_bytes
from services.documents.text import normalize
from tiny_models import tiny_embedder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPICS = {
    "长江": "长江是中国第一大河，全长约六千三百公里。它发源于青藏高原。长江流经十一个省级行政区。长江最后注入东海。长江流域人口众多。",
    "黄河": "黄河是中国第二长河。黄河被称为中华民族的母亲河。黄河流域是中华文明的发源地之一。黄河中游流经黄土高原。黄河含沙量很大。",
    "珠峰": "珠穆朗玛峰是世界最高峰。珠穆朗玛峰海拔八千八百四十八点八六米。它位于中国与尼泊尔边境。每年都有很多人攀登珠峰。峰顶终年积雪。",
    "北京": "北京是中国的首都。北京有三千多年的建城史。故宫位于北京的中心。北京的人口超过两千万。北京是政治文化中心。",
    "上海": "上海是中国最大的城市之一。上海位于长江入海口。上海港是世界最繁忙的港口之一。上海有很多高楼。上海是经济中心。",
    "木星": "木星是太阳系中体积最大的行星。木星主要由氢和氦组成。木星有很多颗卫星。木星上有一个大红斑。木星自转很快。",
}
CONFIG = ChunkingConfig("sentence", 40, 0)
QUESTIONS = (("长江", "长江最后流到哪个海", "东海"), ("木星", "木星由什么气体构成", "氢和氦"),
             ("北京", "故宫在北京什么位置", "北京的中心"), ("黄河", "哪条河被称为母亲河", "黄河被称为中华民族的母亲河"),
             ("火星", "火星是什么颜色", "红色"))  # the last one's document is not in the KB


def question_lines() -> list[str]:
    """A JSONL question set (the evaluation page's format) about TOPICS, one question off the KB."""
    lines = []
    for n, (doc, question, answer) in enumerate(QUESTIONS):
        start = TOPICS[doc].index(answer) if doc in TOPICS else 0
        lines.append(json.dumps({"id": f"q{n}", "question": question, "doc_file": f"docs/{doc}.txt",
                                 "answer_spans": [{"text": answer, "start_in_doc": start}]}, ensure_ascii=False))
    return lines


@pytest.fixture
def tuned_kb(lib, tmp_path):
    model = tiny_embedder(tmp_path / "base")
    kb = lib.kb("微调", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(model))
    for name, text in TOPICS.items():
        ingest_bytes(lib, kb, text.encode(), f"{name}.txt", CONFIG)
    return kb, model


@pytest.mark.torch
def test_offline_pairs_come_from_the_chunk_and_negatives_from_other_documents(lib, tuned_kb):
    kb, _ = tuned_kb
    settings = FinetuneSettings(max_pairs=100)
    pairs = generate_pairs(lib, kb, settings)
    assert len(pairs) >= 8 and {p.kind for p in pairs} == {"question", "cloze"}
    for p in pairs:
        chunk = lib.store.get_chunks([p.chunk_id])[p.chunk_id]
        if p.kind == "cloze":
            assert p.query in chunk.text and p.query not in p.positive  # the sentence is taken out
        else:  # the question's context words come from the passage, its answer does not
            assert p.query.endswith("？") and p.positive.split("\n")[-1] in normalize(TOPICS[_doc(lib, kb, p)])
    pairs = mine_negatives(lib, kb, pairs, FinetuneSettings(negatives_range=(1, 30)))
    with_negative = [p for p in pairs if p.negative]
    assert with_negative
    for p in with_negative:
        assert not near_duplicate(p.negative, p.positive)
        owner = next(name for name, text in TOPICS.items() if p.negative.split("\n")[-1] in normalize(text))
        assert owner != _doc(lib, kb, p)  # never a chunk of the positive's own document


def _doc(lib, kb, pair) -> str:
    return lib.store.filenames(kb.id)[pair.doc_id].removesuffix(".txt")


def test_a_sentence_with_an_answer_becomes_a_question_without_the_answer():
    """Answer-masked questions: a date, an amount, a number with its unit or a 《title》 is replaced by a
    question word (in the text's script); the positive keeps the sentence with the answer."""
    import random

    from services.tuning.pseudo_queries import offline_queries

    text = ("经审理查明:原告曹某与被告张某原系夫妻关系,双方于2001年5月27日生育一女张某某,"
            "原、被告因夫妻感情破裂在重庆市荣昌县人民法院调解离婚,约定被告每月向原告支付张某某的生活费800元,"
            "张某某一直随原告生活至今,期间被告未依照约定按时支付生活费。")
    found = {q.query: q for seed in range(8) for q in offline_queries(text, text, random.Random(seed), limit=2)}
    questions = [q for q in found.values() if q.kind == "question"]
    assert any("多少钱" in q.query and "800" not in q.query and "800元" in q.positive for q in questions)
    assert any("何时" in q.query and "2001" not in q.query and "2001年5月27日" in q.positive for q in questions)
    places = {q.query for seed in range(8) for q in offline_queries(
        "伤者被送往荣昌县人民医院抢救无效死亡。原告曹某在重庆市荣昌县人民法院起诉。", "伤者被送往荣昌县人民医院抢救无效死亡。原告曹某在重庆市荣昌县人民法院起诉。",
        random.Random(seed), limit=2)}
    assert {"伤者被送往哪家医院抢救无效死亡？", "原告曹某在哪个法院起诉？"} <= places
    traditional = "長江是中國第一大河，全長約六千三百公里。它發源於青藏高原。長江流經十一個省級行政區。最後注入東海。"
    asked = {q.query for seed in range(8) for q in offline_queries(traditional, traditional, random.Random(seed))}
    assert "長江流經多少個省級行政區？" in asked


def test_text_without_sentence_punctuation_still_gives_a_query_from_its_clauses():
    """Court judgments (CAIL) come without 。: the query is one to three clauses, not nothing; a
    clause cut by the chunk's edges is never one."""
    import random

    from services.tuning.pseudo_queries import offline_queries

    text = ("原告曹某与被告张某原系夫妻关系,原、被告因夫妻感情破裂经法院调解离婚,"
            "张某某一直随原告生活至今,期间被告未依照约定按时支付生活费另查明张某某目前正常上学读书")
    queries = [q for seed in range(10) for q in offline_queries(text, text, random.Random(seed), cut_start=True)]
    assert queries and all(q.kind == "cloze" and 8 <= len(q.query) <= 60 and q.query in text for q in queries)
    assert not any(text.startswith(q.query) or text.endswith(q.query) for q in queries)
    assert offline_queries("短句", "短句", random.Random(0)) == []


@pytest.mark.torch
def test_positive_aware_mining_skips_candidates_the_model_finds_as_close_as_the_positive(lib, tuned_kb, monkeypatch):
    """A candidate the KB's model scores at least `negative_ceiling` x the positive's score is more likely
    an unlabelled answer than a wrong one: it is never the negative."""
    from services.tuning import finetune as ft

    kb, model = tuned_kb
    from services.index.embedding import load_embedder

    embedder = load_embedder(str(model))
    pairs = generate_pairs(lib, kb, FinetuneSettings(max_pairs=100))
    source = {p.query: p.chunk_id for p in pairs}
    monkeypatch.setattr(ft._DenseScorer, "query", lambda self, text: text)
    monkeypatch.setattr(ft._DenseScorer, "top", lambda self, q, k: [int(i) for i in self.ids[:k]])
    wide = FinetuneSettings(negatives_range=(1, 30))

    def mined(score):
        monkeypatch.setattr(ft._DenseScorer, "score", lambda self, q, chunk_id: score(chunk_id == source[q]))
        return [p for p in mine_negatives(lib, kb, [replace(p) for p in pairs], wide, embedder=embedder) if p.negative]

    assert mined(lambda positive: 1.0 if positive else 0.94)  # just below the ceiling: kept
    assert not mined(lambda positive: 1.0 if positive else 0.96)  # as close as the positive: skipped


def test_batches_keep_one_pair_per_document_where_the_kb_allows():
    import random

    from services.tuning.finetune import Pair, _batches

    pairs = [Pair(f"q{i}", f"p{i}", i, f"d{i % 10}") for i in range(60)]
    batches = _batches(pairs, 8, random.Random(0))
    assert sorted(p.chunk_id for b in batches for p in b) == list(range(60))
    assert all(len({p.doc_id for p in b}) == len(b) for b in batches)
    one_document = [Pair(f"q{i}", f"p{i}", i // 2, "d") for i in range(32)]  # a KB of one long PDF
    batches = _batches(one_document, 8, random.Random(0))
    assert sum(len(b) == 8 for b in batches) >= 3  # still trains with in-batch negatives
    assert all(len({p.chunk_id for p in b}) == len(b) for b in batches)  # never two queries of one chunk


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_tiny_training_lowers_the_loss_saves_a_loadable_model_and_is_listed(lib, tuned_kb):
    from services.index.embedding import load_embedder
    from services.index.reembed import reembed

    kb, _ = tuned_kb
    steps = []
    card = finetune(lib, kb, "小模型", FinetuneSettings(epochs=8, batch_size=8, learning_rate=5e-4, max_pairs=64),
                    on_step=lambda p: steps.append(p.step))
    losses = card["losses"]
    assert steps == list(range(1, len(losses) + 1))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, losses
    assert set(card["before"]) == {"dense", "hybrid", "queries"} and "mrr@10" in card["after"]["dense"]
    listed = finetuned_models(lib)
    assert [m["name"] for m in listed] == ["小模型"] and listed[0]["kb"] == "微调"
    embedder = load_embedder(card["path"])
    assert embedder.encode_query("长江").shape == (32,)
    from services.index.embedding import embed_with_cache
    from services.index.index_text import StoredIndexTexts

    chunks = [c for batch in lib.store.iter_chunks(kb.id, 1000) for c in batch]
    _, computed = embed_with_cache(embedder, lib.cache, StoredIndexTexts(lib.store, kb.id)(chunks))
    assert computed == 0, "the evaluation cached the new model's vectors: switching re-embeds nothing"
    reembed(lib, kb, card["path"])  # selectable per KB like any model
    assert lib.embedding_model(kb) == card["path"]
    with pytest.raises(Exception):
        delete_model(lib, "小模型")  # in use
    with pytest.raises(Exception):
        finetune(lib, kb, "小模型")  # the name is taken


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_training_checkpoints_activations_when_asked(tmp_path, monkeypatch):
    """Activation checkpointing (peak RSS 8.2 -> 2.9 GB for e5-small at 256 tokens on 2 cores) is off by
    default at the 128-token training length and on when asked; training still lowers the loss with it."""
    from services.tuning import finetune as ft
    from services.tuning.finetune import Pair, train

    enabled = []
    real = ft._checkpoint_activations
    monkeypatch.setattr(ft, "_checkpoint_activations", lambda m: (enabled.append(True), real(m)))
    base = tiny_embedder(tmp_path / "base")
    pairs = [Pair(f"问题{i}", f"答案{i}是第{i}段的内容", i, f"d{i % 4}") for i in range(16)]
    settings = FinetuneSettings(epochs=6, batch_size=8, learning_rate=5e-4, gradient_checkpointing=True)
    progress = train(str(base), pairs, tmp_path / "out", settings)
    assert enabled == [True] and progress.losses[-1] < progress.losses[0]
    train(str(base), pairs, tmp_path / "out2", FinetuneSettings(epochs=1, batch_size=8))
    assert enabled == [True]


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_only_the_top_layers_train_when_asked(tmp_path):
    """train_layers=N keeps all but the top N transformer layers as the base had them."""
    import torch
    from sentence_transformers import SentenceTransformer

    from services.tuning.finetune import Pair, train

    base = tiny_embedder(tmp_path / "base", num_hidden_layers=3)
    pairs = [Pair(text[:8], text[8:], i, name) for i, (name, text) in enumerate(TOPICS.items())]
    train(str(base), pairs, tmp_path / "out", FinetuneSettings(batch_size=3, learning_rate=1e-3, train_layers=1),
          device="cpu")
    layers = [SentenceTransformer(str(p), device="cpu")[0].auto_model.encoder.layer for p in (base, tmp_path / "out")]
    unchanged = [all(torch.equal(a, b) for a, b in zip(x.parameters(), y.parameters())) for x, y in zip(*layers)]
    assert unchanged == [True, True, False]


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_a_run_stopped_while_evaluating_leaves_no_listed_model_and_frees_its_name(lib, tuned_kb, monkeypatch):
    from services.tuning import finetune as ft

    kb, _ = tuned_kb
    settings = FinetuneSettings(epochs=1, batch_size=8, max_pairs=16)
    real = ft.evaluate_sets

    def crash_after(lib_, kb_, model_path, sets, *args, **kwargs):
        if model_path and ft.models_dir(lib) in Path(model_path).parents:
            assert Path(model_path).is_dir() and not finetuned_models(lib), "unfinished models stay unlisted"
            raise KeyboardInterrupt  # the process stops while evaluating the new model
        return real(lib_, kb_, model_path, sets, *args, **kwargs)

    monkeypatch.setattr(ft, "evaluate_sets", crash_after)
    with pytest.raises(KeyboardInterrupt):
        finetune(lib, kb, "中断", settings)
    assert not ft.model_folder(lib, kb, "中断").exists() and not finetuned_models(lib)
    ft.model_folder(lib, kb, "中断").mkdir()  # as a kill -9 would leave it: a card without results
    (ft.model_folder(lib, kb, "中断") / ft.CARD).write_text('{"name": "中断", "status": "evaluating"}')
    assert not finetuned_models(lib)
    monkeypatch.setattr(ft, "evaluate_sets", real)
    assert finetune(lib, kb, "中断", settings)["name"] == "中断"  # the leftover does not block the name
    assert [m["name"] for m in finetuned_models(lib)] == ["中断"]


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_a_saved_question_set_gets_before_after_numbers_with_the_evaluation_pages_rule(lib, tuned_kb):
    """The KB's own questions are scored like the 评测 page scores them (a chunk of the gold document
    holding the answer): the base model's dense numbers equal services.tuning.evaluation's dense run."""
    from pathlib import Path

    from services.tuning.evaluation import EvalConfig, evaluate, save_question_set

    kb, _ = tuned_kb
    questions = save_question_set(lib, kb, question_lines())
    card = finetune(lib, kb, "问题集", FinetuneSettings(epochs=1, batch_size=8, max_pairs=32))
    q = card["questions"]
    assert (q["n"], q["total"]) == (4, 5)  # the question about a document not in the KB is left out
    assert set(q["before"]) == set(q["after"]) == {"dense", "hybrid", "queries"} and q["before"]["queries"] == 4
    assert set(q["after"]["hybrid"]) == {"recall@1", "recall@5", "recall@10", "mrr@10"}
    summaries, _ = evaluate(lib, kb, questions[:4], [EvalConfig("dense", "dense")])
    for k in (1, 5, 10):  # (not MRR: the random tiny model gives some chunks equal scores, ordered differently)
        assert q["before"]["dense"][f"recall@{k}"] == pytest.approx(summaries["dense"][f"recall@{k}"])
    assert 0 < q["before"]["dense"]["recall@10"] < 1  # the comparison above is not vacuous
    assert card["better_on"] == "questions"
    [listed] = finetuned_models(lib)
    assert listed["questions"] == q  # in the saved card
    assert "知识库的问题集（4 题）" in (Path(card["path"]) / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_before_after_numbers_are_what_the_evaluation_page_reports(data_dir, tmp_path):
    """One pipeline: the fine-tuning run's numbers on the KB's question set equal what the 评测 page's
    evaluation job reports for the same questions — before: with the KB's model and index; after:
    once the KB is switched to the new model — both under the KB's own (non-default) retrieval settings."""
    from services import worker
    from services.config import RetrievalSettings
    from services.index.reembed import reembed
    from services.workspace import open_workspace

    ws = open_workspace(data_dir)
    lib = ws.lib
    row = lib.kb("一条流水线", create=True)
    lib.store.update_kb_settings(row.id, embedding_model=str(tiny_embedder(tmp_path / "base")))
    for name, text in TOPICS.items():
        ingest_bytes(lib, row, text.encode(), f"{name}.txt", CONFIG)
    kb = ws.session().kb("一条流水线")
    kb.save_retrieval(RetrievalSettings(fusion="rrf", rrf_k=5, bm25_top_k=3, dense_top_k=12))

    def page_numbers() -> dict:
        job = kb.evaluate(question_lines(), ["dense", "hybrid"], [False], ["current"], keep=True, names="mode")
        assert worker.wait_idle(lib, 120)
        return kb.job(job).result["summaries"]

    before = page_numbers()
    card = finetune(lib, lib.store.get_kb(row.id), "同一流水线", FinetuneSettings(epochs=1, batch_size=8, max_pairs=32))
    reembed(lib, lib.store.get_kb(row.id), card["path"])
    after = page_numbers()
    for mode in ("dense", "hybrid"):
        for metric in ("recall@1", "recall@5", "recall@10", "mrr@10"):
            assert card["questions"]["before"][mode][metric] == pytest.approx(before[mode][metric]), (mode, metric)
            assert card["questions"]["after"][mode][metric] == pytest.approx(after[mode][metric]), (mode, metric)
    assert card["questions"]["n"] == before["dense"]["questions"] == 4
    assert 0 < before["dense"]["recall@10"] < 1 and before["dense"]["mrr@10"] != after["dense"]["mrr@10"]  # not vacuous
    ws.lib.close()


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_better_follows_the_question_set_when_the_kb_has_one(lib, tuned_kb, monkeypatch):
    """Held-out pseudo-queries say the tuned model is better; the user's questions decide."""
    from services.tuning import finetune as ft
    from services.tuning.evaluation import delete_question_set, save_question_set

    kb, _ = tuned_kb
    scores = {"questions": (0.5, 0.5)}  # (dense, hybrid) MRR@10 of the tuned model on the user's questions

    def fake_sets(lib, kb, model_path, sets, **_):
        tuned = bool(model_path) and ft.models_dir(lib) in Path(model_path).parents  # the run's output folder

        def result(dense, hybrid, n):
            return {"dense": {"recall@1": 0, "recall@5": 0, "recall@10": 0, "mrr@10": dense},
                    "hybrid": {"recall@1": 0, "recall@5": 0, "recall@10": 0, "mrr@10": hybrid}, "queries": n}
        out = {"heldout": result(0.9 if tuned else 0.1, 0.9 if tuned else 0.1, len(sets["heldout"]))}
        if sets.get("questions"):
            out["questions"] = result(*(scores["questions"] if tuned else (0.5, 0.5)), len(sets["questions"]))
        return out

    monkeypatch.setattr(ft, "evaluate_sets", fake_sets)
    settings = FinetuneSettings(epochs=1, batch_size=8, max_pairs=16)
    assert finetune(lib, kb, "留出", settings)["better"]  # no question set: held-out queries decide
    save_question_set(lib, kb, question_lines())
    expected = {(0.4, 0.9): False, (0.6, 0.4): False, (0.6, 0.5): True}  # dense better and hybrid not worse
    for n, (after, better) in enumerate(expected.items()):
        scores["questions"] = after
        card = finetune(lib, kb, f"问题集{n}", settings)
        assert (card["better"], card["better_on"], card["questions"]["after"]["dense"]["mrr@10"]) == \
            (better, "questions", after[0])
    delete_question_set(lib, kb)
    card = finetune(lib, kb, "删除后", settings)
    assert card["better"] and card["better_on"] == "heldout" and "questions" not in card


@pytest.mark.slow
def test_cli_finetune_prints_the_before_after_table(tmp_path, data_dir):
    model = tiny_embedder(tmp_path / "base")
    from services.tuning.evaluation import save_question_set
    from services.index.library import Library

    lib = Library(data_dir)
    kb = lib.kb("k", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(model))
    for name, text in TOPICS.items():
        ingest_bytes(lib, kb, text.encode(), f"{name}.txt", CONFIG)
    save_question_set(lib, kb, question_lines())
    lib.close()
    from services.index.vectors import close_all

    close_all()
    out = subprocess.run([sys.executable, "-m", "services", "finetune", "--kb", "k", "--name", "m1", "--epochs", "1",
                          "--max-pairs", "32", "--json"], cwd=ROOT, env={**os.environ, "WENDAO_DATA_DIR": str(data_dir)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["name"] == "m1" and {r["model"] for r in report["table"]} == {"base", "m1"}
    assert {"recall@1", "recall@5", "recall@10", "mrr@10"} <= set(report["table"][0])
    questions = report["questions"]  # the KB's saved question set, before and after
    assert questions["n"] == 4 and {"dense", "hybrid"} <= set(questions["before"]) and report["better_on"] == "questions"
    assert [(r["retrieval"], r["model"]) for r in report["questions_table"]] == \
        [("dense", "base"), ("dense", "m1"), ("hybrid", "base"), ("hybrid", "m1")]
    assert report["questions_table"][1]["mrr@10"] == round(questions["after"]["dense"]["mrr@10"], 4)
    # the not-recommended warning 设置 shows (walkthrough s27 #3), with the decisive set's numbers
    assert (report["warning"] == "") == report["better"]
    assert report["better"] or f"{questions['before']['dense']['mrr@10']:.3f} → " in report["warning"]


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_finetune_runs_in_the_background_with_progress_and_can_be_cancelled(lib, tuned_kb):
    from services import worker

    kb, _ = tuned_kb
    from dataclasses import asdict

    def submit_finetune(name, settings):
        return worker.submit(lib, kb, "finetune", name, {"name": name, "settings": asdict(settings)})

    job = submit_finetune("后台", FinetuneSettings(epochs=2, batch_size=4, max_pairs=40))
    assert worker.wait_idle(lib, 300)
    done = [j for j in worker.jobs(lib, kb, kinds=("finetune",)) if j.id == job][0]
    assert done.status == "done" and done.kind == "finetune" and done.result["losses"]
    assert done.done == done.total > 0 and "after" in done.result
    slow = submit_finetune("取消", FinetuneSettings(epochs=200, batch_size=4, max_pairs=40))
    import time

    deadline = time.time() + 120
    while time.time() < deadline:
        j = [j for j in worker.jobs(lib, kb, kinds=("finetune",)) if j.id == slow][0]
        if j.stage == "train" and j.done > 0:
            break
        time.sleep(0.1)
    assert worker.cancel(lib, slow)
    assert worker.wait_idle(lib, 120)
    j = [j for j in worker.jobs(lib, kb, kinds=("finetune",)) if j.id == slow][0]
    assert j.status == "cancelled" and "取消" not in [m["name"] for m in finetuned_models(lib)]
    assert not list((lib.root / "models").rglob(".*partial"))


def test_an_llm_question_trains_on_the_part_of_the_passage_it_asks_about():
    """Training truncates at 128 tokens: an LLM's question keeps the window of its passage it shares
    most words with, not the passage's first 220 characters."""
    from services.tuning.pseudo_queries import WINDOW, window_for

    body = "长江是中国第一大河，它发源于青藏高原。" * 15 + "木星是太阳系中体积最大的行星，主要由氢和氦组成。"
    window = window_for("长江\n" + body, body, "木星主要由什么组成？")
    assert window.startswith("长江\n") and "氢和氦" in window and len(window) <= WINDOW + 3
    assert window_for(body[:100], body[:100], "长江") == body[:100]


@pytest.mark.slow  # trains a model (issue 18 item 9: training tests are slow)
def test_the_saved_weights_are_the_base_trained_mix_that_scores_best_on_dev_queries(lib, tuned_kb, monkeypatch):
    """WiSE-FT: each mix of base and trained weights is scored on the dev queries; the folder keeps the
    best one (a tie keeps more of the base)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from services.tuning import finetune as ft

    kb, model = tuned_kb
    pairs = generate_pairs(lib, kb, FinetuneSettings(max_pairs=40))
    out = lib.root / "mixed"
    ft.train(str(model), pairs, out, FinetuneSettings(batch_size=4, learning_rate=1e-3), device="cpu")
    trained = SentenceTransformer(str(out), device="cpu").state_dict()
    start = SentenceTransformer(str(model), device="cpu").state_dict()
    best, scores = ft.choose_mix(lib, kb, str(model), out, pairs[:6], (0.5, 1.0))
    assert set(scores) == {0.5, 1.0} and all(0 <= v <= 1 for v in scores.values())
    assert best == max(scores, key=lambda m: (scores[m], -m))
    saved = SentenceTransformer(str(out), device="cpu").state_dict()
    key = next(k for k in saved if k.endswith("attention.self.query.weight"))
    assert torch.allclose(saved[key], start[key] + best * (trained[key] - start[key]), atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith("mixed")) == ["mixed"]  # no copies left
    monkeypatch.setattr(ft, "evaluate", lambda *a, **k: ({"dev": {"mrr@10": 0.5}}, []))  # every mix scores the same
    assert ft.choose_mix(lib, kb, str(model), out, pairs[:6], (0.5, 1.0))[0] == 0.5  # (the folder held `saved`)
    again = SentenceTransformer(str(out), device="cpu").state_dict()
    assert torch.allclose(again[key], start[key] + 0.5 * (saved[key] - start[key]), atol=1e-6)


def test_the_run_plan_follows_the_kbs_content_not_only_its_size(lib, tuned_kb):
    """A document swapped for another of the same chunk count is planned afresh (the page asks on every
    rerun, so the plan is cached; counts alone would keep the old KB's plan)."""
    from services.tuning.finetune import run_plan

    kb, _ = tuned_kb
    settings = FinetuneSettings()
    before = run_plan(lib, kb, settings)
    doc = next(d for d in lib.store.list_documents(kb.id) if d.filename == "木星.txt")
    chunks = lib.store.count_chunks(kb.id)
    lib.delete_document(kb, doc.id)
    blank = re.sub("[^。]", "一", TOPICS["木星"])  # the same sentences' lengths, nothing to ask about
    ingest_bytes(lib, kb, blank.encode(), "木星.txt", CONFIG)
    assert lib.store.count_chunks(kb.id) == chunks and len(lib.store.list_documents(kb.id)) == len(TOPICS)
    after = run_plan(lib, kb, settings)
    assert after["pairs"] == len(generate_pairs(lib, kb, settings)) != before["pairs"]
