"""Retrieval evaluation over question sets (the format of shared/data/*/questions.jsonl).

A question has `question`, `doc_file` and either `answer` (the answer's text, located in the document
by `locate_answers`) or `answer_spans[].start_in_doc/text`. A retrieved passage
is relevant when it is from the gold document and holds a whole answer span. Reported per
configuration: chunk Recall@1/5/10/20, MRR@10, nDCG@10, document Recall@5, latency p50/p95, and
answer coverage within the first 1,000 / 2,000 characters of retrieved text (fair across chunk
sizes: a bigger chunk "finds" more only by showing more text).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePath
from typing import Callable

from services import errors
from services.config import RetrievalSettings
from services.documents.chunking import ChunkingConfig
from services.index.embedding import clear_query_cache
from services.index.library import Library
from services.search.retrieval import DenseStage, Hit, Retriever
from services.index.store import KnowledgeBase

log = logging.getLogger(__name__)
KS = (1, 5, 10, 20)
BUDGETS = (1000, 2000)


MATCH_RULE_ZH = "按文件名（忽略目录和扩展名）对应知识库中的文档，例如 docs/合同.txt 对应 合同.pdf"


def doc_key(name: str) -> str:
    """How a question's `doc_file` is matched to a KB document: the file name without folders and
    extension, case-folded (a question file written for `docs/x.txt` scores against `x.pdf`)."""
    return PurePath(str(name).replace("\\", "/")).stem.casefold()


@dataclass
class Question:
    id: str
    question: str
    doc_file: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    answer_type: str = "span"  # span | yesno | unanswerable (CAIL2019): only span questions measure recall

    @property
    def doc_name(self) -> str:
        return PurePath(self.doc_file).name

    @property
    def doc_key(self) -> str:
        return doc_key(self.doc_file)

    @property
    def retrievable(self) -> bool:
        """A question whose answer is a passage of its document (not yes/no, not unanswerable)."""
        return self.answer_type == "span" and bool(self.spans)


@dataclass
class EvalConfig:
    name: str
    mode: str = "hybrid"
    rerank: bool = False
    settings: RetrievalSettings | None = None


def parse_questions(lines: list[str]) -> list[Question]:
    """Parse JSONL question lines; raises InvalidQuestionFile with the bad line number."""
    questions = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            spans = [(int(s["start_in_doc"]), int(s["start_in_doc"]) + len(s["text"])) for s in d.get("answer_spans", [])]
            answers = d.get("answers") or ([d["answer"]] if d.get("answer") not in (None, "") else []) \
                or [s["text"] for s in d.get("answer_spans", [])]
            if isinstance(answers, str):
                answers = [answers]
            kind = str(d.get("answer_type") or ("span" if spans or answers else "unanswerable"))
            questions.append(Question(str(d.get("id", n)), str(d["question"]), d.get("doc_file", ""), spans,
                                      [str(a) for a in answers], kind))
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.InvalidQuestionFile(f"问题文件第 {n} 行格式不正确（{type(exc).__name__}）。") from exc
    if not questions:
        raise errors.InvalidQuestionFile("问题文件里没有问题。")
    return questions


def load_questions(path: str) -> list[Question]:
    with open(path, encoding="utf-8") as f:
        return parse_questions(f.read().splitlines())


MAX_LOCATED = 50  # occurrences of one answer text kept as spans (a very common text stops there)


def locate_answers(lib: Library, kb: KnowledgeBase, questions: list[Question]) -> list[Question]:
    """Give each span question that has answer text but no offsets (`{"answer": "800元"}`) the spans of
    EVERY occurrence of each answer text in its document (the KB's stored text of the first ready
    document matched by `doc_key`): the user named the text, not which occurrence, so a passage holding
    any of them counts as relevant. Changes the questions in place; returns those whose answer text is
    not found in their (present) document. Questions whose document the KB lacks are left as they are
    (`split_questions` reports them as missing)."""
    texts: dict[str, str | None] = {}
    not_found = []
    for q in questions:
        if q.answer_type != "span" or q.spans or not q.answers:
            continue
        if q.doc_key not in texts:
            docs = [d for d in lib.store.list_documents(kb.id) if d.status == "ready" and doc_key(d.filename) == q.doc_key]
            texts[q.doc_key] = lib.store.document_text(kb.id, docs[0].id) if docs else None
        text = texts[q.doc_key]
        if text is None:
            continue
        for answer in {a.strip() for a in q.answers if a.strip()}:
            at = text.find(answer)
            while at >= 0 and len(q.spans) < MAX_LOCATED:
                q.spans.append((at, at + len(answer)))
                at = text.find(answer, at + 1)
        q.spans.sort()
        if not q.spans:
            not_found.append(q)
    return not_found


def holds_answer(doc_name: str, start: int, end: int, q: Question) -> bool:
    """The relevance rule: a passage [start, end) of the gold document (matched by `doc_key`) that holds
    a whole answer span."""
    return doc_key(doc_name) == q.doc_key and any(start <= a and b <= end for a, b in q.spans)


def split_questions(questions: list[Question], filenames: list[str]) -> dict:
    """The questions a retrieval score is computed on, and the rest by reason: {"scored", "yesno",
    "unanswerable", "missing": questions whose document the KB lacks, "missing_docs": those names,
    "not_found": questions with an answer text that `locate_answers` did not find in their document}."""
    held = {doc_key(f) for f in filenames}
    out = {"scored": [], "yesno": [], "unanswerable": [], "missing": [], "missing_docs": [], "not_found": []}
    for q in questions:
        if q.answer_type == "yesno":
            out["yesno"].append(q)
        elif q.answer_type == "span" and not q.spans and q.answers and q.doc_key in held:
            out["not_found"].append(q)
        elif not q.retrievable and not (q.answer_type == "span" and q.answers):
            out["unanswerable"].append(q)
        elif q.doc_key not in held:
            out["missing"].append(q)
            if q.doc_name not in out["missing_docs"]:
                out["missing_docs"].append(q.doc_name)
        else:
            out["scored"].append(q)
    return out


def split_for_kb(lib: Library, kb: KnowledgeBase, questions: list[Question]) -> dict:
    """`split_questions` against the KB's ready, switched-on documents, answer texts located first."""
    filenames = [d.filename for d in lib.store.list_documents(kb.id) if d.status == "ready" and d.enabled]
    locate_answers(lib, kb, questions)
    return split_questions(questions, filenames)


def excluded_zh(parts: dict) -> str:
    """Which questions a retrieval score leaves out and why, in words for the page."""
    said = []
    if parts["yesno"]:
        said.append(f"{len(parts['yesno'])} 个是非题")
    if parts["unanswerable"]:
        said.append(f"{len(parts['unanswerable'])} 个没有答案的问题（拒答测试或未写答案，不计入检索评分）")
    if parts.get("not_found"):
        names = "、".join(f"「{q.question[:30]}」" for q in parts["not_found"][:3]) + ("等" if len(parts["not_found"]) > 3 else "")
        said.append(f"{len(parts['not_found'])} 个问题的答案在文档中找不到：{names}（答案须与文档原文一字不差）")
    if parts["missing"]:
        names = "、".join(parts["missing_docs"][:5]) + ("等" if len(parts["missing_docs"]) > 5 else "")
        said.append(f"{len(parts['missing'])} 个问题所针对的 {len(parts['missing_docs'])} 个文档不在知识库中（{names}）")
    return "；".join(said) if said else "全部问题都参与评测"


def nothing_to_score_zh(parts: dict) -> str:
    """Why a question set has no question a retrieval score can be computed on (the file-name rule
    only when documents were not matched)."""
    return ("没有可以评测检索的问题：" + excluded_zh(parts) + "。"
            + (MATCH_RULE_ZH + "。" if parts["missing"] else "")
            + "每个问题需要写明答案（answer：文档中的原文）。")


def is_relevant(hit: Hit, q: Question) -> bool:
    return holds_answer(hit.doc, hit.start, hit.end, q)


# --- a KB's saved question set -------------------------------------------------------------------
QUESTION_SET_FILE = "questions.json"


def save_question_set(lib: Library, kb: KnowledgeBase, lines: list[str]) -> list[Question]:
    """Keep a JSONL question file (validated first: InvalidQuestionFile) as the KB's question set, so
    later evaluations and fine-tuning runs (before/after on the user's own questions) can use it.
    Replaces any earlier set; stored under the data dir and deleted with the KB (Library.kb_folder)."""
    lib.require_owner()
    questions = parse_questions(lines)
    folder = lib.kb_folder(kb.id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{QUESTION_SET_FILE}.tmp"
    record = {"saved_at": time.time(), "lines": list(lines)}  # blank lines too: ids default to line numbers
    tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    tmp.replace(folder / QUESTION_SET_FILE)
    return questions


def question_set(lib: Library, kb: KnowledgeBase) -> list[Question] | None:
    """The KB's saved question set, or None when it has none (or the file no longer parses); answers
    given as text only are located in the KB's documents (`locate_answers`)."""
    path = lib.kb_folder(kb.id) / QUESTION_SET_FILE
    if not path.exists():
        return None
    try:
        questions = parse_questions(json.loads(path.read_text(encoding="utf-8"))["lines"])
        locate_answers(lib, kb, questions)
        return questions
    except (ValueError, KeyError, TypeError, OSError, errors.InvalidQuestionFile):
        log.warning("unreadable question set %s", path)
        return None


def delete_question_set(lib: Library, kb: KnowledgeBase) -> None:
    """Forget the KB's saved question set (its documents and indexes are untouched)."""
    lib.require_owner()
    (lib.kb_folder(kb.id) / QUESTION_SET_FILE).unlink(missing_ok=True)


def coverage(hits: list[Hit], q: Question, budget: int) -> float:
    """Share of the gold answer's characters inside the first `budget` characters of retrieved text."""
    if not q.spans:
        return 0.0
    a, b = q.spans[0]
    covered, used = set(), 0
    for hit in hits:
        take = min(len(hit.text), budget - used)
        if take <= 0:
            break
        if doc_key(hit.doc) == q.doc_key:
            covered.update(range(max(a, hit.start), min(b, hit.start + take)))
        used += take
    return len(covered) / max(1, b - a)


@dataclass
class QuestionResult:
    config: str
    id: str
    question: str
    first_relevant_rank: int | None
    doc_rank: int | None
    ndcg10: float
    ms: float
    coverage: dict
    top_doc: str = ""


def ideal_relevant_count(lib: Library, kb: KnowledgeBase, q: Question, cache: dict) -> int:
    """How many indexed chunks hold the answer (for nDCG's ideal ranking)."""
    key = q.doc_key
    if key not in cache:
        docs = [d for d in lib.store.list_documents(kb.id) if d.status == "ready" and doc_key(d.filename) == key]
        cache[key] = lib.store.chunks_of(kb.id, docs[0].id) if docs else []
    return max(1, sum(1 for c in cache[key] if any(c.start <= a and b <= c.end for a, b in q.spans)))


def evaluate_question(retriever: Retriever, q: Question, config: EvalConfig, ideal: int) -> QuestionResult:
    result = retriever.search(q.question, top_k=max(KS), mode=config.mode, rerank=config.rerank)
    hits = result.hits
    relevant = [i for i, h in enumerate(hits, start=1) if is_relevant(h, q)]
    doc_rank = next((i for i, h in enumerate(hits, start=1) if doc_key(h.doc) == q.doc_key), None)
    dcg = sum(1 / math.log2(r + 1) for r in relevant if r <= 10)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(ideal, 10) + 1))
    return QuestionResult(config.name, q.id, q.question, relevant[0] if relevant else None, doc_rank,
                          min(1.0, dcg / idcg), result.timings_ms["total"],
                          {b: coverage(hits, q, b) for b in BUDGETS}, hits[0].doc if hits else "")


def summarize(rows: list[QuestionResult]) -> dict:
    n = len(rows)
    ranks = [r.first_relevant_rank for r in rows]
    ms = sorted(r.ms for r in rows)
    out = {f"recall@{k}": sum(1 for x in ranks if x and x <= k) / n for k in KS}
    out["mrr@10"] = sum(1 / x for x in ranks if x and x <= 10) / n
    out["ndcg@10"] = sum(r.ndcg10 for r in rows) / n
    out["doc_recall@5"] = sum(1 for r in rows if r.doc_rank and r.doc_rank <= 5) / n
    for b in BUDGETS:
        out[f"coverage@{b}chars"] = sum(r.coverage[b] for r in rows) / n
    out["p50_ms"] = statistics.median(ms)
    out["p95_ms"] = ms[min(n - 1, math.ceil(0.95 * n) - 1)]
    out["questions"] = n
    return out


def evaluate(lib: Library, kb: KnowledgeBase, questions: list[Question], configs: list[EvalConfig],
             progress: Callable[[int, int], None] | None = None,
             dense: DenseStage | None = None) -> tuple[dict[str, dict], list[QuestionResult]]:
    """Run every configuration over every question through `Retriever.search` (the pipeline users
    get); returns ({config: summary}, per-question rows). `dense`: the retriever's dense stage
    (default: the KB's model and index; fine-tuning measures a candidate model's vectors held in
    memory, services.index.dense.MemoryDense)."""
    rows: list[QuestionResult] = []
    summaries: dict[str, dict] = {}
    ideal_cache: dict = {}
    total, done = len(questions) * len(configs), 0
    for config in configs:
        clear_query_cache()  # latency per configuration includes embedding each query once
        retriever = Retriever(lib, kb, replace(config.settings) if config.settings else RetrievalSettings(), dense=dense)
        config_rows = []
        for q in questions:
            config_rows.append(evaluate_question(retriever, q, config, ideal_relevant_count(lib, kb, q, ideal_cache)))
            done += 1
            if progress:
                progress(done, total)
        summaries[config.name] = summarize(config_rows)
        rows.extend(config_rows)
    return summaries, rows


def rows_as_dicts(rows: list[QuestionResult]) -> list[dict]:
    out = []
    for r in rows:
        d = asdict(r)
        cov = d.pop("coverage")
        d.update({f"coverage@{b}": round(v, 4) for b, v in cov.items()})
        out.append(d)
    return out


SAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "samples"


def sample_question_lines() -> list[str]:
    """The JSONL lines of the small question set the app ships (CMRC 2018 trial excerpt, CC BY-SA 4.0)."""
    return (SAMPLES / "questions.jsonl").read_text(encoding="utf-8").splitlines()


def sample_questions() -> list[Question]:
    """The small question set the app ships, parsed."""
    return parse_questions(sample_question_lines())


def sample_documents() -> list:
    return sorted((SAMPLES / "docs").glob("*.txt"))


# The chunkers an evaluation run can compare with the KB's own ("current"): name -> settings.
CHUNKER_NAMES = {"current": "当前知识库的切分", "sentence": "按句子 300 字 / 重叠 120", "fixed": "固定 300 字 / 重叠 50",
                 "window": "滑动窗口 4 句 / 步长 2"}


def chunking_short_zh(config: dict) -> str:
    """A document's chunking (ChunkingConfig.to_dict) in the few words 评测's chunker names use:
    「按句子 300/120」, 「固定 300/50」, 「滑动窗口 4/2」 (sentence chunks counted in model tokens: 「按句子 300 词/120」)."""
    strategy = config.get("strategy", "sentence")
    if strategy == "window":
        return f"滑动窗口 {config.get('window', 4)}/{config.get('stride', 2)}"
    word = {"sentence": "按句子", "fixed": "固定"}.get(strategy, strategy)
    unit = " 词" if strategy == "sentence" and config.get("unit") == "tokens" else ""
    return f"{word} {config.get('chunk_size', 300)}{unit}/{config.get('overlap', 0)}"


def current_chunking_zh(lib: Library, kb: KnowledgeBase) -> str:
    """What 「当前知识库的切分」 is: its ready documents' chunkings with their counts, the commonest
    first (「13 个文档按句子 300/120，1 个滑动窗口 4/2」; 「全部 14 个文档按句子 300/120」)."""
    counts = Counter(chunking_short_zh(d.chunking or {}) for d in lib.store.list_documents(kb.id) if d.status == "ready")
    if not counts:
        return "还没有文档"
    if len(counts) == 1:
        [(words, n)] = counts.items()
        return f"全部 {n} 个文档{words}"
    parts = [f"{n} 个{'文档' if i == 0 else ''}{words}" for i, (words, n) in enumerate(counts.most_common())]
    return "，".join(parts)


CONFIG_SEPARATOR = " · "  # between a configuration's parts: "当前知识库的切分 · 混合 · 不重排"


def config_labels(names: list[str]) -> tuple[str, dict[str, str]]:
    """The parts every configuration name shares (one caption for the page) and each name shortened
    to the parts that tell it apart: ["切分A · 关键词 · 不重排", "切分A · 向量 · 不重排"] ->
    ("切分A · 不重排", {…: "关键词", …: "向量"}). A single name, or names with nothing in common,
    are kept whole."""
    split = {n: n.split(CONFIG_SEPARATOR) for n in names}
    common = [p for p in split[names[0]] if all(p in parts for parts in split.values())] if names else []
    labels = {n: CONFIG_SEPARATOR.join(p for p in parts if p not in common) for n, parts in split.items()}
    if len(names) < 2 or not all(labels.values()):
        return "", {n: n for n in names}
    return CONFIG_SEPARATOR.join(common), labels


CHUNKER_PRESETS = {"sentence": ChunkingConfig("sentence", 300, 120), "fixed": ChunkingConfig("fixed", 300, 50),
                   "window": ChunkingConfig("window", window=4, stride=2)}
KB_NAME_LIMIT = 64  # Store.create_kb's limit on knowledge-base names
VARIANT_PREFIX = "~评测~"  # names starting with "~" are hidden from the KB pickers


def variant_name(kb: KnowledgeBase, config) -> str:
    """The hidden KB name for `kb` re-chunked with `config`: short and valid whatever the source's
    name, stable when the source is renamed, and unique per (source KB id, chunking config) through
    a hash of both."""
    identity = json.dumps({"kb": kb.id, "chunking": config.to_dict()}, sort_keys=True)
    name = f"{VARIANT_PREFIX}{kb.id}~{config.strategy}~{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    return name[:KB_NAME_LIMIT]  # ~35 characters: the limit never cuts into the hash


def chunker_variant(lib: Library, kb: KnowledgeBase, config, progress=None) -> KnowledgeBase:
    """A hidden copy of `kb` re-chunked with `config` (for comparing chunkers in an evaluation).

    Re-chunks each ready document's stored text with its stored page spans (never re-parses it, so
    PDFs and DOCX keep their text, offsets and pages); embeddings of unchanged text come from the
    cache. Built once and reused while the source's documents and embedding model are unchanged;
    documents switched off in the source are switched off in the copy. A document that cannot be
    re-chunked or embedded raises a WendaoError naming it, rather than dropping out.
    """
    docs = [d for d in lib.store.list_documents(kb.id) if d.status == "ready"]
    model = lib.embedding_model(kb)
    signature = model + ":" + ",".join(sorted(d.id for d in docs))
    variant = lib.kb(variant_name(kb, config), create=True)
    if lib.store.get_kb(variant.id).settings.get("source_signature") != signature:
        for d in lib.store.list_documents(variant.id):
            lib.delete_document(variant, d.id)
        lib.store.update_kb_settings(variant.id, embedding_model=model, hidden=True, source_kb=kb.id,
                                     source_signature=None)
        if progress:
            progress(0, len(docs))  # the documents to re-chunk, before the first (which may take seconds)
        for i, d in enumerate(docs, start=1):
            _copy_rechunked(lib, kb, variant, d, config)
            if progress:
                progress(i, len(docs))
        lib.store.update_kb_settings(variant.id, source_signature=signature)
    copies = {d.id: d for d in lib.store.list_documents(variant.id)}
    for d in docs:
        if d.id in copies and copies[d.id].enabled != d.enabled:
            lib.set_enabled(variant, d.id, d.enabled)
    return lib.store.get_kb(variant.id)


def _copy_rechunked(lib: Library, source: KnowledgeBase, variant: KnowledgeBase, doc, config) -> None:
    """Index `doc`'s stored text and page spans into `variant`, chunked with `config`, vectors included
    (ingest leaves a document keyword-only when embedding fails; a comparison needs both halves)."""
    from services.index.ingest import complete_pending_vectors, index_parsed
    from services.documents.parsing import ParsedDocument

    parsed = ParsedDocument(doc.filename, lib.store.document_text(source.id, doc.id),
                            lib.store.page_spans(source.id, doc.id), doc.skipped_pages, encoding=doc.encoding)
    try:
        index_parsed(lib, variant, parsed, doc.id, doc.size, config)
        if lib.store.get_document(variant.id, doc.id).dense_state == "pending":
            complete_pending_vectors(lib, variant, doc.id)  # one retry of the embedding stage
        if lib.store.get_document(variant.id, doc.id).dense_state == "pending":
            raise errors.WendaoError("向量未写入。")
    except Exception as exc:  # noqa: BLE001 - any failure names the document, in Chinese
        reason = exc.message_zh if isinstance(exc, errors.WendaoError) else f"内部错误（{type(exc).__name__}）"
        raise errors.WendaoError(f"按新设置切分文档「{doc.filename}」失败：{reason}") from exc
