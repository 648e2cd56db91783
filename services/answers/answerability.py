"""Answerability check without a large model (issue 21 item 7): a cross-encoder reads the question
with each of the best retrieved passages and gives the probability that the passage answers it;
the question counts as answerable when the best of them reaches the model's threshold.

The check is used only where its model folder exists: `WENDAO_ANSWERABILITY_MODEL` (a folder), else
`<data dir>/models/answerability`. It is trained by `python -m services.tuning.answerability` from
public question sets (services/tuning/answerability.py; the README says which data and why none of
it ships): a normal sentence-transformers CrossEncoder folder whose `wendao_card.json` holds the
threshold chosen by measurement. It runs in every retrieval mode and needs no LLM and no network.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
FOLDER = "answerability"
CARD = "wendao_card.json"
TOP = 3  # passages read per question (the answer's first sources)


@dataclass
class Check:
    path: str
    threshold: float
    top: int = TOP


def check_folder() -> Path | None:
    """Where the check's model is, if it is installed: WENDAO_ANSWERABILITY_MODEL, else the data dir's
    models/answerability (WENDAO_DATA_DIR, default ./data) — only a folder with a model card counts."""
    configured = os.environ.get("WENDAO_ANSWERABILITY_MODEL", "").strip()
    data = Path(os.environ.get("WENDAO_DATA_DIR", "./data"))  # (read only: services.config.data_dir creates it)
    folder = Path(configured).expanduser() if configured else data.expanduser() / "models" / FOLDER
    return folder if (folder / CARD).is_file() else None


_CHECKS: dict[str, Check | None] = {}
_LOCK = threading.Lock()


def load_check() -> Check | None:
    """The installed check (its folder and threshold), or None when there is none or it is unreadable."""
    folder = check_folder()
    if folder is None:
        return None
    key = str(folder.resolve())
    with _LOCK:
        if key not in _CHECKS:
            try:
                card = json.loads((folder / CARD).read_text(encoding="utf-8"))
                _CHECKS[key] = Check(key, float(card["threshold"]), int(card.get("top", TOP)))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable answerability card in %s", folder)
                _CHECKS[key] = None
        return _CHECKS[key]


def answerability(query: str, passages: list[str], check: Check | None = None) -> float | None:
    """Probability that one of the first passages answers `query` (the best one's), or None when no
    check is installed or its model cannot be loaded (refusal then uses its other signals)."""
    from services import errors
    from services.search.rerank import load_reranker

    check = check or load_check()
    if check is None or not passages:
        return None
    try:
        scores = load_reranker(check.path).score(query, passages[:check.top])
    except errors.WendaoError as exc:
        log.warning("answerability check unavailable: %s", exc.message_zh)
        return None
    return max(scores)
