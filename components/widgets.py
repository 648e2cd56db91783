"""Reusable widgets: highlighted passages, chunk boundaries, citation chips, score tables."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import streamlit as st

from components.safe_text import html_text, inert
from components.words import span_zh
from services.views import STRATEGIES, ChunkingConfig, display_name, page_label

BOUNDARY_COLORS = ("#fde2d2", "#d7ecf7")
PRIMARY = st.get_option("theme.primaryColor") or "#b5472a"  # charts in the theme's colour (.streamlit/config.toml)
CHART_COLORS = (PRIMARY, "#3f7d8c", "#c98a2b", "#6b5b95")  # the theme colour first, then calm companions
SERIES_COLORS = CHART_COLORS + ("#7a9a3a", "#c0587e", "#4a6fa5", "#8c6d46", "#2f9c8f", "#a34d6b")  # one per series
WRAP_ROW_HEIGHT = 68  # px: a table row this tall wraps its text over three lines (Streamlit wraps above 4rem)
SHOWN_CHARS = 48  # of a passage in a table cell: within those three wrapped lines at the column widths used


def shown_text(text: str) -> str:
    """A passage as a table cell shows it: whitespace as single spaces, cut to SHOWN_CHARS with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def highlight(text: str, spans: list[tuple[int, int]], css: str = "background:#ffe58f") -> str:
    """HTML of `text` with [start, end) spans (relative) marked; everything escaped."""
    out, pos = [], 0
    for a, b in sorted(s for s in spans if s[0] < s[1]):
        a = max(a, pos)
        if a >= b:
            continue
        out.append(html_text(text[pos:a]))
        out.append(f'<mark style="{css}">{html_text(text[a:b])}</mark>')
        pos = b
    out.append(html_text(text[pos:]))
    return "".join(out)


def highlight_passage(text: str, passage: tuple[int, int] | None, spans: list[tuple[int, int]]) -> str:
    """HTML of `text` (a passage in its surrounding text) with the passage [a, b) on a grey ground
    (class wendao-cited) and the quote `spans` marked inside it; everything escaped."""
    if not passage or passage[0] >= passage[1]:
        return highlight(text, spans)
    a, b = passage

    def part(x: int, y: int) -> str:
        return highlight(text[x:y], [(max(s, x) - x, min(e, y) - x) for s, e in spans])

    return (part(0, a) + f'<span class="wendao-cited" style="background:#ece9e1">{part(a, b)}</span>'
            + part(b, len(text)))


def passage_box(inner_html: str) -> None:
    """Show HTML built by highlight()/chunk_boundaries_html() (all text escaped) in a quote box."""
    st.markdown(f'<div class="wendao-passage">{inner_html}</div>', unsafe_allow_html=True)


def chunk_boundaries_html(text: str, chunks, doc: str = "") -> str:
    """The document with alternating colours per chunk and a ‖ marker at every boundary; each chunk's
    tooltip says its number, span and (paged formats of file name `doc`) page."""
    out, pos = [], 0
    for i, c in enumerate(chunks):
        start = max(c.start, pos)
        if start > pos:
            out.append(html_text(text[pos:start]))
        color = BOUNDARY_COLORS[i % 2]
        where = " · ".join(filter(None, [f"第 {c.ordinal + 1} 个片段", span_zh(c.start, c.end),
                                         page_label(c.page_start, c.page_end, doc)]))
        out.append(f'<span title="{where}" '
                   f'style="background:{color}">{html_text(text[start:c.end])}</span>'
                   f'<b style="color:#b5472a">‖</b>')
        pos = max(pos, c.end)
    out.append(html_text(text[pos:]))
    return "".join(out)


ZH_SCRIPT = Path(__file__).resolve().parent / "assets" / "zh.js"


def inject_css() -> None:
    """The app's styles, and the script that makes the page zh-CN and puts Streamlit's own English
    words (toolbars, tooltips, instructions, aria-labels) into Chinese (components/assets/zh.js)."""
    st.markdown("""<style>
    .wendao-passage {border-left: 3px solid #b5472a; padding: .4rem .8rem; background: #faf7f2;
                     line-height: 1.8; border-radius: 4px; margin-bottom: .5rem; font-size: .95rem}
    mark {padding: 0 .1rem; border-radius: 2px}
    [data-testid="stElementContainer"]:has(#wendao-zh) {display: none}
    [data-testid="stFileChipName"] {white-space: normal; overflow-wrap: anywhere; line-height: 1.3}
    a.wd-sign-out, a.wd-sign-out:visited {display: inline-flex; align-items: center; justify-content: center;
        min-height: 2.5rem; padding: .25rem .75rem; border: 1px solid rgba(49, 51, 63, .2); border-radius: .5rem;
        background: #fff; color: inherit; text-decoration: none; font-size: 1rem; line-height: 1.6}
    a.wd-sign-out:hover {border-color: var(--st-primary-color, #b5472a); color: var(--st-primary-color, #b5472a)}
    a.wd-sign-out:focus-visible {outline: 2px solid var(--st-primary-color, #b5472a); outline-offset: 1px}
    </style>""", unsafe_allow_html=True)
    st.html(f'<span id="wendao-zh"></span><script>{ZH_SCRIPT.read_text(encoding="utf-8")}</script>',
            unsafe_allow_javascript=True)


STRATEGY_ZH = {"fixed": "固定长度", "sentence": "按句子", "window": "滑动窗口"}


def config_zh(config: ChunkingConfig) -> str:
    """Chunking settings in a few words, as the form names them: 「按句子 · 片段长度 300 字符 · 重叠 50」."""
    if config.strategy == "window":
        return f"{STRATEGY_ZH['window']} · 窗口 {config.window} 句 · 步长 {config.stride}"
    unit = "个模型的词" if config.unit == "tokens" else "字符"
    return f"{STRATEGY_ZH.get(config.strategy, config.strategy)} · 片段长度 {config.chunk_size} {unit} · 重叠 {config.overlap}"


def chunking_form(prefix: str, config: ChunkingConfig, disabled: bool = False) -> ChunkingConfig | None:
    """Chunking controls (the one form used by the library and the settings page); returns a
    valid config or None (with a Chinese message).

    `prefix` must name the knowledge base (and document) the form edits: Streamlit keeps a keyed
    widget's value across reruns, so an unscoped key would carry one KB's choice into another.
    """
    c1, c2, c3, c4 = st.columns(4)
    strategy = c1.selectbox("切分方式", STRATEGIES, index=STRATEGIES.index(config.strategy),
                            format_func=STRATEGY_ZH.get, key=f"{prefix}_strategy", disabled=disabled)
    if strategy == "window":
        window = c2.number_input("窗口句数 W", 1, 50, config.window, key=f"{prefix}_window", disabled=disabled)
        stride = c3.number_input("步长 S", 1, 50, min(config.stride, window), key=f"{prefix}_stride", disabled=disabled)
        size, overlap, unit = config.chunk_size, config.overlap, "chars"
    else:
        size = c2.number_input("片段长度 N（字符）", 20, 4000, config.chunk_size, step=10, key=f"{prefix}_size", disabled=disabled)
        overlap = c3.number_input("重叠 M（字符）", 0, 2000, config.overlap, step=10, key=f"{prefix}_overlap", disabled=disabled)
        unit = c4.selectbox("长度单位", ("chars", "tokens"), index=("chars", "tokens").index(config.unit),
                            format_func={"chars": "字符", "tokens": "模型的词"}.get, key=f"{prefix}_unit", disabled=disabled,
                            help="字符：按字数计。模型的词：按向量模型切词后的单位（token）计，"
                                 "一个汉字约算一个，一个英文单词常算一到三个。") \
            if strategy == "sentence" else "chars"
        window, stride = config.window, config.stride
        if strategy == "sentence" and overlap > size // 2:  # services.documents.chunking._sentence_spans caps it
            st.caption(f"按句子切分时重叠最多为片段长度的一半（这里实际为 {int(size) // 2}），保证每个片段至少一半是新内容。")
    try:
        return ChunkingConfig(strategy, int(size), int(overlap), int(window), int(stride), unit)
    except ValueError:
        st.warning("设置无效：重叠必须小于片段长度，步长不能大于窗口。")
        return None


def stream_inert(deltas, every_s: float = 0.05) -> str:
    """Show a stream of untrusted text deltas (LLM output) as it arrives, escaped like
    inert(); returns the whole text. st.write_stream would render the raw deltas as Markdown."""
    slot, text, shown_at = st.empty(), "", 0.0
    for delta in deltas:
        text += delta
        if time.perf_counter() - shown_at >= every_s:
            slot.markdown(inert(text))
            shown_at = time.perf_counter()
    slot.markdown(inert(text))
    return text


def document_filter(kb, key: str) -> list[str] | None:
    """A multiselect of the KB's searchable documents; the ids picked, or None (every document).
    kb.ask / kb.search(doc_ids=…) then search only those."""
    docs = kb.documents(searchable_only=True)
    if len(docs) < 2:
        return None
    names = {d.id: display_name(d.filename) for d in docs}
    picked = st.multiselect("只在这些文档中查找", list(names), format_func=lambda i: names.get(i, "（已删除）"),
                            key=key, placeholder="全部文档（可选择一个或多个）")
    picked = [i for i in picked if i in names]
    return picked or None


# The per-question CSV's columns in the 评测 page's words (see components/words.py METRIC_ZH).
CSV_HEADERS = {"config": "配置", "id": "问题编号", "question": "问题", "first_relevant_rank": "含答案片段的名次",
               "doc_rank": "正确文档的名次", "ndcg10": "排序质量", "ms": "用时（毫秒）", "top_doc": "第1条结果的文档"}
CSV_RANKS = ("first_relevant_rank", "doc_rank")  # whole numbers; empty when not found in the results


def answer_within_zh(share: float) -> str:
    """A question's 「前1000字含答案」 in words: 是 / 否, or 部分（40%） when only part of the answer's
    characters lie within the budget (services.tuning.evaluation.coverage is that share)."""
    if share >= 1:
        return "是"
    return "否" if share <= 0 else f"部分（{share:.0%}）"


def eval_csv(rows: list[dict]) -> bytes:
    """Per-question results (an evaluation job's result["rows"]) as CSV: one header row in the
    page's words, then the data (ranks as whole numbers, empty when not found; times in ms to one
    decimal; whether the answer lies within the first N characters as 是 / 否, `answer_within_zh`);
    UTF-8 with BOM so Excel shows the Chinese."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    keys = list(frame.columns)
    headers = [CSV_HEADERS.get(k) or k.replace("coverage@", "前") + ("字含答案" if k.startswith("coverage@") else "")
               for k in keys]
    frame = frame.astype(object).where(frame.notna(), "")
    for k in keys:
        if k in CSV_RANKS:
            frame[k] = [int(v) if v != "" else "" for v in frame[k]]
        elif k == "ms":
            frame[k] = [round(float(v), 1) if v != "" else "" for v in frame[k]]
        elif k.startswith("coverage@"):
            frame[k] = [answer_within_zh(float(v)) if v != "" else "" for v in frame[k]]
        elif k == "ndcg10":
            frame[k] = [round(float(v), 3) if v != "" else "" for v in frame[k]]
    return frame.to_csv(index=False, header=headers).encode("utf-8-sig")


def path_key(path: str) -> str:
    """A widget key part for a model folder: names repeat (per KB, and old top-level models beside
    new per-KB ones), paths do not."""
    return hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:16]


def model_choice_label(cards: list[dict]):
    """format_func over model paths: the model's name, with its KB and its time where the name alone is
    ambiguous among `cards` (and a short mark of its folder where even those agree)."""
    by_path = {c["path"]: c for c in cards}

    def long(card: dict) -> str:
        same = [c for c in cards if c["name"] == card["name"]]
        extra = [inert(str(card.get("kb", "")), keep_lines=False)] if len({c.get("kb") for c in same}) > 1 else []
        extra.append(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(card.get("created_at", 0))))
        return f"{inert(card['name'], keep_lines=False)}（{' · '.join(extra)}）"

    def label(path: str) -> str:
        card = by_path.get(path)
        if card is None:
            return "（已删除）"
        if sum(c["name"] == card["name"] for c in cards) == 1:
            return inert(card["name"], keep_lines=False)
        shown = long(card)
        if sum(long(c) == shown for c in cards) > 1:
            shown += f" #{path_key(path)[:6]}"
        return shown
    return label
