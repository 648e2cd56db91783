"""Reranking: an in-process cross-encoder (sentence-transformers CrossEncoder, GPU when present) or a
`/rerank` server; `load_reranker(name)` returns either, both with `.score(query, passages)`.

In process (`Reranker`): on cuda fp16, batches sized by a token budget (long pairs get smaller
batches), max length 512, and on out-of-memory a retry with half the budget, then on CPU.
No reranker ships through PyPI, so reranking is off by default offline; any registry name, HF id
or local folder loads.

Served (`ServedReranker`, for names made by services.config.served_name, e.g. from
WENDAO_RERANK_BASE_URL + WENDAO_RERANK_MODEL): POST <base_url>/rerank in the shape Infinity, Jina,
Cohere and Xinference accept ({"model", "query", "documents", "top_n", "return_documents"} ->
{"results": [{"index", "relevance_score"}]}); a server that rejects it as Hugging Face TEI does
(422: it wants {"query", "texts"} -> [{"index", "score"}]) is asked again in TEI's shape, which is
then used for that server. Documents go in batches (TEI's default limit is 32 per request), at most
`concurrency` requests at a time, with retries on connection errors, 429 and 5xx. Failures are
services.errors.ModelServerError with Chinese messages; the retriever then answers without reranking.
Both report `device` and `last_ms_per_100` (the settings page's test shows them).
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from services import errors
from services.index.embedding import short_hub_timeouts, pick_device
from services.index.models import ensure_loadable, hub_hint, resolve


class Reranker:
    def __init__(self, name_or_path: str, device: str | None = None, max_length: int = 512,
                 token_budget: int | None = None):
        from sentence_transformers import CrossEncoder

        self.spec = resolve(name_or_path, "reranker")
        self.device = device or pick_device()
        kwargs = {"model_kwargs": {"torch_dtype": "float16"}} if self.device == "cuda" else {}
        offline = ensure_loadable(self.spec)
        try:
            with short_hub_timeouts():
                self.model = CrossEncoder(self.spec.hf_id, device=self.device, max_length=max_length,
                                          local_files_only=offline, **kwargs)
        except Exception as exc:
            raise errors.ModelLoadError(
                f"无法加载重排模型「{self.spec.name}」（{self.spec.hf_id}）：{type(exc).__name__}。{hub_hint()}") from exc
        self.max_length = max_length
        self.token_budget = token_budget or (32768 if self.device == "cuda" else 8192)
        self.last_ms_per_100 = 0.0

    def _batches(self, pairs: list[tuple[str, str]], budget: int) -> list[list[int]]:
        """Indices grouped so each batch's padded length x size stays within `budget` tokens."""
        lengths = [min(self.max_length, len(q) + len(p) + 3) for q, p in pairs]  # chars ~ tokens for zh
        order = sorted(range(len(pairs)), key=lambda i: lengths[i])
        batches, current, longest = [], [], 0
        for i in order:
            longest_if_added = max(longest, lengths[i])
            if current and longest_if_added * (len(current) + 1) > budget:
                batches.append(current)
                current, longest_if_added = [], lengths[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def score(self, query: str, passages: list[str]) -> list[float]:
        """Relevance score per passage (higher = more relevant)."""
        if not passages:
            return []
        pairs = [(query, p) for p in passages]
        start = time.perf_counter()
        scores = self._score_with_fallback(pairs, self.token_budget)
        self.last_ms_per_100 = (time.perf_counter() - start) * 1000 * 100 / len(pairs)
        return scores

    def _score_with_fallback(self, pairs, budget) -> list[float]:
        try:
            return self._score(pairs, budget)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if self.device == "cuda":
                _empty_cuda_cache()
                if budget > 1024:
                    return self._score_with_fallback(pairs, budget // 2)
                self.model.model.to("cpu").float()
                self.device = "cpu"
                return self._score(pairs, 8192)
            raise

    def _score(self, pairs, budget) -> list[float]:
        scores = [0.0] * len(pairs)
        for batch in self._batches(pairs, budget):
            out = self.model.predict([pairs[i] for i in batch], batch_size=len(batch), show_progress_bar=False,
                                     convert_to_numpy=True)
            for i, s in zip(batch, out):
                scores[i] = float(s)
        return scores


def _is_oom(exc: Exception) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        pass


class ServedReranker:
    """Scores from a `/rerank` endpoint (see the module docstring)."""

    def __init__(self, served, api_key: str = "", settings=None):
        import httpx

        from services.index.served import ServerSettings

        if not served.base_url or not served.model:
            raise errors.ModelLoadError("重排模型服务需要填写接口地址（base_url）和模型名。")
        self.served = served
        self.spec = resolve(served.name, "reranker")
        self.settings = settings or ServerSettings.from_env()
        self.url = served.base_url.rstrip("/") + "/rerank"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        from services import netguard

        timeout = httpx.Timeout(self.settings.timeout, connect=min(5.0, self.settings.timeout))
        self._http = netguard.http_client(served.base_url, timeout)  # no proxy from the environment; guarded
        self._http.headers.update(headers)  # where a visitor chose the endpoint (team mode)
        self._down: tuple[float, Exception] | None = None  # when the server last failed to answer, and how
        self._slots = threading.BoundedSemaphore(self.settings.concurrency)
        self.shape = "cohere"  # or "tei", learnt from the server's first answer
        self.device = "模型服务"
        self.last_ms_per_100 = 0.0
        self.requests = 0

    def score(self, query: str, passages: list[str]) -> list[float]:
        """Relevance score per passage (higher = more relevant), in the passages' order."""
        if not passages:
            return []
        if self._down and time.monotonic() - self._down[0] < 5.0:
            raise self._down[1]  # just failed: searches meanwhile go on without reranking at once
        start = time.perf_counter()
        size = self.settings.batch_size
        groups = [list(range(i, min(i + size, len(passages)))) for i in range(0, len(passages), size)]
        scores = [0.0] * len(passages)
        try:
            results = [self._request(query, [passages[i] for i in groups[0]])]  # learns the shape before going parallel
            if len(groups) > 1:
                with ThreadPoolExecutor(min(len(groups) - 1, self.settings.concurrency)) as pool:
                    results += list(pool.map(lambda g: self._request(query, [passages[i] for i in g]), groups[1:]))
        except (errors.ModelServerUnreachable, errors.ModelServerTimeout) as exc:
            self._down = (time.monotonic(), exc)
            raise
        self._down = None
        for group, got in zip(groups, results):
            for i, value in zip(group, got):
                scores[i] = value
        self.last_ms_per_100 = (time.perf_counter() - start) * 1000 * 100 / len(passages)
        return scores

    def _request(self, query: str, documents: list[str]) -> list[float]:
        """Scores of one batch in order; retries transient failures with backoff."""
        from services.index.served import translate

        attempt = 0
        while True:
            try:
                with self._slots:
                    self.requests += 1
                    response = self._post(query, documents)
                    if response.status_code == 422 and self.shape == "cohere":  # TEI validates its own shape
                        self.shape = "tei"
                        response = self._post(query, documents)
                if response.status_code in (429, 502, 503, 504) and attempt < self.settings.max_retries:
                    raise _Retry()
                response.raise_for_status()
                return _parse_scores(response.json(), len(documents))
            except _Retry:
                pass
            except errors.ModelServerError:
                raise
            except Exception as exc:  # noqa: BLE001 - httpx errors and bad JSON, translated below
                name = type(exc).__name__
                if name in ("ConnectError", "ReadError", "RemoteProtocolError", "ConnectTimeout") and \
                        attempt < self.settings.max_retries:
                    pass
                elif name == "JSONDecodeError" or isinstance(exc, (ValueError, KeyError, TypeError)):
                    raise errors.ModelServerBadResponse("重排模型服务的返回内容无法识别（应为 results 列表或 TEI 的 [{index, score}]）。") from None
                else:
                    raise translate(exc, self.served.base_url, self.served.model, "重排模型服务", "/rerank") from None
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
            attempt += 1

    def _post(self, query: str, documents: list[str]):
        if self.shape == "tei":
            body = {"query": query, "texts": documents, "raw_scores": False}
        else:
            body = {"model": self.served.model, "query": query, "documents": documents,
                    "top_n": len(documents), "return_documents": False}
        return self._http.post(self.url, json=body)


class _Retry(Exception):
    pass


def _parse_scores(body, n: int) -> list[float]:
    """Scores by input index from either answer shape: {"results": [{"index", "relevance_score"}]}
    (Cohere, Jina, Infinity, Xinference; also under "data") or TEI's [{"index", "score"}]."""
    items = body if isinstance(body, list) else (body.get("results") or body.get("data"))
    if not isinstance(items, list):
        raise errors.ModelServerBadResponse("重排模型服务的返回内容无法识别（没有 results）。")
    scores: list[float | None] = [None] * n
    for item in items:
        value = item.get("relevance_score", item.get("score"))
        index = int(item["index"])
        if value is None or not 0 <= index < n:
            raise errors.ModelServerBadResponse("重排模型服务返回的序号或分数不正确。")
        scores[index] = float(value)
    if any(v is None for v in scores):
        raise errors.ModelServerBadResponse(f"重排模型服务只返回了 {sum(v is not None for v in scores)}/{n} 个分数。")
    return scores  # type: ignore[return-value]


_RERANKERS: dict[object, object] = {}
_LOCK = threading.Lock()


def load_reranker(name_or_path: str, api_key: str = ""):
    """One reranker per model per process: a served one for served-model names (with `api_key`, the
    key for its endpoint, see services.index.served.key_for), else an in-process Reranker. Both have
    `.score(query, passages) -> list[float]`, `.device` and `.last_ms_per_100`."""
    from services.index.served import parse_served

    key = (name_or_path, hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]) if api_key else name_or_path
    with _LOCK:
        if key not in _RERANKERS:
            served = parse_served(name_or_path)
            _RERANKERS[key] = ServedReranker(served, api_key) if served else Reranker(name_or_path)
        return _RERANKERS[key]


def forget_reranker(path: str) -> None:
    """Drop a loaded reranker of this name or path from the process's cache (a folder trained anew
    under an earlier name must be loaded again)."""
    with _LOCK:
        for key in [k for k in _RERANKERS if k == path or (isinstance(k, tuple) and k[0] == path)]:
            _RERANKERS.pop(key, None)


def use_rerank_server(lib, kb, base_url: str, model: str, api_key: str = "") -> dict:
    """Rerank this KB's searches through a /rerank server: one test request (ModelServerError with a
    Chinese reason when it fails, nothing saved), then a typed key saved for exactly that endpoint and
    the KB's retrieval settings switched to the served reranker with reranking on. Returns
    {"ms_per_100"} of the test."""
    from dataclasses import asdict, replace

    from services.config import served_name
    from services.index.kb_settings import retrieval_settings, save_settings
    from services.index.model_servers import save_server_key
    from services.index.served import parse_served

    lib.require_owner()
    if not base_url.strip() or not model.strip():
        raise errors.ModelLoadError("请填写重排模型服务的接口地址（base_url）和模型名。")
    name = served_name(base_url, model)
    reranker = ServedReranker(parse_served(name), api_key or lib.server_key(kb, name))
    reranker.score("测试", ["测试段落"] * 4)
    if api_key:
        save_server_key(lib, kb, base_url, api_key)
    save_settings(lib, kb, "retrieval", asdict(replace(retrieval_settings(lib, kb), rerank=True, reranker_model=name)))
    return {"ms_per_100": round(reranker.last_ms_per_100, 1)}
