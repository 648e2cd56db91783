"""Reusable widgets: highlighted passages, chunk boundaries, citation chips, score tables."""
from __future__ import annotations

import html

import streamlit as st

BOUNDARY_COLORS = ("#fde2d2", "#d7ecf7")


def highlight(text: str, spans: list[tuple[int, int]], css: str = "background:#ffe58f") -> str:
    """HTML of `text` with [start, end) spans (relative) marked; everything escaped."""
    out, pos = [], 0
    for a, b in sorted(s for s in spans if s[0] < s[1]):
        a = max(a, pos)
        if a >= b:
            continue
        out.append(html.escape(text[pos:a]))
        out.append(f'<mark style="{css}">{html.escape(text[a:b])}</mark>')
        pos = b
    out.append(html.escape(text[pos:]))
    return "".join(out).replace("\n", "<br>")


def passage_box(inner_html: str) -> None:
    st.markdown(f'<div class="wendao-passage">{inner_html}</div>', unsafe_allow_html=True)


def chunk_boundaries_html(text: str, chunks) -> str:
    """The document with alternating colours per chunk and a ‖ marker at every boundary."""
    out, pos = [], 0
    for i, c in enumerate(chunks):
        start = max(c.start, pos)
        if start > pos:
            out.append(html.escape(text[pos:start]))
        color = BOUNDARY_COLORS[i % 2]
        out.append(f'<span title="#{c.ordinal} [{c.start},{c.end}) 页{c.page_start}" '
                   f'style="background:{color}">{html.escape(text[start:c.end])}</span>'
                   f'<b style="color:#b5472a">‖</b>')
        pos = max(pos, c.end)
    out.append(html.escape(text[pos:]))
    return "".join(out).replace("\n", "<br>")


def citation_chips(answer) -> None:
    """One chip per cited source; clicking opens its passage with every quoted sentence marked."""
    if not answer.citations:
        return
    by_source: dict[int, list] = {}
    for c in answer.citations:
        by_source.setdefault(c.n, []).append(c)
    cols = st.columns(min(4, len(by_source)))
    for i, (n, cits) in enumerate(sorted(by_source.items())):
        first = cits[0]
        unsupported = [c for c in cits if not c.supported]
        label = f"[{n}] {first.doc} · 第{first.page}页" + ("（未核实）" if unsupported else "")
        with cols[i % len(cols)].popover(label, width="stretch"):
            source = answer.sources[n - 1]
            pages = sorted({c.page for c in cits})
            st.caption(f"《{first.doc}》第 {'、'.join(map(str, pages))} 页 · 位置 {first.start}–{first.end} · "
                       f"支持度 {max(c.support for c in cits):.2f}"
                       + (" · 有引用未能在该段落中找到支持" if unsupported else ""))
            passage_box(highlight(source.text, [(c.start - source.start, c.end - source.start) for c in cits]))


def inject_css() -> None:
    st.markdown("""<style>
    .wendao-passage {border-left: 3px solid #b5472a; padding: .4rem .8rem; background: #faf7f2;
                     line-height: 1.8; border-radius: 4px; margin-bottom: .5rem; font-size: .95rem}
    mark {padding: 0 .1rem; border-radius: 2px}
    </style>""", unsafe_allow_html=True)
