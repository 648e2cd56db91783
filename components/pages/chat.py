"""问答: chat over the current knowledge base with streamed, cited answers.

Conversations are kept in SQLite per knowledge base (services.conversations): every answered turn
is saved at once, the sidebar lists them (continue, rename, delete), and the open conversation's id
sits in the URL (?c=…) so a reload or a restart finds it again.
"""
from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from components.answer_view import export_markdown, show_turn
from components.safe_text import inert
from components.state import api_key, library, llm_secrets, searchable_kb, show_error
from components.widgets import document_filter, stream_inert
from services import conversations
from services.answers.answer import Answer, Conversation, stream_answer
from services.index.library import llm_settings, retrieval_settings
from services.search.retrieval import MODES, Retriever

lib = library()
store = lib.store
st.title("问答")
kb = searchable_kb()

open_convs: dict = st.session_state.setdefault("open_conv", {})  # kb id -> open conversation id


def open_conversation(conv_id: int | None) -> None:
    open_convs[kb.id] = conv_id
    st.session_state.pop("confirm_conv_delete", None)


conv_id = open_convs.get(kb.id)
if conv_id is not None:
    try:
        if conversations.get(store, conv_id).kb_id != kb.id:
            conv_id = None
    except Exception:  # deleted meanwhile (another tab)
        conv_id = None
    open_convs[kb.id] = conv_id
if conv_id is None:
    st.query_params.pop("c", None)
else:
    st.query_params["c"] = str(conv_id)
turns = conversations.turns(store, conv_id) if conv_id else []

# --- sidebar: the KB's conversations -------------------------------------------------------------
with st.sidebar:
    st.markdown("#### 对话记录")
    st.button("新对话", icon=":material/add_comment:", key="new_conv_side", width="stretch",
              on_click=open_conversation, args=(None,))
    for info in conversations.list_for(store, kb.id)[:50]:
        st.button(inert(info.title, keep_lines=False) + f"（{info.turns} 问）", key=f"conv_{info.id}", width="stretch",
                  type="primary" if info.id == conv_id else "secondary", on_click=open_conversation, args=(info.id,))
    if conv_id is not None:
        with st.expander("管理当前对话"):
            with st.form(f"rename_conv_{conv_id}", clear_on_submit=True, border=False):
                title = st.text_input("新名称", placeholder="给这个对话起个名字")
                if st.form_submit_button("重命名"):
                    try:
                        conversations.rename(store, conv_id, title)
                        st.rerun()
                    except Exception as exc:
                        show_error(exc)
            if st.button("删除当前对话", icon=":material/delete:", key="delete_conv"):
                st.session_state["confirm_conv_delete"] = conv_id
            if st.session_state.get("confirm_conv_delete") == conv_id:
                st.warning("确定删除这个对话？删除后无法恢复。")
                c1, c2 = st.columns(2)
                if c1.button("确认删除", type="primary", key="delete_conv_yes"):
                    conversations.delete(store, conv_id)
                    open_conversation(None)
                    st.rerun()
                if c2.button("取消", key="delete_conv_no"):
                    st.session_state.pop("confirm_conv_delete", None)
                    st.rerun()

# --- header: settings line, new conversation, export, document filter -------------------------
settings = retrieval_settings(lib, kb)
llm = llm_settings(lib, kb, api_key(), llm_secrets())
top = st.columns([3, 1, 1])
top[0].caption(f"知识库「{inert(kb.name, keep_lines=False)}」 · 检索：{MODES[settings.mode]}"
               + (" + 重排" if settings.rerank else "")
               + f" · 回答：{'大模型 ' + inert(llm.model, keep_lines=False) if llm.configured else '摘录式（未配置大模型）'}")
top[1].button("新对话", icon=":material/add_comment:", width="stretch", on_click=open_conversation, args=(None,))
top[2].download_button("导出", icon=":material/download:", data=export_markdown(kb.name, turns),
                       file_name=f"wendao-{kb.name}.md", mime="text/markdown", width="stretch", disabled=not turns)
doc_ids = document_filter(lib, kb, f"chat_docs_{kb.id}")

for i, t in enumerate(turns):
    show_turn(kb, t["question"], t["answer"], key=f"turn_{conv_id}_{i}")

question = st.chat_input("就文档提问，例如：合同的有效期是多久？")
if question:
    with st.chat_message("user"):
        st.markdown(inert(question))
    with st.chat_message("assistant"):
        try:
            preview = st.empty()  # the cited extract, shown at once while the LLM reads (issue 10 #5)

            def show_preview(extract: Answer, status: str) -> None:
                with preview.container(border=True):
                    st.caption(status + " 先看文档摘录：")
                    st.markdown(inert(extract.text))

            history = conversations.history(store, conv_id) if conv_id else Conversation()
            stream = stream_answer(Retriever(lib, kb, settings, doc_ids=doc_ids), llm, question, history,
                                   on_preview=show_preview)
            stream_inert(stream)
            preview.empty()
            answer = stream.answer
        except Exception as exc:
            show_error(exc)
            st.stop()
    if conv_id is None:
        conv_id = conversations.create(store, kb.id)
        open_conversation(conv_id)
    conversations.add_turn(store, conv_id, question, answer.to_json(),
                           {"retrieval": asdict(settings), "doc_ids": doc_ids,
                            "llm_model": llm.model if llm.configured else ""})
    st.rerun()  # show the kept turn like every other (clickable citations, export up to date)
