"""Chinese-aware chunking: one config object, three strategies.

- fixed:    N characters with an overlap of M characters.
- sentence: whole sentences packed up to N characters (or N tokens of the embedding model); a chunk
            ends inside a sentence only when that one sentence is longer than N. Consecutive chunks
            overlap by about M (between M/2 and M; M at most half of N): whole sentences where they fit,
            else from a clause mark (，；：, else 、), else M characters back — so text without 。 (judgments)
            overlaps too.
- window:   sliding windows of W sentences with stride S (the seed's Landmark-Embedding idea,
            without its training); each window records the sentences it covers so neighbouring
            hits can be merged into one passage later.

Every chunk's [start, end) are offsets into the document text, so `text[start:end]` is the chunk.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
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
            spans = _sentence_spans(text, sentences, config, length)
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


def _sentence_spans(text: str, sentences: Sequence[tuple[int, int]], config: ChunkingConfig,
                    length: Callable[[int, int], int]) -> list[tuple[int, int, int, int]]:
    """Greedy packing of whole sentences; a chunk ends at a sentence end unless one sentence is longer
    than N (it is then cut into N-sized pieces that overlap like the chunks do). The next chunk starts
    `overlap` back (see _overlap_start), so consecutive chunks share about M characters (tokens) also
    where sentences are long (court judgments: runs of clauses joined by ，)."""
    limit = config.chunk_size
    overlap = min(config.overlap, limit // 2)  # at most half a chunk: each chunk brings at least half new text
    starts = [a for a, _ in sentences]
    spans: list[tuple[int, int, int, int]] = []
    n = len(sentences)
    i, start, prev_end, last_start = 0, sentences[0][0] if n else 0, -1, -1
    while i < n:
        j = i
        while j < n and length(start, sentences[j][1]) <= limit:
            j += 1
        if j > i and sentences[j - 1][1] > prev_end:  # whole sentences (after the carried overlap) fit
            end = sentences[j - 1][1]
            spans.append((start, end, i, j))
            last_start = start
        elif j < n and start < sentences[j][0] and length(sentences[j][0], sentences[j][1]) <= limit:
            # less overlap, so sentence j fits whole — from a clause's start where one keeps half the overlap
            start = _clause_start(text, _tail_start(start, sentences[j][1], limit, length),
                                  min(sentences[j][0], prev_end - overlap // 2))
            i = bisect_right(starts, start) - 1
            continue
        else:  # sentence j is longer than a chunk: overlapping pieces, from the carried overlap on
            pieces = _cut_long_sentence(start, sentences[j][1], limit, overlap, length)
            spans.extend((x, y, i, j + 1) for x, y in pieces)
            end, last_start, j = sentences[j][1], pieces[-1][0], j + 1
        if j >= n:
            break
        prev_end = end
        start = _overlap_start(text, starts, last_start + 1, end, overlap, length)
        i = bisect_right(starts, start) - 1
    return spans


# A clause ends after these (inside a sentence): an overlap that cannot start at a sentence starts here.
CLAUSE_ENDS = frozenset("，,、：:；;")
LIST_MARKS = frozenset("、")  # ... the weakest: an enumeration's items (—X、OH、-CHO), used only where no other mark is


def _clause_start(text: str, q: int, limit: int) -> int:
    """The first clause start at or after q (after ，；：, not 、) and not after `limit`; q when there is none."""
    for p in range(q, limit + 1):
        if p > 0 and text[p - 1] in CLAUSE_ENDS - LIST_MARKS:
            return p
    return q


def _tail_start(lo: int, end: int, budget: int, length) -> int:
    """The smallest q in [lo, end] with length(q, end) <= budget (the longest tail within budget)."""
    if length(lo, end) <= budget:
        return lo
    a, b = lo, end
    while a < b:
        mid = (a + b) // 2
        if length(mid, end) <= budget:
            b = mid
        else:
            a = mid + 1
    return b


def _overlap_start(text: str, starts: list[int], lo: int, end: int, overlap: int, length) -> int:
    """Where the chunk after one ending at `end` starts (>= lo): a tail of about `overlap` (between half
    of it and all of it), starting at a sentence start if one is there, else after a clause mark (，；：; else 、),
    else `overlap` characters (tokens) back; `end` (no overlap) when overlap is 0."""
    if overlap <= 0 or lo >= end:
        return end
    far = _tail_start(lo, end, overlap, length)  # the most overlap allowed
    near = max(far, _tail_start(lo, end, max(1, overlap // 2), length))  # about half of it
    k = bisect_left(starts, far)
    if k < len(starts) and starts[k] <= near and starts[k] < end:
        return starts[k]
    for marks in (CLAUSE_ENDS - LIST_MARKS, LIST_MARKS):  # a clause's start before a list item's (醇或酚、|醛、羧酸…)
        for q in range(far, near + 1):
            if q > lo - 1 and q < end and text[q - 1] in marks:
                return q
    return far


def _cut_long_sentence(a: int, b: int, limit: int, overlap: int, length) -> list[tuple[int, int]]:
    """[a, b) in pieces of at most `limit`, each starting `overlap` before the previous one ends."""
    pieces = []
    start = a
    while True:
        end = min(b, start + limit)
        while end > start + 1 and length(start, end) > limit:  # token units: shrink to fit
            end = start + max(1, (end - start) * 3 // 4)
        pieces.append((start, end))
        if end >= b:
            return pieces
        start = _tail_start(start + 1, end, overlap, length) if overlap > 0 else end


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
