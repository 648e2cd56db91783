"""Train a cross-encoder reranker on a knowledge base's own documents (no gold questions needed),
and the cross-encoder training that the answerability check (services.tuning.answerability) shares.

- Model: a cross-encoder initialised from the bundled weights (multilingual-e5-small, converted to
  torch by services.index.torch_e5; its transformer with a fresh one-logit head) or from any
  registry reranker, HF id or local folder (a cross-encoder folder is trained further as it is).
  `layers` keeps only the bottom N transformer layers: the cost of reranking grows with the
  layers, and 20 candidates on 2 CPU cores are the budget (see the README's measurements).
- Data: the embedder fine-tuning's pseudo-queries (services.tuning.finetune.generate_pairs:
  answer-masked questions and inverse cloze) and its positive-aware hard negatives
  (services.tuning.finetune.mine_negatives), here several per query and also from the query's own
  document (chunks that do not overlap the positive's), because those are what a reranker is
  shown among its candidates. Passages are chunk texts as the retriever hands them to the
  reranker (an inverse-cloze positive without its query sentence).
- Training: sentence-transformers' cross-encoder losses (BinaryCrossEntropyLoss; or listwise:
  ListNetLoss over one positive and its negatives) in a plain loop with progress,
  an ETA and cancellation, like services.tuning.finetune.train. BCE keeps the score a probability
  (sigmoid >= 0.5: relevant), which services.answers.refusal reads.
- Evaluation: before (rerank off) and after (rerank on with the new model) through
  services.tuning.evaluation.evaluate — the 评测 page's evaluator — on held-out pseudo-questions
  (documents never trained on) and on the KB's saved question set when it has one; "on" both with
  the reranker ordering the candidates alone and blended with the first stage's ranks
  (RetrievalSettings.rerank_weight, WEIGHTS), keeping the better on the deciding set.
- Result: a normal sentence-transformers CrossEncoder folder under `<data>/models/<name>/` (config,
  safetensors, tokenizer: Infinity and TEI serve it as a reranker) with a model card
  (`wendao_card.json`, kind "reranker"), listed by `finetuned_models(lib, "reranker")`. It is
  offered only when better (`is_better`); then the KB reranks with it by default.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from services import errors
from services.documents.text import normalize
from services.index.library import Library
from services.index.store import KnowledgeBase
from services.tuning.evaluation import Question, question_set
from services.tuning.finetune import (CARD, Cancelled, FinetuneSettings, Pair, Progress, StageClock, autocast,
                                      current_embedder, new_model_folder, valid_model_name,
                                      generate_pairs, mine_negatives, pair_questions,
                                      split_heldout)

from services.search.rerank import forget_reranker  # noqa: E402

log = logging.getLogger(__name__)
KIND = "reranker"
# Files of a sentence-transformers embedder folder that describe its embedding pipeline, not its
# transformer: left out when its transformer is loaded as a cross-encoder.
_EMBEDDER_FILES = {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md",
                   "wendao_source.json", CARD}


# Shares of the trained reranker in the candidates' order tried after training (the first one alone,
# then blended with the first stage's ranks); the better on the deciding set is kept.
WEIGHTS = (1.0, 0.5)


@dataclass
class RerankSettings:
    epochs: int = 1
    batch_size: int = 16  # (query, passage) pairs per step
    negatives: int = 3  # hard negatives per query
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3  # the fresh pooler + one-logit head learns faster than the encoder
    max_pairs: int = 1200  # training queries
    queries_per_chunk: int = 2
    heldout: float = 0.15  # share of documents whose queries are kept for the before/after table
    candidates: int = 30  # BM25 / dense ranks negatives come from (1..candidates)
    negative_ceiling: float = 0.95  # positive-aware mining (services.tuning.finetune.mine_negatives)
    max_length: int = 256  # tokens of question + passage (a 300-character chunk is ~250)
    layers: int = 0  # keep the bottom N transformer layers (0: all); fewer layers rerank faster
    loss: str = "bce"  # bce | listwise
    freeze_embeddings: bool = True  # e5-small: 96M of its 118M weights are the token embeddings
    precision: str = "auto"  # bf16 autocast where the CPU has native bf16 (services.torch_e5)
    seed: int = 0
    method: str = "sentence"  # pseudo-queries: sentence (offline) | llm
    eval_queries: int = 150  # held-out pseudo-questions evaluated (rerank on costs ~20 passages each)
    eval_questions: int = 200  # questions of the KB's saved set evaluated (seeded sample)
    weights: tuple[float, ...] = WEIGHTS  # the reranker's shares of the order tried (RetrievalSettings.rerank_weight)

    def data_settings(self) -> FinetuneSettings:
        """The embedder fine-tuning's settings for the shared data functions."""
        return FinetuneSettings(max_pairs=self.max_pairs, queries_per_chunk=self.queries_per_chunk,
                                heldout=self.heldout, negatives_range=(1, self.candidates),
                                negative_ceiling=self.negative_ceiling, seed=self.seed, method=self.method)


@dataclass
class Example:
    """One (query, passage) pair with its label (1: the passage answers / is the source)."""
    query: str
    passage: str
    label: float
    group: int = 0  # examples of one query share a group (the listwise loss scores them together)


# --- how long a run takes --------------------------------------------------------------------------
STAGES = ("data", "before", "train", "after")
# Seconds per unit of each stage on the 2-core dev VM (data: per pseudo-query, generated and mined;
# before: per question searched with reranking off; train: per step of `batch_size` pairs, all 12
# layers, max_length 256; after: per question searched with the new reranker, once per weight tried),
# measured 7 Dec 2026 on 60 CMRC trial documents (166 chunks; torch e5 embedder; max_pairs=120,
# eval_queries=20, the rest default): data 6.2 s / 120 pairs, before 0.5 s / 20 questions, train
# 171 s / 21 steps + 7 s loading, after 137 s / 20 questions x 2 weights; 322 s in all. A run on this
# data dir replaces them with its own measurement (the card's "timing"), as the embedder's estimate
# does (services.tuning.finetune.estimate).
REFERENCE_RATES = {"data": 0.05, "before": 0.03, "train": 8.2, "after": 3.4}
REFERENCE_LOAD_S = 7.0  # loading the model to train (once a run)
UNIT_OF = {"data": "pairs", "before": "evaluated", "train": "steps", "after": "evaluated_on"}


def plan(lib: Library, kb: KnowledgeBase, settings: RerankSettings) -> dict:
    """What a run on `kb` will do: pseudo-queries, training steps, questions evaluated before and
    after (the units the time estimate counts in)."""
    from services.tuning.finetune import plan as embedder_plan

    data = settings.data_settings()
    chunks = lib.store.count_chunks(kb.id)
    pairs = embedder_plan(chunks, len(lib.store.list_documents(kb.id)), data)["pairs"]
    train = int(pairs * (1 - settings.heldout))
    examples = train * (1 + settings.negatives)
    steps = settings.epochs * -(-examples // settings.batch_size) if examples else 0
    saved = question_set(lib, kb) or []
    evaluated = min(settings.eval_queries, pairs - train) + min(settings.eval_questions, len(saved))
    return {"chunks": chunks, "pairs": pairs, "steps": steps, "evaluated": evaluated,
            "evaluated_on": evaluated * len(settings.weights)}


def measured_rates(lib: Library) -> dict | None:
    """Seconds per unit of each stage from the latest reranker trained on this data dir that recorded them."""
    from services.tuning.finetune import finetuned_models, latest_rates

    return latest_rates(finetuned_models(lib, KIND), STAGES, UNIT_OF, REFERENCE_RATES, REFERENCE_LOAD_S,
                        units=lambda timing: {**timing, "evaluated_on": (timing.get("evaluated") or 0)
                                              * (timing.get("weights") or 1)})


def estimate(lib: Library, kb: KnowledgeBase, settings: RerankSettings | None = None) -> dict:
    """How long training a reranker on `kb` should take, before starting: the same shape as
    services.tuning.finetune.estimate ({"stages", "seconds", "measured", "chunks", "pairs", "steps"})."""
    settings = settings or RerankSettings()
    run = plan(lib, kb, settings)
    rates = measured_rates(lib)
    use = rates or {**REFERENCE_RATES, "load": REFERENCE_LOAD_S}
    stages = {stage: round(use[stage] * run[UNIT_OF[stage]], 1) for stage in STAGES}
    stages["train"] = round(stages["train"] + use["load"], 1)
    return {**run, "stages": stages, "seconds": round(sum(stages.values()), 1), "measured": rates is not None}


# --- training data -------------------------------------------------------------------------------
def examples_from_pairs(lib: Library, kb: KnowledgeBase, pairs: list[Pair]) -> list[Example]:
    """Labelled pairs for the reranker: per pseudo-query its chunk (label 1) and its mined negatives
    (label 0), as the retriever hands chunks to the reranker (chunk text, no title line). An inverse-
    cloze query's own sentence is taken out of its positive, as in the embedder's training."""
    wanted = sorted({p.chunk_id for p in pairs} | {i for p in pairs for i in p.negative_ids})
    chunks = lib.store.get_chunks(wanted)
    out: list[Example] = []
    for group, p in enumerate(pairs):
        own = chunks.get(p.chunk_id)
        negatives = [chunks[i] for i in p.negative_ids if i in chunks]
        if own is None or not negatives:
            continue
        positive = normalize(own.text)
        if p.kind == "cloze":
            positive = positive.replace(p.query, "", 1).strip()
        out.append(Example(p.query, positive, 1.0, group))
        out += [Example(p.query, normalize(c.text), 0.0, group) for c in negatives]
    return out


# --- the model -----------------------------------------------------------------------------------
def is_cross_encoder(path: str) -> bool:
    """Whether a local folder holds a sequence-classification model (a cross-encoder), not an embedder."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def load_cross_encoder(base: str, max_length: int = 512, layers: int = 0, device: str | None = None, seed: int = 0):
    """A sentence-transformers CrossEncoder from `base`: a cross-encoder folder or id as it is, or an
    embedder folder's transformer with a fresh one-logit head (seeded); only its bottom `layers`
    transformer layers when `layers` is set (the saved config then says so)."""
    import torch
    from sentence_transformers import CrossEncoder

    from services.index.embedding import pick_device

    from services.index.models import ensure_loadable, resolve

    device = device or pick_device()
    torch.manual_seed(seed)
    folder = Path(base).expanduser()
    if not folder.is_dir() or is_cross_encoder(str(folder)):
        spec = resolve(base, "reranker")  # a registry name, HF id or folder
        offline = ensure_loadable(spec)
        try:
            model = CrossEncoder(spec.hf_id, num_labels=1, max_length=max_length, device=device,
                                 local_files_only=offline)
        except Exception as exc:  # noqa: BLE001 - a missing or broken model, in Chinese
            raise errors.ModelLoadError(f"无法加载作为起点的重排模型「{base}」：{type(exc).__name__}。") from exc
    else:
        with tempfile.TemporaryDirectory(prefix="wendao-ce-") as tmp:
            for f in folder.iterdir():  # the transformer's own files (config, weights, tokenizer)
                if f.is_file() and f.name not in _EMBEDDER_FILES:
                    _link_or_copy(f, Path(tmp) / f.name)
            model = CrossEncoder(tmp, num_labels=1, max_length=max_length, device=device)
        _keep_bottom_layers(model.model, layers)
        _add_mean_pooling_layer(model.model)
        return model
    _keep_bottom_layers(model.model, layers)
    return model


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def _keep_bottom_layers(transformer, layers: int) -> None:
    encoder = getattr(getattr(transformer, transformer.base_model_prefix, transformer), "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not layers or stack is None or layers >= len(stack):
        return
    encoder.layer = stack[:layers]
    transformer.config.num_hidden_layers = layers


def _add_mean_pooling_layer(transformer) -> None:
    """Put one more transformer layer on top that makes the first token's output the mean of all
    tokens' (uniform attention: zero queries and keys; identity values and output; no feed-forward).

    A sequence classifier reads the first token ([CLS] / <s>), but an embedder trained with mean
    pooling (e5) leaves that token's output the same for every input (cosine 0.9999 between inputs
    at every layer of e5-small): its score starts constant, and in the few hundred steps a CPU
    affords the loss stayed at chance. With the layer the head starts from the mean-pooled
    representation of question and passage together, and the folder stays a plain
    *ForSequenceClassification model (Infinity, TEI and any sentence-transformers load it)."""
    import copy

    import torch

    encoder = getattr(getattr(transformer, transformer.base_model_prefix, transformer), "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None:
        return
    layer = copy.deepcopy(stack[-1])
    attention, output = layer.attention, layer.output
    with torch.no_grad():
        for linear in (attention.self.query, attention.self.key, output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
        for linear in (attention.self.value, attention.output.dense):
            linear.weight.copy_(torch.eye(linear.weight.shape[0], dtype=linear.weight.dtype))
            linear.bias.zero_()
        for norm in (attention.output.LayerNorm, output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    stack.append(layer)
    transformer.config.num_hidden_layers = len(stack)


def bundled_base() -> str:
    """The bundled multilingual-e5-small as a torch folder (converted once per machine)."""
    try:
        from services.index import torch_e5

        return str(torch_e5.model_dir())
    except Exception as exc:  # noqa: BLE001
        raise errors.ModelLoadError("内置的向量模型无法转换为可训练的模型，请指定一个重排模型作为起点。") from exc


def train_cross_encoder(base: str, examples: list[Example], out_dir: Path, settings: RerankSettings,
                        on_step: Callable[[Progress], None] | None = None,
                        cancelled: Callable[[], bool] | None = None, device: str | None = None) -> Progress:
    """Train a one-logit cross-encoder from `base` on labelled pairs with a sentence-transformers
    cross-encoder loss (settings.loss: "bce" — BinaryCrossEntropyLoss, positives weighted by the
    negative/positive ratio; "listwise" — ListNetLoss over each query's positive and negatives); saves a CrossEncoder folder to `out_dir`. Raises Cancelled when asked to stop."""
    import torch
    from sentence_transformers.cross_encoder import losses

    model = load_cross_encoder(base, settings.max_length, settings.layers, device, settings.seed)
    transformer = model.model
    if settings.freeze_embeddings:
        transformer.get_input_embeddings().requires_grad_(False)
    rng = random.Random(settings.seed)
    if settings.loss == "listwise":
        loss_fn = losses.ListNetLoss(model)
        epochs = [_listwise_batches(examples, settings.batch_size, rng) for _ in range(settings.epochs)]
    elif settings.loss == "bce":
        positives = max(1, sum(e.label >= 0.5 for e in examples))
        ratio = (len(examples) - positives) / positives
        loss_fn = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(max(1.0, ratio)))
        epochs = [_pair_batches(examples, settings.batch_size, rng) for _ in range(settings.epochs)]
    else:
        raise ValueError(f"unknown loss {settings.loss!r}")
    head = [p for n, p in transformer.named_parameters() if p.requires_grad and _is_head(n)]
    body = [p for n, p in transformer.named_parameters() if p.requires_grad and not _is_head(n)]
    optimizer = torch.optim.AdamW([{"params": body, "lr": settings.learning_rate},
                                   {"params": head, "lr": settings.head_learning_rate}])
    progress = Progress(steps=sum(map(len, epochs)))
    warmup = max(1, progress.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (progress.steps - s) / max(1, progress.steps - warmup)))
    model.train()
    for batches in epochs:
        for columns, labels in batches:
            if cancelled and cancelled():
                raise Cancelled()
            with autocast(model.device, settings.precision):
                if settings.loss == "listwise":  # one tensor of labels per query
                    loss = loss_fn(columns, [torch.tensor(x, device=model.device) for x in labels])
                else:
                    loss = loss_fn(columns, torch.tensor(labels, device=model.device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for group in (head, body) for p in group], 1.0)
            optimizer.step()
            scheduler.step()
            progress.step += 1
            progress.losses.append(float(loss.detach()))
            if on_step:
                on_step(progress)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return progress


def _is_head(name: str) -> bool:
    """Weights a cross-encoder gets fresh on top of an embedder: the pooler and the classifier."""
    return name.startswith(("classifier", "pooler", "bert.pooler", "roberta.pooler", "score"))


def _pair_batches(examples: list[Example], size: int, rng: random.Random) -> list[tuple[list[list[str]], list[float]]]:
    """Shuffled batches of `size` pairs, a query's pairs kept together: ([queries, passages], labels)."""
    groups: dict[int, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    order = list(groups.values())
    rng.shuffle(order)
    batches, current = [], []
    for group in order:
        current += group
        if len(current) >= size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return [([[e.query for e in b], [e.passage for e in b]], [e.label for e in b]) for b in batches]


def _listwise_batches(examples: list[Example], size: int, rng: random.Random):
    """Shuffled batches of whole queries (about `size` pairs each): ([queries, passage lists],
    label lists) for a listwise loss (ListNetLoss)."""
    groups: dict[int, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    order = [g for g in groups.values() if any(e.label >= 0.5 for e in g) and any(e.label < 0.5 for e in g)]
    rng.shuffle(order)
    batches, current = [], []
    for group in order:
        current.append(group)
        if sum(map(len, current)) >= size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return [([[g[0].query for g in b], [[e.passage for e in g] for g in b]], [[e.label for e in g] for g in b])
            for b in batches]


# --- evaluation ----------------------------------------------------------------------------------
def heldout_questions(lib: Library, kb: KnowledgeBase, pairs: list[Pair], limit: int, seed: int = 0) -> list[Question]:
    """Held-out pseudo-queries as questions for services.tuning.evaluation: relevant = a passage that
    holds the chunk the query came from. Answer-masked questions are preferred (an inverse-cloze
    query is a sentence of its chunk, found verbatim by BM25); a seeded sample of `limit`."""
    asked = [p for p in pairs if p.kind in ("question", "llm")]
    chosen = asked if len(asked) >= min(20, len(pairs)) else pairs
    if len(chosen) > limit:
        chosen = random.Random(seed).sample(chosen, limit)
    return pair_questions(lib, kb, chosen)


def saved_questions(lib: Library, kb: KnowledgeBase, limit: int, seed: int = 0) -> tuple[list[Question], int]:
    """The KB's saved question set (services.tuning.evaluation.save_question_set): those about a
    document of this KB with an answer span, a seeded sample of `limit`; and the set's size."""
    saved = question_set(lib, kb) or []
    names = set(lib.store.filenames(kb.id).values())
    usable = [q for q in saved if q.spans and q.doc_name in names]
    if len(usable) > limit:
        usable = random.Random(seed).sample(usable, limit)
    return usable, len(saved)


def evaluate_reranker(lib: Library, kb: KnowledgeBase, questions: list[Question], model_path: str | None,
                      progress: Callable[[int, int], None] | None = None, weight: float = 1.0) -> dict:
    """The 评测 page's evaluator (services.tuning.evaluation.evaluate) with the KB's retrieval settings:
    rerank off, or on with `model_path` (its share of the candidates' order: `weight`, see
    RetrievalSettings.rerank_weight). Returns its summary (R@k, MRR@10, coverage, p50/p95 ms)."""
    from services.index.kb_settings import retrieval_settings
    from services.tuning.evaluation import EvalConfig, evaluate

    base = retrieval_settings(lib, kb)
    if model_path is None:
        config = EvalConfig("off", base.mode, False, replace(base, rerank=False))
    else:
        forget_reranker(model_path)  # a folder of this name may have held another model in this process
        config = EvalConfig("on", base.mode, True, replace(base, rerank=True, reranker_model=model_path,
                                                             rerank_weight=weight))
    summaries, _ = evaluate(lib, kb, questions, [config], progress)
    return summaries[config.name]


TOLERANCE = 0.005  # a set "worse" by less than this (R@5 / MRR@10) counts as unchanged


def is_better(results: dict) -> bool:
    """Offer the reranker? MRR@10 better on the deciding set (the KB's questions when it has them,
    else the held-out pseudo-questions) and no evaluated set worse on R@5 or MRR@10."""
    deciding = results.get("questions") or results["heldout"]
    if not deciding["on"]["mrr@10"] > deciding["off"]["mrr@10"]:
        return False
    return all(r["on"][m] >= r["off"][m] - TOLERANCE for r in results.values() for m in ("recall@5", "mrr@10"))


# --- the whole run -------------------------------------------------------------------------------
def finetune_reranker(lib: Library, kb: KnowledgeBase, name: str, settings: RerankSettings | None = None,
                      on_step: Callable[[Progress], None] | None = None, cancelled: Callable[[], bool] | None = None,
                      llm=None, on_stage: Callable[[str], None] | None = None, base: str | None = None,
                      apply: bool = True) -> dict:
    """Generate pseudo-queries, mine negatives, evaluate with rerank off, train the cross-encoder,
    evaluate with it on, save it with its card. When better (`is_better`) and `apply`, the KB's
    retrieval settings switch reranking on with it. Returns the card ("results": {set: {"off", "on"}},
    "better", "better_on", "applied", "added_ms_p50", "path", ...)."""
    from services.index.kb_settings import retrieval_settings, save_settings

    lib.require_owner()
    settings = settings or RerankSettings()
    name = valid_model_name(name)
    out = new_model_folder(lib, kb, name)
    stage = StageClock(on_stage)  # the stages' wall times go to the card (the next run's estimate)
    timing = stage.timing

    started = time.time()
    base = base or bundled_base()
    data = settings.data_settings()
    stage("data")
    pairs = generate_pairs(lib, kb, data, llm)
    if len(pairs) < 8:
        raise errors.WendaoError("知识库内容太少，无法生成足够的训练数据（至少需要几十个片段）。")
    pairs = mine_negatives(lib, kb, pairs, data, embedder=current_embedder(lib, kb), count=settings.negatives,
                           same_document=True)
    train_pairs, test_pairs = split_heldout(pairs, data)
    sets = {"heldout": heldout_questions(lib, kb, test_pairs, settings.eval_queries, settings.seed)}
    asked, total = saved_questions(lib, kb, settings.eval_questions, settings.seed)
    if asked:
        sets["questions"] = asked
    stage("before")
    results = {k: {"off": evaluate_reranker(lib, kb, qs, None)} for k, qs in sets.items()}
    stage("train")
    examples = examples_from_pairs(lib, kb, train_pairs)
    if not examples:
        raise errors.WendaoError("没有找到可用作负例的片段，无法训练重排模型（知识库需要多个文档）。")
    tmp = out.parent / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        progress = train_cross_encoder(base, examples, tmp, settings, on_step, cancelled)
        steps_s = time.time() - progress.started  # the training loop (and saving), without loading the model
        (tmp / CARD).write_text(json.dumps({"name": name, "kind": KIND, "status": "evaluating"}), encoding="utf-8")
        tmp.rename(out)
        stage("after")
        tried = {}
        for weight in settings.weights:
            tried[weight] = {}
            for k, qs in sets.items():
                if cancelled and cancelled():
                    raise Cancelled()
                tried[weight][k] = evaluate_reranker(lib, kb, qs, str(out), weight=weight)
        stage("done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        forget_reranker(str(out))
        raise
    deciding = "questions" if "questions" in results else "heldout"
    weight = max(tried, key=lambda w: (tried[w][deciding]["mrr@10"], w))
    for k in results:
        results[k]["on"] = tried[weight][k]
    card = {"name": name, "kind": KIND, "base_model": base, "kb": kb.name, "kb_id": kb.id, "created_at": time.time(),
            "pairs": {"train": len({e.group for e in examples}), "examples": len(examples),
                      "heldout": len(sets["heldout"]), "kinds": dict(Counter(p.kind for p in pairs))},
            "settings": asdict(settings), "results": results, "losses": progress.losses,
            "seconds": round(time.time() - started, 1),
            "added_ms_p50": round(results[deciding]["on"]["p50_ms"] - results[deciding]["off"]["p50_ms"], 1),
            "better": is_better(results), "better_on": deciding, "rerank_weight": weight,
            "weights_tried": {str(w): {k: {m: r[m] for m in ("recall@1", "recall@5", "mrr@10")} for k, r in t.items()}
                              for w, t in tried.items()},
            "timing": {"stages": timing, "steps_s": round(steps_s, 2), "pairs": len(pairs), "steps": progress.steps,
                       "evaluated": sum(len(qs) for qs in sets.values()), "weights": len(settings.weights),
                       "chunks": lib.store.count_chunks(kb.id)}}
    if asked:
        card["questions_total"] = total
    card["applied"] = bool(card["better"] and apply)
    if card["applied"]:
        save_settings(lib, kb, "retrieval", asdict(replace(retrieval_settings(lib, kb), rerank=True,
                                                           reranker_model=str(out), rerank_weight=weight)))
    (out / "README.md").write_text(_card_markdown(card), encoding="utf-8")
    (out / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    return {**card, "path": str(out)}


SET_ZH = {"heldout": "留出的生成问题", "questions": "知识库的问题集"}


def result_rows(card: dict) -> list[dict]:
    """The before/after table: one row per evaluated set and rerank off / on."""
    rows = []
    for key, result in card["results"].items():
        for state in ("off", "on"):
            s = result[state]
            rows.append({"set": key, "rerank": state, "questions": s["questions"],
                         **{m: round(s[m], 4) for m in ("recall@1", "recall@5", "mrr@10", "coverage@1000chars", "p50_ms")}})
    return rows


def _card_markdown(card: dict) -> str:
    lines = [f"# {card['name']}\n", f"重排模型（cross-encoder），起点 `{card['base_model']}`，知识库「{card['kb']}」，"
             f"{time.strftime('%Y-%m-%d', time.localtime(card['created_at']))}。训练查询 {card['pairs']['train']} 条。\n",
             "| 问题 | 重排 | R@1 | R@5 | MRR@10 | 1000 字内答案 | p50 ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in result_rows(card):
        lines.append(f"| {SET_ZH.get(r['set'], r['set'])}（{r['questions']}） | {'开' if r['rerank'] == 'on' else '关'} | "
                     f"{r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['mrr@10']:.3f} | {r['coverage@1000chars']:.3f} | "
                     f"{r['p50_ms']:.0f} |")
    return "\n".join(lines) + "\n"
