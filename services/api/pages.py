"""Sign-in, sign-out and first-admin setup: small server-rendered pages under /api/auth, because a
session cookie (HttpOnly, SameSite=Lax) can only be set by an HTTP response, not by a Streamlit page."""
from __future__ import annotations

import html

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services import auth, errors

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width,initial-scale=1"><title>{title} · 问道</title><style>
body{{font-family:system-ui,"Noto Sans CJK SC",sans-serif;background:#f6f7f9;display:flex;justify-content:center;
padding-top:12vh;margin:0}} main{{background:#fff;padding:2rem 2.5rem;border-radius:12px;
box-shadow:0 2px 12px #0001;width:min(360px,90vw)}} h1{{font-size:1.4rem;margin:0 0 1.2rem}}
label{{display:block;margin:.8rem 0 .3rem;font-size:.9rem}} input{{width:100%;box-sizing:border-box;padding:.55rem;
border:1px solid #ccd;border-radius:6px;font-size:1rem}} button{{margin-top:1.3rem;width:100%;padding:.6rem;border:0;
border-radius:6px;background:#2f5fd0;color:#fff;font-size:1rem;cursor:pointer}} .error{{color:#b3261e;margin:.6rem 0}}
.note{{color:#667;font-size:.85rem;margin-top:1rem}}</style></head><body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status)


def _form(action: str, error: str = "", fields: str = "", button: str = "登录", extra: str = "") -> str:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return (f'{message}<form method="post" action="{html.escape(action)}">{fields}'
            f'<label for="name">用户名</label><input id="name" name="name" autocomplete="username" required>'
            f'<label for="password">密码</label><input id="password" name="password" type="password" '
            f'autocomplete="current-password" required><button type="submit">{button}</button></form>{extra}')


def _with_cookie(response, request: Request, value: str | None):
    secure = request.url.scheme == "https"
    if value is None:
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
    else:
        response.set_cookie(auth.COOKIE, value, max_age=auth.SESSION_DAYS * 86400, path="/", httponly=True,
                            samesite="lax", secure=secure)
    return response


def add_auth_routes(api: FastAPI, workspace) -> None:
    @api.get("/auth/login", include_in_schema=False)
    def login_page():
        if auth.mode() != "local":
            return RedirectResponse("/", status_code=303)
        return _page("登录问道", _form("/api/auth/login"))

    @api.post("/auth/login", include_in_schema=False)
    def login(request: Request, name: str = Form(""), password: str = Form("")):
        if auth.mode() != "local":
            return RedirectResponse("/", status_code=303)
        lib = workspace().lib
        try:
            token = auth.sign_in(lib.store, lib.root, name, password, request.client.host if request.client else "")
        except errors.WendaoError as exc:
            return _page("登录问道", _form("/api/auth/login", exc.message_zh), 401)
        return _with_cookie(RedirectResponse("/", status_code=303), request, token)

    @api.get("/auth/logout", include_in_schema=False)
    @api.post("/auth/logout", include_in_schema=False)
    def logout(request: Request):
        lib = workspace().lib
        auth.sign_out(lib.store, lib.root, request.cookies.get(auth.COOKIE, ""), request.client.host if request.client else "")
        target = "/api/auth/login" if auth.mode() == "local" else "/"
        return _with_cookie(RedirectResponse(target, status_code=303), request, None)

    @api.get("/auth/setup", include_in_schema=False)
    def setup_page(token: str = ""):
        hidden = f'<input type="hidden" name="token" value="{html.escape(token)}">'
        return _page("创建第一个管理员", _form("/api/auth/setup", fields=hidden, button="创建并登录",
                                               extra='<p class="note">令牌只能使用一次，见服务器启动日志。</p>'))

    @api.post("/auth/setup", include_in_schema=False)
    def setup(request: Request, token: str = Form(""), name: str = Form(""), password: str = Form("")):
        lib = workspace().lib
        address = request.client.host if request.client else ""
        try:
            auth.create_first_admin(lib.store, token, name, password, address)
            cookie = auth.sign_in(lib.store, lib.root, name, password, address)
        except errors.WendaoError as exc:
            hidden = f'<input type="hidden" name="token" value="{html.escape(token)}">'
            return _page("创建第一个管理员", _form("/api/auth/setup", exc.message_zh, hidden, "创建并登录"), 400)
        return _with_cookie(RedirectResponse("/", status_code=303), request, cookie)
