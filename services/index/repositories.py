"""Repositories over the store's SQLite file for rows that are not documents or chunks: background
jobs, kept conversations, users and access, API keys, the audit log and LLM endpoint refusals. With services.index.store they are the only code that issues SQL.

Each repository shares the Store's connection and its write lock (`Store.locked()`), so a write here
and a document write never interleave inside one transaction.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from services import errors

ACTIVE = ("queued", "running", "cancelling")
TITLE_CHARS = 30


@dataclass
class Job:
    """One unit of long work (services.worker runs it): its kind, where it stands and its result."""

    id: int
    kb_id: int
    filename: str  # what the job is about, as users know it (a file name, a model name, "重建索引")
    status: str  # queued | running | cancelling | done | failed | cancelled
    stage: str
    done: int
    total: int
    result: dict
    created_at: float
    started_at: float | None
    updated_at: float
    kind: str = "ingest"
    params: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def keyword_searchable(self) -> bool:
        """An upload whose document can already be found by keywords: it is past its "keywords" stage
        (its vectors may still be computing) or finished indexed."""
        if self.kind != "ingest":
            return False
        if not self.active:
            return self.status == "done" and self.result.get("status", "ok") in ("ok", "replaced")
        return self.stage in ("embed", "index") or (self.stage == "keywords" and 0 < self.total <= self.done)

    @property
    def vectors_pending(self) -> bool:
        """A running job whose document is keyword-searchable while its vectors are being computed."""
        return self.active and (self.keyword_searchable or (self.kind == "vectors" and self.stage in ("embed", "index")))

    @property
    def elapsed(self) -> float:
        return (self.updated_at if self.status not in ACTIVE else time.time()) - (self.started_at or self.created_at)

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": _without_credentials(self.filename), "status": self.status,
                "stage": self.stage,
                "done": self.done, "total": self.total, "result": self.result, "created_at": self.created_at,
                "started_at": self.started_at, "updated_at": self.updated_at}


def _without_credentials(name: str) -> str:
    """A job's name as callers see it: a model server's name (a re-embed job) with any credential in
    its endpoint masked (services.config.redact_url), so viewers and read keys never learn it."""
    from services.config import SERVED, redact_url, served_name
    from services.index.served import parse_served

    if not name.startswith(SERVED):
        return name
    try:
        served = parse_served(name)
    except errors.WendaoError:
        return SERVED + "…"
    return served_name(redact_url(served.base_url), served.model, served.query_prefix, served.passage_prefix)


_JOB_COLUMNS = ("id, kb_id, filename, status, stage, done, total, result, created_at, started_at, updated_at, kind,"
                " params")


def _job(row) -> Job:
    return Job(*row[:7], json.loads(row[7] or "{}"), *row[8:12], json.loads(row[12] or "{}"))


class JobRows:
    """The `jobs` table: queued work, its progress and its result."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def add(self, kb_id: int, kind: str, name: str, params: dict, path: str | None = None,
            caps: dict[str, int] | None = None) -> int:
        """Queue a job; the id. With `caps` ({tag: limit}, the tags in `params["by"]`), the active jobs of
        `kind` carrying each tag are counted and the row inserted in one BEGIN IMMEDIATE transaction, so two
        uploads (threads or processes: the server and the CLI) never both take the last place:
        TooManyUploads when a tag already has `limit` (0 = no limit)."""
        now = time.time()
        with self.store.locked():
            if caps:
                self.db.execute("BEGIN IMMEDIATE")
            try:
                if caps:
                    self.check_caps(kind, caps)
                cur = self.db.execute(
                    "INSERT INTO jobs(kb_id, kind, filename, path, params, status, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (kb_id, kind, name, path, json.dumps(params, ensure_ascii=False), "queued", now, now))
            except BaseException:
                if caps:
                    self.db.execute("ROLLBACK")
                raise
            if caps:
                self.db.execute("COMMIT")
            return cur.lastrowid

    def check_caps(self, kind: str, caps: dict[str, int]) -> None:
        """TooManyUploads when a tag of `caps` ({tag: limit}) has `limit` active jobs of `kind` already."""
        counts = self.active_tags(kind)
        for tag, limit in caps.items():
            if limit and counts.get(tag, 0) >= limit:
                raise errors.TooManyUploads.of(tag, counts[tag], limit)

    def active_tags(self, kind: str) -> dict[str, int]:
        """How many queued or running jobs of `kind` carry each tag of their parameters' "by" list."""
        counts: dict[str, int] = {}
        for params in self.active_params(kind):
            for tag in params.get("by") or []:
                counts[tag] = counts.get(tag, 0) + 1
        return counts

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def ahead_of(self, job_id: int) -> Job | None:
        """The job a queued one waits for: the one running (the data dir's worker runs one at a time),
        else the oldest queued before it; None when nothing is ahead."""
        row = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id<>? AND (status IN ('running','cancelling')"
            " OR (status='queued' AND id<?)) ORDER BY status='queued', id LIMIT 1", (job_id, job_id)).fetchone()
        return _job(row) if row else None

    def path(self, job_id: int) -> str | None:
        row = self.db.execute("SELECT path FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def of_kb(self, kb_id: int, kinds: tuple[str, ...], since: float) -> list[Job]:
        """A KB's jobs of `kinds`: every active one plus those updated after `since`."""
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE kb_id=? AND kind IN ({marks})"
            " AND (status IN ('queued','running','cancelling') OR updated_at>=?) ORDER BY id", (kb_id, *kinds, since))
        return [_job(r) for r in rows]

    def active_params(self, kind: str) -> list[dict]:
        """The parameters of every queued or running job of `kind` (in every KB)."""
        rows = self.db.execute("SELECT params FROM jobs WHERE kind=? AND status IN ('queued','running','cancelling')",
                               (kind,))
        return [json.loads(r[0] or "{}") for r in rows]

    def any_active(self) -> bool:
        return self.db.execute("SELECT 1 FROM jobs WHERE status IN ('queued','running','cancelling')").fetchone() is not None

    def claim_next(self) -> tuple | None:
        """Mark the oldest queued job running; (id, kb_id, filename, path, params, kind) or None."""
        with self.store.locked():
            row = self.db.execute(
                "SELECT id, kb_id, filename, path, params, kind FROM jobs WHERE status='queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            self.db.execute("UPDATE jobs SET status='running', started_at=?, updated_at=? WHERE id=?", (now, now, row[0]))
            return tuple(row)

    def claim(self, job_id: int) -> tuple | None:
        """Mark one queued job running (to run it in this thread); its row as `claim_next` returns it."""
        with self.store.locked():
            row = self.db.execute("SELECT id, kb_id, filename, path, params, kind FROM jobs WHERE id=? AND status='queued'",
                                  (job_id,)).fetchone()
            if row is None:
                return None
            now = time.time()
            self.db.execute("UPDATE jobs SET status='running', started_at=?, updated_at=? WHERE id=?", (now, now, job_id))
            return tuple(row)

    def progress(self, job_id: int, stage: str, done: int, total: int, info: dict) -> None:
        with self.store.locked():
            self.db.execute("UPDATE jobs SET stage=?, done=?, total=?, result=?, updated_at=? WHERE id=?",
                            (stage, done, total, json.dumps(info, ensure_ascii=False), time.time(), job_id))

    def finish(self, job_id: int, status: str, result: dict) -> None:
        with self.store.locked():
            self.db.execute("UPDATE jobs SET status=?, result=?, updated_at=? WHERE id=?",
                            (status, json.dumps(result, ensure_ascii=False), time.time(), job_id))

    def status(self, job_id: int) -> str | None:
        row = self.db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def cancel(self, job_id: int) -> str | None:
        """'cancelled' when the job had not started, 'cancelling' when it was running (it stops at its
        next check), None when nothing was cancelled."""
        now = time.time()
        with self.store.locked():
            if self.db.execute("UPDATE jobs SET status='cancelled', updated_at=? WHERE id=? AND status='queued'",
                               (now, job_id)).rowcount:
                return "cancelled"
            if self.db.execute("UPDATE jobs SET status='cancelling', updated_at=? WHERE id=? AND status='running'",
                               (now, job_id)).rowcount:
                return "cancelling"
        return None

    def requeue_interrupted(self) -> None:
        """Jobs a dead owner was running start again (their inputs are still on disk)."""
        with self.store.locked():
            self.db.execute("UPDATE jobs SET status='queued', stage='', done=0 WHERE status IN ('running','cancelling')")

    def queue_vectors(self, pairs: list[tuple[int, str]]) -> int:
        """A 'vectors' job for each keyword-only (kb_id, doc_id) that has none queued or running; how many."""
        added = 0
        with self.store.locked():
            active = {tuple(r) for r in self.db.execute(
                "SELECT kb_id, path FROM jobs WHERE kind='vectors' AND status IN ('queued','running')")}
            for kb_id, doc_id in pairs:
                if (kb_id, doc_id) not in active:
                    self.db.execute(
                        "INSERT INTO jobs(kb_id, kind, filename, path, status, created_at, updated_at)"
                        " VALUES (?, 'vectors', (SELECT filename FROM documents WHERE kb_id=? AND id=?), ?,"
                        " 'queued', strftime('%s','now'), strftime('%s','now'))", (kb_id, kb_id, doc_id, doc_id))
                    active.add((kb_id, doc_id))
                    added += 1
        return added


@dataclass
class ConversationInfo:
    id: int
    kb_id: int
    title: str
    created_at: float
    updated_at: float
    turns: int
    owner: str = ""  # who it belongs to: a user id as text, "" for the single local user
    key: str = ""  # the unguessable id used in URLs and the API


_CONV_COLUMNS = ("c.id, c.kb_id, c.title, c.created_at, c.updated_at,"
                 " (SELECT COUNT(*) FROM turns t WHERE t.conversation_id=c.id), c.owner, c.public_id")


class ConversationRows:
    """The `conversations` and `turns` tables."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def create(self, kb_id: int, title: str, owner: str, public_id: str) -> int:
        now = time.time()
        with self.store.locked():
            cur = self.db.execute(
                "INSERT INTO conversations(kb_id, title, created_at, updated_at, owner, public_id) VALUES (?,?,?,?,?,?)",
                (kb_id, title, now, now, owner, public_id))
            return cur.lastrowid

    def list_for(self, kb_id: int, owner: str | None = None) -> list[ConversationInfo]:
        """A KB's conversations (only `owner`'s when given), most recently used first."""
        where, args = ("c.kb_id=?", (kb_id,)) if owner is None else ("c.kb_id=? AND c.owner=?", (kb_id, owner))
        rows = self.db.execute(f"SELECT {_CONV_COLUMNS} FROM conversations c WHERE {where}"
                               " ORDER BY c.updated_at DESC, c.id DESC", args)
        return [ConversationInfo(*r) for r in rows]

    def get(self, conversation_id: int) -> ConversationInfo:
        row = self.db.execute(f"SELECT {_CONV_COLUMNS} FROM conversations c WHERE c.id=?", (conversation_id,)).fetchone()
        if row is None:
            raise errors.ConversationNotFound()
        return ConversationInfo(*row)

    def find(self, public_id: str) -> ConversationInfo:
        row = self.db.execute(f"SELECT {_CONV_COLUMNS} FROM conversations c WHERE c.public_id=?",
                              (str(public_id),)).fetchone()
        if row is None:
            raise errors.ConversationNotFound()
        return ConversationInfo(*row)

    def add_turn(self, conversation_id: int, question: str, payload: dict) -> int:
        """Append a turn; the first question becomes the title of an untitled conversation."""
        now = time.time()
        with self.store.locked(), self.store.transaction():
            cur = self.db.execute("INSERT INTO turns(conversation_id, question, payload, created_at) VALUES (?,?,?,?)",
                                  (conversation_id, question, json.dumps(payload, ensure_ascii=False), now))
            self.db.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now, conversation_id))
            self.db.execute("UPDATE conversations SET title=? WHERE id=? AND title='新对话'",
                            (_title(question), conversation_id))
            return cur.lastrowid

    def turns(self, conversation_id: int) -> list[dict]:
        """[{"question", "answer": {...}, "settings": {...}, "created_at"}] in order."""
        rows = self.db.execute("SELECT question, payload, created_at FROM turns WHERE conversation_id=? ORDER BY id",
                               (conversation_id,))
        return [{"question": q, **json.loads(p), "created_at": t} for q, p, t in rows]

    def rename(self, conversation_id: int, title: str) -> None:
        with self.store.locked():
            self.db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self.store.locked(), self.store.transaction():
            self.db.execute("DELETE FROM turns WHERE conversation_id=?", (conversation_id,))
            self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))


def _title(question: str) -> str:
    q = " ".join(question.split())
    return q if len(q) <= TITLE_CHARS else q[:TITLE_CHARS] + "…"


@dataclass
class User:
    id: int
    name: str
    admin: bool
    created_at: float
    has_password: bool = False
    sso: bool = False

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "admin": self.admin, "created_at": self.created_at,
                "login": "sso" if self.sso else "password"}


_USER_COLUMNS = "id, name, admin, created_at, password_hash IS NOT NULL, sso_subject IS NOT NULL"


def _user(row) -> User:
    return User(row[0], row[1], bool(row[2]), row[3], bool(row[4]), bool(row[5]))


class UserRows:
    """The `users` and `sessions` tables (passwords and session tokens only as hashes)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def add(self, name: str, password_hash: str | None, admin: bool, sso_subject: str | None = None) -> User:
        with self.store.locked():
            if self.find(name):
                raise errors.WendaoError(f"用户「{name}」已存在。")
            cur = self.db.execute("INSERT INTO users(name, password_hash, admin, sso_subject, created_at) VALUES (?,?,?,?,?)",
                                  (name, password_hash, int(admin), sso_subject, time.time()))
            return self.get(cur.lastrowid)

    def get(self, user_id: int) -> User | None:
        row = self.db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id=?", (user_id,)).fetchone()
        return _user(row) if row else None

    def find(self, name: str) -> User | None:
        row = self.db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name=?", (name,)).fetchone()
        return _user(row) if row else None

    def by_subject(self, subject: str) -> User | None:
        row = self.db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE sso_subject=?", (subject,)).fetchone()
        return _user(row) if row else None

    def password_hash(self, user_id: int) -> str | None:
        row = self.db.execute("SELECT password_hash FROM users WHERE id=?", (user_id,)).fetchone()
        return row[0] if row else None

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        with self.store.locked():
            self.db.execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user_id))

    def set_admin(self, user_id: int, admin: bool) -> None:
        with self.store.locked():
            self.db.execute("UPDATE users SET admin=? WHERE id=?", (int(admin), user_id))

    def all(self) -> list[User]:
        return [_user(r) for r in self.db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM users").fetchone()[0]

    def remove(self, user_id: int) -> None:
        with self.store.locked(), self.store.transaction():
            self.db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))
            self.db.execute("DELETE FROM memberships WHERE user_id=?", (user_id,))
            self.db.execute("DELETE FROM users WHERE id=?", (user_id,))

    # sign-in sessions
    def add_session(self, token_hash: str, user_id: int, expires_at: float) -> None:
        with self.store.locked():
            self.db.execute("DELETE FROM sessions WHERE expires_at<?", (time.time(),))
            self.db.execute("INSERT INTO sessions(hash, user_id, created_at, expires_at) VALUES (?,?,?,?)",
                            (token_hash, user_id, time.time(), expires_at))

    def session_user(self, token_hash: str) -> int | None:
        row = self.db.execute("SELECT user_id FROM sessions WHERE hash=? AND expires_at>=?",
                              (token_hash, time.time())).fetchone()
        return row[0] if row else None

    def end_session(self, token_hash: str) -> None:
        with self.store.locked():
            self.db.execute("DELETE FROM sessions WHERE hash=?", (token_hash,))

    def end_sessions_of(self, user_id: int) -> None:
        """Sign the user out everywhere (a new password)."""
        with self.store.locked():
            self.db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))


EVERYONE = 0  # memberships.user_id for "everyone signed in"


class AccessRows:
    """The `memberships` table: who holds which role on which KB (user 0: everyone)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def role(self, kb_id: int, user_id: int | None) -> str | None:
        """The strongest role the user holds on the KB, directly or through a share with everyone."""
        from services.access import ROLES

        rows = self.db.execute("SELECT role FROM memberships WHERE kb_id=? AND user_id IN (?, ?)",
                               (kb_id, user_id if user_id is not None else -1, EVERYONE)).fetchall()
        roles = [r[0] for r in rows if r[0] in ROLES]
        return max(roles, key=ROLES.index) if roles else None

    def grant(self, kb_id: int, user_id: int, role: str) -> None:
        with self.store.locked():
            self.db.execute("INSERT INTO memberships(kb_id, user_id, role) VALUES (?,?,?)"
                            " ON CONFLICT(kb_id, user_id) DO UPDATE SET role=excluded.role", (kb_id, user_id, role))

    def revoke(self, kb_id: int, user_id: int) -> None:
        with self.store.locked():
            self.db.execute("DELETE FROM memberships WHERE kb_id=? AND user_id=?", (kb_id, user_id))

    def members(self, kb_id: int) -> list[tuple[int, str]]:
        """(user id, role) of a KB, everyone (0) included."""
        return [tuple(r) for r in self.db.execute("SELECT user_id, role FROM memberships WHERE kb_id=? ORDER BY user_id",
                                                  (kb_id,))]


@dataclass
class ApiKey:
    id: int
    kb_id: int
    scope: str
    prefix: str
    name: str
    created_by: str
    created_at: float
    last_used: float | None
    revoked_at: float | None
    creator_id: int | None = None  # the user who made it (None: the server's command line, older keys)

    def to_json(self) -> dict:
        return {"id": self.id, "kb_id": self.kb_id, "scope": self.scope, "prefix": self.prefix, "name": self.name,
                "created_by": self.created_by, "created_at": self.created_at, "last_used": self.last_used,
                "revoked": self.revoked_at is not None}


_KEY_COLUMNS = "id, kb_id, scope, prefix, name, created_by, created_at, last_used, revoked_at, creator_id"


class KeyRows:
    """The `api_keys` table: keys scoped to one KB, stored as SHA-256 hashes (keys are 256-bit random)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def add(self, kb_id: int, scope: str, key_hash: str, prefix: str, name: str, created_by: str,
            creator_id: int | None = None) -> int:
        with self.store.locked():
            cur = self.db.execute(
                "INSERT INTO api_keys(kb_id, scope, hash, prefix, name, created_by, created_at, creator_id)"
                " VALUES (?,?,?,?,?,?,?,?)", (kb_id, scope, key_hash, prefix, name, created_by, time.time(), creator_id))
            return cur.lastrowid

    def revoke_made_by(self, user_id: int) -> list[int]:
        """Revoke every live key the user made; their ids."""
        with self.store.locked():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM api_keys WHERE creator_id=? AND revoked_at IS NULL", (user_id,))]
            self.db.execute("UPDATE api_keys SET revoked_at=? WHERE creator_id=? AND revoked_at IS NULL",
                            (time.time(), user_id))
            return ids

    def by_hash(self, key_hash: str) -> ApiKey | None:
        row = self.db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash=? AND revoked_at IS NULL",
                              (key_hash,)).fetchone()
        return ApiKey(*row) if row else None

    def get(self, key_id: int) -> ApiKey | None:
        row = self.db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id=?", (key_id,)).fetchone()
        return ApiKey(*row) if row else None

    def of_kb(self, kb_id: int | None = None) -> list[ApiKey]:
        where, args = ("WHERE kb_id=?", (kb_id,)) if kb_id is not None else ("", ())
        return [ApiKey(*r) for r in self.db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys {where} ORDER BY id", args)]

    def touch(self, key_id: int) -> None:
        with self.store.locked():
            self.db.execute("UPDATE api_keys SET last_used=? WHERE id=?", (time.time(), key_id))

    def revoke(self, key_id: int) -> None:
        with self.store.locked():
            self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), key_id))


@dataclass
class AuditEvent:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: str
    address: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


class AuditRows:
    """The `audit` table: destructive and security-relevant actions (who, what, when, from where)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def record(self, actor: str, action: str, target: str = "", detail: str = "", address: str = "") -> None:
        with self.store.locked():
            self.db.execute("INSERT INTO audit(at, actor, action, target, detail, address) VALUES (?,?,?,?,?,?)",
                            (time.time(), actor, action, target, detail, address))

    def recent(self, limit: int = 200) -> list[AuditEvent]:
        return [AuditEvent(*r) for r in self.db.execute(
            "SELECT id, at, actor, action, target, detail, address FROM audit ORDER BY id DESC LIMIT ?", (limit,))]


class LLMRefusalRows:
    """The `llm_refusals` table: the LLM endpoints whose last request was refused (HTTP 401, 404, 405,
    5xx…), per (endpoint, model, key digest), with the reason the chat header gives and when. The
    services.answers.llm refusal record: written only while `writable()` (the data dir's owner; another
    process keeps what it learns in its memory), readable by every process."""

    def __init__(self, store, writable):
        self.store = store
        self.db = store.db
        self.writable = writable

    def get(self, identity: tuple[str, str, str]) -> tuple[str, float] | None:
        """(reason, when) of the refusal recorded for `identity`, else None."""
        row = self.db.execute("SELECT reason, at FROM llm_refusals"
                              " WHERE endpoint = ? AND model = ? AND key_digest = ?", identity).fetchone()
        return (row[0], row[1]) if row else None

    def record(self, identity: tuple[str, str, str], reason: str, at: float) -> None:
        if self.writable():
            with self.store.locked():
                self.db.execute("INSERT INTO llm_refusals(endpoint, model, key_digest, reason, at)"
                                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(endpoint, model, key_digest)"
                                " DO UPDATE SET reason = excluded.reason, at = excluded.at", (*identity, reason, at))

    def clear(self, identity: tuple[str, str, str]) -> None:
        if self.writable():
            with self.store.locked():
                self.db.execute("DELETE FROM llm_refusals WHERE endpoint = ? AND model = ? AND key_digest = ?", identity)
