"""检索实验室: see every candidate's BM25 / dense / fused / rerank rank and score side by side, the
query's jieba tokens highlighted in each passage, and compare two settings."""
from __future__ import annotations

from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from components.safe_text import inert_code_urls, inert_name
from components.state import searchable_kb, session, show_error
from components.widgets import (CHART_COLORS, SHOWN_CHARS, WRAP_ROW_HEIGHT, document_filter, highlight, passage_box,
                                shown_text)
from components.words import (FUSION_HELP, METHOD_ZH, RANK_HELP, SCORE_HELP, SCORE_ZH, SPAN_HELP, STAGE_ZH,
                              TIMING_HELP, TIMING_ZH, span_zh)
from services.config import RetrievalSettings
from services.views import (METHODS, MODES, SearchResult, chat_cut_line, chat_note, display_name, merged_note, page_label,
                            term_spans)

st.title("检索实验室")
kb = searchable_kb()


def settings_form(prefix: str, base: RetrievalSettings) -> RetrievalSettings:
    modes = list(MODES)
    mode = st.radio("检索方式", modes, index=modes.index(base.mode), format_func=MODES.get, horizontal=True,
                    key=f"{prefix}_mode")
    c1, c2 = st.columns(2)
    fusion = c1.selectbox("合并方式", list(METHODS), index=list(METHODS).index(base.fusion), format_func=METHOD_ZH.get,
                          key=f"{prefix}_fusion", disabled=mode != "hybrid", help=FUSION_HELP)
    weight = c2.slider("向量权重", 0.0, 1.0, base.dense_weight, 0.05, key=f"{prefix}_weight",
                       disabled=mode != "hybrid" or fusion != "weighted", help="关键词权重 = 1 − 向量权重")
    c3, c4 = st.columns(2)
    top_k = c3.number_input("返回条数", 1, 50, max(base.top_k, 10), key=f"{prefix}_topk",
                            help=f"检索实验室多列几条，便于看到排在后面的段落；问答只用前 {base.top_k} 条（设置 → 最终返回条数）")
    rerank = c4.toggle("重排", base.rerank, key=f"{prefix}_rerank",
                       help="用重排模型（cross-encoder）把问题和每个候选段落放在一起重新打分排序；需要重排模型（离线环境默认没有）")
    reranker = base.reranker_model
    if rerank:  # the KB's reranker, or one trained on a KB (微调 page) that measured better
        trained = {m["path"]: f"训练：{m['name']}（{m['kb']}）" for m in session().finetuned_models("reranker") if m.get("better")}
        options = list(dict.fromkeys([base.reranker_model, *trained]))
        reranker = st.selectbox("重排模型", options, format_func=lambda n: trained.get(n, n), key=f"{prefix}_reranker")
    return replace(base, mode=mode, fusion=fusion, dense_weight=weight, top_k=int(top_k), rerank=rerank,
                   reranker_model=reranker)


STAGES = ("bm25", "dense", "fused", "rerank")
SCORE_KINDS = {k: SCORE_ZH[k] + ("（没有上限）" if k == "bm25" else "（0–1）" if k == "dense" else "") for k in STAGES}


def run(settings: RetrievalSettings, query: str) -> SearchResult | None:
    try:
        return kb.search(query, settings, doc_ids)
    except Exception as exc:
        show_error(exc)
        return None


TIMED_STAGE = {"bm25": "bm25", "dense": "dense", "fusion": "fused", "rerank": "rerank"}


def stages_run(result: SearchResult) -> list[str]:
    """The stages this search ran (timed) or that ranked a hit: no rerank column when reranking is off,
    and no merged column when one kind of search ran alone (nothing was merged)."""
    ran = {TIMED_STAGE[k] for k in result.timings_ms if k in TIMED_STAGE}
    stages = [k for k in STAGES if k in ran or any(h.ranks.get(k) is not None for h in result.candidates)]
    return stages if merged(stages) else [k for k in stages if k != "fused"]


def merged(stages: list[str]) -> bool:
    """Whether both kinds of search ran, so their results were merged (hybrid)."""
    return "bm25" in stages and "dense" in stages


def score_table(hits, stages: list[str]) -> pd.DataFrame:
    """Every hit's place and score in each stage, one column per stage ("第3名·7.21"; "—" where the
    stage did not find it, never "None"), and its text (wrapped in the table)."""
    def cell(h, k):
        rank, score = h.ranks.get(k), h.scores.get(k)
        parts = ([f"第{rank}名"] if rank is not None else []) + \
            ([f"{score:.2f}" if k == "bm25" else f"{score:.3f}"] if score is not None else [])
        return "·".join(parts) or "—"

    return pd.DataFrame([{"名次": i, "文档": " · ".join(filter(None, [display_name(h.doc), page_label(h.page_start, h.page_end, h.doc)])),
                          **{STAGE_ZH[k]: cell(h, k) for k in stages}, "内容": shown_text(h.text)}
                         for i, h in enumerate(hits, start=1)])


def table_config(stages: list[str], compact: bool, listed_below: bool) -> dict:
    """Column widths (the whole table fits the page, or half of it side by side) and tooltips; the
    text wraps over three lines (WRAP_ROW_HEIGHT)."""
    return {"名次": st.column_config.NumberColumn(width=48),
            "文档": st.column_config.TextColumn("文档", width=170 if compact else 200, help="文档和页码（PDF 的页、PPTX 的幻灯片、XLSX 的工作表；其他格式没有页码）"),
            **{STAGE_ZH[k]: st.column_config.TextColumn(width=90, help=f"名次·得分。{RANK_HELP[k]}{SCORE_HELP[k]}")
               for k in stages},
            "内容": st.column_config.TextColumn(width=220 if compact else 300,
                                               help=f"片段的前 {SHOWN_CHARS} 个字" + ("；完整的片段列在表格下方" if listed_below else ""))}


def show_table(hits, stages: list[str], compact: bool = False, listed_below: bool = True) -> None:
    """The hits' table; `compact` (two results side by side): rank, document and text only."""
    stages = [] if compact else stages
    st.dataframe(score_table(hits, stages), hide_index=True, width="stretch", column_config=table_config(stages, compact, listed_below),
                 row_height=WRAP_ROW_HEIGHT)


def score_charts(result: SearchResult) -> list[tuple[str, alt.Chart]]:
    """One bar chart per score kind, each on its own axis (BM25's raw scores, 0–8 and more, would
    flatten the 0–1 similarities into identical bars on a shared one); shown side by side."""
    stages = stages_run(result)
    rows = [{"名次": i, "分数类型": SCORE_KINDS[k], "分数": h.scores[k]}
            for i, h in enumerate(result.hits, start=1) for k in stages if h.scores.get(k) is not None]
    if not rows:
        return []
    data = pd.DataFrame(rows)
    charts = []
    for n, kind in enumerate(k for k in SCORE_KINDS.values() if k in set(data["分数类型"])):
        charts.append((kind, alt.Chart(data[data["分数类型"] == kind]).mark_bar(color=CHART_COLORS[n % len(CHART_COLORS)]).encode(
            x=alt.X("名次:O", title="最终名次", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("分数:Q", title=None, axis=alt.Axis(format="~r", tickCount=4)),
            tooltip=["名次", alt.Tooltip("分数:Q", format=".4f")],
        ).properties(height=180).configure(aria=False)))
    return charts


def show_score_charts(result: SearchResult) -> None:
    charts = score_charts(result)
    helps = {v: SCORE_HELP[k] for k, v in SCORE_KINDS.items()}
    for column, (kind, chart) in zip(st.columns(len(charts)) if charts else [], charts):
        with column:
            st.caption(kind, help=helps.get(kind))
            st.altair_chart(chart, width="stretch")


def explain_missing(result: SearchResult, expected: str, settings: RetrievalSettings) -> None:
    """Where (if anywhere) the passage the user expected sits, and why (the core explains each case)."""
    try:
        report = kb.explain_expected(result, expected, settings, doc_ids)
    except Exception as exc:
        show_error(exc)
        return
    for line in report.lines:
        if report.found:
            st.info(inert_code_urls(line), icon=":material/search:")
        else:
            st.warning(inert_code_urls(line))


def show_result(result: SearchResult, compact: bool = False) -> None:
    if result.notice:
        st.warning(inert_code_urls(result.notice))
    both = merged(stages_run(result))
    timings = {k: v for k, v in result.timings_ms.items()  # a failed rerank attempt is no 「重排」 time (notice says 未重排)
               if (both or k != "fusion") and k != "rerank_attempt"}
    st.caption("问题切成的词：" + (" / ".join(f"`{t.replace('`', '')}`" for t in result.terms) or "（无有效词）")
               + " · " + " · ".join(f"{TIMING_ZH.get(k, k)} {v:.1f} 毫秒" for k, v in timings.items()),
               help="关键词检索用这些词（jieba 分词，搜索模式）。" + TIMING_HELP)
    if not result.hits:
        st.warning("没有找到候选段落。")
        return
    st.caption(chat_cut_line(base.top_k, len(result.hits)))
    show_table(result.hits, stages_run(result), compact)
    show_score_charts(result)
    for i, h in enumerate(result.hits, start=1):
        st.markdown(" · ".join(filter(None, [f"**{i}\\. {inert_name(h.doc)}**", page_label(h.page_start, h.page_end, h.doc),
                                             span_zh(h.start, h.end) + merged_note(h), chat_note(i, base.top_k)])),
                    help=SPAN_HELP if i == 1 else None)
        passage_box(highlight(h.text, term_spans(h.text, result.marked or result.terms)))
    with st.expander(f"全部 {len(result.candidates)} 个候选（{'两路合并后、' if both else ''}取前 {len(result.hits)} 条之前）"):
        show_table(result.candidates, stages_run(result), compact, listed_below=False)


ask_col, go_col = st.columns([7, 1], vertical_alignment="bottom")
query = ask_col.text_input("查询", placeholder="输入一个问题，看看每个阶段找到了什么（回车或点「检索」）")
go_col.button("检索", type="primary", width="stretch", key="lab_go")  # a click reruns with the typed query
doc_ids = document_filter(kb, f"lab_docs_{kb.id}")
expected = st.text_input("期望找到的内容（可选）", placeholder="粘贴一句原文，看看它在每个阶段排第几、为什么没被找到")
compare = st.toggle("对比两组设置", key="lab_compare")
base = kb.retrieval_settings()
if compare:
    left, right = st.columns(2)
    with left:
        st.markdown("**设置 A**")
        a = settings_form(f"a_{kb.id}", base)  # widget keys scoped per KB
    with right:
        st.markdown("**设置 B**")
        b = settings_form(f"b_{kb.id}", replace(base, mode="bm25" if base.mode != "bm25" else "dense"))
else:
    a, b = settings_form(f"a_{kb.id}", base), None

if query.strip():
    result_a = run(a, query)
    result_b = run(b, query) if b else None
    if result_a and expected.strip():  # the answer to "why was it not found" first, above the tables
        st.markdown("**期望的内容在哪里**" + ("（设置 A）" if result_b else ""))
        explain_missing(result_a, expected.strip(), a)
        if result_b:
            st.markdown("**期望的内容在哪里（设置 B）**")
            explain_missing(result_b, expected.strip(), b)
    if result_a and result_b:
        ids_a = {tuple(h.chunk_ids) for h in result_a.hits}
        ids_b = {tuple(h.chunk_ids) for h in result_b.hits}
        m1, m2, m3 = st.columns(3)
        m1.metric("两组都找到的段落", f"{len(ids_a & ids_b)} 条")
        m2.metric("只有 A 找到的段落", f"{len(ids_a - ids_b)} 条")
        m3.metric("只有 B 找到的段落", f"{len(ids_b - ids_a)} 条")
        left, right = st.columns(2)
        with left:
            show_result(result_a, compact=True)
        with right:
            show_result(result_b, compact=True)
    elif result_a:
        show_result(result_a)
