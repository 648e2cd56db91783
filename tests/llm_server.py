"""A small OpenAI-compatible chat server for tests, on 127.0.0.1, speaking real HTTP and real SSE.

Behaviour is chosen by the requested model name:
  "echo"            answer from the <source> blocks it receives (the best-matching sentence + [n]);
                    JSON {answerable, answer, citations} when response_format asks for it, and
                    {evidence, answerable} (that sentence, or "" and false) for the answerable check
  "miscite"         like echo, but cites the next source's number (a small model's typical slip)
  "judge-no"        like echo, but its answerable check says the sources do not answer
  "off-topic"       answers a sentence no source says, citing [1] (an answer without supported citations)
  "empty"           an empty completion (200, no text)
  "bad-json"        accepts response_format but answers plain text (a model that ignores the schema)
  "no-json"         like echo but rejects response_format with 400 (endpoints without structured output)
  "fail-401" / "fail-404" / "fail-405" / "fail-500" / "fail-context"   fail every time
  "fail-429-N"      answer 429 for the first N requests, then behave like echo
  "stall"           send the response headers, then nothing (a hung server)
  "fixed"           always the server's `fixed` text (FakeLLMServer(fixed=...)), whatever was asked; with any
                    response_format the same JSON {answerable: true, answer: fixed, citations: [1]}, also
                    for the answerable check (a reply without its `evidence` field), as a careless model does
It obeys an instruction "请只回答：X" anywhere outside <source> blocks, and it reads source blocks as
leniently as a real model would: a block opens at any <source ...> tag and closes at the first
</source> in any case or spacing (</SOURCE>, </ source >), and an opening tag ends at its first ">".
Only text inside a block so delimited is treated as data; everything else (text after an early
close, text inside other tags, a file name that breaks out of its attribute) counts as instructions.
So tests show that our prompt keeps document text and file names inside their blocks.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOURCE = re.compile(r"<\s*source\b([^>]*)>(.*?)(?:<\s*/\s*source\s*>|$)", re.S | re.I)
SOURCE_ID = re.compile(r'\bid\s*=\s*"?(\d+)', re.I)


def source_blocks(text: str) -> list[tuple[int, str]]:
    """(id, body) of each block, delimited leniently (see the module docstring)."""
    out = []
    for attrs, body in SOURCE.findall(text):
        m = SOURCE_ID.search(attrs)
        if m:
            out.append((int(m.group(1)), body.strip()))
    return out


def _bigrams(text):
    t = re.sub(r"\W+", "", text)
    return {t[i:i + 2] for i in range(len(t) - 1)}


def fake_answer(messages, model: str = "echo") -> tuple[str, list[int]]:
    system = messages[0]["content"] if messages else ""
    user = messages[-1]["content"]
    if "改写" in system:  # query rewriting
        history = re.findall(r"用户：(.*)", user)
        follow = re.search(r"追问：(.*)", user).group(1).strip()
        subject = history[-1].split("的")[0] if history else ""
        return re.sub(r"^那(么)?", "", follow).replace("它", subject), []
    outside = SOURCE.sub("", user)
    order = re.search(r"请只回答：([^\s<]+)", outside)
    if order:
        return order.group(1), []
    asked = re.search(r"问题：(.*)", user)
    if not asked:  # e.g. the settings page's connection test
        return "好", []
    question = asked.group(1)
    best = (0.0, 0, "")
    blocks = source_blocks(user)
    for n, body in blocks:
        for sentence in re.split(r"(?<=[。！？])", body):
            score = len(_bigrams(question) & _bigrams(sentence)) / max(1, len(_bigrams(question)))
            if sentence.strip() and score > best[0]:
                best = (score, int(n), sentence.strip())
    if best[0] < 0.2:
        return "文档中没有找到这个问题的答案。", []
    n = best[1]
    if model == "off-topic":
        return "答案是四十二，这是宇宙的终极答案。[1]", [1]
    if model == "miscite":
        n = n % len(blocks) + 1
    return f"{best[2]}[{n}]", [n]


class JSONHandler(BaseHTTPRequestHandler):
    """Quiet HTTP/1.1 handler that answers JSON (the fake LLM and the fake model server)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Handler(JSONHandler):

    def _error(self, status, message, type_="invalid_request_error", code=None):
        self._json(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def do_GET(self):
        if self.path.endswith("/models"):
            return self._json(200, {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "test"}]})
        self._error(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        server: FakeLLMServer = self.server.owner
        model = body.get("model", "")
        server.requests.append({"model": model, "body": body, "auth": self.headers.get("Authorization", "")})
        if model == "fail-401":
            return self._error(401, "Incorrect API key provided: sk-secr***", "invalid_request_error", "invalid_api_key")
        if model == "fail-404":
            return self._error(404, f"The model `{model}` does not exist", code="model_not_found")
        if model == "fail-405":  # not an OpenAI-compatible route (a wrong base_url)
            return self._error(405, "Method Not Allowed")
        if model == "fail-500":
            return self._error(500, "internal error", "server_error")
        if model == "fail-context":
            return self._error(400, "This model's maximum context length is 4096 tokens.", code="context_length_exceeded")
        m = re.fullmatch(r"fail-429-(\d+)", model)
        if m and server.count(model) <= int(m.group(1)):
            return self._error(429, "Rate limit reached", "rate_limit_error")
        if model == "no-json" and body.get("response_format"):
            return self._error(400, "response_format is not supported by this model")
        if server.delay_seconds:
            time.sleep(server.delay_seconds)
        if model == "stall":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            time.sleep(server.stall_seconds)
            return
        text, cited = fake_answer(body["messages"], model)
        if model == "fixed":
            text = server.fixed
            if body.get("response_format"):
                text = json.dumps({"answerable": True, "answer": server.fixed, "citations": [1]}, ensure_ascii=False)
        elif model == "empty":
            text = ""
        elif body.get("response_format") and model != "bad-json":
            answerable = not text.startswith("文档中没有找到")
            schema = body["response_format"].get("json_schema", {}).get("name")
            if schema == "answerable_check":  # the verification before the answer: quote the evidence
                evidence = re.sub(r"\[\d+\]$", "", text) if answerable else ""
                if model == "judge-no":
                    answerable, evidence = False, ""
                text = json.dumps({"evidence": evidence, "answerable": answerable}, ensure_ascii=False)
            else:
                text = json.dumps({"answerable": answerable, "answer": text, "citations": cited}, ensure_ascii=False)
        if body.get("stream"):
            return self._stream(model, text)
        self._json(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})

    def _stream(self, model, text):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(delta, finish=None):
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self._chunk(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n")

        event({"role": "assistant", "content": ""})
        for i in range(0, len(text), 3):
            event({"content": text[i:i + 3]})
            time.sleep(0.005)
        event({}, "stop")
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, s: str):
        data = s.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class FakeLLMServer:
    def __init__(self, stall_seconds: float = 5.0, fixed: str = "", delay_seconds: float = 0.0):
        self.requests: list[dict] = []
        self.stall_seconds = stall_seconds
        self.fixed = fixed  # the "fixed" model's reply
        self.delay_seconds = delay_seconds  # waited before every answer is sent (a slow model reading)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # clients that hang up (timeout tests) are expected
        self.httpd.owner = self
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid by every test that stops one
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self, model: str) -> int:
        return sum(1 for r in self.requests if r["model"] == model)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # run standalone for manual UI testing
    with FakeLLMServer() as s:
        print(s.url, flush=True)
        threading.Event().wait()
