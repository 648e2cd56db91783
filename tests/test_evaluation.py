"""Evaluation chunker variants (issue 8 item 10): PDFs and DOCX must not drop out, pages and offsets
stay those of the stored text, and the hidden variant KB's name is always valid. A KB's saved
question set (issue 13: fine-tuning evaluates on it) lives and dies with the KB."""
import json

from fixtures import ZH_PARAGRAPHS, make_docx, make_pdf
from services.documents.chunking import ChunkingConfig
from services.tuning.evaluation import EvalConfig, Question, chunker_variant, evaluate, variant_name
from services.index.ingest import ingest_bytes

WINDOW = ChunkingConfig("window", window=2, stride=1)


def _ingest_mixed(lib, kb):
    for data, name in ((make_pdf([ZH_PARAGRAPHS[0], ZH_PARAGRAPHS[2]]), "geo.pdf"),
                       (make_docx(), "rules.docx"), ("".join(ZH_PARAGRAPHS[1:]).encode(), "river.txt")):
        assert ingest_bytes(lib, kb, data, name, ChunkingConfig("sentence", 60, 0)).status == "ok", name


def test_variant_rechunks_stored_text_of_pdf_and_docx_keeping_pages(lib, kb):
    _ingest_mixed(lib, kb)
    seen = []
    variant = chunker_variant(lib, kb, WINDOW, lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3)
    source = {d.filename: d for d in lib.store.list_documents(kb.id)}
    copies = {d.filename: d for d in lib.store.list_documents(variant.id)}
    assert set(copies) == {"geo.pdf", "rules.docx", "river.txt"}
    assert all(d.status == "ready" for d in copies.values())
    for name, d in source.items():
        assert lib.store.document_text(variant.id, copies[name].id) == lib.store.document_text(kb.id, d.id)
        assert lib.store.page_spans(variant.id, copies[name].id) == lib.store.page_spans(kb.id, d.id)
        chunks = lib.store.chunks_of(variant.id, copies[name].id)
        assert chunks and all(c.strategy == "window" for c in chunks)
    pdf_text = lib.store.document_text(kb.id, source["geo.pdf"].id)
    everest = [c for c in lib.store.chunks_of(variant.id, copies["geo.pdf"].id) if "珠穆朗玛峰" in c.text]
    assert everest and all(c.page_end == 2 for c in everest)
    assert all(pdf_text[c.start:c.end] == c.text for c in everest)


def test_variant_evaluation_finds_answers_in_pdf_and_docx(lib, kb):
    _ingest_mixed(lib, kb)
    variant = chunker_variant(lib, kb, WINDOW)
    texts = {d.filename: lib.store.document_text(kb.id, d.id) for d in lib.store.list_documents(kb.id)}
    questions = []
    for n, (doc, answer, question) in enumerate((("geo.pdf", "珠穆朗玛峰", "世界最高峰是哪座山"),
                                                 ("rules.docx", "2487万", "上海人口有多少"))):
        start = texts[doc].index(answer)
        questions.append(Question(str(n), question, f"docs/{doc}", [(start, start + len(answer))], [answer]))
    summaries, rows = evaluate(lib, variant, questions, [EvalConfig("bm25", "bm25")])
    assert summaries["bm25"]["recall@5"] == 1.0, rows


def test_variant_name_is_valid_and_unique_for_long_names(lib):
    long_kb = lib.kb("长" * 64, create=True)
    other = lib.kb("长" * 63 + "短", create=True)
    names = {variant_name(k, c) for k in (long_kb, other)
             for c in (WINDOW, ChunkingConfig("window", window=4, stride=2), ChunkingConfig("fixed", 100, 20))}
    assert len(names) == 6 and all(len(n) <= 64 and n.startswith("~") for n in names)
    ingest_bytes(lib, long_kb, ZH_PARAGRAPHS[0].encode(), "a.txt")
    variant = chunker_variant(lib, long_kb, WINDOW)
    assert variant.name == variant_name(long_kb, WINDOW) and lib.store.count_chunks(variant.id) > 0


def test_variant_is_reused_until_the_source_changes(lib, kb):
    ingest_bytes(lib, kb, ZH_PARAGRAPHS[0].encode(), "a.txt")
    first = chunker_variant(lib, kb, WINDOW)
    created = [d.created_at for d in lib.store.list_documents(first.id)]
    assert [d.created_at for d in lib.store.list_documents(chunker_variant(lib, kb, WINDOW).id)] == created
    ingest_bytes(lib, kb, make_docx(), "rules.docx")
    assert {d.filename for d in lib.store.list_documents(chunker_variant(lib, kb, WINDOW).id)} == {"a.txt", "rules.docx"}


def test_variant_copies_vectors_even_when_embedding_fails_once(lib, kb, monkeypatch):
    """Ingest leaves a document keyword-only when embedding fails; the variant retries, and a
    document it cannot embed fails the comparison by name instead of skewing it."""
    import pytest

    import services.index.ingest as ingest
    from services import errors

    ingest_bytes(lib, kb, make_docx(), "rules.docx")
    real, calls = ingest.embed_with_cache, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "embed_with_cache", flaky)
    variant = chunker_variant(lib, kb, WINDOW)
    assert [d.dense_state for d in lib.store.list_documents(variant.id)] == ["done"]

    def broken(*args, **kwargs):
        raise RuntimeError("always")

    monkeypatch.setattr(ingest, "embed_with_cache", broken)
    with pytest.raises(errors.WendaoError) as exc:
        chunker_variant(lib, kb, ChunkingConfig("fixed", 80, 10))
    assert "rules.docx" in exc.value.message_zh


def test_variant_follows_documents_switched_off(lib, kb):
    ingest_bytes(lib, kb, ZH_PARAGRAPHS[0].encode(), "a.txt")
    off = ingest_bytes(lib, kb, ZH_PARAGRAPHS[1].encode(), "b.txt").doc_id
    lib.set_enabled(kb, off, False)
    variant = chunker_variant(lib, kb, WINDOW)
    assert {d.filename: d.enabled for d in lib.store.list_documents(variant.id)} == {"a.txt": True, "b.txt": False}
    lib.set_enabled(kb, off, True)
    assert all(d.enabled for d in lib.store.list_documents(chunker_variant(lib, kb, WINDOW).id))


def test_variant_survives_renaming_the_source(lib, kb):
    ingest_bytes(lib, kb, ZH_PARAGRAPHS[0].encode(), "a.txt")
    first = chunker_variant(lib, kb, WINDOW)
    renamed = lib.rename_kb(kb, "新名字")
    assert chunker_variant(lib, renamed, WINDOW).id == first.id


QUESTION_LINES = [json.dumps({"id": "q1", "question": "世界最高峰是哪座山", "doc_file": "docs/geo.pdf",
                              "answer_spans": [{"text": "珠穆朗玛峰", "start_in_doc": 0}]}, ensure_ascii=False),
                  "",
                  json.dumps({"question": "上海人口有多少", "doc_file": "rules.docx"}, ensure_ascii=False)]


def test_a_kb_keeps_its_question_set_until_removed_or_the_kb_is_deleted(lib, kb):
    import pytest

    from services import errors
    from services.tuning.evaluation import delete_question_set, question_set, save_question_set

    other = lib.kb("另一个", create=True)
    assert question_set(lib, kb) is None
    assert [q.question for q in save_question_set(lib, kb, QUESTION_LINES)] == ["世界最高峰是哪座山", "上海人口有多少"]
    saved = question_set(lib, kb)
    assert [(q.id, q.doc_name, q.spans) for q in saved] == [("q1", "geo.pdf", [(0, 5)]), ("3", "rules.docx", [])]
    assert question_set(lib, other) is None  # per KB
    with pytest.raises(errors.InvalidQuestionFile):
        save_question_set(lib, kb, ['{"question": "缺右括号"'])
    assert len(question_set(lib, kb)) == 2  # a bad file never replaces the saved set
    delete_question_set(lib, kb)
    assert question_set(lib, kb) is None
    save_question_set(lib, other, QUESTION_LINES)
    lib.delete_kb(other)
    assert not lib.kb_folder(other.id).exists()
    assert question_set(lib, lib.kb("新的", create=True)) is None  # even where SQLite reuses the deleted id


def test_evaluation_page_keeps_an_uploaded_question_set_shows_it_inert_and_removes_it(data_dir):
    from test_app import app, button, finish_jobs

    from services.tuning.evaluation import question_set
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    text = "".join(ZH_PARAGRAPHS)
    assert ingest_bytes(lib, kb, text.encode(), "geo.txt").status == "ok"
    start = text.index("珠穆朗玛峰")
    line = json.dumps({"question": "[点我](http://evil.example/x) 世界最高峰是哪座山", "doc_file": "docs/geo.txt",
                       "answer_spans": [{"text": "珠穆朗玛峰", "start_in_doc": start}]}, ensure_ascii=False)
    at = app("evaluation")
    assert list(at.radio[0].options)[0].startswith("内置示例")  # no saved set yet
    assert not [c for c in at.checkbox if c.key == f"eval_keep_{kb.id}_sample"]  # refused here (no sample docs): nothing to keep
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", line.encode(), "application/json")]).run()
    assert at.checkbox(key=f"eval_keep_{kb.id}_upload").value  # uploads are kept by default
    at.multiselect[0].set_value(["bm25"]).run()
    button(at, "开始评测").click().run()
    assert not at.exception, [e.value for e in at.exception]
    finish_jobs(at)  # the run is a background job
    assert [q.question for q in question_set(lib, kb)] == ["[点我](http://evil.example/x) 世界最高峰是哪座山"]
    assert any("已保存为本知识库的问题集（1 题）" in s.value for s in at.success)
    assert at.radio[0].value == "saved" and list(at.radio[0].options)[0] == "本知识库的问题集（1 题）"
    assert at.dataframe[0].value["第1条命中"].iloc[0] == 1.0  # the results of the run stay on the page
    shown = [m.value for m in at.markdown if "点我" in m.value]
    assert shown and all("](http" not in m and "\\[点我\\]" in m for m in shown)  # inert, no live link
    button(at, "开始评测").click().run()  # the saved set runs like any other
    finish_jobs(at)
    assert len(open_library(data_dir).store.jobs.of_kb(kb.id, ("evaluate",), 0)) == 2
    assert not at.exception and at.dataframe[1].value["题数"].iloc[0] == 1
    button(at, "删除本知识库的问题集").click().run()
    assert question_set(lib, kb) is None
    assert not any(o.startswith("本知识库的问题集") for o in at.radio[0].options)


def test_evaluation_cannot_start_on_a_kb_without_the_questions_documents(data_dir):
    """The sample questions on a KB that holds none of their documents: a warning and no run (it
    used to start and then fail); a question file naming docs/geo.txt runs on a KB holding geo.txt."""
    from test_app import app, button

    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    text = "".join(ZH_PARAGRAPHS)
    assert ingest_bytes(lib, kb, text.encode(), "geo.txt").status == "ok"
    at = app("evaluation")
    assert any("无法评测" in w.value for w in at.warning)
    assert button(at, "开始评测").disabled
    start = text.index("珠穆朗玛峰")
    line = json.dumps({"question": "世界最高峰是哪座山", "doc_file": "docs/GEO.md",
                       "answer_spans": [{"text": "珠穆朗玛峰", "start_in_doc": start}]}, ensure_ascii=False)
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", line.encode(), "application/json")]).run()
    assert not any("无法评测" in w.value for w in at.warning)
    assert not button(at, "开始评测").disabled


def test_clearing_the_evaluation_records_clears_the_results_shown(data_dir):
    """评测's 清除这些记录 clears the finished run's results (last-run line, tables, charts) as well as
    its job line, and they stay cleared when the page is run again; a new run shows its results."""
    from test_app import app, button, finish_jobs

    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    text = "".join(ZH_PARAGRAPHS)
    assert ingest_bytes(lib, kb, text.encode(), "geo.txt").status == "ok"
    line = json.dumps({"question": "世界最高峰是哪座山", "doc_file": "geo.txt", "answer": "珠穆朗玛峰"}, ensure_ascii=False)
    at = app("evaluation")
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", line.encode(), "application/json")]).run()
    at.multiselect[0].set_value(["bm25"]).run()
    button(at, "开始评测").click().run()
    finish_jobs(at)
    assert any(c.value.startswith("最近一次评测") for c in at.caption) and len(at.dataframe) == 2
    assert at.dataframe[0].value["第1条命中"].iloc[0] == 1.0  # the answer text was located in geo.txt
    button(at, "清除这些记录").click().run()
    for _ in range(2):  # cleared, and still cleared when the page runs again
        assert not any(c.value.startswith("最近一次评测") for c in at.caption)
        assert len(at.dataframe) == 0 and not any(b.label.startswith("清除这些记录") for b in at.button)
        at.switch_page("components/pages/evaluation.py").run()
    button(at, "开始评测").click().run()
    finish_jobs(at)
    assert any(c.value.startswith("最近一次评测") for c in at.caption) and len(at.dataframe) == 2
