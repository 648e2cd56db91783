"""Uploading to the background indexer and watching it (components.job_view's panel).

The page only queues files (kb.upload, one job per file); the worker indexes them one at a time
and writes its progress to the job rows, which the panel polls. Each document is searchable by
keywords before its vectors are computed: the page runs again at that moment (the document list and
the sidebar show it) and the panel shows the vectors' progress apart until they are in.
"""
from __future__ import annotations

import time

import streamlit as st

from components.job_view import job_panel, new_batch
from components.safe_text import inert, inert_name
from components.state import show_error
from services.config import max_file_bytes
from services.views import MIB, SUPPORTED_EXTENSIONS, format_mb, unsupported
from services.workspace import KB

UPLOAD_KINDS = ("ingest", "vectors")


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
        why = unsupported(f.name)  # the core's reason: an old .doc says "请另存为 .docx 后上传"
        if why is not None:
            refused.append(f"「{inert_name(f.name)}」：{inert(why.message_zh, keep_lines=False)}")
        elif f.size > max_file_bytes():
            refused.append(f"「{inert_name(f.name)}」：文件大小 {format_mb(f.size)} MB，"
                           f"超过上限 {format_mb(max_file_bytes())} MB。")
        else:
            accepted.append(f)
    return accepted, refused


def upload_section(kb: KB, config) -> None:
    """The uploader and the button that queues its files; the uploader clears once they are queued."""
    # Streamlit writes "Upload" and "200MB per file" in English and offers no parameter for them:
    # our own Chinese words replace them (the limit is WENDAO_MAX_FILE_MB, as passed to the uploader).
    # The chips of the chosen files: Streamlit caps their area at about two rows (a third row shows
    # cut in half inside the box); it grows with them instead, scrolling only past half the window.
    st.markdown(f"""<style>
    [data-testid="stFileUploaderDropzone"] [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p
        {{font-size: 0}}
    [data-testid="stFileUploaderDropzone"] [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p::after
        {{content: "选择文件"; font-size: .875rem}}
    [data-testid="stFileUploaderDropzone"] {{height: auto !important}}
    [data-testid="stFileUploaderDropzone"] > div {{height: auto !important; max-height: none !important}}
    [data-testid="stFileChips"] {{max-height: min(24rem, 50vh) !important; height: auto !important}}
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
        try:
            kb.save_chunking(config)
            new_batch(kb, UPLOAD_KINDS, "upload")  # a new batch: count files from here
            for f in accepted:
                kb.upload(f.name, f.getvalue(), config)
        except Exception as exc:
            show_error(exc)
            return
        st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
        st.rerun()


def upload_panel(kb: KB) -> None:
    """The batch's progress, polled from the job rows every second while files are queued or running."""
    job_panel(kb, UPLOAD_KINDS, "upload", fold_when_done=True, rerun_when=documents_changed)


def dismiss_finished_uploads(kb: KB) -> None:
    """After documents are deleted: a finished upload log ("12/12（全部完成）：12 个已索引") would
    contradict the document list, so it is cleared (a batch still running stays listed)."""
    since_key = f"jobs_since_upload_{kb.id}"
    if not any(j.active for j in kb.jobs(st.session_state.get(since_key), UPLOAD_KINDS)):
        st.session_state[since_key] = time.time()


def documents_changed(jobs) -> tuple:
    """What the document list shows of a batch: which files are keyword-searchable and which are
    finished (vectors done); the page runs again when it changes, so each document appears (with
    "向量计算中，暂可按关键词检索") as soon as it is searchable and loses that note when its vectors are in."""
    return tuple(sorted((j.id, j.keyword_searchable, j.active) for j in jobs))
