"""Kept conversations: per knowledge base, in SQLite, so a reload or a restart loses nothing.

A conversation is a titled list of turns; each turn stores the question and everything needed to
show it again and to continue from it: the answer's JSON (text, mode, rewritten query, citations
with document offsets and pages, timings, notices) and the settings it was answered with.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from services import errors
from services.index.store import Store

TITLE_CHARS = 30


@dataclass
class ConversationInfo:
    id: int
    kb_id: int
    title: str
    created_at: float
    updated_at: float
    turns: int


def create(store: Store, kb_id: int, title: str = "新对话", conversation_id: int | None = None) -> int:
    """A new conversation of the KB (with the given id, when a script names it); returns its id."""
    now = time.time()
    with store._lock:
        if conversation_id is None:
            cur = store.db.execute("INSERT INTO conversations(kb_id, title, created_at, updated_at) VALUES (?,?,?,?)",
                                   (kb_id, title, now, now))
            return cur.lastrowid
        store.db.execute("INSERT INTO conversations(id, kb_id, title, created_at, updated_at) VALUES (?,?,?,?,?)",
                         (conversation_id, kb_id, title, now, now))
        return conversation_id


def list_for(store: Store, kb_id: int) -> list[ConversationInfo]:
    """A KB's conversations, most recently used first."""
    rows = store.db.execute(
        "SELECT c.id, c.kb_id, c.title, c.created_at, c.updated_at, "
        "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id=c.id) FROM conversations c "
        "WHERE c.kb_id=? ORDER BY c.updated_at DESC, c.id DESC", (kb_id,))
    return [ConversationInfo(*r) for r in rows]


def get(store: Store, conversation_id: int) -> ConversationInfo:
    row = store.db.execute(
        "SELECT c.id, c.kb_id, c.title, c.created_at, c.updated_at, "
        "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id=c.id) FROM conversations c WHERE c.id=?",
        (conversation_id,)).fetchone()
    if row is None:
        raise errors.WendaoError("找不到这个对话（可能已被删除）。")
    return ConversationInfo(*row)


def add_turn(store: Store, conversation_id: int, question: str, answer: dict, settings: dict | None = None) -> int:
    """Append a turn; the first question becomes the title of an untitled conversation."""
    now = time.time()
    payload = json.dumps({"answer": answer, "settings": settings or {}}, ensure_ascii=False)
    with store._lock, store.transaction():
        cur = store.db.execute("INSERT INTO turns(conversation_id, question, payload, created_at) VALUES (?,?,?,?)",
                               (conversation_id, question, payload, now))
        store.db.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now, conversation_id))
        store.db.execute("UPDATE conversations SET title=? WHERE id=? AND title='新对话'",
                         (_title(question), conversation_id))
        return cur.lastrowid


def turns(store: Store, conversation_id: int) -> list[dict]:
    """[{"question", "answer": {...}, "settings": {...}, "created_at"}] in order."""
    rows = store.db.execute("SELECT question, payload, created_at FROM turns WHERE conversation_id=? ORDER BY id",
                            (conversation_id,))
    return [{"question": q, **json.loads(p), "created_at": t} for q, p, t in rows]


def rename(store: Store, conversation_id: int, title: str) -> None:
    title = (title or "").strip()
    if not title or len(title) > 100:
        raise errors.InvalidName("对话名称不能为空，且不超过 100 个字符。")
    with store._lock:
        store.db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))


def delete(store: Store, conversation_id: int) -> None:
    with store._lock, store.transaction():
        store.db.execute("DELETE FROM turns WHERE conversation_id=?", (conversation_id,))
        store.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))


def history(store: Store, conversation_id: int):
    """The conversation as services.answers.answer.Conversation, to continue it: each turn with its
    standalone query (follow-up rewriting) and the documents its answer was about (a follow-up keeps
    to them). Turns kept before citations carried document ids find them through their chunks."""
    from services.answers.answer import Conversation, Turn, answer_documents

    conv = Conversation()
    for t in turns(store, conversation_id):
        a = t["answer"]
        conv.turns.append(Turn(t["question"], a.get("query", t["question"]), a.get("answer", ""),
                               answer_documents(_with_doc_ids(store, a))))
    return conv


def _with_doc_ids(store: Store, answer: dict) -> dict:
    """The answer JSON with every citation's doc_id (older turns: from the cited chunk, else the
    source's chunks); citations whose chunks are gone keep none."""
    citations = [dict(c) for c in answer.get("citations", [])]
    missing = [c for c in citations if not c.get("doc_id")]
    if missing:
        sources = answer.get("sources", [])
        ids = {c.get("n"): (sources[c["n"] - 1].get("chunk_ids") or [None])[0] if 1 <= c.get("n", 0) <= len(sources) else None
               for c in missing}
        chunks = store.get_chunks([i for i in ids.values() if i is not None])
        for c in missing:
            chunk = chunks.get(ids.get(c.get("n")))
            if chunk is not None:
                c["doc_id"] = chunk.doc_id
    return {**answer, "citations": citations}


def ask(lib, kb, question: str, conversation_id: int | None = None, llm=None, settings=None,
        doc_ids: list[str] | None = None):
    """Ask in a saved conversation and keep the turn: continues conversation `conversation_id` of
    the KB (follow-ups keep to the documents its answers were about), or starts it — under that id
    when it is given and free, else a new one. Returns (services.answers.answer.Answer, conversation id).
    The turn is saved with its answer JSON and the settings used, as the chat page saves it. Saving
    writes rows, so only the data dir's owner may (DataDirBusy while the app holds it, before anything
    is done). Raises WendaoError for an empty question or a conversation of another knowledge base."""
    from dataclasses import asdict

    from services.answers.answer import answer_question
    from services.config import LLMSettings
    from services.index.library import retrieval_settings
    from services.search.retrieval import Retriever

    question = (question or "").strip()
    if not question:
        raise errors.WendaoError("请输入问题。")
    lib.require_owner()
    store, info = lib.store, None
    if conversation_id is not None:
        try:
            info = get(store, conversation_id)
        except errors.WendaoError:
            info = None
        if info is not None and info.kb_id != kb.id:
            raise errors.WendaoError(f"对话 {conversation_id} 属于另一个知识库，不能在这里继续。")
    settings = settings or retrieval_settings(lib, kb)
    llm = llm or LLMSettings()
    history_ = history(store, conversation_id) if info is not None else None
    answer = answer_question(Retriever(lib, kb, settings, doc_ids=doc_ids), llm, question, history_)
    if info is None:
        conversation_id = create(store, kb.id, conversation_id=conversation_id)
    add_turn(store, conversation_id, question, answer.to_json(),
             {"retrieval": asdict(settings), "doc_ids": doc_ids, "llm_model": llm.model if llm.configured else ""})
    return answer, conversation_id


def _title(question: str) -> str:
    q = " ".join(question.split())
    return q if len(q) <= TITLE_CHARS else q[:TITLE_CHARS] + "…"
