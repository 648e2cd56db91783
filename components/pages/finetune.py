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

import altair as alt
import pandas as pd
import streamlit as st

from components.job_view import estimate_line, job_panel, jobs_running, new_batch, reembed_finished, seconds_zh
from components.safe_text import inert
from components.words import METRIC_HELP, METRIC_ZH
from components.state import searchable_kb, session, show_error, without_paths
from components.widgets import PRIMARY, model_choice_label, path_key
from services.views import QUESTION_LIMIT, FinetuneSettings, resolve
from services.views import model_label as registry_label

STAGE_ZH = {"data": "出题并找出容易混淆的段落", "before": "评测原模型", "train": "训练",
            "mix": "选择与原模型的混合比例", "after": "评测微调后的模型"}
KIND_ZH = {"dense": "向量检索", "hybrid": "混合检索"}
# the metrics in 评测's words (components.words), the technical names in the columns' help
METRICS = {m: METRIC_ZH[m] for m in ("recall@1", "recall@5", "recall@10", "mrr@10")}
SETTINGS_HELP = ("每步调整幅度即学习率（learning rate）：每训练一步，模型权重朝减小损失的方向改动多少；"
                 "每批的题数即 batch size；轮数即 epoch。")
HOW_IT_WORKS = ("技术细节：从片段生成伪查询（把含日期、金额、数量、书名的句子改写成问题，其余取一句话作查询）；"
                "困难负例（hard negatives）取自 BM25 和当前向量索引对其他文档的第 3–30 名；"
                "以对比学习（MultipleNegativesRankingLoss）训练；前后对比用留出查询（held-out，"
                "出自训练时没见过的 15% 文档），再与原模型按权重混合（WiSE-FT）。")

kb = searchable_kb()
st.title("微调向量模型")
st.caption("用当前知识库自己的文档训练向量模型，让它更懂这些文档：自动从每个片段出题（不需要人工标注），"
           "再从其他文档里找出容易混淆的段落，让模型学会区分；训练后用没参加训练的文档出的题比较前后的检索效果"
           "（知识库在评测页保存了问题集时以这些问题为准），变好了才提供切换。"
           "训练在后台进行，可以离开本页，稍后回来查看。", help=HOW_IT_WORKS)
locked = not kb.may("editor")  # the core says who may train; a viewer sees the results only
if locked:
    st.info(kb.role_note("editor"), icon=":material/visibility:")


def key(name: str) -> str:
    """A widget key scoped to the current knowledge base."""
    return f"finetune_{kb.id}_{name}"


def model_label(name_or_path: str) -> str:
    """A model as users know it: a fine-tuned model by its name, a registry model by its label (the
    bundled one as 「multilingual-e5-small（内置，推荐）」, never its engine's name)."""
    tuned = {m["path"]: m["name"] for m in session().finetuned_models()}
    if name_or_path in tuned:
        return f"微调模型「{tuned[name_or_path]}」"
    return f"「{inert(registry_label(name_or_path), keep_lines=False)}」"


# --- settings and start ----------------------------------------------------------------------
current = kb.embedding_model()
st.markdown(f"当前向量模型：{model_label(current)}")
server_llm = kb.llm_settings()  # what the background worker can use (never a key typed in this session)
with st.container(border=True):  # plain widgets (no form): the estimate follows every change at once
    c1, c2, c3 = st.columns(3)
    st.session_state.setdefault(key("name"), time.strftime("微调-%Y%m%d-%H%M%S"))
    name = c1.text_input("新模型名称", max_chars=60, key=key("name"), disabled=locked,
                         help="只能包含中文、字母、数字、点、下划线和短横线")
    epochs = c2.number_input("训练轮数", 1, 20, FinetuneSettings.epochs, key=key("epochs"), disabled=locked,
                             help="每道训练题学习的次数；轮数越多越慢，也更容易学过头")
    max_pairs = c3.number_input("最多训练题数", 16, 50000, FinetuneSettings.max_pairs, step=100, key=key("pairs"),
                                disabled=locked,
                                help=f"默认 {FinetuneSettings.max_pairs} 道：2 核 CPU 上 1000 个文档的知识库约 15 分钟内完成")
    use_llm = st.checkbox("用大模型为每个片段出 2–3 道用户可能会问的题（更接近真实提问，但需要调用大模型）",
                          False, disabled=locked or not server_llm.configured, key=key("llm"),
                          help=None if server_llm.configured else
                          "后台任务只能使用服务器配置或在设置页保存的大模型接口；目前没有。不勾选时离线出题：把片段中含日期、金额、"
                          "数量或书名的句子改写成问题（去掉答案），其余片段取一句话作为题目。")
    settings = FinetuneSettings(epochs=int(epochs), max_pairs=int(max_pairs), method="llm" if use_llm else "sentence")
    st.markdown(estimate_line(kb.finetune_estimate(settings))
                + ("（不含大模型出题的时间）" if use_llm else ""))
    busy = jobs_running(kb, ("finetune",))  # running or being cancelled: one run at a time
    start = st.button("开始微调", type="primary", key=key("start"), disabled=busy or locked,
                      help="这个知识库已有一个微调任务在进行（或正在取消），结束后才能开始新的" if busy
                      else kb.role_note("editor") or None)
if start:
    if jobs_running(kb, ("finetune",)):
        st.warning("这个知识库已有一个微调任务在进行，请等它完成或先取消。")
    else:
        try:
            new_batch(kb, ("finetune",), "finetune")
            kb.finetune(name, settings)
            del st.session_state[key("name")]  # the next run gets a new name, not this one's again
            st.rerun()
        except Exception as exc:
            show_error(exc)


# --- the running job, polled -----------------------------------------------------------------
def loss_chart(losses: list[float]) -> alt.Chart:
    """The training loss per step, with its axes named (步数, 损失) and plain numbers on them."""
    data = pd.DataFrame({"步数": range(1, len(losses) + 1), "损失": losses})
    return alt.Chart(data).mark_line(color=PRIMARY).encode(
        x=alt.X("步数:Q", title="步数", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("损失:Q", title="损失", axis=alt.Axis(format="~r"), scale=alt.Scale(zero=False)),
        tooltip=["步数", alt.Tooltip("损失:Q", format=".4f")],
    ).properties(height=220).configure(aria=False)


def _running(job) -> None:
    """A running fine-tuning job: its stage, steps, time left and the loss curve so far (the
    panel adds the cancel button). The bar is the time spent over the time spent plus the time left."""
    if job.status == "cancelling":  # the step under way finishes first (seconds): no climbing bar meanwhile
        st.info(f"「{inert(job.filename, keep_lines=False)}」：正在取消…当前这一步算完后停止（通常几秒到半分钟），不会保存模型。")
        return
    stage = STAGE_ZH.get(job.stage, "准备中")
    share, left = kb.finetune_progress(job)
    text = f"「{inert(job.filename, keep_lines=False)}」：{stage}"
    if job.stage == "train" and job.total:
        text += f" · 第 {job.done}/{job.total} 步"
    # no time left in the final check once it runs past its estimate (services.tuning.finetune.time_left)
    finishing = left is None and job.stage == "after"
    text += f" · 已完成 {share:.0%} · " + ("正在最后检查…" if finishing else f"剩余{seconds_zh(left)}")
    text += f" · 已用 {job.elapsed:.0f} 秒"
    st.progress(min(1.0, share), text=text)
    losses = job.result.get("losses") or []
    if losses:
        st.caption(f"训练损失（越低越好；最近一步 {losses[-1]:.4f}）")
        st.altair_chart(loss_chart(losses), width="stretch")


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
                 column_config={c: st.column_config.NumberColumn(format="%.3f", help=METRIC_HELP[m])
                                for m, c in METRICS.items()})


# why a saved question was left out of the before/after table (services.tuning.finetune.left_out_questions),
# in 评测's words
LEFT_OUT_ZH = {"yesno": "是非题", "unanswerable": "没有答案的题", "not_found": "答案在文档中找不到",
               "missing": "所针对的文档不在知识库中", "no_passage": "答案跨了两个片段（没有一个片段含有完整答案）",
               "over_limit": f"超过每次评测 {QUESTION_LIMIT} 题的上限"}


def questions_caption(q: dict) -> str:
    left_out = q.get("total", q["n"]) - q["n"]
    text = f"在本知识库的问题集（{q['n']} 题，评测页保存）上的检索效果（相关片段 = 含有标准答案的片段）"
    if not left_out:
        return text + "。"
    reasons = q.get("left_out")
    if reasons is None:  # a model trained before the reasons were recorded
        return text + f"；另有 {left_out} 题未计入（是非题、没有答案的题或文档不在知识库中的题不计入检索评分）。"
    return text + f"；另有 {left_out} 题未计入检索评分：" + "、".join(
        f"{LEFT_OUT_ZH.get(k, k)} {n} 题" for k, n in reasons.items()) + "。"


def settings_caption(card: dict) -> str:
    s, pairs = card.get("settings", {}), card.get("pairs", {})
    kinds = pairs.get("kinds") or {}
    method = "大模型出的题" if s.get("method") == "llm" else "由片段改写的问题和原句（离线）"
    if kinds.get("question") or kinds.get("cloze"):
        method += f"：问题 {kinds.get('question', 0)} 道、原句 {kinds.get('cloze', 0)} 句"
    rate = s.get("learning_rate")
    step = f"{rate:.8f}".rstrip("0").rstrip(".") if isinstance(rate, (int, float)) else rate
    return (f"训练设置：{s.get('epochs')} 轮 · 每批 {s.get('batch_size')} 道题 · 每步调整幅度 {step} · "
            f"题目来源：{method} · 训练题 {pairs.get('train')} 道（其中 {pairs.get('with_hard_negative')} 道配有易混淆段落）· "
            f"检验题 {pairs.get('heldout')} 道（出自没参加训练的文档）" + _mix_caption(card)
            + f" · 用时 {card.get('seconds', 0):.0f} 秒")


def _mix_caption(card: dict) -> str:
    """How much of the training's change was kept (services.tuning.finetune.choose_mix), when it was chosen."""
    if not card.get("dev_mrr"):
        return ""
    return (f" · 保留训练带来的变化的 {card.get('mix', 1.0):.0%}（与原模型按比例混合，"
            f"比例由另外 {card['pairs'].get('dev', 0)} 道验证题选出）")


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
    paths = [m["path"] for m in mine]
    picked = (st.selectbox("微调模型", paths, format_func=model_choice_label(mine), key=key("picked_path"))
              if len(paths) > 1 else paths[0])
    card = next(m for m in mine if m["path"] == picked)
    verdict = card["verdict"]  # the core's words: better or not, with its numbers and small-set caveats
    st.caption(f"在 {card['before'].get('queries', 0)} 道检验题上的检索效果（检验题出自没参加训练的文档；相关片段 = 出题的片段）。"
               + (f"**{verdict['caveats']['heldout']}**。" if verdict["caveats"]["heldout"] else ""))
    metric_table(card)
    if card.get("questions"):
        st.caption(questions_caption(card["questions"])
                   + (f"**{verdict['caveats']['questions']}**。" if verdict["caveats"]["questions"] else ""))
        metric_table(card["questions"])
    st.caption(settings_caption(card), help=SETTINGS_HELP)
    base = card.get("base_model", "")
    if current == card["path"]:
        st.info(f"知识库正在使用微调模型「{card['name']}」。")
        if base and st.button(f"切换回原模型「{inert(base, keep_lines=False)}」并重新向量化", key=key("switch_back"),
                              disabled=switching or locked):
            switch_to(base)
    elif card.get("better"):
        st.success(verdict["decision"])
        if st.button(f"切换到微调模型「{card['name']}」并重新向量化", type="primary", key=key("switch"),
                     disabled=switching or locked):
            switch_to(card["path"])
    else:
        st.warning(verdict["decision"])
# only switches to and from the models trained here (a switch made on 设置 reports there)
ours = {m["path"] for m in models} | {m.get("base_model") for m in mine} | {m.get("base_path") for m in mine}
job_panel(kb, ("reembed",), "reembed", finished=lambda job: reembed_finished(job, model_label(job.filename)),
          only=lambda job: job.filename in ours)

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
        on_questions = (f" · 问题集 {mine_q['n']} 题名次得分 {mine_q['before']['dense']['mrr@10']:.3f} → "
                        f"{mine_q['after']['dense']['mrr@10']:.3f}") if mine_q else ""
        st.markdown(f"**{inert(m['name'], keep_lines=False)}**" + ("（使用中）" if m["path"] in in_use else ""))
        if m.get("verdict", {}).get("warning"):
            st.caption(f":orange[{m['verdict']['warning']}]")
        st.caption(f"基础模型：{inert(resolve(m.get('base_model', '')).name, keep_lines=False)} · "
                   f"知识库：{inert(m.get('kb', ''), keep_lines=False)} · "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(m.get('created_at', 0)))} · "
                   f"训练题 {pairs.get('train', 0)} 道 / 检验题 {pairs.get('heldout', 0)} 道 · "
                   f"向量检索前5条命中 {dense_b['recall@5']:.3f} → {dense_a['recall@5']:.3f} · "
                   f"名次得分 {dense_b['mrr@10']:.3f} → {dense_a['mrr@10']:.3f}{on_questions}")
        if st.button("删除", key=f"finetune_delete_{path_key(m['path'])}", disabled=locked or m["path"] in in_use,
                     help="正在被知识库使用的模型不能删除，请先切换到其他模型" if m["path"] in in_use else None):
            try:
                session().delete_finetuned_model(m["path"])
                st.rerun()
            except Exception as exc:
                show_error(exc)

# --- rerankers trained on this KB (components/rerank_panel.py) ---------------------------------
from components.rerank_panel import reranker_section  # noqa: E402

reranker_section(kb)
