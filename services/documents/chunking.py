"""Chinese-aware chunking: one config object, three strategies.

- fixed:    N characters with an overlap of M characters.
- sentence: whole sentences packed up to N characters (or N tokens of the embedding model), with an
            overlap of whole sentences up to M characters; a boundary falls inside a sentence only
            when that one sentence is longer than N.
- window:   sliding windows of W sentences with stride S (the seed's Landmark-Embedding idea,
            without its training); each window records the sentences it covers so neighbouring
            hits can be merged into one passage later.

Every chunk's [start, end) are offsets into the document text, so `text[start:end]` is the chunk.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from services.documents.text import split_sentences

STRATEGIES = ("fixed", "sentence", "window")


@dataclass(frozen=True)
class ChunkingConfig:
    strategy: str = "sentence"
    chunk_size: int = 300
    overlap: int = 120
    window: int = 4
    stride: int = 2
    unit: str = "chars"  # chars | tokens (tokens of the embedding model; sentence strategy)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown chunking strategy {self.strategy!r}; use one of {STRATEGIES}")
        if self.chunk_size < 1 or self.overlap < 0 or self.window < 1 or self.stride < 1:
            raise ValueError("chunk_size, window and stride must be >= 1 and overlap >= 0")
        if self.strategy == "window" and self.stride > self.window:
            raise ValueError("stride must not exceed window, or text between windows is lost")
        if self.strategy == "fixed" and self.overlap >= self.chunk_size:
            raise ValueError("overlap must be smaller than chunk_size")

    def params(self) -> dict:
        """The parameters that matter for this strategy (stored with every chunk)."""
        if self.strategy == "window":
            return {"window": self.window, "stride": self.stride}
        params = {"chunk_size": self.chunk_size, "overlap": self.overlap}
        if self.strategy == "sentence":
            params["unit"] = self.unit
        return params

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Chunk:
    ordinal: int
    start: int
    end: int
    text: str
    page_start: int = 1
    page_end: int = 1
    strategy: str = "sentence"
    params: dict = field(default_factory=dict)
    sentence_start: int = -1  # first sentence index covered (sentence/window strategies)
    sentence_end: int = -1  # one past the last sentence index covered
    id: int | None = None  # assigned by the store
    doc_id: str | None = None


PageLookup = Callable[[int], int]


def chunk_text(
    text: str,
    config: ChunkingConfig = ChunkingConfig(),
    page_at: PageLookup | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """Split `text` into chunks under `config`; `page_at(offset)` gives page numbers."""
    if config.strategy == "fixed":
        spans = [(a, b, -1, -1) for a, b in _fixed_spans(len(text), config)]
    else:
        sentences = split_sentences(text)
        if config.strategy == "window":
            spans = _window_spans(sentences, config)
        else:
            length = _length_fn(text, config, count_tokens)
            spans = _sentence_spans(sentences, config, length)
    page_at = page_at or (lambda _offset: 1)
    chunks = []
    for a, b, s0, s1 in spans:
        if not text[a:b].strip():
            continue
        chunks.append(Chunk(
            ordinal=len(chunks), start=a, end=b, text=text[a:b],
            page_start=page_at(a), page_end=page_at(max(a, b - 1)),
            strategy=config.strategy, params=config.params(),
            sentence_start=s0, sentence_end=s1,
        ))
    return chunks


def _length_fn(text: str, config: ChunkingConfig, count_tokens) -> Callable[[int, int], int]:
    if config.unit == "tokens":
        if count_tokens is None:
            raise ValueError("unit='tokens' needs the embedding model's token counter")
        return lambda a, b: count_tokens(text[a:b])
    return lambda a, b: b - a


def _fixed_spans(n: int, config: ChunkingConfig) -> list[tuple[int, int]]:
    step = config.chunk_size - config.overlap
    spans = []
    for start in range(0, n, step):
        spans.append((start, min(n, start + config.chunk_size)))
        if start + config.chunk_size >= n:
            break
    return spans


def _sentence_spans(sentences: Sequence[tuple[int, int]], config: ChunkingConfig,
                    length: Callable[[int, int], int]) -> list[tuple[int, int, int, int]]:
    """Greedy packing of whole sentences; over-long sentences are cut into N-sized pieces."""
    limit = config.chunk_size
    spans: list[tuple[int, int, int, int]] = []
    i = 0
    while i < len(sentences):
        a, b = sentences[i]
        if length(a, b) > limit:
            spans.extend((x, y, i, i + 1) for x, y in _cut_long_sentence(a, b, limit, length))
            i += 1
            continue
        j = i + 1
        while j < len(sentences) and length(a, sentences[j][1]) <= limit:
            j += 1
        spans.append((a, sentences[j - 1][1], i, j))
        if j >= len(sentences):
            break
        i = _overlap_start(sentences, i, j, config.overlap, length)
    return spans


def _overlap_start(sentences, i: int, j: int, overlap: int, length) -> int:
    """First sentence of the next chunk: carry trailing whole sentences worth <= overlap."""
    k = j
    while k - 1 > i and length(sentences[k - 1][0], sentences[j - 1][1]) <= overlap:
        k -= 1
    return k


def _cut_long_sentence(a: int, b: int, limit: int, length) -> list[tuple[int, int]]:
    pieces = []
    start = a
    while start < b:
        end = min(b, start + limit)
        while end > start + 1 and length(start, end) > limit:  # token units: shrink to fit
            end = start + max(1, (end - start) * 3 // 4)
        pieces.append((start, end))
        start = end
    return pieces


def _window_spans(sentences: Sequence[tuple[int, int]], config: ChunkingConfig):
    """Windows of `window` sentences every `stride` sentences; the last one reaches the end."""
    n = len(sentences)
    if n == 0:
        return []
    w, s = config.window, config.stride
    starts = list(range(0, max(1, n - w + 1), s))
    if starts[-1] + w < n:
        starts.append(n - w)
    return [(sentences[i][0], sentences[min(n, i + w) - 1][1], i, min(n, i + w)) for i in starts]
