"""The 微调 page's reranker section: train a reranker on the KB's own documents in the background
(services.tuning.rerank_training via services.worker, job kind 'finetune_reranker'), follow its
progress (the shared job panel), see the before/after table with reranking off and on, use or stop using a trained
reranker (offered only when it measured better), delete one. Names and KB names are shown inert."""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import streamlit as st

from components.job_view import estimate_line, job_panel, new_batch
from components.safe_text import inert
from components.words import METRIC_HELP, METRIC_ZH
from components.state import session, show_error
from components.widgets import path_key
from services.views import RERANK_SET_ZH as SET_ZH, RerankSettings, rerank_result_rows as result_rows

# the metrics in 评测's words (components.words), the technical names in the columns' help
COLUMNS = {m: METRIC_ZH[m] for m in ("recall@1", "recall@5", "mrr@10", "coverage@1000chars", "p50_ms")}
KIND = "finetune_reranker"


def reranker_section(kb) -> None:
    """Everything about rerankers trained on `kb`, for the 微调 page."""
    def key(name: str) -> str:
        return f"rerank_train_{kb.id}_{name}"

    st.header("训练重排模型")
    st.caption("用本知识库的文档训练一个重排模型（会同时阅读问题和段落、给段落重新打分的模型，从内置的 multilingual-e5-small 初始化）："
               "训练数据与向量微调相同（自动生成的问题和易混淆的段落，不需要人工标注），在训练时没见过的问题（以及评测页保存的问题集）上"
               "比较重排前后。只有重排后更好时才提供，并自动为本知识库开启重排。训练在后台进行。")
    locked = not kb.may("editor")  # a viewer sees the results; the core refuses anyway
    with st.container(border=True):  # plain widgets (no form): the estimate follows every change at once
        c1, c2 = st.columns(2)
        st.session_state.setdefault(key("name"), time.strftime("重排-%Y%m%d-%H%M"))
        name = c1.text_input("新重排模型名称", max_chars=60, key=key("name"), disabled=locked)
        max_pairs = c2.number_input("最多训练题数", 16, 50000, RerankSettings.max_pairs, step=100, key=key("pairs"),
                                    disabled=locked)
        settings = RerankSettings(max_pairs=int(max_pairs))
        st.markdown(estimate_line(kb.finetune_estimate(settings, kind="reranker")),
                    help="包括出题、训练，以及训练前后在检验题上的比较（训练后要用新的重排模型给每道题的候选逐条打分，也要花不少时间）。"
                         "2 核 CPU 上每步训练约 8 秒，每道检验题约 3 秒。")
        start = st.button("开始训练重排模型", type="primary", key=key("start"), disabled=locked,
                          help=kb.role_note("editor") or None)
    if start:
        try:
            new_batch(kb, (KIND,), "rerank")
            kb.finetune(name, settings, kind="reranker")
        except Exception as exc:
            show_error(exc)
    job_panel(kb, (KIND,), "rerank")
    current = kb.retrieval_settings()
    for card in [m for m in session().finetuned_models("reranker") if m.get("kb") == kb.name]:
        with st.container(border=True):
            in_use = current.rerank and current.reranker_model == card["path"]
            st.markdown(f"**{inert(card['name'], keep_lines=False)}**" + ("（本知识库正在用它重排）" if in_use else ""))
            rows = [{"问题": f"{SET_ZH.get(r['set'], r['set'])}（{r['questions']} 题）", "重排": "开" if r["rerank"] == "on" else "关",
                     **{label: r[m] for m, label in COLUMNS.items()}} for r in result_rows(card)]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                         column_config={c: st.column_config.NumberColumn(format="%.0f 毫秒" if m == "p50_ms" else "%.3f",
                                                                         help=METRIC_HELP[m]) for m, c in COLUMNS.items()})
            st.caption(f"训练题 {card['pairs']['train']} 道 · 用时 {card.get('seconds', 0):.0f} 秒 · "
                       f"每次检索多用约 {card.get('added_ms_p50', 0):.0f} 毫秒")
            c1, c2 = st.columns(2)
            if in_use:
                if c1.button("关闭重排", key=key(f"off_{path_key(card['path'])}"), disabled=locked):
                    kb.save_retrieval(replace(current, rerank=False))
                    st.rerun()
            elif card.get("better"):
                if c1.button("用它重排", type="primary", key=key(f"use_{path_key(card['path'])}"), disabled=locked):
                    kb.save_retrieval(replace(current, rerank=True, reranker_model=card["path"]))
                    st.rerun()
            else:
                c1.warning("重排后没有更好，因此不提供。")
            if c2.button("删除", key=key(f"delete_{path_key(card['path'])}"), disabled=locked or current.reranker_model == card["path"],
                         help="知识库设置中正在使用的模型不能删除" if current.reranker_model == card["path"] else None):
                try:
                    session().delete_finetuned_model(card["path"])
                    st.rerun()
                except Exception as exc:
                    show_error(exc)
