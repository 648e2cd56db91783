"""Settings: where data lives and the defaults that work offline.

Values come from environment variables (WENDAO_*, OPENAI_*, QDRANT_*); the UI may override the
per-knowledge-base parts (retrieval/chunking/LLM) and persists them in the store.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def data_dir() -> Path:
    """The data directory (`WENDAO_DATA_DIR`, default ./data), created on demand — for its owner only
    (0700): it holds every KB's text, every conversation and saved endpoint keys, which no other
    account on the machine may read whatever roles the app gives. An existing folder keeps its mode."""
    path = Path(os.environ.get("WENDAO_DATA_DIR", "./data")).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


SECRET_NAMES = {"OPENAI_BASE_URL": "base_url", "OPENAI_API_KEY": "api_key", "WENDAO_LLM_MODEL": "model"}


def server_llm_secrets() -> dict:
    """LLM endpoint values from Streamlit's secrets files (~/.streamlit/secrets.toml, then
    ./.streamlit/secrets.toml winning), read here so the app, the CLI and the API resolve the
    endpoint the same way. Values stay on the server (services.index.kb_settings.llm_settings)."""
    import tomllib

    found: dict = {}
    for path in (Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"):
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.update({field: str(values[name]) for name, field in SECRET_NAMES.items() if values.get(name)})
    return found


def max_file_bytes() -> int:
    """Largest accepted upload (`WENDAO_MAX_FILE_MB`, default 200). One MB is 1024 x 1024 bytes
    everywhere (limit, messages), as for Streamlit's maxUploadSize in .streamlit/config.toml."""
    return int(float(os.environ.get("WENDAO_MAX_FILE_MB", "200")) * 1024 * 1024)


def max_uploads_in_flight() -> tuple[int, int]:
    """How many uploads one API key (`WENDAO_MAX_UPLOADS_PER_KEY`, default 10) and one user, with the keys
    they made (`WENDAO_MAX_UPLOADS_PER_USER`, default 200: a folder chosen on the upload page), may have
    queued or being indexed at once (the single local user has no limit); 0 = no limit."""
    return _upload_limit("WENDAO_MAX_UPLOADS_PER_KEY", 10), _upload_limit("WENDAO_MAX_UPLOADS_PER_USER", 200)


def _upload_limit(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:  # the core turns it into a WendaoError (services.workspace)
        raise ValueError(f"{name} 应为不小于 0 的整数（0 为不限），当前为「{raw[:40]}」。")
    return value


def max_document_chars() -> int:
    """Most characters one document may hold (`WENDAO_MAX_DOC_CHARS`, default 3 million, about
    1,500 pages of Chinese); parsers stop at this cap so memory stays bounded, also in the stages
    after parsing (jieba tokens of 4.9 million characters alone peaked at 600 MB)."""
    return int(float(os.environ.get("WENDAO_MAX_DOC_CHARS", "3000000")))


@dataclass(repr=False)
class LLMSettings:
    """An OpenAI-compatible endpoint. An empty model means "no LLM": answers are extractive.

    `key_source` says where `api_key` came from ("server": env / st.secrets, "saved": the KB's
    settings, "session": typed by this visitor, "" none), so the UI can say so without ever
    showing the key. repr() never contains the key.
    """

    base_url: str = ""
    api_key: str = ""
    model: str = ""
    temperature: float = 0.1
    max_tokens: int = 1024
    timeout: float = 60.0
    max_retries: int = 3
    structured_output: bool = True
    verify_answerable: bool = True  # ask the model first whether the sources answer the question
    key_source: str = field(default="", compare=False)

    def __repr__(self) -> str:
        return "LLMSettings(" + ", ".join(f"{k}={v!r}" for k, v in self.redacted().items()) + ")"

    @property
    def configured(self) -> bool:
        return bool(self.model and (self.base_url or self.api_key))

    @classmethod
    def from_env(cls) -> "LLMSettings":
        return cls(
            base_url=os.environ.get("OPENAI_BASE_URL", ""),
            api_key=os.environ.get("OPENAI_API_KEY", ""),
            model=os.environ.get("WENDAO_LLM_MODEL", ""),
            timeout=float(os.environ.get("WENDAO_LLM_TIMEOUT", "60")),
        )

    def redacted(self) -> dict:
        """A dict safe to show or save: the key is never included."""
        d = dict(self.__dict__)
        d["api_key"] = "***" if self.api_key else ""
        return d


OPENAI_DEFAULT_URL = "https://api.openai.com/v1"


def same_endpoint(a: str, b: str) -> bool:
    """Whether two base URLs name the same endpoint ("" is the SDK's default, OpenAI).

    Deliberately strict: only the scheme/host letter case and a trailing slash are forgiven, so
    a key bound to one endpoint is never sent to a look-alike ("http://host@evil/", other port).
    """
    def norm(url: str) -> tuple:
        parts = urlsplit(url.strip() or OPENAI_DEFAULT_URL)
        return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query

    return norm(a) == norm(b)


_SECRET_QUERY = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth)", re.I)
REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL as it may be shown in a browser: the password in its user-info and the values of
    key/token/secret-like query parameters replaced by ***. Used for the server's endpoint, which
    can carry credentials (http://user:pass@host/v1, ?api-key=...) that must stay on the server."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = "&".join(f"{k}={REDACTED}" if _SECRET_QUERY.search(k) else (f"{k}={v}" if sep else k)
                     for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def restore_redacted(typed: str, actual: str) -> str:
    """What the user meant: the real URL when they left its redacted form unchanged."""
    return actual if typed.strip() and typed.strip() == redact_url(actual) else typed


SERVED = "served:"  # names of models behind an HTTP model server start with this


def served_name(base_url: str, model: str, query_prefix: str = "", passage_prefix: str = "") -> str:
    """The name recorded for a model behind a model server (an OpenAI-compatible /embeddings or a
    /rerank endpoint): "served:" + JSON of its endpoint, served model name and the prefixes put before
    queries and passages. Self-describing and secret-free (keys are resolved per endpoint when the
    model is loaded), so a KB's settings say exactly which server and model built its vectors."""
    entry = {"base_url": base_url.strip(), "model": model.strip()}
    if query_prefix or passage_prefix:
        entry.update(query_prefix=query_prefix, passage_prefix=passage_prefix)
    return SERVED + json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def team_mode() -> bool:
    """Whether sign-in is on (WENDAO_AUTH=local|oidc; services.auth reads and validates the modes)."""
    return os.environ.get("WENDAO_AUTH", "").strip().lower() in ("local", "oidc")


def server_endpoints() -> list[str]:
    """The base URLs of the model endpoints the operator configured for the server (embedding server,
    rerank server, LLM): trusted as the operator's choice, unlike URLs typed in a browser."""
    urls = [os.environ.get(name, "").strip() for name in
            ("WENDAO_EMBEDDING_BASE_URL", "WENDAO_RERANK_BASE_URL", "OPENAI_BASE_URL")]
    return [u for u in urls if u]


def server_key_pairs() -> list[tuple[str, str]]:
    """(base_url, key) of every server-side model endpoint configured in the environment: the
    embedding server, the rerank server and the LLM endpoint. A key is only ever sent to the
    endpoint it is paired with here (see `same_endpoint`)."""
    pairs = [(os.environ.get(url, ""), os.environ.get(key, ""))
             for url, key in (("WENDAO_EMBEDDING_BASE_URL", "WENDAO_EMBEDDING_API_KEY"),
                              ("WENDAO_RERANK_BASE_URL", "WENDAO_RERANK_API_KEY"),
                              ("OPENAI_BASE_URL", "OPENAI_API_KEY"))]
    return [(url, key) for url, key in pairs if key]


def default_reranker() -> str:
    """The reranker new settings start with: the rerank server's model when WENDAO_RERANK_BASE_URL
    and WENDAO_RERANK_MODEL are set, else bge-reranker-base (in-process, when its weights are there)."""
    url, model = os.environ.get("WENDAO_RERANK_BASE_URL", "").strip(), os.environ.get("WENDAO_RERANK_MODEL", "").strip()
    return served_name(url, model) if url and model else "bge-reranker-base"


def rerank_by_default() -> bool:
    """Reranking is on by default where the server has a rerank endpoint configured (off otherwise:
    no reranker weights ship offline)."""
    return default_reranker().startswith(SERVED)


@dataclass
class RetrievalSettings:
    """How a query is answered from the indexes; every field is tunable in the UI."""

    mode: str = "hybrid"  # bm25 | dense | hybrid
    fusion: str = "weighted"  # weighted | rrf
    dense_weight: float = 0.5
    rrf_k: int = 60
    bm25_top_k: int = 50
    dense_top_k: int = 50
    top_k: int = 5
    rerank: bool = field(default_factory=rerank_by_default)
    reranker_model: str = field(default_factory=default_reranker)
    rerank_top_n: int = 20
    # Share of the reranker in the order of the reranked candidates: 1.0 orders them by its score alone;
    # below 1 each candidate's reciprocal ranks (k = rrf_k) are blended, the first stage's with the
    # rest, so a weak reranker (one trained on a KB's pseudo-questions) adjusts rather than replaces it.
    rerank_weight: float = 1.0
    merge_windows: bool = True


def qdrant_url() -> str | None:
    """A Qdrant server URL (`QDRANT_URL`), or None for the embedded on-disk engine."""
    return os.environ.get("QDRANT_URL") or None
