"""微调: fine-tune the KB's embedding model on its own documents (services.tuning.finetune), in the
background worker; progress, loss curve, ETA and cancel polled from the job row every second (users
can leave and come back); the before/after table with the training settings; the switch to the new
model only when it measured better (on the KB's saved question set when it has one, which gets
its own before/after table), and the switch back; the list of fine-tuned models with delete.

Every widget key carries the KB id (see the settings page). Model names are validated by the
service (letters, digits, CJK, `.`, `_`, `-`); KB names and base model ids are shown inert.
"""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from components.job_view import job_panel, jobs_running, new_batch, reembed_finished, seconds_zh
from components.safe_text import inert
from components.state import searchable_kb, session, show_error, without_paths
from services.views import FinetuneSettings, resolve

STAGE_ZH = {"data": "生成训练数据并挖掘困难负例", "before": "评测原模型", "train": "训练",
            "mix": "在验证查询上选择与原模型的融合比例", "after": "评测微调后的模型"}
KIND_ZH = {"dense": "向量检索", "hybrid": "混合检索"}
METRICS = {"recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "mrr@10": "MRR@10"}

kb = searchable_kb()
st.title("微调向量模型")
st.caption("用当前知识库自己的文档训练向量模型：从每个片段自动生成查询（不需要人工标注的问题），"
           "用 BM25 和当前向量索引从其他文档挖掘困难负例，对比学习训练，再在留出的查询上比较微调前后的检索效果"
           "（知识库在评测页保存了问题集时，也在这些问题上比较，并以它们为准决定是否提供切换）。"
           "训练在后台进行，可以离开本页，稍后回来查看。")


def key(name: str) -> str:
    """A widget key scoped to the current knowledge base."""
    return f"finetune_{kb.id}_{name}"


def model_label(name_or_path: str) -> str:
    """A model as users know it: a fine-tuned model by its name, a registry model by its name."""
    tuned = {m["path"]: m["name"] for m in session().finetuned_models()}
    return f"微调模型「{tuned[name_or_path]}」" if name_or_path in tuned else f"「{inert(name_or_path, keep_lines=False)}」"


# --- settings and start ----------------------------------------------------------------------
current = kb.embedding_model()
st.markdown(f"当前向量模型：{model_label(current)}")
server_llm = kb.llm_settings()  # what the background worker can use (never a key typed in this session)
with st.form(key("form")):
    c1, c2, c3 = st.columns(3)
    st.session_state.setdefault(key("name"), time.strftime("微调-%Y%m%d-%H%M"))
    name = c1.text_input("新模型名称", max_chars=60, key=key("name"),
                         help="只能包含中文、字母、数字、点、下划线和短横线")
    epochs = c2.number_input("训练轮数", 1, 20, FinetuneSettings.epochs, help="每条训练查询学习的次数；轮数越多越慢，也更容易过拟合")
    max_pairs = c3.number_input("最多训练查询数", 16, 50000, FinetuneSettings.max_pairs, step=100,
                                help=f"默认 {FinetuneSettings.max_pairs} 条：2 核 CPU 上 1000 个文档的知识库约 15 分钟内完成")
    use_llm = st.checkbox("用大模型为每个片段生成 2–3 个用户可能提的问题（更接近真实提问，但需要调用大模型）",
                          False, disabled=not server_llm.configured,
                          help=None if server_llm.configured else
                          "后台任务只能使用服务器配置或在设置页保存的大模型接口；目前没有。不勾选时离线生成：把片段中含日期、金额、"
                          "数量或书名的句子改写成问题（去掉答案），其余片段取一句话作为查询。")
    start = st.form_submit_button("开始微调", type="primary")
if start:
    if jobs_running(kb, ("finetune",)):
        st.warning("这个知识库已有一个微调任务在进行，请等它完成或先取消。")
    else:
        settings = FinetuneSettings(epochs=int(epochs), max_pairs=int(max_pairs), method="llm" if use_llm else "sentence")
        try:
            new_batch(kb, ("finetune",), "finetune")
            kb.finetune(name, settings)
            st.rerun()
        except Exception as exc:
            show_error(exc)


# --- the running job, polled -----------------------------------------------------------------
def _running(job) -> None:
    """A running fine-tuning job: its stage, steps, time left and the loss curve so far (the
    panel adds the cancel button)."""
    stage = "正在取消…" if job.status == "cancelling" else STAGE_ZH.get(job.stage, "准备中")
    eta = job.result.get("eta_s")
    text = f"「{inert(job.filename, keep_lines=False)}」：{stage}"
    if job.stage == "train" and job.total:
        text += f" · 第 {job.done}/{job.total} 步 · 剩余{seconds_zh(eta)}"
    text += f" · 已用 {job.elapsed:.0f} 秒"
    order = list(STAGE_ZH)
    share = (order.index(job.stage) if job.stage in order else 0) / len(order)
    if job.stage == "train" and job.total:
        share += job.done / job.total / len(order)
    st.progress(min(1.0, share), text=text)
    losses = job.result.get("losses") or []
    if losses:
        st.caption(f"训练损失（最近一步 {losses[-1]:.4f}）")
        st.line_chart(pd.DataFrame({"步": range(1, len(losses) + 1), "损失": losses}), x="步", y="损失", height=220)


def _finished(job) -> None:
    name = inert(job.filename, keep_lines=False)
    if job.status == "cancelled":
        st.caption(f"微调「{name}」已取消，没有保存模型。")
    elif job.status == "failed":
        reason = without_paths(job.result.get("reason") or "未知原因")
        st.error(f"微调「{name}」失败：{inert(reason, keep_lines=False)}")
    else:
        st.success(f"微调「{name}」完成，用时 {job.result.get('seconds', job.elapsed):.0f} 秒。结果见下方。")


job_panel(kb, ("finetune",), "finetune", running=_running, finished=_finished)  # polled while it runs


# --- results: before/after, switch -----------------------------------------------------------
def before_after(result: dict) -> pd.DataFrame:
    """One row per retrieval kind and moment (before / after / change), one column per metric;
    `result` holds "before" and "after" (the card itself, or its "questions")."""
    rows = []
    for kind in ("dense", "hybrid"):
        for moment, label in (("before", "微调前"), ("after", "微调后")):
            rows.append({"检索": KIND_ZH[kind], "模型": label,
                         **{METRICS[m]: result[moment][kind][m] for m in METRICS}})
        rows.append({"检索": KIND_ZH[kind], "模型": "变化",
                     **{METRICS[m]: result["after"][kind][m] - result["before"][kind][m] for m in METRICS}})
    return pd.DataFrame(rows)


def metric_table(result: dict) -> None:
    st.dataframe(before_after(result), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in METRICS.values()})


def questions_caption(q: dict) -> str:
    left_out = q.get("total", q["n"]) - q["n"]
    return (f"在本知识库的问题集（{q['n']} 题，评测页保存）上的检索效果（相关片段 = 含有标准答案的片段）"
            + (f"；另有 {left_out} 题未计入（所针对的文档不在知识库中，或超过评测上限）。" if left_out else "。"))


def settings_caption(card: dict) -> str:
    s, pairs = card.get("settings", {}), card.get("pairs", {})
    kinds = pairs.get("kinds") or {}
    method = "大模型生成的问题" if s.get("method") == "llm" else "由片段改写的问题和原句（离线）"
    if kinds.get("question") or kinds.get("cloze"):
        method += f"：问题 {kinds.get('question', 0)} 条、原句 {kinds.get('cloze', 0)} 条"
    return (f"训练设置：{s.get('epochs')} 轮 · 批大小 {s.get('batch_size')} · 学习率 {s.get('learning_rate')} · "
            f"查询来源：{method} · 训练查询 {pairs.get('train')} 条（其中 {pairs.get('with_hard_negative')} 条带困难负例）· "
            f"留出评测 {pairs.get('heldout')} 条（来自训练时未见过的文档）" + _mix_caption(card)
            + f" · 用时 {card.get('seconds', 0):.0f} 秒")


def _mix_caption(card: dict) -> str:
    """How much of the training's change was kept (services.tuning.finetune.choose_mix), when it was chosen."""
    if not card.get("dev_mrr"):
        return ""
    return (f" · 保留训练带来的权重变化的 {card.get('mix', 1.0):.0%}（与原模型按比例融合，"
            f"在另外 {card['pairs'].get('dev', 0)} 条验证查询上选出）")


def switch_to(model: str) -> None:
    """Re-embed the KB with `model` in the background (the panel below shows its progress)."""
    try:
        new_batch(kb, ("reembed",), "reembed")
        kb.reembed(model)
    except Exception as exc:
        show_error(exc)
        return
    st.rerun()


models = session().finetuned_models()
mine = [m for m in models if m.get("kb") == kb.name]
switching = jobs_running(kb, ("reembed",))
if mine:
    st.subheader("微调前后对比")
    names = [m["name"] for m in mine]
    picked = st.selectbox("微调模型", names, key=key("picked")) if len(names) > 1 else names[0]
    card = next(m for m in mine if m["name"] == picked)
    st.caption(f"在 {card['before'].get('queries', 0)} 条留出查询上的检索效果（相关片段 = 生成该查询的片段）。")
    metric_table(card)
    if card.get("questions"):
        st.caption(questions_caption(card["questions"]))
        metric_table(card["questions"])
    st.caption(settings_caption(card))
    base = card.get("base_model", "")
    if current == card["path"]:
        st.info(f"知识库正在使用微调模型「{card['name']}」。")
        if base and st.button(f"切换回原模型「{inert(base, keep_lines=False)}」并重新向量化", key=key("switch_back"),
                              disabled=switching):
            switch_to(base)
    elif card.get("better"):
        st.success("微调后的模型在本知识库的问题集上更好（向量检索 MRR@10 提高，混合检索 MRR@10 没有下降）。"
                   if card.get("better_on") == "questions" else "微调后的模型在留出查询上更好（向量检索 MRR@10 提高）。")
        if st.button(f"切换到微调模型「{card['name']}」并重新向量化", type="primary", key=key("switch"),
                     disabled=switching):
            switch_to(card["path"])
    else:
        where = "本知识库的问题集" if card.get("better_on") == "questions" else "留出查询"
        st.warning(f"微调后的模型在{where}上没有变好，因此不提供切换。可以增加训练轮数或训练查询数后再试。")
job_panel(kb, ("reembed",), "reembed", finished=lambda job: reembed_finished(job, model_label(job.filename)))

# --- all fine-tuned models -------------------------------------------------------------------
st.subheader("已微调的模型")
if not models:
    st.caption("还没有微调过的模型。")
in_use = session().models_in_use()
for m in models:
    with st.container(border=True):
        dense_b, dense_a = m["before"]["dense"], m["after"]["dense"]
        pairs = m.get("pairs", {})
        mine_q = m.get("questions")
        on_questions = (f" · 问题集 {mine_q['n']} 题 MRR@10 {mine_q['before']['dense']['mrr@10']:.3f} → "
                        f"{mine_q['after']['dense']['mrr@10']:.3f}") if mine_q else ""
        st.markdown(f"**{m['name']}**" + ("（使用中）" if m["path"] in in_use else ""))
        st.caption(f"基础模型：{inert(resolve(m.get('base_model', '')).name, keep_lines=False)} · "
                   f"知识库：{inert(m.get('kb', ''), keep_lines=False)} · "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(m.get('created_at', 0)))} · "
                   f"训练查询 {pairs.get('train', 0)} 条 / 留出 {pairs.get('heldout', 0)} 条 · "
                   f"向量 R@5 {dense_b['recall@5']:.3f} → {dense_a['recall@5']:.3f} · "
                   f"MRR@10 {dense_b['mrr@10']:.3f} → {dense_a['mrr@10']:.3f}{on_questions}")
        if st.button("删除", key=f"finetune_delete_{m['name']}", disabled=m["path"] in in_use,
                     help="正在被知识库使用的模型不能删除，请先切换到其他模型" if m["path"] in in_use else None):
            try:
                session().delete_finetuned_model(m["name"])
                st.rerun()
            except Exception as exc:
                show_error(exc)

# --- rerankers trained on this KB (components/rerank_panel.py) ---------------------------------
from components.rerank_panel import reranker_section  # noqa: E402

reranker_section(kb)
