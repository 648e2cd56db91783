"""The 7 Dec walkthrough (s26) items about the command line: `search --queries` format (8) and the
polish of item 14 (quote text, broken pipes, Chinese progress, help on every option, null pages)."""
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
