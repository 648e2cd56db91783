"""Qdrant vector indexes: embedded on disk by default, a Qdrant server when QDRANT_URL is set.

Layout (identical on both engines): one dense collection per (knowledge base, embedding model
fingerprint, build), named `kb<id>__dense_<fingerprint id>_<build>` (see `dense_collection_name`) and
recorded in the KB's settings, so every operation — search, delete, optimise, delete-KB — touches the
collection the KB really uses. Named vector "dense", cosine. Point id = chunk id from the SQLite
store; payload = {"doc_id"}. Each collection records its model fingerprint and dimension in
`meta.json` (embedded) or the collection's metadata (server); opening it with another fingerprint
raises IndexMismatch. (BM25 lives in memory, computed from SQLite: services.index.bm25. The sparse code
path here only serves the legacy `kb<id>__bm25` collections of older data dirs, which are dropped.)

Embedded engine: qdrant-edge-py (Qdrant's own engine in-process). Measured on this 2-core machine
at 100k x 384-d (bench/retrieval.py): ~12k points/s upsert, reopen 0.24 s, HNSW query ~4 ms, sparse
~1 ms. qdrant-client's local mode commits per point (~60 points/s) and reopens 100k in ~40 s, so it
is used only as the client of a real server (and, in tests, its :memory: mode stands in for one).
"""
from __future__ import annotations

import json
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from services import errors
from services.index.bm25 import SparseVector
from services.config import data_dir, qdrant_url

DENSE = "dense"
SPARSE = "bm25"


@dataclass
class IndexSpec:
    """What a collection holds: a dense model (name + dim + fingerprint) or BM25 (dim 0)."""

    name: str
    dim: int = 0
    fingerprint: str = ""

    def meta(self) -> dict:
        return {"model": self.name, "dim": self.dim, "fingerprint": self.fingerprint}

    @property
    def sparse(self) -> bool:
        return self.dim == 0


@dataclass
class ScoredId:
    id: int
    score: float


def collection_name(kb_id: int, spec: IndexSpec) -> str:
    """Legacy naming (model name slug); kept to find and drop collections of older data dirs."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name).strip("_")[:80]
    return f"kb{kb_id}__{slug}"


def dense_collection_name(kb_id: int, fingerprint_id: str, build: str) -> str:
    """`kb<id>__dense_<fingerprint id>_<build>`: the model identity is in the name, and each
    (re)build gets a new name so a rebuild never disturbs the collection being searched."""
    return f"kb{kb_id}__dense_{fingerprint_id}_{build}"


def kb_prefix(kb_id: int) -> str:
    return f"kb{kb_id}__"


def _check_meta(name: str, recorded: dict, spec: IndexSpec | None) -> None:
    if spec is not None and spec.fingerprint and recorded.get("fingerprint") not in (None, spec.fingerprint):
        from services.index.served import display_name  # the model as users know it, not its stored name

        raise errors.IndexMismatch(f"索引「{name}」由另一个向量模型建立（{display_name(recorded.get('model'))}），与当前模型不一致。"
                                   "请在文档库中“重建索引”。")


def _named(vector, sparse_type) -> dict:
    """A point's named vector in the engine's own types: BM25 sparse or dense."""
    if isinstance(vector, SparseVector):
        return {SPARSE: sparse_type(indices=vector.indices, values=vector.values)}
    return {DENSE: [float(x) for x in vector]}


class Backend(Protocol):
    def ensure(self, name: str, spec: IndexSpec) -> None: ...
    def upsert(self, name: str, ids: Sequence[int], vectors: Sequence, doc_ids: Sequence[str]) -> None: ...
    def delete(self, name: str, ids: Sequence[int]) -> None: ...
    def search(self, name: str, vector, limit: int, sparse: bool, doc_ids: Sequence[str] | None = None) -> list[ScoredId]: ...
    def count(self, name: str) -> int: ...
    def ids(self, name: str) -> set[int]: ...
    def collections(self, prefix: str) -> list[str]: ...
    def drop(self, name: str) -> None: ...
    def exists(self, name: str) -> bool: ...


class EdgeBackend:
    """Qdrant Edge shards, one folder per collection under <data>/qdrant/."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, object] = {}
        self._lock = threading.RLock()

    def _config(self, spec: IndexSpec):
        import qdrant_edge as q

        if spec.sparse:
            return q.EdgeConfig(sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)})
        return q.EdgeConfig(vectors={DENSE: q.EdgeVectorParams(size=spec.dim, distance=q.Distance.Cosine)})

    def exists(self, name: str) -> bool:
        return (self.root / name / "meta.json").exists()

    def ensure(self, name: str, spec: IndexSpec) -> None:
        self._shard(name, spec)

    def _shard(self, name: str, spec: IndexSpec | None = None):
        import qdrant_edge as q

        with self._lock:
            if name in self._shards:
                return self._shards[name]
            path = self.root / name
            meta = path / "meta.json"
            try:
                if meta.exists():
                    _check_meta(name, json.loads(meta.read_text()), spec)
                    shard = q.EdgeShard.load(str(path / "shard"))
                elif spec is None:
                    return None
                else:
                    shutil.rmtree(path, ignore_errors=True)
                    shard = q.EdgeShard.create(str(path / "shard"), self._config(spec))
                    meta.write_text(json.dumps(spec.meta()))
            except Exception as exc:  # the shard's WAL is locked by another process
                if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                    raise errors.IndexLocked() from exc
                raise
            self._shards[name] = shard
            return shard

    def upsert(self, name, ids, vectors, doc_ids) -> None:
        import qdrant_edge as q

        shard = self._shard(name)
        points = [q.Point(id=int(i), vector=_named(v, q.SparseVector), payload={"doc_id": d})
                  for i, v, d in zip(ids, vectors, doc_ids)]
        for i in range(0, len(points), 2000):
            shard.update(q.UpdateOperation.upsert_points(points[i:i + 2000]))
        shard.flush()

    def delete(self, name, ids) -> None:
        import qdrant_edge as q

        shard = self._shard(name)
        if shard is not None and ids:
            shard.update(q.UpdateOperation.delete_points([int(i) for i in ids]))
            shard.flush()

    def search(self, name, vector, limit, sparse, doc_ids=None) -> list[ScoredId]:
        """Nearest points; with `doc_ids`, only points of those documents (payload filter)."""
        import qdrant_edge as q

        shard = self._shard(name)
        if shard is None:
            return []
        if sparse:
            if not vector.indices:
                return []
            query = q.Query.Nearest(q.SparseVector(indices=vector.indices, values=vector.values), using=SPARSE)
        else:
            query = q.Query.Nearest([float(x) for x in vector], using=DENSE)
        where = (q.Filter(must=[q.FieldCondition(key="doc_id", match=q.MatchAny(any=list(doc_ids)))])
                 if doc_ids is not None else None)
        points = shard.query(q.QueryRequest(limit=limit, query=query, with_payload=False, filter=where))
        return [ScoredId(int(p.id), float(p.score)) for p in points]

    def count(self, name) -> int:
        import qdrant_edge as q

        shard = self._shard(name)
        return shard.count(q.CountRequest(exact=True)) if shard is not None else 0

    def ids(self, name) -> set[int]:
        """Every point id in a collection (for `check`)."""
        import qdrant_edge as q

        shard = self._shard(name)
        found: set[int] = set()
        offset = None
        while shard is not None:
            records, offset = shard.scroll(q.ScrollRequest(offset=offset, limit=5000, with_payload=False,
                                                           with_vector=False))
            found.update(int(r.id) for r in records)
            if offset is None:
                break
        return found

    def collections(self, prefix: str) -> list[str]:
        return sorted(p.name for p in self.root.glob(prefix + "*") if (p / "meta.json").exists())

    def optimize(self, name) -> None:
        """Build HNSW/merge segments (slow, holds the GIL: run off the UI thread)."""
        shard = self._shard(name)
        if shard is not None:
            shard.optimize()

    def drop(self, name) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()


class ServerBackend:
    """A Qdrant server (or cluster) through qdrant-client; collections are prefixed `wendao_`."""

    def __init__(self, url: str | None = None, api_key: str | None = None, client=None):
        from qdrant_client import QdrantClient

        self.client = client or QdrantClient(url=url, api_key=api_key, timeout=30)

    @staticmethod
    def _name(name: str) -> str:
        return f"wendao_{name}"

    def exists(self, name) -> bool:
        return self.client.collection_exists(self._name(name))

    def ensure(self, name, spec: IndexSpec) -> None:
        from qdrant_client import models as m

        if self.exists(name):
            _check_meta(name, self.client.get_collection(self._name(name)).config.metadata or {}, spec)
            return
        if spec.sparse:
            self.client.create_collection(
                self._name(name), vectors_config={},
                sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
                metadata=spec.meta())
        else:
            self.client.create_collection(
                self._name(name), vectors_config={DENSE: m.VectorParams(size=spec.dim, distance=m.Distance.COSINE)},
                metadata=spec.meta())

    def upsert(self, name, ids, vectors, doc_ids) -> None:
        from qdrant_client import models as m

        points = [m.PointStruct(id=int(i), vector=_named(v, m.SparseVector), payload={"doc_id": d})
                  for i, v, d in zip(ids, vectors, doc_ids)]
        for i in range(0, len(points), 500):
            self.client.upsert(self._name(name), points[i:i + 500], wait=True)

    def delete(self, name, ids) -> None:
        from qdrant_client import models as m

        if ids and self.exists(name):
            self.client.delete(self._name(name), m.PointIdsList(points=[int(i) for i in ids]), wait=True)

    def search(self, name, vector, limit, sparse, doc_ids=None) -> list[ScoredId]:
        from qdrant_client import models as m

        if not self.exists(name):
            return []
        if sparse:
            if not vector.indices:
                return []
            query, using = m.SparseVector(indices=vector.indices, values=vector.values), SPARSE
        else:
            query, using = [float(x) for x in vector], DENSE
        where = (m.Filter(must=[m.FieldCondition(key="doc_id", match=m.MatchAny(any=list(doc_ids)))])
                 if doc_ids is not None else None)
        result = self.client.query_points(self._name(name), query=query, using=using, limit=limit, query_filter=where)
        return [ScoredId(int(p.id), float(p.score)) for p in result.points]

    def count(self, name) -> int:
        return self.client.count(self._name(name), exact=True).count if self.exists(name) else 0

    def ids(self, name) -> set[int]:
        found: set[int] = set()
        offset = None
        while self.exists(name):
            records, offset = self.client.scroll(self._name(name), offset=offset, limit=5000,
                                                 with_payload=False, with_vectors=False)
            found.update(int(r.id) for r in records)
            if offset is None:
                break
        return found

    def collections(self, prefix: str) -> list[str]:
        full = self._name(prefix)
        return sorted(c.name[len("wendao_"):] for c in self.client.get_collections().collections
                      if c.name.startswith(full))

    def optimize(self, name) -> None:
        """The server optimises in the background."""

    def drop(self, name) -> None:
        if self.exists(name):
            self.client.delete_collection(self._name(name))

    def close(self) -> None:
        self.client.close()


_BACKENDS: dict[str, Backend] = {}
_BACKENDS_LOCK = threading.Lock()


def default_backend(root: Path | None = None) -> Backend:
    """The process-wide backend for a data directory: a Qdrant server when QDRANT_URL is set,
    else embedded shards under <root>/qdrant (root defaults to WENDAO_DATA_DIR)."""
    import os

    url = qdrant_url()
    key = url or str(Path(root or data_dir()).resolve() / "qdrant")
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            _BACKENDS[key] = (ServerBackend(url, os.environ.get("QDRANT_API_KEY")) if url
                              else EdgeBackend(Path(key)))
        return _BACKENDS[key]


def close_backend(root: Path) -> None:
    """Close the embedded backend of a data dir (its owner is letting go of it)."""
    key = str(Path(root).resolve() / "qdrant")
    with _BACKENDS_LOCK:
        backend = _BACKENDS.pop(key, None)
    if backend is not None:
        backend.close()


def close_all() -> None:
    """Close every open backend (tests and CLI exit)."""
    with _BACKENDS_LOCK:
        for backend in _BACKENDS.values():
            backend.close()
        _BACKENDS.clear()
