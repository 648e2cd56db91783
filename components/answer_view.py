"""One answered turn on the page: the answer with clickable [n] markers, citation chips, the
citation dialog (passage + the original page with the quote highlighted) and the details.

Everything works on the answer's JSON (services.answers.answer.Answer.to_json()), the form a turn is kept in
(services.conversations), so a fresh answer and one reloaded from SQLite look the same.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from components.safe_text import inert, inert_code_urls, inert_name
from components.state import show_error
from components.widgets import highlight, highlight_passage, passage_box
from components.words import STAGE_ZH, TIMING_HELP, TIMING_ZH
from services.views import display_name, joined_sources, page_label, parse_markers, source_claims
from services.workspace import KB

MODE_ZH = {"llm": "大模型回答", "extractive": "摘录式回答（未配置或无法连接大模型）", "refused": "文档中没有答案"}

# The answer text with each [n] as a button. The text is put into the page with textContent (never
# parsed as HTML or Markdown), so whatever the LLM or a document wrote stays inert.
_ANSWER_JS = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let root = parentElement.querySelector('.wd-answer');
  if (!root) { root = document.createElement('div'); root.className = 'wd-answer'; parentElement.appendChild(root); }
  root.replaceChildren();
  for (const part of (data && data.parts) || []) {
    if (part.n === undefined && part.b) {
      const strong = document.createElement('strong'); strong.textContent = part.t; root.appendChild(strong); continue;
    }
    if (part.n === undefined) { root.appendChild(document.createTextNode(part.t)); continue; }
    const b = document.createElement('button');
    b.type = 'button'; b.className = 'wd-cite'; b.textContent = '[' + part.n + ']';
    b.title = part.title || ''; b.dataset.n = String(part.n);
    b.onclick = () => setTriggerValue('cite', part.n);
    root.appendChild(b);
  }
}
"""
_ANSWER_CSS = """
.wd-answer {white-space: pre-wrap; line-height: 1.75; font-size: 1rem; color: var(--st-text-color);
            font-family: var(--st-font, "Source Sans Pro", sans-serif); overflow-wrap: anywhere}
.wd-cite {border: none; background: none; padding: 0 .1rem; margin: 0; color: var(--st-primary-color, #b5472a);
          font: inherit; font-weight: 600; cursor: pointer; text-decoration: underline dotted}
.wd-cite:hover, .wd-cite:focus-visible {background: #fde2d2; border-radius: 3px; outline: none}
"""
_answer_component = st.components.v2.component("wendao_answer", js=_ANSWER_JS, css=_ANSWER_CSS, isolate_styles=False)


def answer_parts(text: str, sources: int, titles: dict[int, str] | None = None,
                 emphasis: list | None = None) -> list[dict]:
    """The answer split into text pieces and one {"n"} piece per cited number ([1,2] gives two);
    numbers without a source stay plain text. Text inside an `emphasis` range ([start, end) of the
    answer: the marked answer, services.answers.answer.Answer.emphasis) is a {"t", "b": True} piece,
    shown bold (still as text, never markup)."""
    parts, pos = [], 0

    def plain(a: int, b: int) -> None:
        cuts = sorted({a, b} | {x for s, e in emphasis or [] for x in (s, e) if a < x < b})
        for x, y in zip(cuts, cuts[1:]):
            bold = any(s <= x and y <= e for s, e in emphasis or [])
            parts.append({"t": text[x:y], "b": True} if bold else {"t": text[x:y]})

    for start, end, numbers in parse_markers(text):
        valid = [n for n in numbers if 1 <= n <= sources]
        if not valid:
            continue
        if start > pos:
            plain(pos, start)
        parts.extend({"n": n, "title": (titles or {}).get(n, "")} for n in valid)
        pos = end
    if pos < len(text):
        plain(pos, len(text))
    return parts


def source_pages(source: dict) -> str:
    """Where in its file the source is ("第3页", "第2张幻灯片"); "" for formats without pages."""
    first, last = (source.get("pages") or [source.get("page", 1)] * 2)[:2]
    return page_label(int(first), int(last), source.get("doc", ""))


def _quotes(answer: dict, n: int) -> list[dict]:
    return [c for c in answer.get("citations", []) if c.get("n") == n]


@st.dialog("引用原文", width="large")
def citation_dialog(kb: KB, answer: dict, n: int) -> None:
    """Source n: the passage with its quotes marked, then the original at the cited spot."""
    sources = answer.get("sources", [])
    if not 1 <= n <= len(sources):
        st.warning("这个引用编号没有对应的资料。")
        return
    source, quotes = sources[n - 1], _quotes(answer, n)
    claims = source_claims(answer, n)
    unverified = [c for c in claims if not c["supported"]]
    st.markdown(f"**\\[{n}\\] 《{inert_name(source.get('doc', ''))}》{source_pages(source)}**"
                + (f" · {len(claims) - len(unverified)}/{len(claims)} 处引用已核实" if unverified else ""))
    for c in unverified:  # which claim the passage does not support (as text, never markup)
        st.text(f"未核实：{c['claim']}")
    start = int(source.get("start", 0))
    view = _source_view(kb, source, quotes)
    if view is not None and view.kind == "text":
        # the passage once, inside its surrounding text (not the passage and then the same text again)
        st.caption("原文上下文（灰底为引用的段落，引用句已标出）")
        passage_box(("…" if view.cut_before else "") + highlight_passage(view.text, view.passage, view.marks or [])
                    + ("…" if view.cut_after else ""))
        return
    passage_box(highlight(source.get("text", ""), [(c["start"] - start, c["end"] - start) for c in quotes]))
    if view is not None:
        original_view(source, view)


def _page_pick(source: dict) -> str:
    """The session key of the dialog's page radio for `source` (shown when the quotes span pages)."""
    return f"pageview_{source.get('doc', '')}_{source.get('start', 0)}"


def _source_view(kb: KB, source: dict, quotes: list[dict]):
    """kb.source_view for the dialog (the page picked on its radio), None when it failed (shown)."""
    try:
        return kb.source_view(source, quotes, st.session_state.get(_page_pick(source)))
    except Exception as exc:  # a missing or unreadable original never breaks the chat
        show_error(exc)
        return None


def original_view(source: dict, view) -> None:
    """Below the passage: the cited PDF page rendered with the quotes highlighted, or a note that
    the original is gone (text formats show the passage in its context instead, citation_dialog)."""
    if view.kind == "missing":
        st.info("原文件已不在知识库中（文档可能已删除或被停用）。")
        return
    if view.kind == "pdf":
        if len(view.pages or []) > 1:
            st.radio("页码", view.pages, format_func=page_label, horizontal=True, key=_page_pick(source))
        st.caption(f"原文 {page_label(view.page)}（共 {view.page_count} 页）"
                   + ("，引用句已用黄色标出" if view.found else
                      "；此页是扫描件，文字由 OCR 识别（可能有错字），无法在图上标出引用句" if view.scanned else
                      "；未能在页面上定位引用句"))
        if view.focus_png:  # the quote readable at once; the whole page one click away
            st.image(view.focus_png, width="stretch")
            with st.expander("查看整页"):
                st.image(view.png, width="stretch")
        else:
            st.image(view.png, width="stretch")


def unverified_count(answer: dict, n: int) -> int:
    """How many of the claims citing source n the source does not support (citations are per claim)."""
    return sum(not c.get("supported", True) for c in _quotes(answer, n))


def citation_chips(answer: dict, key: str) -> int | None:
    """One chip per cited source (file and pages); returns the number of the chip clicked."""
    cited = sorted({c["n"] for c in answer.get("citations", [])})
    sources = answer.get("sources", [])
    cited = [n for n in cited if 1 <= n <= len(sources)]
    if not cited:
        return None
    cols = st.columns(min(4, len(cited)))
    clicked = None
    for i, n in enumerate(cited):
        source = sources[n - 1]
        unverified = unverified_count(answer, n)
        label = " · ".join(filter(None, [f"\\[{n}\\] {inert_name(source.get('doc', ''))}", source_pages(source)])) \
            + (f"（{unverified} 处未核实）" if unverified else "")
        if cols[i % len(cols)].button(label, key=f"{key}_chip_{n}", width="stretch"):
            clicked = n
    return clicked


def answer_text(answer: dict, key: str) -> int | None:
    """The answer with clickable [n]; returns the number clicked in this run (or None)."""
    sources = answer.get("sources", [])
    titles = {i: f"《{display_name(s.get('doc', ''))}》{source_pages(s)}" for i, s in enumerate(sources, start=1)}
    parts = answer_parts(answer.get("answer", ""), len(sources), titles, answer.get("emphasis"))
    result = _answer_component(key=f"{key}_text", data={"parts": parts},
                               on_cite_change=lambda: None, height="content")
    value = getattr(result, "cite", None)
    return int(value) if isinstance(value, (int, float)) else None


def timing_table(timings: dict) -> pd.DataFrame:
    """Stage timings with Chinese names, in milliseconds."""
    rows = []
    for k, v in timings.items():
        name = k.split(".", 1)[-1]
        label = TIMING_ZH.get(name, name)
        if k.startswith("retrieval."):
            label = "检索·" + label
        rows.append({"阶段": label, "耗时（毫秒）": round(float(v), 1)})
    return pd.DataFrame(rows)


def found_by(source: dict) -> str:
    """How the search found a source, in words a reader follows ("关键词检索第 3 名、向量检索第 1 名"):
    a fused or rerank score ("合并得分 0.950") says nothing to a reader, and next to an unrelated
    passage it read like confidence. The scores are in 检索实验室."""
    ranks = source.get("ranks") or {}
    return "、".join(f"{STAGE_ZH[k]}检索第 {ranks[k]} 名" for k in ("bm25", "dense") if ranks.get(k))


def details(answer: dict, question: str) -> None:
    refused = answer.get("mode") == "refused"
    title = "最接近的段落与检索详情" if refused else "检索详情：改写后的查询、各阶段耗时、来源段落"
    with st.expander(title, expanded=refused):
        query = answer.get("query", question)
        st.markdown(f"**检索用的查询：** {inert(query, keep_lines=False)}" + ("（由追问改写）" if query != question else ""))
        if answer.get("context_documents"):
            st.markdown("**对话上下文：** 优先检索上一轮回答所依据的文档 " + "、".join(
                f"《{inert(d.get('doc', ''), keep_lines=False)}》" for d in answer["context_documents"]))
        st.markdown(f"**回答方式：** {MODE_ZH.get(answer.get('mode'), '未知')}")
        citations = answer.get("citations", [])
        if citations:
            supported = sum(bool(c.get("supported")) for c in citations)
            corrected = sum(bool(c.get("corrected")) for c in citations)
            st.markdown(f"**引用核验：** {supported}/{len(citations)} 条引用得到原文支持（{supported / len(citations):.0%}）"
                        + (f"，其中 {corrected} 条已改指向真正支持该句的资料" if corrected else ""))
        if answer.get("timings_ms"):
            st.dataframe(timing_table(answer["timings_ms"]), hide_index=True,
                         column_config={"阶段": st.column_config.TextColumn(help=TIMING_HELP)})
        for s in joined_sources(answer):  # overlapping passages of one document once ([1][2])
            numbers = "".join(f"\\[{n}\\]" for n in s["numbers"])
            st.markdown(" · ".join(filter(None, [f"**{numbers} {inert_name(s.get('doc', ''))}**", source_pages(s),
                                                 found_by(s)])))
            passage_box(highlight(s.get("text", ""), s["quotes"]))


def show_turn(kb: KB, question: str, answer: dict, key: str) -> None:
    """A kept turn: the question, the answer with clickable citations, chips and details."""
    with st.chat_message("user"):
        st.markdown(inert(question))
    with st.chat_message("assistant"):
        clicked = answer_text(answer, key)
        if answer.get("notice"):
            st.warning(inert_code_urls(answer["notice"]))
        chip = citation_chips(answer, key)
        details(answer, question)
    n = clicked or chip
    if n:
        citation_dialog(kb, answer, n)
