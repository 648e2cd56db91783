"""The application core: every use case of 问道, one entry each, for the pages, the CLI and the HTTP API.

    ws = open_workspace()                 # one per data dir per process (the Library, the worker)
    me = ws.session(principal)            # who is acting (services.access.Principal; LOCAL by default)
    kb = me.kb("合同")                     # a knowledge-base handle, permission-checked
    kb.upload("a.pdf", data)              # -> job id (services.worker runs it)
    stream = kb.ask("有效期多久？")          # streamed, cited answer; the turn is saved in a conversation

Front ends call only this module (and the view types it returns): no page or command touches the
store, an index or a model. Every method checks the principal's role on the KB first
(services.access) — the one place where permissions are decided — and long work is submitted as a
job (services.worker), never run in a page.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from services import access, conversations, errors, jobs, worker  # noqa: F401 - jobs registers the handlers
from services.access import LOCAL, Principal
from services.config import LLMSettings, RetrievalSettings, data_dir, redact_url, server_llm_secrets
from services.documents.chunking import ChunkingConfig, chunk_text
from services.documents.doctypes import page_for_offset
from services.index.library import Library, open_library
from services.index.kb_settings import (chunking_config, llm_settings, retrieval_settings, save_llm_settings,
                                        save_settings)
from services.index.repositories import ConversationInfo, Job
from services.index.store import Document, KnowledgeBase

INGEST_KINDS = ("ingest", "vectors", "rechunk", "reindex", "reembed", "optimize", "sample")
# The jobs a viewer may start (评测), and so see. Every other kind — uploads, re-chunking, re-embedding, index
# upkeep, fine-tuning — is an editor's work, and its log (file names, failures and why, models) is theirs too:
# a viewer asks, searches and opens sources (README's permission table).
VIEWER_JOB_KINDS = ("evaluate",)
JOB_LOG_DENIED_ZH = "上传、切分、向量化和微调等任务的记录只有编辑者和所有者能看。"
CANCELLABLE_WHILE_RUNNING = worker.CANCELLABLE_WHILE_RUNNING  # other kinds: cancellable only while queued
SAMPLE_KB = "示例"
MAX_QUERY_CHARS = 2000  # a question or query: every character is embedded (510-token windows, averaged), so
# without a bound one request of a megabyte kept a core busy for minutes (any viewer, any read key)
# a job's kind as users know it (KB.job_label)
JOB_KIND_ZH = {"ingest": "上传", "vectors": "补齐向量", "rechunk": "重新切分", "reindex": "重建索引", "optimize": "优化索引",
               "reembed": "切换向量模型", "sample": "导入示例文档", "evaluate": "评测", "finetune": "微调",
               "finetune_reranker": "训练重排模型"}
JOB_NAMES = ("重建索引", "优化索引", "评测", "示例")  # job names that only repeat the kind
HISTORY_TURNS = 10  # turns of a caller-given history kept (the rewrite reads the last ones only)
MAX_HISTORY_ANSWER_CHARS = 20_000  # an earlier answer a caller sends back, kept up to this many characters


@dataclass
class KBInfo:
    """A knowledge base as listed: name, counts and the caller's role."""

    id: int
    name: str
    documents: int
    chunks: int
    role: str

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "documents": self.documents, "chunks": self.chunks, "role": self.role}


@dataclass
class SourceView:
    """What the citation dialog shows for a kept source: the rendered PDF page with the quotes boxed
    (`png`, and `focus_png`, the part of it around the boxes), or the passage inside its surrounding
    text (`text`, with the quotes' `marks` and the passage's span `passage` relative to it)."""

    doc_id: str | None
    kind: str  # pdf | text | missing
    page: int = 1
    pages: list[int] | None = None
    page_count: int = 0
    png: bytes = b""
    found: bool = False
    scanned: bool = False
    text: str = ""
    marks: list[tuple[int, int]] | None = None
    cut_before: bool = False
    cut_after: bool = False
    passage: tuple[int, int] | None = None
    focus_png: bytes = b""


class Workspace:
    """A data dir opened by this process: its Library (store + indexes + models) and its worker."""

    def __init__(self, lib: Library, background: bool = True):
        self.lib = lib
        self.background = background
        if background:
            worker.start(lib)  # queued work and keyword-only documents resume with the owner

    @property
    def read_only(self) -> bool:
        """True while another process owns the data dir (reads work, writes raise DataDirBusy)."""
        return self.lib.read_only

    def session(self, who: Principal = LOCAL) -> "Session":
        return Session(self, who)

    def signed_in(self, cookie: str | None, address: str = "") -> Principal | None:
        """Who a request is: the local user without sign-in (single-user / WENDAO_AUTH=none), the user
        behind a valid session cookie in team mode, else None (the caller shows the sign-in page)."""
        from services import auth

        if not auth.team_mode():
            return LOCAL
        return auth.principal_from_cookie(self.lib.store, self.lib.root, cookie, address)

    def sso_principal(self, subject: str, name: str, address: str = "") -> Principal:
        """The principal of a user signed in through the identity provider (WENDAO_AUTH=oidc)."""
        from services import auth

        return auth.principal_for_sso(self.lib.store, subject, name, address)


_WORKSPACES: dict[str, Workspace] = {}
_LOCK = threading.Lock()


def open_workspace(root: str | Path | None = None, background: bool = True) -> Workspace:
    """The process-wide Workspace of a data dir (WENDAO_DATA_DIR by default). `background`: run jobs
    in the worker thread (the app); the CLI passes False and runs its jobs in-line."""
    key = str(Path(root or data_dir()).resolve())
    with _LOCK:
        if key not in _WORKSPACES or _WORKSPACES[key].lib.closed:
            _WORKSPACES[key] = Workspace(open_library(key), background)
        return _WORKSPACES[key]


class Session:
    """The use cases available to one principal."""

    def __init__(self, ws: Workspace, who: Principal):
        self.ws, self.who, self.lib = ws, who, ws.lib

    @property
    def store(self):
        return self.lib.store

    # --- knowledge bases ---------------------------------------------------------------------------
    def kbs(self) -> list[KBInfo]:
        """The KBs this principal may see (hidden evaluation copies never listed), oldest first."""
        out = []
        for row in self.store.list_kbs():
            role = access.role_of(self.store, self.who, row)
            if role and not _hidden(row):
                out.append(KBInfo(row.id, row.name, len(self.store.list_documents(row.id)),
                                  self.store.count_chunks(row.id), role))
        return out

    def kb(self, name_or_id: str | int, need: str = "viewer") -> "KB":
        """A KB handle by name or id, after checking the principal's role is at least `need`.

        A name is looked up among the KBs this principal may see (names are unique per owner only,
        so another user's KB of the same name is neither found nor hinted at): their own first, else
        the only one they can see; two they can see but do not own → AmbiguousKnowledgeBase asking
        for the id. "#12" (a string, as the CLI's --kb and the API's model take it) is KB 12, unless
        a visible KB is literally named so."""
        if isinstance(name_or_id, int):
            row = self.store.get_kb(name_or_id)
        else:
            row = self._visible_named(str(name_or_id))
        if row is None or _hidden(row) and isinstance(name_or_id, str):
            raise errors.KnowledgeBaseNotFound(f"找不到知识库「{name_or_id}」。")
        return KB(self, row, access.require(self.store, self.who, row, need))

    def _creator(self, row: KnowledgeBase) -> str:
        user = self.store.users.get(row.owner_id) if row.owner_id else None
        return f"「{user.name}」" if user else "本机或命令行"

    def _visible_named(self, name: str) -> KnowledgeBase | None:
        name = name.strip()
        visible = [r for r in self.store.kbs_named(name)
                   if not _hidden(r) and access.role_of(self.store, self.who, r) is not None]
        mine = self.who.user_id if self.who.kind == "user" else (0 if self.who.kind == "local" else None)
        own = [r for r in visible if mine is not None and r.owner_id == mine]
        if len(own) == 1:
            return own[0]
        if len(visible) == 1:
            return visible[0]
        if len(visible) > 1:
            listed = "、".join(f"#{r.id}（{self._creator(r)}创建）" for r in visible)
            raise errors.AmbiguousKnowledgeBase(
                f"你能访问的知识库中有 {len(visible)} 个都叫「{name}」：{listed}。请改用编号指定"
                f"（例如命令行 --kb '#{visible[0].id}'，API 的 kb / model 填 \"#{visible[0].id}\"），或先把其中一个重命名。")
        if name.startswith("#") and name[1:].isdigit():
            try:
                return self.store.get_kb(int(name[1:]))
            except errors.KnowledgeBaseNotFound:
                return None
        return None

    def create_kb(self, name: str) -> "KB":
        """A new KB, private to its creator (services.access)."""
        if self.who.kind == "key":
            raise errors.PermissionDenied("API 密钥不能创建知识库。")
        self.lib.require_owner()
        row = self.store.create_kb(name, self.who.user_id if self.who.kind == "user" else 0)
        if self.who.kind == "user":
            self.store.access.grant(row.id, self.who.user_id, "owner")
        self.audit("kb_created", row.name)
        return KB(self, row, "owner")

    def sample_kb(self) -> tuple["KB", int | None]:
        """The 示例 KB with the bundled sample documents: (handle, job id of its ingest, None when ready)."""
        try:
            kb = self.kb(SAMPLE_KB, "editor")
        except errors.KnowledgeBaseNotFound:
            kb = self.create_kb(SAMPLE_KB)
        job = None if kb.info().documents else kb.submit("sample", "示例文档", {})
        return kb, job

    def conversation(self, key: str) -> ConversationInfo:
        """One of the principal's conversations, by its public id, in a KB they may see (a link
        after a reload); ConversationNotFound otherwise."""
        info = conversations.find(self.store, str(key))
        try:
            kb = self.kb(info.kb_id)
        except errors.WendaoError:
            raise errors.ConversationNotFound() from None
        return kb.conversation(key)

    # --- models --------------------------------------------------------------------------------
    def finetuned_models(self, kind: str = "embedding") -> list[dict]:
        """Model folders trained in this data dir (cards with "path"), newest first: embedders, or
        (kind="reranker") rerankers trained on a KB. A model follows the KB it was trained on: listed
        only to those who may see that KB (its card names the KB, and it learned from its documents),
        with the KB's current name; admins also see models whose KB is gone."""
        from services.tuning.finetune import finetuned_models, verdict

        out = []
        for card in finetuned_models(self.lib, kind):
            if kind == "embedding":  # whether it measured better, in words (services.tuning.finetune.verdict)
                card = {**card, "verdict": verdict(card)}
            row = self._model_kb(card)
            if row is not None and access.role_of(self.store, self.who, row) is not None:
                out.append({**card, "kb": row.name})
            elif row is None and access.is_admin(self.store, self.who):
                out.append(card)
        return out

    def _model_kb(self, card: dict) -> KnowledgeBase | None:
        """The KB a fine-tuned model was trained on: the one whose model folder holds it (models saved
        per KB), else by id (cards since the security review), else by name; only a KB older than the
        model (a KB created later under a freed name, or a reused id, is another KB). None when it is gone."""
        from services.tuning.finetune import KB_FOLDER_PREFIX, kb_models_dir

        if card.get("kb_folder"):
            try:
                row = self.store.get_kb(int(card["kb_folder"][len(KB_FOLDER_PREFIX):].split("-")[0]))
            except (errors.KnowledgeBaseNotFound, ValueError):
                return None
            return row if kb_models_dir(self.lib, row).name == card["kb_folder"] else None
        try:
            if card.get("kb_id") is not None:
                row = self.store.get_kb(int(card["kb_id"]))
            else:
                row = self.store.find_kb(str(card.get("kb", "")))
            made = float(card.get("created_at") or 0)
        except (errors.KnowledgeBaseNotFound, TypeError, ValueError):
            return None
        return row if row is not None and row.created_at <= made else None

    def models_in_use(self) -> set[str]:
        return {self.lib.embedding_model(k) for k in self.store.list_kbs()}

    def delete_finetuned_model(self, model: str) -> None:
        """Delete a fine-tuned model folder (embedder or reranker), given its "path" from
        `finetuned_models` (or its name where only one model the principal sees has it): the owner of
        the KB it was trained on, or an admin; never one a KB uses."""
        from services.tuning.finetune import delete_model, pick_model

        card = pick_model([m for kind in ("embedding", "reranker") for m in self.finetuned_models(kind)], model)
        row = self._model_kb(card)
        if not access.is_admin(self.store, self.who):
            if row is None:
                raise errors.WendaoError("找不到这个微调模型。")
            access.require(self.store, self.who, row, "owner")
        delete_model(self.lib, card["path"])
        shown = card["name"]
        self.audit("model_deleted", row.name if row else str(card.get("kb", "")), shown)

    # --- jobs ----------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        """A job of a KB the principal may see, of a kind its role there may see (`KB.job`)."""
        job = worker.get(self.lib, job_id)
        return self.kb(job.kb_id).job(job_id)

    # --- users and audit (admins) --------------------------------------------------------------------
    def _admin(self) -> None:
        if not access.is_admin(self.store, self.who):
            raise errors.PermissionDenied("只有管理员可以管理用户和查看审计日志。")

    def audit(self, action: str, target: str = "", detail: str = "") -> None:
        """Record a destructive or security-relevant action by this principal."""
        self.store.audit.record(self.who.label, action, target, detail, self.who.address)

    def users(self):
        self._admin()
        return self.store.users.all()

    def user_names(self) -> dict[int, str]:
        """Every user's name by id (to pick whom to share with); any signed-in user may see names."""
        if self.who.kind == "key":
            raise errors.PermissionDenied()
        return {u.id: u.name for u in self.store.users.all()}

    def add_user(self, name: str, password: str | None, admin: bool = False):
        from services import auth

        self._admin()
        user = auth.add_user(self.store, name, password, admin)
        self.audit("user_added", user.name, "admin" if admin else "member")
        return user

    def remove_user(self, name: str) -> None:
        self._admin()
        user = self.store.users.find(name)
        if user is None:
            raise errors.WendaoError(f"没有用户「{name}」。")
        if user.admin and sum(u.admin for u in self.store.users.all()) == 1:
            raise errors.WendaoError("不能删除最后一个管理员。")
        revoked = self.store.keys.revoke_made_by(user.id)
        self.store.users.remove(user.id)
        self.audit("user_removed", name)
        names = {k.id: k.name for k in self.store.list_kbs()}
        for key_id in revoked:
            row = self.store.keys.get(key_id)
            self.audit("key_revoked", names.get(row.kb_id, "") if row else "", f"#{key_id} 创建者「{name}」已被删除")

    def set_password(self, name: str, password: str) -> None:
        """A new password for a local account (an admin for anyone, a user for themselves); every
        session of that user ends, so a stolen cookie dies with the old password."""
        from services import auth

        user = self.store.users.find(name)
        if not access.is_admin(self.store, self.who) and not (
                self.who.kind == "user" and user is not None and user.id == self.who.user_id):
            raise errors.PermissionDenied("只有管理员可以修改别人的密码。")
        if user is None:
            raise errors.WendaoError(f"没有用户「{name}」。")
        self.store.users.set_password_hash(user.id, auth.hash_password(password))
        self.store.users.end_sessions_of(user.id)
        self.audit("password_changed", name)

    def set_admin(self, name: str, admin: bool) -> None:
        self._admin()
        user = self.store.users.find(name)
        if user is None:
            raise errors.WendaoError(f"没有用户「{name}」。")
        if not admin and user.admin and sum(u.admin for u in self.store.users.all()) == 1:
            raise errors.WendaoError("至少要保留一个管理员。")
        self.store.users.set_admin(user.id, admin)
        self.audit("user_role", name, "admin" if admin else "member")

    def audit_log(self, limit: int = 200):
        self._admin()
        return self.store.audit.recent(limit)

    def all_keys(self):
        """Every API key of every KB (admins), newest last."""
        self._admin()
        return self.store.keys.of_kb()


def _upload_tags(who: Principal) -> list[str]:
    """Whose in-flight uploads an upload counts against: the API key's and the user's who made it, or
    the signed-in user's (none for the single local user)."""
    if who.kind == "key":
        return [f"k{who.key_id}"] + ([f"u{who.key_creator}"] if who.key_creator is not None else [])
    return [f"u{who.user_id}"] if who.kind == "user" and who.user_id is not None else []


def _upload_caps(who: Principal) -> dict[str, int]:
    """{tag: limit} for an upload of `who`: one write key (or user) could otherwise queue any number of
    files, each kept on disk and indexed in turn by the data dir's one worker, while everyone else's
    uploads wait. The queued and running uploads carrying a tag (`by` in the job's parameters) are
    counted when the job row is inserted (JobRows.add, one transaction)."""
    from services.config import max_uploads_in_flight

    try:
        limits = dict(zip(("k", "u"), max_uploads_in_flight()))
    except ValueError as exc:  # a mistyped WENDAO_MAX_UPLOADS_PER_*: said in Chinese, nothing refused silently
        raise errors.WendaoError(str(exc)) from None
    return {tag: limits[tag[0]] for tag in _upload_tags(who)}


def _without_uploader(job: Job) -> Job:
    """A job as callers get it: without the upload cap's tags (`by`: which key and user queued it; the audit
    log says who did what, to admins)."""
    return replace(job, params={k: v for k, v in job.params.items() if k != "by"}) if "by" in job.params else job


def _bounded(text: str, what: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise errors.QueryTooLong(f"{what}太长（{len(text):,} 个字符），请精简到 {MAX_QUERY_CHARS:,} 个字符以内。")


def _bounded_history(history):
    """A caller-given conversation (the API's earlier messages) cut to what answering reads: the last
    HISTORY_TURNS turns, each question and query bounded like a question and each answer to
    MAX_HISTORY_ANSWER_CHARS (a follow-up's rewrite carries names from them into the query)."""
    turns = [replace(t, question=t.question[:MAX_QUERY_CHARS], query=t.query[:MAX_QUERY_CHARS],
                     answer=t.answer[:MAX_HISTORY_ANSWER_CHARS]) for t in history.turns[-HISTORY_TURNS:]]
    return replace(history, turns=turns)


def _hidden(row: KnowledgeBase) -> bool:
    return bool(row.settings.get("hidden"))


class KB:
    """One knowledge base as seen by one principal (`role`): every use case on it."""

    def __init__(self, session: Session, row: KnowledgeBase, role: str):
        self.session, self.row, self.role = session, row, role
        self.lib = session.lib
        self.store = session.lib.store

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    def _need(self, role: str) -> None:
        """Check the principal's role on the KB now, not the one this handle was made with: a page keeps
        a handle through a dialog's reruns, and an owner demoted (or a user removed) meanwhile must not
        keep sharing, deleting or uploading through it."""
        self.role = access.require(self.store, self.session.who, self.row, role)

    def _audit(self, action: str, detail: str = "") -> None:
        self.session.audit(action, self.name, detail)

    # --- what the principal may do (for pages to hide or disable controls; every use case still checks) ---
    def may(self, need: str) -> bool:
        """Whether the principal's role on this KB is at least `need` ("viewer", "editor", "owner"):
        pages hide or disable the controls of what they could not do. The use cases decide on their own
        (access.require), so a page that showed a control anyway is still refused."""
        return access.at_least(self.role, need)

    def role_note(self, need: str = "editor") -> str:
        """One line for a page that hides the controls needing `need`, saying why ("" when the principal
        may use them): 「你在此知识库中是查看者，只能提问和查看。」"""
        if self.may(need):
            return ""
        return access.limit_zh(self.role, need)

    def refresh(self) -> "KB":
        """The same KB with its row read again (settings changed by another session)."""
        self.row = self.store.get_kb(self.row.id)
        return self

    # --- views ---------------------------------------------------------------------------------
    def info(self) -> KBInfo:
        return KBInfo(self.id, self.name, len(self.store.list_documents(self.id)), self.store.count_chunks(self.id),
                      self.role)

    def documents(self, searchable_only: bool = False) -> list[Document]:
        docs = [self._shown(d) for d in self.store.list_documents(self.id)]
        return [d for d in docs if d.status == "ready" and d.enabled] if searchable_only else docs

    def document(self, doc_id: str) -> Document:
        doc = self.store.get_document(self.id, doc_id)
        if doc is None:
            raise errors.DocumentNotFound()
        return self._shown(doc)

    def _shown(self, doc: Document) -> Document:
        """A document as this principal may see it: a failure reason (it may name files and folders of the
        server) only for editors, as for upload logs (`jobs`)."""
        return doc if doc.error is None or self.may("editor") else replace(doc, error=None)

    def find_documents(self, filename: str) -> list[Document]:
        return [d for d in self.store.find_by_filename(self.id, filename) if d.status == "ready"]

    def chunks(self, doc_id: str):
        return self.store.chunks_of(self.id, doc_id)

    def chunk_preview(self, doc_id: str, config: ChunkingConfig) -> tuple[str, list]:
        """(document text, its chunks under `config`): how a re-split would look; nothing changes."""
        text = self.store.document_text(self.id, doc_id)
        spans = self.store.page_spans(self.id, doc_id)
        counter = self.lib.embedder(self.row).count_tokens if config.unit == "tokens" else None
        return text, chunk_text(text, config, lambda offset: page_for_offset(spans, offset), counter)

    def source_view(self, source: dict, quotes: list[dict], page: int | None = None) -> SourceView:
        """The original behind a kept source: its PDF page rendered with the quotes boxed, or the passage
        in its surrounding text (other formats, files kept before originals were)."""
        from services.documents.pageview import context_window, focus_crop, render_pdf_page

        doc_id = self._source_doc(source)
        if doc_id is None:
            return SourceView(None, "missing")
        ranges = [(int(c["start"]), int(c["end"])) for c in quotes] or [(int(source["start"]), int(source["end"]))]
        text = self.store.document_text(self.id, doc_id)
        path = self.lib.originals.path(self.row.id, doc_id)
        if path is not None and path.suffix.lower() == ".pdf":
            spans = self.store.page_spans(self.id, doc_id)
            pages = sorted({int(c.get("page", 0)) for c in quotes} - {0}) or [int(source.get("page", 1))]
            page = page if page in pages else pages[0]
            image = render_pdf_page(path, text, spans, page, ranges)
            return SourceView(doc_id, "pdf", page, pages, image.pages, image.png, image.found,
                              any(s.ocr and s.page == page for s in spans), focus_png=focus_crop(image))
        lo, hi = int(source.get("start", ranges[0][0])), int(source.get("end", ranges[0][1]))
        a, b = context_window(text, min([lo] + [r[0] for r in ranges]), max([hi] + [r[1] for r in ranges]))
        return SourceView(doc_id, "text", text=text[a:b], marks=[(s - a, e - a) for s, e in ranges],
                          cut_before=a > 0, cut_after=b < len(text), passage=(max(lo, a) - a, min(hi, b) - a))

    def _source_doc(self, source: dict) -> str | None:
        chunks = self.store.get_chunks(list(source.get("chunk_ids") or []))
        if chunks:
            doc_id = next(iter(chunks.values())).doc_id
            if self.store.get_document(self.id, doc_id) is not None:
                return doc_id
        docs = self.store.find_by_filename(self.id, source.get("doc", ""))
        return docs[0].id if docs else None

    # --- settings -------------------------------------------------------------------------------
    def retrieval_settings(self, **overrides) -> RetrievalSettings:
        """The KB's saved retrieval settings with `overrides` (None values ignored)."""
        return replace(retrieval_settings(self.lib, self.row), **{k: v for k, v in overrides.items() if v is not None})

    def chunking_config(self) -> ChunkingConfig:
        return chunking_config(self.lib, self.row)

    def llm_settings(self, session_key: str = "", unsaved: dict | None = None) -> LLMSettings:
        """The endpoint answers use: server (env, .streamlit/secrets.toml) < saved for the KB < `unsaved`;
        keys bound to their endpoints (services.index.kb_settings.llm_settings)."""
        return llm_settings(self.lib, self.row, session_key, server_llm_secrets(), unsaved)

    def llm_unreachable(self, llm: LLMSettings) -> str:
        """Why `llm`'s endpoint could not be connected to in the last few seconds (services.answers.llm
        remembers a connect failure per endpoint), else "": the chat header then says answers are
        extracts for now instead of naming a model that is not answering."""
        from services.answers.llm import recent_failure

        failed = recent_failure(llm.base_url) if llm.configured else None
        return failed[1].message_zh if failed else ""

    def llm_unusable(self, llm: LLMSettings) -> str:
        """Why answers from `llm` fall back to extracts now, in a few words for the chat header
        ("暂时连不上", "不可用：接口拒绝了请求，HTTP 405，请到设置页检查"), else "": a connect failure of the last few seconds,
        or an HTTP refusal (key, model, address, 5xx) of the last request to this endpoint, model and
        key, as the data dir recorded it (also before this process's first request, after a restart) —
        saving the settings tests the endpoint, so the header is right from then on."""
        from services.answers.llm import unusable

        return unusable(llm, self.lib.llm_refusals)

    def embedding_model(self) -> str:
        return self.lib.embedding_model(self.row)

    def save_retrieval(self, settings: RetrievalSettings) -> None:
        self._need("editor")
        self._check_model(settings.reranker_model, self.retrieval_settings().reranker_model)
        self.lib.require_owner()
        save_settings(self.lib, self.row, "retrieval", asdict(settings))
        self.refresh()
        self._audit("retrieval_settings_saved", f"{settings.mode} top_k={settings.top_k} rerank={settings.rerank}")

    def save_chunking(self, config: ChunkingConfig) -> None:
        self._need("editor")
        self.lib.require_owner()
        save_settings(self.lib, self.row, "chunking", config.to_dict())
        self.refresh()
        self._audit("chunking_settings_saved")

    def save_llm(self, settings: LLMSettings, save_key: bool = False, test: bool = True) -> str:
        """Save the endpoint (the key only when asked) after testing it; "" when it answered, else the
        Chinese reason it did not (saved anyway: the server may be down for a moment — the page warns).
        Where questions and passages are sent is a security decision: the KB's owner (or an admin) only."""
        from services.answers.llm import LLMClient

        self._need("owner")
        self.lib.require_owner()
        self._check_endpoint(settings)
        warning = ""
        if test and settings.configured:
            try:
                LLMClient(settings, self.lib.llm_refusals).test_connection()
            except errors.WendaoError as exc:
                warning = exc.message_zh
        save_llm_settings(self.lib, self.row, settings, save_key)
        self.refresh()
        self._audit("llm_endpoint_saved", redact_url(settings.base_url))
        return warning

    def test_llm(self, settings: LLMSettings) -> str:
        """Send one short request to the endpoint; its reply (LLMError subclasses on failure)."""
        from services.answers.llm import LLMClient

        self._need("owner")
        self._check_endpoint(settings)
        return LLMClient(settings, self.lib.llm_refusals).test_connection()

    def _check_endpoint(self, settings: LLMSettings) -> None:
        """In team mode, an endpoint other than the server's own must not reach internal addresses
        (services.netguard); the server's configured endpoint is the operator's choice."""
        from services import auth, netguard
        from services.config import same_endpoint

        server = replace(LLMSettings.from_env(), **server_llm_secrets())
        if auth.team_mode() and settings.base_url and not same_endpoint(settings.base_url, server.base_url):
            netguard.check_endpoint(settings.base_url)

    def test_reranker(self, model: str):
        """Load the reranker and score 10 pairs; the loaded model (device, speed)."""
        from services.search.rerank import load_reranker

        self._need("editor")
        self._check_model(model, self.retrieval_settings().reranker_model)
        reranker = load_reranker(model)
        reranker.score("测试", ["测试段落"] * 10)
        return reranker

    # --- model servers (where the KB's chunks and questions are sent: owners only) -----------------------
    def embedding_server_form(self) -> dict:
        """The settings form's start values for an embedding server (never a key, only where one comes from)."""
        from services.index.model_servers import embedding_server_form

        return embedding_server_form(self.lib, self.row)

    def try_embedding_server(self, base_url: str, model: str, query_prefix: str = "", passage_prefix: str = "",
                             api_key: str = "") -> dict:
        """One probe through the server as the form describes, nothing saved: {"dim", "ms"}."""
        from services.index.model_servers import try_embedding_server

        self._need("owner")
        self._check_url(base_url, "向量模型服务")
        return try_embedding_server(self.lib, self.row, base_url, model, query_prefix, passage_prefix, api_key)

    def use_embedding_server(self, base_url: str, model: str, query_prefix: str = "", passage_prefix: str = "",
                             api_key: str = "") -> int:
        """Embed this KB through the server from now on: the server is tested first (one probe: it
        answers, with vectors of some dimension), so an address that does not work is refused here
        with the Chinese reason instead of a background job failing later; a typed key is saved for
        exactly that endpoint once it worked; then a re-embed job is queued (search keeps the old
        vectors until it is done)."""
        from services.config import served_name
        from services.index.model_servers import save_server_key, try_embedding_server

        self._need("owner")
        self.lib.require_owner()
        if not base_url.strip() or not model.strip():
            raise errors.ModelLoadError("请填写模型服务的接口地址（base_url）和模型名。")
        self._check_url(base_url, "向量模型服务")
        try_embedding_server(self.lib, self.row, base_url, model, query_prefix, passage_prefix, api_key)
        if api_key:
            save_server_key(self.lib, self.row, base_url, api_key)
        self._audit("embedding_server_used", redact_url(base_url))
        return self.reembed(served_name(base_url, model, query_prefix, passage_prefix))

    def use_rerank_server(self, base_url: str, model: str, api_key: str = "") -> dict:
        """Rerank this KB's searches through a /rerank server (tested first): {"ms_per_100"}."""
        from services.search.rerank import use_rerank_server

        self._need("owner")
        self._check_url(base_url, "重排模型服务")
        result = use_rerank_server(self.lib, self.row, base_url, model, api_key)
        self.refresh()
        self._audit("rerank_server_used", redact_url(base_url))
        return result

    def _check_url(self, base_url: str, what: str = "模型服务") -> None:
        """A model server's address: a URL at all (「not a url」 is said to be malformed, not
        unreachable), then in team mode not towards internal addresses."""
        if errors.malformed_endpoint_zh(base_url):
            raise errors.MalformedEndpoint(errors.malformed_endpoint_zh(base_url, what))
        self._check_endpoint(LLMSettings(base_url=base_url))

    def _check_model(self, name: str, current: str = "") -> None:
        """A model behind a model server (a `served:` name) is an endpoint the KB's chunks and
        questions are sent to, so naming a new one is the same decision as `use_embedding_server`:
        the KB's owner (or an admin) only, and in team mode never towards internal addresses. In-process
        models, the endpoint the KB already uses (`current`) and the server's own stay an editor's choice."""
        from services.config import SERVED, same_endpoint, server_endpoints
        from services.index.served import parse_served

        served = parse_served(name) if isinstance(name, str) and name.startswith(SERVED) else None
        if served is None:
            self._check_folder(name, current)
            return
        known = [m.base_url for m in (parse_served(current) if str(current).startswith(SERVED) else None,) if m]
        if any(same_endpoint(served.base_url, url) for url in [*known, *server_endpoints()]):
            return
        self._need("owner")
        self._check_url(served.base_url)

    def _check_folder(self, name: str, current: str = "") -> None:
        """In team mode a model named by a folder on the server is an admin's choice: a member could
        otherwise probe which folders exist there (the error differs) or load files from anywhere the
        server can read. Registry models, hub ids, the KB's current model and fine-tuned models the
        member may see stay selectable. Refused the same way whether or not the folder exists."""
        from services.index.models import MODELS

        who = self.session.who
        if not name or name == current or name in MODELS or access.is_admin(self.store, who):
            return
        if any(name == spec.hf_id for spec in MODELS.values()):
            return
        visible = {m["path"] for kind in ("embedding", "reranker") for m in self.session.finetuned_models(kind)}
        if name in visible:
            return
        looks_like_path = name.startswith(("/", "~", ".", "\\")) or (len(name) > 1 and name[1] == ":")
        if looks_like_path or Path(name).expanduser().exists():
            raise errors.PermissionDenied("团队模式下，只有管理员可以使用服务器上的模型目录；"
                                          "请从列表中选择模型（含本知识库可见的微调模型），或请管理员添加。")

    # --- search and answers ----------------------------------------------------------------------
    def retriever(self, settings: RetrievalSettings | None = None, doc_ids: list[str] | None = None):
        from services.search.retrieval import Retriever

        return Retriever(self.lib, self.row, settings or self.retrieval_settings(), doc_ids=doc_ids)

    def search(self, query: str, settings: RetrievalSettings | None = None, doc_ids: list[str] | None = None):
        """Hits with every stage's rank and score (the lab, the CLI, the API's retrieval endpoint)."""
        if not (query or "").strip():
            raise errors.WendaoError("请输入查询内容。")
        _bounded(query, "查询")
        self._need("viewer")
        return self.retriever(settings, doc_ids).search(query)

    def explain_expected(self, result, expected: str, settings: RetrievalSettings | None = None,
                         doc_ids: list[str] | None = None):
        """Where the passage the user expected sits for the lab's search `result` (run with `settings` and
        `doc_ids`) and why it was or was not found (services.search.diagnosis.ExpectedReport); the chat's
        count is this KB's top-k."""
        from services.search.diagnosis import explain

        _bounded(expected, "期望的内容")
        self._need("viewer")
        return explain(self.retriever(settings, doc_ids), result, expected, self.retrieval_settings().top_k)

    def ask(self, question: str, conversation: str | None = None, doc_ids: list[str] | None = None,
            settings: RetrievalSettings | None = None, llm: LLMSettings | None = None, session_key: str = "",
            on_preview: Callable | None = None, save: bool = True, history=None,
            start: bool = False) -> "AskStream":
        """Answer `question` (streamed) in the conversation `conversation` (its public id; a new one when
        None), and save the turn when the answer is complete. `llm` None: the KB's endpoint as the chat
        page and the CLI both resolve it (`llm_settings`). `history`: earlier turns given by the caller
        (the OpenAI-compatible API sends them with every request) instead of a saved conversation.
        `start`: a `conversation` id this principal does not have yet starts a new one under that id
        (scripts name their conversations: CLI `ask --conversation ID`)."""
        from services.answers.answer import Conversation, stream_answer

        question = (question or "").strip()
        if not question:
            raise errors.WendaoError("请输入问题。")
        _bounded(question, "问题")
        self._need("viewer")
        if history is not None:
            history = _bounded_history(history)
        info, new_key = None, None
        if conversation:
            try:
                info = self.conversation(conversation)
            except errors.ConversationNotFound:
                if not start:
                    raise
                new_key = str(conversation)
        if history is None:
            history = conversations.history(self.store, info.id) if info else Conversation()
        settings = settings or self.retrieval_settings()
        llm = llm if llm is not None else self.llm_settings(session_key)
        if llm.configured:
            self._check_endpoint(llm)
        stream = stream_answer(self.retriever(settings, doc_ids), llm, question, history, on_preview=on_preview)
        saved = {"retrieval": asdict(settings), "doc_ids": doc_ids, "llm_model": llm.model if llm.configured else ""}
        if save:
            self.lib.require_owner()  # saving writes rows: refused before anything is done
        return AskStream(self, stream, question, info, saved if save else None, new_key)

    def answer_batch(self, questions, llm: LLMSettings | None = None, settings: RetrievalSettings | None = None) -> dict:
        """Answer a question set (CLI `ask --questions`): per-question answers with the gold check."""
        from services.answers.answer import answer_questions_batch

        return answer_questions_batch(self.retriever(settings), llm or self.llm_settings(), questions)

    # --- conversations --------------------------------------------------------------------------
    def conversations(self) -> list[ConversationInfo]:
        """The principal's own conversations in this KB, most recent first."""
        return conversations.list_for(self.store, self.id, self.session.who.owner_tag)

    def conversation(self, key: str) -> ConversationInfo:
        """One of the principal's conversations in this KB by its public id (not found otherwise)."""
        info = conversations.find(self.store, str(key))
        if info.kb_id != self.id or info.owner != self.session.who.owner_tag:
            raise errors.ConversationNotFound()
        return info

    def turns(self, key: str) -> list[dict]:
        return conversations.turns(self.store, self.conversation(key).id)

    def rename_conversation(self, key: str, title: str) -> None:
        conversations.rename(self.store, self.conversation(key).id, title)

    def delete_conversation(self, key: str) -> None:
        info = self.conversation(key)
        conversations.delete(self.store, info.id)
        self._audit("conversation_deleted", info.title)

    def export_conversation(self, key: str) -> tuple[str, str]:
        """(file name, Markdown) of a conversation, named after its title."""
        info = self.conversation(key)
        return conversations.export_filename(info.title), conversations.export_markdown(
            self.name, conversations.turns(self.store, info.id))

    # --- changes ---------------------------------------------------------------------------------
    def rename(self, name: str) -> None:
        self._need("owner")
        self.lib.require_owner()
        old = self.name
        self.row = self.lib.rename_kb(self.row, name)
        self.session.audit("kb_renamed", old, self.name)

    def deletion_summary(self) -> dict:
        """What deleting the KB removes, for the confirmation: {"documents": n, "conversations": n
        (everyone's, not only the caller's), "question_set": bool}."""
        return {"documents": len(self.store.list_documents(self.id)),
                "conversations": len(conversations.list_for(self.store, self.id)),
                "question_set": self.question_set() is not None}

    def delete(self) -> None:
        """Delete the KB with its documents, indexes, conversations, keys and hidden copies."""
        self._need("owner")
        self.lib.delete_kb(self.row)
        self._audit("kb_deleted")

    def set_enabled(self, doc_id: str, enabled: bool) -> None:
        self._need("editor")
        name = self.document(doc_id).filename
        self.lib.set_enabled(self.row, doc_id, enabled)
        self._audit("document_enabled" if enabled else "document_disabled", name)

    def delete_document(self, doc_id: str) -> None:
        self._need("editor")
        name = self.document(doc_id).filename
        self.lib.delete_document(self.row, doc_id)
        self._audit("document_deleted", name)

    def upload(self, filename: str, data: bytes, config: ChunkingConfig | None = None) -> int:
        """Queue one file for background indexing; the job id."""
        from services.jobs import chunking_params

        self._need("editor")
        caps = _upload_caps(self.session.who)
        params = {**chunking_params(config or self.chunking_config()), **({"by": list(caps)} if caps else {})}
        job = worker.submit(self.lib, self.row, "ingest", filename, params, data, self.session.ws.background, caps)
        self._audit("document_uploaded", f"#{job} {filename[:200]}")  # who put which text into the KB
        return job

    def check_upload_slot(self) -> None:
        """TooManyUploads when this caller may not queue another upload now (the API asks before reading
        the file's bytes; `upload` decides atomically with the job's insert)."""
        self._need("editor")
        caps = _upload_caps(self.session.who)
        if caps:
            self.store.jobs.check_caps("ingest", caps)

    def ingest_paths(self, paths: Iterable[str | Path], config: ChunkingConfig | None = None,
                     on_file=None, progress=None):
        """Index files and folders now, in this process (the CLI); an IngestReport."""
        from services.index.ingest import ingest_paths

        self._need("editor")
        return ingest_paths(self.lib, self.row, paths, config or self.chunking_config(), on_file, progress)

    def rechunk(self, doc_id: str, config: ChunkingConfig) -> int:
        name = self.document(doc_id).filename
        job = self.submit("rechunk", name, {"doc_id": doc_id, "config": config.to_dict()})
        self._audit("document_rechunked", name)
        return job

    def reindex(self) -> int:
        return self.submit("reindex", "重建索引", {})

    def optimize(self) -> int:
        return self.submit("optimize", "优化索引", {})

    def not_recommended(self, model: str) -> str:
        """Why switching to `model` is advised against, in Chinese: a fine-tuned model its run measured
        not better (「微调后检测变差（0.886 → 0.881），不建议使用」); "" otherwise."""
        from services.tuning.finetune import card_of, verdict

        card = card_of(model)
        return verdict(card)["warning"] if card is not None and "after" in card and "before" in card else ""

    def reembed(self, model: str, confirmed: bool = False) -> int:
        """Switch the embedding model (re-embeds every chunk in the background). A fine-tuned model its
        run measured not better is switched to only when `confirmed` (the user was shown
        `not_recommended` and still chose it): NeedsConfirmation otherwise."""
        from services.index.served import display_name as display_model

        self._need("editor")
        self._check_model(model, self.embedding_model())
        warning = self.not_recommended(model)
        if warning and not confirmed:
            raise errors.NeedsConfirmation(f"{warning}。确实要切换时，请先勾选确认。")
        job = self.submit("reembed", model, {"model": model})
        self._audit("reembed", display_model(model))
        return job

    def unscorable(self, questions) -> str:
        """Why an evaluation of `questions` (parsed) would be refused, in Chinese (no question a
        retrieval score can use: no answers, answers not found in their documents, documents not in the
        KB); "" when it can run. The 评测 page says this as soon as a file is chosen, before any count."""
        from services.tuning.evaluation import nothing_to_score_zh, split_for_kb

        parts = split_for_kb(self.lib, self.row, list(questions))
        return "" if parts["scored"] else nothing_to_score_zh(parts)

    def chunking_summary(self) -> str:
        """What 评测's 「当前知识库的切分」 is, in words: the documents' chunkings with their counts
        (「13 个文档按句子 300/120，1 个滑动窗口 4/2」): a KB's documents keep the chunking they were
        uploaded or last re-chunked with."""
        from services.tuning.evaluation import current_chunking_zh

        return current_chunking_zh(self.lib, self.row)

    def unscored(self, questions, missing: bool = True) -> str:
        """Which of `questions` (parsed) a retrieval score will leave out and why, said before the run
        (「5 个是非题；7 个没有答案的问题…」); "" when every one is scored or none is (see `unscorable`).
        `missing`: also those whose documents are not in the KB (the 评测 page says those apart)."""
        from services.tuning.evaluation import excluded_zh, split_for_kb

        parts = split_for_kb(self.lib, self.row, list(questions))
        if not missing:
            parts = {**parts, "missing": [], "missing_docs": []}
        left_out = any(parts[k] for k in ("yesno", "unanswerable", "missing", "not_found"))
        return excluded_zh(parts) if parts["scored"] and left_out else ""

    def evaluate(self, lines: list[str], modes: list[str], reranks: list[bool], chunkers: list[str],
                 limit: int | None = None, keep: bool = False, overrides: dict | None = None,
                 names: str = "zh") -> int:
        """Queue an evaluation run of the question set `lines` (JSONL) over chunker x mode x rerank, on
        the KB's retrieval settings with `overrides`; `keep` saves the set as the KB's question set
        first. `names`: "zh" labels configurations for the page, "mode" as `bm25` / `hybrid+rerank`
        (the CLI's JSON keys). A set with no question a retrieval score can use (no answer, answers not
        found in their documents, documents not in the KB) is refused now (InvalidQuestionFile) and
        never saved."""
        from services.tuning.evaluation import nothing_to_score_zh, parse_questions, save_question_set, split_for_kb

        questions = parse_questions(lines)  # a bad file is refused now, not in the background
        self._need("viewer" if chunkers == ["current"] and not keep else "editor")
        if (overrides or {}).get("reranker_model"):
            self._check_model(str(overrides["reranker_model"]), self.retrieval_settings().reranker_model)
        parts = split_for_kb(self.lib, self.row, questions[: limit or None])
        if not parts["scored"]:
            raise errors.InvalidQuestionFile(nothing_to_score_zh(parts) + ("问题集未保存。" if keep else ""))
        if any(j.active for j in self.jobs(kinds=("evaluate",))):
            # one at a time per KB: the data dir has one worker, and a viewer (who may evaluate but not
            # cancel) could otherwise queue evaluations that hold every KB's uploads for hours
            raise errors.WendaoError("这个知识库已有一个评测在排队或进行，请等它完成（或请编辑者取消）后再开始新的评测。")
        if keep:
            save_question_set(self.lib, self.row, lines)
            self._audit("question_set_saved", f"{len(questions)} 题")
        return self.submit("evaluate", "评测", {"lines": lines, "modes": modes, "reranks": reranks,
                                                "chunkers": chunkers, "limit": limit, "overrides": overrides or {},
                                                "names": names}, need="viewer")

    def finetune(self, name: str, settings=None, kind: str = "embedding") -> int:
        """Queue fine-tuning of the KB's embedding model, or (kind="reranker") training of a reranker on
        the KB's documents; the job id."""
        from services.tuning.finetune import FinetuneSettings, require_free_name, valid_model_name

        if any(j.active for j in self.jobs(kinds=("finetune", "finetune_reranker"))):
            raise errors.WendaoError("这个知识库已有一个微调任务在进行，请等它完成或先取消。")
        name = valid_model_name(name)  # names are per KB (services.tuning.finetune.kb_models_dir)
        self._need("editor")
        require_free_name(self.lib, self.row, name)
        if kind == "reranker":
            from services.tuning.rerank_training import RerankSettings

            job = self.submit("finetune_reranker", name, {"name": name, "kind": "reranker",
                                                          "settings": asdict(settings or RerankSettings())})
        else:
            job = self.submit("finetune", name, {"name": name, "settings": asdict(settings or FinetuneSettings())})
        self._audit("finetune_started", f"#{job} {kind} {name}")
        return job

    def finetune_estimate(self, settings=None, kind: str = "embedder") -> dict:
        """How long fine-tuning this KB with `settings` should take (services.tuning.finetune.estimate;
        kind "reranker": training a reranker, services.tuning.rerank_training.estimate): seconds per
        stage and in all, from its chunk count and the speed measured by the last run of that kind on
        this data dir (or the reference machine's)."""
        if kind == "reranker":
            from services.tuning.rerank_training import estimate
        else:
            from services.tuning.finetune import estimate

        return estimate(self.lib, self.row, settings)

    @staticmethod
    def finetune_verdict(card: dict) -> dict:
        """What a fine-tuned embedder's card says about using it (services.tuning.finetune.verdict):
        better or not with the decisive numbers, the not-recommended warning, small-set caveats."""
        from services.tuning.finetune import verdict

        return verdict(card)

    @staticmethod
    def finetune_progress(job: Job) -> tuple[float, float | None]:
        """(share done, seconds left) of a running fine-tuning job; the two always agree."""
        from services.tuning.finetune import progress_of

        return progress_of(job)

    def submit(self, kind: str, name: str, params: dict, data: bytes | None = None, need: str = "editor") -> int:
        """Queue a job of `kind` (services.jobs) after checking the role; the job id."""
        self._need(need)
        return worker.submit(self.lib, self.row, kind, name, params, data, self.session.ws.background)

    def jobs(self, since: float | None = None, kinds: tuple[str, ...] = INGEST_KINDS) -> list[Job]:
        """The KB's jobs of `kinds` (all active ones, and those finished after `since`; default the last
        hour). A viewer gets only those of VIEWER_JOB_KINDS (评测): an upload's log and the other editors'
        jobs are not theirs to read, whatever a page asks for."""
        self._need("viewer")
        if not access.at_least(self.role, "editor"):
            kinds = tuple(k for k in kinds if k in VIEWER_JOB_KINDS)
            if not kinds:
                return []
        return [_without_uploader(j) for j in worker.jobs(self.lib, self.row, since, kinds)]

    def job(self, job_id: int) -> Job:
        """One job of this KB; JobNotFound for another KB's, PermissionDenied for a viewer asking for a job
        of a kind only editors see (see `jobs`)."""
        job = worker.get(self.lib, job_id)
        if job.kb_id != self.id:
            raise errors.JobNotFound()
        self._need("viewer")
        if job.kind not in VIEWER_JOB_KINDS and not access.at_least(self.role, "editor"):
            raise errors.PermissionDenied(JOB_LOG_DENIED_ZH)
        return _without_uploader(job)

    def job_label(self, job: Job) -> str:
        """A job as users know it, in Chinese: what it does and on what (「上传「a.pdf」」, 「切换向量模型
        到「微调：小微调（测试库）」」, 「评测」), never a data dir path."""
        from services.views import model_label

        kind = JOB_KIND_ZH.get(job.kind, "后台任务")
        if job.kind == "reembed":
            return f"{kind}到「{model_label(job.filename)}」"
        if job.kind in ("finetune", "finetune_reranker"):
            return f"{kind}「{job.filename}」"
        return kind if job.filename in kind or job.filename in JOB_NAMES else f"{kind}「{job.filename}」"

    def waiting_for(self, job: Job) -> str:
        """What a queued job of this KB waits for, in Chinese (「排在知识库「进度测试」的上传「a.pdf」之后」):
        the data dir's worker runs one job at a time, whichever KB it belongs to. A job of a KB this
        principal may not see is not named ("另一个知识库的后台任务"); "" when nothing is ahead."""
        ahead = self.lib.store.jobs.ahead_of(job.id)
        if ahead is None:
            return ""
        if ahead.kb_id == self.id:
            return f"排在{self.job_label(ahead)}之后"
        try:
            other = self.session.kb(ahead.kb_id)
        except errors.WendaoError:
            return "排在另一个知识库的后台任务之后"
        return f"排在知识库「{other.name}」的{other.job_label(ahead)}之后"

    def cancel(self, job_id: int) -> bool:
        self._need("editor")
        job = self.job(job_id)
        cancelled = worker.cancel(self.lib, job_id)
        self._audit("job_cancelled" if cancelled else "job_cancel_too_late", f"#{job_id} {job.kind} {job.filename}")
        return cancelled

    def run_now(self, job_id: int, listener: Callable | None = None) -> Job:
        """Run a queued job in this thread (the CLI): same handler and rows as the background worker."""
        self.job(job_id)
        return worker.run_inline(self.lib, job_id, listener)

    def check(self) -> dict:
        """Compare SQLite with the BM25 and dense indexes (read-only)."""
        from services.index.maintenance import check

        return check(self.lib, self.row)

    # --- sharing and API keys (owners) ----------------------------------------------------------------
    def members(self) -> list[tuple[str, str]]:
        """(user name or "所有人", role) of everyone who holds a role on this KB."""
        self._need("owner")
        names = {u.id: u.name for u in self.store.users.all()}
        return [("所有人" if uid == 0 else names.get(uid, f"#{uid}"), role)
                for uid, role in self.store.access.members(self.id)]

    def share(self, user: str | None, role: str) -> None:
        """Give a user (None: everyone signed in) a role on this KB; role "" removes it."""
        from services.index.repositories import EVERYONE

        self._need("owner")
        if role and role not in access.ROLES:
            raise errors.WendaoError("角色只能是 viewer、editor 或 owner。")
        if user is None:
            uid = EVERYONE
        else:
            found = self.store.users.find(user)
            if found is None:
                raise errors.WendaoError(f"没有用户「{user}」。")
            uid = found.id
        if role:
            self.store.access.grant(self.id, uid, role)
        else:
            self.store.access.revoke(self.id, uid)
        self._audit("kb_shared" if role else "kb_unshared", f"{user or '所有人'}:{role}")

    def keys(self):
        self._need("owner")
        return self.store.keys.of_kb(self.id)

    def create_key(self, scope: str, name: str = ""):
        """A new API key for this KB only (shown once: the returned NewKey.key)."""
        from services import auth

        self._need("owner")
        if self.session.who.kind == "key":
            raise errors.PermissionDenied("API 密钥不能创建新的密钥。")
        who = self.session.who
        key = auth.create_key(self.store, self.row, scope, who.label, name, who.user_id if who.kind == "user" else None)
        self._audit("key_created", f"#{key.id} {scope}")
        return key

    def revoke_key(self, key_id: int) -> None:
        self._need("owner")
        row = self.store.keys.get(key_id)
        if row is None or row.kb_id != self.id:
            raise errors.WendaoError("找不到这个密钥。")
        self.store.keys.revoke(key_id)
        self._audit("key_revoked", f"#{key_id}")

    # --- question sets ---------------------------------------------------------------------------
    def question_set(self):
        from services.tuning.evaluation import question_set

        return question_set(self.lib, self.row)

    def question_set_lines(self) -> list[str] | None:
        """The saved question set as the JSONL lines it was saved from (to run it again with
        `evaluate`), or None when the KB has none."""
        import json

        from services.tuning.evaluation import QUESTION_SET_FILE

        if self.question_set() is None:
            return None
        path = self.lib.kb_folder(self.id) / QUESTION_SET_FILE
        return list(json.loads(path.read_text(encoding="utf-8"))["lines"])

    def last_result(self, kind: str) -> Job | None:
        """The KB's most recent finished (done) job of `kind`, e.g. the evaluation whose table the
        评测 page shows; None when there is none."""
        done = [j for j in self.jobs(since=0.0, kinds=(kind,)) if j.status == "done"]
        return done[-1] if done else None

    def delete_question_set(self) -> None:
        from services.tuning.evaluation import delete_question_set

        self._need("editor")
        delete_question_set(self.lib, self.row)
        self._audit("question_set_deleted")


class AskStream:
    """A streamed answer: iterate for text; `answer` once done. The turn is saved when the stream ends
    (a new conversation is created for the first turn); `conversation` is its public id."""

    def __init__(self, kb: KB, stream, question: str, info: ConversationInfo | None, saved: dict | None,
                 new_key: str | None = None):
        self.kb, self.stream, self.question, self.info, self.saved = kb, stream, question, info, saved
        self.new_key = new_key  # the id a new conversation gets (None: a random one)
        self.answer = None

    @property
    def conversation(self) -> str | None:
        return self.info.key if self.info else None

    def __iter__(self) -> Iterator[str]:
        yield from self.stream
        self.answer = self.stream.answer
        if self.saved is not None:
            self._save()

    def finish(self):
        """Consume the whole stream (non-streaming callers); the Answer."""
        for _ in self:
            pass
        return self.answer

    def _save(self) -> None:
        store, who = self.kb.store, self.kb.session.who
        if self.info is None:
            conv_id = conversations.create(store, self.kb.id, owner=who.owner_tag, key=self.new_key)
            self.info = conversations.get(store, conv_id)
        conversations.add_turn(store, self.info.id, self.question, self.answer.to_json(), self.saved)
        self.info = conversations.get(store, self.info.id)

