"""Command-line conventions: the `search --queries` file format, document text printed readably (line
breaks as spaces, controls made visible), a broken pipe ending quietly, Chinese progress lines, help on
every option, and `page` null for formats without pages."""
import json

import pytest

from fixtures import ZH_PARAGRAPHS


@pytest.fixture
def mixed_kb(data_dir):
    """KB 混合: a TXT (no pages) and a two-page PDF, built in-process and closed again."""
    from fixtures import make_pdf
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("混合", create=True)
    ingest_bytes(lib, kb, "".join(ZH_PARAGRAPHS).encode(), "长江.txt")
    ingest_bytes(lib, kb, make_pdf([ZH_PARAGRAPHS[1], ZH_PARAGRAPHS[2]]), "黄河.pdf")
    return data_dir


# --- item 8: `search --queries` -------------------------------------------------------------------
def test_search_queries_accepts_query_or_question_and_ids_default_to_line_numbers(mixed_kb, tmp_path, capsys):
    from services import cli

    queries = tmp_path / "q.jsonl"
    queries.write_text('\ufeff{"id":"a","query":"长江"}\n\n{"question":"黄河"}\n', encoding="utf-8")
    assert cli.main(["search", "--kb", "混合", "--mode", "bm25", "--queries", str(queries)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["id"] for x in lines] == ["a", "3"] and all(x["hits"] for x in lines)


@pytest.mark.parametrize("content, said", [
    ('{"id":"a","question":"长江"}\n{"id":"b","text":"黄河"}\n', "查询文件第 2 行缺少 question（或 query）字段"),
    ('{"id":"a","query":""}\n', "查询文件第 1 行的 query 不是非空的文本"),
    ('{"id":"a","question":"长江"}\nnot json\n', "查询文件第 2 行不是有效的 JSON"),
    ('["长江"]\n', "查询文件第 1 行应是 JSON 对象"),
    ("\n\n", "里没有查询"),
])
def test_a_bad_queries_line_is_named_in_chinese(mixed_kb, tmp_path, capsys, content, said):
    """Was a KeyError traceback ('question') for a line with "query"."""
    from services import cli

    queries = tmp_path / "q.jsonl"
    queries.write_text(content, encoding="utf-8")
    assert cli.main(["search", "--kb", "混合", "--mode", "bm25", "--queries", str(queries)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("错误：") and said in err and "Traceback" not in err, err
    if "第" in said:
        assert '"question"' in err  # the format is spelled out


def test_search_help_documents_the_queries_format(capsys):
    from services import cli

    with pytest.raises(SystemExit):
        cli.main(["search", "-h"])
    out = capsys.readouterr().out
    assert "--queries FILE" in out and '"question"' in out and '"query"' in out and "JSONL" in out


# --- item 14a: quote text keeps its words, not <U+000A> -------------------------------------------
def test_quote_line_breaks_print_as_spaces_while_controls_stay_visible(data_dir, monkeypatch, capsys):
    """A PDF quote's line break printed as `<U+000A>` (the file-name rule applied to the quote); an
    ESC or bidi override in document text must still never reach the terminal."""
    from services import cli
    from services.answers.answer import Answer
    from services.answers.citations import Citation

    quote = "化学性质\n键线式也称骨架式、\r\n拓扑式\x1b[2J\u202e"
    answer = Answer("键线式也称骨架式。[1]\n\n第二行\x1b[31m", "extractive", "键线式", "键线式也叫什么？",
                    citations=[Citation(1, "有机\n化学.pdf", 3, 0, 10, quote, True, 1.0, 0)])

    class Stream:
        conversation = None

        def finish(self):
            return answer

    class KB:
        def retrieval_settings(self, **kw):
            return None

        def llm_settings(self):
            from services.config import LLMSettings
            return LLMSettings()

        def ask(self, *a, **kw):
            return Stream()

    monkeypatch.setattr(cli, "_kb", lambda args, need="viewer": KB())
    assert cli.main(["ask", "--kb", "k", "--no-llm", "键线式也叫什么？"]) == 0
    out = capsys.readouterr().out
    assert "[1] 有机<U+000A>化学.pdf 第3页：化学性质 键线式也称骨架式、 拓扑式<U+001B>[2J<U+202E>" in out, out
    assert out.startswith("键线式也称骨架式。[1]\n\n第二行<U+001B>[31m\n"), out  # the answer keeps its lines
    assert "\x1b" not in out and "\u202e" not in out


def test_search_and_chunks_print_passages_as_text_not_python_reprs(data_dir, capsys):
    from services import cli
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    ingest_bytes(lib, lib.kb("k", create=True), "长江是中国第一大河，\n全长约六千三百公里。".encode(), "长江.txt")
    assert cli.main(["search", "--kb", "k", "--mode", "bm25", "长江"]) == 0
    assert cli.main(["chunks", "--kb", "k", "--doc", "长江.txt"]) == 0
    out = capsys.readouterr().out
    assert "   长江是中国第一大河， 全长约六千三百公里。" in out and ": 长江是中国第一大河， 全长" in out, out
    assert "\\n" not in out and "'" not in out and "<U+000A>" not in out


def test_display_text_rules():
    from services.documents.text import display_text

    assert display_text("一\n二\r\n三\t四\u2028五") == "一 二 三 四 五"
    assert display_text("一\n\n二\x07", keep_lines=True) == "一\n\n二<U+0007>"
    assert display_text("\u202eexe") == "<U+202E>exe"


# --- item 14b: a closed pipe ends quietly -----------------------------------------------------------
def test_a_broken_pipe_is_no_file_read_error(mixed_kb, monkeypatch, capsys):
    """`wendao ask … | head` printed 「错误：无法读取文件：系统错误码 32。」 and exited 1."""
    import sys

    from services import cli

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = cli.main(["ask", "--kb", "混合", "--no-llm", "长江全长多少公里？"])
    assert code == cli.BROKEN_PIPE_EXIT == 141
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # starts a Python process
def test_a_real_closed_pipe_ends_quietly(data_dir):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    for args in (["kbs", "--json"],):
        proc = subprocess.Popen([sys.executable, "-m", "services", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "WENDAO_DATA_DIR": str(data_dir)})
        proc.stdout.close()  # the reader is gone before the command writes (`| head` that has read enough)
        err = proc.stderr.read().decode()
        assert proc.wait(120) == 141 and err == "", (args, err)  # was exit 120 and "Exception ignored … BrokenPipeError"


# --- item 14c: progress lines in Chinese ----------------------------------------------------------
def test_ingest_progress_lines_are_chinese(data_dir, tmp_path, capsys):
    from services import cli

    (tmp_path / "a.txt").write_text("".join(ZH_PARAGRAPHS), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(ZH_PARAGRAPHS), encoding="utf-8")
    assert cli.main(["ingest", "--kb", "k", "-v", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("[")]
    assert lines[0].startswith("[1/2] a.txt：完成 — ") and lines[0].endswith(" 个片段"), err
    assert lines[1].startswith("[2/2] b.txt：重复，跳过 — "), err
    assert "  a.txt：解析 1/1" in err and "：向量化 " in err, err
    assert " ok " not in err and "parse" not in err and "duplicate" not in err


# --- item 14d: every option says what it does -----------------------------------------------------
def test_every_option_of_every_command_has_chinese_help():
    import argparse
    import re

    from services.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS or not re.search(r"[\u4e00-\u9fff]", action.help):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "wendao")
    assert missing == [], missing


# --- item 14e: no page numbers for formats without pages ------------------------------------------
def test_cli_json_gives_page_null_for_a_txt_and_numbers_for_a_pdf(mixed_kb, capsys):
    from services import cli

    assert cli.main(["search", "--kb", "混合", "--mode", "bm25", "--top-k", "10", "--json", "长江 黄河"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    txt = [h for h in hits if h["doc"] == "长江.txt"]
    pdf = [h for h in hits if h["doc"] == "黄河.pdf"]
    assert txt and pdf
    assert all("page" in h and h["page"] is None and h["pages"] is None for h in txt)  # was "page": 1
    assert all(isinstance(h["page"], int) and h["page"] >= 1 and len(h["pages"]) == 2 for h in pdf)
    assert cli.main(["ask", "--kb", "混合", "--no-llm", "--json", "长江全长多少公里？"]) == 0
    answer = json.loads(capsys.readouterr().out)
    cited = [c for c in answer["citations"] if c["doc"] == "长江.txt"]
    assert cited and all("page" in c and c["page"] is None for c in cited)
    assert all(s["page"] is None for s in answer["sources"] if s["doc"] == "长江.txt")
    assert cli.main(["chunks", "--kb", "混合", "--doc", "长江.txt", "--json"]) == 0
    assert all(c["pages"] is None for c in json.loads(capsys.readouterr().out)["chunks"])
    assert cli.main(["chunks", "--kb", "混合", "--doc", "黄河.pdf", "--json"]) == 0
    pages = [c["pages"] for c in json.loads(capsys.readouterr().out)["chunks"]]
    assert pages[0][0] == 1 and pages[-1][1] == 2


def test_api_gives_page_null_for_a_txt(mixed_kb):
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from services.access import LOCAL
    from services.api import create_api
    from services.workspace import open_workspace

    key = open_workspace().session(LOCAL).kb("混合").create_key("read")
    client = TestClient(create_api())
    hits = client.post("/v1/retrieval", json={"kb": "混合", "query": "长江 黄河", "mode": "bm25", "top_k": 10}).json()["hits"]
    assert {h["doc"] for h in hits} == {"长江.txt", "黄河.pdf"}
    assert all((h["page"] is None) == (h["doc"] == "长江.txt") for h in hits)
    docs = {d["filename"]: d["pages"] for d in client.get("/v1/kbs/混合/documents").json()["documents"]}
    assert docs == {"长江.txt": None, "黄河.pdf": 2}
    openai = OpenAI(base_url="http://testserver/v1", api_key=key.key, http_client=client)
    reply = openai.chat.completions.create(model="混合", messages=[{"role": "user", "content": "长江全长多少公里？"}],
                                           extra_body={"no_llm": True})
    citations = reply.model_extra["citations"]
    assert citations and all(c["page"] is None for c in citations if c["doc"] == "长江.txt"), citations
