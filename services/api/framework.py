"""What FastAPI itself answers and describes, in the API's documented shape and in Chinese.

Our own errors (services.errors) are turned into `{"error": {"message", "type", "code"}}` in app.py.
The framework answers some requests before any route runs: a body that fails validation (a missing
field, a wrong type, `GET /v1/jobs/None`), malformed JSON, an unknown route, a method a route does
not take, a form it cannot parse. Those came back as English `{"detail": [...]}`; here they get the
same shape, keep their HTTP status (422, 404, 405, 400) and name the field in the message, so a
programmer can fix the call; `param` carries the first field's name as OpenAI's errors do.

The OpenAPI document (/api/openapi.json, shown at /api/docs) declares how callers authenticate —
an API key as a Bearer token, or the browser's session cookie in team mode — so Swagger UI has its
Authorize button, and groups the routes under Chinese tags.
"""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services import auth

WHERE = {"body": "请求体字段", "path": "路径参数", "query": "查询参数", "header": "请求头", "cookie": "Cookie"}
UPLOAD_FIELD = "file"
UPLOAD_HINT = ("上传的文件要放在 multipart/form-data 的 file 字段中（例如 curl -F file=@合同.pdf），字段名是 file，"
               "不是 files，一次一个文件")


def error_body(message: str, kind: str, status: int, param: str | None = None) -> dict:
    """The API's one error shape (README: {"error": {"message": 中文说明, "type", "code"}})."""
    error = {"message": message, "type": kind, "code": status}
    if param is not None:
        error["param"] = param
    return {"error": error}


def field_name(loc) -> str:
    """`messages[0].role` from pydantic's location ("body", "messages", 0, "role")."""
    out = ""
    for part in list(loc)[1:]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _got(value) -> str:
    if value is None or isinstance(value, (dict, list)) and not value:
        return ""
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return f"（收到「{shown[:40]}{'…' if len(shown) > 40 else ''}」）"


def problem(error: dict) -> str:
    """What is wrong with one field, in Chinese (pydantic's error type, its limits, the value sent)."""
    kind, ctx, got = error.get("type", ""), error.get("ctx") or {}, error.get("input")
    simple = {
        "missing": "缺少（必填）",
        "int_parsing": "应为整数", "int_type": "应为整数", "int_from_float": "应为整数",
        "float_parsing": "应为数字", "float_type": "应为数字",
        "bool_parsing": "应为 true 或 false", "bool_type": "应为 true 或 false",
        "string_type": "应为字符串", "list_type": "应为数组（列表）",
        "dict_type": "应为 JSON 对象", "model_type": "应为 JSON 对象", "model_attributes_type": "应为 JSON 对象",
        "string_unicode": "应为 UTF-8 文本",
    }
    limits = {
        "greater_than_equal": ("不能小于 {}", "ge"), "greater_than": ("应大于 {}", "gt"),
        "less_than_equal": ("不能大于 {}", "le"), "less_than": ("应小于 {}", "lt"),
        "string_too_short": ("至少 {} 个字符", "min_length"), "string_too_long": ("最多 {} 个字符", "max_length"),
        "too_short": ("至少 {} 项", "min_length"), "too_long": ("最多 {} 项", "max_length"),
        "literal_error": ("只能是 {}", "expected"), "enum": ("只能是 {}", "expected"),
    }
    if kind == "missing":
        return simple[kind]
    if kind in simple:
        return simple[kind] + _got(got)
    if kind in limits:
        text, key = limits[kind]
        return text.format(ctx.get(key, "")) + _got(got)
    return f"不符合要求（{kind}）" + _got(got)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The Chinese message for a validation failure and the first field's name."""
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e["loc"][1] for e in errors if e.get("type") == "json_invalid" and len(e.get("loc", ())) > 1)
        return (f"请求体不是有效的 JSON（第 {where} 个字符附近出错）。请检查引号和逗号，并带上请求头 "
                "Content-Type: application/json。"), None
    items, first = [], None
    for e in errors[:5]:
        loc = tuple(e.get("loc", ()))
        name = field_name(loc)
        first = first or name or None
        if loc == ("body", UPLOAD_FIELD) and e.get("type") == "missing":
            sent = [k for k in _form_keys(exc.body) if k != UPLOAD_FIELD]
            items.append("缺少上传的文件：" + UPLOAD_HINT + (f"（收到的字段：{'、'.join(sent)}）" if sent else ""))
        elif loc == ("body", UPLOAD_FIELD):  # `-F file=合同.pdf`: text, not a file
            items.append("请求体字段 file：应为上传的文件，而不是文本（curl -F file=@合同.pdf，文件名前要有 @）")
        elif loc == ("body",):  # no body, or not a JSON object (a form sent to a JSON route)
            items.append(("缺少请求体" if e.get("type") == "missing" else "请求体应为 JSON 对象")
                         + "（Content-Type: application/json）")
        else:
            items.append(f"{WHERE.get(loc[0], '参数') if loc else '参数'} {name}：{problem(e)}")
    more = f"（另有 {len(errors) - 5} 处）" if len(errors) > 5 else ""
    return "请求参数不正确：" + "；".join(items) + more + "。", first


def _form_keys(body) -> list[str]:
    try:
        return list(dict.fromkeys(body.keys())) if hasattr(body, "keys") and hasattr(body, "getlist") else []
    except Exception:  # noqa: BLE001 - only a hint in a message
        return []


HTTP_KINDS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}


def http_message(request: Request, exc: StarletteHTTPException) -> str:
    path = request.url.path[:200]
    if exc.status_code == 404:
        return f"没有这个接口或资源：{request.method} {path}（全部接口见 /api/docs）。"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or ""
        return f"接口 {path} 不支持 {request.method} 方法" + (f"（支持：{allowed}）" if allowed else "") + "。"
    if exc.status_code == 413:
        return "请求中的表单字段过大。"
    if exc.status_code == 400:
        return "请求体无法解析（表单或上传的格式不正确）。" + UPLOAD_HINT + "。"
    return f"请求失败（HTTP {exc.status_code}）。"


def install_error_handlers(api: FastAPI) -> None:
    """FastAPI's own errors in the API's shape: validation (422), unknown routes (404), methods (405),
    unparsable JSON bodies and forms (400), and an unexpected failure (500, still logged by the server)."""

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        message, param = validation_message(exc)
        # a body that is not JSON at all cannot be parsed (400, as the README's table says); a parsed one
        # with a wrong or missing field is a validation failure (422)
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return JSONResponse(error_body(message, "InvalidRequest", status, param), status_code=status)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code < 400 or exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        kind = HTTP_KINDS.get(exc.status_code, "HTTPError")
        return JSONResponse(error_body(http_message(request, exc), kind, exc.status_code),
                            status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(Exception)
    async def unexpected(_request: Request, _exc: Exception):
        return JSONResponse(error_body("服务器内部错误，请求没有完成。详情见服务器日志。", "InternalError", 500),
                            status_code=500)


# --- OpenAPI: how to authenticate, and the routes grouped ------------------------------------------
SECURITY_SCHEMES = {
    "APIKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "wd_…",
        "description": "API 密钥（请求头 Authorization: Bearer wd_…）：用 `wendao key add --kb 资料 --scope read` "
                       "或「文档库 → 共享与 API 密钥」创建，只限一个知识库；read 可提问、检索，write 还可上传、删除文档。",
    },
    "SessionCookie": {
        "type": "apiKey", "in": "cookie", "name": auth.COOKIE,
        "description": "团队模式下网页登录（/api/auth/login）后的会话 Cookie，权限与登录用户相同；"
                       "在已登录的浏览器里打开 /api/docs 时自动带上，不必在这里填写。",
    },
}
# Either scheme; {} = none: single-user mode serves the local user on loopback without sign-in.
SECURITY = [{"APIKey": []}, {"SessionCookie": []}, {}]
TAGS = [
    {"name": "问答", "description": "OpenAI 兼容的对话接口：model 为知识库名称，回答带 [n] 引用，citations 给出原文位置（doc、page、start、end、quote）。"},
    {"name": "检索", "description": "只检索、不回答：返回片段及关键词、向量、融合、重排各阶段的名次与分数。"},
    {"name": "知识库与文档", "description": "列出知识库；列出、上传（multipart/form-data 的 file 字段，返回后台任务）、删除文档。"},
    {"name": "任务", "description": "上传等后台任务的进度与结果。"},
]
ROUTE_TAGS = [("/v1/chat/", "问答"), ("/v1/retrieval", "检索"), ("/v1/kbs", "知识库与文档"), ("/v1/jobs/", "任务")]


def describe_openapi(api: FastAPI) -> None:
    """Add the security schemes, the requirement on every route and the Chinese tags to the generated
    OpenAPI document (after generation, so the routes' own declarations stay as they are)."""
    generate = api.openapi

    def openapi() -> dict:
        if api.openapi_schema:
            return api.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        schema["tags"] = TAGS
        for path, operations in schema.get("paths", {}).items():
            tag = next((t for prefix, t in ROUTE_TAGS if path.startswith(prefix)), None)
            for operation in operations.values():
                if tag and not operation.get("tags"):
                    operation["tags"] = [tag]
                operation.setdefault("security", SECURITY)
        api.openapi_schema = schema
        return schema

    api.openapi = openapi


def install(api: FastAPI) -> None:
    install_error_handlers(api)
    describe_openapi(api)
