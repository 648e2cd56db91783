"""The extractive reader (issue 21): a span model that reads the question with each of the first
passages and marks the answer in them — "800元", not the clause around it — with exact character
offsets (token offsets mapped back to the passage), so the quote, its citation and the highlight
stay exact.

Used only where its model folder exists: `WENDAO_READER_MODEL` (a folder), else
`<data dir>/models/reader`. It is trained by `python -m services.tuning.reader` from public question
sets (the README says which and why none of it ships): config.json, model.safetensors (a BERT
encoder — the bottom layers of the bundled multilingual-e5-small — and a start/end head
`qa_outputs`), tokenizer.json and `wendao_card.json` with the score threshold chosen by
measurement. Without it, or below the threshold, services.answers.extractive marks the answer with
its heuristics. Plain torch (services.index.torch_e5's encoder): transformers is never imported
here, so loading it costs about a second.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
FOLDER = "reader"
CARD = "wendao_card.json"
KIND = "reader"
TOP = 3  # passages read per question (the answer's first sources)
MAX_QUESTION_TOKENS = 64


@dataclass
class ReadSpan:
    """The reader's answer in one passage: passage index, [start, end) in its text, text, score
    (start + end logit of the span minus the no-answer logits)."""
    passage: int
    start: int
    end: int
    text: str
    score: float


@dataclass
class Window:
    ids: list[int]  # <s> question </s></s> passage tokens </s>
    offsets: list[tuple[int, int]]  # [start, end) in the passage of each passage token
    first: int  # index in `ids` of the first passage token


def windows(tokenizer, question: str, passage: str, max_length: int, stride: int) -> list[Window]:
    """The passage cut into windows of at most `max_length` tokens with the question in front,
    consecutive windows sharing `stride` tokens."""
    bos, eos = special_ids(tokenizer)[:2]
    q = tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION_TOKENS]
    enc = tokenizer.encode(passage, add_special_tokens=False)
    tokens = [(i, o) for i, o in zip(enc.ids, enc.offsets) if o[1] > o[0]]
    room = max(8, max_length - len(q) - 4)
    out, a = [], 0
    while True:
        part = tokens[a:a + room]
        out.append(Window([bos, *q, eos, eos, *(i for i, _ in part), eos], [o for _, o in part], len(q) + 3))
        if a + room >= len(tokens):
            return out
        a += max(1, room - stride)


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(start, separator, padding) token ids: e5's <s> </s> <pad>, or a BERT vocabulary's [CLS] [SEP] [PAD]."""
    ids = [tokenizer.token_to_id(a) for a in ("<s>", "</s>", "<pad>")]
    if None in ids:
        ids = [tokenizer.token_to_id(a) for a in ("[CLS]", "[SEP]", "[PAD]")]
    return ids[0], ids[1], ids[2] or 0


def threshold_group(kind: str | None) -> str:
    """Which of the card's thresholds applies to a question of the asked-for type `kind`
    (services.answers.answer_types.answer_type): "typed" for those the heuristics find values of."""
    from services.answers.answer_types import TYPED

    return "typed" if kind in TYPED else "untyped"


class Reader:
    """A trained reader folder (see the module docstring)."""

    def __init__(self, path: str, threshold: float, top: int = TOP, max_length: int = 256, stride: int = 64,
                 max_answer_tokens: int = 40, load_model: bool = True, thresholds: dict | None = None,
                 inside_threshold: float | None = None):
        from tokenizers import Tokenizer

        self.path, self.threshold, self.top = path, threshold, top
        self.thresholds = dict(thresholds or {})  # per threshold_group; `threshold` for the others
        # when its own best span scores below its threshold: the best span inside the quote the heuristics
        # chose is marked when it scores this much (None: never; the heuristics mark it)
        self.inside_threshold = inside_threshold
        self.max_length, self.stride, self.max_answer_tokens = max_length, stride, max_answer_tokens
        self.tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad = special_ids(self.tokenizer)[2]
        self.identity = ""  # reader_identity of its card (load_reader sets it)
        self._model = None
        self._lock = threading.Lock()
        self._recent: dict[tuple, list] = {}
        if load_model:
            self.model()

    def threshold_for(self, kind: str | None) -> float:
        """The score the reader's span must reach for a question of type `kind`."""
        return self.thresholds.get(threshold_group(kind), self.threshold)

    def model(self):
        """(encoder, head weight, head bias), loaded once."""
        if self._model is None:
            from safetensors import safe_open

            from services.index.torch_e5 import load_encoder

            encoder = load_encoder(self.path, "fp32")
            with safe_open(str(Path(self.path) / "model.safetensors"), framework="pt") as f:
                self._model = (encoder, f.get_tensor("qa_outputs.weight").float(), f.get_tensor("qa_outputs.bias").float())
        return self._model

    def read(self, question: str, passages: list[str]) -> list[ReadSpan]:
        """The best span of each passage that has one, best first."""
        import torch

        best: dict[int, ReadSpan] = {}
        for n, w, s, e in self._logits(question, passages):
            a, b = w.first, w.first + len(w.offsets)
            band = torch.ones(b - a, b - a, dtype=torch.bool).triu().tril(self.max_answer_tokens - 1)
            pair = (s[a:b, None] + e[None, a:b]).masked_fill(~band, float("-inf"))
            i, j = divmod(int(pair.argmax()), b - a)
            score = float(pair[i, j] - (s[0] + e[0]))
            start, end = w.offsets[i][0], w.offsets[j][1]
            text = passages[n][start:end]
            start += len(text) - len(text.lstrip())  # "▁" tokens carry the space before them
            end -= len(text) - len(text.rstrip())
            if end <= start:
                continue
            if n not in best or score > best[n].score:
                best[n] = ReadSpan(n, start, end, passages[n][start:end], score)
        return sorted(best.values(), key=lambda r: -r.score)

    def best_in(self, question: str, passages: list[str], ranges: list[tuple[int, int, int]]) -> ReadSpan | None:
        """The best span that lies inside one of `ranges` (passage index, [start, end) in it): the
        answer marked inside a quote chosen otherwise (the heuristics' units)."""
        import torch

        best = None
        for n, w, s, e in self._logits(question, passages):
            for m, lo, hi in ranges:
                if m != n:
                    continue
                inside = [k for k, (x, y) in enumerate(w.offsets) if lo <= x and y <= hi]
                if not inside:
                    continue
                a, b = w.first + inside[0], w.first + inside[-1] + 1
                band = torch.ones(b - a, b - a, dtype=torch.bool).triu().tril(self.max_answer_tokens - 1)
                pair = (s[a:b, None] + e[None, a:b]).masked_fill(~band, float("-inf"))
                i, j = divmod(int(pair.argmax()), b - a)
                score = float(pair[i, j] - (s[0] + e[0]))
                start, end = w.offsets[inside[0] + i][0], w.offsets[inside[0] + j][1]
                text = passages[n][start:end]
                start += len(text) - len(text.lstrip())
                end -= len(text) - len(text.rstrip())
                if end > start and (best is None or score > best.score):
                    best = ReadSpan(n, start, end, passages[n][start:end], score)
        return best

    def _logits(self, question: str, passages: list[str]) -> list:
        """[(passage index, window, start logits, end logits)] of every window, the latest few cached
        (an answer reads its passages again for ambiguity)."""
        key = (question, tuple(passages))
        if key not in self._recent:
            if len(self._recent) >= 32:
                self._recent.pop(next(iter(self._recent)))
            self._recent[key] = self._forward(question, passages)
        return self._recent[key]

    def _forward(self, question: str, passages: list[str]) -> list:
        import torch

        encoder, weight, bias = self.model()
        items = [(n, w) for n, p in enumerate(passages) for w in windows(self.tokenizer, question, p,
                                                                         self.max_length, self.stride)]
        if not items:
            return []
        longest = max(len(w.ids) for _, w in items)
        ids = torch.full((len(items), longest), self.pad, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.bool)
        for row, (_, w) in enumerate(items):
            ids[row, :len(w.ids)] = torch.tensor(w.ids)
            mask[row, :len(w.ids)] = True
        with self._lock, torch.inference_mode():
            hidden = encoder(ids, None if bool(mask.all()) else mask).float()
            logits = torch.nn.functional.linear(hidden, weight, bias)
        return [(n, w, logits[row, :, 0], logits[row, :, 1]) for row, (n, w) in enumerate(items)]


def reader_folder() -> Path | None:
    """Where the reader is, if it is installed: WENDAO_READER_MODEL, else the data dir's models/reader
    (WENDAO_DATA_DIR, default ./data) — only a folder with a model card counts."""
    configured = os.environ.get("WENDAO_READER_MODEL", "").strip()
    data = Path(os.environ.get("WENDAO_DATA_DIR", "./data"))  # (read only: services.config.data_dir creates it)
    folder = Path(configured).expanduser() if configured else data.expanduser() / "models" / FOLDER
    return folder if (folder / CARD).is_file() else None


def reader_identity(card: dict) -> str:
    """Which trained reader a card is (its name and creation time): what a model fitted on this reader's
    scores (the answerability combiner) is checked against before it uses them."""
    return f"{card.get('name', '')}@{card.get('created_at', '')}"


_READERS: dict[str, Reader | None] = {}
_LOCK = threading.Lock()


def load_reader() -> Reader | None:
    """The installed reader, or None when there is none or it cannot be read (the heuristics answer)."""
    folder = reader_folder()
    if folder is None:
        return None
    key = str(folder.resolve())
    with _LOCK:
        if key not in _READERS:
            try:
                card = json.loads((folder / CARD).read_text(encoding="utf-8"))
                _READERS[key] = Reader(key, float(card["threshold"]), int(card.get("top", TOP)),
                                       int(card.get("max_length", 256)), int(card.get("stride", 64)),
                                       int(card.get("max_answer_tokens", 40)),
                                       thresholds={k: float(v) for k, v in (card.get("thresholds") or {}).items()},
                                       inside_threshold=None if card.get("inside_threshold") is None
                                       else float(card["inside_threshold"]))
                _READERS[key].identity = reader_identity(card)
            except Exception as exc:  # noqa: BLE001 - a broken folder must not break answering
                log.warning("unreadable reader model in %s: %s", folder, type(exc).__name__)
                _READERS[key] = None
        return _READERS[key]


def read_spans(question: str, passages: list[str], reader: Reader | None = None) -> list[ReadSpan]:
    """The installed reader's spans for the first passages (best first), [] without a reader or when
    it fails."""
    reader = reader or load_reader()
    if reader is None or not passages:
        return []
    try:
        return reader.read(question, passages[:reader.top])
    except Exception as exc:  # noqa: BLE001
        log.warning("reader failed: %s", type(exc).__name__)
        return []
