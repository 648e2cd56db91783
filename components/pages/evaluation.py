"""评测: run a question set over several configurations (chunker x retrieval mode x rerank) as a
background job (kb.evaluate; its progress polled in the job panel, so a reload or a second tab
still shows it); Recall@k / MRR / nDCG / latency table, Recall@k curves and the per-question CSV
of the KB's latest finished evaluation (its job result). Same code as `python -m services eval`.

A question set that was uploaded (or the bundled sample) can be kept as the KB's own question set
when it is run: it is then offered here for later runs and used by fine-tuning for its
before/after comparison. Its questions are shown inert; it can be removed."""
from __future__ import annotations

import json
import time

import altair as alt
import pandas as pd
import streamlit as st

from components.job_view import job_panel, jobs_running, new_batch
from components.safe_text import inert, inert_name
from components.state import current_kb, select_kb, session, show_error
from components.widgets import SERIES_COLORS, WRAP_ROW_HEIGHT, eval_csv
from components.words import COVERAGE, CURVE_HELP, CURVE_NOTE, CURVE_TITLE, METRIC_HELP, METRIC_ZH, QUALITY
from services import errors
from services.views import CHUNKER_NAMES, KS, MODES, config_labels, doc_key, parse_questions, sample_question_lines

SHOWN_QUESTIONS = 20  # questions of a saved set listed on the page
SAMPLE_KB = "示例"
# The page's background work, shown in one panel (one list, one 清除这些记录): under 开始评测, or where
# the page stops while the sample documents are still being imported into an empty KB.
JOBS = ("sample", "evaluate")


def saved_panel(kb, chosen: str = "") -> None:
    """The KB's saved question set: how many questions, the first few (inert), and removing it.
    `chosen`: the set picked above when it is another one (「上传的文件（6 个问题，尚未保存）」), so
    the two counts are not mistaken for each other."""
    kept = kb.question_set()
    if not kept:
        return
    title = f"本知识库已保存的问题集：{len(kept)} 个问题（评测时可直接选用；微调时用来比较前后效果）"
    if chosen:
        title = f"本知识库已保存的问题集：{len(kept)} 个问题（本次评测用的是{chosen}）"
    with st.expander(title):
        st.markdown("  \n".join(f"{n}\\. {inert(q.question, keep_lines=False)}"
                                for n, q in enumerate(kept[:SHOWN_QUESTIONS], start=1)))
        if len(kept) > SHOWN_QUESTIONS:
            st.caption(f"……还有 {len(kept) - SHOWN_QUESTIONS} 个问题")
        if st.button("删除本知识库的问题集", key=f"eval_forget_{kb.id}"):
            try:
                kb.delete_question_set()
                st.rerun()
            except errors.WendaoError as exc:
                show_error(exc)


def missing_note(questions, held: set) -> str:
    """Before a run: which documents of the question set the KB lacks (by name) and what the run
    does with their questions — leaves them out of the retrieval scores, as its result then says."""
    wanted = {q.doc_key for q in questions if q.doc_name}
    missing = [q for q in questions if q.doc_name and q.doc_key not in held]
    names = list(dict.fromkeys(q.doc_name for q in missing))
    shown = "、".join(inert_name(n) for n in names[:5]) + ("等" if len(names) > 5 else "")
    return (f"问题针对的 {len(wanted)} 个文档中，当前知识库有 {len(wanted & held)} 个；"
            f"{len(missing)} 个问题所针对的 {len(names)} 个文档不在知识库中（{shown}），"
            "这些问题不计入检索评分。")


def unscored_of(kb, questions, lines) -> str:
    """kb.unscored for this question set, kept in the session like `refusal_of`."""
    key = ("eval_unscored", kb.id, hash(tuple(lines or [q.question for q in questions])), kb.info().documents)
    cache = st.session_state.setdefault("eval_refusals", {})
    if key not in cache:
        try:
            cache[key] = kb.unscored(questions, missing=False)  # documents not in the KB: said below
        except errors.WendaoError:
            cache[key] = ""
    return cache[key]


def refusal_of(kb, questions, lines) -> str:
    """kb.unscorable for this question set, kept in the session per KB, file and document count (it
    locates every answer in the documents: not on every rerun)."""
    key = ("eval_refusal", kb.id, hash(tuple(lines or [q.question for q in questions])), kb.info().documents)
    cache = st.session_state.setdefault("eval_refusals", {})
    if key not in cache:
        try:
            cache[key] = kb.unscorable(questions)
        except errors.WendaoError as exc:
            cache[key] = exc.message_zh
    return cache[key]


def sample_kb():
    """The 示例 KB when it exists (a handle), else None."""
    return next((k for k in session().kbs() if k.name == SAMPLE_KB), None)


def metric_table(summaries: dict, metrics: tuple[str, ...]) -> None:
    """One row per configuration, the `metrics` as plain-Chinese columns (the term in each tooltip),
    sized so the table fits the page; a long configuration name wraps."""
    table = pd.DataFrame([{"配置": name, **{METRIC_ZH[m]: s.get(m) for m in metrics}} for name, s in summaries.items()])
    config = {"配置": st.column_config.TextColumn(width=180, help="切分方式 · 检索方式 · 是否重排")}
    for m in metrics:
        if m in ("p50_ms", "p95_ms"):
            config[METRIC_ZH[m]] = st.column_config.NumberColumn(width=100, help=METRIC_HELP[m], format="%.0f 毫秒")
        elif m == "questions":
            config[METRIC_ZH[m]] = st.column_config.NumberColumn(width=60, help=METRIC_HELP[m])
        else:
            config[METRIC_ZH[m]] = st.column_config.NumberColumn(width=125 if m.startswith("coverage") else 96,
                                                                 help=METRIC_HELP[m], format="%.3f")
    st.dataframe(table, hide_index=True, width="stretch", column_config=config, row_height=WRAP_ROW_HEIGHT)


def config_colors(names: list[str]) -> alt.Scale:
    """One colour per configuration, the same in every chart of the page (and its legend)."""
    return alt.Scale(domain=names, range=[SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(names))])


def coinciding(summaries: dict) -> list[list[str]]:
    """Groups of configurations whose 前 k 条命中率 curves are the same at every k (drawn on top of
    each other, the later one would hide the earlier)."""
    groups: dict[tuple, list[str]] = {}
    for name, s in summaries.items():
        groups.setdefault(tuple(round(float(s[f"recall@{k}"]), 6) for k in KS), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def recall_chart(summaries: dict) -> alt.Chart:
    """前 k 条命中率 per configuration: a line each, its colour and point shape in the one legend
    (dashes tell overlapping lines apart; they are left out of the legend, whose symbols they garble).
    Curves that coincide stay visible: the first of them is drawn widest and each later one narrower on
    top of it, their points side by side, and the legend says which they equal."""
    names = list(summaries)
    width, shift, notes = {}, {}, {}
    for group in coinciding(summaries):
        for j, name in enumerate(group):
            width[name] = 2 + 3 * (len(group) - 1 - j)  # the widest underneath, the narrowest on top
            shift[name] = (j - (len(group) - 1) / 2) * 0.07
            notes[name] = name + "（与" + "、".join(n for n in group if n != name) + "重合）"
    curve = pd.DataFrame([{"配置": name, "k": k, "位置": i + shift.get(name, 0.0), "命中率": s[f"recall@{k}"],
                           "线宽": width.get(name, 2)}
                          for name, s in sorted(summaries.items(), key=lambda item: -width.get(item[0], 2))
                          for i, k in enumerate(KS)])
    legend = alt.Legend(orient="bottom", columns=1, labelLimit=600, title=None, symbolStrokeWidth=0,
                        labelExpr=f"{json.dumps(notes, ensure_ascii=False)}[datum.label] || datum.label")
    return alt.Chart(curve, title=CURVE_TITLE).mark_line(point=alt.OverlayMarkDef(size=70, filled=True)).encode(
        x=alt.X("位置:Q", title="看前 k 条结果", scale=alt.Scale(domain=[-0.3, len(KS) - 0.7], nice=False),
                axis=alt.Axis(values=list(range(len(KS))), labelExpr=f"{json.dumps([str(k) for k in KS])}[datum.value]",
                              labelAngle=0, grid=False)),
        strokeWidth=alt.StrokeWidth("线宽:Q", scale=None, legend=None),
        y=alt.Y("命中率:Q", title="命中率", scale=alt.Scale(zero=False), axis=alt.Axis(format=".0%")),
        color=alt.Color("配置:N", scale=config_colors(names), legend=legend),
        shape=alt.Shape("配置:N", legend=legend), strokeDash=alt.StrokeDash("配置:N", legend=None),
        tooltip=["配置", "k", alt.Tooltip("命中率:Q", format=".3f")],
    ).configure(aria=False)  # aria off: Vega would describe the axes in English


def overlap_note(summaries: dict) -> str:
    """Below the curve: which configurations score the same at every k ("" when none do)."""
    return "".join(f"「{'」「'.join(g)}」的命中率在每个 k 上都相同，曲线重合（下层画得更粗、点左右错开）。"
                   for g in coinciding(summaries))


def latency_chart(summaries: dict) -> alt.Chart:
    """Time per question per configuration, in the configurations' colours: the usual time (p50)
    solid, the slower one (p95) pale."""
    names = list(summaries)
    data = pd.DataFrame([{"配置": name, "指标": label, "毫秒": s[m]} for name, s in summaries.items()
                         for m, label in (("p50_ms", "通常（p50）"), ("p95_ms", "较慢时（p95）"))])
    return alt.Chart(data, title="检索用时（毫秒）").mark_bar().encode(
        y=alt.Y("配置:N", title=None, sort=names, axis=alt.Axis(labelLimit=600)), yOffset=alt.YOffset("指标:N", sort="descending"),
        x=alt.X("毫秒:Q", title="毫秒", axis=alt.Axis(format=",~f")),  # 200, 4,000 (not "0.2k")
        color=alt.Color("配置:N", scale=config_colors(names), legend=None),
        opacity=alt.Opacity("指标:N", sort="descending", scale=alt.Scale(range=[1.0, 0.4]),
                            legend=alt.Legend(title=None, orient="top", symbolFillColor="#888")),
        tooltip=["配置", "指标", alt.Tooltip("毫秒:Q", format=".1f")]).configure(aria=False)


def show_summaries(summaries: dict) -> None:
    """The tables and charts of a run; what every configuration shares is said once above them and
    each row is named by what differs (services.views.config_labels)."""
    common, labels = config_labels(list(summaries))
    summaries = {labels[name]: s for name, s in summaries.items()}
    if common:
        st.caption(f"所有配置相同的设置：{common}；下面各行只写不同之处。")
    st.caption("检索效果", help="命中：结果里有含标准答案的片段。鼠标停在列名上可看每一列的含义和术语。")
    metric_table(summaries, QUALITY)
    st.caption("答案覆盖与用时")
    metric_table(summaries, COVERAGE)
    st.altair_chart(recall_chart(summaries), width="stretch")
    st.caption(CURVE_NOTE + overlap_note(summaries), help=CURVE_HELP)
    st.altair_chart(latency_chart(summaries), width="stretch")


st.title("评测")
kb = current_kb()

saved = kb.question_set() if kb is not None else None
sources = {"sample": "内置示例（CMRC 2018 节选，33 题）", "upload": "上传 JSONL"}
if saved:
    sources = {"saved": f"本知识库的问题集（{len(saved)} 题）", **sources}
source = st.radio("问题集", list(sources), horizontal=True, format_func=sources.get)
questions, lines = None, None  # lines: the JSONL text the run gets (and keeps as the KB's question set when asked)
if source == "saved":
    questions, lines = saved, kb.question_set_lines()
elif source == "sample":
    lines = sample_question_lines()
    questions = parse_questions(lines)
    st.caption("示例问题针对内置的 8 篇示例文档。")
    if st.button("创建「示例」知识库并导入示例文档"):
        try:
            sample, job = session().sample_kb()  # indexed by the background worker
            select_kb(sample)
            if job is not None:
                new_batch(sample, JOBS, "evaluate")
            st.rerun()
        except Exception as exc:
            show_error(exc)
else:
    upload = st.file_uploader("问题文件（JSONL：每行一个问题，写明问题、所在文档和答案）", type=["jsonl", "json"],
                              help="每行一个 JSON 对象，例如：\n\n"
                                   '`{"question": "押金是多少？", "doc_file": "合同.txt", "answer": "800元"}`\n\n'
                                   "question：问题；doc_file：答案所在的文档（按文件名对应，忽略目录和扩展名）；"
                                   "answer：答案，须与文档原文一字不差（系统在文档中查找它的位置）。"
                                   "也可用 answer_spans[].start_in_doc / text 直接给出答案在文档中的位置。")
    if upload:
        try:
            lines = upload.getvalue().decode("utf-8-sig").splitlines()
            questions = parse_questions(lines)
        except (errors.WendaoError, UnicodeDecodeError) as exc:
            show_error(exc if isinstance(exc, errors.WendaoError) else errors.InvalidQuestionFile())
            lines = None

if kb is None or kb.info().chunks == 0:
    if kb is None or not jobs_running(kb, ("sample",)):
        st.info("当前知识库还没有文档。可以先创建示例知识库。")
    if kb is not None:
        job_panel(kb, JOBS, "evaluate")
    st.stop()
refusal = refusal_of(kb, questions, lines) if questions else ""  # a set the run would refuse: said first, no count
st.markdown(f"评测知识库：**{inert(kb.name, keep_lines=False)}**"
            + (f" · {len(questions)} 个问题" if questions and not refusal else ""))
if questions and not refusal:  # which will not be scored, before the run (it was said only after it)
    unscored = unscored_of(kb, questions, lines)
    if unscored:
        st.caption(f"其中不计入检索评分：{inert(unscored, keep_lines=False)}。")
chosen = ""  # the set this run uses when it is not the saved one, for the saved set's title
if questions and source != "saved":
    chosen = f"{'上传的文件' if source == 'upload' else '内置示例'}（{len(questions)} 个问题，尚未保存）"
saved_panel(kb, chosen)
keep = bool(questions and lines) and not refusal and source != "saved" and st.checkbox(
    "保存为本知识库的问题集" + (f"（替换已保存的 {len(saved)} 个问题）" if saved else ""),
    value=source == "upload" and not saved, key=f"eval_keep_{kb.id}_{source}",  # never replace a saved set unasked
    help="开始评测时保存。以后评测可以直接选用它；微调向量模型时也会在这些问题上比较微调前后的效果。")
no_documents = False  # none of the questions' documents is in this KB: nothing to evaluate
if questions:
    wanted = {q.doc_key for q in questions if q.doc_name}  # matched as the evaluation does (services.views.doc_key)
    held = {doc_key(d.filename) for d in kb.documents(searchable_only=True)}
    if wanted and not wanted & held:
        no_documents = True
        st.warning("当前知识库里没有这些问题所针对的文档，无法评测。"
                   + ("示例问题需要「示例」知识库。" if source == "sample" else "请先上传问题文件中 doc_file 指向的文档。"))
        sample = sample_kb()
        if source == "sample" and sample is not None and sample.id != kb.id:
            if st.button("切换到「示例」知识库"):
                select_kb(sample)
                st.rerun()
        elif source == "sample":
            st.caption("点上方「创建「示例」知识库并导入示例文档」。")
    elif refusal:
        no_documents = True
        st.error(inert(refusal, keep_lines=False))
    elif wanted - held:
        st.caption(missing_note(questions, held))

c1, c2 = st.columns([2, 1])  # wide enough for the three retrieval chips at 1280 px (a third of the row cut them)
modes = c1.multiselect("检索方式", list(MODES), default=list(MODES), format_func=MODES.get)
reranks = c2.multiselect("重排", [False, True], default=[False], format_func=lambda r: "开" if r else "关")
chunkers = st.multiselect("切分方式", list(CHUNKER_NAMES), default=["current"], format_func=CHUNKER_NAMES.get)
st.caption(f"「{CHUNKER_NAMES['current']}」：{inert(kb.chunking_summary(), keep_lines=False)}"
           "（每个文档保持上传或上次重新切分时的设置）。")
limit = st.slider("最多评测多少题", 5, max(5, len(questions or [])), min(100, len(questions or [5])),
                  disabled=not questions) if questions and len(questions) > 5 else len(questions or [])

busy = jobs_running(kb, ("evaluate",))
if st.button("开始评测", type="primary", disabled=not (questions and lines and modes and reranks and chunkers) or busy or no_documents,
             help="评测在后台进行：可以离开本页，稍后回来查看结果" if not busy else "已有一个评测在进行，请等它完成"):
    try:
        new_batch(kb, JOBS, "evaluate")
        job = kb.evaluate(lines, modes, reranks, chunkers, limit=int(limit), keep=keep)
        if keep:  # shown with the results of this run
            st.session_state[f"eval_saved_note_{kb.id}"] = (job, f"已保存为本知识库的问题集（{len(questions)} 题）。")
        st.rerun()
    except Exception as exc:
        show_error(exc)
job_panel(kb, JOBS, "evaluate")

last = kb.last_result("evaluate")  # the KB's latest finished run (from its job row: survives reloads)
cleared = st.session_state.get(f"jobs_cleared_evaluate_{kb.id}")  # 清除这些记录 clears the results shown too
if last is not None and cleared is not None and last.updated_at <= cleared:
    last = None
if last is not None:
    summaries, rows = last.result.get("summaries", {}), last.result.get("rows", [])
    note = st.session_state.get(f"eval_saved_note_{kb.id}")
    if note and note[0] == last.id:
        st.success(note[1])
    st.caption(f"最近一次评测：{last.result.get('questions', 0)} 个问题 · "
               + time.strftime("%Y-%m-%d %H:%M", time.localtime(last.updated_at)))
    if any((last.result.get("excluded") or {}).values()):  # questions a retrieval score leaves out, and why
        st.caption(f"未计入检索评分：{inert(last.result.get('excluded_zh', ''), keep_lines=False)}。"
                   + inert(last.result.get("match_rule", ""), keep_lines=False))
    if all(s.get("recall@20", 0) == 0 for s in summaries.values()):
        st.warning("所有配置的得分都是 0：当前知识库很可能不包含问题所针对的文档。")
    show_summaries(summaries)
    csv = eval_csv(rows)
    st.download_button("下载逐题结果 CSV", csv, icon=":material/download:", file_name="wendao-eval.csv", mime="text/csv")
