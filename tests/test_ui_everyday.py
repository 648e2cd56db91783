"""The app as people use it every day (issue 11, UI side), headless with AppTest: kept
conversations, clickable citations and the page view, background ingestion progress, KB and
document management, Chinese-only polish. The browser side is in tests/test_browser.py."""
import io
import json
import re
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from fixtures import ZH_PARAGRAPHS, make_pdf

RIVERS = "第一章 江河\n" + "".join(ZH_PARAGRAPHS)
LAW = "公司制度\n第一条 员工每天工作八小时。第二条 员工每年享有十五天带薪年假。第三条 加班需提前申请。"


def app(page=None, query=None):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"components/pages/{page}.py").run()
    ok(at)
    return at


def ok(at):
    assert not at.exception, [e.value for e in at.exception]


def click(at, label, exact=True):
    found = [b for b in at.button if (b.label == label if exact else b.label.startswith(label))]
    assert found, (label, [b.label for b in at.button])
    found[0].click().run()
    ok(at)


def plain(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def answers(at) -> list[list[dict]]:
    """The parts of each answer shown (text pieces and clickable [n] markers)."""
    return [json.loads(e.proto.json)["parts"] for e in at.get("bidi_component")
            if e.proto.component_name == "wendao_answer"]


def answer_text(parts) -> str:
    return "".join(p["t"] if "t" in p else f"[{p['n']}]" for p in parts)


def shown(at) -> str:
    """Every text the page shows in Markdown-ish elements (for wording checks)."""
    items = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    items += [w.value for w in at.warning] + [i.value for i in at.info] + [s.value for s in at.success]
    items += [b.label for b in at.button] + [p.proto.text for p in at.get("progress")] + [e.label for e in at.expander]
    return plain("\n".join(items).replace("**", ""))


@pytest.fixture
def two_docs(data_dir):
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("资料", create=True)
    ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt")
    ingest_bytes(lib, kb, LAW.encode("gbk"), "制度.txt")
    return lib, kb


def ask(at, question):
    at.chat_input[0].set_value(question).run()
    ok(at)


# --- 1. conversations kept per KB ------------------------------------------------------------
def kept_turns(kb, key: str) -> list[dict]:
    """The turns kept for the conversation with public id `key` (read through the core)."""
    from services.workspace import open_workspace

    return open_workspace().session().kb(kb.id).turns(key)


def test_conversation_survives_reload_and_export_has_every_turn(two_docs):
    from services.workspace import open_workspace

    lib, kb = two_docs
    at = app("chat")
    ask(at, "长江全长多少公里？")
    conv = at.query_params["c"]
    export = at.get("download_button")[0]
    assert export.proto.label == "导出" and not export.proto.disabled  # enabled right after the first answer
    ask(at, "员工每年有几天年假？")
    assert at.query_params["c"] == conv and len(answers(at)) == 2
    # a reload is a new session: the URL's ?c= finds the kept conversation
    again = app(query={"c": conv})
    texts = [answer_text(p) for p in answers(again)]
    assert len(texts) == 2 and "六千三百公里" in texts[0] and "十五天" in texts[1]
    assert again.session_state["open_conv"][kb.id] == conv
    turns = kept_turns(kb, conv)
    name, md = open_workspace().session().kb(kb.id).export_conversation(conv)  # what 导出 downloads
    assert name == "问道对话-长江全长多少公里？.md"
    assert "## 问：员工每年有几天年假？" in md and "十五天" in md  # the last turn too
    assert turns[1]["settings"]["retrieval"]["mode"] == "hybrid"


def test_a_refused_answer_shows_and_exports_the_same_closest_passages_without_a_bare_score(two_docs):
    """The walkthrough of issue 22: a question the documents do not answer showed the closest
    passages with 「合并得分 0.950」 (a number that read like confidence), and the export said
    「以下是最接近的段落，供参考。」 and then listed nothing."""
    from services.workspace import open_workspace

    lib, kb = two_docs
    at = app("chat")
    ask(at, "火星有几颗卫星？")
    turn = kept_turns(kb, at.query_params["c"])[0]["answer"]
    assert turn["mode"] == "refused" and turn["sources"], turn
    page = shown(at)
    assert "得分" not in page and not re.search(r"\d\.\d{3}", page), page
    assert "检索第 1 名" in page  # how the closest passage was found, in words
    name, md = open_workspace().session().kb(kb.id).export_conversation(at.query_params["c"])
    assert "以下是最接近的段落" in md and "**最接近的段落**" in md, md
    listed = [line for line in md.splitlines() if line.startswith("- [")]
    assert [line.split("》")[0] for line in listed] == [f"- [{n}] 《{s['doc']}" for n, s in
                                                        enumerate(turn["sources"], start=1)], md
    for s in turn["sources"]:
        assert s["text"].strip().splitlines()[0] in md


def test_history_continue_rename_delete(two_docs):
    lib, kb = two_docs
    at = app("chat")
    ask(at, "长江全长多少公里？")
    first = at.query_params["c"]
    click(at, "新对话")
    assert "c" not in at.query_params and answers(at) == []
    ask(at, "员工每年有几天年假？")
    second = at.query_params["c"]
    assert second != first
    history = [b.label for b in at.sidebar.button if b.key and b.key.startswith("conv_")]
    assert history == ["员工每年有几天年假？（1 问）", "长江全长多少公里？（1 问）"]  # most recent first
    at.sidebar.button(key=f"conv_{first}").click().run()  # continue the first one
    assert at.query_params["c"] == first and "六千三百公里" in answer_text(answers(at)[0])
    ask(at, "它发源于哪里？")  # a follow-up continues it (rewritten with the kept history)
    kept = kept_turns(kb, first)
    assert len(answers(at)) == 2 and len(kept) == 2
    assert "长江" in kept[1]["answer"]["query"]  # rewritten from the kept first turn
    at.sidebar.text_input[0].input("长江笔记")
    next(b for b in at.sidebar.button if b.label == "重命名").click().run()
    assert any(b.label == "长江笔记（2 问）" for b in at.sidebar.button)
    click(at, "删除当前对话")
    click(at, "取消")  # cancel keeps it
    assert any(b.label == "长江笔记（2 问）" for b in at.sidebar.button)
    click(at, "删除当前对话")
    click(at, "确认删除")
    labels = [b.label for b in at.sidebar.button]
    assert "长江笔记（2 问）" not in labels and "c" not in at.query_params and answers(at) == []


def test_document_filter_searches_only_selected_documents(two_docs):
    lib, kb = two_docs
    law = next(d.id for d in lib.store.list_documents(kb.id) if d.filename == "制度.txt")
    at = app("chat")
    at.multiselect(key=f"chat_docs_{kb.id}").set_value([law]).run()
    ask(at, "长江全长多少公里？")
    turn = kept_turns(kb, at.query_params["c"])[0]
    assert turn["settings"]["doc_ids"] == [law]
    assert {s["doc"] for s in turn["answer"]["sources"]} <= {"制度.txt"}
    lab = app("lab")
    lab.multiselect(key=f"lab_docs_{kb.id}").set_value([law]).run()
    lab.text_input[0].input("长江 黄河").run()
    ok(lab)
    docs = set(lab.dataframe[0].value["文档"]) if len(lab.dataframe) else set()
    assert "rivers.txt" not in docs


# --- 2. inline [n] ---------------------------------------------------------------------------
def test_inline_markers_become_citation_buttons(two_docs):
    from components.answer_view import answer_parts

    parts = answer_parts("甲[1]乙【1，2】丙[9]<b>x</b>", 2)
    assert [p.get("n") for p in parts if "n" in p] == [1, 1, 2]
    assert answer_text(parts) == "甲[1]乙[1][2]丙[9]<b>x</b>"  # [9] has no source: stays text; HTML stays text
    at = app("chat")
    ask(at, "长江全长多少公里？")
    parts = answers(at)[0]
    assert any(p.get("n") == 1 for p in parts) and parts[-1]["title"] == "《rivers.txt》"


def test_chip_opens_passage_in_its_surrounding_text(two_docs):
    at = app("chat")
    ask(at, "长江全长多少公里？")
    click(at, "\\[1\\] rivers\\.txt")
    assert "原文上下文（灰底为引用的段落，引用句已标出）" in [c.value for c in at.caption]
    boxes = [m.value for m in at.markdown if "wendao-passage" in m.value]
    assert any("<mark" in b and "第一章 江河" in b for b in boxes)


# --- 3. the page view ------------------------------------------------------------------------
def _pdf_with_passage_over_two_pages():
    return make_pdf(["第一页 " + ZH_PARAGRAPHS[0] + ZH_PARAGRAPHS[1], "第二页 " + ZH_PARAGRAPHS[2]])


def test_pdf_page_rendered_with_the_quote_highlighted(tmp_path):
    from PIL import Image

    from services.documents.pageview import map_to_page_chars, render_pdf_page
    from services.documents.parsing import parse_pdf

    data = _pdf_with_passage_over_two_pages()
    path = tmp_path / "geo.pdf"
    path.write_bytes(data)
    doc = parse_pdf(data, "geo.pdf")
    quote = "黄河是中国第二长河，被称为中华民族的母亲河"  # wraps onto a second line in the PDF
    start = doc.text.find(quote)
    image = render_pdf_page(path, doc.text, doc.pages, 1, [(start, start + len(quote))])
    assert image.pages == 2 and len(image.boxes) == 2  # one box per line
    png = Image.open(io.BytesIO(image.png)).convert("RGB")
    assert png.size == (image.width, image.height)

    def yellowish(box):
        left, top, right, bottom = box
        px = [png.getpixel((x, (top + bottom) // 2)) for x in range(left + 4, right - 4, 3)]
        return sum(r > 200 and g > 180 and b < 180 for r, g, b in px) / len(px)

    assert all(yellowish(b) > 0.5 for b in image.boxes)
    # the boxes sit where PDFium puts those characters
    import pypdfium2 as pdfium

    from services.documents.pageview import _page_chars

    pdf = pdfium.PdfDocument(str(path))
    textpage = pdf[0].get_textpage()
    chars = _page_chars(textpage)
    indices = map_to_page_chars(doc.text, doc.pages[0], chars, start, start + len(quote))
    assert "".join(chars[i] for i in indices) == quote.replace("，", "，")
    textpage.close()
    pdf.close()
    # a quote not on the page: the page is shown without a highlight
    other = doc.text.find("珠穆朗玛峰")
    assert not render_pdf_page(path, doc.text, doc.pages, 1, [(other, other + 5)]).found


def test_the_page_view_cuts_out_the_boxed_quote_readable_at_once(tmp_path):
    """A whole A4 page scaled into the dialog made the boxes tiny and often below the fold: the view
    also gives the band around the boxes, trimmed to the text, so the quote shows large first."""
    from PIL import Image

    from services.documents.pageview import focus_crop, render_pdf_page
    from services.documents.parsing import parse_pdf

    filler = "这一行只是用来把页面填满的说明文字。" * 40
    data = make_pdf([filler + ZH_PARAGRAPHS[1] + filler])
    path = tmp_path / "long.pdf"
    path.write_bytes(data)
    doc = parse_pdf(data, "long.pdf")
    quote = "黄河是中国第二长河"
    start = doc.text.find(quote)
    page = render_pdf_page(path, doc.text, doc.pages, 1, [(start, start + len(quote))])
    crop = Image.open(io.BytesIO(focus_crop(page))).convert("RGB")
    assert crop.height < page.height / 3 and crop.width < page.width  # a band, trimmed to the text
    yellow = sum(r > 200 and g > 180 and b < 180 for r, g, b in crop.getdata())
    assert yellow > 200  # the highlight is inside the cut-out
    assert focus_crop(render_pdf_page(path, doc.text, doc.pages, 1, [(0, 0)])) == b""  # nothing boxed


def test_pdf_citation_opens_page_view_and_pages_agree(data_dir):
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("地理", create=True)
    ingest_bytes(lib, kb, _pdf_with_passage_over_two_pages(), "geo.pdf", ChunkingConfig("fixed", 400, 0))
    at = app("chat")
    ask(at, "珠穆朗玛峰海拔多少米？")
    chips = [b.label for b in at.button if b.label.startswith("\\[1\\]")]
    assert chips == ["\\[1\\] geo\\.pdf · 第1–2页"]  # the passage spans both pages
    assert any("**\\[1\\] geo\\.pdf** · 第1–2页" in m.value for m in at.markdown)  # details agree
    click(at, chips[0])
    assert any("《geo\\.pdf》第1–2页" in m.value for m in at.markdown)  # dialog title line too
    assert any(c.value.startswith("原文 第2页（共 2 页），引用句已用黄色标出") for c in at.caption)
    # the boxed quote cut out large first, the whole page one click away
    assert len(at.get("image")) == 2 and "查看整页" in [e.label for e in at.expander]


# --- 4. library: background ingestion, KB and documents ---------------------------------------
def _job(lib, kb, filename, status, stage="", done=0, total=0, result=None, age=0.0, kind="ingest"):
    now = time.time() - age
    with lib.store._lock:
        lib.store.db.execute(
            "INSERT INTO jobs(kb_id, kind, filename, path, params, status, stage, done, total, result, created_at,"
            " started_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (kb.id, kind, filename, "", "{}", status, stage, done, total, json.dumps(result or {}, ensure_ascii=False),
             now, now if status != "queued" else None, now))


def test_progress_from_job_rows(two_docs, monkeypatch):
    """What the worker writes to SQLite is what the page shows: overall files, the running stage with
    done/total, speed and time left, waiting files, results with reasons, cache wording only when
    something came from the cache."""
    from services import worker

    monkeypatch.setattr(worker, "start", lambda lib: None)  # the rows are staged: no worker runs them
    lib, kb = two_docs
    done = {"file": "a.txt", "status": "ok", "chunks": 5, "embedded": 5, "seconds": {"parse": 0.1, "embed": 1.0}}
    cached = {"file": "b.txt", "status": "ok", "chunks": 5, "embedded": 2, "seconds": {"embed": 0.2}}
    _job(lib, kb, "a.txt", "done", "index", 5, 5, done, age=5)
    _job(lib, kb, "b.txt", "done", "index", 5, 5, cached, age=4)
    _job(lib, kb, "c.pdf", "failed", "parse", 0, 1, {"file": "c.pdf", "status": "failed",
                                                     "reason": "PDF 文件已损坏或不是有效的 PDF，无法读取。"}, age=3)
    _job(lib, kb, "大文件.pdf", "running", "embed", 40, 109, {"rate": 12.5, "eta_s": 5.5})
    _job(lib, kb, "d.docx", "queued")
    from services import worker

    monkeypatch.setattr(worker.Worker, "_next", lambda self: None)  # rows as written: the worker claims none
    at = app("library")
    text = shown(at)
    # finished 3 (one failed), one running, one waiting; searchable: the 2 indexed and the running one
    assert ("已完成 3/5 个文件，正在处理 1 个，等待 1 个 · 已可检索 3 个文档（其中 1 个向量还在计算，暂时只能按关键词检索）"
            " · 后台进行中，可以离开本页") in text, text
    assert "正在处理「大文件.pdf」：已可按关键词检索 · 向量 40/109，语义检索稍后可用 · 12.5 片段/秒 · 剩余约 6 秒" in text
    assert "等待中：「d.docx」" in text
    assert "「a.txt」：已索引 · 5 个片段 · 1.1 秒" in text and "「a.txt」：已索引 · 5 个片段 · 1.1 秒（" not in text
    assert "「b.txt」：已索引 · 5 个片段 · 0.2 秒（新向量化 2 个片段，其余来自缓存）" in text
    assert "「c.pdf」：失败 — PDF 文件已损坏" in text
    click(at, "取消等待中的文件")
    assert "「d.docx」：已取消" in shown(at)


def test_vectors_progress_is_shown_apart_from_keyword_search(two_docs, monkeypatch):
    """A file past its keyword stage is searchable while its vectors compute: the panel says so and
    shows the vectors' own progress (no full "关键词可检索 30/30" bar while they are pending); the batch
    line counts the files already searchable by keywords."""
    from services import worker

    monkeypatch.setattr(worker, "start", lambda lib: None)
    monkeypatch.setattr(worker.Worker, "_next", lambda self: None)
    lib, kb = two_docs
    _job(lib, kb, "a.txt", "done", "index", 5, 5, {"file": "a.txt", "status": "ok", "chunks": 5, "embedded": 5}, age=5)
    _job(lib, kb, "报告.pdf", "running", "keywords", 30, 30, {})
    _job(lib, kb, "d.docx", "queued")
    at = app("library")
    text = shown(at)
    assert "正在处理「报告.pdf」：已可按关键词检索 · 向量 0/30，语义检索稍后可用" in text, text
    assert "正在计算第一批片段（算完后显示速度和剩余时间）" in text and "速度估算中" not in text  # walkthrough s27 #16
    assert "关键词可检索 30/30" not in text
    bars = {p.proto.text: p.proto.value for p in at.get("progress")}
    assert bars.get("向量 0/30") == 0, bars
    # the walkthrough read "文件 1/3 · 2 个已可按关键词检索" as 2 of 1 done: what is done, running and
    # waiting, and which of the searchable documents are searchable by keywords only
    assert ("已完成 1/3 个文件，正在处理 1 个，等待 1 个 · 已可检索 2 个文档（其中 1 个向量还在计算，暂时只能按关键词检索）"
            " · 后台进行中，可以离开本页") in text, text
    # a model-server outage left a document keyword-only: its "vectors" job shows the same way
    _job(lib, kb, "旧文档.txt", "running", "embed", 12, 30, {"rate": 3.0, "eta_s": 6.0}, kind="vectors")
    at.run()
    text = shown(at)
    assert "补齐向量「旧文档.txt」：向量 12/30，语义检索稍后可用 · 3.0 片段/秒 · 剩余约 6 秒" in text, [l for l in text.splitlines() if "旧文档" in l]


def test_a_new_stage_is_always_written_to_the_job_row(two_docs):
    """The worker's progress rows skip reports that come within 0.3 s of the last one, but never the
    first report of a new stage: an ingest's "embed 0/n" right after "keywords n/n" reaches the page."""
    from services.worker import Runner

    lib, kb = two_docs
    _job(lib, kb, "x.txt", "running")
    job_id = lib.store.jobs.of_kb(kb.id, ("ingest",), 0)[-1].id
    report = Runner(lib)._progress(job_id)
    report("keywords", 30, 30)
    report("embed", 0, 30)
    job = lib.store.jobs.get(job_id)
    assert (job.stage, job.done, job.total) == ("embed", 0, 30) and job.vectors_pending
    report("embed", 5, 30)  # within 0.3 s of the last write, same stage: skipped
    assert lib.store.jobs.get(job_id).done == 0


def test_uploads_go_to_the_worker_and_the_uploader_clears(data_dir, monkeypatch):
    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "3")
    from services import worker
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("新库", create=True)
    at = app("library")
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == 3 and "单个文件不超过 3 MB" in uploader.proto.label
    assert not uploader.proto.type  # every file accepted; unsupported ones refused below, in Chinese
    uploader.set_value([("notes.txt", RIVERS.encode(), "text/plain"), ("表格.numbers", b"PK..", "application/zip"),
                        ("big.txt", b"x" * (3 * 1024 * 1024 + 1), "text/plain")])
    at.run()
    errors = plain(" ".join(e.value for e in at.error))
    assert "「表格.numbers」：不支持的文件类型「.numbers」。支持：" in errors and ".pdf" in errors and ".docx" in errors
    assert "「big.txt」：文件大小" in errors and "超过上限 3 MB" in errors
    click(at, "开始索引 1 个文件")
    assert at.get("file_uploader")[0].value in (None, [])  # a fresh uploader
    assert worker.wait_idle(lib, 120)
    at.run()
    assert "「notes.txt」：已索引" in shown(at) and "文件 1/1（全部完成）" in shown(at)
    assert [d.filename for d in lib.store.list_documents(kb.id)] == ["notes.txt"]


def test_kb_rename_and_delete_with_cancel(two_docs):
    from services import conversations

    lib, kb = two_docs
    other = lib.kb("另一个", create=True)
    conversations.create(lib.store, kb.id)
    at = app("library")
    field = next(t for t in at.text_input if t.label == "新名称")
    field.input("江河资料")
    click(at, "重命名")
    assert lib.store.get_kb(kb.id).name == "江河资料" and "知识库：江河资料" in [s.value for s in at.subheader]
    click(at, "删除知识库")
    click(at, "取消")
    assert lib.store.find_kb("江河资料") is not None
    click(at, "删除知识库")
    assert "确定删除知识库「江河资料」" in shown(at)
    click(at, "确认删除知识库")
    assert lib.store.find_kb("江河资料") is None and conversations.list_for(lib.store, kb.id) == []
    assert at.session_state["kb_id"] == other.id  # the page moved on to a remaining KB


def test_document_switched_off_is_not_searched(two_docs):
    from services.search.retrieval import Retriever

    lib, kb = two_docs
    rivers = next(d.id for d in lib.store.list_documents(kb.id) if d.filename == "rivers.txt")
    at = app("library")
    at.selectbox(key=f"doc_pick_{kb.id}").set_value(rivers).run()
    at.toggle(key=f"doc_enabled_{kb.id}_{rivers}").set_value(False).run()
    ok(at)
    assert not lib.store.get_document(kb.id, rivers).enabled
    assert "已停用" in list(at.dataframe[0].value["启用"])
    assert all(h.doc != "rivers.txt" for h in Retriever(lib, kb).search("长江全长").hits)
    at.toggle(key=f"doc_enabled_{kb.id}_{rivers}").set_value(True).run()
    assert lib.store.get_document(kb.id, rivers).enabled


# --- 6. polish -------------------------------------------------------------------------------
def test_chat_details_in_chinese(two_docs):
    at = app("chat")
    ask(at, "长江全长多少公里？")
    table = at.dataframe[0].value
    assert list(table.columns) == ["阶段", "耗时（毫秒）"]
    assert not any(re.search(r"[a-z_]{4,}", str(s)) for s in table["阶段"] if "BM25" not in s), list(table["阶段"])
    assert "合计" in list(table["阶段"])


def test_unexpected_errors_name_no_class_and_urls_are_code(two_docs, monkeypatch):
    from components.safe_text import inert_code_urls

    md = inert_code_urls("无法连接到大模型接口 http://127.0.0.1:9/v1，请检查地址和服务是否已启动。")
    assert "`http://127.0.0.1:9/v1`" in md and md.endswith("，请检查地址和服务是否已启动。")
    import services.search.retrieval

    def broken(*args, **kwargs):
        raise RuntimeError("APIStatusError: boom")

    monkeypatch.setattr(services.search.retrieval.Retriever, "search", broken)
    at = app("chat")
    ask(at, "长江全长多少公里？")
    message = " ".join(e.value for e in at.error)
    assert "出错了" in message and "Error" not in message


def test_lab_scores_one_panel_per_kind_and_no_none(two_docs):
    at = app("lab")
    at.text_input[0].input("黄河 母亲河").run()
    table = at.dataframe[0].value
    assert "None" not in table.astype(str).to_string() and "nan" not in table.astype(str).to_string()
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]  # one chart (own y axis) per kind
    assert len(charts) >= 2 and all("facet" not in c for c in charts)
    caption = next(c.value for c in at.caption if c.value.startswith("问题切成的词"))
    assert "毫秒" in caption and "ms" not in caption and "embed_query" not in caption


def _walk(block):
    """Elements of a block in page order (AppTest keeps children by position)."""
    for child in getattr(block, "children", {}).values():
        if hasattr(child, "children") and type(child).__name__ not in ("Markdown", "Dataframe"):
            yield from _walk(child)
        else:
            yield child


def test_lab_explains_the_expected_passage_first_for_both_settings(two_docs):
    """Walkthrough: the lab ran only on Enter (no button), its "why was it not found" answer sat
    under ten full passages, and when comparing two settings it spoke of setting A only."""
    at = app("lab")
    assert any(b.label == "检索" for b in at.button)
    at.text_input[0].input("黄河 母亲河")
    at.text_input[1].input("被称为中华民族的母亲河")
    click(at, "检索")
    where = [m.value for m in at.markdown if m.value.startswith("**期望的内容在哪里")]
    assert where == ["**期望的内容在哪里**"]
    said = " ".join(i.value for i in at.info) + " ".join(w.value for w in at.warning) + " ".join(s.value for s in at.success)
    assert "第 " in said and "名" in said, said
    shown_in_order = [getattr(e, "value", None) if type(e).__name__ == "Markdown" else type(e).__name__
                      for e in _walk(at.main)]
    assert shown_in_order.index("**期望的内容在哪里**") < shown_in_order.index("Dataframe")  # above the tables
    at.toggle[0].set_value(True).run()
    ok(at)
    where = [m.value for m in at.markdown if m.value.startswith("**期望的内容在哪里")]
    assert where == ["**期望的内容在哪里**（设置 A）", "**期望的内容在哪里（设置 B）**"]


def test_settings_show_only_the_chosen_chunkers_fields(two_docs):
    lib, kb = two_docs
    at = app("settings")
    labels = {n.label for n in at.number_input}
    assert "片段长度 N（字符）" in labels and "窗口句数 W" not in labels and "步长 S" not in labels
    assert all(s.label != "temperature" for s in at.slider)
    at.selectbox(key=f"settings_{kb.id}_chunking_strategy").set_value("window").run()
    labels = {n.label for n in at.number_input}
    assert "窗口句数 W" in labels and "片段长度 N（字符）" not in labels
    page = app("library")  # the same form component on the library page
    assert {s.label for s in page.selectbox} >= {"切分方式"}


def test_evaluation_warns_without_the_sample_documents_and_clears_on_switch(two_docs):
    lib, kb = two_docs
    other = lib.kb("其他", create=True)
    at = app("evaluation")
    assert any("没有这些问题所针对的文档" in w.value for w in at.warning)
    zero = {f"recall@{k}": 0.0 for k in (1, 5, 10, 20)} | {"p50_ms": 1.0, "p95_ms": 2.0, "questions": 1}
    _job(lib, kb, "评测", "done", "questions", 1, 1, {"summaries": {"x": zero}, "rows": [], "questions": 1},
         kind="evaluate")  # a finished evaluation of this KB
    at.run()
    assert any("得分都是 0" in w.value for w in at.warning)
    next(s for s in at.sidebar.selectbox if s.label == "知识库").set_value(other.id).run()
    assert not any("得分都是 0" in w.value for w in at.warning)  # results belong to the KB they were run on


def test_evaluation_csv_has_one_chinese_header_row_integer_ranks_and_rounded_times():
    """The walkthrough of issue 22 item 2: the export had two header rows (Chinese, then
    config,id,question,…), latencies like 15.14900999609381 and ranks like 1.0."""
    import pandas as pd

    from components.widgets import eval_csv
    from components.words import METRIC_ZH
    from services.tuning.evaluation import QuestionResult, rows_as_dicts

    rows = rows_as_dicts([QuestionResult("BM25", "q1", "问题一", 1, None, 1.0, 15.14900999609381, {1000: 1.0},
                                         "a.txt"),
                          QuestionResult("BM25", "q2", "问题二", None, 3, 0.5, 6.36930600012, {1000: 0.0}, "b.txt")])
    csv = eval_csv(json.loads(json.dumps(rows)))  # as an evaluation job's result keeps them
    text = csv.decode("utf-8-sig")
    assert "config" not in text and "first_relevant_rank" not in text  # one header row, Chinese only
    frame = pd.read_csv(io.BytesIO(csv), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(frame.columns)[:3] == ["配置", "问题编号", "问题"]
    assert METRIC_ZH["coverage@1000chars"] in frame.columns and METRIC_ZH["ndcg@10"] in frame.columns  # the page's words
    assert list(frame["含答案片段的名次"]) == ["1", ""] and list(frame["正确文档的名次"]) == ["", "3"]  # no 1.0, no None
    assert list(frame["用时（毫秒）"]) == ["15.1", "6.4"]
    assert len(frame) == 2


def test_evaluation_csv_says_whether_the_answer_is_within_the_first_1000_characters_in_words():
    """Leftover of the walkthrough: the column 「前1000字含答案」 held 1.0 / 0.0 while the rest of the
    export is Chinese words; it reads 是 / 否 (部分（50%） when only part of the answer is within the
    budget), and the other columns are as they were."""
    import pandas as pd

    from components.widgets import eval_csv
    from services.tuning.evaluation import QuestionResult, rows_as_dicts

    rows = rows_as_dicts([QuestionResult("混合", "q1", "问题一", 1, 1, 1.0, 15.1, {1000: 1.0, 2000: 1.0}, "a.txt"),
                          QuestionResult("混合", "q2", "问题二", None, None, 0.0, 6.4, {1000: 0.0, 2000: 0.5}, ""),
                          QuestionResult("混合", "q3", "问题三", 4, 2, 0.43068, 7.0, {1000: 0.0, 2000: 0.0}, "c.txt")])
    csv = eval_csv(json.loads(json.dumps(rows)))
    frame = pd.read_csv(io.BytesIO(csv), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(frame["前1000字含答案"]) == ["是", "否", "否"]
    assert list(frame["前2000字含答案"]) == ["是", "部分（50%）", "否"]
    assert list(frame.columns) == ["配置", "问题编号", "问题", "含答案片段的名次", "正确文档的名次", "排序质量",
                                   "用时（毫秒）", "第1条结果的文档", "前1000字含答案", "前2000字含答案"]
    assert list(frame["排序质量"]) == ["1.0", "0.0", "0.431"] and list(frame["含答案片段的名次"]) == ["1", "", "4"]


def test_chat_header_says_answers_are_extracts_while_the_llm_is_unreachable(two_docs, monkeypatch):
    """Issue 22 item 3 and the walkthrough: with a saved endpoint that had just refused the
    connection, the header still said "回答：大模型 m" while every answer fell back to an extract."""
    import socket

    from services.answers.llm import LLMClient
    from services.config import LLMSettings
    from services.errors import LLMError

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("WENDAO_LLM_MODEL", "qwen-test")
    try:
        at = app("chat")
        assert "回答：大模型 qwen-test" in shown(at)
        with pytest.raises(LLMError):
            LLMClient(LLMSettings(base_url=url, model="qwen-test", timeout=5)).test_connection()
        at = app("chat")
        assert "回答：摘录式（大模型 qwen-test 暂时连不上）" in shown(at)
    finally:
        closed.close()


def test_an_endpoint_refusing_with_http_405_is_named_in_the_header_and_its_advice_keeps_the_routes(two_docs):
    """The walkthrough of issue 22 item 3: an endpoint answering 405 was saved with its advice shown as
    「通常以 … 结尾…该服务是否支持 …。」 (the scrubber took /v1 and /chat/completions for server file
    paths), and after a reload the chat header said 「回答：大模型 …」 although every answer fell back."""
    from llm_server import FakeLLMServer

    with FakeLLMServer() as server:
        at = app("settings")
        next(t for t in at.text_input if t.label == "接口地址").input(server.url)
        next(t for t in at.text_input if t.label == "模型名").input("fail-405")
        click(at, "保存")
        warned = plain(" ".join(w.value for w in at.warning))
        assert "HTTP 405" in warned and "以 /v1 结尾" in warned and "支持 /chat/completions" in warned, warned
        assert "…" not in warned
        header = next(c.value for c in app("chat").caption if "回答：" in c.value)  # a reload
        assert "回答：摘录式（大模型 fail-405 不可用：接口拒绝了请求，HTTP 405" in plain(header), header

        at = app("settings")
        next(t for t in at.text_input if t.label == "模型名").input("echo")
        click(at, "保存")
        assert not at.warning
        header = next(c.value for c in app("chat").caption if "回答：" in c.value)
        assert "回答：大模型 echo" in plain(header), header


def test_without_paths_hides_server_files_but_keeps_the_api_routes_of_our_advice():
    from components.state import without_paths

    advice = ("请检查：接口地址是否是 OpenAI 兼容地址（通常以 /v1 结尾，例如 http://127.0.0.1:8080/v1）、"
              "该服务是否支持 /chat/completions。OpenAI 兼容服务通常以 /v1 结尾（Infinity 默认没有 /v1）。")
    assert without_paths(advice) == advice
    leaked = "写入失败：/srv/wendao/data/wendao.db /v1/../../etc/passwd /models/reader/x.bin C:\\data\\x.db /tmp/x"
    assert without_paths(leaked) == "写入失败：… … … … …"


# --- issue 22 items 1, 12 and 14: deletions name what they delete and say they happened --------
def test_kb_delete_confirmation_counts_what_it_holds_and_says_it_is_done(two_docs):
    from services import conversations
    from services.tuning.evaluation import save_question_set

    lib, kb = two_docs
    lib.kb("另一个", create=True)
    conversations.create(lib.store, kb.id)
    conversations.create(lib.store, kb.id, owner="someone-else")
    at = app("library")
    click(at, "删除知识库")
    assert "确定删除知识库「资料」？其中的 2 个文档 和 2 个对话（连同片段和索引）将被永久删除" in shown(at), shown(at)
    click(at, "取消")
    save_question_set(lib, kb, ['{"question": "长江多长？", "answer": "六千三百公里"}'])
    at.run()
    click(at, "删除知识库")
    assert "其中的 2 个文档、2 个对话 和已保存的问题集" in shown(at)
    click(at, "确认删除知识库")
    assert lib.store.find_kb("资料") is None
    assert "已删除知识库「资料」" in [s.value for s in at.success]


def test_conversation_delete_asks_in_a_dialog_naming_it_and_says_it_is_done(two_docs):
    at = app("chat")
    ask(at, "长江全长多少公里？")
    conv = at.query_params["c"]
    click(at, "删除当前对话")
    [box] = [w for w in at.warning if "确定删除对话" in w.value]
    assert plain(box.value) == "确定删除对话「长江全长多少公里？」？删除后无法恢复。"
    assert box not in at.sidebar.warning  # in the dialog over the page, not low in the sidebar
    click(at, "取消")
    assert not any("确定删除对话" in w.value for w in at.warning) and at.query_params["c"] == conv
    click(at, "删除当前对话")
    click(at, "确认删除")
    assert "c" not in at.query_params and not any("确定删除对话" in w.value for w in at.warning)
    assert any(plain(t.value) == "已删除对话「长江全长多少公里？」" for t in at.toast)


def test_deleting_a_document_says_so_and_clears_the_finished_upload_log(data_dir):
    from services import worker
    from services.index.library import open_library

    at = app("library")
    at.text_input[0].input("删除测试")
    click(at, "创建")
    at.get("file_uploader")[0].set_value([("长江.txt", "长江是中国第一大河。".encode() * 5, "text/plain"),
                                          ("黄河.txt", "黄河是中国第二长河。".encode() * 5, "text/plain")])
    at.run()
    click(at, "开始索引 2 个文件")
    assert worker.wait_idle(open_library(), 120)
    at.run()
    assert any("2 个已索引" in e.label for e in at.expander)
    names = list(at.dataframe[0].value["文件名"])
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [names.index("黄河.txt")], "columns": [], "cells": []}}
    at.run()
    click(at, "删除选中的 1 个文档")
    click(at, "确认删除")
    assert "已删除 1 个文档：黄河.txt" in [plain(s.value) for s in at.success]
    lib = open_library()
    assert [d.filename for d in lib.store.list_documents(lib.kb("删除测试").id)] == ["长江.txt"]
    assert not any("已索引" in e.label for e in at.expander)  # "2 个已索引" no longer beside 1 document


def test_a_second_edit_of_the_llm_endpoint_in_the_same_page_view_is_saved(two_docs):
    """A recheck walkthrough: after 保存, changing 接口地址 again and pressing 保存 kept the old value while
    saying 「已保存。」 (the unkeyed field became a new widget once its default, the saved value, changed)."""
    from services.workspace import open_workspace

    _, kb = two_docs
    at = app("settings")
    next(t for t in at.text_input if t.label == "接口地址").input("http://127.0.0.1:9/v1")
    next(t for t in at.text_input if t.label == "模型名").input("m1")
    click(at, "保存")
    next(t for t in at.text_input if t.label == "接口地址").input("http://127.0.0.1:8765/v1")
    next(t for t in at.text_input if t.label == "模型名").input("m2")
    click(at, "保存")
    assert next(t for t in at.text_input if t.label == "接口地址").value == "http://127.0.0.1:8765/v1"
    saved = open_workspace().session().kb(kb.id).llm_settings(None)
    assert (saved.base_url, saved.model) == ("http://127.0.0.1:8765/v1", "m2")
