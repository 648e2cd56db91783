"""OpenAI-compatible chat client (OpenAI, DeepSeek, Qwen/DashScope, Moonshot, Zhipu, vLLM, Ollama,
llama.cpp server...) through the official `openai` SDK.

Streaming by default. Transient failures (429, 5xx, timeouts, dropped connections) are retried
with exponential backoff before the first token arrives; every failure surfaces as a typed
services.errors.LLMError with a Chinese message. The API key is never put into messages, logs or
files: error texts are scrubbed of it.
"""
from __future__ import annotations

import time
from typing import Iterator
from urllib.parse import urlsplit

from services import errors
from services.config import LLMSettings, redact_url

RETRYABLE = ("RateLimitError", "InternalServerError", "APITimeoutError", "APIConnectionError")


class LLMClient:
    def __init__(self, settings: LLMSettings):
        if not settings.configured:
            raise errors.LLMNotConfigured()
        from openai import OpenAI

        from services import netguard

        self.settings = settings
        self.client = OpenAI(base_url=settings.base_url or None, api_key=settings.api_key or "not-needed",
                             timeout=settings.timeout, max_retries=0,
                             http_client=netguard.http_client(settings.base_url, settings.timeout))

    def stream(self, messages: list[dict], response_format: dict | None = None,
               max_tokens: int | None = None) -> Iterator[str]:
        """Yield text deltas of one chat completion (retrying transient errors before the first)."""
        s = self.settings
        kwargs = dict(model=s.model, messages=messages, temperature=s.temperature,
                      max_tokens=max_tokens or s.max_tokens, stream=True)
        if response_format:
            kwargs["response_format"] = response_format
        attempt = 0
        while True:
            try:
                started = False
                for chunk in self.client.chat.completions.create(**kwargs):
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta.content or ""
                    if delta:
                        started = True
                        yield delta
                return
            except Exception as exc:  # openai raises its own hierarchy; map it below
                name = type(exc).__name__
                if isinstance(exc.__cause__, errors.UnsafeEndpoint):  # the guard refused where it led
                    raise exc.__cause__ from None
                if name in RETRYABLE and not started and attempt < s.max_retries:
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
                    attempt += 1
                    continue
                raise self._translate(exc) from None

    def complete(self, messages: list[dict], response_format: dict | None = None, max_tokens: int | None = None) -> str:
        return "".join(self.stream(messages, response_format, max_tokens))

    def test_connection(self) -> str:
        """A one-word round trip; returns the reply (raises LLMError with a Chinese message)."""
        return self.complete([{"role": "user", "content": "请只回复：好"}], max_tokens=8).strip()

    def _scrub(self, text: str) -> str:
        """Error text without the key or the endpoint's credentials (user-info password, key-like
        query values): it is shown in the browser."""
        key, url = self.settings.api_key, self.settings.base_url
        if url and redact_url(url) != url:
            text = text.replace(url, redact_url(url))
            secret = urlsplit(url).password
            text = text.replace(secret, "***") if secret else text
        return text.replace(key, "***") if key else text

    def _translate(self, exc: Exception) -> errors.LLMError:
        name = type(exc).__name__
        detail = self._scrub(str(exc))[:300]
        status = getattr(exc, "status_code", None)
        if name in ("AuthenticationError", "PermissionDeniedError") or status in (401, 403):
            return errors.LLMAuthError()
        if name == "NotFoundError" or status == 404:
            return errors.LLMModelNotFound(f"大模型接口找不到模型「{self.settings.model}」（404），请检查模型名称和接口地址。")
        if name == "RateLimitError" or status == 429:
            return errors.LLMRateLimited()
        if name == "APITimeoutError":
            return errors.LLMTimeout()
        if name == "APIConnectionError":
            return errors.LLMUnreachable(f"无法连接到大模型接口 {redact_url(self.settings.base_url) or '(默认 OpenAI)'}，请检查地址和服务是否已启动。")
        if name == "InternalServerError" or (status and status >= 500):
            return errors.LLMServerError()
        lowered = detail.lower()
        if any(k in lowered for k in ("context length", "context_length", "too long", "maximum context", "too many tokens")):
            return errors.LLMContextTooLong()
        if name == "BadRequestError" and "response_format" in lowered:
            return errors.LLMError("接口不支持结构化输出（response_format）。")
        if status in (405, 400, 415, 422) or name in ("BadRequestError", "UnprocessableEntityError"):
            return errors.LLMError(
                f"大模型接口拒绝了请求（HTTP {status or '400'}）。请检查：接口地址是否是 OpenAI 兼容地址"
                "（通常以 /v1 结尾，例如 http://127.0.0.1:8080/v1）、模型名是否正确、该服务是否支持 /chat/completions。")
        if status:
            return errors.LLMError(f"大模型接口返回错误（HTTP {status}）。请检查接口地址和模型名。")
        return errors.LLMError(f"调用大模型失败（{name}）。请检查接口地址、模型名和网络。")
