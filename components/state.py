"""Shared UI state: the process-wide Library (st.cache_resource), the current knowledge base,
and per-KB chat sessions. No retrieval logic here: everything goes through services."""
from __future__ import annotations

import logging
import re

import streamlit as st

from components.safe_text import inert_code_urls
from services import errors, worker
from services.config import data_dir
from services.index.library import Library, open_library
from services.index.store import KnowledgeBase


@st.cache_resource(show_spinner="正在打开数据目录…")
def _library(root: str) -> Library:
    lib = open_library(root)
    worker.start(lib)  # queued jobs (e.g. vectors a killed process left pending) run now, not at the next upload
    return lib


def library() -> Library:
    """The Library of WENDAO_DATA_DIR, shared by all sessions of this process."""
    return _library(str(data_dir().resolve()))


def visible_kbs() -> list[KnowledgeBase]:
    return [kb for kb in library().store.list_kbs() if not kb.name.startswith("~")]


def current_kb() -> KnowledgeBase | None:
    """The knowledge base picked in the sidebar (fresh from the store, so settings are current)."""
    kb_id = st.session_state.get("kb_id")
    kbs = visible_kbs()
    if kb_id is None or all(kb.id != kb_id for kb in kbs):
        if not kbs:
            return None
        st.session_state["kb_id"] = kb_id = kbs[0].id
    return library().store.get_kb(kb_id)


def select_kb(kb: KnowledgeBase) -> None:
    st.session_state["kb_id"] = kb.id


def create_kb(name: str) -> KnowledgeBase | None:
    try:
        kb = library().store.create_kb(name)
    except errors.WendaoError as exc:
        st.error(exc.message_zh)
        return None
    select_kb(kb)
    return kb


class _Counts:
    """Sidebar line with the KB's document/chunk counts, filled after the page has run."""

    def __init__(self):
        self.slot = st.sidebar.empty()

    def refresh(self) -> None:
        kb = current_kb()
        if kb is None:
            self.slot.caption("还没有知识库，请在「文档库」页创建。")
            return
        store = library().store
        self.slot.caption(f"{len(store.list_documents(kb.id))} 个文档 · {store.count_chunks(kb.id)} 个片段")


def sidebar() -> _Counts:
    """The knowledge-base picker shown on every page; returns the counts line to refresh."""
    kbs = visible_kbs()
    with st.sidebar:
        st.markdown("### 问道 · 文档问答")
        if not kbs:
            return _Counts()
        kb = current_kb()
        ids = [k.id for k in kbs]
        if st.session_state.get("kb_picker") != kb.id:
            st.session_state["kb_picker"] = kb.id  # follow programmatic switches (e.g. the sample KB)
        st.selectbox("知识库", ids, format_func=lambda i: next(k.name for k in kbs if k.id == i), key="kb_picker",
                     on_change=lambda: st.session_state.update(kb_id=st.session_state["kb_picker"]))
        return _Counts()


SECRET_NAMES = {"OPENAI_BASE_URL": "base_url", "OPENAI_API_KEY": "api_key", "WENDAO_LLM_MODEL": "model"}


def llm_secrets() -> dict:
    """LLM endpoint values from .streamlit/secrets.toml (st.secrets), when that file exists."""
    try:
        return {field: str(st.secrets[name]) for name, field in SECRET_NAMES.items() if name in st.secrets}
    except Exception:  # no secrets file
        return {}


def api_key() -> str:
    """The API key typed in this browser session (never written anywhere unless saved explicitly)."""
    return st.session_state.get("llm_api_key", "")


log = logging.getLogger("wendao.ui")
# Absolute filesystem paths (POSIX or Windows), but not the path part of a URL ("http://host/v1").
_PATH = re.compile(r"(?<![\w:/.\\])/[^\s'\"，。；、）)]+|\b[A-Za-z]:\\[^\s'\"，。；、）)]+")


def without_paths(text: str) -> str:
    """`text` with server filesystem paths replaced by "…" (engine errors often quote them)."""
    return _PATH.sub("…", text)


def show_error(exc: Exception) -> None:
    """A Chinese message for any failure, without server paths; the traceback goes to the server
    log (never to the page). The page stays usable."""
    exc = errors.storage_error(exc) or exc  # a full / read-only disk says so, in Chinese
    if isinstance(exc, errors.WendaoError):
        if exc.__cause__ is not None:
            log.error("%s", type(exc).__name__, exc_info=exc)
        st.error(inert_code_urls(without_paths(exc.message_zh)))
    else:
        log.error("unexpected error shown to the user", exc_info=exc)
        st.error("出错了，操作没有完成。请重试；详细信息已写入服务器日志。")


def setup_logging() -> None:
    """Send the app's log records (tracebacks of errors shown to users) to the server's stderr,
    once per process. Keys are never logged: LLMSettings hides its key in repr()."""
    logger = logging.getLogger("wendao")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def searchable_kb() -> KnowledgeBase:
    """The current KB when it has indexed chunks; otherwise say so, link to the library and stop."""
    kb = current_kb()
    if kb is None or library().store.count_chunks(kb.id) == 0:
        st.info("还没有可以检索的文档。请先到文档库上传文件。")
        st.page_link("components/pages/library.py", label="前往文档库", icon=":material/folder_open:")
        st.stop()
    return kb


def follow_url() -> None:
    """On a fresh session (a reload, a shared link) with ?c=<conversation id> in the URL, open that
    conversation and pick its knowledge base, before the sidebar is drawn."""
    if st.session_state.get("url_followed"):
        return
    st.session_state["url_followed"] = True
    raw = st.query_params.get("c")
    if not raw or not str(raw).isdigit():
        return
    from services import conversations

    try:
        info = conversations.get(library().store, int(raw))
    except errors.WendaoError:
        st.query_params.pop("c", None)
        return
    st.session_state["kb_id"] = info.kb_id
    st.session_state.setdefault("open_conv", {})[info.kb_id] = info.id
