"""Evaluation numbers that do not mislead (issue 22 item 2): documents matched by name without folder
or extension, missing documents named, yes/no and unanswerable questions reported apart from recall."""
import json

from fixtures import ZH_PARAGRAPHS
from services import worker
from services.workspace import open_workspace

TEXT = "".join(ZH_PARAGRAPHS)


def test_questions_for_docs_x_txt_score_against_x_pdf_and_refusal_questions_are_apart(data_dir):
    ws = open_workspace(data_dir)
    kb = ws.session().create_kb("评测")
    kb.upload("rivers.md", TEXT.encode())
    assert worker.wait_idle(ws.lib, 120)
    start = TEXT.index("六千三百公里")
    lines = [json.dumps({"id": "a", "question": "长江有多长？", "doc_file": "docs/rivers.txt",
                         "answer_spans": [{"text": "六千三百公里", "start_in_doc": start}]}, ensure_ascii=False),
             json.dumps({"id": "b", "question": "长江是最长的河吗？", "doc_file": "docs/rivers.txt", "answer_type": "yesno",
                         "answers": ["YES"]}, ensure_ascii=False),
             json.dumps({"id": "c", "question": "长江有几座桥？", "doc_file": "docs/rivers.txt",
                         "answer_type": "unanswerable"}, ensure_ascii=False),
             json.dumps({"id": "d", "question": "合同多久？", "doc_file": "docs/合同.txt",
                         "answer_spans": [{"text": "三年", "start_in_doc": 0}]}, ensure_ascii=False)]
    job = kb.evaluate(lines, ["bm25"], [False], ["current"])
    assert worker.wait_idle(ws.lib, 120)
    result = kb.job(job).result
    summary = next(iter(result["summaries"].values()))
    assert result["questions"] == 1 and summary["recall@5"] == 1.0  # not 0: docs/rivers.txt is rivers.md
    assert result["excluded"] == {"yesno": 1, "unanswerable": 1, "missing": 1, "not_found": 0}
    assert result["missing_docs"] == ["合同.txt"] and "扩展名" in result["match_rule"]
    assert "是非题" in result["excluded_zh"] and "拒答" in result["excluded_zh"] and "合同.txt" in result["excluded_zh"]
    ws.lib.close()


def test_saving_an_unreachable_or_wrong_endpoint_warns_in_chinese(data_dir):
    """Issue 22 item 3: saving tests the endpoint first; a 405 from a server that is not an OpenAI-compatible
    endpoint is explained in Chinese with what to check."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from services.config import LLMSettings

    class NotAnLLM(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(405)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "method not allowed"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotAnLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ws = open_workspace(data_dir)
    kb = ws.session().create_kb("接口")
    try:
        warning = kb.save_llm(LLMSettings(base_url=f"http://127.0.0.1:{server.server_port}", model="m", max_retries=0))
        assert "HTTP 405" in warning and "/v1" in warning and "APIStatusError" not in warning
        assert kb.llm_settings().model == "m"  # saved anyway: the page shows the warning
        unreachable = kb.save_llm(LLMSettings(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout=3))
        assert "无法连接" in unreachable
    finally:
        server.shutdown()
        ws.lib.close()


def test_a_question_with_only_answer_text_is_located_and_one_not_found_is_named(data_dir):
    """The obvious format {"question", "doc_file", "answer"} (no offsets): the answer text is found in the
    stored document (every occurrence becomes a span) and scored; an answer text not in the document is
    named in Chinese and not counted."""
    from services.tuning.evaluation import question_set

    ws = open_workspace(data_dir)
    kb = ws.session().create_kb("评测")
    kb.upload("rivers.md", TEXT.encode())
    assert worker.wait_idle(ws.lib, 120)
    lines = [json.dumps({"question": "长江有多长？", "doc_file": "rivers.txt", "answer": "六千三百公里"}, ensure_ascii=False),
             json.dumps({"question": "黄河有几条支流？", "doc_file": "rivers.txt", "answer": "三万七千条"}, ensure_ascii=False)]
    job = kb.evaluate(lines, ["bm25"], [False], ["current"], keep=True)
    assert worker.wait_idle(ws.lib, 120)
    result = kb.job(job).result
    assert result["questions"] == 1 and next(iter(result["summaries"].values()))["recall@5"] == 1.0
    assert result["excluded"]["not_found"] == 1
    assert "1 个问题的答案在文档中找不到" in result["excluded_zh"] and "黄河有几条支流" in result["excluded_zh"]
    start = TEXT.index("六千三百公里")
    saved = question_set(ws.lib, kb.row)  # fine-tuning reads the saved set with the answers located too
    assert (start, start + len("六千三百公里")) in saved[0].spans and saved[1].spans == []
    ws.lib.close()


def test_a_set_with_no_usable_question_is_refused_and_never_saved(data_dir):
    """Questions without answers, or whose answers are not in their document, are refused before the run
    in Chinese, and `keep` does not make them the KB's question set (fine-tuning would use it)."""
    import pytest

    from services import errors

    ws = open_workspace(data_dir)
    kb = ws.session().create_kb("评测")
    kb.upload("rivers.md", TEXT.encode())
    assert worker.wait_idle(ws.lib, 120)
    no_answer = [json.dumps({"question": f"问题{n}", "doc_file": "rivers.txt"}, ensure_ascii=False) for n in range(3)]
    wrong = [json.dumps({"question": "押金是多少", "doc_file": "rivers.txt", "answer": "800元"}, ensure_ascii=False)]
    for lines in (no_answer, wrong):
        with pytest.raises(errors.InvalidQuestionFile) as caught:
            kb.evaluate(lines, ["bm25"], [False], ["current"], keep=True)
        assert "没有可以评测检索的问题" in str(caught.value) and "问题集未保存" in str(caught.value)
        assert "扩展名" not in str(caught.value)  # the documents were matched: no file-name hint
        assert kb.question_set() is None and kb.jobs(since=0.0, kinds=("evaluate",)) == []
    with pytest.raises(errors.InvalidQuestionFile) as caught:
        kb.evaluate(wrong, ["bm25"], [False], ["current"])
    assert "答案在文档中找不到" in str(caught.value) and "押金是多少" in str(caught.value)
    ws.lib.close()
