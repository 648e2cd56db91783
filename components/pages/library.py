"""文档库: create, rename and delete knowledge bases; upload files to the background indexer and
watch its progress (polled from the job rows in SQLite); switch documents on and off; preview chunk
boundaries under any chunking settings."""
from __future__ import annotations


import altair as alt
import pandas as pd
import streamlit as st

from components.ingest_view import dismiss_finished_uploads, upload_panel, upload_section
from components.job_view import job_panel, new_batch
from components.safe_text import inert, inert_name
from components.account import keys_panel, members_line, share_dialog
from components.state import create_kb, current_kb, session, show_error, without_paths
from components.widgets import (PRIMARY, SHOWN_CHARS, STRATEGY_ZH, WRAP_ROW_HEIGHT, chunk_boundaries_html, chunking_form,
                                config_zh, passage_box, shown_text)
from components.words import SPAN_HELP, span_zh
from services.views import (OPTIMIZE_FROM_CHUNKS, ChunkingConfig, display_name, format_size, page_label,
                           page_ranges)

STATUS_ZH = {"ready": "就绪", "indexing": "索引中", "failed": "失败"}
MAINTENANCE_KINDS = ("rechunk", "reindex", "optimize")  # shown in one panel below the document row

st.title("文档库")


def flash(slot: str) -> None:
    """A success message kept across the rerun that follows a deletion (a toast sent just before
    st.rerun() is lost): shown once, where the deletion happened, and as a toast."""
    message = st.session_state.pop(f"flash_{slot}", None)
    if message:
        st.success(message, icon=":material/check_circle:")
        st.toast(message)


def size_base() -> int:
    """The unit base of the uploader's file chips in this visitor's browser (Streamlit's frontend
    counts 1 KB = 1024 B on Windows, 1000 B elsewhere): the table's sizes read as the chip's did."""
    return 1024 if "Windows" in (st.context.headers.get("User-Agent") or "") else 1000


def deletion_warning(kb) -> str:
    """The KB deletion's confirmation, naming the KB and what it really holds."""
    held = kb.deletion_summary()
    parts = [f"{held['documents']} 个文档"]
    if held["conversations"]:
        parts.append(f"{held['conversations']} 个对话")
    if held["question_set"]:
        parts.append("已保存的问题集")
    last = parts.pop()
    listed = "、".join(parts) + ((" 和 " if last[0].isdigit() else " 和") if parts else "") + last
    return (f"确定删除知识库「{inert(kb.name, keep_lines=False)}」？其中的 {listed}（连同片段和索引）将被永久删除，"
            "无法恢复。")


flash("kb")

with st.expander("新建知识库", expanded=current_kb() is None):
    with st.form("new_kb", clear_on_submit=True):
        name = st.text_input("知识库名称", placeholder="例如：公司制度")
        if st.form_submit_button("创建", type="primary") and create_kb(name):
            st.rerun()

kb = current_kb()
if kb is None:
    st.info("先创建一个知识库，再上传文档。")
    st.stop()

st.subheader(f"知识库：{inert(kb.name, keep_lines=False)}", anchor=False)  # no anchor derived from the name
can_edit = kb.may("editor")  # the core says what this principal may do; controls they could not use are hidden
if note := kb.role_note("editor"):
    st.info(note, icon=":material/visibility:")


# --- rename / delete the knowledge base (owners) ----------------------------------------------------
if kb.may("owner"):
    with st.expander("重命名或删除知识库"):
        with st.form(f"rename_kb_{kb.id}", clear_on_submit=True, border=False):
            new_name = st.text_input("新名称", placeholder=kb.name)
            if st.form_submit_button("重命名"):
                try:
                    kb.rename(new_name)
                    st.rerun()
                except Exception as exc:
                    show_error(exc)
        if st.button("删除知识库", icon=":material/delete_forever:", key=f"delete_kb_{kb.id}"):
            st.session_state["confirm_delete_kb"] = kb.id
        if st.session_state.get("confirm_delete_kb") == kb.id:
            st.warning(deletion_warning(kb))
            c1, c2 = st.columns(2)
            if c1.button("确认删除知识库", type="primary", key=f"delete_kb_yes_{kb.id}"):
                try:
                    kb.delete()
                    st.session_state.pop("confirm_delete_kb", None)
                    st.session_state.pop("kb_id", None)
                    st.session_state.get("open_conv", {}).pop(kb.id, None)
                    st.session_state["flash_kb"] = f"已删除知识库「{inert(kb.name, keep_lines=False)}」"
                    st.rerun()
                except Exception as exc:
                    show_error(exc)
            if c2.button("取消", key=f"delete_kb_no_{kb.id}"):
                st.session_state.pop("confirm_delete_kb", None)
                st.rerun()


# --- sharing and API keys (owners; team mode) ----------------------------------------------------
if kb.may("owner") and session().who.kind == "user":
    with st.expander("共享与 API 密钥"):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.caption(members_line(kb))
        if c2.button("共享给其他人…", icon=":material/group_add:", key=f"share_{kb.id}", width="stretch"):
            st.session_state["share_open"] = kb.id
        if st.session_state.get("share_open") == kb.id:  # kept open through its own reruns until closed
            share_dialog(kb, session().user_names(), session().who.name)
        keys_panel(kb)
elif kb.may("owner"):
    with st.expander("API 密钥（供其他程序调用这个知识库）"):
        keys_panel(kb)


# --- upload (queued for the background worker) and its progress (editors) ---------------------------
if can_edit:
    st.markdown("#### 上传文档")
    config = chunking_form(f"upload_{kb.id}", kb.chunking_config())  # keys scoped per KB
    upload_section(kb, config)
    upload_panel(kb)  # the upload log is an editor's (the core gives a viewer none: KB.jobs)


def start(submit) -> None:
    """Queue a maintenance job (its progress shows in the panel below the document row)."""
    try:
        new_batch(kb, MAINTENANCE_KINDS, "maintenance")
        submit()
    except Exception as exc:
        show_error(exc)
        return
    st.rerun()


def forget_rows_delete() -> None:
    st.session_state.pop("confirm_delete_rows", None)


@st.dialog("删除文档", on_dismiss=forget_rows_delete)
def confirm_rows_delete(chosen_rows: list, names_shown: str) -> None:
    """The deletion's confirmation in a dialog (in view at any window height: below the table and
    its caption, 确认删除 / 取消 fell below the fold of a 1280x800 window)."""
    st.warning(f"确定删除{names_shown}？{'它们' if len(chosen_rows) > 1 else '它'}的片段和索引会一并删除，无法恢复。")
    y, n = st.columns(2)
    if y.button("确认删除", type="primary", key=f"delete_rows_yes_{kb.id}", width="stretch"):
        try:
            for d in chosen_rows:
                kb.delete_document(d.id)
            forget_rows_delete()
            st.session_state["flash_docs"] = (
                f"已删除 {len(chosen_rows)} 个文档："
                + "、".join(inert(display_name(d.filename), keep_lines=False) for d in chosen_rows[:5])
                + ("等" if len(chosen_rows) > 5 else ""))
            dismiss_finished_uploads(kb)  # its "12 个已索引" would contradict the list now
            st.rerun()
        except Exception as exc:
            show_error(exc)
    if n.button("取消", key=f"delete_rows_no_{kb.id}", width="stretch"):
        forget_rows_delete()
        st.rerun()


# --- documents ----------------------------------------------------------------------------------
st.markdown("#### 文档列表")
flash("docs")
docs = kb.documents()
if not docs:
    st.info("这个知识库还没有文档。")
    st.stop()
size_unit = size_base()
table = pd.DataFrame([{
    "文件名": display_name(d.filename), "启用": "是" if d.enabled else "已停用", "状态": STATUS_ZH.get(d.status, d.status),
    "片段数": d.chunk_count, "页数": str(d.pages) if page_label(1, doc=d.filename) else "—", "大小": format_size(d.size, size_unit),
    "切分": STRATEGY_ZH.get(d.chunking.get("strategy", ""), ""),
    "说明": without_paths(d.error or "") or ("跳过" + page_ranges(d.skipped_pages) if d.skipped_pages else "")
    or ("向量计算中，暂可按关键词检索" if d.dense_state == "pending" else ""),
} for d in docs])
picked_rows = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun" if can_edit else "ignore",
                           selection_mode="multi-row",
                           column_config={"页数": st.column_config.TextColumn(
                               help="PDF 的页数、PPTX 的幻灯片数、XLSX 的工作表数；其他格式没有页（—）"),
                               "大小": st.column_config.TextColumn(
                                   help=f"1 KB = {size_unit} 字节，与上传框里文件旁显示的大小一致")},
                           key=f"doc_table_{kb.id}_{len(docs)}")
picked_rows = picked_rows.selection.rows if can_edit else []
if can_edit:
    st.caption("要删除文档：勾选表格左侧的方框（可多选），再点下方出现的「删除选中的文档」。")
chosen_rows = [docs[i] for i in picked_rows if i < len(docs)]
if chosen_rows:
    names_shown = "、".join(f"「{inert(display_name(d.filename), keep_lines=False)}」" for d in chosen_rows[:5]) \
        + (f"等 {len(chosen_rows)} 个文档" if len(chosen_rows) > 5 else "")
    if st.button(f"删除选中的 {len(chosen_rows)} 个文档", icon=":material/delete:", key=f"delete_rows_{kb.id}"):
        st.session_state["confirm_delete_rows"] = (kb.id, [d.id for d in chosen_rows])
    if st.session_state.get("confirm_delete_rows") == (kb.id, [d.id for d in chosen_rows]):
        confirm_rows_delete(chosen_rows, names_shown)

if can_edit and kb.info().chunks >= OPTIMIZE_FROM_CHUNKS and st.button(
        "优化索引", icon=":material/speed:", key=f"optimize_{kb.id}",
        help="大知识库（2 万片段以上）为向量索引建立近邻图（HNSW），向量检索约快一倍；10 万片段约需 1 分钟（在后台进行）"):
    start(kb.optimize)

with st.expander("索引维护（核对 / 重建）"):
    st.caption("文档和片段的原件保存在数据库里；关键词索引和向量索引都是从数据库算出来的，坏了可以随时重建。"
               "“核对”比较数据库和两个索引是否一致；“重建索引”从数据库重新生成它们（已算过的向量直接复用），"
               "期间旧索引照常可用。",
               help="数据库是 SQLite，是唯一可信的数据来源（source of truth）；关键词索引是 BM25 倒排索引，"
                    "向量索引存放各片段的向量，二者都由数据库派生。")
    m1, m2 = st.columns(2)
    if m1.button("核对索引", icon=":material/fact_check:", width="stretch", key=f"check_{kb.id}"):
        try:
            report = kb.check()
            counts = (f"数据库 {report['sqlite']['chunks']} 个片段 · 关键词索引 {report['indexes']['bm25']['points']} · "
                      f"向量索引 {report['indexes']['dense']['points']}")
            if report["ok"]:
                st.success(f"索引与数据库一致：{counts}")
            else:
                st.error(f"发现不一致：{counts}。缺失 {report['indexes']['dense']['missing']} 个向量，"
                         f"孤立 {report['indexes']['dense']['orphans']} 个；请点“重建索引”。")
        except Exception as exc:
            show_error(exc)
    if m2.button("重建索引", icon=":material/build:", width="stretch", key=f"reindex_{kb.id}", disabled=not can_edit,
                 help="在后台进行：可以离开本页，进度在下方显示" if can_edit else kb.role_note("editor")):
        start(kb.reindex)

names = {d.id: display_name(d.filename) for d in docs}
doc_id = st.selectbox("查看或调整的文档" if can_edit else "查看的文档", list(names), format_func=names.get,
                      key=f"doc_pick_{kb.id}",
                      help="下方的「参与检索」、切分预览和重新切分都针对这里选的文档。删除文档请在上方表格中勾选。"
                      if can_edit else "下方的切分预览针对这里选的文档。")
chosen = next(d for d in docs if d.id == doc_id)
enabled = st.toggle("参与检索", chosen.enabled, key=f"doc_enabled_{kb.id}_{doc_id}", disabled=not can_edit,
                    help="关闭后文档保留在库中，但不参与问答和检索；随时可以再打开。")
if enabled != chosen.enabled and can_edit:
    try:
        kb.set_enabled(doc_id, enabled)
        st.toast(f"{'已启用' if enabled else '已停用'} {inert_name(chosen.filename)}")
        st.rerun()
    except Exception as exc:
        show_error(exc)
if can_edit:
    job_panel(kb, MAINTENANCE_KINDS, "maintenance")

# --- chunk preview --------------------------------------------------------------------------------
def length_histogram(lengths: list[int]) -> alt.Chart:
    """How many chunks have each length: whole-number counts on the y axis, the length bins as plain
    numbers on an upright x axis, in the theme's colour."""
    data = pd.DataFrame({"长度": lengths})
    return alt.Chart(data).mark_bar(color=PRIMARY).encode(
        x=alt.X("长度:Q", bin=alt.Bin(maxbins=12), title="片段长度（字符）", axis=alt.Axis(labelAngle=0, format="d")),
        y=alt.Y("count():Q", title="片段数", axis=alt.Axis(format="d", tickMinStep=1)),
        tooltip=[alt.Tooltip("长度:Q", bin=alt.Bin(maxbins=12), title="长度区间"), alt.Tooltip("count():Q", title="片段数")],
    ).properties(height=220).configure(aria=False)


st.markdown("#### 切分预览")
st.caption("换一种设置看看这个文档会被怎样切分（仅预览，不改索引）。"
           + ("满意的话，点下方的「按这些设置重新切分」，索引就改用这里的设置。" if can_edit else ""))
selected = next(d for d in docs if d.id == doc_id)
try:  # start from the settings this document was chunked with
    current = ChunkingConfig(**{k: v for k, v in selected.chunking.items() if k in ChunkingConfig.__dataclass_fields__})
except (TypeError, ValueError):
    current = ChunkingConfig()
preview_config = chunking_form(f"preview_{kb.id}_{doc_id}", current)
if can_edit and preview_config:
    with st.container(horizontal=True, vertical_alignment="center", gap="medium"):
        rechunk = st.button("按这些设置重新切分", icon=":material/refresh:", key=f"rechunk_doc_{kb.id}",
                            help="用上面这组切分设置（与下方预览相同）重新切分这个文档，在后台进行；"
                                 "其他文档和之后上传的文档不受影响。")
        st.caption(f"将使用：{config_zh(preview_config)}"
                   + ("（与这个文档现在的切分相同）" if preview_config == current else ""))
    if rechunk:
        start(lambda: kb.rechunk(doc_id, preview_config))
if preview_config:
    text, chunks = kb.chunk_preview(doc_id, preview_config)
    lengths = [len(c.text) for c in chunks]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("片段数", len(chunks))
    m2.metric("平均长度", f"{sum(lengths) / max(1, len(lengths)):.0f} 字")
    m3.metric("最短 / 最长", f"{min(lengths, default=0)} / {max(lengths, default=0)}")
    m4.metric("文档长度", f"{len(text)} 字")
    st.altair_chart(length_histogram(lengths), width="stretch")
    tab1, tab2 = st.tabs(["边界视图", "片段表"])
    with tab1:
        passage_box(chunk_boundaries_html(text[:20000], [c for c in chunks if c.start < 20000], selected.filename))
        if len(text) > 20000:
            st.caption("（只显示前 20000 字）")
    with tab2:
        paged = bool(page_label(1, doc=selected.filename))  # a TXT or DOCX has no page column
        st.dataframe(pd.DataFrame([{"#": c.ordinal + 1, "位置": span_zh(c.start, c.end), "长度": len(c.text),
                                    **({"页": f"{c.page_start}-{c.page_end}" if c.page_end != c.page_start
                                        else str(c.page_start)} if paged else {}),
                                    "内容": shown_text(c.text)} for c in chunks]), hide_index=True, width="stretch",
                     row_height=WRAP_ROW_HEIGHT,
                     column_config={"#": st.column_config.NumberColumn(width=48), "位置": st.column_config.TextColumn(
                         width=130, help=SPAN_HELP), "长度": st.column_config.NumberColumn(width=60),
                         "页": st.column_config.TextColumn(width=60),
                         "内容": st.column_config.TextColumn(width=560, help=f"片段的前 {SHOWN_CHARS} 个字；全文见「边界视图」")})
