"""BM25, computed exactly from SQLite's current statistics.

Each chunk's jieba terms (hashed to stable 31-bit ids) and its length are stored with the chunk in
SQLite (`terms_blob`), written in the same transaction as the chunk itself. `BM25Index` is an
in-memory, per-process index over those rows: term counts in compressed sparse column matrices
(scipy), plus the collection statistics — number of chunks N, document frequency per term, total
length — maintained exactly (integer counts) as chunks are added and removed. A query scores

    sum over query terms t:  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with the statistics of this moment, so scores equal those of a freshly built index after any
sequence of uploads, deletes and re-chunks, and do not depend on upload order. (The earlier design
kept BM25 in Qdrant sparse vectors: deleted points stayed in Qdrant Edge's statistics until the
shard was reopened, and avgdl had to be frozen at a KB's first upload.) The index follows SQLite
through `Store.generation`: when another commit happened (in this or another process), `sync`
diffs the live chunk ids and applies only the difference.

Chunks are appended in segments (one per sync); when there are more than MAX_SEGMENTS they are
merged into one, dropping removed rows, so a query touches few matrices. At 100k chunks a query
is a few milliseconds (bench/retrieval.py speed).
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse as sp

from services.documents.tokenizer import tokenize

K1 = 1.2
B = 0.75
MAX_SEGMENTS = 8


@lru_cache(maxsize=500_000)
def term_index(term: str) -> int:
    """A stable 31-bit index for a term (same across processes and machines)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little") & 0x7FFFFFFF


@dataclass
class SparseVector:
    indices: list[int]
    values: list[float]


def term_counts(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique term ids, their counts) of one chunk's tokens."""
    counts = Counter(term_index(t) for t in tokens)
    ids = np.array(sorted(counts), np.int32)
    return ids, np.array([counts[i] for i in ids.tolist()], np.int32)


def terms_blob(tokens: list[str]) -> tuple[bytes, int]:
    """What SQLite stores for a chunk: (term ids + counts as int32 bytes, length in tokens)."""
    ids, counts = term_counts(tokens)
    return np.concatenate([ids, counts]).tobytes(), len(tokens)


def decode_terms(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    both = np.frombuffer(blob, np.int32)
    half = len(both) // 2
    return both[:half], both[half:]


def document_vector(tokens: list[str], avgdl: float) -> SparseVector:
    """The BM25 document-side weights of one chunk (tf saturation and length normalisation)."""
    ids, counts = term_counts(tokens)
    norm = K1 * (1 - B + B * len(tokens) / max(avgdl, 1.0))
    return SparseVector(ids.tolist(), [c * (K1 + 1) / (c + norm) for c in counts.tolist()])


def query_vector(query: str, user_dict=None) -> SparseVector:
    """Query-side vector: each distinct query term once."""
    indices = sorted({term_index(t) for t in tokenize(query, user_dict)})
    return SparseVector(indices, [1.0] * len(indices))


def idf(n: int, df: np.ndarray) -> np.ndarray:
    """Lucene/Qdrant BM25 idf (always positive)."""
    return np.log1p((n - df + 0.5) / (df + 0.5))


class _Segment:
    """Rows appended together: chunk ids, lengths, a CSC matrix rows x columns, and a live mask."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, matrix: sp.csc_matrix):
        self.ids, self.lengths, self.matrix = ids, lengths, matrix
        self.alive = np.ones(len(ids), bool)


class BM25Index:
    """Exact BM25 over a KB's searchable chunks (see the module docstring)."""

    def __init__(self):
        self.columns: dict[int, int] = {}  # term id -> column
        self.df = np.zeros(0, np.int64)
        self.n = 0
        self.total_length = 0
        self.segments: list[_Segment] = []
        self.where: dict[int, tuple[int, int]] = {}  # chunk id -> (segment, row)
        self.generation = None
        self.lock = threading.RLock()

    # --- updates ------------------------------------------------------------------------------
    def add(self, rows: list[tuple[int, int, bytes]]) -> None:
        """Add chunks given as (id, length, terms blob); ids already present are ignored."""
        rows = [r for r in rows if r[0] not in self.where]
        if not rows:
            return
        decoded = [decode_terms(blob) for _, _, blob in rows]
        sizes = np.fromiter((len(t) for t, _ in decoded), np.int64, len(decoded))
        terms = np.concatenate([t for t, _ in decoded]) if decoded else np.zeros(0, np.int32)
        counts = np.concatenate([c for _, c in decoded]).astype(np.float32) if decoded else np.zeros(0, np.float32)
        unique, inverse = np.unique(terms, return_inverse=True)  # Python touches each distinct term once
        cols = np.fromiter((self._column(int(t)) for t in unique.tolist()), np.int32, len(unique))[inverse]
        matrix = sp.csc_matrix((counts, (np.repeat(np.arange(len(rows), dtype=np.int32), sizes), cols)),
                               shape=(len(rows), len(self.columns)))
        np.add.at(self.df, cols, 1)
        ids = np.array([r[0] for r in rows], np.int64)
        lengths = np.array([r[1] for r in rows], np.float64)
        self.n += len(rows)
        self.total_length += int(lengths.sum())
        self.segments.append(_Segment(ids, lengths, matrix))
        s = len(self.segments) - 1
        self.where.update((int(i), (s, r)) for r, i in enumerate(ids.tolist()))
        if len(self.segments) > MAX_SEGMENTS:
            self._merge()

    def remove(self, ids) -> None:
        """Remove chunks by id (unknown ids are ignored)."""
        for chunk_id in ids:
            place = self.where.pop(int(chunk_id), None)
            if place is None:
                continue
            seg = self.segments[place[0]]
            seg.alive[place[1]] = False
            cols = self._row_columns(seg, place[1])
            self.df[cols] -= 1
            self.n -= 1
            self.total_length -= int(seg.lengths[place[1]])

    def _row_columns(self, seg: _Segment, row: int) -> np.ndarray:
        if not hasattr(seg, "csr"):
            seg.csr = seg.matrix.tocsr()
        return seg.csr.indices[seg.csr.indptr[row]:seg.csr.indptr[row + 1]]

    def _column(self, term: int) -> int:
        col = self.columns.get(term)
        if col is None:
            col = self.columns[term] = len(self.columns)
            if col >= len(self.df):
                self.df = np.concatenate([self.df, np.zeros(max(1024, len(self.df)), np.int64)])
        return col

    def _merge(self) -> None:
        """Merge all segments into one, dropping removed rows."""
        width = len(self.columns)
        parts, ids, lengths = [], [], []
        for seg in self.segments:
            m = seg.matrix.tocsr()[seg.alive]
            m.resize((m.shape[0], width))
            parts.append(m)
            ids.append(seg.ids[seg.alive])
            lengths.append(seg.lengths[seg.alive])
        merged = _Segment(np.concatenate(ids), np.concatenate(lengths), sp.vstack(parts).tocsc())
        self.segments = [merged]
        self.where = {int(i): (0, r) for r, i in enumerate(merged.ids.tolist())}

    # --- queries ------------------------------------------------------------------------------
    def search(self, query: SparseVector, limit: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """Top `limit` (chunk id, BM25 score) for the query's terms, best first; with `allowed`, only
        those chunk ids compete (statistics stay those of the whole KB)."""
        with self.lock:
            cols = [self.columns[t] for t in query.indices if t in self.columns]
            if not cols or self.n == 0:
                return []
            avgdl = self.total_length / self.n
            weights = idf(self.n, self.df[cols].astype(np.float64))
            found_ids, found_scores = [], []
            for seg in self.segments:
                scores = self._score_segment(seg, cols, weights, avgdl)
                keep = seg.alive if allowed is None else seg.alive & np.isin(seg.ids, np.fromiter(allowed, np.int64))
                hit = np.flatnonzero((scores > 0) & keep)
                found_ids.append(seg.ids[hit])
                found_scores.append(scores[hit])
            ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
            if len(ids) > limit:
                top = np.argpartition(-scores, limit - 1)[:limit]
                ids, scores = ids[top], scores[top]
            order = np.lexsort((ids, -scores))
            return [(int(ids[i]), float(scores[i])) for i in order]

    @staticmethod
    def _score_segment(seg: _Segment, cols: list[int], weights: np.ndarray, avgdl: float) -> np.ndarray:
        scores = np.zeros(len(seg.ids), np.float64)
        m = seg.matrix
        norm = K1 * (1 - B + B * seg.lengths / max(avgdl, 1e-9))
        for col, w in zip(cols, weights):
            if col >= m.shape[1]:
                continue
            lo, hi = m.indptr[col], m.indptr[col + 1]
            rows, tf = m.indices[lo:hi], m.data[lo:hi].astype(np.float64)
            scores[rows] += w * tf * (K1 + 1) / (tf + norm[rows])
        return scores

    def stats(self) -> dict:
        """N, total length and the document frequencies (non-zero), for `check`."""
        inverse = {c: t for t, c in self.columns.items()}
        nz = np.flatnonzero(self.df[:len(self.columns)])
        return {"n": self.n, "total_length": self.total_length,
                "df": {inverse[int(c)]: int(self.df[c]) for c in nz}}

    @property
    def ids(self) -> set[int]:
        return set(self.where)


def average_length(token_lists: list[list[str]]) -> float:
    """Mean token count of some chunks."""
    return sum(map(len, token_lists)) / len(token_lists) if token_lists else 0.0


def exact_scores(rows: list[tuple[int, int, bytes]], query: SparseVector) -> dict[int, float]:
    """BM25 scores computed from scratch (the reference the incremental index must equal)."""
    parsed = [(i, n, *decode_terms(b)) for i, n, b in rows]
    n = len(parsed)
    if not n:
        return {}
    avgdl = sum(p[1] for p in parsed) / n
    df = Counter(int(t) for p in parsed for t in p[2].tolist())
    out = {}
    for chunk_id, length, ids, counts in parsed:
        tf = dict(zip(ids.tolist(), counts.tolist()))
        score = 0.0
        for t in query.indices:
            if t in tf:
                w = math.log1p((n - df[t] + 0.5) / (df[t] + 0.5))
                score += w * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * length / avgdl))
        if score > 0:
            out[chunk_id] = score
    return out
