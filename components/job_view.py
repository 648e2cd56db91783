"""The one progress panel for long work run by the background worker (services.worker, through the
core: kb.upload / reindex / rechunk / optimize / reembed / evaluate / finetune, session.sample_kb).

Pages only submit jobs; this panel polls the KB's job rows every second (a fragment, so the rest of
the page is not re-run) while any of the kinds it watches is queued or running, and shows, without
expanding anything: how many of the batch are done, the stage the running job is really in with
done/total, speed and time left, the jobs waiting, and each finished job's result or failure
reason. Everything comes from the rows in SQLite, so a reload, a second tab or coming back later
shows the same. When the last active job ends, the whole page runs again (the new documents, the
evaluation table, the switched model).

Each kind has a line for "running" and one for "finished" (RENDERERS); a page can pass its own.
"""
from __future__ import annotations

import time
from typing import Callable

import streamlit as st

from components.safe_text import inert, inert_name
from components.state import show_error, without_paths
from services.views import STAGE_ZH, latest_batch, model_label
from services.workspace import CANCELLABLE_WHILE_RUNNING, KB

RESULT_ZH = {"ok": "已索引", "replaced": "已替换旧版本", "duplicate": "重复，已跳过", "failed": "失败"}
STAGE_UNIT = {"parse": "步", "chunk": "个片段", "keywords": "个片段", "embed": "个片段", "index": "个片段",
              "bm25": "个片段", "dense": "个片段", "files": "个文件", "questions": "题次", "variant": "个文档"}
JOB_STAGE_ZH = {**STAGE_ZH, "bm25": "重建关键词索引", "dense": "重建向量索引", "optimize": "优化向量索引",
                "files": "索引文件", "variant": "按另一种切分方式重新切分文档", "questions": "检索问题"}
KIND_ZH = {"ingest": "索引", "vectors": "补齐向量", "rechunk": "重新切分", "reindex": "重建索引", "optimize": "优化索引",
           "reembed": "重新向量化", "sample": "导入示例文档", "evaluate": "评测", "finetune": "微调",
           "finetune_reranker": "训练重排模型"}
FILE_KINDS = ("ingest", "vectors")
# before the first batch of chunks (up to 32) is embedded there is no speed to show; 「速度估算中」 stood
# for 15 s and read as stuck
FIRST_BATCH_ZH = "正在计算第一批片段（算完后显示速度和剩余时间）"


def seconds_zh(s: float | None) -> str:
    if s is None:
        return "估算中"
    return f"约 {s:.0f} 秒" if s < 90 else f"约 {s / 60:.1f} 分钟"


def estimate_line(plan: dict, unit: str = "训练题") -> str:
    """The time a fine-tuning run should take on this KB, before it starts (the core's
    kb.finetune_estimate); `unit`: what one pair is called (训练题 / 训练问题)."""
    later = ("在本机训练过一次后（哪怕中途取消），会改用本机实测的速度" if plan.get("learns_from_unfinished")
             else "在本机训练过一次后，会改用本机实测的速度")
    speed = "按本机最近几次微调实测的速度" if plan["measured"] else f"按 2 核 CPU 电脑上测得的速度估算；{later}"
    return (f"预计用时：**{seconds_zh(plan['seconds']).removeprefix('约 ')}**左右（本知识库 {plan['chunks']} 个片段 → "
            f"约 {plan['pairs']} 道{unit}、{plan['steps']} 步训练；{speed}）")


def _name(job) -> str:
    """What the job works on: a file, or (reembed) the model as pickers name it."""
    return inert_name(model_label(job.filename) if job.kind == "reembed" else job.filename)


# --- running -------------------------------------------------------------------------------------
def running_line(job) -> None:
    """Any running job: what it is, the stage it is in with done/total, speed, time left, time used."""
    if job.vectors_pending and job.status == "running" and job.total:
        vectors_line(job)
        return
    stage = "正在取消…" if job.status == "cancelling" else JOB_STAGE_ZH.get(job.stage, "准备中")
    rate, eta = job.result.get("rate"), job.result.get("eta_s")
    kind = KIND_ZH.get(job.kind, "后台任务")
    if job.kind == "ingest":
        line = f"正在处理「{_name(job)}」：**{stage}**"
    elif job.filename in kind:  # 重建索引, 评测…: the job's name says nothing more
        line = f"{kind}：**{stage}**"
    else:
        line = f"{kind}「{_name(job)}」：**{stage}**"
    if job.result.get("config"):
        line += f"（{inert(str(job.result['config']), keep_lines=False)}）"
    if job.total:
        line += f" {job.done}/{job.total} {STAGE_UNIT.get(job.stage, '')}"
    if job.total and job.done >= job.total and job.status == "running":
        line += " · 这一步已完成，正在准备下一步"  # never 「剩余约 0 秒」 under a full bar while work goes on
    elif rate and job.stage in ("embed", "dense", "keywords", "index"):
        line += f" · {rate:.1f} 片段/秒 · 剩余{seconds_zh(eta)}"
    elif rate and eta is not None:
        line += f" · 剩余{seconds_zh(eta)}"
    elif job.stage == "embed":
        line += " · " + FIRST_BATCH_ZH
    line += f" · 已用 {job.elapsed:.0f} 秒"
    st.markdown(line)
    st.progress(min(1.0, job.done / job.total) if job.total else 0.0)


def vectors_line(job) -> None:
    """A document already keyword-searchable whose vectors are being computed: the vectors' own
    progress, apart (never a full "关键词可检索 n/n" bar while the vectors are still pending)."""
    embedded = {"embed": job.done, "index": job.total}.get(job.stage, 0)
    where = f"正在处理「{_name(job)}」：**已可按关键词检索**" if job.kind == "ingest" else f"补齐向量「{_name(job)}」："
    line = f"{where} · 向量 {embedded}/{job.total}，语义检索稍后可用"
    if job.stage == "index":
        line = f"{where} · 向量 {embedded}/{job.total}，正在写入向量索引"
    rate, eta = job.result.get("rate"), job.result.get("eta_s")
    if rate and job.stage == "embed":
        line += f" · {rate:.1f} 片段/秒 · 剩余{seconds_zh(eta)}"
    elif job.stage != "index":  # the first batch of chunks is under way: say so (「速度估算中」 stood for 15 s)
        line += " · " + FIRST_BATCH_ZH
    line += f" · 已用 {job.elapsed:.0f} 秒"
    st.markdown(line.replace("： · ", "："))
    st.progress(min(1.0, embedded / job.total), text=f"向量 {embedded}/{job.total}")


# --- finished ------------------------------------------------------------------------------------
def failed_or_cancelled(job) -> bool:
    """Show a cancelled or failed job's line; True when it was one of those."""
    r = job.result
    # a file by its name; other work says what it was (a failed switch to a model server read, on the
    # 微调 page, as if the fine-tuning had failed)
    kind = KIND_ZH.get(job.kind, "")
    what = f"「{_name(job)}」" if job.kind in FILE_KINDS or not kind else kind if job.filename in kind else f"{kind}「{_name(job)}」"
    if job.status == "cancelled":
        st.caption(f"{what}：已取消")
        return True
    if job.status == "failed" or r.get("status") == "failed":
        st.warning(f"{what}：失败 — {inert(without_paths(r.get('reason') or '未知原因'), keep_lines=False)}")
        return True
    return False


def ingest_finished(job) -> None:
    """An indexed file: its result, chunks, seconds per stage, what came from the embedding cache."""
    if failed_or_cancelled(job):
        return
    name, r = _name(job), job.result
    status = r.get("status", "ok")
    if status == "duplicate":
        st.info(f"「{name}」：{RESULT_ZH[status]} — {inert(without_paths(r.get('reason', '')), keep_lines=False)}")
        return
    if "chunks" not in r:  # a document's vectors completed after a restart
        st.success(f"「{name}」：向量已补齐（{r.get('embedded', 0)} 个片段）")
        return
    chunks, embedded = r.get("chunks", 0), r.get("embedded", 0)
    seconds = r.get("seconds", {})
    cache = ""
    if chunks and embedded < chunks:
        cache = f"（新向量化 {embedded} 个片段，其余来自缓存）" if embedded else "（向量全部来自缓存）"
    verb = "已重新切分" if job.kind == "rechunk" else RESULT_ZH.get(status, "已索引")
    st.success(f"「{name}」：{verb} · {chunks} 个片段 · {sum(seconds.values()):.1f} 秒{cache}")
    if seconds:
        order = list(STAGE_ZH)
        st.caption(" · ".join(f"{STAGE_ZH.get(k, k)} {v:.2f} 秒"
                              for k, v in sorted(seconds.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)))
    for w in r.get("warnings", []):
        st.warning(inert(w))


def reindex_finished(job) -> None:
    if not failed_or_cancelled(job):
        st.success(f"已重建：{job.result.get('chunks', 0)} 个片段，用时 {job.result.get('seconds', job.elapsed):.1f} 秒。")


def optimize_finished(job) -> None:
    if not failed_or_cancelled(job):
        st.success(f"索引已优化（{job.result.get('chunks', 0)} 个片段）。")


def reembed_finished(job, label: str | None = None) -> None:
    """A finished switch of the embedding model; `label`: the model as users know it, ready to show
    (e.g. 微调模型「名称」 rather than its folder)."""
    if not failed_or_cancelled(job):
        st.success(f"已切换到{label or '「' + _name(job) + '」'}，{job.result.get('chunks', 0)} 个片段已重新向量化。")


def sample_finished(job) -> None:
    if not failed_or_cancelled(job):
        r = job.result
        st.success(f"示例知识库已就绪：{r.get('documents', 0)} 个新文档（{r.get('skipped', 0)} 个已存在）。")


def evaluate_finished(job) -> None:
    if not failed_or_cancelled(job):
        st.success(f"评测完成：{job.result.get('questions', 0)} 个问题 × {len(job.result.get('summaries', {}))} 种配置，"
                   f"用时 {job.elapsed:.0f} 秒。结果见下方。")


def generic_finished(job) -> None:
    if not failed_or_cancelled(job):
        st.success(f"{KIND_ZH.get(job.kind, '后台任务')}「{_name(job)}」已完成。")


RENDERERS: dict[str, Callable] = {"ingest": ingest_finished, "vectors": ingest_finished, "rechunk": ingest_finished,
                                  "reindex": reindex_finished, "optimize": optimize_finished,
                                  "reembed": reembed_finished, "sample": sample_finished,
                                  "evaluate": evaluate_finished}


# --- the panel -----------------------------------------------------------------------------------
def batch_summary(jobs) -> str:
    """One line for a finished batch of files: how many were indexed, skipped, failed."""
    counts: dict[str, int] = {}
    for j in jobs:
        if j.status == "cancelled":
            word = "已取消"
        elif j.status == "failed" or j.result.get("status") == "failed":
            word = "失败"
        else:
            word = {"duplicate": "重复", "replaced": "已替换"}.get(j.result.get("status", "ok"), "已索引")
        counts[word] = counts.get(word, 0) + 1
    return "，".join(f"{n} 个{word}" for word, n in counts.items())


def batch_line(jobs, current, queued, done) -> str:
    """The batch's progress in words: how many are finished of how many, how many run and wait, and
    (uploads) how many documents can be searched already — the finished indexed ones plus the running
    ones past their keyword stage, whose vectors are still computing ("文件 1/12 · 2 个已可按关键词检索"
    read as if 2 of 1 were done)."""
    files = all(j.kind in FILE_KINDS for j in jobs)
    unit = "个文件" if files else "项任务"
    if not current and not queued:
        return f"全部完成：{len(done)}/{len(jobs)} {unit}"
    stopped = sum(j.status == "cancelled" or j.status == "failed" or j.result.get("status") == "failed" for j in done)
    if files:
        line = f"已完成 {len(done)}/{len(jobs)} {unit}"
    else:  # a cancelled run is not "done"; "任务 1/2" under a half-full bar read as the run's progress
        line = f"已结束 {len(done)}/{len(jobs)} {unit}" + (f"（其中 {stopped} 项已取消或失败）" if stopped else "")
    line += "".join(f"，{word} {len(group)} {unit[0]}"
                    for word, group in (("正在处理", current), ("等待", queued)) if group)
    searchable = sum(j.keyword_searchable for j in jobs)
    early = searchable - sum(j.keyword_searchable for j in done)  # running, found by keywords already
    if early:
        which = f"其中 {early} 个" if early < searchable else ""
        line += f" · 已可检索 {searchable} 个文档（{which}向量还在计算，暂时只能按关键词检索）"
    return line + " · 后台进行中，可以离开本页"


def job_panel(kb: KB, kinds: tuple[str, ...], key: str, running: Callable | None = None,
              finished: Callable | None = None, fold_when_done: bool = False,
              rerun_when: Callable[[list], object] | None = None,
              only: Callable[[object], bool] | None = None) -> None:
    """The progress of the KB's jobs of `kinds`, polled from the job rows every second while any is
    queued or running; finished ones stay listed (for the last hour) until cleared (the time of the
    clearing is kept in session state `jobs_cleared_{key}_{kb.id}`: a page hides the results of
    those runs too, e.g. 评测's tables). `key` names
    the panel (several on one page); `running` / `finished` replace the default line of a job.
    `fold_when_done`: once nothing is queued or running, the finished lines fold into one closed
    expander whose title sums them up (an upload's log does not stay open on every visit).
    `rerun_when(jobs)`: a value that, when it changes while jobs run, runs the whole page again (an
    upload's documents appear in the list as each becomes keyword-searchable, not when the batch ends).
    `only(job)`: the jobs this page started (the 微调 page lists switches to and from its models, not a
    switch to a model server made on 设置, whose failure under 「开始微调」 read as the fine-tuning's)."""
    since_key = f"jobs_since_{key}_{kb.id}"
    keep = only or (lambda job: True)
    active_now = any(j.active for j in kb.jobs(st.session_state.get(since_key), kinds) if keep(j))

    @st.fragment(run_every=1 if active_now else None)
    def panel() -> None:
        jobs = [j for j in kb.jobs(st.session_state.get(since_key), kinds) if keep(j)]
        if st.session_state.get(since_key) is None and not any(j.active for j in jobs):
            jobs = latest_batch(jobs)  # a new session's summary: the last batch, not the last hour's (「文件 28/28」)
        jobs = latest_runs(jobs)
        if not jobs:
            if active_now:
                st.rerun()  # cleared in another tab
            return
        if rerun_when is not None:
            seen_key, seen = f"jobs_seen_{key}_{kb.id}", rerun_when(jobs)
            before = st.session_state.get(seen_key)
            st.session_state[seen_key] = seen
            if before is not None and before != seen:
                st.rerun()  # e.g. a document became searchable: the list, the sidebar's count
        current = [j for j in jobs if j.status in ("running", "cancelling")]
        queued = [j for j in jobs if j.status == "queued"]
        done = [j for j in jobs if not j.active]
        if fold_when_done and not current and not queued:
            unit = "文件" if all(j.kind in FILE_KINDS for j in jobs) else "任务"
            with st.expander(f"{unit} {len(done)}/{len(jobs)}（全部完成）：{batch_summary(done)}",
                             icon=":material/task_alt:"):
                for job in done:
                    (finished or RENDERERS.get(job.kind, generic_finished))(job)
                if st.button("清除这些记录", key=f"clear_jobs_{key}_{kb.id}"):
                    st.session_state[since_key] = st.session_state[f"jobs_cleared_{key}_{kb.id}"] = time.time()
                    st.rerun()
            if active_now:
                st.rerun()  # everything finished: show what changed on the whole page (and stop polling)
            return
        with st.container(border=True):
            if all(j.kind in FILE_KINDS for j in jobs):
                st.progress(len(done) / len(jobs), text=batch_line(jobs, current, queued, done))
            elif len(jobs) > 1:  # a count of tasks, in words: a bar here looked like the running task's progress
                st.caption(batch_line(jobs, current, queued, done))
            for job in current:
                (running or running_line)(job)
                if job.kind in CANCELLABLE_WHILE_RUNNING and job.status == "running" and kb.may("editor") \
                        and st.button(f"取消{KIND_ZH.get(job.kind, '')}", key=f"cancel_{key}_{job.id}"):
                    _cancel(kb, [job])
            if queued:  # named as users know them; what they wait for when it is not listed above (the core says)
                ahead = "" if current else kb.waiting_for(queued[0])
                st.markdown("等待中：" + "、".join(f"「{_name(j)}」" if j.kind in FILE_KINDS
                                                  else inert(kb.job_label(j), keep_lines=False) for j in queued)
                            + (f"（{inert(ahead, keep_lines=False)}）" if ahead else ""))
                label = "取消等待中的文件" if all(j.kind in FILE_KINDS for j in queued) else "取消等待中的任务"
                if kb.may("editor") and st.button(label, key=f"cancel_queued_{key}_{kb.id}"):  # the core's rule
                    _cancel(kb, queued)
            for job in done:
                (finished or RENDERERS.get(job.kind, generic_finished))(job)
            if done and not current and not queued and st.button("清除这些记录", key=f"clear_jobs_{key}_{kb.id}"):
                st.session_state[since_key] = st.session_state[f"jobs_cleared_{key}_{kb.id}"] = time.time()
                st.rerun()
        if active_now and not current and not queued:
            st.rerun()  # everything finished: show what changed on the whole page (and stop polling)

    panel()


# Kinds whose newer finished run replaces an older one's line (评测: the tables below are the latest run's).
SUPERSEDED_KINDS = ("evaluate",)


def latest_runs(jobs: list) -> list:
    """`jobs` less the finished ones of SUPERSEDED_KINDS that a later finished job of the same kind
    replaces: after a reload (session state gone, the last hour's jobs listed) the page shows one
    「评测完成」 line, the run whose results are shown, not every earlier one beside it."""
    latest: dict[str, int] = {}
    for j in jobs:
        if j.kind in SUPERSEDED_KINDS and not j.active:
            latest[j.kind] = max(latest.get(j.kind, j.id), j.id)
    return [j for j in jobs if j.active or j.kind not in latest or j.id == latest[j.kind]]


def _cancel(kb: KB, jobs) -> None:
    try:
        for job in jobs:
            kb.cancel(job.id)
    except Exception as exc:
        show_error(exc)
        return
    st.rerun()


def jobs_running(kb: KB, kinds: tuple[str, ...]) -> bool:
    """True while a job of `kinds` is queued or running for the KB (pages disable a second start)."""
    return any(j.active for j in kb.jobs(kinds=kinds))


def new_batch(kb: KB, kinds: tuple[str, ...], key: str) -> None:
    """Call before submitting: when nothing of the panel's is still queued or running, the panel
    counts from now on (earlier finished rows are no longer listed)."""
    since_key = f"jobs_since_{key}_{kb.id}"
    if not any(j.active for j in kb.jobs(st.session_state.get(since_key), kinds)):
        st.session_state[since_key] = time.time() - 1
