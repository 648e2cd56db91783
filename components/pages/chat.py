"""问答: chat over the current knowledge base with streamed, cited answers."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from components.safe_text import inert
from components.state import api_key, library, llm_secrets, searchable_kb, show_error
from components.widgets import citation_chips, highlight, passage_box, stream_inert
from services.answer import Answer, Conversation, stream_answer
from services.library import llm_settings, retrieval_settings
from services.retrieval import MODES, Retriever

MODE_ZH = {"llm": "大模型回答", "extractive": "摘录式回答（未配置或无法连接大模型）", "refused": "文档中没有答案"}

lib = library()
st.title("问答")
kb = searchable_kb()

chats = st.session_state.setdefault("chats", {})
chat = chats.setdefault(kb.id, {"conversation": Conversation(), "messages": []})
settings = retrieval_settings(lib, kb)
llm = llm_settings(lib, kb, api_key(), llm_secrets())

top = st.columns([3, 1, 1])
top[0].caption(f"知识库「{inert(kb.name, keep_lines=False)}」 · 检索：{MODES[settings.mode]}"
               + (" + 重排" if settings.rerank else "")
               + f" · 回答：{'大模型 ' + inert(llm.model, keep_lines=False) if llm.configured else '摘录式（未配置大模型）'}")
if top[1].button("新对话", icon=":material/add_comment:", width="stretch"):
    chats[kb.id] = {"conversation": Conversation(), "messages": []}
    st.rerun()


def export_markdown(messages) -> str:
    lines = [f"# 问道对话记录 · {kb.name}\n"]
    for m in messages:
        if m["role"] == "user":
            lines.append(f"## 问：{m['content']}\n")
        else:
            a: Answer = m["answer"]
            lines.append(a.text + "\n")
            if a.citations:
                lines.append("**来源**\n")
                for c in a.citations:
                    lines.append(f"- [{c.n}] 《{c.doc}》第{c.page}页：“{c.quote}”" + ("" if c.supported else "（未被支持）"))
                lines.append("")
    return "\n".join(lines)


top[2].download_button("导出", icon=":material/download:", data=export_markdown(chat["messages"]), file_name=f"wendao-{kb.name}.md",
                       mime="text/markdown", width="stretch", disabled=not chat["messages"])


def render_details(a: Answer) -> None:
    if a.notice:
        st.warning(inert(a.notice))
    citation_chips(a)
    title = "最接近的段落与检索详情" if a.mode == "refused" else "检索详情：改写后的查询、各阶段耗时、来源段落"
    with st.expander(title, expanded=a.mode == "refused"):
        st.markdown(f"**检索用的查询：** {inert(a.query, keep_lines=False)}"
                    + ("（由追问改写）" if a.query != a.question else ""))
        st.markdown(f"**回答方式：** {MODE_ZH.get(a.mode, a.mode)}")
        if a.citations:
            precision = a.citation_precision
            st.markdown(f"**引用核验：** {sum(c.supported for c in a.citations)}/{len(a.citations)} 条引用得到原文支持"
                        f"（{precision:.0%}）" + (f"，其中 {a.corrected} 条已改指向真正支持该句的资料" if a.corrected else ""))
        timing = {k.replace("retrieval.", "检索·"): round(v, 1) for k, v in a.timings_ms.items()}
        st.dataframe(pd.DataFrame([timing]), hide_index=True)
        for n, h in enumerate(a.sources, start=1):
            st.markdown(f"**\\[{n}\\] {inert(h.doc, keep_lines=False)}** · 第{h.page_start}页 · 分数 {h.score:.3f}")
            quotes = [(c.start - h.start, c.end - h.start) for c in a.citations if c.n == n]
            passage_box(highlight(h.text, quotes))


for m in chat["messages"]:
    with st.chat_message(m["role"]):
        st.markdown(inert(m["content"]))  # questions and answers are shown literally, never as Markdown
        if m["role"] == "assistant":
            render_details(m["answer"])

question = st.chat_input("就文档提问，例如：合同的有效期是多久？")
if question:
    chat["messages"].append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(inert(question))
    with st.chat_message("assistant"):
        try:
            preview = st.empty()  # the cited extract, shown at once while the LLM reads (issue 10 #5)

            def show_preview(extract: Answer, status: str) -> None:
                with preview.container(border=True):
                    st.caption(status + " 先看文档摘录：")
                    st.markdown(inert(extract.text))

            stream = stream_answer(Retriever(lib, kb, settings), llm, question, chat["conversation"],
                                   on_preview=show_preview)
            stream_inert(stream)
            preview.empty()
            answer = stream.answer
        except Exception as exc:
            show_error(exc)
            st.stop()
        render_details(answer)
    chat["conversation"].add(answer)
    chat["messages"].append({"role": "assistant", "content": answer.text, "answer": answer})
