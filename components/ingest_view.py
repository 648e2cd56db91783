"""Uploading to the background indexer (services.worker) and watching it.

The page only queues files; the worker indexes them one at a time and writes its progress to the
job rows in SQLite. The panel polls those rows every second (a fragment, so the rest of the page is
not re-run) while anything is queued or running, and shows, without expanding anything: files
done out of the batch, the stage the running file is really in with done/total, speed and time
left, the files waiting, and each finished file's result or failure reason.
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from components.safe_text import inert, inert_name
from components.state import show_error, without_paths
from services import worker
from services.config import max_file_bytes
from services.index.ingest import STAGE_ZH
from services.index.library import save_settings
from services.documents.parsing import MIB, SUPPORTED_EXTENSIONS, format_mb

RESULT_ZH = {"ok": "已索引", "replaced": "已替换旧版本", "duplicate": "重复，已跳过", "failed": "失败"}
STAGE_UNIT = {"parse": "步", "chunk": "个片段", "keywords": "个片段", "embed": "个片段", "index": "个片段"}


def supported_text() -> str:
    """The supported file types, for the uploader and the refusal message."""
    return "、".join(SUPPORTED_EXTENSIONS)


def max_upload_mb() -> int:
    """WENDAO_MAX_FILE_MB as the uploader's own limit (whole MB, at least 1)."""
    return max(1, -(-max_file_bytes() // MIB))


def split_uploads(files) -> tuple[list, list[str]]:
    """(files to index, Chinese refusals): unsupported types and files over the size limit are
    refused here, in Chinese (the uploader accepts every file so Streamlit never shows its own
    English "files are not allowed")."""
    accepted, refused = [], []
    for f in files:
        ext = Path(f.name).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            refused.append(f"「{inert_name(f.name)}」：不支持的文件类型"
                           f"「{inert(ext or '无扩展名', keep_lines=False)}」。支持：{supported_text()}")
        elif f.size > max_file_bytes():
            refused.append(f"「{inert_name(f.name)}」：文件大小 {format_mb(f.size)} MB，"
                           f"超过上限 {format_mb(max_file_bytes())} MB。")
        else:
            accepted.append(f)
    return accepted, refused


def upload_section(lib, kb, config) -> None:
    """The uploader and the button that queues its files; the uploader clears once they are queued."""
    # Streamlit writes "Upload" and "200MB per file" in English and offers no parameter for them:
    # our own Chinese words replace them (the limit is WENDAO_MAX_FILE_MB, as passed to the uploader).
    st.markdown(f"""<style>
    [data-testid="stFileUploaderDropzone"] [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p
        {{font-size: 0}}
    [data-testid="stFileUploaderDropzone"] [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p::after
        {{content: "选择文件"; font-size: .875rem}}
    [data-testid="stFileUploaderDropzoneInstructions"] span {{font-size: 0}}
    [data-testid="stFileUploaderDropzoneInstructions"] span::after
        {{content: "或把文件拖到这里 · 单个文件不超过 {format_mb(max_file_bytes())} MB"; font-size: .875rem}}
    </style>""", unsafe_allow_html=True)
    files = st.file_uploader(f"选择文件（可多选；支持 {supported_text()}；单个文件不超过 {format_mb(max_file_bytes())} MB）",
                             accept_multiple_files=True, max_upload_size=max_upload_mb(),
                             key=f"uploader_{kb.id}_{st.session_state.get('upload_round', 0)}",
                             help="文件在后台索引：可以离开本页、继续提问，或关闭页面稍后回来查看进度。")
    accepted, refused = split_uploads(files or [])
    for message in refused:
        st.error(message)
    if accepted and config and st.button(f"开始索引 {len(accepted)} 个文件", type="primary"):
        save_settings(lib, kb, "chunking", config.to_dict())
        since_key = f"jobs_since_{kb.id}"
        if not any(j.status in worker.ACTIVE for j in worker.jobs(lib, kb, st.session_state.get(since_key))):
            st.session_state[since_key] = time.time() - 1  # a new batch: count files from here
        try:
            for f in accepted:
                worker.submit(lib, kb, f.name, f.getvalue(), config)
        except Exception as exc:
            show_error(exc)
            return
        st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
        st.rerun()


def _seconds(s: float | None) -> str:
    if s is None:
        return "估算中"
    return f"约 {s:.0f} 秒" if s < 90 else f"约 {s / 60:.1f} 分钟"


def _running(job) -> None:
    stage = STAGE_ZH.get(job.stage, "准备中")
    rate, eta = job.result.get("rate"), job.result.get("eta_s")
    line = f"正在处理「{inert_name(job.filename)}」：**{stage}**"
    if job.total:
        line += f" {job.done}/{job.total} {STAGE_UNIT.get(job.stage, '')}"
    if rate:
        line += f" · {rate:.1f} 片段/秒 · 剩余{_seconds(eta)}"
    elif job.stage == "embed":
        line += " · 速度估算中"
    line += f" · 已用 {job.elapsed:.0f} 秒"
    st.markdown(line)
    st.progress(min(1.0, job.done / job.total) if job.total else 0.0)


def _finished(job) -> None:
    name = inert_name(job.filename)
    r = job.result
    if job.status == "cancelled":
        st.caption(f"「{name}」：已取消")
        return
    status = r.get("status", "failed" if job.status == "failed" else "ok")
    if job.status == "failed" or status == "failed":
        st.warning(f"「{name}」：失败 — {inert(without_paths(r.get('reason') or '未知原因'), keep_lines=False)}")
        return
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
    st.success(f"「{name}」：{RESULT_ZH.get(status, '已索引')} · {chunks} 个片段 · {sum(seconds.values()):.1f} 秒{cache}")
    if seconds:
        order = list(STAGE_ZH)
        st.caption(" · ".join(f"{STAGE_ZH.get(k, k)} {v:.2f} 秒"
                              for k, v in sorted(seconds.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)))
    for w in r.get("warnings", []):
        st.warning(inert(w))


def job_panel(lib, kb) -> None:
    """The batch's progress, polled from the job rows every second while files are queued or running."""
    since_key = f"jobs_since_{kb.id}"
    active_now = any(j.status in worker.ACTIVE for j in worker.jobs(lib, kb, st.session_state.get(since_key)))

    @st.fragment(run_every=1 if active_now else None)
    def panel() -> None:
        jobs = worker.jobs(lib, kb, st.session_state.get(since_key))
        if not jobs:
            return
        running = [j for j in jobs if j.status == "running"]
        queued = [j for j in jobs if j.status == "queued"]
        finished = [j for j in jobs if j.status not in worker.ACTIVE]
        with st.container(border=True):
            st.progress(len(finished) / len(jobs), text=f"文件 {len(finished)}/{len(jobs)}"
                        + ("（全部完成）" if not running and not queued else "（后台索引中，可以离开本页）"))
            for job in running:
                _running(job)
            if queued:
                st.markdown("等待中：" + "、".join(f"「{inert_name(j.filename)}」" for j in queued))
                if st.button("取消等待中的文件", key=f"cancel_queued_{kb.id}"):
                    for j in queued:
                        worker.cancel(lib, j.id)
                    st.rerun()
            for job in finished:
                _finished(job)
            if finished and not running and not queued and st.button("清除这些记录", key=f"clear_jobs_{kb.id}"):
                st.session_state[since_key] = time.time()
                st.rerun()
        if active_now and not running and not queued:
            st.rerun()  # everything indexed: refresh the document list (and stop polling)

    panel()
