"""检索实验室: see every candidate's BM25 / dense / fused / rerank rank and score side by side, the
query's jieba tokens highlighted in each passage, and compare two settings."""
from __future__ import annotations

from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from components.safe_text import inert_code_urls, inert_name
from components.state import searchable_kb, session, show_error
from components.answer_view import TIMING_ZH
from components.widgets import CHART_COLORS, document_filter, highlight, passage_box
from services.config import RetrievalSettings
from services.views import METHODS, MODES, SearchResult, display_name, page_label, term_spans

st.title("检索实验室")
kb = searchable_kb()


def settings_form(prefix: str, base: RetrievalSettings) -> RetrievalSettings:
    modes = list(MODES)
    mode = st.radio("检索方式", modes, index=modes.index(base.mode), format_func=MODES.get, horizontal=True,
                    key=f"{prefix}_mode")
    c1, c2 = st.columns(2)
    fusion = c1.selectbox("融合方法", list(METHODS), index=list(METHODS).index(base.fusion), format_func=METHODS.get,
                          key=f"{prefix}_fusion", disabled=mode != "hybrid")
    weight = c2.slider("向量权重", 0.0, 1.0, base.dense_weight, 0.05, key=f"{prefix}_weight",
                       disabled=mode != "hybrid" or fusion != "weighted")
    c3, c4 = st.columns(2)
    top_k = c3.number_input("返回条数", 1, 50, max(base.top_k, 10), key=f"{prefix}_topk")
    rerank = c4.toggle("重排", base.rerank, key=f"{prefix}_rerank", help="需要重排模型（离线环境默认没有）")
    reranker = base.reranker_model
    if rerank:  # the KB's reranker, or one trained on a KB (微调 page) that measured better
        trained = {m["path"]: f"训练：{m['name']}（{m['kb']}）" for m in session().finetuned_models("reranker") if m.get("better")}
        options = list(dict.fromkeys([base.reranker_model, *trained]))
        reranker = st.selectbox("重排模型", options, format_func=lambda n: trained.get(n, n), key=f"{prefix}_reranker")
    return replace(base, mode=mode, fusion=fusion, dense_weight=weight, top_k=int(top_k), rerank=rerank,
                   reranker_model=reranker)


SCORE_KINDS = {"BM25 分数": "BM25 原始分数（无上限）", "向量分数": "向量相似度（0–1）", "融合分数": "融合分数",
               "重排分数": "重排分数"}


def run(settings: RetrievalSettings, query: str) -> SearchResult | None:
    try:
        return kb.search(query, settings, doc_ids)
    except Exception as exc:
        show_error(exc)
        return None


def score_table(hits) -> pd.DataFrame:
    """Every hit's rank and score per stage; a stage that did not find it shows "—" (never "None")."""
    def rank(h, k):
        return str(h.ranks[k]) if h.ranks.get(k) is not None else "—"

    def score(h, k):
        return f"{h.scores[k]:.3f}" if h.scores.get(k) is not None else "—"

    rows = []
    for i, h in enumerate(hits, start=1):
        rows.append({"名次": i, "文档": display_name(h.doc), "页": page_label(h.page_start, h.page_end),
                     "BM25 名次": rank(h, "bm25"), "BM25 分数": score(h, "bm25"),
                     "向量名次": rank(h, "dense"), "向量分数": score(h, "dense"),
                     "融合分数": score(h, "fused"), "重排名次": rank(h, "rerank"), "重排分数": score(h, "rerank"),
                     "片段": h.text[:60].replace("\n", " ")})
    return pd.DataFrame(rows)


def score_charts(result: SearchResult) -> list[tuple[str, alt.Chart]]:
    """One bar chart per score kind, each on its own axis (BM25's raw scores, 0–8 and more, would
    flatten the 0–1 similarities into identical bars on a shared one); shown side by side."""
    rows = [{"名次": i, "分数类型": SCORE_KINDS[label], "分数": h.scores[k]}
            for i, h in enumerate(result.hits, start=1)
            for k, label in (("bm25", "BM25 分数"), ("dense", "向量分数"), ("fused", "融合分数"), ("rerank", "重排分数"))
            if h.scores.get(k) is not None]
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
    for column, (kind, chart) in zip(st.columns(len(charts)) if charts else [], charts):
        with column:
            st.caption(kind)
            st.altair_chart(chart, width="stretch")


def explain_missing(result: SearchResult, expected: str, settings: RetrievalSettings) -> None:
    """Where (if anywhere) the passage the user expected sits in each stage's candidate list."""
    found = [h for h in result.candidates if expected in h.text]
    if not found:
        st.warning(f"期望的内容不在任何候选中：既不在 BM25 前 {settings.bm25_top_k} 名，也不在向量前 {settings.dense_top_k} 名。"
                   "可以检查它是否被切分到了两个片段之间（文档库 → 切分预览），或换用更贴近原文的提问。")
        return
    for h in found:
        final = next((i for i, x in enumerate(result.hits, start=1) if set(h.chunk_ids) & set(x.chunk_ids)), None)
        where = f"最终第 {final} 名" if final else f"未进入最终前 {settings.top_k} 名"
        stages = "，".join(f"{label}第 {h.ranks[k]} 名" for k, label in (("bm25", "BM25 "), ("dense", "向量 "),
                                                                        ("fused", "融合后 "), ("rerank", "重排后 "))
                          if k in h.ranks)
        st.info(f"《{inert_name(h.doc)}》\\[{h.start}, {h.end})：{stages}；{where}。")


def show_result(result: SearchResult) -> None:
    if result.notice:
        st.warning(inert_code_urls(result.notice))
    st.caption("查询分词（jieba 搜索模式）：" + (" / ".join(f"`{t.replace('`', '')}`" for t in result.terms) or "（无有效词）")
               + " · " + " · ".join(f"{TIMING_ZH.get(k, k)} {v:.1f} 毫秒" for k, v in result.timings_ms.items()))
    if not result.hits:
        st.warning("没有找到候选段落。")
        return
    table = score_table(result.hits)
    st.dataframe(table, hide_index=True, width="stretch")
    show_score_charts(result)
    for i, h in enumerate(result.hits, start=1):
        st.markdown(f"**{i}\\. {inert_name(h.doc)}** · {page_label(h.page_start, h.page_end)} · 位置 {h.start}–{h.end}")
        passage_box(highlight(h.text, term_spans(h.text, result.terms)))
    with st.expander(f"全部 {len(result.candidates)} 个候选（融合后、截断前）"):
        st.dataframe(score_table(result.candidates), hide_index=True,
                     width="stretch")


query = st.text_input("查询", placeholder="输入一个问题，看看每个阶段找到了什么")
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
    if result_a and result_b:
        ids_a = {tuple(h.chunk_ids) for h in result_a.hits}
        ids_b = {tuple(h.chunk_ids) for h in result_b.hits}
        m1, m2, m3 = st.columns(3)
        m1.metric("两组都找到", len(ids_a & ids_b))
        m2.metric("只有 A 找到", len(ids_a - ids_b))
        m3.metric("只有 B 找到", len(ids_b - ids_a))
        left, right = st.columns(2)
        with left:
            show_result(result_a)
        with right:
            show_result(result_b)
    elif result_a:
        show_result(result_a)
    if result_a and expected.strip():
        explain_missing(result_a, expected.strip(), a)
