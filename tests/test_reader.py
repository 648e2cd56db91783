"""The extractive reader (issue 21): a span model trained by services.tuning.reader from question sets
in the shared format, installed as a model folder, marks the answer inside the extract with exact
document offsets; without it (or unreadable, or below its threshold) the heuristics mark it."""
import json
import random

import pytest

from services.answers import reader as reader_module
from services.answers.extractive import pinpoint
from services.answers.reader import Reader, windows
from services.documents.chunking import Chunk
from services.search.retrieval import Hit
from services.tuning.answerability import Corpus
from services.tuning.reader import (ReaderSettings, choose_threshold, choose_inside_threshold, encode_example,
                                    train_reader, training_features, with_fallback)
from tiny_models import tiny_embedder

NAMES = "张王李赵刘陈杨黄周吴"
PLACES = ["北京", "上海", "长江", "黄河", "中华"]


def judgment(n: int) -> tuple[str, str, str]:
    """(text, question, answer): a short judgment-like document whose answer is an amount."""
    amount = f"{(n * 37) % 900 + 100}元"
    name = NAMES[n % len(NAMES)]
    text = (f"原告{name}{n}与被告{NAMES[(n + 3) % 10]}{n}原系夫妻关系，婚后在{PLACES[n % 5]}生活，"
            f"双方约定被告每月支付生活费{amount}，孩子随原告生活，被告到庭参加诉讼。")
    return text, "被告每月支付多少生活费？", amount


def write_set(root, count=40, name="cail2019_dev"):
    folder = root / name
    (folder / "docs").mkdir(parents=True)
    lines = []
    for n in range(count):
        text, question, answer = judgment(n)
        doc = f"j{n:03d}.txt"
        (folder / "docs" / doc).write_text(text, encoding="utf-8")
        lines.append({"id": f"{n}-1", "question": question, "doc_file": f"docs/{doc}", "answer_type": "span",
                      "answers": [answer], "answer_spans": [{"text": answer, "start_in_doc": text.index(answer)}]})
        lines.append({"id": f"{n}-2", "question": "法院判决的案件受理费是多少？", "doc_file": f"docs/{doc}",
                      "answer_type": "unanswerable", "answer_spans": []})
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    return folder


def hits_for(text: str, doc: str = "j.txt", offset: int = 100) -> list[Hit]:
    """The document as one retrieved passage starting at `offset` of its file."""
    return [Hit(Chunk(0, offset, offset + len(text), text, 1, 1, doc_id="d1"), doc, offset, offset + len(text), text, 1, 1)]


@pytest.fixture
def no_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("WENDAO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WENDAO_READER_MODEL", raising=False)
    reader_module._READERS.clear()
    yield
    reader_module._READERS.clear()


@pytest.mark.torch
def test_windows_and_labels_map_tokens_to_exact_characters(tmp_path):
    base = tiny_embedder(tmp_path / "base")
    reader = Reader(str(base), 0.0, max_length=40, stride=8, load_model=False)
    text, question, answer = judgment(7)
    parts = windows(reader.tokenizer, question, text, 40, 8)
    assert len(parts) > 1  # a passage longer than one window is read in overlapping windows
    for w in parts:
        assert len(w.ids) <= 40 and all(b > a for a, b in w.offsets)
    covered = {i for w in parts for a, b in w.offsets for i in range(a, b)}
    assert covered >= {i for i, ch in enumerate(text) if not ch.isspace()}
    a = text.index(answer)
    features = encode_example(reader, question, text, (a, a + len(answer)))
    positives = [(f, w) for f, w in zip(features, parts) if f.start > 0]
    assert positives and all(f.start == 0 and f.end == 0 for f in features if f.start == 0)
    f, w = positives[0]
    start, end = w.offsets[f.start - w.first][0], w.offsets[f.end - w.first][1]
    assert text[start:end] == answer
    one = encode_example(reader, question, text, (a, a + len(answer)), random.Random(0), 40)
    assert len(one) == 1 and one[0].start > 0


def test_threshold_keeps_the_reader_where_it_beats_the_heuristics():
    rows = [{"score": 5.0, "reader": True, "heuristic": False}, {"score": 4.0, "reader": True, "heuristic": True},
            {"score": 1.0, "reader": False, "heuristic": True}, {"score": 0.5, "reader": False, "heuristic": False}]
    threshold, metrics = choose_threshold(rows)
    assert 1.0 < threshold <= 4.0 and metrics["combined_in_span"] == 0.75 and metrics["reader_in_span"] == 0.5


def test_inside_threshold_only_where_marking_inside_the_heuristic_quote_beats_the_heuristics():
    rows = [{"inside_score": 3.0, "inside": True, "heuristic": False},
            {"inside_score": 2.0, "inside": True, "heuristic": True},
            {"inside_score": 1.0, "inside": False, "heuristic": True},
            {"inside_score": None, "inside": False, "heuristic": True}]
    assert choose_inside_threshold(rows) == 2.0
    assert choose_inside_threshold([dict(r, inside=False) for r in rows]) is None
    assert [r["heuristic"] for r in with_fallback(rows, 2.0)] == [True, True, True, True]


def test_without_a_reader_the_heuristics_mark_the_answer(no_reader, tmp_path):
    text, question, answer = judgment(3)
    assert reader_module.load_reader() is None
    plain = pinpoint(question, hits_for(text))
    assert plain.span.text == answer and plain.span.kind == "amount"
    # an unreadable folder (a card, no model) is ignored with a warning; answers go on
    folder = tmp_path / "data" / "models" / "reader"
    folder.mkdir(parents=True)
    (folder / "wendao_card.json").write_text(json.dumps({"threshold": 0.0}), encoding="utf-8")
    assert reader_module.reader_folder() == folder
    assert reader_module.load_reader() is None
    again = pinpoint(question, hits_for(text))
    assert (again.span.text, again.span.start, again.span.end) == (plain.span.text, plain.span.start, plain.span.end)


@pytest.mark.torch
def test_training_features_leave_out_excluded_documents(tmp_path):
    base = tiny_embedder(tmp_path / "base")
    reader = Reader(str(base), 0.0, max_length=64, stride=16, load_model=False)
    corpus = Corpus(write_set(tmp_path, count=6), "cail2019_dev")
    settings = ReaderSettings(source_questions={"cail2019_dev": 100}, unanswerable=0.5, negative_share=0.0)
    features, n = training_features(reader, corpus, {"j000.txt", "j001.txt"}, settings, random.Random(0))
    assert n == 4 and len(features) == 4  # two span questions and two unanswerable ones, of those two documents
    assert sorted(f.start > 0 for f in features) == [False, False, True, True]


@pytest.mark.slow
def test_a_trained_reader_marks_the_answer_with_exact_offsets(no_reader, tmp_path, monkeypatch):
    base = tiny_embedder(tmp_path / "base", hidden_size=64, num_hidden_layers=2)
    data = tmp_path / "sets"
    write_set(data, count=60)
    out = tmp_path / "models" / "reader"
    settings = ReaderSettings(layers=2, max_length=96, train_length=96, stride=24, epochs=12, batch_size=8,
                              learning_rate=2e-3, head_learning_rate=5e-3, freeze_embeddings=False,
                              sources=("cail2019_dev",), source_questions={"cail2019_dev": 100}, dev=0.2,
                              unanswerable=0.3, negative_share=0.0, dev_questions=12)
    card = train_reader(data, out, settings, base=str(base), exclude={"cail2019_dev": {"j059.txt"}})
    assert card["kind"] == "reader" and card["excluded_documents"] == {"cail2019_dev": 1}
    assert card["excluded_names"] == {"cail2019_dev": ["j059.txt"]}  # what the answerability combiner checks
    # 60 documents, 1 excluded, 12 for dev: 47 span questions and 30 unanswerable ones trained on
    assert card["questions"]["cail2019_dev"] == 47 + 30 and (out / "model.safetensors").is_file()
    assert card["metrics"]["all"]["reader_in_span"] >= 0.75  # it learned where the amount is
    # installed: the extract marks the reader's span, its offsets exact in the document
    assert set(card["thresholds"]) == {"typed", "untyped"} and "inside_threshold" in card
    card["threshold"], card["thresholds"] = 0.0, {"typed": -1e9}
    (out / "wendao_card.json").write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setenv("WENDAO_READER_MODEL", str(out))
    reader = reader_module.load_reader()
    assert reader is not None and reader.threshold_for("amount") == -1e9 and reader.threshold_for(None) == 0.0
    text, question, answer = judgment(59)  # a document it never saw
    document = "第一段。" * 25 + text
    offset = document.index(text)
    extract = pinpoint(question, hits_for(text, offset=offset))
    span = extract.span
    assert span.kind == "amount" and document[span.start:span.end] == span.text
    assert answer in span.text and len(span.text) <= len(answer) + 4
    assert extract.text.startswith(span.text + "\n")
    assert any(p.start <= span.start and span.end <= p.end for p in extract.picks)  # inside the quote
    # its own span below the threshold: the reader marks its best span inside the heuristics' quote
    reader.thresholds["typed"], reader.inside_threshold = 1e9, -1e9
    inside = pinpoint(question, hits_for(text, offset=offset))
    assert inside.reading[0] == "inside" and document[inside.span.start:inside.span.end] == inside.span.text
    assert any(p.start <= inside.span.start and inside.span.end <= p.end for p in inside.picks)
    # above every score: the heuristics mark it
    reader.inside_threshold = None
    fallback = pinpoint(question, hits_for(text, offset=offset))
    assert fallback.span.text == answer and fallback.reading is None
