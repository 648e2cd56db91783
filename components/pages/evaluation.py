"""评测: run a question set over several configurations; Recall@k / MRR / nDCG / latency table,
Recall@k curves, per-question CSV. Same code as `python -m services eval`.

A question set that was uploaded (or the bundled sample) can be kept as the KB's own question set
(services.tuning.evaluation.save_question_set) when it is run: it is then offered here for later runs and
used by fine-tuning for its before/after comparison. Its questions are shown inert; it can be removed."""
from __future__ import annotations

import itertools
from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from components.safe_text import inert
from components.state import create_kb, current_kb, library, select_kb, show_error
from components.widgets import eval_csv
from services import errors
from services.documents.chunking import ChunkingConfig
from services.tuning.evaluation import (KS, EvalConfig, chunker_variant, delete_question_set, evaluate, parse_questions,
                                 question_set, sample_documents, sample_question_lines, save_question_set)
from services.index.ingest import ingest_paths
from services.index.library import chunking_config, retrieval_settings
from services.search.retrieval import MODES

CHUNKERS = {"current": "当前知识库的切分", "sentence": "按句子 300 字 / 重叠 120", "fixed": "固定 300 字 / 重叠 50",
            "window": "滑动窗口 4 句 / 步长 2"}
CHUNKER_CONFIGS = {"sentence": ChunkingConfig("sentence", 300, 120), "fixed": ChunkingConfig("fixed", 300, 50),
                   "window": ChunkingConfig("window", window=4, stride=2)}

SHOWN_QUESTIONS = 20  # questions of a saved set listed on the page


def saved_panel(kb) -> None:
    """The KB's saved question set: how many questions, the first few (inert), and removing it."""
    kept = question_set(lib, kb)
    if not kept:
        return
    with st.expander(f"本知识库已保存 {len(kept)} 个问题（评测时可直接选用；微调时用来比较前后效果）"):
        st.markdown("  \n".join(f"{n}\\. {inert(q.question, keep_lines=False)}"
                                for n, q in enumerate(kept[:SHOWN_QUESTIONS], start=1)))
        if len(kept) > SHOWN_QUESTIONS:
            st.caption(f"……还有 {len(kept) - SHOWN_QUESTIONS} 个问题")
        if st.button("删除本知识库的问题集", key=f"eval_forget_{kb.id}"):
            try:
                delete_question_set(lib, kb)
                st.rerun()
            except errors.WendaoError as exc:
                show_error(exc)


lib = library()
st.title("评测")
kb = current_kb()
if kb is None or (st.session_state.get("eval_result") or (None,))[0] != kb.id:
    st.session_state.pop("eval_result", None)  # results belong to the KB they were run on

saved = question_set(lib, kb) if kb is not None else None
sources = {"sample": "内置示例（CMRC 2018 节选，33 题）", "upload": "上传 JSONL"}
if saved:
    sources = {"saved": f"本知识库的问题集（{len(saved)} 题）", **sources}
source = st.radio("问题集", list(sources), horizontal=True, format_func=sources.get)
questions, lines = None, None  # lines: the JSONL text, kept as the KB's question set when asked
if source == "saved":
    questions = saved
elif source == "sample":
    lines = sample_question_lines()
    questions = parse_questions(lines)
    st.caption("示例问题针对内置的 8 篇示例文档。")
    if st.button("创建「示例」知识库并导入示例文档"):
        sample = lib.store.find_kb("示例") or create_kb("示例")
        if sample:
            with st.spinner("正在索引示例文档…"):
                report = ingest_paths(lib, sample, sample_documents())
            select_kb(sample)
            st.success(f"示例知识库已就绪：{report.documents} 个新文档（{len(report.skipped)} 个已存在）。")
            kb = sample
else:
    upload = st.file_uploader("问题文件（每行一个 JSON：question, doc_file, answer_spans[].start_in_doc/text）",
                              type=["jsonl", "json"])
    if upload:
        try:
            lines = upload.getvalue().decode("utf-8-sig").splitlines()
            questions = parse_questions(lines)
        except (errors.WendaoError, UnicodeDecodeError) as exc:
            show_error(exc if isinstance(exc, errors.WendaoError) else errors.InvalidQuestionFile())

if kb is None or lib.store.count_chunks(kb.id) == 0:
    st.info("当前知识库还没有文档。可以先创建示例知识库。")
    st.stop()
st.markdown(f"评测知识库：**{inert(kb.name, keep_lines=False)}**" + (f" · {len(questions)} 个问题" if questions else ""))
if "eval_saved_note" in st.session_state:
    st.success(st.session_state.pop("eval_saved_note"))
saved_panel(kb)
keep = bool(questions and lines) and st.checkbox(
    "保存为本知识库的问题集", value=source == "upload", key=f"eval_keep_{kb.id}_{source}",
    help="开始评测时保存。以后评测可以直接选用它；微调向量模型时也会在这些问题上比较微调前后的效果。")
if questions:
    wanted = {q.doc_name for q in questions if q.doc_name}
    held = {d.filename for d in lib.store.list_documents(kb.id) if d.status == "ready" and d.enabled}
    if wanted and not wanted & held:
        st.warning("当前知识库里没有这些问题所针对的文档，评测结果会全部为 0。"
                   + ("示例问题需要「示例」知识库。" if source == "sample" else "请先上传问题文件中 doc_file 指向的文档。"))
        sample_kb = lib.store.find_kb("示例")
        if source == "sample" and sample_kb is not None and sample_kb.id != kb.id:
            if st.button("切换到「示例」知识库"):
                select_kb(sample_kb)
                st.rerun()
        elif source == "sample":
            st.caption("点上方「创建「示例」知识库并导入示例文档」。")
    elif wanted - held:
        st.caption(f"问题针对的 {len(wanted)} 个文档中，当前知识库有 {len(wanted & held)} 个；其余文档的问题得分为 0。")

c1, c2, c3 = st.columns(3)
modes = c1.multiselect("检索方式", list(MODES), default=list(MODES), format_func=MODES.get)
reranks = c2.multiselect("重排", [False, True], default=[False], format_func=lambda r: "开" if r else "关")
chunkers = c3.multiselect("切分方式", list(CHUNKERS), default=["current"], format_func=CHUNKERS.get)
limit = st.slider("最多评测多少题", 5, max(5, len(questions or [])), min(100, len(questions or [5])),
                  disabled=not questions) if questions and len(questions) > 5 else len(questions or [])

if st.button("开始评测", type="primary", disabled=not (questions and modes and reranks and chunkers)):
    base = retrieval_settings(lib, kb)
    note = None
    if keep:
        try:
            note = f"已保存为本知识库的问题集（{len(save_question_set(lib, kb, lines))} 题）。"
        except errors.WendaoError as exc:
            show_error(exc)
    bar = st.progress(0.0, text="准备中…")
    combos = list(itertools.product(chunkers, modes, reranks))
    all_summaries, all_rows = {}, []
    try:
        for i, (chunker, mode, rerank) in enumerate(combos):
            target = kb
            if chunker != "current" and CHUNKER_CONFIGS[chunker] != chunking_config(lib, kb):
                bar.progress(i / len(combos), text=f"按「{CHUNKERS[chunker]}」重新切分文档…")
                target = chunker_variant(lib, kb, CHUNKER_CONFIGS[chunker])
            name = f"{CHUNKERS[chunker]} · {MODES[mode]}" + (" · 重排" if rerank else "")
            config = EvalConfig(name, mode, rerank, replace(base, mode=mode, rerank=rerank))

            def progress(done, total, i=i):
                bar.progress((i + done / total) / len(combos), text=f"{name}：{done}/{total}")

            summaries, rows = evaluate(lib, target, questions[:limit], [config], progress)
            all_summaries.update(summaries)
            all_rows.extend(rows)
        bar.progress(1.0, text="完成")
        st.session_state["eval_result"] = (kb.id, all_summaries, all_rows)
    except Exception as exc:
        show_error(exc)
        if note:
            st.success(note)
    else:
        if note:  # show the saved set (now offered as this KB's question set) with the results
            st.session_state["eval_saved_note"] = note
            st.rerun()

result = st.session_state.get("eval_result")
if result and result[0] == kb.id:
    _, summaries, rows = result
    if all(s.get("recall@20", 0) == 0 for s in summaries.values()):
        st.warning("所有配置的得分都是 0：当前知识库很可能不包含问题所针对的文档。")
    table = pd.DataFrame([{"配置": name, **{k: v for k, v in s.items()}} for name, s in summaries.items()])
    table = table.rename(columns={"recall@1": "Recall@1", "recall@5": "Recall@5", "recall@10": "Recall@10",
                                  "recall@20": "Recall@20", "mrr@10": "MRR@10", "ndcg@10": "nDCG@10",
                                  "doc_recall@5": "文档 Recall@5", "p50_ms": "延迟 p50 (ms)", "p95_ms": "延迟 p95 (ms)",
                                  "coverage@1000chars": "答案覆盖@1000字", "coverage@2000chars": "答案覆盖@2000字",
                                  "questions": "题数"})
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns if c not in ("配置", "题数")})
    curve = pd.DataFrame([{"配置": name, "k": k, "召回率": s[f"recall@{k}"]} for name, s in summaries.items() for k in KS])
    legend = alt.Legend(orient="bottom", columns=1, labelLimit=600, title=None)
    st.altair_chart(alt.Chart(curve, title="Recall@k 曲线").mark_line(point=alt.OverlayMarkDef(size=70)).encode(
        x=alt.X("k:O", title="前 k 个结果", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("召回率:Q", scale=alt.Scale(zero=False), axis=alt.Axis(format=".0%")),
        color=alt.Color("配置:N", legend=legend), strokeDash=alt.StrokeDash("配置:N", legend=legend),
        shape=alt.Shape("配置:N", legend=legend), tooltip=["配置", "k", alt.Tooltip("召回率:Q", format=".3f")]),
        width="stretch")
    latency = table[["配置", "延迟 p50 (ms)", "延迟 p95 (ms)"]].melt("配置", var_name="指标", value_name="毫秒")
    latency["指标"] = latency["指标"].map({"延迟 p50 (ms)": "中位数 p50", "延迟 p95 (ms)": "p95"})
    st.altair_chart(alt.Chart(latency, title="检索延迟（毫秒）").mark_bar().encode(
        y=alt.Y("配置:N", title=None, axis=alt.Axis(labelLimit=600)), yOffset="指标:N",
        x=alt.X("毫秒:Q", title="毫秒", axis=alt.Axis(format="~s")), color=alt.Color("指标:N", title=None),
        tooltip=["配置", "指标", alt.Tooltip("毫秒:Q", format=".1f")]), width="stretch")
    csv = eval_csv(rows)
    st.download_button("下载逐题结果 CSV", csv, icon=":material/download:", file_name="wendao-eval.csv", mime="text/csv")
