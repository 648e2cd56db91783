"""A small model server for tests on 127.0.0.1, speaking real HTTP: an OpenAI-compatible
`/v1/embeddings` (+ `/v1/models`) and a `/rerank` in the Cohere/Infinity shape or, with
`rerank_shape="tei"`, in Hugging Face TEI's ({"query", "texts"} -> [{"index", "score"}], 422 otherwise).

Vectors are deterministic bags of character bigrams hashed into `dim` buckets (so texts that share
words are close), changed completely by `variant` (another model under the same name). Rerank scores
are the bigram overlap of query and document. It records every request (path, model, inputs, the
Authorization header) and the most requests it had in flight at once; `delay` slows each request.
`stop()` closes the port and `start()` opens the same port again (a server that goes away and comes
back). `key` makes it demand "Bearer <key>" (401 otherwise); `models` are the names it serves (404 for
others, as vLLM and OpenAI answer); `listed` overrides what /models shows; `base64` says whether it
honours, ignores or rejects encoding_format "base64".
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from http.server import ThreadingHTTPServer

import numpy as np

from llm_server import JSONHandler


def bigrams(text: str) -> list[str]:
    t = re.sub(r"\W+", "", text.lower())
    return [t[i:i + 2] for i in range(len(t) - 1)] or [t]


def fake_vector(text: str, dim: int, variant: int = 0) -> list[float]:
    v = np.zeros(dim, np.float32)
    for g in bigrams(text):
        h = int.from_bytes(hashlib.md5(f"{variant}:{g}".encode()).digest()[:4], "little")
        v[h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    n = float(np.linalg.norm(v)) or 1.0
    return (v / n).tolist()


class _Handler(JSONHandler):
    def setup(self):
        super().setup()
        self.server.owner.connections.add(self.connection)

    def _authorised(self) -> bool:
        server = self.server.owner
        server.auth_headers.append(self.headers.get("Authorization"))
        if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
            self._json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}})
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models") and self.server.owner.list_models:
            owner = self.server.owner
            listed = owner.models if owner.listed is None else owner.listed
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in listed]})
        else:
            self._json(404, {"error": {"message": "Not Found"}})

    def do_POST(self):
        owner = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with owner.lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            if owner.delay:
                time.sleep(owner.delay)
            if not self._authorised():
                return
            owner.requests.append({"path": self.path, "body": body})
            if self.path.rstrip("/").endswith("/embeddings"):
                self._embeddings(owner, body)
            elif self.path.rstrip("/").endswith("/rerank"):
                self._rerank(owner, body)
            else:
                self._json(404, {"error": {"message": "Not Found"}})
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _embeddings(self, owner, body):
        model = body.get("model")
        if model not in owner.models:
            self._json(404, {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                                       "code": 404}})
            return
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        base64 = body.get("encoding_format") == "base64"
        if base64 and owner.base64 == "reject":  # e.g. an older server: 400 on the parameter
            self._json(400, {"error": {"message": "encoding_format 'base64' is not supported", "code": 400}})
            return
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, owner.dim, owner.variant)}
                for i, t in enumerate(texts)]
        if base64 and owner.base64 == "yes":
            import base64 as b64

            for d in data:
                d["embedding"] = b64.b64encode(np.asarray(d["embedding"], "<f4").tobytes()).decode()
        self._json(200, {"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    def _rerank(self, owner, body):
        if owner.rerank_shape == "tei":
            if "texts" not in body:
                self._json(422, {"error": "Failed to deserialize the JSON body: missing field `texts`",
                                 "error_type": "validation"})
                return
            query, docs = body["query"], body["texts"]
        else:
            if body.get("model") not in owner.models:
                self._json(400, {"error": {"message": f"Invalid model: model `{body.get('model')}` not found"}})
                return
            query, docs = body["query"], body["documents"]
        q = set(bigrams(query))
        scores = [len(q & set(bigrams(d))) / (1 + len(q)) for d in docs]
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        if owner.rerank_shape == "tei":
            self._json(200, [{"index": i, "score": scores[i]} for i in order])
        else:
            top = body.get("top_n") or len(docs)
            self._json(200, {"object": "rerank", "model": body["model"],
                             "results": [{"index": i, "relevance_score": scores[i], "document": None} for i in order[:top]]})


class FakeModelServer:
    def __init__(self, models=("fake-e5",), dim: int = 384, key: str = "", rerank_shape: str = "cohere",
                 delay: float = 0.0, list_models: bool = True):
        self.models, self.dim, self.key, self.rerank_shape = list(models), dim, key, rerank_shape
        self.delay, self.list_models = delay, list_models
        self.variant = 0
        self.base64 = "yes"  # encoding_format "base64": "yes" honours it, "ignore" sends floats, "reject" says 400
        self.connections: set = set()  # open client connections, cut by stop()
        self.listed: list[str] | None = None  # what /models shows (default: `models`)
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def embedding_requests(self) -> list[list[str]]:
        return [r["body"]["input"] for r in self.requests if r["path"].endswith("/embeddings")]

    def start(self) -> "FakeModelServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        # stop() waits for serve_forever's next poll: 0.5 s by default, paid at every stop
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for conn in list(self.connections):  # a server that goes away drops its keep-alive connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.connections.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
