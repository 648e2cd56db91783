"""Shared UI state: who is acting, the application core (services.workspace) for them, the
current knowledge base and per-KB chat sessions. Pages call only the core: no store, index or
model is touched here or in any page."""
from __future__ import annotations

import hashlib
import logging
import re
import time

import streamlit as st

from components.safe_text import inert_code_urls
from services import errors
from services.access import Principal
from services.views import display_name
from services.workspace import KB, KBInfo, Session, open_workspace


RECHECK_S = 5.0  # a signed-out or removed user loses access within this long


def principal() -> Principal:
    """Who is using this browser session: the one place the UI decides it. In single-user mode
    that is the local user (services.access.LOCAL); with sign-in (WENDAO_AUTH=local|oidc), the
    signed-in user, checked against the sessions table every few seconds — without one the sign-in
    page is shown and the script stops (components.account)."""
    from components.account import current_principal

    cached = st.session_state.get("_principal")
    if cached is None or time.monotonic() - cached[1] > RECHECK_S:
        cached = (current_principal(open_workspace()), time.monotonic())
        st.session_state["_principal"] = cached
    return cached[0]


def session() -> Session:
    """The core's use cases for this browser session's principal (the data dir's Workspace is
    shared by every session of the process; its worker runs the long work)."""
    return open_workspace().session(principal())


def visible_kbs() -> list[KBInfo]:
    """The KBs the principal may see (hidden evaluation copies never listed)."""
    return session().kbs()


def current_kb() -> KB | None:
    """The knowledge base picked in the sidebar, as a core KB handle (read fresh, so settings are
    current), or None when there is none."""
    kb_id = st.session_state.get("kb_id")
    kbs = visible_kbs()
    if kb_id is None or all(kb.id != kb_id for kb in kbs):
        if not kbs:
            return None
        st.session_state["kb_id"] = kb_id = kbs[0].id
    return session().kb(kb_id)


def select_kb(kb: KB | KBInfo) -> None:
    st.session_state["kb_id"] = kb.id


def create_kb(name: str) -> KB | None:
    try:
        kb = session().create_kb(name)
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
        info = kb.info()
        self.slot.caption(f"{info.documents} 个文档 · {info.chunks} 个片段")


def sidebar() -> _Counts:
    """The knowledge-base picker shown on every page; returns the counts line to refresh."""
    kbs = visible_kbs()
    with st.sidebar:
        st.markdown("### 问道 · 文档问答")
        if not kbs:
            return _Counts()
        kb = current_kb()
        ids = [k.id for k in kbs]
        names = {k.id: k.name for k in kbs}
        shared = {n for n in names.values() if list(names.values()).count(n) > 1}  # names are unique per owner only
        names = {i: f"{n}（#{i}）" if n in shared else n for i, n in names.items()}
        # Streamlit identifies a widget by its options' labels too: renaming a KB made a new picker whose
        # default (the first KB) then replaced the current one at the next click. The key carries the
        # current KB and the names, so a rename or a programmatic switch (the sample KB) makes a picker
        # that starts on the current KB.
        key = "kb_picker_" + hashlib.sha1(repr((kb.id, sorted(names.items()))).encode()).hexdigest()[:12]
        st.selectbox("知识库", ids, index=ids.index(kb.id), format_func=lambda i: display_name(names.get(i, "")),
                     key=key, on_change=lambda: st.session_state.update(kb_id=st.session_state[key]))
        return _Counts()


def api_key() -> str:
    """The API key typed in this browser session (never written anywhere unless saved explicitly)."""
    return st.session_state.get("llm_api_key", "")


log = logging.getLogger("wendao.ui")
# Absolute filesystem paths (POSIX or Windows), but not the path part of a URL ("http://host/v1").
_PATH = re.compile(r"(?<![\w:/.\\])/[^\s'\"，。；、）)]+|\b[A-Za-z]:\\[^\s'\"，。；、）)]+")


# The HTTP routes our own advice names ("通常以 /v1 结尾", "是否支持 /chat/completions"): kept.
_ROUTE = re.compile(r"/(v\d+|chat|completions|embeddings|rerank|reranking|models|score)(/(chat|completions|"
                    r"embeddings|rerank|reranking|models|score))*/?")


def without_paths(text: str) -> str:
    """`text` with server filesystem paths replaced by "…" (engine errors often quote them); the
    path of an API route in our advice (/v1, /chat/completions, /embeddings…) is no file and stays."""
    return _PATH.sub(lambda m: m.group(0) if _ROUTE.fullmatch(m.group(0)) else "…", text)


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


def searchable_kb() -> KB:
    """The current KB when it has indexed chunks; otherwise say so, link to the library and stop."""
    kb = current_kb()
    if kb is None or kb.info().chunks == 0:
        st.info("还没有可以检索的文档。请先到文档库上传文件。")
        st.page_link("components/pages/library.py", label="前往文档库", icon=":material/folder_open:")
        st.stop()
    return kb


def follow_url() -> None:
    """On a fresh session (a reload, a shared link) with ?c=<conversation public id> in the URL, open
    that conversation and pick its knowledge base, before the sidebar is drawn. A link to a
    conversation the principal may not open is dropped silently."""
    if st.session_state.get("url_followed"):
        return
    st.session_state["url_followed"] = True
    key = st.query_params.get("c")
    if not key:
        return
    try:
        info = session().conversation(str(key))
    except errors.WendaoError:
        st.query_params.pop("c", None)
        return
    st.session_state["kb_id"] = info.kb_id
    st.session_state.setdefault("open_conv", {})[info.kb_id] = info.key
