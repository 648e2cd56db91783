"""A fresh-eyes walkthrough's UI-text findings (issue 22 items 7, 12, 14 and polish): one display
rule for untrusted names, the 评测 page's messages, the model label."""
import pytest

from services.conversations import export_markdown
from services.documents.text import display_name


# --- 1. one readable display rule for control characters, pages and export alike ---------------
def test_control_characters_show_as_readable_ascii_not_control_pictures():
    shown = display_name("bad\x07na\x1bme.txt")
    assert shown == "bad<U+0007>na<U+001B>me.txt"
    # the Control Pictures block (U+2400-243F) is drawn as empty boxes by the CJK fonts
    assert not any(0x2400 <= ord(ch) <= 0x243F for ch in display_name("".join(map(chr, range(0x20))) + "\x7f"))
    assert display_name("invoice\u202eexe.txt") == "invoice<U+202E>exe.txt"
    assert display_name("长江 报告（2024）.pdf") == "长江 报告（2024）.pdf"


def test_export_shows_names_by_the_same_rule_as_the_page():
    name = "bad\x07na\x1bme.txt"
    answer = {"answer": "长江全长约六千三百公里[1]。",
              "sources": [{"doc": name, "pages": [1, 1], "text": "长江全长约六千三百公里。", "start": 0}],
              "citations": [{"n": 1, "doc": name, "quote": "长江全长约六千三百公里。", "supported": True}]}
    md = export_markdown("库\x1b[31m", [{"question": "长江多长？", "answer": answer}])
    assert "《bad<U+0007>na<U+001B>me.txt》" in md, md
    assert "库<U+001B>[31m" in md
    assert "\x07" not in md and "\x1b" not in md


# --- 2. the 评测 page says before a run what the run does, one completion line, plain ms ----------
def _eval_kb(data_dir):
    from fixtures import ZH_PARAGRAPHS
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    text = "".join(ZH_PARAGRAPHS)
    assert ingest_bytes(lib, kb, text.encode(), "geo.txt").status == "ok"
    return lib, kb, text


def _lines(text, n, missing=0):
    import json

    start = text.index("珠穆朗玛峰")
    q = {"question": "世界最高峰是哪座山", "doc_file": "docs/geo.txt",
         "answer_spans": [{"text": "珠穆朗玛峰", "start_in_doc": start}]}
    out = [json.dumps({**q, "question": f"{q['question']}{i}"}, ensure_ascii=False) for i in range(n)]
    out += [json.dumps({"question": f"不在库里{i}", "doc_file": "nope.txt", "answer": "无"}, ensure_ascii=False)
            for i in range(missing)]
    return "\n".join(out).encode()


def test_evaluation_page_messages_agree_with_the_run(data_dir):
    import json

    from test_app import app, button, finish_jobs

    lib, kb, text = _eval_kb(data_dir)
    at = app("evaluation")
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", _lines(text, 2, missing=1), "application/json")]).run()
    before = [c.value.replace("\\", "") for c in at.caption if "当前知识库有" in c.value]
    assert before and "得分为 0" not in before[0], before
    assert "nope.txt" in before[0] and "1 个问题" in before[0] and "不计入检索评分" in before[0], before
    at.multiselect[0].set_value(["bm25"]).run()
    button(at, "开始评测").click().run()
    finish_jobs(at)
    assert not at.exception, [e.value for e in at.exception]
    after = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("未计入检索评分")]
    assert after and "nope.txt" in after[0], after
    # the latency axis reads plain milliseconds (200, 4,000), not SI "0.2k"
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    axes = [s["encoding"]["x"].get("axis", {}) for s in specs if "检索用时" in json.dumps(s.get("title"), ensure_ascii=False)]
    assert axes and axes[0].get("format") != "~s" and "s" not in axes[0].get("format", ""), axes

    # a second run: after a reload only the latest run's completion line is listed
    button(at, "开始评测").click().run()
    finish_jobs(at)
    fresh = app("evaluation")  # a new session: the last hour's jobs are listed
    done = [s.value for s in fresh.success if "评测完成" in s.value]
    assert len(done) == 1, done


def test_saved_and_uploaded_question_counts_are_told_apart(data_dir):
    from services.tuning.evaluation import save_question_set
    from test_app import app

    lib, kb, text = _eval_kb(data_dir)
    save_question_set(lib, kb, _lines(text, 9).decode().splitlines())
    at = app("evaluation")
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", _lines(text, 6), "application/json")]).run()
    titles = [e.label for e in at.expander if "问题集" in e.label]
    assert titles and "9 个问题" in titles[0] and "上传的文件（6 个问题，尚未保存）" in titles[0], titles
    keep = at.checkbox(key=f"eval_keep_{kb.id}_upload")
    assert "替换已保存的 9 个问题" in keep.label
    assert not keep.value  # an upload replaces the saved set only when asked (it was ticked by default)


# --- 5. the citation dialog shows a one-chunk document's paragraph once ---------------------------
ONE_CHUNK = ("经审理查明，原告王某与被告张某原系夫妻关系，2011年3月16日生育一女王某雯。"
             "原告王某每月支付1000元抚养费直到婚生女王某雯满十八周岁。")


@pytest.mark.parametrize("fmt", ["txt", "pdf"])
def test_citation_dialog_shows_a_one_chunk_documents_paragraph_once(data_dir, fmt):
    from fixtures import make_pdf
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library
    from test_ui_everyday import app, ask
    from test_walkthrough_fixes import cited_passage_boxes

    lib = open_library(data_dir)
    kb = lib.kb("判决书", create=True)
    data = ONE_CHUNK.encode() if fmt == "txt" else make_pdf([ONE_CHUNK])
    assert ingest_bytes(lib, kb, data, f"判决.{fmt}").status == "ok"
    assert len(lib.store.list_documents(kb.id)) == 1 and lib.store.list_documents(kb.id)[0].chunk_count == 1
    at = app("chat")
    ask(at, "原告每月支付多少抚养费？")
    boxes = cited_passage_boxes(at, "\\[1\\] 判决")
    assert len([b for b in boxes if "2011年3月16日" in b]) == 1, boxes


# --- 6. the bundled model is named in plain Chinese, never by its engine -------------------------
@pytest.mark.torch
def test_no_page_names_the_bundled_models_engine(data_dir, monkeypatch):
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library
    from services.index.models import BUNDLED_TORCH_EMBEDDER
    from test_app import app

    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", BUNDLED_TORCH_EMBEDDER)  # today's default for new KBs
    lib = open_library(data_dir)
    kb = lib.kb("新库", create=True)
    ingest_bytes(lib, kb, ONE_CHUNK.encode(), "判决.txt")  # the 微调 page needs a document
    for page in ("finetune", "settings", "library", "lab", "evaluation"):
        at = app(page)
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = [str(e.value) for kind in ("markdown", "caption", "info", "success", "warning", "title", "subheader")
                 for e in at.get(kind)]
        shown += [str(o) for s in at.selectbox for o in s.options] + [b.label for b in at.button]
        assert not [s for s in shown if "torch" in s.lower() or BUNDLED_TORCH_EMBEDDER in s], page
    at = app("finetune")
    assert any("当前向量模型：「multilingual\\-e5\\-small（内置，推荐）」" in str(m.value) for m in at.markdown), \
        [str(m.value) for m in at.markdown][:5]


def test_an_index_built_with_another_model_is_named_by_its_label():
    """The rebuild-index message names the model the index was built with as users know it, not by
    its stored name with the engine in it (「(内置·torch)」)."""
    from services import errors
    from services.index.models import BUNDLED_LABEL, BUNDLED_TORCH_EMBEDDER
    from services.index.vectors import IndexSpec, _check_meta

    spec = IndexSpec("e5-new", dim=384, fingerprint="new-model")
    with pytest.raises(errors.IndexMismatch) as exc:
        _check_meta("kb1__dense", {"fingerprint": "old-model", "model": BUNDLED_TORCH_EMBEDDER}, spec)
    assert BUNDLED_LABEL in exc.value.message_zh and "torch" not in exc.value.message_zh
