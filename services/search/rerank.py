"""Cross-encoder reranking (sentence-transformers CrossEncoder), GPU when present.

On cuda: fp16, batches sized by a token budget (long pairs get smaller batches), max length 512,
and on out-of-memory a retry with half the budget, then on CPU. `last_ms_per_100` reports speed.
No reranker ships through PyPI, so reranking is off by default offline; any registry name, HF id
or local folder loads.
"""
from __future__ import annotations

import threading
import time

from services import errors
from services.index.embedding import _short_hub_timeouts, pick_device
from services.index.models import ensure_loadable, hub_hint, resolve


class Reranker:
    def __init__(self, name_or_path: str, device: str | None = None, max_length: int = 512,
                 token_budget: int | None = None):
        from sentence_transformers import CrossEncoder

        self.spec = resolve(name_or_path, "reranker")
        self.device = device or pick_device()
        kwargs = {"model_kwargs": {"torch_dtype": "float16"}} if self.device == "cuda" else {}
        offline = ensure_loadable(self.spec)
        try:
            with _short_hub_timeouts():
                self.model = CrossEncoder(self.spec.hf_id, device=self.device, max_length=max_length,
                                          local_files_only=offline, **kwargs)
        except Exception as exc:
            raise errors.ModelLoadError(
                f"无法加载重排模型「{self.spec.name}」（{self.spec.hf_id}）：{type(exc).__name__}。{hub_hint()}") from exc
        self.max_length = max_length
        self.token_budget = token_budget or (32768 if self.device == "cuda" else 8192)
        self.last_ms_per_100 = 0.0

    def _batches(self, pairs: list[tuple[str, str]], budget: int) -> list[list[int]]:
        """Indices grouped so each batch's padded length x size stays within `budget` tokens."""
        lengths = [min(self.max_length, len(q) + len(p) + 3) for q, p in pairs]  # chars ~ tokens for zh
        order = sorted(range(len(pairs)), key=lambda i: lengths[i])
        batches, current, longest = [], [], 0
        for i in order:
            longest_if_added = max(longest, lengths[i])
            if current and longest_if_added * (len(current) + 1) > budget:
                batches.append(current)
                current, longest_if_added = [], lengths[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def score(self, query: str, passages: list[str]) -> list[float]:
        """Relevance score per passage (higher = more relevant)."""
        if not passages:
            return []
        pairs = [(query, p) for p in passages]
        start = time.perf_counter()
        scores = self._score_with_fallback(pairs, self.token_budget)
        self.last_ms_per_100 = (time.perf_counter() - start) * 1000 * 100 / len(pairs)
        return scores

    def _score_with_fallback(self, pairs, budget) -> list[float]:
        try:
            return self._score(pairs, budget)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if self.device == "cuda":
                _empty_cuda_cache()
                if budget > 1024:
                    return self._score_with_fallback(pairs, budget // 2)
                self.model.model.to("cpu").float()
                self.device = "cpu"
                return self._score(pairs, 8192)
            raise

    def _score(self, pairs, budget) -> list[float]:
        scores = [0.0] * len(pairs)
        for batch in self._batches(pairs, budget):
            out = self.model.predict([pairs[i] for i in batch], batch_size=len(batch), show_progress_bar=False,
                                     convert_to_numpy=True)
            for i, s in zip(batch, out):
                scores[i] = float(s)
        return scores


def _is_oom(exc: Exception) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        pass


_RERANKERS: dict[str, Reranker] = {}
_LOCK = threading.Lock()


def load_reranker(name_or_path: str) -> Reranker:
    """One Reranker per model per process."""
    with _LOCK:
        if name_or_path not in _RERANKERS:
            _RERANKERS[name_or_path] = Reranker(name_or_path)
        return _RERANKERS[name_or_path]
