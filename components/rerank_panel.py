"""The 微调 page's reranker section: train a reranker on the KB's own documents in the background
(services.tuning.rerank_training via services.worker, job kind 'finetune_reranker'), follow its
progress, see the before/after table with reranking off and on, use or stop using a trained
reranker (offered only when it measured better), delete one. Names and KB names are shown inert."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from components.safe_text import inert
from components.state import show_error, without_paths
from services import worker
from services.index.library import retrieval_settings, save_settings
from services.tuning.finetune import delete_model, finetuned_models
from services.tuning.rerank_training import SET_ZH, RerankSettings, result_rows

STAGE_ZH = {"data": "生成训练数据并挖掘困难负例", "before": "评测不重排的检索", "train": "训练重排模型",
            "after": "评测重排后的检索"}
COLUMNS = {"recall@1": "R@1", "recall@5": "R@5", "mrr@10": "MRR@10", "coverage@1000chars": "前 1000 字含答案",
           "p50_ms": "p50 毫秒"}
KIND = "finetune_reranker"


def reranker_section(lib, kb) -> None:
    """Everything about rerankers trained on `kb`, for the 微调 page."""
    def key(name: str) -> str:
        return f"rerank_train_{kb.id}_{name}"

    st.header("训练重排模型")
    st.caption("用本知识库的文档训练一个 cross-encoder 重排模型（从内置的 multilingual-e5-small 初始化）：训练数据与向量微调相同"
               "（自动生成的问题和困难负例，不需要人工标注），在留出的问题（以及评测页保存的问题集）上比较重排前后。"
               "只有重排后更好时才提供，并自动为本知识库开启重排。训练在后台进行。")
    active = next((j for j in worker.jobs(lib, kb, kinds=(KIND,)) if j.status in worker.ACTIVE), None)
    with st.form(key("form")):
        c1, c2 = st.columns(2)
        st.session_state.setdefault(key("name"), time.strftime("重排-%Y%m%d-%H%M"))
        name = c1.text_input("新重排模型名称", max_chars=60, key=key("name"))
        max_pairs = c2.number_input("最多训练查询数", 16, 50000, RerankSettings.max_pairs, step=100, key=key("pairs"))
        start = st.form_submit_button("开始训练重排模型", type="primary")
    if start:
        if active:
            st.warning("这个知识库已有一个重排训练任务在进行。")
        else:
            try:
                worker.submit_finetune(lib, kb, name, RerankSettings(max_pairs=int(max_pairs)), kind="reranker")
                st.session_state[key("since")] = time.time() - 1
                active = True
            except Exception as exc:
                show_error(exc)

    @st.fragment(run_every=1 if active else None)
    def jobs_panel() -> None:
        jobs = worker.jobs(lib, kb, st.session_state.get(key("since"), time.time() - 3600), kinds=(KIND,))
        for job in jobs:
            label = inert(job.filename, keep_lines=False)
            if job.status in worker.ACTIVE:
                stage = "正在取消…" if job.status == "cancelling" else STAGE_ZH.get(job.stage, "排队中")
                text = f"「{label}」：{stage}"
                if job.stage == "train" and job.total:
                    text += f" · 第 {job.done}/{job.total} 步"
                st.progress(min(1.0, job.done / job.total) if job.stage == "train" and job.total else 0.0, text=text)
                if job.status != "cancelling" and st.button("取消训练", key=key(f"cancel_{job.id}")):
                    worker.cancel(lib, job.id)
                    st.rerun()
            elif job.status == "failed":
                reason = without_paths(job.result.get("reason") or "未知原因")
                st.error(f"重排模型「{label}」训练失败：{inert(reason, keep_lines=False)}")
            elif job.status == "cancelled":
                st.caption(f"重排模型「{label}」的训练已取消。")
        if active and not any(j.status in worker.ACTIVE for j in jobs):
            st.rerun()

    jobs_panel()
    current = retrieval_settings(lib, kb)
    for card in [m for m in finetuned_models(lib, "reranker") if m.get("kb") == kb.name]:
        with st.container(border=True):
            in_use = current.rerank and current.reranker_model == card["path"]
            st.markdown(f"**{inert(card['name'], keep_lines=False)}**" + ("（本知识库正在用它重排）" if in_use else ""))
            rows = [{"问题": f"{SET_ZH.get(r['set'], r['set'])}（{r['questions']} 题）", "重排": "开" if r["rerank"] == "on" else "关",
                     **{label: r[m] for m, label in COLUMNS.items()}} for r in result_rows(card)]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                         column_config={c: st.column_config.NumberColumn(format="%.3f") for c in list(COLUMNS.values())[:-1]})
            st.caption(f"训练查询 {card['pairs']['train']} 条 · 用时 {card.get('seconds', 0):.0f} 秒 · "
                       f"每次检索多用约 {card.get('added_ms_p50', 0):.0f} 毫秒")
            c1, c2 = st.columns(2)
            if in_use:
                if c1.button("关闭重排", key=key(f"off_{card['name']}")):
                    save_settings(lib, kb, "retrieval", {**current.__dict__, "rerank": False})
                    st.rerun()
            elif card.get("better"):
                if c1.button("用它重排", type="primary", key=key(f"use_{card['name']}")):
                    save_settings(lib, kb, "retrieval", {**current.__dict__, "rerank": True, "reranker_model": card["path"]})
                    st.rerun()
            else:
                c1.warning("重排后没有更好，因此不提供。")
            if c2.button("删除", key=key(f"delete_{card['name']}"), disabled=current.reranker_model == card["path"],
                         help="知识库设置中正在使用的模型不能删除" if current.reranker_model == card["path"] else None):
                try:
                    delete_model(lib, card["name"])
                    st.rerun()
                except Exception as exc:
                    show_error(exc)
