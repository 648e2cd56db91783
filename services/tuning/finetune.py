"""Fine-tune the embedding model on a knowledge base's own documents (no gold questions needed).

Following the BGE recipe (the seed document): pseudo-queries per chunk, hard negatives mined from
other documents, contrastive training, then evaluation before/after on held-out queries — by the
评测 page's evaluator over `Retriever.search` (services.tuning.evaluation), the new model's vectors
held in memory (services.index.dense.MemoryDense), so the switch decision measures the search users get.
- Training pairs (services.tuning.pseudo_queries): offline, answer-masked questions (a sentence's date,
  amount, number or title replaced by a question word; the positive keeps the sentence) and inverse
  cloze where a chunk has no such sentence; with an LLM configured, 2–3 questions a user would type
  (in the KB's script). A held-out part (by document) is kept for evaluation only.
- Hard negatives: BM25 and dense candidates from *other* documents, sampled from a rank range (not
  the very top), skipping near-duplicates of the positive and — positive-aware — candidates the KB's
  model scores nearly as high as the positive (false negatives in template-like documents).
- Training: sentence-transformers' MultipleNegativesRankingLoss (in-batch + mined negatives; batches
  without two pairs of one document) in a plain loop with progress, a loss curve, an ETA and
  cancellation; CPU or GPU; 128-token training length.
- Result: a normal sentence-transformers folder under `<data>/models/@kb<id>-<created>/<name>/` (names are
  per KB: see `kb_models_dir`) with a model card
  (`wendao_card.json`: base model, KB, date, data size, settings, metrics), listed by
  `finetuned_models` and selectable per KB like any model (re-embedding switches the KB to it).
  The switch is offered only when the new model is better: on the KB's saved question set when it
  has one (services.tuning.evaluation.save_question_set), else on the held-out queries.
"""
from __future__ import annotations

import functools
import json
import logging
import random
import re
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from services import errors
from services.index.bm25 import query_vector
from services.index.dense import MemoryDense
from services.index.index_text import StoredIndexTexts
from services.index.library import Library
from services.index.served import parse_served
from services.index.kb_settings import retrieval_settings
from services.tuning.evaluation import (EvalConfig, Question, doc_key, evaluate, holds_answer, question_set,
                                       split_questions)
from services.index.store import KnowledgeBase
from services.tuning.pseudo_queries import (PseudoQuery, llm_queries, offline_queries, starts_inside_a_sentence,
                                     window_for)
from services.documents.text import normalize

log = logging.getLogger(__name__)
CARD = "wendao_card.json"


@dataclass
class FinetuneSettings:
    # CAIL2019 dev, 200 judgments (bench/finetune.py): 1 epoch at 2e-5 on the top 6 layers left dense
    # R@5 flat (0.485 -> 0.482); 3 epochs at 2e-5 gave 0.542, 2 epochs at 5e-5 on all layers 0.540
    # (hybrid 0.635 / 0.647) in 118 instead of 177 steps.
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 5e-5
    scale: float = 20.0  # MultipleNegativesRankingLoss logit scale (1 / temperature)
    max_pairs: int = 1600  # training queries (CPU budget: ~15 min for a 1,000-document KB on 2 cores)
    queries_per_chunk: int = 2  # offline pseudo-queries per chunk, each from a different sentence
    heldout: float = 0.15  # share of documents whose queries are kept for the before/after table
    dev: float = 0.1  # share of the remaining documents whose queries choose the weight mix
    # Weight-space ensembling (WiSE-FT): the saved model is base + mix x (trained - base) for the mix
    # scoring best on the dev queries; (1.0,): the trained weights as they are.
    mixes: tuple[float, ...] = (0.5, 1.0)
    negatives_range: tuple[int, int] = (3, 30)  # BM25 / dense ranks hard negatives are sampled from
    negative_ceiling: float = 0.95  # a negative must score below this share of the positive's score
    # Training truncates at 128 tokens (positives are ~220-character windows around the query's
    # sentence): e5-small, batch 16x3 on 2 cores, 50 -> 16 CPU-s per step vs 256 with checkpointing.
    max_seq_length: int = 128
    train_layers: int = 0  # top transformer layers trained (0: all); the lower ones keep the base's
    seed: int = 0
    method: str = "sentence"  # sentence (offline: answer-masked questions, inverse cloze) | llm
    freeze_embeddings: bool = True  # keep the (250k-token multilingual) input embedding matrix fixed
    precision: str = "auto"  # auto: bf16 autocast on CPUs with native bf16 matmuls (AMX/AVX512-BF16), else fp32
    # Recompute activations in the backward pass instead of keeping them: at 256 tokens, all layers,
    # peak RSS 8.2 -> 2.9 GB for ~20% more CPU; at 128 tokens and 6 layers only 2.4 -> 2.0 GB for ~40%.
    gradient_checkpointing: bool = False


@dataclass
class Pair:
    query: str
    positive: str
    chunk_id: int
    doc_id: str
    negative: str = ""
    kind: str = ""  # question | cloze | llm (services.tuning.pseudo_queries)
    negative_ids: list[int] = field(default_factory=list)  # chunk ids of the mined negatives (the first: `negative`)


@dataclass
class Progress:
    step: int = 0
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def eta_s(self) -> float | None:
        if not self.step:
            return None
        return (time.time() - self.started) / self.step * (self.steps - self.step)


# --- how long a run takes --------------------------------------------------------------------------
STAGES = ("data", "before", "train", "mix", "after")
# Seconds per unit of each stage, measured on the 2-core dev VM (README "Fine-tuning", the 1,000-judgment
# KB: 188 s data and mining for 1,600 pseudo-queries, 2.1 s a training step, 112 s choosing the mix,
# 92 s re-embedding 3,265 chunks, the rest evaluating the base). A run on this data dir replaces them
# with its own measurement (the card's "timing").
REFERENCE_RATES = {"data": 0.12, "before": 0.02, "train": 2.1, "mix": 0.05, "after": 0.03}
REFERENCE_LOAD_S = 10.0  # loading the model to train (once a run, whatever its size)
# Choosing the mix: each try loads (and, below 1.0, writes) a model, then embeds the dev documents' chunks
# plus up to DEV_DISTRACTORS others and searches the dev queries: seconds a try to load, seconds a chunk.
REFERENCE_MIX_LOAD_S = 10.0
# The final check ("after") loads the trained model once, then embeds every chunk of the KB: its load is
# counted apart from its chunks (a small KB's check is mostly the load: planned at 0.03 s a chunk alone,
# 60 chunks read 「剩余约 2 秒」 for the 20 s it took).
REFERENCE_AFTER_LOAD_S = REFERENCE_LOAD_S
DEV_DISTRACTORS = 600
UNIT_OF = {"data": "pairs", "before": "pairs", "train": "steps", "mix": "mix_chunks", "after": "chunks"}
PAIRS_PER_CHUNK = 1.8  # offline pseudo-queries a chunk gives (CMRC 2.0, 200 judgments 1.6)
TIMING_FILE = ".last_run_timing.json"  # under models/: the recent runs' timing, also when cancelled or failed
KEPT_RUNS = 5


def plan(chunks: int, documents: int, settings: FinetuneSettings) -> dict:
    """What a run on a KB of `chunks` / `documents` will likely do, from its size alone (questions
    written by an LLM; the reranker's estimate): pseudo-queries, training steps, whether a mix is
    chosen. `run_plan` counts them exactly where the questions are written offline."""
    pairs = min(settings.max_pairs, round(chunks * (settings.queries_per_chunk * PAIRS_PER_CHUNK / 2)))
    train = pairs * (1 - settings.heldout)
    mix = len(settings.mixes) > 1 and documents * (1 - settings.heldout) >= 10
    dev_chunks = 0
    if mix:
        train *= 1 - settings.dev
        dev_chunks = min(chunks, round(chunks * (1 - settings.heldout) * settings.dev) + DEV_DISTRACTORS)
    steps = settings.epochs * max(1, -(-int(train) // settings.batch_size)) if pairs else 0
    return {"chunks": chunks, "pairs": pairs, "steps": steps, "mix": mix,
            "mix_tries": len(settings.mixes) if mix else 0, "mix_chunks": dev_chunks * len(settings.mixes) if mix else 0}


_PLANS: dict[tuple, dict] = {}  # run_plan's answers by KB content generation and settings (asked on every rerun)


def run_plan(lib: Library, kb: KnowledgeBase, settings: FinetuneSettings) -> dict:
    """What `finetune` will do on `kb`, counted the way it counts: the offline pseudo-queries it
    writes (seeded, so the same ones), their held-out / dev split by document and the batches of
    every epoch, so the estimate's steps are the run's steps. Questions written by an LLM cannot be
    counted before the run: `plan`'s guess from the KB's size."""
    chunks, documents = lib.store.count_chunks(kb.id), len(lib.store.list_documents(kb.id))
    if settings.method == "llm" or not chunks:
        return plan(chunks, documents, settings)
    # the KB's generation changes with every commit that changes its searchable content, so a document
    # replaced by another of the same size is counted afresh (its counts alone would not tell)
    key = (str(lib.root), kb.id, lib.store.generation(kb.id), json.dumps(asdict(settings), sort_keys=True))
    if key not in _PLANS:
        pairs = generate_pairs(lib, kb, settings)
        train_pairs, _, dev_pairs = split_pairs(pairs, settings)
        dev_chunks = len(_dev_chunks(lib, kb, dev_pairs, DEV_DISTRACTORS)) if dev_pairs else 0
        tries = len(settings.mixes) if dev_pairs else 0
        _PLANS.clear() if len(_PLANS) > 32 else None
        _PLANS[key] = {"chunks": chunks, "pairs": len(pairs), "mix": bool(dev_pairs), "mix_tries": tries,
                       "steps": sum(map(len, epoch_batches(train_pairs, settings))) if len(pairs) >= 8 else 0,
                       "mix_chunks": dev_chunks * tries}
    return dict(_PLANS[key])


RECENT_RUNS = 3  # a stage's rate pools the newest runs that timed it (a single run's spike counts less)
# How much slower than the reference machine one run's rate is taken as it is (a loaded 2-core machine
# measured 4-11x); beyond it the excess shrinks by the evidence: units measured n against PRIOR_UNITS k,
# weight n / (n + k). Faster rates are taken as they are: load only slows a measurement down, and a
# faster machine (a GPU, more cores) is faster on every step.
TRUSTED_RATIO = 5.0
PRIOR_UNITS = {"steps": 4, "pairs": 32, "chunks": 64, "mix_chunks": 64, "evaluated": 8, "evaluated_on": 8,
               "load": 1, "mix_load": 1, "after_load": 1}


def damped(rate: float, reference: float, units: float, prior: float) -> float:
    """`rate` measured over `units` units, against the reference machine's `reference`: faster or up
    to TRUSTED_RATIO slower as measured; beyond it the excess (in log space) weighs units / (units +
    prior), so one slow step (a cancelled run's only step took 90 s against 2.1 s planned, and the next
    estimate read 49.8 minutes) counts as a hint, and many such steps as the machine's speed."""
    if rate <= 0 or reference <= 0:
        return rate
    slower, limit = float(np.log(rate / reference)), float(np.log(TRUSTED_RATIO))
    if slower <= limit:
        return rate
    return float(reference * np.exp(limit + (slower - limit) * units / (units + prior)))


def run_seconds(timing: dict) -> dict:
    """A run's seconds per stage as the rates count them: the train stage's steps apart from loading
    the model ("load"), the mix stage's chunks apart from its model loads, the final check's chunks
    apart from loading the trained model ("after_load")."""
    seconds = dict(timing.get("stages", {}))
    if timing.get("steps_s") is not None and seconds.get("train") is not None:
        seconds["load"] = max(0.0, seconds["train"] - timing["steps_s"])
        seconds["train"] = timing["steps_s"]
    if seconds.get("mix") is not None and timing.get("mix_load_s") is not None:
        seconds["mix"] = max(0.0, seconds["mix"] - timing["mix_load_s"])
    if seconds.get("after") is not None and timing.get("after_load_s") is not None:
        seconds["after_load"] = timing["after_load_s"]
        seconds["after"] = max(0.0, seconds["after"] - timing["after_load_s"])
    return seconds


def latest_rates(cards: list[dict], stages: tuple, unit_of: dict, reference_rates: dict, reference_load: float,
                 units: Callable[[dict], dict] = lambda timing: timing) -> dict | None:
    """Seconds per unit of each stage from the newest runs (cards, or cancelled runs' records) that
    timed it (embedder fine-tuning and reranker training both): per stage the newest RECENT_RUNS runs
    that finished it, their seconds over the units they actually handled (a cancelled run: the steps
    it did), `damped` towards the reference machine's rate where that is far off on little evidence;
    the train stage's model loading ("load") apart from its steps; a stage no run timed keeps the
    reference. `units(timing)`: how many units each stage handled (its unit names per `unit_of`)."""
    timings, seen = [], set()
    for c in sorted((c for c in cards if c.get("timing")), key=lambda c: -c.get("created_at", 0)):
        same = json.dumps([c["timing"].get("stages"), c["timing"].get("steps")], sort_keys=True)
        if same not in seen:  # a finished run is in its card and in the runs' record
            seen.add(same)
            timings.append(c["timing"])
    if not timings:
        return None
    references = {"load": reference_load, "mix_load": REFERENCE_MIX_LOAD_S, "after_load": REFERENCE_AFTER_LOAD_S,
                  **reference_rates}
    pooled: dict[str, list[float]] = {}  # stage: [seconds, units, runs]
    for timing in timings:  # newest first
        seconds, done = run_seconds(timing), units(timing)
        counted = {stage: done.get(unit_of[stage]) or 0 for stage in stages}
        counted["load"] = 1 if "load" in seconds else 0
        counted["after_load"] = 1 if "after_load" in seconds else 0
        if timing.get("mix_tries") and timing.get("mix_load_s") is not None:
            seconds["mix_load"], counted["mix_load"] = timing["mix_load_s"], timing["mix_tries"]
        for stage, n in counted.items():
            sums = pooled.setdefault(stage, [0.0, 0.0, 0])
            if n and seconds.get(stage) is not None and sums[2] < RECENT_RUNS:
                sums[0] += seconds[stage]
                sums[1] += n
                sums[2] += 1
    rates = {stage: damped(total / n, references[stage], n,
                           PRIOR_UNITS.get(stage if stage in ("load", "mix_load", "after_load") else unit_of[stage], 8))
             for stage, (total, n, runs) in pooled.items() if runs and stage in references}
    if not rates:
        return None
    return {"load": reference_load, **{s: reference_rates[s] for s in stages}, **rates}


def measured_rates(lib: Library) -> dict | None:
    """Seconds per unit of each stage from the latest runs on this data dir that recorded them:
    saved models' cards and the recent runs' record (`TIMING_FILE`, kept when a run is cancelled or
    fails: the stages it finished)."""
    return latest_rates(finetuned_models(lib) + recorded_runs(lib), STAGES, UNIT_OF, REFERENCE_RATES,
                        REFERENCE_LOAD_S)


def recorded_runs(lib: Library) -> list[dict]:
    """The recent runs' timing records (`TIMING_FILE`: {"runs": [...]}, newest last; an older data
    dir's file holds one record)."""
    record = models_dir(lib) / TIMING_FILE
    if not record.exists():
        return []
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("unreadable timing record %s", record)
        return []
    runs = data.get("runs", [data]) if isinstance(data, dict) else []
    return [r for r in runs if isinstance(r, dict) and isinstance(r.get("timing"), dict)]


class StageClock:
    """Times a training run's named stages, one after another: `clock("train")` ends the stage under
    way and starts the next (telling `on_stage`, except for the final "done"); `timing` holds each
    finished stage's wall seconds, which the model card keeps for the next run's estimate."""

    def __init__(self, on_stage: Callable[[str], None] | None = None):
        self.timing: dict[str, float] = {}
        self._current: tuple[str, float] | None = None
        self._on_stage = on_stage

    @property
    def current(self) -> tuple[str, float] | None:
        """(the stage under way, when it started)."""
        return self._current

    def __call__(self, name: str) -> None:
        now = time.time()
        if self._current:
            self.timing[self._current[0]] = round(now - self._current[1], 2)
        self._current = (name, now)
        if self._on_stage and name != "done":
            self._on_stage(name)


def estimate(lib: Library, kb: KnowledgeBase, settings: FinetuneSettings | None = None) -> dict:
    """How long fine-tuning `kb` with `settings` should take, before starting: {"stages": seconds per
    stage, "seconds": the total, "load": the seconds of the train stage spent loading the model,
    "measured": True when the speed is this data dir's last runs (else the reference machine's), and
    the plan (chunks, pairs, steps: `run_plan`, the run's own counts)}. Generating questions with an
    LLM is not counted (its speed is the endpoint's)."""
    settings = settings or FinetuneSettings()
    run = run_plan(lib, kb, settings)
    rates = measured_rates(lib)
    use = {"mix_load": REFERENCE_MIX_LOAD_S, "after_load": REFERENCE_AFTER_LOAD_S,
           **(rates or {**REFERENCE_RATES, "load": REFERENCE_LOAD_S})}
    stages = {stage: round(use[stage] * run[UNIT_OF[stage]], 1) for stage in STAGES}
    stages["train"] = round(stages["train"] + use["load"], 1)
    stages["after"] = round(stages["after"] + use["after_load"], 1)
    stages["mix"] = round(stages["mix"] + use["mix_load"] * run["mix_tries"], 1) if run["mix"] else 0.0
    return {**run, "stages": stages, "seconds": round(sum(stages.values()), 1), "load": round(use["load"], 1),
            "measured": rates is not None, "learns_from_unfinished": True}


PACE_PRIOR_S = 20.0  # planned seconds of finished work at which this run's measured pace counts half (log scale)


def pace(stages: dict, finished: dict | None) -> float:
    """How much slower (> 1) or faster this run goes than planned: the finished stages' measured
    seconds over their planned seconds (bounded to 0.25–10), trusted as far as the evidence goes —
    in log scale weighted by planned / (planned + PACE_PRIOR_S), so a few seconds of finished work
    hardly move it (the walkthrough's 80 s estimate read 「剩余约 2.7 分钟」 5 s later: a 2 s stage
    that took 5 s scaled everything after it by 2.5) while minutes of it count nearly fully. 1
    before any stage finished. The pre-start estimate and the time left thus come from one plan,
    departing from it only as measured work accumulates."""
    planned = sum(float(stages.get(s, 0.0)) for s in (finished or {}))
    if not finished or planned <= 0:
        return 1.0
    ratio = min(10.0, max(0.25, sum(finished.values()) / planned))
    return float(ratio ** (planned / (planned + PACE_PRIOR_S)))


def time_left(stage: str, stage_seconds: float, stages: dict, train_eta: float | None = None,
              finished: dict | None = None, step: int = 0, steps: int = 0, load: float = 0.0) -> float | None:
    """Seconds left in a run that has spent `stage_seconds` in `stage`: the rest of this stage (its
    estimate less the time spent, at least a tenth of it; while training, blended into the trainer's
    measured ETA as steps accumulate — fully from half way, since the first steps' ETA is noisy and
    made the time left jump 16 s -> 72 s at step 1) plus the estimates of the stages after it, scaled
    by this run's `pace` so far: its `finished` stages' measured seconds against the plan, and the
    stage under way counted at the length now expected of it. So a stage that overruns raises the
    estimate of the stages after it as it goes (the walkthrough saw the time left sit at 72 s while a
    slow first stage ran on, then jump to 105 s when it ended).

    Training's `steps` known before its first step (the plan's count), the steps not yet done keep
    their planned time: a first step running long (90 s on a loaded machine against 2.1 s planned)
    no longer counts the time left down to a few seconds while the bar, which counts steps, stands
    still (`load`: the train stage's planned seconds of loading the model).

    None once the final check (the last stage) has taken FINAL_KNOWN of the time expected of it: no
    stage comes after it to carry an estimate, and the tenth of it that an overrun keeps would read
    「剩余约 2 秒」 for as long as it runs on, so the page says 「正在最后检查…」 instead."""
    if stage not in STAGES:
        return float(sum(stages.values()))
    scale = pace(stages, finished)
    planned = float(stages.get(stage, 0.0)) * scale
    if stage == STAGES[-1] and stage_seconds >= FINAL_KNOWN * planned:
        return None
    now = max(planned - stage_seconds, planned * 0.1)
    if stage == "train" and steps and step < steps and train_eta is None:
        per_step = max(0.0, float(stages.get("train", 0.0)) - load) / steps * scale
        now = max(now, (steps - step - 0.9) * per_step)
    if stage == "train" and train_eta is not None:
        trust = min(1.0, 2 * step / steps) if steps else 1.0
        now = trust * train_eta + (1 - trust) * now
    if stages.get(stage):  # the pace with this stage at the length now expected of it (= scale while on plan)
        expected = stage_seconds + now if stage == "train" and (train_eta is not None or steps) \
            else max(planned, stage_seconds)
        scale = pace(stages, {**(finished or {}), stage: expected})
    return now + scale * float(sum(stages.get(s, 0.0) for s in STAGES[STAGES.index(stage) + 1:]))


FINAL_KNOWN = 0.9  # the share of the final check's expected time up to which its time left is a number


def creep(x: float) -> float:
    """A stage's part done from its time spent over its time expected `x`: x itself up to 0.9, then
    on towards 1 without reaching it (0.95 at twice the time, 0.99 at ten times): a stage running
    over its plan still moves the bar, and never fills it while work remains."""
    x = max(0.0, x)
    return x if x <= 0.9 else x / (x + 0.1)


def share_done(stage: str, stage_seconds: float, stages: dict, step: int = 0, steps: int = 0,
               load: float = 0.0, since_step: float = 0.0) -> float:
    """The share of a run done, never less than a moment before: each stage weighs its planned
    seconds (fixed when the run starts), the stages before `stage` count whole, `stage` by its
    progress — by `creep` of the time spent over the time planned, so every stage moves the bar and
    none fills it before it ends; training by its steps (after the model's `load`, a fixed part of
    the train stage), the step under way by `creep` of the `since_step` seconds it has taken over a
    step's expected time (loading and the first step together before the first, saving the model
    after the last), so the bar moves between steps however long one takes (the walkthrough's first
    step took 90 s: the bar stood at 39%) and the step's share is reached only when it is done."""
    total = float(sum(stages.values()))
    if stage not in STAGES or total <= 0:
        return 0.0
    before = sum(float(stages.get(s, 0.0)) for s in STAGES[:STAGES.index(stage)])
    planned = float(stages.get(stage, 0.0))
    part = creep(stage_seconds / planned) if planned > 0 else 0.0
    if stage == "train" and planned > 0:
        loading = min(0.5, load / planned)
        per_step = max(planned - load, 0.0) / steps if steps else 0.0
        if steps and step:  # a step's time as this run measured it, at the last step's end
            per_step = max(per_step * 0.1, (stage_seconds - since_step - load) / step)

        def mark(k: int) -> float:  # the part of the stage done with k steps done (saving the model after)
            return loading + (1 - loading) * 0.97 * min(k, steps) / steps

        if not steps:  # steps unknown (an older row): loading by time, then nothing until the first step
            part = min(part, loading)
        elif step == 0:  # loading the model and the first step
            part = mark(1) * creep(stage_seconds / (load + per_step) if load + per_step > 0 else 1.0)
        else:
            upper = mark(step + 1) if step < steps else 1.0
            part = mark(step) + (upper - mark(step)) * creep(since_step / per_step if per_step > 0 else 1.0)
    return min(0.99, (before + part * planned) / total)  # 「100%」 only when the run has ended


def progress_of(job) -> tuple[float, float | None]:
    """(share done, seconds left) of a running fine-tuning job, from its row: the share by
    `share_done` (stage weights fixed at the start, never below the share the worker last recorded,
    so it never goes back) and the time left by `time_left` at this moment (this run's measured
    speed: the training ETA, the pace of its finished stages). (0, None) before the run reported its
    plan; the time left is None too in the final check once it has run past its estimate (`time_left`)."""
    r = job.result or {}
    stages = r.get("plan")
    if not stages:
        return 0.0, None
    now = time.time()
    since_report = max(0.0, now - job.updated_at)
    eta = r.get("eta_s")
    spent_here = max(0.0, now - r.get("stage_started", now))
    load = r.get("load", 0.0) or 0.0
    left = time_left(job.stage, spent_here, stages, None if eta is None else max(0.0, eta - since_report),
                     r.get("stage_seconds"), job.done or 0, job.total or 0, load)
    share = share_done(job.stage, spent_here, stages, job.done or 0, job.total or 0, load,
                       min(since_report, spent_here))
    return max(float(r.get("share") or 0.0), share), left


# --- training data -------------------------------------------------------------------------------
def generate_pairs(lib: Library, kb: KnowledgeBase, settings: FinetuneSettings, llm=None) -> list[Pair]:
    """Pseudo-queries for the KB's chunks (services.tuning.pseudo_queries: offline answer-masked questions
    and inverse cloze; with `llm`: generated questions), at most `queries_per_chunk` per chunk."""
    rng = random.Random(settings.seed)
    chunks = [c for batch in lib.store.iter_chunks(kb.id, 1000) for c in batch]
    rng.shuffle(chunks)
    texts_of = StoredIndexTexts(lib.store, kb.id)
    documents = functools.lru_cache(maxsize=64)(lambda doc_id: lib.store.document_text(kb.id, doc_id))
    pairs: list[Pair] = []
    for c in chunks:
        if len(pairs) >= settings.max_pairs:
            break
        passage = texts_of([c])[0]
        if llm is not None:
            body = normalize(c.text)
            found = [PseudoQuery(q, window_for(passage, body, q), "llm") for q in llm_queries(llm, c.text)]
        else:
            cut = starts_inside_a_sentence(documents(c.doc_id), c.start)
            found = offline_queries(passage, normalize(c.text), rng, settings.queries_per_chunk, cut_start=cut)
        pairs += [Pair(q.query, q.positive, c.id, c.doc_id, kind=q.kind) for q in found]
    return pairs[:settings.max_pairs]


def mine_negatives(lib: Library, kb: KnowledgeBase, pairs: list[Pair], settings: FinetuneSettings,
                   embedder=None, count: int = 1, same_document: bool = False) -> list[Pair]:
    """Give each pair a hard negative from another document: a BM25 or dense candidate sampled from
    the rank range (BGE), never a near-duplicate of the positive, and — positive-aware mining
    (NV-Retriever) with the KB's current model (`embedder`) — scored below `negative_ceiling` times
    the positive's score: in documents that share templates (court judgments) a candidate the model
    finds as close as the positive is more often an unlabelled answer than a wrong one. Pairs
    without a candidate keep in-batch negatives only.

    `count` > 1 samples up to that many (their chunk ids in `negative_ids`, the first also as
    `negative`); `same_document` also admits chunks of the positive's own document that do not
    overlap the positive's chunk (a reranker sees those among its candidates; an embedder's
    in-batch training does not want them)."""
    rng = random.Random(settings.seed + 1)
    lo, hi = settings.negatives_range
    texts_of = StoredIndexTexts(lib.store, kb.id)
    dense = _DenseScorer(lib, kb, embedder) if embedder is not None else None
    for p in pairs:
        candidates = [f.id for f in lib.keyword.search(kb, query_vector(p.query), hi)][lo - 1:]
        if dense is not None:
            q = dense.query(p.query)
            candidates += dense.top(q, hi)[lo - 1:]
            ceiling = settings.negative_ceiling * dense.score(q, p.chunk_id)
            candidates = [i for i in candidates if dense.score(q, i) < ceiling]
        chunks = lib.store.get_chunks(sorted(set(candidates) | {p.chunk_id}))
        own = chunks.get(p.chunk_id)

        def admissible(c) -> bool:
            if c.doc_id != p.doc_id:
                return True
            return same_document and own is not None and c.id != own.id and (c.end <= own.start or c.start >= own.end)

        fit = [chunks[i] for i in dict.fromkeys(candidates)
               if i in chunks and admissible(chunks[i]) and not near_duplicate(chunks[i].text, p.positive)]
        if fit:
            picked = [rng.choice(fit)] if count == 1 else rng.sample(fit, min(count, len(fit)))
            p.negative = texts_of(picked[:1])[0]  # as indexed (title line too), like the positive
            p.negative_ids = [c.id for c in picked]
    return pairs


class _DenseScorer:
    """The KB's chunks as its current model embeds them (from the embedding cache), for mining."""

    def __init__(self, lib: Library, kb: KnowledgeBase, embedder):
        self.embedder = embedder
        self.vectors = MemoryDense(lib.store, kb.id, embedder, cache=lib.cache).vectors
        self.ids = self.vectors.ids

    def query(self, text: str) -> np.ndarray:
        return self.embedder.encode_query(text)

    def top(self, q: np.ndarray, k: int) -> list[int]:
        return [found.id for found in self.vectors.search(q, k)]

    def score(self, q: np.ndarray, chunk_id: int) -> float:
        return self.vectors.score(q, chunk_id)


def near_duplicate(a: str, b: str, threshold: float = 0.5) -> bool:
    """Character-bigram Jaccard similarity above `threshold` (the same passage in another file)."""
    x, y = _bigrams(a), _bigrams(b)
    return bool(x and y) and len(x & y) / len(x | y) > threshold


def _bigrams(text: str) -> set[str]:
    text = re.sub(r"\s+", "", text)
    return {text[i:i + 2] for i in range(len(text) - 1)}


def split_heldout(pairs: list[Pair], settings: FinetuneSettings, share: float | None = None,
                  seed: int = 2) -> tuple[list[Pair], list[Pair]]:
    """Held-out queries by document (no document contributes to both), for an honest evaluation."""
    share = settings.heldout if share is None else share
    docs = sorted({p.doc_id for p in pairs})
    random.Random(settings.seed + seed).shuffle(docs)
    held = set(docs[:max(1, round(len(docs) * share))]) if len(docs) > 1 else set()
    train = [p for p in pairs if p.doc_id not in held]
    test = [p for p in pairs if p.doc_id in held] or pairs[: max(1, len(pairs) // 7)]
    return train, test


def split_pairs(pairs: list[Pair], settings: FinetuneSettings) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """(train, held-out, dev) queries, by document: dev queries (choosing the weight mix) only when
    mixes are tried and the training part spans at least 10 documents."""
    train_pairs, test_pairs = split_heldout(pairs, settings)
    dev_pairs: list[Pair] = []
    if len(settings.mixes) > 1 and len({p.doc_id for p in train_pairs}) >= 10:
        train_pairs, dev_pairs = split_heldout(train_pairs, settings, settings.dev, seed=3)
    return train_pairs, test_pairs, dev_pairs


def epoch_batches(pairs: list[Pair], settings: FinetuneSettings) -> list[list[list[Pair]]]:
    """Every epoch's batches (seeded): what `train` steps through and `run_plan` counts."""
    rng = random.Random(settings.seed)
    return [_batches(pairs, settings.batch_size, rng) for _ in range(settings.epochs)]


# --- training ------------------------------------------------------------------------------------
def train(base: str, pairs: list[Pair], out_dir: Path, settings: FinetuneSettings,
          on_step: Callable[[Progress], None] | None = None, cancelled: Callable[[], bool] | None = None,
          device: str | None = None):
    """Contrastive training (MultipleNegativesRankingLoss) of the sentence-transformers model `base`;
    saves it to `out_dir` and returns the Progress (loss per step). Raises Cancelled when asked to stop."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from services.index.embedding import pick_device

    torch.manual_seed(settings.seed)
    model = SentenceTransformer(base, device=device or pick_device(), local_files_only=True)
    full_length = model.max_seq_length
    model.max_seq_length = min(full_length or 512, settings.max_seq_length)  # shorter while training (speed)
    if settings.gradient_checkpointing:
        _checkpoint_activations(model)
    if settings.freeze_embeddings:  # e5-small: 96M of its 118M weights; freezing them saves ~2.3 GB of
        _input_embeddings(model).requires_grad_(False)  # gradients + optimizer state and time per step
    _freeze_lower_layers(model, settings.train_layers)
    prefix_q, prefix_p = _prefixes(base)
    loss_fn = MultipleNegativesRankingLoss(model, scale=settings.scale)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    epochs = epoch_batches(pairs, settings)
    progress = Progress(steps=sum(map(len, epochs)))
    warmup = max(1, progress.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (progress.steps - s) / max(1, progress.steps - warmup)))
    model.train()
    for batches in epochs:
        for batch in batches:
            if cancelled and cancelled():
                raise Cancelled()
            columns = [[prefix_q + p.query for p in batch], [prefix_p + p.positive for p in batch]]
            if all(p.negative for p in batch):
                columns.append([prefix_p + p.negative for p in batch])
            features = [_to_device(model.tokenize(col), model.device) for col in columns]
            with autocast(model.device, settings.precision):
                loss = loss_fn(features, torch.zeros(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            progress.step += 1
            progress.losses.append(float(loss.detach()))
            if on_step:
                on_step(progress)
    model.eval()
    model.max_seq_length = full_length  # saved with the base's length: passages are embedded whole, as before
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return progress


def _batches(pairs: list[Pair], size: int, rng: random.Random, slots: int = 4) -> list[list[Pair]]:
    """Shuffled batches in which, where the KB allows, no two pairs come from the same document
    (never from the same chunk): the other pairs' positives are a query's in-batch negatives, and a
    passage of its own document may answer it. A KB of one or two documents still fills its batches."""
    order = pairs[:]
    rng.shuffle(order)
    batches: list[list[Pair]] = []
    filling: list[list[Pair]] = []
    for p in order:
        fits = [b for b in filling if all(x.doc_id != p.doc_id for x in b)]
        if not fits and len(filling) >= slots:
            fits = [b for b in filling if all(x.chunk_id != p.chunk_id for x in b)]
        batch = fits[0] if fits else None
        if batch is None:
            batch = []
            filling.append(batch)
        batch.append(p)
        if len(batch) == size:
            batches.append(batch)
            filling.remove(batch)
    return batches + filling


def _freeze_lower_layers(model, train_layers: int) -> None:
    """Train only the top `train_layers` transformer layers (0: all): fewer weights to move on a few
    hundred pseudo-queries, so less of what the base model knows is lost."""
    layers = getattr(getattr(model[0].auto_model, "encoder", None), "layer", None)
    if not train_layers or layers is None or train_layers >= len(layers):
        return
    for layer in layers[:len(layers) - train_layers]:
        layer.requires_grad_(False)


def choose_mix(lib: Library, kb: KnowledgeBase, base: str, folder: Path, dev_pairs: list[Pair],
               mixes: tuple[float, ...], distractors: int = DEV_DISTRACTORS,
               cancelled: Callable[[], bool] | None = None,
               timing: dict | None = None) -> tuple[float, dict[float, float]]:
    """Weight-space ensembling (WiSE-FT): score base + mix x (trained - base) for each mix on the dev
    queries (dense MRR@10 by the evaluator, services.tuning.evaluation, over their documents' chunks
    plus up to `distractors` others held in memory, so each try embeds a few hundred chunks, not the KB), leave the best mix's weights in `folder` (the trained
    model) and return (that mix, {mix: dev MRR@10}); a tie keeps more of the base. Interpolating keeps more of
    what the base knew where the KB's pseudo-queries teach little (general text) and most of the
    gain where they teach a lot (court judgments). `timing`, when given, gets the tries, the chunks
    embedded in all and the seconds spent loading and writing models ("mix_tries", "mix_chunks",
    "mix_load_s": the next run's estimate of this stage)."""
    from services.index.embedding import open_embedder

    chunks = _dev_chunks(lib, kb, dev_pairs, distractors)
    questions = pair_questions(lib, kb, dev_pairs, "dev")
    config = EvalConfig("dev", "dense", False, replace(retrieval_settings(lib, kb), mode="dense", rerank=False))
    scores: dict[float, float] = {}
    tried: dict[float, Path] = {}
    try:
        for mix in sorted(mixes, reverse=True):
            if cancelled and cancelled():
                raise Cancelled()
            loading = time.time()
            tried[mix] = folder if mix == 1.0 else _mixed_copy(folder, base, mix)
            embedder = open_embedder(str(tried[mix]))
            if timing is not None:
                timing["mix_load_s"] = round(timing.get("mix_load_s", 0.0) + time.time() - loading, 2)
                timing["mix_tries"] = timing.get("mix_tries", 0) + 1
                timing["mix_chunks"] = timing.get("mix_chunks", 0) + len(chunks)
            dense = MemoryDense(lib.store, kb.id, embedder, chunks)
            scores[mix] = evaluate(lib, kb, questions, [config], dense=dense)[0]["dev"]["mrr@10"]
        best = max(scores, key=lambda m: (scores[m], -m))
        if tried[best] != folder:
            shutil.rmtree(folder)
            tried[best].rename(folder)
    finally:
        for path in tried.values():
            if path != folder:
                shutil.rmtree(path, ignore_errors=True)
    return best, scores


def _mixed_copy(folder: Path, base: str, mix: float) -> Path:
    """A copy of the trained model in `folder` with weights base + mix x (trained - base), in place
    (two sets of weights in memory, not three)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    start = SentenceTransformer(base, device="cpu", local_files_only=True).state_dict()
    with torch.no_grad():
        for name, weights in model.state_dict().items():
            if weights.is_floating_point() and name in start:
                weights.mul_(mix).add_(start[name], alpha=1 - mix)
    out = folder.with_name(f"{folder.name}.mix{mix}")
    shutil.rmtree(out, ignore_errors=True)
    model.save(str(out))
    return out


def _dev_chunks(lib: Library, kb: KnowledgeBase, dev_pairs: list[Pair], distractors: int) -> list:
    """The dev queries' documents' chunks and a seeded sample of up to `distractors` other chunks."""
    docs = {p.doc_id for p in dev_pairs}
    chunks = [c for batch in lib.store.iter_chunks(kb.id, 1000) for c in batch]
    own = [c for c in chunks if c.doc_id in docs]
    others = [c for c in chunks if c.doc_id not in docs]
    return own + random.Random(0).sample(others, min(distractors, len(others)))


def autocast(device, precision: str):
    """bf16 autocast for the forward pass where the CPU multiplies bf16 natively (weights, gradients
    and optimizer state stay fp32); a no-op elsewhere. CUDA keeps its own fp32/AMP choice."""
    import contextlib

    import torch

    from services.index.torch_e5 import resolve_precision

    if torch.device(device).type == "cpu" and resolve_precision(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Cancelled(errors.WendaoError):
    default_message = "微调已取消。"


def _checkpoint_activations(model) -> None:
    """Activation (gradient) checkpointing on the model's transformer, by whichever name this
    transformers version offers (activation_checkpointing_enable replaces gradient_…)."""
    backbone = model[0].auto_model
    enable = getattr(backbone, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _input_embeddings(model):
    """The token embedding module of a sentence-transformers model's transformer."""
    return model[0].auto_model.get_input_embeddings()


def _to_device(features: dict, device) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _prefixes(base: str) -> tuple[str, str]:
    from services.index.models import resolve

    spec = resolve(base, "embedding")
    return spec.query_prefix, spec.passage_prefix


# --- evaluation ----------------------------------------------------------------------------------
QUESTION_LIMIT = 1000  # questions of the KB's saved set evaluated per model (time: ~2 queries per question)
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10")  # the before/after table's columns
MODES = ("dense", "hybrid")  # its rows: the retrieval modes the embedder takes part in


def pair_questions(lib: Library, kb: KnowledgeBase, pairs: list[Pair], prefix: str = "heldout") -> list[Question]:
    """Pseudo-queries as questions for the evaluator (services.tuning.evaluation): relevant = a
    passage of the query's document that holds the whole chunk the query came from."""
    chunks = lib.store.get_chunks([p.chunk_id for p in pairs])
    names = lib.store.filenames(kb.id)
    return [Question(f"{prefix}-{n}", p.query, names.get(p.doc_id, ""),
                     [(chunks[p.chunk_id].start, chunks[p.chunk_id].end)])
            for n, p in enumerate(pairs) if p.chunk_id in chunks]


def answerable_questions(lib: Library, kb: KnowledgeBase, questions: list[Question]) -> list[Question]:
    """The user's questions that some chunk of this KB answers by the evaluator's relevance rule
    (services.tuning.evaluation.holds_answer). The others (their document is not in this KB, or they
    are yes/no or unanswerable) would score 0 before and after and say nothing about the model."""
    names = lib.store.filenames(kb.id)
    by_key: dict[str, list] = {}
    for batch in lib.store.iter_chunks(kb.id, 1000):
        for c in batch:
            by_key.setdefault(doc_key(names.get(c.doc_id, "")), []).append(c)
    return [q for q in questions if q.retrievable and
            any(holds_answer(names[c.doc_id], c.start, c.end, q) for c in by_key.get(q.doc_key, []))]


LEFT_OUT = ("yesno", "unanswerable", "not_found", "missing", "no_passage", "over_limit")


def left_out_questions(lib: Library, kb: KnowledgeBase, saved: list[Question], counted: list[Question]) -> dict:
    """Why the saved questions not in `counted` (`answerable_questions`) were left out, with counts,
    in 评测's reasons (services.tuning.evaluation.split_questions): yes/no, unanswerable, answer text
    not found in its document, document not in the KB; "no_passage": no single passage holds the
    whole answer; "over_limit": beyond QUESTION_LIMIT. Only the reasons that apply."""
    filenames = [d.filename for d in lib.store.list_documents(kb.id) if d.status == "ready"]
    parts = split_questions(saved[:QUESTION_LIMIT], filenames)
    kept = {id(q) for q in counted}
    found = {k: len(parts[k]) for k in ("yesno", "unanswerable", "not_found", "missing")}
    found["no_passage"] = sum(id(q) not in kept for q in parts["scored"])
    found["over_limit"] = max(0, len(saved) - QUESTION_LIMIT)
    return {k: found[k] for k in LEFT_OUT if found[k]}


def evaluate_sets(lib: Library, kb: KnowledgeBase, model_path: str | None,
                  sets: dict[str, list[Question]], timing: dict | None = None) -> dict[str, dict]:
    """For each named question set: R@1/5/10 and MRR@10, dense alone and hybrid, measured by the 评测
    page's evaluator (services.tuning.evaluation.evaluate: Retriever.search with the KB's retrieval
    settings; reranking off, so the numbers are the embedder's). Returns {set: {"dense": {...},
    "hybrid": {...}, "queries": n}}.

    `model_path` None: the KB's model and index, as users search today. A path: that model's vectors
    for all of the KB's chunks, held in memory (services.index.dense.MemoryDense) and searched by the
    same pipeline; they go into the embedding cache too, so switching the KB to it embeds nothing.
    `timing`, when given, gets the seconds spent loading that model ("after_load_s": the next run's
    estimate of the final check)."""
    from services.index.embedding import open_embedder

    dense = None
    if model_path is not None:  # a fresh embedder: a run's output folder is reused by the next run
        loading = time.time()
        embedder = open_embedder(model_path)
        if timing is not None:
            timing["after_load_s"] = round(time.time() - loading, 2)
        dense = MemoryDense(lib.store, kb.id, embedder, cache=lib.cache)
    base = retrieval_settings(lib, kb)
    configs = [EvalConfig(mode, mode, False, replace(base, mode=mode, rerank=False)) for mode in MODES]
    results = {}
    for name, questions in sets.items():
        summaries = evaluate(lib, kb, questions, configs, dense=dense)[0] if questions else {}
        results[name] = {mode: {m: summaries[mode][m] if summaries else 0.0 for m in METRICS} for mode in MODES}
        results[name]["queries"] = len(questions)
    return results


def is_better(before: dict, after: dict, questions: dict | None = None) -> bool:
    """Offer the switch? On the user's question set when the KB has one (hybrid MRR@10 not worse and
    dense MRR@10 better), else on the held-out pseudo-queries (dense MRR@10 better)."""
    if questions:
        b, a = questions["before"], questions["after"]
        return a["hybrid"]["mrr@10"] >= b["hybrid"]["mrr@10"] and a["dense"]["mrr@10"] > b["dense"]["mrr@10"]
    return after["dense"]["mrr@10"] > before["dense"]["mrr@10"]


FEW_QUESTIONS = 30  # below this many questions a before/after difference may be one question flipping


def few_questions_zh(n: int, what: str = "检验题") -> str:
    """The caveat under a before/after table measured on `n` questions ("" from FEW_QUESTIONS on)."""
    return f"{what}只有 {n} 道，差异可能只是偶然" if 0 < n < FEW_QUESTIONS else ""


def verdict(card: dict) -> dict:
    """What a fine-tuned embedder's card says about using it, in Chinese, for every place that lists
    or offers it (设置's model picker, the 微调 page, the core's switch): {"better": the run's decision
    (`is_better`), "on": "questions" (the KB's saved set) or "heldout", "before" / "after": the
    decisive dense MRR@10, "n": questions it was measured on, "warning": 「微调后检测变差（0.886 →
    0.881），不建议使用」 ("" when better), "caveats": {"heldout", "questions"}: 「检验题只有 6 道，差异
    可能只是偶然」 per set under FEW_QUESTIONS ("" otherwise), "decision": the sentence saying whether
    the switch is offered, with the decisive set's caveat}."""
    on = "questions" if card.get("questions") else "heldout"
    decisive = card["questions"] if on == "questions" else card
    try:
        before = float(decisive["before"]["dense"]["mrr@10"])
        after = float(decisive["after"]["dense"]["mrr@10"])
    except (KeyError, TypeError, ValueError):
        before = after = 0.0
    n = int(card["questions"].get("n", 0)) if on == "questions" else int(card.get("before", {}).get("queries", 0) or 0)
    caveats = {"heldout": few_questions_zh(int(card.get("before", {}).get("queries", 0) or 0)),
               "questions": few_questions_zh(int((card.get("questions") or {}).get("n", 0)), "问题集里的题")}
    better = bool(card.get("better"))
    where = "本知识库的问题集" if on == "questions" else "检验题"
    numbers = f"{before:.3f} → {after:.3f}"
    warning = "" if better else (f"微调后检测{'变差' if after < before else '没有变好'}（{numbers}），不建议使用")
    caveat = caveats[on]
    if better:
        decision = ("微调后的模型在本知识库的问题集上更好（向量检索的名次得分提高，混合检索的没有下降）。"
                    if on == "questions" else "微调后的模型在检验题上更好（向量检索的名次得分提高）。")
        decision += f"但{caveat}，切换后可以在评测页用更多问题核对。" if caveat else ""
    else:
        decision = f"微调后的模型在{where}上没有变好，因此不提供切换（向量检索的名次得分 {numbers}）。"
        decision += (f"{caveat}：可以在评测页保存更多问题（至少 {FEW_QUESTIONS} 道）后再比较，" if caveat else "") \
            + "可以增加训练轮数或训练题数后再试。"
    return {"better": better, "on": on, "before": before, "after": after, "n": n, "warning": warning,
            "caveats": caveats, "decision": decision}


# --- the whole run -------------------------------------------------------------------------------
def trainable_base(lib: Library, kb: KnowledgeBase) -> str:
    """A sentence-transformers folder or id for the KB's current model (the bundled 4-bit engine is
    converted to its torch form first, when that converter is available)."""
    from services.index.models import resolve

    name = lib.embedding_model(kb)
    served = parse_served(name)
    if served is not None:  # trained here from the model the server runs, when this machine has it
        name = served_base(served)
    spec = resolve(name, "embedding")
    if not spec.bundled:
        return spec.hf_id
    try:
        from services.index import torch_e5

        return str(torch_e5.model_dir())
    except Exception as exc:  # noqa: BLE001
        raise errors.ModelLoadError("内置的 4-bit 向量模型无法直接微调，且转换为可训练模型失败。"
                                    "请先在设置中选择一个 sentence-transformers 模型（本地文件夹或模型 ID）。") from exc


def served_base(served) -> str:
    """The in-process name of a served model: its registry name, or the local folder it was served
    from. A model server's weights are not reachable from here, so any other served model refuses
    fine-tuning with what to do instead."""
    from services.index.models import MODELS

    if served.model in MODELS or Path(served.model).expanduser().is_dir():
        return served.model
    raise errors.ModelLoadError(
        f"这个知识库的向量由模型服务计算（模型「{served.model}」），微调需要在本机加载同一个模型，但本机找不到它。"
        "请让模型服务以本机也有的模型文件夹路径作为模型名，或在设置中先换成本地模型（文件夹或模型 ID）并重建向量后再微调。")


def models_dir(lib: Library) -> Path:
    return lib.root / "models"


KB_FOLDER_PREFIX = "@kb"  # "@" is not allowed in model names: no model folder can be taken for a KB's


def kb_models_dir(lib: Library, kb: KnowledgeBase) -> Path:
    """The folder of one KB's fine-tuned models: names are per KB, so one KB's model can neither take
    nor overwrite another's (the same name in two KBs is two folders), and naming one tells nothing
    about the models of KBs one cannot see. The KB's creation time is part of it: a KB made later
    under a reused id gets a folder of its own. (Models saved before, directly under models/, stay
    where they are.)"""
    return models_dir(lib) / f"{KB_FOLDER_PREFIX}{kb.id}-{int(kb.created_at * 1000)}"


def model_folder(lib: Library, kb: KnowledgeBase, name: str) -> Path:
    """Where the KB's model `name` lives (a checked name: always a direct child of `kb_models_dir`)."""
    parent = kb_models_dir(lib, kb)
    folder = parent / valid_model_name(name)
    if folder.parent != parent or folder.resolve().parent != parent.resolve():  # belt and braces
        raise errors.InvalidName("模型名称不能包含路径。")
    return folder


def taken_name(lib: Library, kb: KnowledgeBase, name: str) -> str | None:
    """The finished model of this KB whose name equals `name` up to case (on Windows and macOS those
    are one folder), or None: in the KB's folder, or saved before models were kept per KB (directly
    under models/, its card naming this KB): two models of one KB listed under one name could not be told apart."""
    key = valid_model_name(name).casefold()
    parent = kb_models_dir(lib, kb)
    for folder in parent.iterdir() if parent.is_dir() else []:
        if folder.name.casefold() == key and not folder.name.startswith(".") and not unfinished(folder):
            return folder.name
    for card in finetuned_models(lib, "embedding") + finetuned_models(lib, "reranker"):
        if not card.get("kb_folder") and str(card.get("name", "")).casefold() == key and _old_card_of(card, kb):
            return card["name"]
    return None


def _old_card_of(card: dict, kb: KnowledgeBase) -> bool:
    """Whether a model saved directly under models/ was trained on `kb`: by id (cards since the security
    review), else by name; only a KB older than the model (a later KB under a reused id or name is another)."""
    try:
        made = float(card.get("created_at") or 0)
        same = int(card["kb_id"]) == kb.id if card.get("kb_id") is not None else card.get("kb") == kb.name
    except (TypeError, ValueError):
        return False
    return same and kb.created_at <= made


def require_free_name(lib: Library, kb: KnowledgeBase, name: str) -> None:
    """InvalidName when a finished model of this KB already has `name` (`taken_name`)."""
    taken = taken_name(lib, kb, name)
    if taken is not None:
        raise errors.InvalidName(f"这个知识库已有名为「{taken}」的微调模型，请换一个名字或先删除它。")


def new_model_folder(lib: Library, kb: KnowledgeBase, name: str) -> Path:
    """Where a model of the KB trained under `name` goes: free (a folder left by a run that stopped
    while evaluating is removed), or InvalidName when a finished model of this KB already has that name."""
    out = model_folder(lib, kb, name)
    require_free_name(lib, kb, name)
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def finetune(lib: Library, kb: KnowledgeBase, name: str, settings: FinetuneSettings | None = None,
             on_step: Callable[[Progress], None] | None = None, cancelled: Callable[[], bool] | None = None,
             llm=None, on_stage: Callable[[str], None] | None = None) -> dict:
    """Generate data, mine negatives, evaluate the base, train, evaluate the result, save with its
    card. Returns the card (with "before", "after" and "better"; with "questions" when the KB has a
    saved question set: {"n", "total", "left_out": reasons with counts, "before", "after"}, which then decides "better")."""
    settings = settings or FinetuneSettings()
    name = valid_model_name(name)
    out = new_model_folder(lib, kb, name)
    stage = StageClock(on_stage)  # the stages' wall times go to the card (the next run's estimate)
    timing = stage.timing
    counts: dict = {"chunks": lib.store.count_chunks(kb.id)}  # units each stage handled (see UNIT_OF)
    trained: dict = {}  # the training loop's last step: a cancelled run still tells its speed

    def stepped(p: Progress) -> None:
        trained.update(step=p.step, at=time.time(), started=p.started)
        if on_step:
            on_step(p)

    started = time.time()
    base = trainable_base(lib, kb)
    try:
        stage("data")
        pairs = generate_pairs(lib, kb, settings, llm)
        if len(pairs) < 8:
            raise errors.WendaoError("知识库内容太少，无法生成足够的训练数据（至少需要几十个片段）。")
        pairs = mine_negatives(lib, kb, pairs, settings, embedder=current_embedder(lib, kb))
        counts["pairs"] = len(pairs)
        train_pairs, test_pairs, dev_pairs = split_pairs(pairs, settings)
        saved = question_set(lib, kb) or []
        sets = {"heldout": pair_questions(lib, kb, test_pairs),
                "questions": answerable_questions(lib, kb, saved[:QUESTION_LIMIT])}
        stage("before")  # search as users get it: the KB's model and index (the base folder when the model won't load)
        before = evaluate_sets(lib, kb, None if current_embedder(lib, kb) else base, sets)
        stage("train")
        tmp = out.parent / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            progress = train(base, train_pairs, tmp, settings, stepped, cancelled)
            steps_s = time.time() - progress.started  # the training loop (and saving), without loading the model
            trained.update(step=progress.step, at=time.time(), started=progress.started)
            mix, dev_mrr = 1.0, {}
            if dev_pairs:
                stage("mix")
                mix, dev_mrr = choose_mix(lib, kb, base, tmp, dev_pairs, settings.mixes, cancelled=cancelled,
                                          timing=counts)
            # Evaluated in its final folder (an unfinished card keeps it out of the list) so the vectors
            # computed here are cached under the model's final identity: switching to it is then instant.
            (tmp / CARD).write_text(json.dumps({"name": name, "base_path": base, "status": "evaluating"}),
                                    encoding="utf-8")
            tmp.rename(out)
            stage("after")
            after = evaluate_sets(lib, kb, str(out), sets, timing=counts)
            stage("done")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            raise
    finally:  # finished, cancelled or failed: the stages it finished time the next run's estimate
        _record_timing(lib, stage, counts, trained)
    card = {"name": name, "base_model": lib.embedding_model(kb), "base_path": base, "kb": kb.name, "kb_id": kb.id,
            "created_at": time.time(), "pairs": {"train": len(train_pairs), "heldout": len(test_pairs),
                                                   "dev": len(dev_pairs),
                                                   "with_hard_negative": sum(bool(p.negative) for p in train_pairs),
                                                   "kinds": dict(Counter(p.kind for p in pairs))},
            "settings": asdict(settings), "before": before["heldout"], "after": after["heldout"],
            "losses": progress.losses, "seconds": round(time.time() - started, 1),
            "mix": mix, "dev_mrr": dev_mrr,
            "timing": {**counts, "stages": timing, "steps_s": round(steps_s, 2), "steps": progress.steps}}
    if sets["questions"]:  # the KB's saved question set (services.tuning.evaluation.save_question_set)
        card["questions"] = {"n": len(sets["questions"]), "total": len(saved),
                             "left_out": left_out_questions(lib, kb, saved, sets["questions"]),
                             "before": before["questions"], "after": after["questions"]}
    card["better"] = is_better(card["before"], card["after"], card.get("questions"))
    card["better_on"] = "questions" if "questions" in card else "heldout"
    (out / "README.md").write_text(_card_markdown(card), encoding="utf-8")
    (out / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    return {**card, "path": str(out)}


def _record_timing(lib: Library, clock: StageClock, counts: dict, trained: dict) -> None:
    """Keep a run's timing in `TIMING_FILE` (with the KEPT_RUNS - 1 before it) whatever its end (`measured_rates` reads it with the
    cards): the stages `clock` saw finish, the units they handled (`counts`) and, from the training
    loop's last step (`trained`), the seconds of the steps done — also when it stopped mid-training."""
    stages = dict(clock.timing)
    timing = {**counts, "stages": stages}
    if trained.get("step"):
        timing.update(steps=trained["step"], steps_s=round(trained["at"] - trained["started"], 2))
        current = clock.current
        if "train" not in stages and current and current[0] == "train":
            stages["train"] = round(trained["at"] - current[1], 2)
    if "mix" not in stages:  # cancelled while choosing the mix: its partial counts would mislead
        for k in ("mix_tries", "mix_chunks", "mix_load_s"):
            timing.pop(k, None)
    if "after" not in stages:  # stopped during the final check
        timing.pop("after_load_s", None)
    runs = recorded_runs(lib)[-(KEPT_RUNS - 1):] + [{"created_at": time.time(), "timing": timing}]
    try:
        models_dir(lib).mkdir(parents=True, exist_ok=True)
        (models_dir(lib) / TIMING_FILE).write_text(json.dumps({"runs": runs}), encoding="utf-8")
    except OSError as exc:  # the estimate falls back to older runs; never fail a run over it
        log.warning("could not record the run's timing: %s", exc)


def current_embedder(lib: Library, kb: KnowledgeBase):
    """The KB's embedder as search uses it (None when it cannot be loaded: the base folder is used)."""
    try:
        return lib.embedder(kb)
    except errors.WendaoError:
        return None


def unfinished(folder: Path) -> bool:
    """A model folder left by a run that stopped while evaluating (its card has no results: "after"
    for an embedder, "results" for a reranker)."""
    try:
        card = json.loads((folder / CARD).read_text(encoding="utf-8"))
        return "after" not in card and "results" not in card
    except (OSError, ValueError):
        return True


WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def valid_model_name(name: str) -> str:
    """A model name as saved (NFKC: full-width letters and look-alike dots are the plain ones, so
    "ｍｏｄｅｌ" is "model" and "．．" is ".."), or InvalidName: letters, digits, CJK, ".", "_" and "-"
    only (no separator of any system), not starting or ending with a dot, no Windows device name."""
    name = unicodedata.normalize("NFKC", name or "").strip()
    if not re.fullmatch(r"[\w\u4e00-\u9fff.-]{1,60}", name) or name.startswith(".") or name.endswith(".") \
            or not name.isprintable():
        raise errors.InvalidName("模型名称只能包含中文、字母、数字、点、下划线和短横线，不能以点开头或结尾，且不超过 60 个字符。")
    if name.split(".")[0].casefold() in WINDOWS_DEVICES:
        raise errors.InvalidName(f"「{name}」是 Windows 的设备名，不能用作模型名称，请换一个。")
    return name


def _card_markdown(card: dict) -> str:
    text = (f"# {card['name']}\n\n微调自 `{card['base_model']}`，知识库「{card['kb']}」，"
            f"{time.strftime('%Y-%m-%d', time.localtime(card['created_at']))}。训练查询 {card['pairs']['train']} 条，"
            f"留出评测 {card['pairs']['heldout']} 条。\n\n留出的生成查询：\n\n{_table_markdown(card['before'], card['after'])}")
    if card.get("questions"):
        q = card["questions"]
        text += f"\n知识库的问题集（{q['n']} 题）：\n\n{_table_markdown(q['before'], q['after'])}"
    return text


def _table_markdown(before: dict, after: dict) -> str:
    rows = "\n".join(f"| {kind} | {before[kind]['recall@5']:.3f} → {after[kind]['recall@5']:.3f} | "
                     f"{before[kind]['mrr@10']:.3f} → {after[kind]['mrr@10']:.3f} |" for kind in ("dense", "hybrid"))
    return f"| 检索 | R@5 | MRR@10 |\n| --- | --- | --- |\n{rows}\n"


def finetuned_models(lib: Library, kind: str = "embedding") -> list[dict]:
    """Saved fine-tuned models of `kind` (embedding; reranker: services.tuning.rerank_training), their
    cards with "path", newest first; those in a KB's folder (`kb_models_dir`) with "kb_folder", the
    folder's name, which says whose they are whatever the card says."""
    root = models_dir(lib)
    folders = []
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if entry.is_dir() and entry.name.startswith(KB_FOLDER_PREFIX):
            folders += [(f, entry.name) for f in sorted(entry.iterdir())]
        else:
            folders.append((entry, None))  # saved before models were kept per KB
    cards = []
    for folder, kb_folder in folders:
        card_file = folder / CARD
        if folder.is_dir() and not folder.name.startswith(".") and card_file.exists() and not unfinished(folder):
            try:
                card = json.loads(card_file.read_text(encoding="utf-8"))
            except ValueError:
                log.warning("unreadable model card %s", card_file)
                continue
            if card.get("kind", "embedding") == kind:
                cards.append({**card, "path": str(folder), **({"kb_folder": kb_folder} if kb_folder else {})})
    return sorted(cards, key=lambda c: -c.get("created_at", 0))


def model_path(lib: Library, model: str) -> Path:
    """The folder of a listed fine-tuned model (embedder or reranker), given its path, or its name
    where only one listed model has it; WendaoError otherwise (never a folder outside the list)."""
    return Path(pick_model(finetuned_models(lib, "embedding") + finetuned_models(lib, "reranker"), model)["path"])


def pick_model(cards: list[dict], model: str) -> dict:
    """The card among `cards` whose path is `model`, or whose name is, where only one has it;
    WendaoError otherwise (not found, or a name several KBs' models share)."""
    found = [c for c in cards if c["path"] == str(model)] or [c for c in cards if c["name"] == model]
    if not found:
        raise errors.WendaoError("找不到这个微调模型。")
    if len(found) > 1:
        raise errors.WendaoError(f"有 {len(found)} 个名为「{model}」的微调模型（属于不同的知识库），请在列表中选择要删除的那个。")
    return found[0]


def card_of(name: str) -> dict | None:
    """The card of the fine-tuned model folder `name` (a path, as KBs and jobs name it), None when
    `name` is no such folder (a registry name, a hub id, a served model)."""
    if not isinstance(name, str) or not name or name.startswith("served:"):
        return None
    try:
        card_file = Path(name) / CARD
        if not card_file.is_file():
            return None
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("name") else None


def delete_model(lib: Library, model: str) -> None:
    """Delete a fine-tuned model (embedder or reranker), by its path or unique name (`model_path`);
    refused while a knowledge base uses it."""
    lib.require_owner()
    folder = model_path(lib, model)
    users = [kb.name for kb in lib.store.list_kbs()
             if str(folder) in (lib.embedding_model(kb), retrieval_settings(lib, kb).reranker_model)]
    if users:
        raise errors.WendaoError(f"知识库「{'、'.join(users)}」正在使用这个模型，请先切换到其他模型。")
    shutil.rmtree(folder, ignore_errors=True)
