"""Train the answerability check (services.answers.answerability; issue 21 item 7) on public question
sets, and measure it: a cross-encoder over (question, passage) that says whether the passage answers
the question, trained with the reranker's training code (services.tuning.rerank_training).

    python -m services.tuning.answerability --data ../shared/data --out <data dir>/models/answerability
                                            [--sources cail2019_dev,cmrc2018_trial,drcd_dev] [--json]
                                            [--source-questions cail2019_dev=4000,cmrc2018_trial=150,drcd_dev=150]
                                            [--set learning_rate=1e-4,layers=12] [--reuse FOLDER] [--no-combine]
                                            [--reader FOLDER]

Data: folders in the shared format (docs/*.txt and questions.jsonl with answer_spans, answer_type).
Documents are chunked as the app chunks them (default settings), and per question:
- answerable with a span: the passage holding the answer (label 1) and, where its document has one,
  its best-matching passage that does not hold it (label 0: the same case, not the answer);
- answerable yes/no (CAIL): its document's best-matching passage (label 1);
- unanswerable (CAIL2019: asked about a judgment that does not state the answer): its document's
  two best-matching passages (label 0);
- answerable, paired with another document (CMRC / DRCD): the best-matching passage of another
  document of its set (label 0: what a knowledge base without its document returns).
Best-matching is BM25 with the app's tokenizer. Documents are split three ways (seeded): train, dev
(the threshold: best F1 of refusing unanswerable questions with at most `max_refused` of the
answerable ones refused) and held-out (reported, never used for a choice). A question's score is
its best passage's among the first `top` of its pool, as the app scores its first sources.

The combiner (`settings.combine`, default; services.answers.answerability.Combiner): a logistic
regression over the question's character n-grams and `signals` of its passages, fitted on the
questions of the evaluated set's training documents, and a second one over its logit and the
cross-encoder's, fitted on the dev documents (neither model saw them); the threshold is then chosen
on the dev documents' combined scores. `--reuse FOLDER` copies a cross-encoder trained earlier and
fits only the combiner. `--reader FOLDER` (a reader trained with `python -m services.tuning.reader
--exclude-answerability-split`, so it never read the dev or held-out documents; its card lists them):
the combiner also gets a second combination with the reader's no-answer score as a third input,
fitted and thresholded on the dev documents, which the app uses only where that reader is installed.

CAIL2019 has no licence: neither its data nor a model trained on it is committed or shipped. The
app uses the check only where this script's output folder exists (WENDAO_ANSWERABILITY_MODEL or
`<data dir>/models/answerability`); `--sources cmrc2018_trial,drcd_dev` trains on the CC BY-SA sets
only (the README compares both).
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from services.arguments import ArgumentParser, existing_dir, key_values
from services.tuning.rerank_training import Example, RerankSettings, bundled_base, train_cross_encoder

KIND = "answerability"
CARD_NAME = "wendao_card.json"  # services.answers.answerability.CARD
COMBINER_NAME = "combiner.json"  # services.answers.answerability.COMBINER
TRAINING = RerankSettings(batch_size=16, max_length=192, layers=6)
CAIL_LIKE = "unanswerable"  # a set with real unanswerable questions (answer_type)


@dataclass
class AnswerabilitySettings:
    # The measured configuration (bench/answerability.py, README): 6 of e5-small's 12 layers, 192 tokens,
    # CAIL's unanswerable questions first — about 11 minutes of training on 2 CPU cores.
    training: RerankSettings = field(default_factory=lambda: replace(TRAINING))
    sources: tuple[str, ...] = ("cail2019_dev", "cmrc2018_trial", "drcd_dev")
    evaluate_on: str = "cail2019_dev"  # the set whose dev / held-out documents choose and report
    max_questions: int = 1500  # per source, training questions (seeded sample; unanswerable ones first)
    source_questions: dict[str, int] = field(  # per-source caps overriding max_questions
        default_factory=lambda: {"cail2019_dev": 1600, "cmrc2018_trial": 250, "drcd_dev": 250})
    dev: float = 0.15  # share of documents per source for the threshold
    heldout: float = 0.2  # share of documents per source never used for training or a choice
    top: int = 3  # passages scored per question
    max_refused: float = 0.08  # answerable questions refused at most (dev), below the 10% goal
    seed: int = 0
    combine: bool = True  # fit the combiner (question n-grams + signals + the cross-encoder; see below)
    text_c: float = 10.0  # inverse L2 strength of the question model's logistic regression
    min_df: int = 2  # n-grams in fewer training questions are dropped
    signal_weight: float = 3.0  # the standardised signals are multiplied by this (less L2 shrinkage)


@dataclass
class Item:
    """A question of a set, its document and whether (and where) the document answers it."""
    source: str
    id: str
    question: str
    doc: str
    kind: str  # span | yesno | unanswerable
    spans: list[tuple[int, int]]

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


@dataclass
class Passage:
    doc: str
    start: int
    end: int
    text: str


class Corpus:
    """One question set's documents, chunked as the app chunks them, with an in-memory BM25."""

    def __init__(self, root: Path, source: str):
        from services.documents.chunking import ChunkingConfig, chunk_text

        self.source = source
        self.items: list[Item] = []
        for line in (root / "questions.jsonl").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            spans = [(int(s["start_in_doc"]), int(s["start_in_doc"]) + len(s["text"])) for s in d.get("answer_spans", [])]
            kind = d.get("answer_type") or ("span" if spans else "unanswerable")
            self.items.append(Item(source, str(d.get("id")), d["question"], Path(d["doc_file"]).name, kind, spans))
        docs = sorted({i.doc for i in self.items})
        self.passages: list[Passage] = []
        self.by_doc: dict[str, list[int]] = {}
        for name in docs:
            text = (root / "docs" / name).read_text(encoding="utf-8")
            for c in chunk_text(text, ChunkingConfig()):
                self.by_doc.setdefault(name, []).append(len(self.passages))
                self.passages.append(Passage(name, c.start, c.end, c.text))
        self._index()

    def _index(self) -> None:
        from services.documents.tokenizer import tokenize

        self.tf = [Counter(tokenize(p.text)) for p in self.passages]
        self.length = [sum(c.values()) for c in self.tf]
        self.avg = sum(self.length) / max(1, len(self.length))
        df = Counter(t for c in self.tf for t in c)
        n = len(self.tf)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, c in enumerate(self.tf):
            for t in c:
                self.postings.setdefault(t, []).append(i)

    def best(self, query: str, pool: list[int] | None = None, k: int = 3, exclude_doc: str = "") -> list[int]:
        """The `k` best passages for `query` by BM25: among `pool`, or all passages not of `exclude_doc`."""
        from services.documents.tokenizer import query_terms

        terms = [t for t in query_terms(query) if t in self.idf]
        allowed = set(pool) if pool is not None else None
        scores: Counter = Counter()
        for t in terms:
            for i in self.postings[t]:
                if (allowed is not None and i not in allowed) or self.passages[i].doc == exclude_doc:
                    continue
                tf = self.tf[i][t]
                scores[i] += self.idf[t] * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * self.length[i] / self.avg))
        ranked = [i for i, _ in scores.most_common(k)]
        if pool is not None and len(ranked) < k:  # passages sharing no term still belong to the pool
            ranked += [i for i in pool if i not in ranked][:k - len(ranked)]
        return ranked

    def holds(self, i: int, item: Item) -> bool:
        p = self.passages[i]
        return p.doc == item.doc and any(p.start <= a and b <= p.end for a, b in item.spans)


def split_documents(corpus: Corpus, settings: AnswerabilitySettings) -> dict[str, set[str]]:
    """{"train", "dev", "heldout"}: the set's documents, split by a seeded shuffle."""
    docs = sorted(corpus.by_doc)
    random.Random(settings.seed).shuffle(docs)
    held = round(len(docs) * settings.heldout)
    dev = round(len(docs) * settings.dev)
    return {"heldout": set(docs[:held]), "dev": set(docs[held:held + dev]), "train": set(docs[held + dev:])}


def training_examples(corpus: Corpus, docs: set[str], settings: AnswerabilitySettings, rng: random.Random,
                      first_group: int = 0) -> list[Example]:
    """Labelled (question, passage) pairs from the questions about `docs` (see the module docstring);
    a question's pairs share a group number, counted from `first_group`."""
    items = [i for i in corpus.items if i.doc in docs]
    cap = settings.source_questions.get(corpus.source, settings.max_questions)
    if len(items) > cap:  # the real unanswerable questions are the scarce signal: all of them first
        unanswerable = [i for i in items if not i.answerable]
        answerable = [i for i in items if i.answerable]
        kept = rng.sample(unanswerable, min(cap, len(unanswerable)))
        items = kept + rng.sample(answerable, cap - len(kept))
    has_unanswerable = any(not i.answerable for i in corpus.items)
    out: list[Example] = []
    for n, item in enumerate(items):
        own = corpus.by_doc.get(item.doc, [])
        group = first_group + n
        if item.kind == "unanswerable":
            out += [Example(item.question, corpus.passages[i].text, 0.0, group) for i in corpus.best(item.question, own, 2)]
            continue
        if item.kind == "yesno":
            out += [Example(item.question, corpus.passages[i].text, 1.0, group) for i in corpus.best(item.question, own, 1)]
            continue
        holding = [i for i in own if corpus.holds(i, item)]
        if not holding:
            continue
        out.append(Example(item.question, corpus.passages[rng.choice(holding)].text, 1.0, group))
        others = [i for i in corpus.best(item.question, own, 3) if i not in holding and not _overlaps(corpus, i, holding)]
        if others:
            out.append(Example(item.question, corpus.passages[others[0]].text, 0.0, group))
        if not has_unanswerable:  # CMRC / DRCD: the question against a KB without its document
            elsewhere = corpus.best(item.question, None, 1, exclude_doc=item.doc)
            out += [Example(item.question, corpus.passages[i].text, 0.0, group) for i in elsewhere]
    return out


def _overlaps(corpus: Corpus, i: int, holding: list[int]) -> bool:
    p = corpus.passages[i]
    return any(p.start < corpus.passages[j].end and corpus.passages[j].start < p.end for j in holding)


def question_scores(model_path: str, corpus: Corpus, items: list[Item], top: int,
                    progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Each question's score: the best of the check's scores for its document's first `top` passages
    (BM25 order), as the app scores its first sources."""
    from services.search.rerank import load_reranker

    model = load_reranker(model_path)
    out = []
    for n, item in enumerate(items, start=1):
        pool = corpus.best(item.question, corpus.by_doc.get(item.doc, []), top)
        out.append(max(model.score(item.question, [corpus.passages[i].text for i in pool]), default=0.0))
        if progress:
            progress(n, len(items))
    return out


def reader_scores(reader_path: str, corpus: Corpus, items: list[Item], top: int) -> list[float]:
    """Each question's reader no-answer score (services.answers.answerability.reader_score) over its
    document's first `top` passages (BM25 order), as the check reads them."""
    from services.answers.answerability import reader_score
    from services.answers.reader import Reader

    reader = Reader(reader_path, 0.0, top)
    return [reader_score(item.question, [corpus.passages[i].text for i in corpus.best(item.question, corpus.by_doc.get(
        item.doc, []), top)], reader) for item in items]


def reader_ready(folder: Path, source: str, evaluated: set[str]) -> str:
    """Why the reader at `folder` cannot feed the combiner ("" when it can): it needs a card listing the
    documents left out of its training (`excluded_names`, written by services.tuning.reader), and those
    of `source` must include every `evaluated` one (the dev documents the combination is fitted on and
    the held-out ones it is reported on: `python -m services.tuning.reader --exclude-answerability-split`)."""
    from services.answers.reader import CARD as READER_CARD

    try:
        card = json.loads((folder / READER_CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no reader card in {folder}"
    read = evaluated - set((card.get("excluded_names") or {}).get(source, []))
    if read:
        return (f"the reader may have been trained on {len(read)} of the dev / held-out documents "
                "(train it with --exclude-answerability-split)")
    return ""


def refusal_metrics(scores: list[float], answerable: list[bool], threshold: float) -> dict:
    """Refusing below `threshold`: F1 of refusing the unanswerable questions (precision, recall) and the
    share of answerable questions refused."""
    refused = [s < threshold for s in scores]
    tp = sum(r and not a for r, a in zip(refused, answerable))
    fp = sum(r and a for r, a in zip(refused, answerable))
    fn = sum(not r and not a for r, a in zip(refused, answerable))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n_answerable = max(1, sum(answerable))
    return {"f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision, "recall": recall, "answerable_refused": fp / n_answerable,
            "answerable": sum(answerable), "unanswerable": len(answerable) - sum(answerable)}


def choose_threshold(scores: list[float], answerable: list[bool], max_refused: float) -> float:
    """The threshold with the best balanced F1 (answerable and unanswerable questions weighted alike, as
    issue 21 counts them: 2·r / (1 + r + f) for the rates r of unanswerable and f of answerable
    questions refused) among those refusing at most `max_refused` of the answerable."""
    candidates = sorted(set(round(s, 4) for s in scores)) + [1.01]
    best, best_f1 = 0.0, -1.0
    for t in candidates:
        m = refusal_metrics(scores, answerable, t)
        f1 = 2 * m["recall"] / (1 + m["recall"] + m["answerable_refused"])
        if m["answerable_refused"] <= max_refused and f1 > best_f1:
            best, best_f1 = t, f1
    return best


def balanced(items: list[Item], rng: random.Random) -> list[Item]:
    """As many answerable questions as unanswerable ones (a seeded sample), as issue 21 counts them."""
    unanswerable = [i for i in items if not i.answerable]
    answerable = [i for i in items if i.answerable]
    return unanswerable + rng.sample(answerable, min(len(answerable), len(unanswerable)))


def pools(corpus: Corpus, items: list[Item], top: int) -> list[list[str]]:
    """Each question's first `top` passages of its document (BM25 order), as the check reads them."""
    return [[corpus.passages[i].text for i in corpus.best(item.question, corpus.by_doc.get(item.doc, []), top)]
            for item in items]


def fit_text_model(items: list[Item], passages: list[list[str]], settings: AnswerabilitySettings) -> dict:
    """The combiner's question model: a logistic regression (answerable = 1) over the questions' TF-IDF
    character n-grams and their standardised `signals`, fitted on questions of the training documents of
    a set with real unanswerable questions. Returns {"grams", "signals", "text_intercept"} as Combiner
    stores them."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    from services.answers.answerability import question_grams, signals

    counts = [question_grams(i.question) for i in items]
    df = Counter(g for c in counts for g in c)
    vocab = sorted(g for g, n in df.items() if n >= settings.min_df)
    index = {g: n for n, g in enumerate(vocab)}
    idf = np.array([math.log((1 + len(items)) / (1 + df[g])) + 1 for g in vocab])
    grams = _tfidf(counts, index, idf)
    names, raw = _signal_matrix(items, passages, signals)
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    scale[scale == 0] = 1.0
    scale = scale / settings.signal_weight
    X = hstack([grams, csr_matrix((raw - mean) / scale)]).tocsr()
    y = np.array([i.answerable for i in items], dtype=int)
    model = LogisticRegression(C=settings.text_c, max_iter=5000).fit(X, y)
    w = model.coef_[0]
    return {"grams": {g: [round(float(idf[n]), 5), round(float(w[n]), 5)] for g, n in index.items() if abs(w[n]) > 1e-4},
            "signals": {k: [float(mean[n]), float(scale[n]), float(w[len(vocab) + n])] for n, k in enumerate(names)},
            "text_intercept": float(model.intercept_[0])}


def _tfidf(counts: list[Counter], index: dict[str, int], idf):
    import numpy as np
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for r, c in enumerate(counts):
        kept = [(index[g], (1 + math.log(n)) * idf[index[g]]) for g, n in c.items() if g in index]
        norm = math.sqrt(sum(v * v for _, v in kept)) or 1.0
        for j, v in kept:
            rows.append(r)
            cols.append(j)
            vals.append(v / norm)
    return csr_matrix((np.array(vals), (rows, cols)), shape=(len(counts), len(index)))


def _signal_matrix(items, passages, signals):
    import numpy as np

    found = [signals(i.question, p) for i, p in zip(items, passages)]
    names = list(found[0]) if found else []
    return names, np.array([[f[k] for k in names] for f in found], dtype=float).reshape(len(found), len(names))


def fit_combination(text: list[float], check: list[float], answerable: list[bool],
                    reader: list[float] | None = None) -> tuple[float, ...]:
    """(a, b, c) of the combined logit a * text + b * logit(check) + c — with `reader` scores, (a, b, c, d)
    of a * text + b * logit(check) + d * reader + c: a logistic regression over the scores, fitted on
    questions none of the models was trained on (the dev documents)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from services.answers.answerability import logit

    X = np.array([[t, logit(c), *([r] if reader is not None else [])]
                  for t, c, r in zip(text, check, reader if reader is not None else check)])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(X, np.array(answerable, dtype=int))
    w = [float(x) for x in model.coef_[0]]
    return (w[0], w[1], float(model.intercept_[0]), *w[2:])


def train_check(data_root: Path, out: Path, settings: AnswerabilitySettings | None = None, base: str | None = None,
                log: Callable[[str], None] = lambda s: None, reuse: Path | None = None, reader: Path | None = None,
                score_cache: Path | None = None) -> dict:
    """Build the examples, train the cross-encoder (or copy the one trained earlier in `reuse`), fit
    the combiner (`settings.combine`: the question model on the training documents, the combination on
    the dev ones), choose the threshold on the dev documents, measure on the held-out ones, save the
    model folder with its card (threshold, sources, metrics). With `reader` (a reader folder trained
    with --exclude-answerability-split), the combiner also gets the reader's combination (its no-answer
    score as a third input, fitted on the dev documents, its own threshold; metrics `reader_*`).
    `score_cache` (a JSON file): the reused cross-encoder's and the reader's dev / held-out scores are
    kept there and read back by a later run. Returns the card."""
    import shutil

    settings = settings or AnswerabilitySettings()
    started = time.time()
    rng = random.Random(settings.seed)
    corpora = {s: Corpus(data_root / s, s) for s in dict.fromkeys((*settings.sources, settings.evaluate_on))}
    splits = {s: split_documents(c, settings) for s, c in corpora.items()}
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    examples: list[Example] = []
    losses: list[float] = []
    if reuse is not None:
        shutil.copytree(reuse, tmp)
        (tmp / CARD_NAME).unlink(missing_ok=True)
        (tmp / COMBINER_NAME).unlink(missing_ok=True)
        previous = json.loads((reuse / CARD_NAME).read_text(encoding="utf-8")) if (reuse / CARD_NAME).is_file() else {}
        log(f"cross-encoder reused from {reuse}")
    else:
        previous = {}
        for source in settings.sources:
            examples += training_examples(corpora[source], splits[source]["train"], settings, rng,
                                          first_group=1 + max((e.group for e in examples), default=0))
        rng.shuffle(examples)
        log(f"{len(examples)} examples ({sum(e.label >= 0.5 for e in examples)} positive) from {', '.join(settings.sources)}")
        last = [0.0]

        def on_step(p):
            if time.time() - last[0] > 15 or p.step == p.steps:
                last[0] = time.time()
                log(f"train {p.step}/{p.steps} loss {sum(p.losses[-20:]) / len(p.losses[-20:]):.3f} eta {p.eta_s or 0:.0f}s")

        losses = train_cross_encoder(base or bundled_base(), examples, tmp, settings.training, on_step).losses
    train_seconds = time.time() - started
    corpus = corpora[settings.evaluate_on]
    results = {}
    cache = json.loads(score_cache.read_text(encoding="utf-8")) if score_cache and score_cache.is_file() else {}

    def cached(key: str | None, compute: Callable[[], list[float]]) -> list[float]:
        if key is None or key not in cache:
            found = compute()
            if key is None or score_cache is None:
                return found
            cache[key] = found
            score_cache.parent.mkdir(parents=True, exist_ok=True)
            score_cache.write_text(json.dumps(cache), encoding="utf-8")
        return cache[key]

    for part in ("dev", "heldout"):
        items = [i for i in corpus.items if i.doc in splits[settings.evaluate_on][part]]
        log(f"scoring {len(items)} {part} questions with the cross-encoder")
        key = f"check:{reuse.resolve()}:{settings.seed}:{settings.top}:{part}:{len(items)}" if reuse is not None else None
        results[part] = {"items": items, "check": cached(key, lambda: question_scores(str(tmp), corpus, items, settings.top))}
        results[part]["scores"] = results[part]["check"]
    metrics = {}
    combiner = None
    train_items = [i for i in corpus.items if i.doc in splits[settings.evaluate_on]["train"]]
    if settings.combine and not all(len({i.answerable for i in part}) == 2 for part in (train_items, results["dev"]["items"])):
        log("no combiner: the training or dev documents lack answerable or unanswerable questions")
    elif settings.combine:
        from services.answers.answerability import Combiner

        metrics.update(_measure(results, "check_", settings,
                                choose_threshold(results["dev"]["check"], [i.answerable for i in results["dev"]["items"]],
                                                 settings.max_refused)))
        log(f"question model on {len(train_items)} questions of the training documents")
        text = fit_text_model(train_items, pools(corpus, train_items, settings.top), settings)
        combiner = Combiner(text["grams"], text["signals"], text["text_intercept"], 1.0, 0.0, 0.0)
        for r in results.values():
            r["text"] = [combiner.text_logit(i.question, p) for i, p in zip(r["items"], pools(corpus, r["items"], settings.top))]
        dev = results["dev"]
        combiner.a, combiner.b, combiner.c = fit_combination(dev["text"], dev["check"], [i.answerable for i in dev["items"]])
        from services.answers.answerability import logit

        for r in results.values():
            r["scores"] = [1 / (1 + math.exp(-(combiner.a * t + combiner.b * logit(c) + combiner.c)))
                           for t, c in zip(r["text"], r["check"])]
        log(f"combination: {combiner.a:.3f} * question model + {combiner.b:.3f} * logit(cross-encoder) + {combiner.c:.3f}")
    dev = results["dev"]
    threshold = choose_threshold(dev["scores"], [i.answerable for i in dev["items"]], settings.max_refused)
    metrics.update(_measure(results, "", settings, threshold))
    if combiner is not None and reader is not None:
        combiner.reader = _fit_reader_combination(results, corpus, settings, reader, cached, metrics, log)
    card = {"name": out.name, "kind": KIND, "threshold": threshold, "top": settings.top,
            "sources": list(settings.sources), "evaluated_on": settings.evaluate_on,
            "examples": len(examples) or previous.get("examples", 0),
            "settings": {**asdict(settings), "training": asdict(settings.training)}, "metrics": metrics,
            "losses": losses or previous.get("losses", []), "train_seconds": round(train_seconds),
            "seconds": round(time.time() - started), "created_at": time.time(),
            "note": "Trained on CAIL2019 (no licence): keep private; do not redistribute." if "cail2019_dev" in settings.sources
            else "Trained on CMRC 2018 / DRCD (CC BY-SA 4.0)."}
    if reuse is not None:
        card["cross_encoder_from"] = str(reuse)
    if combiner is not None:
        card["combiner"] = COMBINER_NAME
        card["combination"] = {"a": combiner.a, "b": combiner.b, "c": combiner.c, "grams": len(combiner.grams)}
        if combiner.reader:
            card["reader_combination"] = {**combiner.reader, "folder": str(reader)}
        (tmp / COMBINER_NAME).write_text(json.dumps(combiner.to_json(), ensure_ascii=False), encoding="utf-8")
    (tmp / CARD_NAME).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return card


def _fit_reader_combination(results: dict, corpus: Corpus, settings: AnswerabilitySettings, reader: Path,
                            cached: Callable, metrics: dict, log: Callable[[str], None]) -> dict | None:
    """The combiner's reader combination (Combiner.reader) fitted on the dev documents with the reader's
    no-answer scores, its threshold chosen there; adds its metrics (`reader_dev`, `reader_heldout`, …)."""
    from services.answers.answerability import logit
    from services.answers.reader import CARD as READER_CARD
    from services.answers.reader import reader_identity

    why = reader_ready(reader, settings.evaluate_on, {i.doc for r in results.values() for i in r["items"]})
    if why:
        log(f"no reader combination: {why}")
        return None
    card = json.loads((reader / READER_CARD).read_text(encoding="utf-8"))
    identity = reader_identity(card)
    for part, r in results.items():
        log(f"reading {len(r['items'])} {part} questions with the reader")
        key = f"reader:{identity}:{settings.seed}:{settings.top}:{part}:{len(r['items'])}"
        r["reader"] = cached(key, lambda: reader_scores(str(reader), corpus, r["items"], settings.top))
    dev = results["dev"]
    a, b, c, d = fit_combination(dev["text"], dev["check"], [i.answerable for i in dev["items"]], dev["reader"])
    for r in results.values():
        r["with_reader"] = [1 / (1 + math.exp(-(a * t + b * logit(k) + d * x + c)))
                            for t, k, x in zip(r["text"], r["check"], r["reader"])]
    threshold = choose_threshold(dev["with_reader"], [i.answerable for i in dev["items"]], settings.max_refused)
    metrics.update(_measure(results, "reader_", settings, threshold))
    log(f"with the reader: {a:.3f} * question model + {b:.3f} * logit(cross-encoder) + {d:.3f} * reader + {c:.3f}, "
        f"threshold {threshold}")
    return {"a": a, "b": b, "c": c, "d": d, "threshold": threshold, "reader": identity}


def _measure(results: dict, prefix: str, settings: AnswerabilitySettings, threshold: float) -> dict:
    """Refusal metrics of each part's `scores` (or, with the prefix check_, the cross-encoder's alone;
    reader_, the reader's combination) at `threshold`, over all its questions and balanced."""
    key = {"check_": "check", "reader_": "with_reader"}.get(prefix, "scores")
    metrics = {}
    for part, r in results.items():
        answerable = [i.answerable for i in r["items"]]
        metrics[f"{prefix}{part}"] = {**refusal_metrics(r[key], answerable, threshold), "threshold": threshold}
        pick = balanced(r["items"], random.Random(settings.seed))
        index = {id(i): n for n, i in enumerate(r["items"])}
        metrics[f"{prefix}{part}_balanced"] = {**refusal_metrics([r[key][index[id(i)]] for i in pick],
                                                                 [i.answerable for i in pick], threshold),
                                               "threshold": threshold}
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m services.tuning.answerability",
                            description="训练无需大模型的可回答性检查（拒答）模型")
    parser.add_argument("--data", required=True, type=existing_dir,
                        help="问题集所在的文件夹（共享格式，每个数据集一个子文件夹，例如 ../shared/data）")
    parser.add_argument("--out", required=True, help="模型保存到的文件夹（例如 <数据目录>/models/answerability）")
    parser.add_argument("--sources", default="cail2019_dev,cmrc2018_trial,drcd_dev",
                        help="用来训练的数据集，逗号分隔（默认 %(default)s）")
    parser.add_argument("--evaluate-on", default="cail2019_dev", help="在哪个数据集的验证文档上选阈值（默认 %(default)s）")
    parser.add_argument("--max-questions", type=int, default=None, help="最多用多少个问题（不再按数据集分别限量）")
    parser.add_argument("--source-questions", type=key_values(int, "cail2019_dev=4000,drcd_dev=150"), default={},
                        help="各数据集最多用多少个问题，例如 cail2019_dev=4000,drcd_dev=150")
    parser.add_argument("--set", type=key_values(json.loads, "layers=6,max_length=192",
                                                 [f.name for f in fields(RerankSettings)]), default={},
                        help="覆盖训练设置（RerankSettings），例如 layers=6,max_length=192")
    parser.add_argument("--base", default=None, help="起点模型（默认：自带的 multilingual-e5-small）")
    parser.add_argument("--reuse", type=existing_dir, default=None,
                        help="以前训练好的检查模型文件夹：复制其中的交叉编码器，不再重新训练")
    parser.add_argument("--reader", type=existing_dir, default=None,
                        help="用 --exclude-answerability-split 训练的阅读模型文件夹：其「无答案」分数成为组合模型的又一个输入"
                             "（只在装的正是这个阅读模型时使用）")
    parser.add_argument("--no-combine", action="store_true", help="只用交叉编码器（不加组合器，组合器之前的做法）")
    parser.add_argument("--json", action="store_true", help="输出 JSON（模型卡片，不含损失曲线）")
    args = parser.parse_args(argv)
    settings = AnswerabilitySettings(training=replace(TRAINING, **args.set), sources=tuple(s for s in args.sources.split(",") if s),
                                     evaluate_on=args.evaluate_on, combine=not args.no_combine)
    if args.max_questions:
        settings.max_questions = args.max_questions
        settings.source_questions = {}
    settings.source_questions.update(args.source_questions)
    card = train_check(args.data, Path(args.out), settings, args.base, log=lambda s: print(s, file=sys.stderr),
                       reuse=args.reuse, reader=args.reader)
    if args.json:
        print(json.dumps({k: v for k, v in card.items() if k != "losses"}, ensure_ascii=False))
    else:
        print(f"阈值 {card['threshold']:.4f}（{card['evaluated_on']} 的验证文档上选出），训练 {card['train_seconds']} 秒")
        for part, m in card["metrics"].items():
            print(f"  {part:18} F1 {m['f1']:.3f}  拒答召回 {m['recall']:.3f}  拒答精确 {m['precision']:.3f}  "
                  f"可回答被拒 {m['answerable_refused']:.3f}（{m['answerable']} 可答 / {m['unanswerable']} 不可答）")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
