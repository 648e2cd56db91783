"""`python -m services {ingest,chunks,search,ask,eval,kbs,reindex,check,finetune}` — the same code the UI runs.

Human-readable output by default; `--json` prints machine-readable JSON (stable fields, see the
README). Progress goes to stderr. Exit code 1 on a user error (message in Chinese on stderr);
`ingest` exits 1 when any file failed (unless --allow-failures), `check` exits 1 on any mismatch.
While another process (the app) owns the data dir, read commands work read-only and write commands
(ingest, reindex) are refused before touching anything (services.index.ownership).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from services import errors
from services.documents.chunking import STRATEGIES, ChunkingConfig
from services.config import LLMSettings, RetrievalSettings


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _library():
    from services.index.library import open_library

    return open_library()


def _retrieval_settings(args, lib, kb) -> RetrievalSettings:
    """The KB's saved retrieval settings (as the UI uses them) with the command-line overrides."""
    from services.index.library import retrieval_settings

    overrides = {"mode": getattr(args, "mode", None), "rerank": getattr(args, "rerank", False) or None,
                 "reranker_model": getattr(args, "reranker", None), "top_k": getattr(args, "top_k", None)}
    return replace(retrieval_settings(lib, kb), **{k: v for k, v in overrides.items() if v})


def cmd_ingest(args) -> int:
    from services.index.ingest import ingest_paths

    lib = _library()
    kb = lib.kb(args.kb, create=True)
    config = ChunkingConfig(args.chunker, args.chunk_size, args.overlap, args.window, args.stride, args.unit)

    def on_file(i, n, r):
        detail = f"{r.chunks} 个片段" if r.status in ("ok", "replaced") else r.reason
        print(f"[{i}/{n}] {r.file}: {r.status} — {detail}", file=sys.stderr)

    def progress(name, stage, done, total):
        if args.verbose:
            print(f"  {name}: {stage} {done}/{total}", file=sys.stderr)

    report = ingest_paths(lib, kb, args.paths, config, on_file, progress)
    from services.index.library import OPTIMIZE_FROM_CHUNKS

    if report.documents and lib.store.count_chunks(kb.id) >= OPTIMIZE_FROM_CHUNKS:
        started = time.perf_counter()
        print("优化索引（构建 HNSW）…", file=sys.stderr)
        lib.optimize(kb)
        print(f"索引优化完成，用时 {time.perf_counter() - started:.0f} 秒", file=sys.stderr)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"文档 {report.documents} 个，片段 {report.chunks} 个，跳过 {len(report.skipped)} 个，用时 {report.seconds:.1f} 秒")
        for s in report.skipped:
            print(f"  跳过 {s['file']}: {s['reason']}")
    failed = [r for r in report.results if r.status == "failed"]
    if failed and not args.allow_failures:
        print(f"错误：{len(failed)} 个文件索引失败（加 --allow-failures 可在有失败时仍以 0 退出）", file=sys.stderr)
        return 1
    return 0


def cmd_chunks(args) -> int:
    lib = _library()
    kb = lib.kb(args.kb)
    docs = [d for d in lib.store.find_by_filename(kb.id, args.doc) if d.status == "ready"]
    if not docs:
        raise errors.DocumentNotFound(f"知识库「{args.kb}」里没有文档「{args.doc}」。")
    chunks = lib.store.chunks_of(kb.id, docs[0].id)
    rows = [{"ordinal": c.ordinal, "text": c.text, "start": c.start, "end": c.end,
             "pages": [c.page_start, c.page_end], "strategy": c.strategy, "params": c.params} for c in chunks]
    if args.json:
        _print_json({"doc": args.doc, "chunks": rows})
    else:
        for r in rows:
            print(f"#{r['ordinal']} [{r['start']},{r['end']}) 页 {r['pages'][0]}-{r['pages'][1]}: {r['text'][:60]!r}")
    return 0


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cmd_search(args) -> int:
    from services.search.retrieval import Retriever

    lib = _library()
    kb = lib.kb(args.kb)
    retriever = Retriever(lib, kb, _retrieval_settings(args, lib, kb))
    queries = ([(str(q.get("id")), q["question"]) for q in _read_jsonl(args.queries)] if args.queries
               else [(None, " ".join(args.query))])
    if not queries or not queries[0][1].strip():
        raise errors.WendaoError("请输入查询内容。")
    for qid, text in queries:
        start = time.perf_counter()
        result = retriever.search(text)
        ms = (time.perf_counter() - start) * 1000
        if args.json or args.queries:
            out = {"id": qid, "ms": round(ms, 2), "hits": [h.to_json() for h in result.hits]}
            if not args.queries:
                out.update(query=text, terms=result.terms, timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()})
            _print_json(out)
        else:
            print(f"查询：{text}  （{ms:.0f} ms，词项：{' / '.join(result.terms)}）")
            for i, h in enumerate(result.hits, start=1):
                scores = " ".join(f"{k}={v:.3f}" for k, v in h.scores.items())
                print(f"{i}. {h.doc} 第{h.page}页 [{h.start},{h.end}) {scores}\n   {h.text[:120]!r}")
    return 0


def cmd_eval(args) -> int:
    from services.tuning.evaluation import EvalConfig, evaluate, load_questions

    lib = _library()
    kb = lib.kb(args.kb)
    questions = load_questions(args.questions)
    if args.limit:
        questions = questions[: args.limit]
    base = _retrieval_settings(args, lib, kb)
    configs = [EvalConfig(m + ("+rerank" if args.rerank else ""), m, args.rerank, replace(base, mode=m))
               for m in args.modes.split(",")]
    summaries, _ = evaluate(lib, kb, questions, configs,
                            lambda d, t: print(f"\r评测 {d}/{t}", end="", file=sys.stderr) if d % 50 == 0 or d == t else None)
    print(file=sys.stderr)
    if args.json:
        _print_json({"questions": len(questions), "results": summaries})
    else:
        keys = list(next(iter(summaries.values())))
        print("mode".ljust(16) + "".join(k.rjust(18) for k in keys))
        for name, s in summaries.items():
            print(name.ljust(16) + "".join(f"{s[k]:18.4f}" if isinstance(s[k], float) else f"{s[k]:18}" for k in keys))
    return 0


def cmd_ask(args) -> int:
    from services.answers.answer import Conversation, answer_question, answer_questions_batch
    from services.search.retrieval import Retriever

    lib = _library()
    kb = lib.kb(args.kb)
    retriever = Retriever(lib, kb, _retrieval_settings(args, lib, kb))
    llm = LLMSettings.from_env()
    if args.no_llm:
        llm = replace(llm, model="")
    if args.questions:
        from services.tuning.evaluation import load_questions

        questions = load_questions(args.questions)[: args.limit or None]
        report = answer_questions_batch(retriever, llm, questions)
        _print_json(report) if args.json else print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    question = " ".join(args.question).strip()
    if not question:
        raise errors.WendaoError("请输入问题。")
    answer = answer_question(retriever, llm, question, Conversation())
    if args.json:
        _print_json(answer.to_json())
    else:
        print(answer.text)
        for c in answer.citations:
            mark = "" if c.supported else "（未被支持）"
            print(f"[{c.n}] {c.doc} 第{c.page}页{mark}：{c.quote}")
    return 0


def cmd_kbs(args) -> int:
    lib = _library()
    rows = [{"name": kb.name, "documents": len(lib.store.list_documents(kb.id)),
             "chunks": lib.store.count_chunks(kb.id)} for kb in lib.store.list_kbs()]
    _print_json(rows) if args.json else [print(f"{r['name']}: {r['documents']} 文档, {r['chunks']} 片段") for r in rows]
    return 0


def cmd_reindex(args) -> int:
    from services.index.maintenance import reindex

    lib = _library()
    kb = lib.kb(args.kb)

    def progress(stage, done, total):
        if args.verbose:
            print(f"  {stage} {done}/{total}", file=sys.stderr)

    result = reindex(lib, kb, progress)
    if args.json:
        _print_json(result)
    else:
        print(f"已重建知识库「{kb.name}」的索引：{result['chunks']} 个片段，用时 {result['seconds']:.1f} 秒")
    return 0


def cmd_check(args) -> int:
    from services.index.maintenance import check

    lib = _library()
    kb = lib.kb(args.kb)
    report = check(lib, kb)
    if args.json:
        _print_json(report)
    else:
        state = "一致" if report["ok"] else "不一致"
        print(f"知识库「{kb.name}」：SQLite {report['sqlite']['chunks']} 个片段；索引与 SQLite {state}")
        for name, r in report["indexes"].items():
            print(f"  {name}: {r['points']} 个点，缺失 {r['missing']}，孤立 {r['orphans']}")
        for p in report["problems"]:
            print(f"  问题：{p}")
    return 0 if report["ok"] else 1


def cmd_finetune(args) -> int:
    from services.tuning.finetune import FinetuneSettings, finetune

    lib = _library()
    lib.require_owner()
    kb = lib.kb(args.kb)
    given = {"epochs": args.epochs, "max_pairs": args.max_pairs, "batch_size": args.batch_size}
    if args.kind == "reranker":
        return _finetune_reranker(args, lib, kb, {k: v for k, v in given.items() if v is not None})
    settings = FinetuneSettings(**{k: v for k, v in given.items() if v is not None})

    def on_step(p):
        if args.verbose or p.step == p.steps:
            eta = f"，预计还需 {p.eta_s:.0f} 秒" if p.eta_s else ""
            print(f"  训练 {p.step}/{p.steps}，loss {p.losses[-1]:.4f}{eta}", file=sys.stderr)

    card = finetune(lib, kb, args.name, settings, on_step, on_stage=lambda s: print(f"[{s}]", file=sys.stderr))
    def table(before, after):
        return [{"retrieval": kind, "model": label, **{k: round(v, 4) for k, v in metrics[kind].items()}}
                for kind in ("dense", "hybrid") for metrics, label in ((before, "base"), (after, args.name))]

    rows = table(card["before"], card["after"])
    questions = card.get("questions")  # the KB's saved question set, when it has one
    question_rows = table(questions["before"], questions["after"]) if questions else None
    if args.json:
        report = {"name": card["name"], "path": card["path"], "base_model": card["base_model"],
                  "pairs": card["pairs"], "better": card["better"], "seconds": card["seconds"],
                  "before": card["before"], "after": card["after"], "table": rows, "better_on": card["better_on"]}
        if questions:
            report.update(questions=questions, questions_table=question_rows)
        _print_json(report)
    else:
        print(f"微调完成：{card['path']}（{card['seconds']:.0f} 秒，训练查询 {card['pairs']['train']} 条，"
              f"留出 {card['pairs']['heldout']} 条）")
        blocks = [("留出的生成查询", rows)]
        if questions:
            blocks.append((f"知识库的问题集（{questions['n']} 题）", question_rows))
        for title, block in blocks:
            print(f"{title}：")
            for r in block:
                print(f"  {r['retrieval']:6} {r['model']:24} R@1 {r['recall@1']:.3f}  R@5 {r['recall@5']:.3f}  "
                      f"R@10 {r['recall@10']:.3f}  MRR@10 {r['mrr@10']:.3f}")
        judged = "（按知识库的问题集判断）" if questions else ""
        print(("新模型更好，可在设置中切换到它。" if card["better"] else "新模型没有更好，不建议切换。") + judged)
    return 0


def _finetune_reranker(args, lib, kb, given: dict) -> int:
    """`finetune --kind reranker`: train a reranker on the KB (services.tuning.rerank_training) and print
    the before/after table with reranking off and on."""
    from services.tuning.rerank_training import SET_ZH, RerankSettings, finetune_reranker, result_rows

    def on_step(p):
        if args.verbose or p.step == p.steps:
            eta = f"，预计还需 {p.eta_s:.0f} 秒" if p.eta_s else ""
            print(f"  训练 {p.step}/{p.steps}，loss {p.losses[-1]:.4f}{eta}", file=sys.stderr)

    card = finetune_reranker(lib, kb, args.name, RerankSettings(**given), on_step,
                             on_stage=lambda s: print(f"[{s}]", file=sys.stderr))
    rows = result_rows(card)
    if args.json:
        _print_json({k: card[k] for k in ("name", "kind", "path", "base_model", "pairs", "results", "better",
                                          "better_on", "applied", "added_ms_p50", "seconds")} | {"table": rows})
        return 0
    print(f"重排模型训练完成：{card['path']}（{card['seconds']:.0f} 秒，训练查询 {card['pairs']['train']} 条）")
    for r in rows:
        print(f"  {SET_ZH[r['set']]}（{r['questions']} 题） 重排{'开' if r['rerank'] == 'on' else '关'}  "
              f"R@1 {r['recall@1']:.3f}  R@5 {r['recall@5']:.3f}  MRR@10 {r['mrr@10']:.3f}  "
              f"1000字内答案 {r['coverage@1000chars']:.3f}  p50 {r['p50_ms']:.0f} ms")
    if card["applied"]:
        print("重排后更好：该知识库已默认开启重排并使用这个模型。")
    else:
        print("重排后没有更好，未启用（不建议使用这个模型）。")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services", description="问道 Wendao 命令行")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="索引文件或文件夹")
    s.add_argument("--kb", required=True)
    s.add_argument("--chunker", choices=STRATEGIES, default="sentence")
    s.add_argument("--chunk-size", type=int, default=300)
    s.add_argument("--overlap", type=int, default=120)
    s.add_argument("--window", type=int, default=4)
    s.add_argument("--stride", type=int, default=2)
    s.add_argument("--unit", choices=("chars", "tokens"), default="chars")
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")
    s.add_argument("--allow-failures", action="store_true", help="有文件失败时仍以 0 退出")
    s.add_argument("paths", nargs="+")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("chunks", help="列出文档的片段")
    s.add_argument("--kb", required=True)
    s.add_argument("--doc", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_chunks)

    for name, func, help_ in (("search", cmd_search, "检索"), ("ask", cmd_ask, "问答"), ("eval", cmd_eval, "评测")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--kb", required=True)
        s.add_argument("--json", action="store_true")
        s.add_argument("--rerank", action="store_true")
        s.add_argument("--reranker")
        s.add_argument("--top-k", type=int)
        s.set_defaults(func=func)
        if name == "search":
            s.add_argument("--mode", choices=("bm25", "dense", "hybrid"))
            s.add_argument("--queries")
            s.add_argument("query", nargs="*")
        elif name == "ask":
            s.add_argument("--mode", choices=("bm25", "dense", "hybrid"))
            s.add_argument("--questions")
            s.add_argument("--limit", type=int)
            s.add_argument("--no-llm", action="store_true", help="不调用大模型，只给摘录式回答")
            s.add_argument("question", nargs="*")
        else:
            s.add_argument("--questions", required=True)
            s.add_argument("--modes", default="bm25,dense,hybrid")
            s.add_argument("--limit", type=int)

    s = sub.add_parser("kbs", help="列出知识库")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_kbs)

    s = sub.add_parser("reindex", help="从 SQLite 重建知识库的 BM25 与向量索引")
    s.add_argument("--kb", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_reindex)

    s = sub.add_parser("finetune", help="用知识库自己的文档微调向量模型（或训练重排模型），输出前后对比")
    s.add_argument("--kb", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--kind", choices=("embedder", "reranker"), default="embedder",
                   help="embedder：微调向量模型（默认）；reranker：训练重排模型")
    s.add_argument("--epochs", type=int, default=None, help="训练轮数（默认同微调页）")
    s.add_argument("--max-pairs", type=int, default=None, help="最多训练查询数（默认同微调页）")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("check", help="核对索引与 SQLite 是否一致（不一致时退出码为 1）")
    s.add_argument("--kb", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except errors.WendaoError as exc:
        print(f"错误：{exc.message_zh}", file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError) as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 1
    finally:
        from services.index.vectors import close_all

        close_all()
