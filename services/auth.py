"""Identity: who is signed in (team mode) or the single local user; API keys; the bind rule.

Modes (`WENDAO_AUTH`):
- unset: single-user mode, no sign-in — allowed only on a loopback address;
- `local`: local accounts (argon2 password hashes), a sign-in page, a session cookie (HttpOnly,
  SameSite=Lax; a random token signed with a secret kept in the data dir, stored only as a hash so
  sign-out and user removal end it), throttled failed sign-ins;
- `oidc`: single sign-on through Streamlit's `st.login` ([auth] in secrets), mapped to the same users;
- `none`: explicitly no sign-in, even on a network address (a trusted network; the operator's choice).

API keys belong to one KB with a scope (read: ask/search; write: also upload/delete), are shown once,
stored as SHA-256 hashes (256-bit random keys: a slow hash adds nothing) and can be revoked.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from services import errors
from services.access import Principal

MODES = ("single", "local", "oidc", "none")
COOKIE = "wendao_session"
SESSION_DAYS = 14
KEY_PREFIX = "wd_"
KEY_TOUCH_EVERY_S = 60.0  # a key's last-used time is written at most this often (shown to the minute), not
# on every request: the write lock per API call serialised concurrent callers for nothing
MAX_FAILURES = 5  # failed sign-ins per (name, address) within FAILURE_WINDOW_S before a pause
MAX_NAME_FAILURES = 20  # per name from any address (guesses spread over many addresses, e.g. an IPv6 /64)
MAX_ADDRESS_FAILURES = 50  # per address under any name (one password tried on many names)
FAILURE_WINDOW_S = 15 * 60
ANY = "\x00any"  # the throttle's wildcard (no name or address contains a NUL)
KNOWN_ADDRESS_S = 30 * 86400  # an address a user signed in from lately is not locked out by others' guesses
MAX_TRACKED = 10_000  # (name, address) pairs kept before those outside the window are dropped
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def mode() -> str:
    """The sign-in mode from WENDAO_AUTH ("single" when unset)."""
    value = os.environ.get("WENDAO_AUTH", "").strip().lower()
    if value in ("", "single"):
        return "single"
    if value not in MODES:
        raise errors.WendaoError(f"WENDAO_AUTH 的值「{value}」无效，可选：local、oidc、none（不设置即单用户模式）。")
    return value


def team_mode() -> bool:
    return mode() in ("local", "oidc")


def is_loopback(address: str) -> bool:
    if address.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(address: str) -> None:
    """Refuse to listen on a network address without sign-in (unless WENDAO_AUTH=none says so)."""
    if mode() == "single" and not is_loopback(address):
        raise errors.InsecureBind(
            f"拒绝启动：要在网络地址 {address} 上提供服务，必须开启登录（WENDAO_AUTH=local 或 oidc），"
            "否则同一网络中的任何人都能读取和删除所有知识库。先用 `wendao user add --admin 名字` 创建管理员，"
            "再以 WENDAO_AUTH=local 启动；确实要在可信网络中免登录共享时，显式设置 WENDAO_AUTH=none。")


# --- passwords -------------------------------------------------------------------------------------
HASHING_SLOTS = 2  # password hashes computed at once (each takes 64 MiB and a core for ~0.1 s)
_HASHING = threading.BoundedSemaphore(HASHING_SLOTS)


class _Hasher:
    """argon2's PasswordHasher, at most HASHING_SLOTS hashes at a time: sign-in is reachable without an
    account, and the API's thread pool would otherwise run dozens of 64 MiB hashes at once for
    anyone sending a burst of sign-ins under different names."""

    def __init__(self):
        from argon2 import PasswordHasher

        self.hasher = PasswordHasher()

    def hash(self, password: str) -> str:
        with _HASHING:
            return self.hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        with _HASHING:
            return self.hasher.verify(stored, password)


def _hasher() -> _Hasher:
    return _Hasher()


def hash_password(password: str) -> str:
    if len(password or "") < 8:
        raise errors.WendaoError("密码至少 8 个字符。")
    return _hasher().hash(password)


def valid_user_name(name: str) -> str:
    """The name as stored: NFKC-normalised (full-width letters typed with a Chinese IME become the
    ordinary ones), 1-64 characters, none of them a space, a control or an invisible format character
    (zero-width space, bidi controls): such a name would look like another user's in the share dialog,
    the admin page and the audit log."""
    name = unicodedata.normalize("NFKC", name or "").strip()
    if not name or len(name) > 64 or any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in name):
        raise errors.InvalidName("用户名无效：1–64 个字符，不能包含空格、控制字符或不可见字符。")
    return name


def name_key(name: str) -> str:
    """What two user names must not share: the same letters up to case and full/half width."""
    return unicodedata.normalize("NFKC", name or "").strip().casefold()


def name_taken(store, name: str):
    """The user whose name differs from `name` only in case or width ("Admin", "ａｄｍｉｎ" for
    "admin"), or None."""
    key = name_key(name)
    return next((u for u in store.users.all() if name_key(u.name) == key), None)


def add_user(store, name: str, password: str | None, admin: bool = False):
    """A local account; `password` None only for SSO users (they sign in through the identity provider).
    A name that differs from an existing one only in case or width is refused (it would pass for it)."""
    name = valid_user_name(name)
    taken = name_taken(store, name)
    if taken is not None:
        raise errors.InvalidName(f"用户「{name}」已存在" + ("。" if taken.name == name else
                                                      f"：与「{taken.name}」只差大小写或全角半角，容易混淆，请换一个名字。"))
    return store.users.add(name, hash_password(password) if password is not None else None, admin)


# --- failed sign-ins -----------------------------------------------------------------------------------
class Throttle:
    """Failed sign-ins within the window, counted per (name, address) (MAX_FAILURES), per name from
    any address (MAX_NAME_FAILURES: guesses spread over many source addresses) and per address under
    any name (MAX_ADDRESS_FAILURES: one password sprayed over many names); past a limit, refused for
    the rest of the window (in memory: one server process owns the data dir). An attempt counts as
    failed from the moment it starts until its password checks out, so parallel guesses cannot all
    pass the check before the first failure is recorded."""

    def __init__(self):
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._known: dict[tuple[str, str], float] = {}  # (name, address) -> last successful sign-in

    def _limits(self, name: str, address: str, now: float | None = None) -> list[tuple[tuple[str, str], int]]:
        """The counters an attempt is checked against. The per-name one does not apply from an address
        the user signed in from within KNOWN_ADDRESS_S: guesses from elsewhere must not lock the user
        out of the machine they use (the per-pair and per-address limits still apply there)."""
        limits = [((name, address), MAX_FAILURES), ((ANY, address), MAX_ADDRESS_FAILURES)]
        if now is None or self._known.get((name, address), 0.0) < now - KNOWN_ADDRESS_S:
            limits.insert(1, ((name, ANY), MAX_NAME_FAILURES))
        return limits

    def attempt(self, name: str, address: str) -> float:
        """Start an attempt (SignInThrottled when too many failed lately); its mark for `succeeded`."""
        with self._lock:
            now = time.time()
            if len(self._failures) > MAX_TRACKED:  # made-up names must not grow this without bound
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - FAILURE_WINDOW_S}
            counted = []
            for key, limit in self._limits(name, address, now):
                recent = [t for t in self._failures.get(key, []) if t > now - FAILURE_WINDOW_S]
                self._failures[key] = recent
                if len(recent) >= limit:
                    wait = int(recent[0] + FAILURE_WINDOW_S - now) // 60 + 1
                    raise errors.SignInThrottled(f"登录失败次数过多，请 {wait} 分钟后再试。")
                counted.append(recent)
            for recent in counted:
                recent.append(now)
            return now

    def succeeded(self, name: str, address: str, mark: float | None = None) -> None:
        """The attempt started at `mark` checked out: the pair's failures are forgotten, and the
        attempt no longer counts against the name or the address."""
        with self._lock:
            self._failures.pop((name, address), None)
            for key in ((name, ANY), (ANY, address)):
                marks = self._failures.get(key)
                if marks and mark in marks:
                    marks.remove(mark)
            if len(self._known) > MAX_TRACKED:
                self._known = {k: t for k, t in self._known.items() if t > time.time() - KNOWN_ADDRESS_S}
            self._known[(name, address)] = time.time()


THROTTLE = Throttle()


def sign_in(store, root: Path, name: str, password: str, address: str = "") -> str:
    """Check a name and password; a signed session token for the cookie. One message for every
    failure (no hint whether the name exists); throttled per name and address; audited."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:  # what could be a user's name: anything else (a megabyte, invisible characters) is no one's,
        name = valid_user_name(name)  # and is neither kept in the throttle nor written to the audit log
    except errors.InvalidName:
        name = ""
    key = name_key(name) or "?"  # "Admin" and "ａｄｍｉｎ" are counted as "admin"
    mark = THROTTLE.attempt(key, address)  # counted as failed until the password checks out
    user = (store.users.find(name) or next(  # an account made before names were normalised
        (u for u in store.users.all() if unicodedata.normalize("NFKC", u.name) == name), None)) if name else None
    stored = store.users.password_hash(user.id) if user else None
    try:
        if stored is None:
            _hasher().hash(password or "x")  # the same work whether or not the name exists
            raise VerificationError()
        _hasher().verify(stored, password or "")
    except (VerificationError, InvalidHashError):
        store.audit.record(name or "（无效的用户名）", "sign_in_failed", address=address)
        raise errors.SignInFailed() from None
    THROTTLE.succeeded(key, address, mark)
    store.audit.record(user.name, "sign_in", address=address)
    token = secrets.token_urlsafe(32)
    store.users.add_session(_sha256(token), user.id, time.time() + SESSION_DAYS * 86400)
    return _signer(root).sign(token).decode()


def principal_for_sso(store, subject: str, name: str, address: str = "") -> Principal:
    """The user behind an identity-provider subject (st.login / OIDC `sub`), created as a member on first
    sign-in, so SSO users share the users table, roles and audit with local accounts. Only the
    provider's stable subject (`sub`) identifies a user: an e-mail address or a display name can be
    reassigned or changed, and a missing one must not merge every such sign-in into one account."""
    subject = (subject or "").strip()
    if not subject or subject == "None":
        raise errors.SignInFailed("身份提供方没有返回用户标识（sub），无法确定您是谁。请联系管理员检查单点登录（OIDC）配置。")
    user = store.users.by_subject(subject)
    if user is None:
        shown = unicodedata.normalize("NFKC", name or subject).replace(" ", "_")
        base = valid_user_name("".join(c for c in shown if unicodedata.category(c)[0] not in "CZ")[:56] or "sso-user")
        taken = name_taken(store, base)
        user = store.users.add(base if taken is None else f"{base}-{secrets.token_hex(3)}", None, False, subject)
        store.audit.record(user.name, "user_added_by_sso", address=address)
    return Principal("user", user.id, user.name, user.admin, address=address)


def sign_out(store, root: Path, cookie: str, address: str = "") -> None:
    token = _unsign(root, cookie)
    user_id = store.users.session_user(_sha256(token)) if token else None
    if token:
        store.users.end_session(_sha256(token))
    user = store.users.get(user_id) if user_id is not None else None
    if user is not None:
        store.audit.record(user.name, "sign_out", address=address)


def principal_from_cookie(store, root: Path, cookie: str | None, address: str = "") -> Principal | None:
    """The signed-in user behind a session cookie, or None (missing, forged, expired, signed out)."""
    token = _unsign(root, cookie or "")
    user_id = store.users.session_user(_sha256(token)) if token else None
    user = store.users.get(user_id) if user_id is not None else None
    if user is None:
        return None
    return Principal("user", user.id, user.name, user.admin, address=address, session=_sha256(token))


# --- API keys --------------------------------------------------------------------------------------
@dataclass
class NewKey:
    key: str  # shown once
    id: int
    kb: str
    scope: str

    def to_json(self) -> dict:
        return {"key": self.key, "id": self.id, "kb": self.kb, "scope": self.scope}


def create_key(store, kb, scope: str, created_by: str, name: str = "", creator_id: int | None = None) -> NewKey:
    """A new key; `creator_id`: the user making it (the key then never grants more than they hold)."""
    if scope not in ("read", "write"):
        raise errors.WendaoError("密钥权限只能是 read（提问、检索）或 write（还可上传、删除文档）。")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = store.keys.add(kb.id, scope, _sha256(key), key[:10], name, created_by, creator_id)
    return NewKey(key, key_id, kb.name, scope)


def principal_from_key(store, key: str, address: str = "") -> Principal | None:
    """The API key's principal (bound to its KB and scope), or None for an unknown or revoked key."""
    if not key or not key.startswith(KEY_PREFIX):
        return None
    row = store.keys.by_hash(_sha256(key))  # every request: a revoked key is refused at once
    if row is None:
        return None
    if row.last_used is None or time.time() - row.last_used >= KEY_TOUCH_EVERY_S:
        store.keys.touch(row.id)
    return Principal("key", name=f"key:{row.prefix}", key_id=row.id, key_kb=row.kb_id, key_scope=row.scope,
                     address=address, key_creator=row.creator_id)


# --- one-time setup token (first admin from the browser) ---------------------------------------------
_SETUP: dict[str, str] = {}


def setup_token(store) -> str | None:
    """A one-time token to create the first admin in the browser (printed in the server log), while
    no user exists; None once there is one."""
    if store.users.count():
        return None
    token = secrets.token_urlsafe(16)
    _SETUP["hash"] = _sha256(token)
    return token


def create_first_admin(store, token: str, name: str, password: str, address: str = ""):
    if store.users.count() or not _SETUP.get("hash") or not secrets.compare_digest(_SETUP["hash"], _sha256(token or "")):
        raise errors.PermissionDenied("设置令牌无效或已用过。")
    user = add_user(store, name, password, admin=True)
    _SETUP.clear()
    store.audit.record(user.name, "first_admin_created", address=address)
    return user


# --- helpers -------------------------------------------------------------------------------------
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_key(root: Path) -> bytes:
    """The data dir's signing secret (created once, readable by the owner only)."""
    path = Path(root) / "secret.key"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote it meanwhile
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _signer(root: Path):
    from itsdangerous import Signer

    return Signer(secret_key(root), salt="wendao-session")


def _unsign(root: Path, cookie: str) -> str | None:
    from itsdangerous import BadSignature

    try:
        return _signer(root).unsign(cookie).decode() if cookie else None
    except (BadSignature, UnicodeDecodeError):
        return None
