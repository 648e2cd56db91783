"""OpenAI-compatible chat client (OpenAI, DeepSeek, Qwen/DashScope, Moonshot, Zhipu, vLLM, Ollama,
llama.cpp server...) through the official `openai` SDK.

Streaming by default. Failures that a second try can fix (429, 5xx, a connection dropped after it
was made) are retried with exponential backoff before the first token arrives. Failures it cannot
are not: a refused connection, a host name that does not resolve, no connection within
CONNECT_TIMEOUT_S (an address that drops packets) fail at once, and a read timeout is not waited out
twice. Such a connect failure is remembered for RECENT_FAILURE_S per endpoint, so the next call (the
answer after the pre-check, the next question) falls back at once instead of waiting again; "测试连接"
always tries afresh. An endpoint that answers with an HTTP error a retry does not fix (the key refused,
no such model, 405 / 400 for a wrong address, a 5xx after the retries) is remembered too, per endpoint,
model and key, with its time, until a request to it succeeds: calls still try it (it may have been
fixed), and the chat header says answers are extracts and why (unusable()). Given a `RefusalRecord`
(the data dir's, services.index.repositories.LLMRefusalRows) the refusal outlives the process, so after
a restart the header does not name a model that refused every request until it refuses once more;
changed settings (endpoint, model or key) are another identity, with nothing recorded against it.
Every failure surfaces as a typed services.errors.LLMError with a Chinese message
that says what happened. The API key is never put into messages, logs or files: error texts are
scrubbed of it.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from typing import Iterator, Protocol
from urllib.parse import urlsplit

from services import errors
from services.config import LLMSettings, redact_url

# the endpoint answered but was busy or failing: a later try can succeed
RETRYABLE = ("RateLimitError", "InternalServerError")
CONNECT_TIMEOUT_S = 3.0  # a TCP connection (and a TLS handshake) takes far less, even across the world
RECENT_FAILURE_S = 30.0  # how long a failed connect is remembered per endpoint
RETRY_BACKOFF_S = 0.5  # the first retry's wait; doubled each time, at most 8 s

log = logging.getLogger(__name__)
_recent_failures: dict[str, tuple[float, errors.LLMError]] = {}
# endpoint, model, key digest -> (the header's reason, when; time.time()); reason "" once a request
# succeeded in this process (which then overrides what a record kept from before)
_refusals: dict[tuple[str, str, str], tuple[str, float]] = {}
_recent_lock = threading.Lock()
# The endpoint answered but will not answer our requests: every answer falls back to an extract.
UNUSABLE = (errors.LLMAuthError, errors.LLMModelNotFound, errors.LLMRequestRejected, errors.LLMServerError)


def recent_failure(base_url: str) -> tuple[float, errors.LLMError] | None:
    """(when, error) of a connect failure to `base_url` in the last RECENT_FAILURE_S, else None."""
    with _recent_lock:
        found = _recent_failures.get(base_url or "")
        if found and time.monotonic() - found[0] > RECENT_FAILURE_S:
            del _recent_failures[base_url or ""]
            found = None
        return found


def _remember(base_url: str, error: errors.LLMError | None) -> None:
    with _recent_lock:
        if error is None:
            _recent_failures.pop(base_url or "", None)
        else:
            _recent_failures[base_url or ""] = (time.monotonic(), error)


class RefusalRecord(Protocol):
    """Where refusals are kept beyond this process, by identity (endpoint, model, key digest):
    services.index.repositories.LLMRefusalRows, the data dir's SQLite."""

    def get(self, identity: tuple[str, str, str]) -> tuple[str, float] | None: ...

    def record(self, identity: tuple[str, str, str], reason: str, at: float) -> None: ...

    def clear(self, identity: tuple[str, str, str]) -> None: ...


def _identity(settings: LLMSettings) -> tuple[str, str, str]:
    """Endpoint, model and a digest of the key (the key itself is never kept)."""
    key = hashlib.sha256(settings.api_key.encode()).hexdigest()[:16] if settings.api_key else ""
    return settings.base_url or "", settings.model or "", key


def _remember_refusal(settings: LLMSettings, reason: str, record: RefusalRecord | None) -> None:
    """Remember that the last request to `settings` was refused (`reason`) or answered (""), in this
    process and in `record`; a success that changes nothing writes nothing."""
    identity = _identity(settings)
    with _recent_lock:
        known = _refusals.get(identity)
        _refusals[identity] = (reason, time.time())
    if record is None or (not reason and known is not None and not known[0]):
        return
    try:
        if reason:
            record.record(identity, reason, time.time())
        else:
            record.clear(identity)
    except Exception as exc:  # a record that cannot be written (a full disk) never fails the answer
        log.warning("LLM refusal not recorded: %s", type(exc).__name__)


def _ago(seconds: float) -> str:
    """"5 分钟前", "3 小时前", "2 天前"."""
    for unit, size in (("天", 86400), ("小时", 3600), ("分钟", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}前"
    return "刚刚"


def _refusal_reason(error: errors.LLMError, status: int | None) -> str:
    """The chat header's short words for an UNUSABLE error."""
    code = f"，HTTP {status}" if status else ""
    if isinstance(error, errors.LLMAuthError):
        return "API Key 被拒绝" + code
    if isinstance(error, errors.LLMModelNotFound):
        return "找不到这个模型" + code
    if isinstance(error, errors.LLMServerError):
        return "接口出错" + code
    return "接口拒绝了请求" + code


def unusable(settings: LLMSettings, record: RefusalRecord | None = None) -> str:
    """Why answers from `settings`' endpoint fall back to extracts now, in a few Chinese words for the
    chat header's 「摘录式（大模型 m …）」 ("暂时连不上", "不可用：接口拒绝了请求，HTTP 405，请到设置页检查"),
    else "". A connect failure is remembered for RECENT_FAILURE_S; an HTTP refusal until a request with
    the same endpoint, model and key succeeds (测试连接, saving the settings, or the next question) —
    in this process, and before its first request to that endpoint, as `record` kept it (a refusal
    from an earlier run, said with its age: 「（3 小时前）」; the age is said from a minute on)."""
    if not settings.configured:
        return ""
    if recent_failure(settings.base_url) is not None:
        return "暂时连不上"
    identity = _identity(settings)
    with _recent_lock:
        known = _refusals.get(identity)
    if known is None and record is not None:
        try:
            known = record.get(identity)
        except Exception as exc:  # an unreadable record: say what this process knows (nothing)
            log.warning("LLM refusals not read: %s", type(exc).__name__)
    reason, at = known or ("", 0.0)
    if not reason:
        return ""
    age = time.time() - at
    return f"不可用：{reason}" + (f"（{_ago(age)}）" if age >= 60 else "") + "，请到设置页检查"


def _connect_failure(exc: BaseException) -> str | None:
    """"refused" / "dns" / "timeout" when `exc` (an openai error) failed to connect at all, else None
    (e.g. a connection that was made and then dropped, which a retry can fix)."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # httpx's classes, or httpx2's (newer openai releases): matched by name
        kind = type(e).__name__ if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore") else ""
        if kind == "ConnectTimeout":
            return "timeout"
        if isinstance(e, socket.gaierror):
            return "dns"
        if isinstance(e, ConnectionRefusedError):
            return "refused"
        if kind == "ConnectError":
            text = str(e).lower()
            if "refused" in text or "errno 111" in text:
                return "refused"
            if "name or service" in text or "nodename" in text or "errno -2" in text or "errno -3" in text \
                    or "getaddrinfo" in text or "temporary failure in name resolution" in text:
                return "dns"
            return "connect"
        e = e.__cause__ or e.__context__
    return None


class LLMClient:
    def __init__(self, settings: LLMSettings, refusals: RefusalRecord | None = None):
        """A client of `settings`' endpoint; `refusals`: where its HTTP refusals (and a success after
        one) are recorded beyond this process (see the module docstring)."""
        if not settings.configured:
            raise errors.LLMNotConfigured()
        from openai import OpenAI

        from services import netguard

        import httpx
        from openai import Timeout  # the SDK's own (httpx's, or httpx2's in newer releases)

        self.settings = settings
        self.refusals = refusals
        connect = min(CONNECT_TIMEOUT_S, settings.timeout)
        self.client = OpenAI(base_url=settings.base_url or None, api_key=settings.api_key or "not-needed",
                             timeout=Timeout(settings.timeout, connect=connect), max_retries=0,
                             http_client=netguard.http_client(settings.base_url,
                                                              httpx.Timeout(settings.timeout, connect=connect)))

    def stream(self, messages: list[dict], response_format: dict | None = None,
               max_tokens: int | None = None, fresh: bool = False) -> Iterator[str]:
        """Yield text deltas of one chat completion (retrying transient errors before the first).
        An endpoint that could not be connected to in the last RECENT_FAILURE_S fails at once with
        that reason, unless `fresh` (测试连接: the user may just have started the server)."""
        s = self.settings
        recent = None if fresh else recent_failure(s.base_url)
        if recent is not None:
            when, error = recent
            ago, left = time.monotonic() - when, RECENT_FAILURE_S - (time.monotonic() - when)
            when_zh = "刚刚" if ago < 1 else f"{ago:.0f} 秒前"
            raise type(error)(f"{error.message_zh}（{when_zh}已连接失败，这次不再等待；约 {max(1.0, left):.0f} 秒后会重新尝试）")
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
                _remember(s.base_url, None)
                _remember_refusal(s, "", self.refusals)
                return
            except Exception as exc:  # openai raises its own hierarchy; map it below
                name = type(exc).__name__
                if isinstance(exc.__cause__, errors.WendaoError):  # the guard refused where it led, or no DNS
                    if isinstance(exc.__cause__, errors.LLMUnreachable):
                        _remember(s.base_url, exc.__cause__)
                    raise exc.__cause__ from None
                failed_to_connect = _connect_failure(exc)
                if failed_to_connect:  # nothing listens there, no such host, or nothing answers: no retry
                    error = self._unreachable(failed_to_connect)
                    _remember(s.base_url, error)
                    raise error from None
                dropped = name == "APIConnectionError"  # connected, then the connection broke: may recover
                if (name in RETRYABLE or dropped) and not started and attempt < s.max_retries:
                    time.sleep(min(8.0, RETRY_BACKOFF_S * 2 ** attempt))
                    attempt += 1
                    continue
                error = self._translate(exc)
                if isinstance(error, UNUSABLE):
                    _remember_refusal(s, _refusal_reason(error, getattr(exc, "status_code", None)), self.refusals)
                raise error from None

    def complete(self, messages: list[dict], response_format: dict | None = None, max_tokens: int | None = None) -> str:
        return "".join(self.stream(messages, response_format, max_tokens))

    def test_connection(self) -> str:
        """A one-word round trip, tried afresh even after a recent failure; returns the reply
        (raises LLMError with a Chinese message)."""
        messages = [{"role": "user", "content": "请只回复：好"}]
        return "".join(self.stream(messages, max_tokens=8, fresh=True)).strip()

    def _unreachable(self, how: str) -> errors.LLMUnreachable:
        where = redact_url(self.settings.base_url) or "(默认 OpenAI)"
        host = urlsplit(self.settings.base_url or "").hostname or ""
        why = {"refused": "连接被拒绝，这个地址和端口上没有服务在运行。请检查端口，以及服务是否已启动。",
               "dns": f"找不到主机「{host}」（域名无法解析）。请检查地址的拼写和网络。",
               "timeout": f"{min(CONNECT_TIMEOUT_S, self.settings.timeout):.0f} 秒内没有建立连接（地址不可达，"
                          "或被防火墙拦截）。请检查地址、端口和网络。"}.get(how, "请检查地址和服务是否已启动。")
        return errors.LLMUnreachable(f"无法连接到大模型接口 {where}：{why}")

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
        if name == "APIConnectionError" and errors.malformed_endpoint_zh(self.settings.base_url):
            return errors.LLMUnreachable(errors.malformed_endpoint_zh(self.settings.base_url, "大模型接口"))
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
            return errors.LLMRequestRejected(errors.request_rejected_zh("大模型接口", status, "/chat/completions"))
        if status:
            return errors.LLMRequestRejected(f"大模型接口返回错误（HTTP {status}）。请检查接口地址和模型名。")
        log.warning("LLM call failed: %s", name)
        return errors.LLMError("调用大模型失败。请检查接口地址、模型名和网络。")
