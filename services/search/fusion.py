"""Fusion of ranked lists: reciprocal rank fusion and weighted fusion of normalised scores.

Both take {stage: {id: score}} where each stage's dict is that stage's result list (higher is
better) and return {id: fused score}; stage ranks/scores stay on the Hit for diagnostics.
"""
from __future__ import annotations


def ranks(scores: dict[int, float]) -> dict[int, int]:
    """1-based rank of each id by descending score (ties broken by id for determinism)."""
    ordered = sorted(scores, key=lambda i: (-scores[i], i))
    return {chunk_id: r for r, chunk_id in enumerate(ordered, start=1)}


def rrf(stages: dict[str, dict[int, float]], k: int = 60, weights: dict[str, float] | None = None) -> dict[int, float]:
    """Reciprocal rank fusion: sum over stages of weight / (k + rank)."""
    fused: dict[int, float] = {}
    for stage, scores in stages.items():
        w = 1.0 if weights is None else weights.get(stage, 1.0)
        for chunk_id, r in ranks(scores).items():
            fused[chunk_id] = fused.get(chunk_id, 0.0) + w / (k + r)
    return fused


def min_max(scores: dict[int, float]) -> dict[int, float]:
    """Scale to [0, 1]; a single (or constant) list maps to 1.0."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo < 1e-12:
        return {i: 1.0 for i in scores}
    return {i: (s - lo) / (hi - lo) for i, s in scores.items()}


def weighted(stages: dict[str, dict[int, float]], weights: dict[str, float]) -> dict[int, float]:
    """Sum of weight * min-max normalised score; an id missing from a stage gets 0 there."""
    fused: dict[int, float] = {}
    for stage, scores in stages.items():
        w = weights.get(stage, 0.0)
        for chunk_id, s in min_max(scores).items():
            fused[chunk_id] = fused.get(chunk_id, 0.0) + w * s
    return fused


METHODS = {"rrf": "倒数排名融合 (RRF)", "weighted": "加权分数融合"}
