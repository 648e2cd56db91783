"""Serving the app: `wendao serve` (the bind rule, then Streamlit's server on components/server.py,
where the pages and the HTTP API share one process) and the ASGI middleware every response passes:
the Host check (DNS rebinding) and the security headers."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from services import auth, errors

log = logging.getLogger("wendao.serving")
ROOT = Path(__file__).resolve().parent.parent
SECURITY_HEADERS = [
    # pages may be framed only by themselves (clickjacking); no plugins; links do not leak the URL
    (b"content-security-policy", b"frame-ancestors 'self'; object-src 'none'; base-uri 'self'"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def serve(address: str = "127.0.0.1", port: int = 8501) -> int:
    """Check the bind rule, then become the app's server (pages + API): this process is replaced by
    Streamlit's (same pid), so stopping `wendao serve` — a signal, a service manager — stops the
    server itself rather than leaving a child listening on the port."""
    auth.check_bind(address)
    trusted_proxies(strict=True)  # a typo in WENDAO_TRUSTED_PROXIES refuses to start, in Chinese
    warn_open_data_dir()
    # uvicorn would take X-Forwarded-For from any loopback peer as the client's address (FORWARDED_ALLOW_IPS
    # defaults to 127.0.0.1): off, so GuardMiddleware alone reads it, from WENDAO_TRUSTED_PROXIES only
    env = {**os.environ, "WENDAO_SERVE_ADDRESS": address, "FORWARDED_ALLOW_IPS": ""}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "components" / "server.py"),
               "--server.port", str(port), "--server.address", address, "--server.headless", "true"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(ROOT)
    os.execve(sys.executable, command, env)
    return 0  # not reached


def warn_open_data_dir() -> None:
    """In team mode, say so when other accounts on this machine can read the data dir (made before
    new data dirs were created 0700): the app's roles do not stop someone reading the files."""
    from services.config import data_dir

    if auth.team_mode():
        root = data_dir()
        if root.stat().st_mode & 0o077:
            print(f"[问道] 注意：数据目录 {root} 对本机其他账号可读（权限 {oct(root.stat().st_mode & 0o777)}），"
                  f"他们可以绕过登录和权限直接读取所有知识库与对话。建议执行 chmod 700 {root}。", file=sys.stderr, flush=True)


def allowed_hosts(address: str) -> set[str]:
    """Host header values the server answers to: loopback names, the bound address, this machine's
    name and addresses when bound to all interfaces, and WENDAO_ALLOWED_HOSTS (comma-separated)."""
    hosts = {"localhost", "127.0.0.1", "::1"}
    if address and address not in ("0.0.0.0", "::"):
        hosts.add(address.strip("[]"))
    else:
        name = socket.gethostname()
        hosts.update({name, socket.getfqdn()})
        try:
            hosts.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except socket.gaierror:
            pass
    hosts.update(declared_hosts())
    return {h.lower() for h in hosts}


def _host_of(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8501
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def declared_hosts() -> set[str]:
    """Host names the operator declared in WENDAO_ALLOWED_HOSTS (e.g. a reverse proxy's public name)."""
    return {h.strip().lower() for h in os.environ.get("WENDAO_ALLOWED_HOSTS", "").split(",") if h.strip()}


def trusted_proxies(strict: bool = False) -> list:
    """The reverse proxies whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed
    (WENDAO_TRUSTED_PROXIES: addresses or networks, comma-separated; default none). An entry that is
    neither is skipped with a warning, or (strict, at `wendao serve`) refuses to start."""
    nets = []
    for item in os.environ.get("WENDAO_TRUSTED_PROXIES", "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            if strict:
                raise errors.WendaoError(f"WENDAO_TRUSTED_PROXIES 中的「{item[:100]}」不是 IP 地址或网段"
                                         "（例如 127.0.0.1、::1、10.0.0.0/8，逗号分隔）。") from None
            log.warning("WENDAO_TRUSTED_PROXIES: %r is not an address or network, ignored", item[:100])
    return nets


def _ip(text: str):
    """The IP address in a forwarded-for entry ("1.2.3.4", "1.2.3.4:5678", "[2001:db8::1]:80",
    "2001:db8::1"), or None (a name, "unknown", garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 on a dual-stack socket


def client_address(peer: str, headers: list[tuple[bytes, bytes]], proxies: list) -> tuple[str, str | None]:
    """Who a request comes from, and the scheme the client used (None: as connected). Forwarded headers
    count only when the connecting peer is a trusted proxy: then the client is the right-most address
    of X-Forwarded-For that is not itself a trusted proxy (every entry left of it was written by the
    client and may be anything), else X-Real-IP. Untrusted peers, loopback included, are the client:
    anyone who can reach the port, or a proxy that passes the header on, would otherwise choose the
    address that sign-in throttling, rate limits and the audit log go by."""
    def trusted(address) -> bool:
        return address is not None and any(address in net for net in proxies)

    if not proxies or not trusted(_ip(peer or "")):
        return peer, None
    forwarded, real, proto = [], None, None
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded += value.decode("latin-1").split(",")
        elif name == b"x-real-ip":
            real = value.decode("latin-1")
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()  # the nearest proxy's
    proto = proto if proto in ("http", "https") else None
    hop = peer
    for entry in reversed([e for e in forwarded if e.strip()]):
        address = _ip(entry)
        if address is None:  # not an address: written by the client, not by a proxy
            return hop, proto
        hop = str(address)
        if not trusted(address):
            return hop, proto
    if not forwarded and real is not None and _ip(real) is not None:
        return str(_ip(real)), proto
    return hop, proto  # every hop a trusted proxy: the left-most of them


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
STATE_CHANGING_GETS = ("/api/auth/logout",)  # the user menu's sign-out link: another site must not sign one out


def cross_origin(headers: dict[bytes, str], host: str) -> bool:
    """Whether a browser says the request comes from a page of another origin: an Origin header that
    is not this server's own (scheme-less comparison of host and port with the Host header; "null"
    from sandboxed frames and privacy redirects counts as foreign) or Sec-Fetch-Site naming another
    site. A name declared in WENDAO_ALLOWED_HOSTS counts as ours (a proxy may rewrite Host).
    Clients that are not browsers send neither header."""
    site = headers.get(b"sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return True
    origin = headers.get(b"origin")
    if origin is None:
        return False
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return True
    if parts.netloc.lower() == host.strip().lower():
        return False
    return (parts.hostname or "") not in declared_hosts()


def _refusal(status: int, message: str, kind: str) -> tuple[dict, dict]:
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}, ensure_ascii=False).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json; charset=utf-8"), *SECURITY_HEADERS]},
            {"type": "http.response.body", "body": body})


CROSS_SITE_ZH = ("拒绝跨站请求：这个请求来自其他网站的页面（Origin 与本服务器不同），可能是跨站请求伪造。"
                 "如果服务器经由反向代理以另一个名字访问，请把该名字加入 WENDAO_ALLOWED_HOSTS。")


class GuardMiddleware:
    """Refuses requests and WebSockets whose Host is not one of ours (a page on another site cannot
    drive the app through DNS rebinding), state-changing requests and WebSockets that a browser says
    come from a page of another origin (cross-site request forgery: with no sign-in in single-user
    mode any web page could otherwise upload into the user's KBs; in team mode, sign in a victim as
    the attacker), and adds the security headers to every HTTP response. The client's address
    (`scope["client"]`, what the API, the pages and the audit log read) is the connecting peer, or
    behind a proxy listed in WENDAO_TRUSTED_PROXIES what that proxy forwarded (`client_address`)."""

    def __init__(self, app, address_of=lambda: os.environ.get("WENDAO_SERVE_ADDRESS", "127.0.0.1")):
        self.app = app
        self.address_of = address_of
        self._hosts: set[str] | None = None
        self.proxies = trusted_proxies()

    def hosts(self) -> set[str]:
        if self._hosts is None:
            self._hosts = allowed_hosts(self.address_of())
        return self._hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        peer, port = (scope.get("client") or ("", 0))[:2]
        client, proto = client_address(peer, scope.get("headers", []), self.proxies)
        if client != peer or proto:
            scope = {**scope, "client": (client, port)}
            if proto:
                scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
        if _host_of(host) not in self.hosts():
            log.warning("refused a %s request for host %r", scope["type"], host[:100])
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = ("主机名不被允许（Host 头检查，防止 DNS 重绑定攻击）。如果这是服务器的正确地址，"
                    "请在 WENDAO_ALLOWED_HOSTS 中加入它。").encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": body})
            return

        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", [])}
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET").upper() not in SAFE_METHODS \
            or scope.get("path", "").rstrip("/") in STATE_CHANGING_GETS
        if unsafe and cross_origin(headers, host):
            log.warning("refused a cross-origin %s %s from %r", scope.get("method", "websocket"),
                        scope.get("path", ""), headers.get(b"origin", "")[:100])
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            for message in _refusal(403, CROSS_SITE_ZH, "CrossSiteRequest"):
                await send(message)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in SECURITY_HEADERS if k not in names]]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


PAGE_REWRITES = ((b'<html lang="en">', b'<html lang="zh-CN">'),
                 (b"<title>Streamlit</title>", "<title>问道 · 文档问答</title>".encode()))
ASSET_PREFIXES = ("/static/", "/_stcore/", "/api/", "/media/", "/component/", "/favicon")


class PageLanguageMiddleware:
    """Streamlit's page (index.html) says `<html lang="en">` and "Streamlit" in its title, so Chrome
    offers to translate a Chinese app and the tab reads "Streamlit" until the script runs: the page is
    sent as zh-CN with the app's title. Only HTML page requests are touched (uncompressed: their
    Accept-Encoding is dropped, the page is small); assets, the API and the WebSocket pass as they are."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" \
                or scope.get("path", "/").startswith(ASSET_PREFIXES):
            return await self.app(scope, receive, send)
        # uncompressed, and never a 304 that would keep a copy cached before this rewrite
        scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                      if k.lower() not in (b"accept-encoding", b"if-none-match", b"if-modified-since")]}
        start: dict = {}
        body: list[bytes] = []

        async def rewrite(message):
            if message["type"] == "http.response.start":
                headers = dict((k.lower(), v) for k, v in message.get("headers", []))
                if not headers.get(b"content-type", b"").startswith(b"text/html") or b"content-encoding" in headers:
                    start["pass"] = True
                    return await send(message)
                start["message"] = message
                return None
            if start.get("pass") or message["type"] != "http.response.body":
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            page = b"".join(body)
            for old, new in PAGE_REWRITES:
                page = page.replace(old, new, 1)
            headers = [(k, v) for k, v in start["message"].get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(page)).encode()))
            await send({**start["message"], "headers": headers})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, rewrite)


def setup_url(token: str, address: str = "127.0.0.1", port: int = 8501, base_path: str = "") -> str:
    """The full address of the first-admin setup page, as a browser on this machine (loopback) or on the
    network (a server bound to all interfaces: this machine's name) would open it."""
    host = address or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname() or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    base = "/" + base_path.strip("/") if base_path.strip("/") else ""
    return f"http://{host}:{port}{base}/api/auth/setup?token={token}"


def announce_setup(ws, address: str = "", port: int = 8501, base_path: str = "") -> None:
    """In team mode with no user yet, print a one-time link for creating the first admin in the browser:
    a full URL on the address and port the server listens on (WENDAO_SERVE_ADDRESS when `address` is "")."""
    if auth.mode() == "local":
        token = auth.setup_token(ws.lib.store)
        if token:
            url = setup_url(token, address or os.environ.get("WENDAO_SERVE_ADDRESS", "127.0.0.1"), port, base_path)
            print(f"[问道] 还没有任何用户。在浏览器中打开这个一次性链接创建第一个管理员：{url}"
                  "（或运行 wendao user add --admin 名字）", file=sys.stderr, flush=True)





PUBLIC_PREFIXES = ("/api/", "/_stcore/", "/static/", "/component/", "/media/", "/favicon")


class SignInMiddleware:
    """Team mode with local accounts: a page request without a valid session cookie is sent to the
    sign-in page (and Streamlit's WebSocket refused), so nothing of the app loads before sign-in. The
    pages check the principal again; the API answers 401 itself."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or auth.mode() != "local":
            return await self.app(scope, receive, send)
        path = scope.get("path", "/")
        stream = path.endswith("/_stcore/stream")
        if path.startswith(PUBLIC_PREFIXES) and not stream:
            return await self.app(scope, receive, send)
        from http.cookies import SimpleCookie

        from services.workspace import open_workspace

        raw = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie"), "")
        cookie = SimpleCookie()
        try:
            cookie.load(raw)
        except Exception:  # noqa: BLE001 - a malformed header is no cookie
            cookie = SimpleCookie()
        value = cookie[auth.COOKIE].value if auth.COOKIE in cookie else None
        if open_workspace().signed_in(value) is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/api/auth/login"), (b"content-length", b"0"), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": b""})
