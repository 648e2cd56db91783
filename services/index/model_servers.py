"""Per-KB settings of model servers (what the settings page offers): embed a KB through an
OpenAI-compatible `/embeddings` server, and keep an API key for a server endpoint.

Keys follow the LLM key rules (services.index.kb_settings.llm_settings): the server's own keys (env) are
never shown nor saved; a key typed for a KB is saved next to the base_url it was typed for and only
ever sent there (services.index.served.key_for). Unlike the LLM's, an embedding key cannot stay in the
browser session only: background ingest needs it, so it is saved (the page says so) or not used.
"""
from __future__ import annotations

import time
from typing import Callable

from services import errors
from services.config import same_endpoint, served_name, server_key_pairs
from services.index.library import Library
from services.index.models import served_prefixes
from services.index.served import ServedEmbedder, key_for, parse_served
from services.index.store import KnowledgeBase


def embedding_server_form(lib: Library, kb: KnowledgeBase) -> dict:
    """What the settings form starts with: the KB's served model, else the server's default
    (WENDAO_EMBEDDING_BASE_URL / _MODEL), else blanks; plus where a key for that endpoint comes from
    ("saved", "server" or "") — never the key itself."""
    import os

    served = parse_served(lib.embedding_model(kb))
    if served is None:
        url, model = os.environ.get("WENDAO_EMBEDDING_BASE_URL", ""), os.environ.get("WENDAO_EMBEDDING_MODEL", "")
        query, passage = served_prefixes(model) if model else ("", "")
        form = {"base_url": url, "model": model if url else "", "query_prefix": query, "passage_prefix": passage}
    else:
        form = {"base_url": served.base_url, "model": served.model, "query_prefix": served.query_prefix,
                "passage_prefix": served.passage_prefix}
    form["key_source"] = key_source(lib, kb, form["base_url"])
    return form


def key_source(lib: Library, kb: KnowledgeBase, base_url: str) -> str:
    """"saved" when the KB holds a key for this endpoint, "server" when the server has one, else ""."""
    if not base_url:
        return ""
    if any(e.get("api_key") and same_endpoint(e.get("base_url", ""), base_url) for e in _saved_keys(lib, kb)):
        return "saved"
    return "server" if any(same_endpoint(url, base_url) for url, _ in server_key_pairs()) else ""


def try_embedding_server(lib: Library, kb: KnowledgeBase, base_url: str, model: str, query_prefix: str = "",
                         passage_prefix: str = "", api_key: str = "") -> dict:
    """Connect to a server as the form describes (a fresh client, nothing saved): {"dim", "ms"} of one
    probe, or a ModelServerError saying what is wrong (unreachable, 401, model not served…)."""
    served = parse_served(served_name(base_url, model, query_prefix, passage_prefix))
    started = time.perf_counter()
    embedder = ServedEmbedder(served, api_key or key_for(base_url, _saved_keys(lib, kb)))
    embedder.encode_query("测试")
    return {"dim": embedder.dim, "ms": round((time.perf_counter() - started) * 1000, 1)}


def use_embedding_server(lib: Library, kb: KnowledgeBase, base_url: str, model: str, query_prefix: str = "",
                         passage_prefix: str = "", api_key: str = "",
                         progress: Callable[[int, int], None] | None = None) -> int:
    """Switch the KB to embed through the server: save a typed key for this endpoint (if any), then
    re-embed every chunk (services.index.reembed; search keeps the old vectors until done). Returns
    the number of chunks. Raises ModelServerError / ModelLoadError, leaving the KB as it was."""
    from services.index.reembed import reembed

    lib.require_owner()
    if not base_url.strip() or not model.strip():
        raise errors.ModelLoadError("请填写模型服务的接口地址（base_url）和模型名。")
    name = served_name(base_url, model, query_prefix, passage_prefix)
    if api_key:
        try_embedding_server(lib, kb, base_url, model, query_prefix, passage_prefix, api_key)  # before saving it
        save_server_key(lib, kb, base_url, api_key)
    return reembed(lib, kb, name, progress)


def save_server_key(lib: Library, kb: KnowledgeBase, base_url: str, api_key: str) -> None:
    """Keep `api_key` in the KB's settings for exactly `base_url` (replacing an earlier one for it)."""
    keys = [e for e in _saved_keys(lib, kb) if not same_endpoint(e.get("base_url", ""), base_url)]
    lib.store.update_kb_settings(kb.id, model_server_keys=keys + [{"base_url": base_url.strip(), "api_key": api_key}])


def _saved_keys(lib: Library, kb: KnowledgeBase) -> list[dict]:
    return list(lib.store.get_kb(kb.id).settings.get("model_server_keys") or [])


def served_embedders(current: str) -> list[str]:
    """Served embedding models to offer in the model list: the KB's own (when served) and the server's
    default (WENDAO_EMBEDDING_BASE_URL + WENDAO_EMBEDDING_MODEL)."""
    from services.index.models import default_embedder

    return [n for n in dict.fromkeys([current, default_embedder()]) if parse_served(n)]


def served_rerankers(current: str) -> list[str]:
    """Served rerankers to offer: the KB's own (when served) and WENDAO_RERANK_BASE_URL + _MODEL's."""
    from services.config import default_reranker

    return [n for n in dict.fromkeys([current, default_reranker()]) if parse_served(n)]
