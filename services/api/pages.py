"""Sign-in, sign-out and first-admin setup: small server-rendered pages under /api/auth, because a
session cookie (HttpOnly, SameSite=Lax) can only be set by an HTTP response, not by a Streamlit page."""
from __future__ import annotations

import html

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services import auth, errors

# The app's theme (.streamlit/config.toml: primaryColor #b5472a on a light base; the sidebar's #f8f8f7),
# so signing in looks like the app it opens.
PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width,initial-scale=1"><title>{title} · 问道</title><style>
body{{font-family:"Source Sans Pro","Source Sans 3",system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;
background:#f8f8f7;color:#31333f;display:flex;justify-content:center;padding-top:12vh;margin:0}}
main{{background:#fff;padding:2rem 2.5rem;border-radius:.75rem;border:1px solid #e6e4df;width:min(360px,90vw)}}
.brand{{color:#b5472a;font-weight:600;font-size:.95rem;margin:0 0 .4rem}} h1{{font-size:1.4rem;margin:0 0 1.2rem}}
label{{display:block;margin:.8rem 0 .3rem;font-size:.9rem}} input{{width:100%;box-sizing:border-box;padding:.55rem;
border:1px solid #d5d3ce;border-radius:.5rem;font-size:1rem;background:#f8f8f7}}
input:focus{{outline:none;border-color:#b5472a;box-shadow:0 0 0 2px #b5472a33}}
button{{margin-top:1.3rem;width:100%;padding:.6rem;border:0;border-radius:.5rem;background:#b5472a;color:#fff;
font-size:1rem;cursor:pointer}} button:hover{{background:#9c3b22}} a{{color:#b5472a}}
.error{{color:#b3261e;margin:.6rem 0}} .note{{color:#6b6a66;font-size:.85rem;margin-top:1rem;line-height:1.6}}
code{{background:#f3f1ec;padding:0 .25rem;border-radius:.25rem;white-space:nowrap}}</style></head><body><main>
<p class="brand">问道 · 文档问答</p><h1>{title}</h1>{body}</main></body></html>"""
NO_USERS = ('<p class="note" role="note">还没有任何用户，需要先创建第一个管理员：打开服务器启动日志里打印的一次性设置链接'
            '（<code>/api/auth/setup?token=…</code>），或在服务器上运行 <code>wendao user add --admin 名字</code>。</p>')
SETUP_USED = ('<p class="error" role="alert">这个设置链接已经用过：第一个管理员已经创建，链接随之失效。</p>'
              '<p class="note">请<a href="/api/auth/login">直接登录</a>；需要更多账号时，请管理员在「管理」页添加。</p>')


def _page(title: str, body: str, status: int = 200, headers: dict | None = None) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status, headers=headers)


def _form(action: str, error: str = "", fields: str = "", button: str = "登录", extra: str = "", name: str = "") -> str:
    """The name and password form; after a refusal the name is kept (and the password field focused)."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    kept = f' value="{html.escape(name)}"' if name else " autofocus"
    password = "current-password" if action.endswith("/login") else "new-password"  # setup: browsers offer a new one
    return (f'{message}<form method="post" action="{html.escape(action)}">{fields}'
            f'<label for="name">用户名</label><input id="name" name="name" autocomplete="username" required{kept}>'
            f'<label for="password">密码</label><input id="password" name="password" type="password" '
            f'autocomplete="{password}" required{" autofocus" if name else ""}>'
            f'<button type="submit">{button}</button></form>{extra}')


def retry_after_s(exc: errors.WendaoError) -> int:
    """Seconds until a throttled sign-in may be tried again (the Retry-After header): the minutes the
    message names, else the whole window."""
    import re

    minutes = re.search(r"(\d+)\s*分钟", exc.message_zh)
    return int(minutes[1]) * 60 if minutes else int(auth.FAILURE_WINDOW_S)


def _with_cookie(response, request: Request, value: str | None):
    secure = request.url.scheme == "https"
    if value is None:
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
    else:
        response.set_cookie(auth.COOKIE, value, max_age=auth.SESSION_DAYS * 86400, path="/", httponly=True,
                            samesite="lax", secure=secure)
    return response


def add_auth_routes(api: FastAPI, workspace) -> None:
    def no_users() -> str:
        return "" if workspace().lib.store.users.count() else NO_USERS

    @api.get("/auth/login", include_in_schema=False)
    def login_page():
        if auth.mode() != "local":
            return RedirectResponse("/", status_code=303)
        return _page("登录", _form("/api/auth/login", extra=no_users()))

    @api.post("/auth/login", include_in_schema=False)
    def login(request: Request, name: str = Form(""), password: str = Form("")):
        if auth.mode() != "local":
            return RedirectResponse("/", status_code=303)
        lib = workspace().lib
        try:
            token = auth.sign_in(lib.store, lib.root, name, password, request.client.host if request.client else "")
        except errors.SignInThrottled as exc:  # too many failures: 429 with when to try again
            return _page("登录", _form("/api/auth/login", exc.message_zh, name=name[:200]), 429,
                         {"Retry-After": str(retry_after_s(exc))})
        except errors.WendaoError as exc:
            return _page("登录", _form("/api/auth/login", exc.message_zh, name=name[:200], extra=no_users()), 401)
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
        if workspace().lib.store.users.count():  # the token made the first admin (or one was added): it is spent
            return _page("创建第一个管理员", SETUP_USED, 410)
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
            if lib.store.users.count():
                return _page("创建第一个管理员", SETUP_USED, 410)
            return _page("创建第一个管理员", _form("/api/auth/setup", exc.message_zh, hidden, "创建并登录", name=name[:200]), 400)
        return _with_cookie(RedirectResponse("/", status_code=303), request, cookie)
