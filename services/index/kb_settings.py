"""A knowledge base's settings, persisted as sections of the KB's settings JSON in SQLite:
retrieval (services.config.RetrievalSettings), chunking (services.documents.chunking.ChunkingConfig)
and the LLM endpoint (services.config.LLMSettings, with the rules that bind keys to endpoints)."""
from __future__ import annotations

from dataclasses import replace

from services.config import LLMSettings, RetrievalSettings, same_endpoint
from services.documents.chunking import ChunkingConfig
from services.index.library import Library
from services.index.store import KnowledgeBase


def retrieval_settings(lib: Library, kb: KnowledgeBase) -> RetrievalSettings:
    """The KB's saved retrieval settings over the defaults (unknown saved keys ignored)."""
    saved = lib.store.get_kb(kb.id).settings.get("retrieval", {})
    return RetrievalSettings(**{k: v for k, v in saved.items() if k in RetrievalSettings.__dataclass_fields__})


def chunking_config(lib: Library, kb: KnowledgeBase) -> ChunkingConfig:
    """The KB's saved chunking settings (the default when none or invalid ones are saved)."""
    saved = lib.store.get_kb(kb.id).settings.get("chunking", {})
    try:
        return ChunkingConfig(**{k: v for k, v in saved.items() if k in ChunkingConfig.__dataclass_fields__})
    except ValueError:
        return ChunkingConfig()


def llm_settings(lib: Library, kb: KnowledgeBase, session_key: str = "", secrets: dict | None = None,
                 unsaved: dict | None = None) -> LLMSettings:
    """Endpoint settings, later sources winning: environment (OPENAI_BASE_URL, OPENAI_API_KEY,
    WENDAO_LLM_MODEL) < `secrets` (st.secrets, passed in by the UI) < settings saved for the KB <
    `unsaved` (values a visitor is trying out, e.g. the settings page's connection test).

    Keys are bound to endpoints: the server's key (env / secrets) is used only with the server's
    base_url, a key saved for the KB only with the base_url saved next to it. The key typed in
    this session (`session_key`, the visitor's own) wins wherever they point it. So a visitor who
    names another host never makes the server send its key there.
    """
    server = replace(LLMSettings.from_env(), **{k: v for k, v in (secrets or {}).items() if v})
    saved = lib.store.get_kb(kb.id).settings.get("llm", {})
    fields = {k: v for k, v in saved.items()
              if k in LLMSettings.__dataclass_fields__ and k not in ("api_key", "key_source") and v not in ("", None)}
    saved_url = fields.get("base_url", server.base_url)
    fields.update({k: v for k, v in (unsaved or {}).items()
                   if k in LLMSettings.__dataclass_fields__ and k not in ("api_key", "key_source") and v not in ("", None)})
    settings = replace(server, api_key="", **fields)
    if session_key:
        return replace(settings, api_key=session_key, key_source="session")
    for source, url, key in (("saved", saved_url, saved.get("api_key", "")), ("server", server.base_url, server.api_key)):
        if key and same_endpoint(url, settings.base_url):
            return replace(settings, api_key=key, key_source=source)
    return settings


def save_settings(lib: Library, kb: KnowledgeBase, section: str, values: dict) -> None:
    """Persist one settings section ('retrieval', 'chunking', 'llm') for a KB."""
    lib.store.update_kb_settings(kb.id, **{section: values})


def save_llm_settings(lib: Library, kb: KnowledgeBase, settings, save_key: bool = False) -> None:
    """Persist endpoint settings; the API key only when the user explicitly asks (it is then
    stored in plain text in the KB's settings JSON, which the UI says). A key that came from the
    server (env / st.secrets) is never copied into the store."""
    values = dict(settings.__dict__)
    source = values.pop("key_source", "")
    if not save_key or source == "server" or not values.get("api_key"):
        values.pop("api_key", None)
    save_settings(lib, kb, "llm", values)
