"""What a new user's walkthrough of every page in Chromium found (issue 18's walkthrough, issue 22's
polish items), where AppTest or a plain call is enough; the browser side is in
tests/test_browser_walkthrough.py."""
import json
import re
import time

import pytest

from services.conversations import export_markdown
from test_app import app, button, finish_jobs
from test_ui_everyday import two_docs  # noqa: F401 - fixture


# --- 9. the export lists each cited source once ---------------------------------------------------
def test_export_lists_each_source_once_with_its_quotes():
    source = {"doc": "长江.txt", "pages": [1, 1], "text": "长江全长约六千三百公里。它发源于青藏高原。", "start": 0}
    answer = {"answer": "长江全长约六千三百公里[1]，发源于青藏高原[1]，注入东海[1]。[2]",
              "sources": [source, {"doc": "黄河.pdf", "pages": [2, 3], "text": "黄河", "start": 0}],
              "citations": [{"n": 1, "doc": "长江.txt", "quote": "长江全长约六千三百公里。", "supported": True},
                            {"n": 1, "doc": "长江.txt", "quote": "它发源于青藏高原。", "supported": True},
                            {"n": 1, "doc": "长江.txt", "quote": "长江全长约六千三百公里。", "supported": True},
                            {"n": 2, "doc": "黄河.pdf", "quote": "注入东海。", "supported": False}]}
    md = export_markdown("地理", [{"question": "长江有多长？", "answer": answer}])
    listed = [line for line in md.splitlines() if line.startswith("- [")]
    assert len(listed) == 2, md  # [1] once, [2] once
    assert listed[0].startswith("- [1] 《长江.txt》：")  # a TXT has no pages
    assert listed[0].count("长江全长约六千三百公里") == 1 and "它发源于青藏高原" in listed[0]
    assert listed[1].startswith("- [2] 《黄河.pdf》第2–3页") and "（未核实）" in listed[1]


# --- 7. a model's licence is written one way -----------------------------------------------------
def test_model_cards_write_the_licence_one_way(two_docs):  # noqa: F811
    at = app("settings")
    shown = [str(e.value) for kind in ("markdown", "caption") for e in at.get(kind) if "许可" in str(e.value)]
    assert len(shown) >= 2, shown  # the reranker's line and the embedding model's card
    assert all(re.search(r"许可：(MIT|Apache|未声明|非商用|见模型卡)", s) for s in shown), shown
    assert not [s for s in shown if re.search(r"许可[ *]", s)], shown


# --- 8. the faster bundled model names the model it is the same as --------------------------------
# --- 5. 评测 shows one list of its background work, under 开始评测 ----------------------------------
@pytest.mark.slow
def test_evaluation_page_has_one_job_list_under_its_start_button(data_dir):
    at = app("evaluation")
    button(at, "创建「示例」知识库").click().run()
    finish_jobs(at)  # the sample documents, indexed by the background worker
    labels = [b.label for b in at.button]
    assert labels.count("清除这些记录") == 1, labels
    assert labels.index("清除这些记录") > labels.index("开始评测")
    assert any("示例知识库已就绪" in s.value for s in at.success)
    at.multiselect[0].set_value(["bm25"]).run()
    time.sleep(1.5)  # a person reads the page before starting (a new run's list starts a second before it)
    button(at, "开始评测").click().run()
    finish_jobs(at)
    labels = [b.label for b in at.button]
    assert labels.count("清除这些记录") == 1, labels
    assert labels.index("清除这些记录") > labels.index("开始评测")
    done = [s.value for s in at.success]
    assert any("评测完成" in s for s in done) and not any("示例知识库已就绪" in s for s in done), done


# --- 3. 文档库 has one way to delete documents -----------------------------------------------------
def test_library_deletes_documents_one_way_and_names_them(two_docs):  # noqa: F811
    lib, kb = two_docs
    at = app("library")
    deleting = [b.label for b in at.button if "删除" in b.label and "知识库" not in b.label]
    assert deleting == [], deleting  # nothing to delete until rows are ticked: no second way beside the table
    assert any("勾选表格左侧的方框" in c.value for c in at.caption)
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    at.run()
    deleting = [b.label for b in at.button if "删除" in b.label and "知识库" not in b.label]
    assert deleting == ["删除选中的 2 个文档"], deleting
    button(at, "删除选中的 2 个文档").click().run()
    asked = next(w.value for w in at.warning if "确定删除" in w.value)
    assert "rivers" in asked and "制度" in asked and "它们" in asked
    next(b for b in at.button if b.label == "确认删除").click().run()
    assert lib.store.list_documents(kb.id) == []


# --- 4. 微调 estimates the reranker's training time too ---------------------------------------------
def test_the_reranker_section_estimates_this_kbs_run_and_learns_the_speed(two_docs):  # noqa: F811
    from services.tuning.finetune import models_dir
    from services.tuning.rerank_training import REFERENCE_LOAD_S, REFERENCE_RATES, RerankSettings, estimate

    lib, kb = two_docs
    first = estimate(lib, kb, RerankSettings(max_pairs=40))
    chunks = lib.store.count_chunks(kb.id)
    assert not first["measured"] and first["chunks"] == chunks and first["steps"] > 0
    assert first["stages"]["train"] == pytest.approx(REFERENCE_RATES["train"] * first["steps"] + REFERENCE_LOAD_S, abs=0.1)
    at = app("finetune")
    lines = [m.value for m in at.markdown if m.value.startswith("预计用时")]
    assert len(lines) == 2, lines  # the embedding model's and the reranker's
    assert f"本知识库 {chunks} 个片段" in lines[1] and "步训练" in lines[1]
    at.number_input(key=f"rerank_train_{kb.id}_pairs").set_value(16).run()
    fewer = [m.value for m in at.markdown if m.value.startswith("预计用时")][1]
    assert fewer != lines[1] or first["pairs"] <= 16  # follows the setting at once (no form to submit)
    # a reranker trained here records its stage times; the next estimate uses them
    folder = models_dir(lib) / "测速重排"
    folder.mkdir(parents=True)
    timing = {"stages": {"data": 10.0, "before": 4.0, "train": 70.0, "after": 40.0}, "steps_s": 60.0, "pairs": 100,
              "steps": 30, "evaluated": 20, "weights": 2, "chunks": chunks}
    summary = {"recall@1": 0.5, "recall@5": 0.5, "mrr@10": 0.5, "coverage@1000chars": 1.0, "p50_ms": 12.0, "questions": 9}
    card = {"name": "测速重排", "kind": "reranker", "kb": kb.name, "base_model": "e5", "created_at": 2.0,
            "pairs": {"train": 30, "examples": 120, "heldout": 9}, "seconds": 124.0, "added_ms_p50": 40.0,
            "results": {"heldout": {"off": summary, "on": summary}}, "better": False, "better_on": "heldout",
            "timing": timing}
    (folder / "wendao_card.json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    again = estimate(lib, kb, RerankSettings(max_pairs=40))
    assert again["measured"] and again["stages"]["train"] == pytest.approx(2.0 * again["steps"] + 10.0, abs=0.1)
    assert again["stages"]["after"] == pytest.approx(1.0 * again["evaluated_on"], abs=0.1)
    assert "按本机最近几次微调实测的速度" in [m.value for m in app("finetune").markdown if m.value.startswith("预计用时")][1]


# --- 1 and 2. plain Chinese first on 检索实验室, 评测 and 检索详情; tables that fit ----------------------
# What the walkthrough found in labels, captions, table headers and chart titles (not in tooltips).
JARGON = ("BM25 原始分数", "BM25 分数", "BM25 名次", "BM25 检索", "BM25 前", "BM25 第", "查询向量化", "融合", "Recall@",
          "MRR", "nDCG", "jieba", "位置 ", "合并相邻窗口", "[0,", "\\[0,", "查询分词")


def shown_and_helps(at) -> tuple[str, str]:
    """(everything written on the page outside tooltips, including table headers and chart and axis
    titles; the tooltips, including the tables' column help)."""
    from test_ui_polish import tooltips, visible_words

    shown, helps = [visible_words(at)], [tooltips(at)]
    for frame in at.dataframe:
        shown += list(frame.value.columns)
        config = json.loads(frame.proto.columns or "{}")
        helps += [c.get("help", "") for c in config.values()]
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        shown += [str(spec.get("title", ""))] + re.findall(r'"title": "([^"]*)"', json.dumps(spec, ensure_ascii=False))
    return "\n".join(shown), "\n".join(helps)


def test_lab_evaluation_and_details_speak_plain_chinese_with_the_terms_in_tooltips(two_docs):  # noqa: F811
    lib, kb = two_docs
    lab = app("lab")
    lab.text_input[0].input("黄河 母亲河").run()
    lab.text_input[1].input("母亲河").run()  # where the expected passage sits, with its place in the document
    shown, helps = shown_and_helps(lab)
    assert not [w for w in JARGON if w in shown], [w for w in JARGON if w in shown]
    for term in ("BM25", "fusion", "RRF", "cross-encoder", "查询向量化"):
        assert term in helps, term
    assert re.search(r"第 \d+–\d+ 字", shown)  # a passage's place: 第 1–257 字, never [0, 257)
    assert {"关键词", "向量", "合并", "内容"} <= set(lab.dataframe[0].value.columns)

    chat = app("chat")
    chat.chat_input[0].set_value("长江全长多少公里？").run()
    shown, helps = shown_and_helps(chat)
    stages = "".join(next(f for f in chat.dataframe if "阶段" in f.value.columns).value["阶段"])
    assert "关键词检索" in stages and "合并排序" in stages
    assert not [w for w in JARGON if w in shown + stages], [w for w in JARGON if w in shown + stages]
    assert "BM25" in helps and "查询向量化" in helps

    doc = next(d for d in lib.store.list_documents(kb.id) if d.filename == "rivers.txt")
    start = lib.store.document_text(kb.id, doc.id).index("长江")
    line = json.dumps({"question": "长江全长多少公里？", "doc_file": "rivers.txt",
                       "answer_spans": [{"text": "长江", "start_in_doc": start}]}, ensure_ascii=False)
    ev = app("evaluation")
    ev.radio[0].set_value("upload").run()
    ev.get("file_uploader")[0].set_value([("q.jsonl", line.encode(), "application/json")]).run()
    button(ev, "开始评测").click().run()
    finish_jobs(ev)
    shown, helps = shown_and_helps(ev)
    assert not [w for w in JARGON if w in shown], [w for w in JARGON if w in shown]
    for term in ("Recall@1", "Recall@5", "MRR@10", "nDCG@10", "p95"):
        assert term in helps, term
    assert "前5条命中" in shown and "前1000字含答案" in shown


def test_tables_are_sized_to_fit_and_wrap_their_text(two_docs):  # noqa: F811
    """Item 1: every column has a width, the widths add up to less than the page (about 940 px at
    1400 px; half of it side by side) and the long text columns wrap (rows above 4rem)."""
    lab = app("lab")
    lab.text_input[0].input("黄河 母亲河").run()

    def width(frame) -> int:
        config = {k: c for k, c in json.loads(frame.proto.columns or "{}").items() if k != "_index"}
        sizes = {"small": 75, "medium": 200, "large": 400}
        widths = [sizes.get(c.get("width"), c.get("width")) for c in config.values()]
        assert len(config) == len(frame.value.columns) and all(isinstance(w, int) for w in widths), config
        return sum(widths)

    assert all(width(f) <= 930 for f in lab.dataframe)
    assert all(f.proto.row_height > 64 for f in lab.dataframe)  # Streamlit wraps text above 4rem
    lab.toggle(key="lab_compare").set_value(True).run()
    assert all(width(f) <= 460 for f in lab.dataframe)
