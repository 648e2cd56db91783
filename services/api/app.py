"""The FastAPI application behind /api (see services.api for the routes and the rules)."""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator, Literal

from fastapi import Depends, FastAPI, File, Path as PathParam, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIMiddleware

from services import auth, errors
from services.access import LOCAL, Principal
from services.api import framework, pages
from services.documents.pageview import has_pages, public_pages

STATUS = [(errors.NotSignedIn, 401), (errors.SignInFailed, 401), (errors.SignInThrottled, 429),
          (errors.PermissionDenied, 403), (errors.KnowledgeBaseNotFound, 404), (errors.DocumentNotFound, 404),
          (errors.JobNotFound, 404), (errors.ConversationNotFound, 404), (errors.DataDirBusy, 409),
          (errors.FileTooLarge, 413), (errors.AmbiguousKnowledgeBase, 409),
          (errors.QueryTooLong, 413), (errors.TooManyUploads, 429)]


def rate_limit() -> str:
    """Requests per API key (or per address for cookie callers): WENDAO_API_RATE_LIMIT, default 120/minute."""
    return os.environ.get("WENDAO_API_RATE_LIMIT", "120/minute")


def _caller_key(request: Request) -> str:
    """The rate-limit bucket: the whole key as `principal` reads it (a digest), so the same key written
    with more spaces or another case of "Bearer" is the same bucket, and one key's bucket cannot be
    used up by anyone knowing only its first characters; else the caller's address."""
    key = _bearer(request)
    return "key:" + hashlib.sha256(key.encode()).hexdigest() if key is not None else "addr:" + _address(request)


def _bearer(request: Request) -> str | None:
    """The API key of an `Authorization: Bearer …` header (None without one)."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _workspace():
    from services.workspace import open_workspace

    return open_workspace()


def principal(request: Request) -> Principal:
    """Who is calling: an API key, else the session cookie (team mode), else the local user (single-user
    and explicit no-auth modes only)."""
    ws = _workspace()
    address = _address(request)
    key = _bearer(request)
    if key is not None:
        who = auth.principal_from_key(ws.lib.store, key, address)
        if who is None:
            raise errors.NotSignedIn("API 密钥无效或已被吊销。")
        return who
    if auth.team_mode():
        who = auth.principal_from_cookie(ws.lib.store, ws.lib.root, request.cookies.get(auth.COOKIE), address)
        if who is None:
            raise errors.NotSignedIn("请提供 API 密钥（Authorization: Bearer wd_…）或先登录。")
        return who
    return LOCAL if not address else Principal(**{**LOCAL.__dict__, "address": address})


def session(who: Principal = Depends(principal)):
    return _workspace().session(who)


# --- request bodies ------------------------------------------------------------------------------------
class Message(BaseModel):
    role: str
    content: str | list | None = ""


class ChatRequest(BaseModel):
    model: str = Field(description="知识库名称（与其他知识库重名时用 \"#编号\"）")
    messages: list[Message]
    stream: bool = False
    documents: list[str] | None = Field(None, description="只在这些文档中检索（文档 id 或文件名）")
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(None, description="bm25 | dense | hybrid")
    top_k: int | None = Field(None, ge=1, le=100)
    no_llm: bool = Field(False, description="不调用大模型，只给摘录式回答")


class RetrievalRequest(BaseModel):
    kb: str = Field(description="知识库名称（与其他知识库重名时用 \"#编号\"）")
    query: str
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(None, description="bm25 | dense | hybrid（默认用知识库的设置）")
    top_k: int | None = Field(None, ge=1, le=100)
    documents: list[str] | None = Field(None, description="只在这些文档中检索（文档 id 或文件名）")


def docs_assets() -> Path | None:
    """Swagger UI's script and style shipped by the PyPI package fastapi-offline (MIT; Swagger UI itself is
    Apache-2.0), so /api/docs works without the internet; None when it is not installed (then FastAPI's
    page, which loads them from a CDN)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    static = Path(fastapi_offline.__file__).resolve().parent / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() and (static / "swagger-ui.css").is_file() else None


def create_api() -> FastAPI:
    assets = docs_assets()
    api = FastAPI(title="问道 Wendao API", version="1", docs_url=None if assets else "/docs",
                  openapi_url="/openapi.json", redoc_url=None,
                  description="对自己的中文文档提问：OpenAI 兼容的对话接口、检索接口、文档与任务管理。")
    if assets:
        _local_docs(api, assets)
    limiter = Limiter(key_func=_caller_key, default_limits=[rate_limit()], headers_enabled=False)
    api.state.limiter = limiter

    @api.exception_handler(errors.WendaoError)
    async def wendao_error(_request, exc: errors.WendaoError):
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
        return JSONResponse({"error": {"message": exc.message_zh, "type": type(exc).__name__, "code": status}},
                            status_code=status)

    @api.exception_handler(RateLimitExceeded)
    def too_many(_request, exc):  # sync: SlowAPIMiddleware falls back to its English answer for an async one
        return JSONResponse({"error": {"message": f"请求过于频繁（限额 {exc.detail}），请稍后再试。",
                                       "type": "RateLimited", "code": 429}}, status_code=429)

    framework.install(api)  # FastAPI's own errors (422/404/405/400) in the shape above, OpenAPI auth schemes and tags

    api.add_middleware(SlowAPIMiddleware)  # the default limit on every route, per caller key (slowapi's pure-ASGI
    # SlowAPIASGIMiddleware was tried for speed: it cuts streamed answers off, tests/test_api_server.py)
    api.add_middleware(BodyLimitMiddleware)  # outermost of ours: before anything reads the body

    _v1_routes(api)
    pages.add_auth_routes(api, _workspace)
    return api


JSON_LIMIT = 16 * 1024 * 1024  # any request but an upload: a question, a conversation, a query


def body_limit(scope) -> int:
    """The most bytes a request body may have: an upload's file limit plus room for the multipart
    envelope, else JSON_LIMIT."""
    from services.config import max_file_bytes

    upload = scope.get("method") == "POST" and scope.get("path", "").rstrip("/").endswith("/documents")
    return max_file_bytes() + 1024 * 1024 if upload else JSON_LIMIT


class BodyLimitMiddleware:
    """Refuses a body over `body_limit` by its Content-Length, or as it arrives when it has none, with
    413 — before FastAPI reads it (it reads a whole body, JSON into memory and multipart to temporary
    files, before resolving who is calling, so without this anyone reaching the port could fill the
    server's memory or disk)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope)
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            return await _too_large(send, limit)
        state = {"received": 0, "started": False, "refused": False}

        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit and not state["started"]:
                    state["refused"] = state["started"] = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def watched(message):
            if state["refused"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:  # noqa: BLE001 - the app failing on the cut-off body after we answered
            if not state["refused"]:
                raise


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"error": {"message": f"请求体过大（上限 {limit // (1024 * 1024)} MB）。",
                                 "type": "FileTooLarge", "code": 413}}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _local_docs(api: FastAPI, assets: Path) -> None:
    """/docs (Swagger UI) from `assets` under /docs-assets: nothing loaded from another host."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    api.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    def swagger(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="问道 Wendao API",
                                   swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs-assets/favicon.png")


def _v1_routes(api: FastAPI) -> None:
    @api.get("/v1/kbs", summary="知识库列表（调用者能看到的）")
    def list_kbs(me=Depends(session)):
        return {"kbs": [k.to_json() for k in me.kbs()]}

    @api.post("/v1/retrieval", summary="检索：返回片段及各阶段名次与分数")
    def retrieval(body: RetrievalRequest, me=Depends(session)):
        kb = me.kb(body.kb)
        settings = kb.retrieval_settings(mode=body.mode, top_k=body.top_k)
        started = time.perf_counter()
        result = kb.search(body.query, settings, _doc_ids(kb, body.documents))
        return {"kb": kb.name, "query": body.query, "terms": result.terms,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "hits": public_pages([h.to_json() for h in result.hits]),
                "timings_ms": {k: round(v, 2) for k, v in result.timings_ms.items()}}

    @api.post("/v1/chat/completions", summary="OpenAI 兼容的对话：model 为知识库名称，回答带 [n] 引用")
    def chat(body: ChatRequest, me=Depends(session)):
        from dataclasses import replace

        kb = me.kb(body.model)
        question, history = _question_and_history(body.messages)
        llm = kb.llm_settings()
        if body.no_llm:
            llm = replace(llm, model="")
        stream = kb.ask(question, None, _doc_ids(kb, body.documents), kb.retrieval_settings(mode=body.mode, top_k=body.top_k),
                        llm, save=False, history=history)
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        if body.stream:
            return StreamingResponse(_sse(stream, completion_id, kb.name), media_type="text/event-stream")
        answer = stream.finish()
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": kb.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text + _closest(answer)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                **_extra(answer)}

    @api.get("/v1/kbs/{kb}/documents", summary="知识库的文档")
    def documents(kb: str, me=Depends(session)):
        return {"documents": [_document(d) for d in me.kb(kb).documents()]}

    @api.post("/v1/kbs/{kb}/documents", status_code=202, summary="上传文档（后台索引，返回任务）")
    async def upload(kb: str, file: UploadFile = File(..., description=framework.UPLOAD_HINT), me=Depends(session)):
        from services.config import max_file_bytes

        handle = me.kb(kb, "editor")
        handle.check_upload_slot()  # before reading up to max_file_bytes into memory
        data = await file.read(max_file_bytes() + 1)
        if len(data) > max_file_bytes():
            raise errors.FileTooLarge()
        job = handle.upload(file.filename or "upload.txt", data)
        return {"job": job, "status": "queued"}

    @api.delete("/v1/kbs/{kb}/documents/{doc_id}", summary="删除文档")
    def delete_document(kb: str, doc_id: str, me=Depends(session)):
        handle = me.kb(kb, "editor")
        handle.delete_document(_doc_ids(handle, [doc_id])[0])
        return {"deleted": doc_id}

    @api.get("/v1/jobs/{job_id}", summary="任务进度与结果")
    def job(job_id: int = PathParam(ge=1, le=2**62), me=Depends(session)):
        return me.job(job_id).to_json()


def _document(d) -> dict:
    return {"id": d.id, "filename": d.filename, "status": d.status, "enabled": d.enabled, "chunks": d.chunk_count,
            "pages": d.pages if has_pages(d.filename) else None, "size": d.size, "created_at": d.created_at, "vectors": d.dense_state}


def _doc_ids(kb, wanted: list[str] | None) -> list[str] | None:
    """Document ids from ids or file names (DocumentNotFound for one the KB does not hold)."""
    if not wanted:
        return None
    docs = kb.documents()
    by_name = {d.filename: d.id for d in reversed(docs)}  # the first document of a name, as before
    by_name.update({d.id: d.id for d in docs})  # an id wins over a file name that looks like one
    out = []
    for w in dict.fromkeys(wanted):  # one look-up each (a request may list millions: no scan of the KB per item)
        match = by_name.get(w)
        if match is None:
            raise errors.DocumentNotFound(f"知识库中没有文档「{str(w)[:200]}」。")
        out.append(match)
    return list(dict.fromkeys(out))


def _text(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return content or ""


def _question_and_history(messages: list[Message]):
    """The last user message is the question; earlier user/assistant pairs are the conversation."""
    from services.answers.answer import Conversation, Turn

    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise errors.WendaoError("messages 中没有用户的问题。")
    history = Conversation()
    pending = None
    for m in messages[: users[-1]]:
        if m.role == "user":
            pending = _text(m.content)
        elif m.role == "assistant" and pending is not None:
            history.turns.append(Turn(pending, pending, _text(m.content)))
            pending = None
    return _text(messages[users[-1]].content), history


def _closest(answer) -> str:
    """What follows a refusal's 「以下是最接近的段落，供参考。」: the passages, listed as the chat and the
    CLI list them (services.conversations.closest_passages); "" for any other answer."""
    from services.conversations import closest_passages

    listing = closest_passages(answer.to_json())
    return "\n\n" + listing if listing else ""


def _extra(answer) -> dict:
    data = public_pages(answer.to_json())  # page null for formats without pages, as in the CLI
    return {"citations": data["citations"],
            "wendao": {k: data.get(k) for k in ("mode", "query", "notice", "citation_precision", "sources")}}


def _sse(stream, completion_id: str, model: str) -> Iterator[str]:
    def chunk(delta: dict, finish=None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in stream:
            if piece:
                yield chunk({"content": piece})
    except errors.WendaoError as exc:
        yield "data: " + json.dumps({"error": {"message": exc.message_zh, "type": type(exc).__name__}},
                                    ensure_ascii=False) + "\n\n"
        return
    if closest := _closest(stream.answer):
        yield chunk({"content": closest})
    yield chunk({}, "stop", **_extra(stream.answer))
    yield "data: [DONE]\n\n"
