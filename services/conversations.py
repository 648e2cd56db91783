"""Kept conversations: per knowledge base and per user, in SQLite, so a reload or a restart loses nothing.

A conversation is a titled list of turns; each turn stores the question and everything needed to
show it again and to continue from it: the answer's JSON (text, mode, rewritten query, citations
with document offsets and pages, timings, notices) and the settings it was answered with. The rows
live in services.index.repositories.ConversationRows; this module is the conversation logic on top
(titles, continuing a conversation, export). Each conversation has an unguessable public id
(`key`), used in URLs and the API instead of the sequential row id.
"""
from __future__ import annotations

import re
import secrets

from services import errors
from services.index.repositories import ConversationInfo  # noqa: F401 - the view type of this module
from services.index.store import Store

TITLE_LIMIT = 100


KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")


def create(store: Store, kb_id: int, title: str = "新对话", owner: str = "", key: str | None = None) -> int:
    """A new conversation; its public id is random (hex: safe in URLs and widget keys) unless a script
    names it (`key`: letters, digits, `-`, `_`; InvalidName otherwise, or when it is taken)."""
    if key is not None:
        if not KEY.fullmatch(key):
            raise errors.InvalidName("对话 ID 只能包含字母、数字、短横线和下划线（1–64 个字符）。")
        try:
            find(store, key)
        except errors.ConversationNotFound:
            pass
        else:
            raise errors.InvalidName(f"对话 ID「{key}」已被使用。")
    return store.conversations.create(kb_id, title, owner, key or secrets.token_hex(16))


def list_for(store: Store, kb_id: int, owner: str | None = None) -> list[ConversationInfo]:
    """A KB's conversations (only `owner`'s when given), most recently used first."""
    return store.conversations.list_for(kb_id, owner)


def get(store: Store, conversation_id: int) -> ConversationInfo:
    return store.conversations.get(conversation_id)


def find(store: Store, key: str) -> ConversationInfo:
    """A conversation by its public id (ConversationNotFound when there is none)."""
    return store.conversations.find(key)


def add_turn(store: Store, conversation_id: int, question: str, answer: dict, settings: dict | None = None) -> int:
    """Append a turn; the first question becomes the title of an untitled conversation."""
    return store.conversations.add_turn(conversation_id, question, {"answer": answer, "settings": settings or {}})


def turns(store: Store, conversation_id: int) -> list[dict]:
    """[{"question", "answer": {...}, "settings": {...}, "created_at"}] in order; answers kept before their
    citations carried the citing sentence get it filled in (`with_sentences`)."""
    return [{**t, "answer": with_sentences(t["answer"])} if isinstance(t.get("answer"), dict) else t
            for t in store.conversations.turns(conversation_id)]


def with_sentences(answer: dict) -> dict:
    """The answer JSON with every citation's `sentence` (the index of the answer sentence citing it, which
    the chips and the citation dialog name as the claim), for turns kept before citations carried it: in an
    LLM answer the sentence holding the citation's [n] (a citation added by matching, `posthoc`: the next
    sentence without a marker), in order, as they were made; in an extract the quote's own number. A citation
    whose sentence is not found gets -1 (its quote then stands for the claim, as before)."""
    citations = answer.get("citations") or []
    if all("sentence" in c for c in citations):
        return answer
    from services.answers.citations import split_answer

    sentences = split_answer(answer.get("answer", "")) if answer.get("mode") == "llm" else None
    filled, at, taken = [], 0, set()  # a sentence cites a source once
    for k, c in enumerate(citations):
        c = dict(c)
        if "sentence" not in c:
            if sentences is None:
                c["sentence"] = k
            else:
                found = next((i for i in range(at, len(sentences)) if (i, c.get("n")) not in taken
                              and (not sentences[i].numbers if c.get("posthoc") else c.get("n") in sentences[i].numbers)), None)
                c["sentence"] = -1 if found is None else found
        if isinstance(c["sentence"], int) and c["sentence"] >= 0:
            at = c["sentence"]
            taken.add((at, c.get("n")))
        filled.append(c)
    return {**answer, "citations": filled}


def rename(store: Store, conversation_id: int, title: str) -> None:
    title = (title or "").strip()
    if not title or len(title) > TITLE_LIMIT:
        raise errors.InvalidName(f"对话名称不能为空，且不超过 {TITLE_LIMIT} 个字符。")
    store.conversations.rename(conversation_id, title)


def delete(store: Store, conversation_id: int) -> None:
    store.conversations.delete(conversation_id)


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


def export_filename(title: str) -> str:
    """A download name from the conversation's title: characters that file systems refuse removed."""
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f\u202a-\u202e\u2066-\u2069]+', "_", title).strip(" ._") or "对话"
    return f"问道对话-{stem[:60]}.md"


def _pages(source: dict, page: int = 1) -> tuple[int, int]:
    """A saved source's first and last page (`page` where the source names none)."""
    first, last = (source.get("pages") or [source.get("page", page)] * 2)[:2]
    return int(first), int(last)


def export_markdown(kb_name: str, turns: list[dict]) -> str:
    """The conversation as Markdown, every kept turn included. Each cited source is listed once
    (its number, document and pages), followed by the passages quoted from it, each once; an
    unsupported quote is marked （未核实）, the word the chat uses. A refused answer (「文档中没有找到…以下是
    最接近的段落」) lists those passages, the ones its chat turn shows."""
    from services.documents.pageview import page_label
    from services.documents.text import display_name

    lines = [f"# 问道对话记录 · {display_name(kb_name)}\n"]
    for t in turns:
        a = t["answer"]
        lines.append(f"## 问：{t['question']}\n")
        lines.append(a.get("answer", "") + "\n")
        sources = a.get("sources", [])
        cited: dict[int, list[dict]] = {}
        for c in a.get("citations") or []:
            cited.setdefault(c["n"], []).append(c)
        if cited:
            lines.append("**来源**\n")
            for n, quotes in sorted(cited.items()):
                c = quotes[0]
                s = sources[n - 1] if 1 <= n <= len(sources) else {}
                first, last = _pages(s, c.get("page", 1))
                said: dict[str, bool] = {}  # each quote once; unverified when any of its citations is
                for q in quotes:
                    said[q.get("quote", "")] = said.get(q.get("quote", ""), True) and bool(q.get("supported"))
                shown = "；".join(f"“{q}”" + ("" if ok else "（未核实）") for q, ok in said.items() if q)
                doc = s.get('doc') or c.get('doc', '')
                lines.append(f"- [{n}] 《{display_name(doc)}》{page_label(first, last, doc)}"
                             + (f"：{shown}" if shown else ""))
            lines.append("")
        if closest := closest_passages(a):  # the closest passages, as the chat shows them
            lines.append("**最接近的段落**\n")
            lines.append(closest + "\n")
    return "\n".join(lines)


def closest_passages(answer: dict) -> str:
    """A refused answer's closest passages (its sources) as Markdown: "- [n] 《doc》第3页" with the
    passage quoted below it, the list the chat shows under 最接近的段落 (the export, the API's and the
    CLI's refusal give the same); "" for an answer that is not refused or has no passages."""
    from services.documents.pageview import page_label
    from services.documents.text import display_name

    if answer.get("mode") != "refused":
        return ""
    lines = []
    from services.answers.refusal import distinct_passages

    for n, src in enumerate(distinct_passages(answer.get("sources") or []), start=1):  # kept turns from before
        first, last = _pages(src)
        doc = src.get("doc", "")
        lines.append(f"- [{n}] 《{display_name(doc)}》{page_label(first, last, doc)}\n")
        lines.extend("  > " + line for line in (src.get("text", "").strip() or "（空）").splitlines())
        lines.append("")
    return "\n".join(lines).rstrip()


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
