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
    assert result["excluded"] == {"yesno": 1, "unanswerable": 1, "missing": 1}
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
