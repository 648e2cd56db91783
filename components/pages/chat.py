"""问答: chat over the current knowledge base with streamed, cited answers.

Everything goes through the core's KB handle: kb.ask streams the answer and saves the turn in the
open conversation (a new one for the first question); the sidebar lists the principal's
conversations of the KB (continue, rename, delete), and the open conversation's public id sits in
the URL (?c=…) so a reload or a restart finds it again.
"""
from __future__ import annotations

import streamlit as st

from components.answer_view import show_turn
from components.safe_text import inert
from components.state import api_key, searchable_kb, show_error
from components.widgets import document_filter, stream_inert
from services.views import MODES

st.title("问答")
kb = searchable_kb()

open_convs: dict = st.session_state.setdefault("open_conv", {})  # kb id -> open conversation's public id


def open_conversation(key: str | None) -> None:
    open_convs[kb.id] = key
    st.session_state.pop("confirm_conv_delete", None)


def forget_conv_delete() -> None:
    st.session_state.pop("confirm_conv_delete", None)


@st.dialog("删除对话", on_dismiss=forget_conv_delete)
def confirm_conv_delete(key: str) -> None:
    """The deletion's confirmation, naming the conversation (issue 22 #12: shown in the sidebar's
    expander, it fell below the fold of a 900 px window and the button seemed to do nothing)."""
    title = inert(kb.conversation(key).title, keep_lines=False)
    st.warning(f"确定删除对话「{title}」？删除后无法恢复。")
    c1, c2 = st.columns(2)
    if c1.button("确认删除", type="primary", key="delete_conv_yes", width="stretch"):
        kb.delete_conversation(key)
        open_conversation(None)
        st.session_state["flash_conv"] = f"已删除对话「{title}」"
        st.rerun()
    if c2.button("取消", key="delete_conv_no", width="stretch"):
        forget_conv_delete()
        st.rerun()


conv = open_convs.get(kb.id)
if conv is not None:
    try:
        kb.conversation(conv)
    except Exception:  # deleted meanwhile (another tab)
        conv = None
    open_convs[kb.id] = conv
if conv is None:
    st.query_params.pop("c", None)
else:
    st.query_params["c"] = conv
turns = kb.turns(conv) if conv else []

# --- sidebar: the KB's conversations -------------------------------------------------------------
with st.sidebar:
    st.markdown("#### 对话记录")
    st.button("新对话", icon=":material/add_comment:", key="new_conv_side", width="stretch",
              on_click=open_conversation, args=(None,))
    for info in kb.conversations()[:50]:
        st.button(inert(info.title, keep_lines=False) + f"（{info.turns} 问）", key=f"conv_{info.key}", width="stretch",
                  type="primary" if info.key == conv else "secondary", on_click=open_conversation, args=(info.key,))
    if conv is not None:
        with st.expander("管理当前对话"):
            with st.form(f"rename_conv_{conv}", clear_on_submit=True, border=False):
                title = st.text_input("新名称", placeholder="给这个对话起个名字")
                if st.form_submit_button("重命名"):
                    try:
                        kb.rename_conversation(conv, title)
                        st.rerun()
                    except Exception as exc:
                        show_error(exc)
            if st.button("删除当前对话", icon=":material/delete:", key="delete_conv"):
                st.session_state["confirm_conv_delete"] = conv
if conv is not None and st.session_state.get("confirm_conv_delete") == conv:
    confirm_conv_delete(conv)  # a dialog over the page: in view however long the sidebar is

if message := st.session_state.pop("flash_conv", None):
    st.toast(message)

# --- header: settings line, new conversation, export, document filter -------------------------
settings = kb.retrieval_settings()
llm = kb.llm_settings(api_key())
top = st.columns([3, 1, 1])
if not llm.configured:
    answered_by = "摘录式（未配置大模型）"
elif why := kb.llm_unusable(llm):  # failed to connect just now, or refuses our requests (405, key, model…)
    answered_by = f"摘录式（大模型 {inert(llm.model, keep_lines=False)} {why}）"
else:
    answered_by = "大模型 " + inert(llm.model, keep_lines=False)
top[0].caption(f"知识库「{inert(kb.name, keep_lines=False)}」 · 检索：{MODES[settings.mode]}"
               + (" + 重排" if settings.rerank else "") + f" · 回答：{answered_by}")
top[1].button("新对话", icon=":material/add_comment:", width="stretch", on_click=open_conversation, args=(None,))
file_name, markdown = kb.export_conversation(conv) if conv else (f"问道对话-{kb.name}.md", "")
top[2].download_button("导出", icon=":material/download:", data=markdown, file_name=file_name,
                       mime="text/markdown", width="stretch", disabled=not turns)
doc_ids = document_filter(kb, f"chat_docs_{kb.id}")

for i, t in enumerate(turns):
    show_turn(kb, t["question"], t["answer"], key=f"turn_{conv}_{i}")

question = st.chat_input("就文档提问，例如：合同的有效期是多久？")
if question:
    with st.chat_message("user"):
        st.markdown(inert(question))
    with st.chat_message("assistant"):
        preview = st.empty()  # the cited extract, shown at once while the LLM reads (issue 10 #5)
        # never a blank bubble: searching comes first (the first question of a process also loads the index)
        preview.caption("正在检索相关段落…")
        try:
            def show_preview(extract, status: str) -> None:
                with preview.container(border=True):
                    st.caption(status + " 先看文档摘录：")
                    st.markdown(inert(extract.text))

            # the turn is saved (in a new conversation when none is open) once the answer is complete
            stream = kb.ask(question, conversation=conv, doc_ids=doc_ids, session_key=api_key(),
                            on_preview=show_preview)
            stream_inert(stream)
            preview.empty()
        except Exception as exc:
            preview.empty()
            show_error(exc)
            st.stop()
    open_conversation(stream.conversation)
    st.rerun()  # show the kept turn like every other (clickable citations, export up to date)
