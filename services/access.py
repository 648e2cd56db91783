"""Who is acting (a Principal) and what they may do with a knowledge base (a role).

Roles per KB, weakest first: viewer (ask, search, open sources), editor (also upload, delete,
re-chunk, settings, fine-tune), owner (also rename, delete, share, keys). The single local user of a
loopback install is an implicit admin: every KB, every action. services.workspace asks `role_of`
before every use case; nothing else decides permissions.
"""
from __future__ import annotations

from dataclasses import dataclass

from services import errors

ROLES = ("viewer", "editor", "owner")
ROLE_ZH = {"viewer": "查看者", "editor": "编辑者", "owner": "所有者"}
NEED_ZH = {"viewer": "查看", "editor": "编辑", "owner": "管理"}


@dataclass(frozen=True)
class Principal:
    """Who is acting. `kind`: "local" (single-user mode), "user" (signed in) or "key" (an API key,
    bound to one KB with a scope). `address` is where the request came from (for the audit log)."""

    kind: str
    user_id: int | None = None
    name: str = ""
    admin: bool = False
    key_id: int | None = None
    key_kb: int | None = None
    key_scope: str = ""  # read | write
    address: str = ""
    key_creator: int | None = None  # the user who made the key (None: the server's command line)
    session: str = ""  # the hash of the sign-in session it came from ("" : not from a session cookie)

    @property
    def owner_tag(self) -> str:
        """What conversations are filed under: the user's id, the key's KB-scoped id, "" for local."""
        if self.kind == "user":
            return f"u{self.user_id}"
        if self.kind == "key":
            return f"k{self.key_id}"
        return ""

    @property
    def label(self) -> str:
        return {"local": "本机用户", "key": f"API 密钥 #{self.key_id}"}.get(self.kind, self.name)


LOCAL = Principal("local", name="local", admin=True)


LIMIT_ZH = {"viewer": "你在此知识库中是查看者，只能提问和查看。",
            "editor": "你在此知识库中是编辑者：改名、删除、共享、API 密钥和大模型接口由所有者管理。"}


def limit_zh(role: str | None, need: str) -> str:
    """Why a principal with `role` does not see the controls needing `need`, in one Chinese line."""
    if role == "viewer" and need != "viewer":
        return LIMIT_ZH["viewer"]
    if role == "editor" and need == "owner":
        return LIMIT_ZH["editor"]
    return f"你在此知识库中是{ROLE_ZH.get(role or '', '访客')}，不能{NEED_ZH[need]}它。"


def at_least(role: str | None, need: str) -> bool:
    return role is not None and ROLES.index(role) >= ROLES.index(need)


def role_of(store, who: Principal, kb) -> str | None:
    """The principal's role on `kb` (a KnowledgeBase row), or None when they may not see it. A hidden
    evaluation copy has the role of the KB it was made from."""
    source = kb.settings.get("source_kb")
    if source is not None and kb.settings.get("hidden"):
        try:
            kb = store.get_kb(int(source))
        except errors.KnowledgeBaseNotFound:
            return None
    if who.kind == "local":
        return "owner"
    if who.kind == "key":
        if who.key_kb != kb.id:
            return None
        return _within_maker(store, who.key_creator, kb, "editor" if who.key_scope == "write" else "viewer")
    user = live_user(store, who)
    if user is None:  # removed or signed out since the principal was made (a page's cached one, an open dialog)
        return None
    if user.admin:  # as the users table says now, not as it said when the principal was made
        return "owner"
    return store.access.role(kb.id, user.id)


def is_admin(store, who: Principal) -> bool:
    """Whether the principal is an admin now: the local user; a user the users table marks admin at this
    moment (a principal made before a demotion — the pages keep one for a few seconds, an open dialog
    for as long as it stays open — must not keep admin rights); never an API key."""
    if who.kind == "local":
        return True
    user = live_user(store, who)
    return bool(user and user.admin)


def live_user(store, who: Principal):
    """The user row behind a user principal while it still stands: the user exists and, for a principal
    made from a session cookie, that session has not ended (sign-out, a new password, expiry); else None."""
    if who.kind != "user" or who.user_id is None:
        return None
    if who.session and store.users.session_user(who.session) != who.user_id:
        return None
    return store.users.get(who.user_id)


def _within_maker(store, maker_id: int | None, kb, role: str) -> str | None:
    """A key's role, never more than what the user who made it still holds on the KB: a demoted
    owner's write key reads only, a key of someone who lost access (or was removed) opens nothing.
    Keys made on the server's command line (no maker) keep their scope."""
    if maker_id is None:
        return role
    maker = store.users.get(maker_id)
    if maker is None:
        return None
    if maker.admin:
        return role
    theirs = store.access.role(kb.id, maker.id)
    return None if theirs is None else min(role, theirs, key=ROLES.index)


def require(store, who: Principal, kb, need: str) -> str:
    """The principal's role when it is at least `need`; PermissionDenied (a KB they cannot see at all:
    KnowledgeBaseNotFound, so names of others' KBs do not leak) otherwise."""
    role = role_of(store, who, kb)
    if role is None:
        raise errors.KnowledgeBaseNotFound()
    if not at_least(role, need):
        if who.kind == "key" and who.key_scope == "read":  # the key's scope, not its maker's role, stops it
            raise errors.PermissionDenied(f"这个 API 密钥是只读的（只能提问和检索），不能{NEED_ZH[need]}知识库「{kb.name}」；"
                                          "上传或删除文档请用读写密钥。")
        raise errors.PermissionDenied(f"你在知识库「{kb.name}」中是{ROLE_ZH[role]}，不能{NEED_ZH[need]}它。")
    return role
