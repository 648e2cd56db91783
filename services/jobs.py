"""The handlers of every kind of long work (services.worker runs them; the core submits them).

Each handler takes a services.worker.JobContext, reports progress through it, checks for
cancellation between steps where the work can stop cleanly, and returns the job's result dict.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from services import errors
from services.documents.chunking import ChunkingConfig
from services.worker import Cancelled, JobContext, handler


@handler("ingest")
def ingest(ctx: JobContext) -> dict:
    """Index one uploaded file (its bytes under <data>/uploads/)."""
    from services.index.ingest import ingest_bytes

    try:
        data = Path(ctx.path).read_bytes()
    except (OSError, TypeError):
        raise errors.WendaoError("上传的文件已不存在。") from None
    config = ChunkingConfig(**{k: v for k, v in ctx.params.items() if k in ChunkingConfig.__dataclass_fields__})
    result = ingest_bytes(ctx.lib, ctx.kb, data, ctx.name, config,
                          ctx.progress)
    return result.to_dict()


@handler("vectors")
def vectors(ctx: JobContext) -> dict:
    """A keyword-only document's vectors (left by a crash or a failed embedding); `path` holds its id."""
    from services.index.ingest import complete_pending_vectors

    return {"embedded": complete_pending_vectors(ctx.lib, ctx.kb, ctx.path, ctx.progress)}


@handler("reembed")
def reembed(ctx: JobContext) -> dict:
    """Switch the KB's embedding model: embed every chunk into a new collection, then flip to it."""
    from services.index.reembed import reembed as run

    def progress(done: int, total: int) -> None:
        ctx.check_cancelled()  # build_dense drops the half-built collection
        ctx.progress("embed", done, total)

    n = run(ctx.lib, ctx.kb, ctx.params["model"], progress)
    return {"chunks": n, "model": ctx.params["model"]}


@handler("reindex")
def reindex(ctx: JobContext) -> dict:
    """Rebuild BM25 terms and the dense collection from SQLite."""
    from services.index.maintenance import reindex as run

    return run(ctx.lib, ctx.kb, ctx.progress)


@handler("rechunk")
def rechunk(ctx: JobContext) -> dict:
    """Re-split one document with new settings (the old version stays searchable until the swap)."""
    from services.index.ingest import rechunk_document

    config = ChunkingConfig(**ctx.params["config"])
    return rechunk_document(ctx.lib, ctx.kb, ctx.params["doc_id"], config, ctx.progress).to_dict()


@handler("optimize")
def optimize(ctx: JobContext) -> dict:
    """Merge segments and build the HNSW graph of the dense index."""
    ctx.progress("optimize", 0, 1, force=True)
    ctx.lib.optimize(ctx.kb)
    return {"chunks": ctx.lib.store.count_chunks(ctx.kb.id)}


@handler("sample")
def sample(ctx: JobContext) -> dict:
    """Index the bundled sample documents into the KB (the 示例 knowledge base)."""
    from services.index.ingest import ingest_paths
    from services.tuning.evaluation import sample_documents

    files = sample_documents()

    def on_file(i, n, _result):
        ctx.check_cancelled()
        ctx.progress("files", i, n, force=True)

    report = ingest_paths(ctx.lib, ctx.kb, files, ChunkingConfig(), on_file)
    return {"documents": report.documents, "skipped": len(report.skipped), "chunks": report.chunks}


@handler("evaluate")
def evaluate(ctx: JobContext) -> dict:
    """Run a question set over chunker x mode x rerank combinations (services.tuning.evaluation)."""
    from services.index.kb_settings import chunking_config, retrieval_settings
    from services.search.retrieval import MODES
    from services.tuning.evaluation import (CHUNKER_NAMES, CHUNKER_PRESETS, MATCH_RULE_ZH, EvalConfig,
                                            chunker_variant, evaluate, excluded_zh, nothing_to_score_zh,
                                            parse_questions, rows_as_dicts, split_for_kb)

    lib, kb, p = ctx.lib, ctx.kb, ctx.params
    parts = split_for_kb(lib, kb, parse_questions(p["lines"])[: p.get("limit") or None])
    questions = parts["scored"]
    if not questions:
        raise errors.WendaoError(nothing_to_score_zh(parts))
    base = replace(retrieval_settings(lib, kb), **p.get("overrides", {}))
    combos = list(itertools.product(p["chunkers"], p["modes"], p["reranks"]))
    summaries, rows = {}, []
    for i, (chunker, mode, rerank) in enumerate(combos):
        ctx.check_cancelled()
        target = kb
        if chunker != "current" and CHUNKER_PRESETS[chunker] != chunking_config(lib, kb):
            def rechunked(done, total, i=i, chunker=chunker):  # per document (it stood at 「6/12 种配置」 for 18 s)
                ctx.check_cancelled()
                ctx.progress("variant", done, total, force=done == 0,
                             config=f"{CHUNKER_NAMES[chunker]}；第 {i + 1}/{len(combos)} 种配置")

            rechunked(0, 0)
            target = chunker_variant(lib, kb, CHUNKER_PRESETS[chunker], rechunked)
        name = (f"{mode}{'+rerank' if rerank else ''}" if p.get("names") == "mode" else
                f"{CHUNKER_NAMES[chunker]} · {MODES[mode]} · {'重排' if rerank else '不重排'}")
        config = EvalConfig(name, mode, rerank, replace(base, mode=mode, rerank=rerank))

        def progress(done, total, i=i, name=name):
            if ctx.cancelled():
                raise Cancelled()
            ctx.progress("questions", i * total + done, len(combos) * total, config=name)

        found, config_rows = evaluate(lib, target, questions, [config], progress)
        summaries.update(found)
        rows.extend(rows_as_dicts(config_rows))
    return {"summaries": summaries, "rows": rows, "questions": len(questions),
            "excluded": {k: len(parts[k]) for k in ("yesno", "unanswerable", "missing", "not_found")},
            "missing_docs": parts["missing_docs"], "match_rule": MATCH_RULE_ZH, "excluded_zh": excluded_zh(parts),
            "settings": asdict(base) | {"combos": [list(c) for c in combos]}}


@handler("finetune")
@handler("finetune_reranker")
def finetune(ctx: JobContext) -> dict:
    """Fine-tune the KB's embedding model (services.tuning.finetune) or train a reranker on the KB
    (services.tuning.rerank_training, kind finetune_reranker); the losses and time left go to the row."""
    from services.tuning.finetune import Cancelled as TrainingCancelled
    from services.tuning.finetune import FinetuneSettings
    from services.tuning.finetune import finetune as run

    if ctx.params.get("kind") == "reranker":
        from services.tuning.rerank_training import RerankSettings, finetune_reranker as run

        settings = RerankSettings(**ctx.params.get("settings", {}))
    else:
        settings = FinetuneSettings(**{k: tuple(v) if k == "negatives_range" else v
                                       for k, v in ctx.params.get("settings", {}).items()})
    state = {"stage": "data", "losses": [], "step": 0, "steps": 0, "eta": None, "started": time.time(),
             "finished": {}, "share": 0.0}
    plan = load = None
    if ctx.params.get("kind") != "reranker":  # the time per stage planned (services.tuning.finetune.progress_of)
        from services.tuning.finetune import estimate, share_done

        planned = estimate(ctx.lib, ctx.kb, settings)
        plan, load = planned["stages"], planned["load"]
        state["steps"] = planned["steps"]  # the bar moves through loading and the first step by it

    def save():
        if plan:  # the share shown never goes back (the page takes the larger of this and its own)
            share = share_done(state["stage"], time.time() - state["started"], plan, state["step"], state["steps"],
                               load)
            state["share"] = max(state["share"], share)
        ctx.progress(state["stage"], state["step"], state["steps"], force=True, losses=state["losses"],
                     eta_s=state["eta"], plan=plan, load=load, stage_started=state["started"],
                     stage_seconds=state["finished"], share=state["share"])

    def on_stage(stage):
        now = time.time()
        if stage != state["stage"]:  # this run's measured pace (services.tuning.finetune.pace)
            state["finished"][state["stage"]] = round(now - state["started"], 2)
        state.update(stage=stage, started=now)
        save()

    def on_step(p):
        state.update(losses=p.losses, step=p.step, steps=p.steps, eta=p.eta_s)
        save()

    llm = _finetune_llm(ctx) if settings.method == "llm" else None
    try:
        return run(ctx.lib, ctx.kb, ctx.params["name"], settings, on_step, ctx.cancelled, llm, on_stage=on_stage)
    except TrainingCancelled:
        raise Cancelled() from None


def _finetune_llm(ctx: JobContext):
    """The LLM that writes pseudo-queries: the server's or the KB's saved endpoint (a key typed in a
    browser session is never written to a job row, so it cannot reach the worker)."""
    from services.answers.llm import LLMClient
    from services.index.kb_settings import llm_settings

    settings = llm_settings(ctx.lib, ctx.kb)
    if not settings.configured:
        raise errors.LLMError("没有可供后台任务使用的大模型接口（需在服务器配置，或在设置页保存接口地址和模型名）。")
    return LLMClient(settings, ctx.lib.llm_refusals)


def chunking_params(config: ChunkingConfig) -> dict:
    """A chunking config as job params (what `ingest` reads back)."""
    return json.loads(json.dumps(config.to_dict()))
