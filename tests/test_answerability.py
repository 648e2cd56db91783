"""Refusal without a large model (issue 21 item 7): the answerability check is trained from question
sets in the shared format, installed as a model folder with its threshold, and then refuses
questions its passages do not answer, in any retrieval mode; without the folder nothing changes."""
import json

import pytest

from services.answers import answerability as check_module
from services.tuning.answerability import (AnswerabilitySettings, Corpus, choose_threshold, refusal_metrics,
                                           split_documents, train_check, training_examples)
from services.tuning.rerank_training import RerankSettings
from tiny_models import tiny_cross_encoder, tiny_embedder

JUDGMENTS = {
    "j1.txt": "原告张某与被告李某原系夫妻关系，双方约定被告每月支付生活费800元，孩子随原告生活。",
    "j2.txt": "被告人王某于2015年3月盗窃手机一部，价值人民币2000元，被公安机关抓获。",
    "j3.txt": "原告赵某向被告借款5万元，约定月利率百分之二，被告到期未还。",
    "j4.txt": "被告人刘某酒后驾驶机动车，血液酒精含量为180毫克每百毫升，被查获。",
}


def write_set(root, name="cail2019_dev"):
    """A tiny question set in the shared format: a span, a yes/no and an unanswerable question per document."""
    folder = root / name
    (folder / "docs").mkdir(parents=True)
    lines = []
    for n, (doc, text) in enumerate(JUDGMENTS.items()):
        (folder / "docs" / doc).write_text(text, encoding="utf-8")
        answer = next(a for a in ("800元", "2000元", "5万元", "180毫克") if a in text)
        lines += [{"id": f"{n}-1", "question": "金额是多少？" if "元" in answer else "酒精含量是多少？", "doc_file": f"docs/{doc}",
                   "answer_type": "span", "answer_spans": [{"text": answer, "start_in_doc": text.index(answer)}]},
                  {"id": f"{n}-2", "question": "被告是否到庭？", "doc_file": f"docs/{doc}", "answer_type": "yesno",
                   "answer_spans": []},
                  {"id": f"{n}-3", "question": "法院判决的案件受理费是多少？", "doc_file": f"docs/{doc}",
                   "answer_type": "unanswerable", "answer_spans": []}]
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    return folder


def test_examples_label_the_answer_passage_and_the_unanswerable_questions(tmp_path):
    corpus = Corpus(write_set(tmp_path), "cail2019_dev")
    settings = AnswerabilitySettings()
    import random

    examples = training_examples(corpus, set(corpus.by_doc), settings, random.Random(0))
    positives = [e for e in examples if e.label == 1.0]
    negatives = [e for e in examples if e.label == 0.0]
    assert any("800元" in e.passage and e.query == "金额是多少？" for e in positives)
    assert all(e.query != "法院判决的案件受理费是多少？" for e in positives)
    assert any(e.query == "法院判决的案件受理费是多少？" for e in negatives)
    splits = split_documents(corpus, AnswerabilitySettings(dev=0.25, heldout=0.25))
    assert sorted(len(v) for v in splits.values()) == [1, 1, 2] and set.union(*splits.values()) == set(JUDGMENTS)


def test_a_capped_sample_keeps_every_unanswerable_question_first(tmp_path):
    import random

    corpus = Corpus(write_set(tmp_path), "cail2019_dev")
    settings = AnswerabilitySettings(source_questions={"cail2019_dev": 5})
    examples = training_examples(corpus, set(corpus.by_doc), settings, random.Random(0))
    unanswerable = {e.group for e in examples if e.query == "法院判决的案件受理费是多少？"}
    assert len(unanswerable) == 4  # all four, then one answerable question
    assert len({e.group for e in examples}) == 5
    settings = AnswerabilitySettings(source_questions={"cail2019_dev": 3})
    examples = training_examples(corpus, set(corpus.by_doc), settings, random.Random(0))
    assert {e.query for e in examples} == {"法院判决的案件受理费是多少？"}


def test_sets_without_unanswerable_questions_pair_them_with_other_documents(tmp_path):
    import random

    root = write_set(tmp_path, "cmrc2018_trial")
    lines = [json.loads(x) for x in (root / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    (root / "questions.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines
                                                    if x["answer_type"] == "span"), encoding="utf-8")
    corpus = Corpus(root, "cmrc2018_trial")
    examples = training_examples(corpus, set(corpus.by_doc), AnswerabilitySettings(), random.Random(0))
    for e in examples:
        if e.label == 0.0:  # a passage of another document: it does not hold this question's answer
            owner = next(d for d, text in JUDGMENTS.items() if e.passage in text)
            question_doc = next(d for d, text in JUDGMENTS.items() if any(
                p.label == 1.0 and p.query == e.query and p.group == e.group and p.passage in text for p in examples))
            assert owner != question_doc


def test_threshold_weighs_answerable_and_unanswerable_questions_alike():
    # 4 unanswerable and 100 answerable questions. Refusing below 0.8 refuses 3 of 4 unanswerable and 10 of 100
    # answerable ones: F1 counted on all questions 0.35 (10 answerable refused weigh against 3), with the rates
    # (as issue 21 counts: as many of each) 0.81. F1 on all questions would refuse the 0.1 one only (0.4).
    scores = [0.1, 0.5, 0.5, 0.9] + [0.2] + [0.4] * 9 + [0.8] * 90
    answerable = [False] * 4 + [True] * 100
    t = choose_threshold(scores, answerable, max_refused=0.1)
    m = refusal_metrics(scores, answerable, t)
    assert m["recall"] == 0.75 and m["answerable_refused"] == 0.1


def test_signals_say_whether_a_clause_holds_the_asked_for_value():
    from services.answers.answerability import signals

    question = "被告人王某于何时被抓获？"
    stated = signals(question, ["被告人王某于2015年3月盗窃手机一部，于2015年4月2日被公安机关抓获。"])
    absent = signals(question, ["被告人王某盗窃手机一部，价值人民币2000元，后被公安机关抓获。"])
    assert stated["kind_date"] == 1.0 and stated["typed_absent"] == 0.0 and stated["typed_clause"] > 0.5
    assert absent["typed_absent"] == 1.0 and absent["typed_clause"] == 0.0
    other = signals("张三是谁？", ["被告人王某盗窃手机一部。"])
    assert other["kind_person"] == 1.0 and other["names_missing"] >= 1.0 and other["pool"] < 0.5


def test_the_combiner_refuses_what_the_question_model_knows_is_never_stated(tmp_path, monkeypatch):
    """A check with a combiner: the same passages and cross-encoder score, but a question of the kind
    the judgment never states (判决结果) scores below the threshold, another above it."""
    from services.answers.answerability import COMBINER, Combiner, answerability, load_check

    folder = tiny_cross_encoder(tmp_path / "check")
    grams = {"判决": [1.0, -8.0], "结果": [1.0, -8.0], "金额": [1.0, 4.0], "多少": [1.0, 4.0]}
    combiner = Combiner(grams, {"typed_absent": [0.5, 0.5, -0.5]}, 0.5, 1.0, 0.0, 0.0)
    (folder / COMBINER).write_text(json.dumps(combiner.to_json(), ensure_ascii=False), encoding="utf-8")
    (folder / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": 0.5,
                                                         "combiner": COMBINER}), encoding="utf-8")
    check_module._CHECKS.clear()
    monkeypatch.setenv("WENDAO_ANSWERABILITY_MODEL", str(folder))
    check = load_check()
    assert check is not None and check.combiner is not None
    passages = [JUDGMENTS["j2.txt"]]
    asked = answerability("被告人王某盗窃的金额是多少？", passages, check)
    never = answerability("被告人王某的判决结果是什么？", passages, check)
    assert asked > 0.5 > never
    from services.answers.refusal import should_refuse

    assert should_refuse({"sentence": 1.0, "pool": 1.0, "answerability": never, "answerability_threshold": 0.5})
    assert not should_refuse({"sentence": 1.0, "pool": 1.0, "answerability": asked, "answerability_threshold": 0.5})
    check_module._CHECKS.clear()


def test_a_check_without_a_combiner_scores_as_before(tmp_path, monkeypatch):
    from services.answers.answerability import answerability, load_check
    from services.search.rerank import load_reranker

    folder = tiny_cross_encoder(tmp_path / "check")
    (folder / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": 0.5}), encoding="utf-8")
    check_module._CHECKS.clear()
    monkeypatch.setenv("WENDAO_ANSWERABILITY_MODEL", str(folder))
    check = load_check()
    assert check.combiner is None
    passages = list(JUDGMENTS.values())
    assert answerability("金额是多少？", passages, check) == max(load_reranker(check.path).score("金额是多少？", passages[:3]))
    check_module._CHECKS.clear()


def test_threshold_is_the_best_f1_within_the_refusal_budget():
    scores = [0.9, 0.8, 0.7, 0.2, 0.3, 0.6, 0.1]
    answerable = [True, True, True, False, False, True, False]
    t = choose_threshold(scores, answerable, max_refused=0.0)
    m = refusal_metrics(scores, answerable, t)
    assert m["answerable_refused"] == 0.0 and m["recall"] == 1.0 and m["f1"] == 1.0
    assert refusal_metrics(scores, answerable, 0.75)["answerable_refused"] == 0.5


@pytest.mark.slow
def test_training_writes_a_model_folder_with_its_threshold(tmp_path):
    root = tmp_path / "data"
    write_set(root)
    base = tiny_embedder(tmp_path / "base")
    settings = AnswerabilitySettings(training=RerankSettings(batch_size=8, max_length=48), sources=("cail2019_dev",),
                                     dev=0.25, heldout=0.25)
    card = train_check(root, tmp_path / "check", settings, base=str(base))
    saved = json.loads((tmp_path / "check" / "wendao_card.json").read_text(encoding="utf-8"))
    assert saved["threshold"] == card["threshold"] and saved["kind"] == "answerability"
    assert {"dev", "heldout", "dev_balanced", "heldout_balanced"} <= set(saved["metrics"])
    assert "CAIL2019" in saved["note"]  # says it must not be redistributed
    # the combiner: question model on the training documents, the combination on the dev ones
    assert saved["combiner"] == "combiner.json" and (tmp_path / "check" / "combiner.json").is_file()
    assert {"check_dev", "check_heldout"} <= set(saved["metrics"])
    check_module._CHECKS.clear()
    import os

    os.environ["WENDAO_ANSWERABILITY_MODEL"] = str(tmp_path / "check")
    try:
        check = check_module.load_check()
        assert check.combiner is not None and check.combiner.grams
        assert 0.0 <= check_module.answerability("金额是多少？", list(JUDGMENTS.values()), check) <= 1.0
    finally:
        del os.environ["WENDAO_ANSWERABILITY_MODEL"]
        check_module._CHECKS.clear()
    # a second run copies the cross-encoder instead of training one
    again = train_check(root, tmp_path / "again", settings, reuse=tmp_path / "check")
    assert again["cross_encoder_from"] == str(tmp_path / "check") and (tmp_path / "again" / "combiner.json").is_file()


@pytest.fixture
def installed_check(tmp_path, monkeypatch):
    """A (tiny, random) check installed through WENDAO_ANSWERABILITY_MODEL with a given threshold."""
    folder = tiny_cross_encoder(tmp_path / "check")

    def install(threshold: float):
        (folder / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": threshold}),
                                                 encoding="utf-8")
        check_module._CHECKS.clear()
        monkeypatch.setenv("WENDAO_ANSWERABILITY_MODEL", str(folder))
    yield install
    check_module._CHECKS.clear()


@pytest.mark.torch
def test_the_check_refuses_below_its_threshold_in_every_mode(lib, kb, installed_check, monkeypatch):
    from services.answers.answer import Conversation, answer_question
    from services.config import LLMSettings
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.search.retrieval import Retriever

    for doc, text in JUDGMENTS.items():
        ingest_bytes(lib, kb, text.encode(), doc, ChunkingConfig())
    question = "被告每月支付多少生活费？"
    for mode in ("bm25", "dense", "hybrid"):
        retriever = Retriever(lib, kb)
        check_module._CHECKS.clear()
        answer = answer_question(replace_mode(retriever, mode), LLMSettings(), question, Conversation())
        assert answer.mode != "refused" and answer.evidence["answerability"] is None  # no check installed
        installed_check(1.01)  # no probability reaches it: refused
        answer = answer_question(replace_mode(retriever, mode), LLMSettings(), question, Conversation())
        assert answer.mode == "refused" and answer.evidence["answerability"] is not None, mode
        installed_check(0.0)  # every probability reaches it: answered as before
        answer = answer_question(replace_mode(retriever, mode), LLMSettings(), question, Conversation())
        assert answer.mode != "refused" and "800" in answer.text, mode
        monkeypatch.delenv("WENDAO_ANSWERABILITY_MODEL")


def replace_mode(retriever, mode):
    from dataclasses import replace

    retriever.settings = replace(retriever.settings, mode=mode)
    return retriever


@pytest.mark.torch
def test_a_data_dir_holds_the_check_in_models_answerability(tmp_path, monkeypatch):
    monkeypatch.delenv("WENDAO_ANSWERABILITY_MODEL", raising=False)
    monkeypatch.setenv("WENDAO_DATA_DIR", str(tmp_path))
    check_module._CHECKS.clear()
    assert check_module.load_check() is None
    folder = tiny_cross_encoder(tmp_path / "models" / "answerability")
    (folder / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": 0.4}), encoding="utf-8")
    check = check_module.load_check()
    assert check is not None and check.threshold == 0.4 and check.path == str(folder.resolve())
    check_module._CHECKS.clear()


# --- the reader's no-answer score as an input of the combiner ----------------------------------------
class StubReader:
    """Stands in for an installed services.answers.reader.Reader: its identity and its best span's score."""

    def __init__(self, identity: str, score: float | None):
        self.identity, self.top, self.score, self.calls = identity, 3, score, 0

    def read(self, question, passages):
        from services.answers.reader import ReadSpan

        self.calls += 1
        return [] if self.score is None else [ReadSpan(0, 0, 2, passages[0][:2], self.score), ReadSpan(1, 0, 1, "x", -3.0)]


def reader_check(tmp_path, monkeypatch):
    """A check whose combiner says 0.5 without the reader and follows the reader's score with it."""
    from services.answers.answerability import COMBINER, Combiner

    folder = tiny_cross_encoder(tmp_path / "check")
    combiner = Combiner({}, {}, 0.0, 1.0, 0.0, 0.0,
                        reader={"a": 0.0, "b": 0.0, "c": 0.0, "d": 1.0, "threshold": 0.3, "reader": "r@1"})
    (folder / COMBINER).write_text(json.dumps(combiner.to_json(), ensure_ascii=False), encoding="utf-8")
    (folder / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": 0.4,
                                                         "combiner": COMBINER}), encoding="utf-8")
    check_module._CHECKS.clear()
    monkeypatch.setenv("WENDAO_ANSWERABILITY_MODEL", str(folder))
    return check_module.load_check()


def test_reader_score_is_the_best_span_against_no_answer_clipped():
    from services.answers.answerability import READER_CLIP, reader_score

    passages = list(JUDGMENTS.values())
    assert reader_score("金额是多少？", passages, StubReader("r", 4.5)) == 4.5
    assert reader_score("金额是多少？", passages, StubReader("r", 80.0)) == READER_CLIP
    assert reader_score("金额是多少？", passages, StubReader("r", None)) == -READER_CLIP  # no span at all


def test_the_combiner_reads_with_the_reader_it_was_fitted_with_and_falls_back_without_it(tmp_path, monkeypatch):
    from services.answers import reader as reader_module
    from services.answers.answerability import assess
    from services.answers.refusal import evidence_strength, should_refuse
    from services.documents.chunking import Chunk
    from services.search.retrieval import Hit

    check = reader_check(tmp_path, monkeypatch)
    assert check.combiner.reader["threshold"] == 0.3 and check.combiner.reader["reader"] == "r@1"
    passages = list(JUDGMENTS.values())
    question = "被告每月支付多少生活费？"
    installed = {"reader": None}
    monkeypatch.setattr(reader_module, "load_reader", lambda: installed["reader"])
    # no reader installed: today's combination and threshold, unchanged
    p, threshold, used = assess(question, passages, check)
    assert (round(p, 6), threshold, used) == (0.5, 0.4, False)
    # another reader (not the one it was fitted with): the same
    installed["reader"] = StubReader("other@2", 6.0)
    assert assess(question, passages, check) == (p, 0.4, False) and installed["reader"].calls == 0
    # its own reader: the reader's combination, its threshold; a span it believes in answers, none refuses
    installed["reader"] = StubReader("r@1", 6.0)
    p, threshold, used = assess(question, passages, check)
    assert used and threshold == 0.3 and p > 0.99
    installed["reader"] = StubReader("r@1", None)
    p, threshold, used = assess(question, passages, check)
    assert used and p < 0.01
    hits = [Hit(Chunk(0, 0, len(t), t, 1, 1), d, 0, len(t), t, 1, 1) for d, t in JUDGMENTS.items()]
    strength = evidence_strength(question, hits)
    assert strength["answerability_threshold"] == 0.3 and strength["answerability_reader"] is True
    assert should_refuse(strength)
    installed["reader"] = StubReader("r@1", 6.0)
    strength = evidence_strength(question, hits)
    assert strength["answerability"] > 0.99 and not should_refuse({**strength, "sentence": 1.0, "pool": 1.0})
    installed["reader"] = None
    strength = evidence_strength(question, hits)
    assert strength["answerability_threshold"] == 0.4 and "answerability_reader" not in strength
    check_module._CHECKS.clear()


def test_a_combiner_file_without_a_reader_part_loads_as_before():
    from services.answers.answerability import Combiner

    old = {"grams": {"金额": [1.0, 2.0]}, "signals": {}, "text_intercept": 0.1, "a": 1.0, "b": 0.5, "c": -0.2}
    combiner = Combiner.from_json(old)
    assert combiner.reader is None and combiner.to_json() == old
    with_reader = Combiner.from_json({**old, "reader": {"a": 1, "b": 2, "c": 3, "d": 4, "threshold": 0.5, "reader": "r@1"}})
    assert Combiner.from_json(with_reader.to_json()) == with_reader and with_reader.reader["d"] == 4.0
    passages = list(JUDGMENTS.values())
    assert combiner.probability("金额是多少？", passages, 0.7) == combiner.probability("金额是多少？", passages, 0.7, None)


def test_the_reader_combination_is_fitted_on_reader_scores_that_separate():
    from services.tuning.answerability import fit_combination

    answerable = [True, False] * 20
    text = [0.1 * (n % 3) for n in range(40)]
    check = [0.5] * 40
    reader = [3.0 if a else -3.0 for a in answerable]
    a, b, c, d = fit_combination(text, check, answerable, reader)
    assert d > 0.5 and abs(d) > abs(a)
    assert len(fit_combination(text, check, answerable)) == 3


def test_a_reader_that_may_have_read_the_evaluated_documents_is_not_used(tmp_path):
    from services.tuning.answerability import reader_ready
    from services.tuning.reader import answerability_evaluation

    root = tmp_path / "data"
    write_set(root)
    evaluated = answerability_evaluation(root)["cail2019_dev"]
    parts = split_documents(Corpus(root / "cail2019_dev", "cail2019_dev"), AnswerabilitySettings())
    assert evaluated == parts["dev"] | parts["heldout"] and not evaluated & parts["train"]
    folder = tmp_path / "reader"
    folder.mkdir()
    assert "no reader card" in reader_ready(folder, "cail2019_dev", evaluated)
    (folder / "wendao_card.json").write_text(json.dumps({"name": "r", "excluded_names": {"cail2019_dev": []}}))
    assert "trained on" in reader_ready(folder, "cail2019_dev", evaluated)
    (folder / "wendao_card.json").write_text(json.dumps({"name": "r", "excluded_names": {
        "cail2019_dev": sorted(evaluated)}}))
    assert reader_ready(folder, "cail2019_dev", evaluated) == ""


@pytest.mark.torch
def test_training_with_a_reader_fits_its_combination_on_dev(tmp_path):
    import torch
    from transformers import BertModel

    from services.tuning.reader import answerability_evaluation, save

    root = tmp_path / "data"
    write_set(root)
    check = tiny_cross_encoder(tmp_path / "check")
    (check / "wendao_card.json").write_text(json.dumps({"kind": "answerability", "threshold": 0.5}), encoding="utf-8")
    base = tiny_embedder(tmp_path / "base")
    torch.manual_seed(0)
    reader = tmp_path / "reader"
    save(BertModel.from_pretrained(str(base), add_pooling_layer=False), torch.nn.Linear(32, 2), str(base), reader)
    settings = AnswerabilitySettings(sources=("cail2019_dev",), dev=0.25, heldout=0.25, min_df=1)
    evaluated = answerability_evaluation(root)  # default split: what --exclude-answerability-split leaves out
    split = split_documents(Corpus(root / "cail2019_dev", "cail2019_dev"), settings)
    card = {"name": "reader", "kind": "reader", "threshold": 0.0, "created_at": 1.0,
            "excluded_names": {"cail2019_dev": sorted(evaluated["cail2019_dev"] | split["dev"] | split["heldout"])}}
    (reader / "wendao_card.json").write_text(json.dumps(card), encoding="utf-8")
    cache = tmp_path / "scores.json"
    made = train_check(root, tmp_path / "out", settings, reuse=check, reader=reader, score_cache=cache)
    assert made["reader_combination"]["reader"] == "reader@1.0"
    assert {"reader_dev", "reader_heldout", "reader_heldout_balanced"} <= set(made["metrics"])
    assert made["metrics"]["dev"]["threshold"] == made["threshold"]  # today's combination and threshold stay
    saved = json.loads((tmp_path / "out" / "combiner.json").read_text(encoding="utf-8"))
    assert saved["reader"]["threshold"] == made["reader_combination"]["threshold"]
    assert any(k.startswith("reader:reader@1.0") for k in json.loads(cache.read_text()))  # scores kept for a rerun
    # a reader whose card does not leave the dev / held-out judgments out: no reader combination
    card["excluded_names"] = {"cail2019_dev": []}
    (reader / "wendao_card.json").write_text(json.dumps(card), encoding="utf-8")
    plain = train_check(root, tmp_path / "plain", settings, reuse=check, reader=reader)
    assert "reader_combination" not in plain and "reader" not in json.loads(
        (tmp_path / "plain" / "combiner.json").read_text(encoding="utf-8"))
