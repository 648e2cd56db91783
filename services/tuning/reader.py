"""Train the extractive reader (services.answers.reader; issue 21): a span model that reads a question
with a passage and marks the answer in it, initialised from the bundled multilingual-e5-small.

    python -m services.tuning.reader --data ../shared/data --out <data dir>/models/reader
                                     [--sources cail2019_dev,cmrc2018_trial,drcd_dev] [--json]
                                     [--source-questions cail2019_dev=2400,drcd_dev=1800,cmrc2018_trial=400]
                                     [--set layers=6,max_length=256,epochs=2] [--no-bench-exclusion] [--evaluate-only]
                                     [--exclude-answerability-split]

Model: the bottom `layers` transformer layers of the bundled e5-small (converted to torch by
services.index.torch_e5) with a start/end head (a linear layer, 2 logits per token), trained with
the cross-entropy of the start and end token (SQuAD 2.0 style: a window without the answer points
at the first token, <s>, so the reader has a "no answer" score). Input: `<s> question </s></s>
passage window </s>` (the tokenizer's pair template), windows of `max_length` tokens overlapping by
`stride`; token offsets map each predicted token back to exact characters of the passage.

Data: folders in the shared format (docs/*.txt, questions.jsonl with answer_spans and answer_type).
Documents are chunked as the app chunks them (services.tuning.answerability.Corpus, default
settings); a question with an answer span is read with a chunk holding it (the answer's window is
the positive; the chunk's other windows, and for a share of questions the question's best-matching
chunk of its document that does not hold it, point at <s>); CAIL2019's unanswerable questions are
read with their best chunk (no answer). Every question bench/pinpoint.py and bench/answers.py
evaluate on is excluded, with its whole document (`bench_heldout`: their own selection code, run
from the repository's bench/), as are CAIL2019's KB documents of bench/pinpoint.py (its follow-up
dialogues are built from them) and the documents of bench/followups.jsonl.

Selection: documents are split (seeded) into train and dev. On the dev questions — each read with
the three chunks of its document that BM25 ranks first, as the app reads its first sources — the
reader's best span is compared with the heuristic answer span (services.answers.extractive without
a reader); the card's `thresholds` are the reader scores above which the reader's span is used, for
questions of a type the heuristics look for ("typed": amounts, dates, names, …) and the others
("untyped"), each the one giving the most gold answers inside the marked span on dev (`threshold`:
one for all, the fallback); below them the heuristics choose the quote and `inside_threshold` is the
score above which the reader's best span inside that quote is marked instead of the heuristic span
(chosen first, on all dev questions; none when that does not help). `--evaluate-only` chooses them
again for a folder already trained.

CAIL2019 has no licence: neither its data nor a model trained on it is committed or shipped. The app
uses the reader only where this script's output folder exists (WENDAO_READER_MODEL or
`<data dir>/models/reader`).
"""
from __future__ import annotations

import copy
import json
import random
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from services.arguments import ArgumentParser, existing_dir, key_values
from services.answers.reader import CARD, KIND, Reader, windows
from services.tuning.answerability import Corpus, Item

BENCH = Path(__file__).resolve().parents[2] / "bench"


@dataclass
class ReaderSettings:
    # The measured configuration (README): about 16 minutes of training on 2 CPU cores.
    layers: int = 6  # bottom transformer layers kept: reading cost grows with them
    max_length: int = 256  # tokens of question + passage window (reading)
    train_length: int = 160  # ... in training: one window per example, a random one holding the answer
    stride: int = 64  # tokens shared by consecutive windows of a passage
    max_answer_tokens: int = 40
    batch_size: int = 16
    epochs: int = 2
    learning_rate: float = 3e-4
    head_learning_rate: float = 3e-3
    freeze_embeddings: bool = True  # 96M of e5-small's 118M weights are the token embeddings
    sources: tuple[str, ...] = ("cail2019_dev", "cmrc2018_trial", "drcd_dev")
    source_questions: dict[str, int] = field(  # training questions per source (seeded sample)
        default_factory=lambda: {"cail2019_dev": 2400, "cmrc2018_trial": 400, "drcd_dev": 1800})
    unanswerable: float = 0.1  # CAIL's unanswerable questions, as a share of its training questions
    negative_share: float = 0.2  # questions also read with a chunk of their document that lacks the answer
    dev: float = 0.1  # share of documents per source kept for the selection
    dev_questions: int = 100  # dev questions per source (seeded sample)
    top: int = 3  # chunks read per question (the app's first sources)
    time_budget_s: float = 960.0  # train for about this many seconds (0: no limit): the steps are cut to fit
                                # after the first few, so the learning rate still decays to 0
    seed: int = 0


# --- held-out questions of the benchmarks --------------------------------------------------------
def bench_heldout(bench: Path = BENCH) -> dict[str, set[str]]:
    """{source: document names} never trained on: every document a question of bench/pinpoint.py
    (extractive, follow-ups, ambiguity) or bench/answers.py (at --n 150) is asked about, found by
    their own selection code; CAIL2019's whole pinpoint KB (its dialogues come from any of them)."""
    sys.path.insert(0, str(bench))
    try:
        import answers  # noqa: E402 - bench/answers.py
        import pinpoint  # noqa: E402 - bench/pinpoint.py
    finally:
        sys.path.remove(str(bench))
    out: dict[str, set[str]] = {}
    plan = pinpoint.sample(150)
    for key, (questions, names, _) in plan.items():
        out.setdefault(key, set()).update(q.doc_name for q in questions)
        if key == "cail2019_dev":
            out[key].update(names)
    for item in pinpoint.ambiguity_set():
        out.setdefault("cail2019_dev", set()).update(item["docs"])
    for line in (bench / "followups.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.setdefault(d["source"], set()).add(d["doc"])
    sets, _ = answers.load_sets(150, 80)
    for key, questions in sets.values():
        out.setdefault(key, set()).update(q.doc_name for q in questions)
    return out


def answerability_evaluation(data_root: Path) -> dict[str, set[str]]:
    """{source: document names} of the answerability check's dev and held-out documents of the set it is
    evaluated on (services.tuning.answerability's seeded split, default settings): a reader whose
    no-answer score feeds the check's combiner (fitted on the dev documents, reported on the held-out
    ones) must not have read them."""
    from services.tuning.answerability import AnswerabilitySettings, split_documents

    settings = AnswerabilitySettings()
    corpus = Corpus(data_root / settings.evaluate_on, settings.evaluate_on)
    parts = split_documents(corpus, settings)
    return {settings.evaluate_on: parts["dev"] | parts["heldout"]}


# --- examples ------------------------------------------------------------------------------------
@dataclass
class Feature:
    ids: list[int]
    start: int  # token index of the answer's start (0: no answer, <s>)
    end: int


def encode_example(reader: Reader, question: str, passage: str, span: tuple[int, int] | None,
                   rng: random.Random | None = None, length: int = 0) -> list[Feature]:
    """The windows of one (question, passage) with their start/end token labels; `span` is the
    answer's [start, end) in the passage, or None (every window points at <s>). With `rng`, one
    window of `length` tokens (a random one holding the answer, if any) instead of all of them."""
    out = []
    for w in windows(reader.tokenizer, question, passage, length or reader.max_length, reader.stride):
        start = end = 0
        if span is not None:
            a, b = span
            inside = [k for k, (x, y) in enumerate(w.offsets) if x < b and y > a]
            if inside and w.offsets[inside[0]][0] <= a and w.offsets[inside[-1]][1] >= b:
                start, end = w.first + inside[0], w.first + inside[-1]
        out.append(Feature(w.ids, start, end))
    if rng is not None and out:
        holding = [f for f in out if f.start > 0] if span is not None else out
        return [rng.choice(holding)] if holding else []
    return out


def training_features(reader: Reader, corpus: Corpus, docs: set[str], settings: ReaderSettings,
                      rng: random.Random) -> tuple[list[Feature], int]:
    """Features of the questions about `docs` (see the module docstring) and the number of questions."""
    items = [i for i in corpus.items if i.doc in docs]
    cap = settings.source_questions.get(corpus.source, 0)
    span_items = [i for i in items if i.kind == "span" and i.spans]
    unanswerable = [i for i in items if i.kind == "unanswerable"]
    span_items = rng.sample(span_items, min(cap, len(span_items)))
    unanswerable = rng.sample(unanswerable, min(len(unanswerable), round(cap * settings.unanswerable)))
    out: list[Feature] = []
    for item in span_items:
        own = corpus.by_doc.get(item.doc, [])
        holding = [i for i in own if corpus.holds(i, item)]
        if not holding:
            continue
        p = corpus.passages[rng.choice(holding)]
        a, b = next((a, b) for a, b in item.spans if p.start <= a and b <= p.end)
        out += encode_example(reader, item.question, p.text, (a - p.start, b - p.start), rng, settings.train_length)
        if rng.random() < settings.negative_share:
            others = [i for i in corpus.best(item.question, own, 3)
                      if not (corpus.passages[i].start < b and a < corpus.passages[i].end)]  # lacks the answer
            if others:
                out += encode_example(reader, item.question, corpus.passages[others[0]].text, None, rng, settings.train_length)
    for item in unanswerable:
        best = corpus.best(item.question, corpus.by_doc.get(item.doc, []), 1)
        for i in best:
            out += encode_example(reader, item.question, corpus.passages[i].text, None, rng, settings.train_length)
    return out, len(span_items) + len(unanswerable)


# --- training ------------------------------------------------------------------------------------
def train(base: str, reader: Reader, features: list[Feature], out: Path, settings: ReaderSettings,
          log: Callable[[str], None] = lambda s: None) -> dict:
    """Train the span head (and the kept layers) on `features`; save the reader folder to `out`."""
    import torch
    from transformers import BertModel

    torch.manual_seed(settings.seed)
    model = BertModel.from_pretrained(base, add_pooling_layer=False)
    model.encoder.layer = model.encoder.layer[:settings.layers] if settings.layers else model.encoder.layer
    model.config.num_hidden_layers = len(model.encoder.layer)
    head = torch.nn.Linear(model.config.hidden_size, 2)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    if settings.freeze_embeddings:
        model.embeddings.word_embeddings.requires_grad_(False)
    body = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": body, "lr": settings.learning_rate},
                                   {"params": list(head.parameters()), "lr": settings.head_learning_rate}])
    rng = random.Random(settings.seed)
    order = []
    for _ in range(settings.epochs):
        epoch = sorted(range(len(features)), key=lambda i: rng.random())
        order += [epoch[i:i + settings.batch_size] for i in range(0, len(epoch), settings.batch_size)]
    plan = {"steps": len(order), "warmup": max(1, len(order) // 10)}
    steps = plan["steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / plan["warmup"])
        * max(0.0, (plan["steps"] - s) / max(1, plan["steps"] - plan["warmup"])))
    model.train()
    losses, started, last = [], time.time(), 0.0
    pad = reader.pad
    for step, batch in enumerate(order, start=1):
        longest = max(len(features[i].ids) for i in batch)
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(features[i].ids)] = torch.tensor(features[i].ids)
            mask[row, :len(features[i].ids)] = 1
        starts = torch.tensor([features[i].start for i in batch])
        ends = torch.tensor([features[i].end for i in batch])
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = head(hidden).masked_fill(~mask.bool()[..., None], -1e4)
        loss = (torch.nn.functional.cross_entropy(logits[..., 0], starts)
                + torch.nn.functional.cross_entropy(logits[..., 1], ends)) / 2
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body + list(head.parameters()), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        elapsed = time.time() - started
        if time.time() - last > 20 or step == steps:
            last = time.time()
            log(f"train {step}/{steps} loss {sum(losses[-20:]) / len(losses[-20:]):.3f} "
                f"{elapsed:.0f}s eta {elapsed / step * (steps - step):.0f}s")
        if settings.time_budget_s and step == 5 and elapsed / step * steps > settings.time_budget_s:
            steps = plan["steps"] = max(step + 1, int(settings.time_budget_s / (elapsed / step)))
            plan["warmup"] = min(plan["warmup"], max(1, steps // 10))
            log(f"time budget {settings.time_budget_s:.0f}s: {steps} of {len(order)} steps")
        if step >= steps:
            break
    model.eval()
    save(model, head, base, out)
    return {"steps": len(losses), "planned_steps": len(order), "losses": losses, "train_seconds": round(time.time() - started)}


def save(model, head, base: str, out: Path) -> None:
    """The reader folder: config.json (the kept layers), model.safetensors (the encoder's weights under
    BertModel names and `qa_outputs.*`), tokenizer.json."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    state["qa_outputs.weight"] = head.weight.detach().contiguous()
    state["qa_outputs.bias"] = head.bias.detach().contiguous()
    save_file(state, str(out / "model.safetensors"))
    config = model.config.to_dict()
    config["architectures"] = ["BertForQuestionAnswering"]
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    shutil.copyfile(Path(base) / "tokenizer.json", out / "tokenizer.json")


# --- selection -----------------------------------------------------------------------------------
def dev_rows(reader: Reader, corpus: Corpus, items: list[Item], top: int) -> list[dict]:
    """Per dev question: the reader's best span and score, and the heuristic span, over its document's
    first `top` chunks by BM25; whether each holds a gold answer."""
    from services.answers.answer import contains_gold
    from services.answers.answer_types import answer_type
    from services.answers.extractive import pinpoint
    from services.answers.reader import threshold_group
    from services.documents.chunking import Chunk
    from services.search.retrieval import Hit

    probe = copy.copy(reader)  # the same model and logits: its own spans never pass, the one inside the quote always
    probe.threshold, probe.thresholds, probe.inside_threshold = float("inf"), {}, float("-inf")
    rows = []
    for item in items:
        pool = corpus.best(item.question, corpus.by_doc.get(item.doc, []), top)
        passages = [corpus.passages[i] for i in pool]
        hits = [Hit(Chunk(0, p.start, p.end, p.text, 1, 1), p.doc, p.start, p.end, p.text, 1, 1) for p in passages]
        doc_text = corpus.passages[pool[0]] if pool else None
        golds = [doc_text and _span_text(corpus, item, a, b) for a, b in item.spans]
        golds = [g for g in golds if g]
        found = reader.read(item.question, [p.text for p in passages])
        best = found[0] if found else None
        heuristic = pinpoint(item.question, hits, reader=False) if hits else None
        span = heuristic.span.text if heuristic and heuristic.span else ""
        marked = pinpoint(item.question, hits, reader=probe) if hits else None  # its span inside the heuristics' quote
        inside = marked.span.text if marked and marked.reading and marked.reading[0] == "inside" else ""
        rows.append({"group": threshold_group(answer_type(item.question)), "score": best.score if best else -1e9,
                     "reader": bool(best) and contains_gold(best.text, golds),
                     "heuristic": bool(span) and contains_gold(span, golds),
                     "inside_score": marked.reading[1] if inside else None,
                     "inside": bool(inside) and contains_gold(inside, golds),
                     "chars": len(best.text) if best else 0})
    return rows


def _span_text(corpus: Corpus, item: Item, a: int, b: int) -> str:
    for i in corpus.by_doc.get(item.doc, []):
        p = corpus.passages[i]
        if p.start <= a and b <= p.end:
            return p.text[a - p.start:b - p.start]
    return ""


def choose_threshold(rows: list[dict]) -> tuple[float, dict]:
    """The reader score above which its span replaces the heuristic one: the most gold answers in the
    marked span on dev (ties: the lower threshold). Returns it with the dev rates."""
    candidates = sorted({r["score"] for r in rows}) + [1e9]
    best, best_hits = candidates[0], -1
    for t in candidates:
        hits = sum(r["reader"] if r["score"] >= t else r["heuristic"] for r in rows)
        if hits > best_hits:
            best, best_hits = t, hits
    n = max(1, len(rows))
    return best, {"n": len(rows), "reader_in_span": sum(r["reader"] for r in rows) / n,
                  "heuristic_in_span": sum(r["heuristic"] for r in rows) / n, "combined_in_span": best_hits / n,
                  "reader_used": sum(r["score"] >= best for r in rows) / n}


def split(corpus: Corpus, settings: ReaderSettings, exclude: dict[str, set[str]]) -> tuple[set[str], list[Item]]:
    """(training documents, dev questions) of a set, its `exclude`d documents left out (seeded)."""
    docs = sorted(d for d in corpus.by_doc if d not in exclude.get(corpus.source, set()))
    random.Random(settings.seed).shuffle(docs)
    n_dev = round(len(docs) * settings.dev)
    dev = set(docs[:n_dev])
    items = [i for i in corpus.items if i.doc in dev and i.kind == "span" and i.spans]
    return set(docs[n_dev:]), random.Random(settings.seed).sample(items, min(settings.dev_questions, len(items)))


def choose_inside_threshold(rows: list[dict]) -> float | None:
    """The score above which the reader's best span inside the heuristics' quote replaces the heuristic
    span: the most gold answers in the marked span on dev; None when no threshold beats the heuristics."""
    rows = [r for r in rows if r["inside_score"] is not None]
    best, best_hits = None, sum(r["heuristic"] for r in rows)
    for t in sorted({r["inside_score"] for r in rows}):
        hits = sum(r["inside"] if r["inside_score"] >= t else r["heuristic"] for r in rows)
        if hits > best_hits:
            best, best_hits = t, hits
    return best


def with_fallback(rows: list[dict], inside_threshold: float | None) -> list[dict]:
    """The rows with "heuristic" replaced by what is marked when the reader's own span is not used:
    its span inside the heuristics' quote above `inside_threshold`, else the heuristic span."""
    def fallback(r: dict) -> bool:
        if inside_threshold is not None and r["inside_score"] is not None and r["inside_score"] >= inside_threshold:
            return r["inside"]
        return r["heuristic"]

    return [dict(r, heuristic=fallback(r), plain=r["heuristic"]) for r in rows]


def select(folder: str, settings: ReaderSettings, corpora: dict[str, Corpus], dev_items: dict[str, list[Item]],
           log: Callable[[str], None] = lambda s: None) -> dict:
    """Read the dev questions with the reader at `folder` and choose its thresholds (see the module
    docstring): {"threshold", "thresholds", "value_threshold", "metrics"}."""
    trained = Reader(folder, 0.0, settings.top, settings.max_length, settings.stride, settings.max_answer_tokens)
    rows, per_source = [], {}
    started = time.time()
    for source, items in dev_items.items():
        per_source[source] = dev_rows(trained, corpora[source], items, settings.top)
        rows += per_source[source]
    inside_threshold = choose_inside_threshold(rows)
    rows = with_fallback(rows, inside_threshold)
    per_source = {k: with_fallback(v, inside_threshold) for k, v in per_source.items()}
    threshold = choose_threshold(rows)[0]
    thresholds = {g: choose_threshold([r for r in rows if r["group"] == g])[0] for g in ("typed", "untyped")}

    def marked(x: dict) -> bool:
        return x["reader"] if x["score"] >= thresholds.get(x["group"], threshold) else x["heuristic"]

    metrics = {}
    for name, part in [*per_source.items(), *((g, [r for r in rows if r["group"] == g]) for g in ("typed", "untyped")),
                       ("all", rows)]:
        n = max(1, len(part))
        metrics[name] = choose_threshold(part)[1] | {
            "heuristic_in_span": sum(r["plain"] for r in part) / n,
            "inside_in_span": sum(r["inside"] for r in part) / n,
            "at_thresholds": sum(map(marked, part)) / n}
    log(f"dev ({time.time() - started:.0f}s): thresholds {thresholds}, inside {inside_threshold} {json.dumps(metrics)}")
    return {"threshold": threshold, "thresholds": thresholds, "inside_threshold": inside_threshold, "metrics": metrics}


def evaluate_only(data_root: Path, folder: Path, exclude: dict[str, set[str]],
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Choose a trained reader's thresholds again on its own dev questions (the settings in its card)
    and update its card."""
    card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    stored = card["settings"]
    settings = ReaderSettings(**{k: tuple(v) if k == "sources" else v for k, v in stored.items()})
    corpora, dev_items = {}, {}
    for source in settings.sources:
        corpora[source] = Corpus(data_root / source, source)
        dev_items[source] = split(corpora[source], settings, exclude)[1]
    card.update(select(str(folder), settings, corpora, dev_items, log))
    (folder / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    return card


def train_reader(data_root: Path, out: Path, settings: ReaderSettings | None = None, base: str | None = None,
                 exclude: dict[str, set[str]] | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Build the features, train, choose the threshold on the dev documents, save the folder with its
    card (threshold, sources, dev metrics, time, peak memory). Returns the card."""
    from services.tuning.rerank_training import bundled_base

    settings = settings or ReaderSettings()
    started = time.time()
    base = base or bundled_base()
    reader = Reader(base, 0.0, settings.top, settings.max_length, settings.stride, settings.max_answer_tokens,
                    load_model=False)
    rng = random.Random(settings.seed)
    exclude = exclude or {}
    features: list[Feature] = []
    questions, dev_items = {}, {}
    corpora = {}
    for source in settings.sources:
        corpus = corpora[source] = Corpus(data_root / source, source)
        train_docs, dev_items[source] = split(corpus, settings, exclude)
        made, n = training_features(reader, corpus, train_docs, settings, rng)
        features += made
        questions[source] = n
        log(f"{source}: {n} training questions ({len(made)} windows) from {len(train_docs)} documents, "
            f"{len(dev_items[source])} dev questions; {len(exclude.get(source, ()))} documents excluded")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"{len(features)} windows ({sum(f.start > 0 for f in features)} with the answer)")
    result = train(base, reader, features, tmp, settings, log)
    card = {"name": out.name, "kind": KIND, "threshold": 0.0, "top": settings.top, "max_length": settings.max_length,
            "stride": settings.stride, "max_answer_tokens": settings.max_answer_tokens}
    (tmp / CARD).write_text(json.dumps(card), encoding="utf-8")
    selection = select(str(tmp), settings, corpora, dev_items, log)
    card.update({**selection, "sources": list(settings.sources), "questions": questions,
                 "windows": len(features), "settings": asdict(settings),
                 "excluded_documents": {k: len(v) for k, v in exclude.items()},
                 "excluded_names": {k: sorted(v) for k, v in exclude.items()},
                 "steps": result["steps"], "planned_steps": result["planned_steps"], "losses": result["losses"][::10],
                 "train_seconds": result["train_seconds"], "seconds": round(time.time() - started),
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "created_at": time.time(),
                 "note": "Trained on CAIL2019 (no licence): keep private; do not redistribute."
                 if "cail2019_dev" in settings.sources else "Trained on CMRC 2018 / DRCD (CC BY-SA 4.0)."})
    (tmp / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m services.tuning.reader", description="训练抽取式阅读模型（答案定位）")
    parser.add_argument("--data", required=True, type=existing_dir,
                        help="问题集所在的文件夹（共享格式，每个数据集一个子文件夹，例如 ../shared/data）")
    parser.add_argument("--out", required=True, help="模型保存到的文件夹（例如 <数据目录>/models/reader）")
    parser.add_argument("--sources", default="cail2019_dev,cmrc2018_trial,drcd_dev",
                        help="用来训练的数据集，逗号分隔（默认 %(default)s）")
    parser.add_argument("--source-questions", type=key_values(int, "cail2019_dev=1200,drcd_dev=900"), default={},
                        help="各数据集最多用多少个问题，例如 cail2019_dev=1200,drcd_dev=900")
    parser.add_argument("--set", type=key_values(json.loads, "layers=6,max_length=256",
                                                 [f.name for f in fields(ReaderSettings) if f.name != "sources"]),
                        default={},
                        help="覆盖训练设置（ReaderSettings），例如 layers=6,max_length=256")
    parser.add_argument("--base", default=None, help="起点模型文件夹（默认：自带的 multilingual-e5-small）")
    parser.add_argument("--no-bench-exclusion", action="store_true",
                        help="不排除 bench/pinpoint.py 和 bench/answers.py 评测用的问题")
    parser.add_argument("--exclude-answerability-split", action="store_true",
                        help="同时排除拒答检查的验证和留出判决书（拒答检查的组合模型要用其「无答案」分数时必须这样训练）")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="只为 --out 中已有的阅读模型重新选阈值（不训练）")
    parser.add_argument("--json", action="store_true", help="输出 JSON（模型卡片，不含损失曲线）")
    args = parser.parse_args(argv)
    settings = ReaderSettings(**args.set, sources=tuple(s for s in args.sources.split(",") if s))
    settings.source_questions.update(args.source_questions)
    exclude = {} if args.no_bench_exclusion or not (BENCH / "pinpoint.py").is_file() else bench_heldout()
    if args.exclude_answerability_split:
        for source, docs in answerability_evaluation(Path(args.data)).items():
            exclude[source] = exclude.get(source, set()) | docs
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if args.evaluate_only:
        card = evaluate_only(args.data, Path(args.out), exclude, log)
    else:
        card = train_reader(args.data, Path(args.out), settings, args.base, exclude, log)
    if args.json:
        print(json.dumps({k: v for k, v in card.items() if k != "losses"}, ensure_ascii=False))
    else:
        print(f"阈值 {card['thresholds']}，摘录内标注阈值 {card['inside_threshold']}，训练 {card['train_seconds']} 秒"
              f"（{card['steps']} 步），峰值内存 {card['peak_rss_mb']} MB")
        for source, m in card["metrics"].items():
            print(f"  {source:16} 验证 {m['n']} 问（答案在标出范围内）：阅读模型 {m['reader_in_span']:.3f}  "
                  f"启发式 {m['heuristic_in_span']:.3f}  启发式摘录内由模型标注 {m['inside_in_span']:.3f}  "
                  f"合用 {m['at_thresholds']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
