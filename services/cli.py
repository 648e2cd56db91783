"""`wendao {serve,ingest,chunks,search,ask,eval,kbs,reindex,check,finetune}` (also `python -m services`):
an adapter over the application core (services.workspace), the same use cases the UI runs.

Human-readable output by default; `--json` prints machine-readable JSON (stable fields, see the
README). Progress goes to stderr. Exit code 1 on a user error (message in Chinese on stderr);
`ingest` exits 1 when any file failed (unless --allow-failures), `check` exits 1 on any mismatch.
While another process (the app) owns the data dir, read commands work read-only and write commands
(ingest, reindex) are refused before touching anything (services.index.ownership).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from dataclasses import replace

from services import errors
from services.arguments import ArgumentParser
from services.documents.chunking import STRATEGIES, ChunkingConfig
from services.documents.pageview import has_pages, page_label, public_pages
from services.config import RetrievalSettings
from services.documents.text import display_name as shown  # untrusted names: controls/bidi made visible
from services.documents.text import display_text  # document text: line breaks as spaces, controls made visible


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _session():
    """The core for the person at this terminal: the local principal (whoever can run this command
    can read the data dir anyway); jobs run in this process, not in a background thread."""
    from services.workspace import open_workspace

    return open_workspace(background=False).session()


def _kb(args, need: str = "viewer"):
    return _session().kb(args.kb, need)


def _retrieval_settings(args, kb) -> RetrievalSettings:
    """The KB's saved retrieval settings (as the UI uses them) with the command-line overrides."""
    return kb.retrieval_settings(mode=getattr(args, "mode", None), rerank=getattr(args, "rerank", False) or None,
                                 reranker_model=getattr(args, "reranker", None), top_k=getattr(args, "top_k", None))


# Stages of the jobs the CLI runs with -v (reindex: services.index.maintenance; optimize: services.jobs).
JOB_STAGE_ZH = {"bm25": "重建关键词索引", "dense": "重建向量索引", "embed": "向量化", "optimize": "优化索引"}


def _run(kb, job_id: int, verbose: bool = False, label=None):
    """Run a queued job here (same handler as the app's worker); its result, or the job's Chinese
    failure reason as a WendaoError."""
    def listener(stage, done, total, extra):
        if verbose:
            print(f"  {label(stage) if label else JOB_STAGE_ZH.get(stage, stage)} {done}/{total}", file=sys.stderr)

    job = kb.run_now(job_id, listener)
    if job.status != "done":
        raise errors.WendaoError(job.result.get("reason") or f"任务未完成（{job.status}）。")
    return job.result


# An ingested file's outcome on its progress line (services.index.ingest.FileResult.status).
FILE_STATUS_ZH = {"ok": "完成", "replaced": "已替换旧版本", "duplicate": "重复，跳过", "failed": "失败"}


def cmd_ingest(args) -> int:
    from services.index.ingest import STAGE_ZH
    from services.index.library import OPTIMIZE_FROM_CHUNKS

    me = _session()
    try:
        kb = me.kb(args.kb, "editor")
    except errors.KnowledgeBaseNotFound:
        kb = me.create_kb(args.kb)
    config = ChunkingConfig(args.chunker, args.chunk_size, args.overlap, args.window, args.stride, args.unit)

    def on_file(i, n, r):
        detail = f"{r.chunks} 个片段" if r.status in ("ok", "replaced") else r.reason
        print(shown(f"[{i}/{n}] {r.file}：{FILE_STATUS_ZH.get(r.status, r.status)} — {detail}"), file=sys.stderr)

    def progress(name, stage, done, total):
        if args.verbose:
            print(f"  {shown(name)}：{STAGE_ZH.get(stage, stage)} {done}/{total}", file=sys.stderr)

    report = kb.ingest_paths(args.paths, config, on_file, progress)
    if report.documents and kb.info().chunks >= OPTIMIZE_FROM_CHUNKS:
        started = time.perf_counter()
        print("优化索引（构建 HNSW）…", file=sys.stderr)
        _run(kb, kb.optimize())
        print(f"索引优化完成，用时 {time.perf_counter() - started:.0f} 秒", file=sys.stderr)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"文档 {report.documents} 个，片段 {report.chunks} 个，跳过 {len(report.skipped)} 个，用时 {report.seconds:.1f} 秒")
        for s in report.skipped:
            print(shown(f"  跳过 {s['file']}: {s['reason']}"))
    failed = [r for r in report.results if r.status == "failed"]
    if failed and not args.allow_failures:
        print(f"错误：{len(failed)} 个文件索引失败（加 --allow-failures 可在有失败时仍以 0 退出）", file=sys.stderr)
        return 1
    return 0


def cmd_chunks(args) -> int:
    kb = _kb(args)
    docs = kb.find_documents(args.doc)
    if not docs:
        raise errors.DocumentNotFound(f"知识库「{args.kb}」里没有文档「{args.doc}」。")
    paged = has_pages(docs[0].filename)  # a TXT's chunks are all "page 1" inside: null here, as in search
    rows = [{"ordinal": c.ordinal, "text": c.text, "start": c.start, "end": c.end,
             "pages": [c.page_start, c.page_end] if paged else None, "strategy": c.strategy, "params": c.params}
            for c in kb.chunks(docs[0].id)]
    if args.json:
        _print_json({"doc": args.doc, "chunks": rows})
    else:
        for r in rows:
            where = f" {page_label(*r['pages'], doc=docs[0].filename)}" if paged else ""
            print(f"#{r['ordinal']} [{r['start']},{r['end']}){where}: {display_text(r['text'][:60])}")
    return 0


QUERIES_FORMAT = ('每行一个 JSON 对象：{"id": "q1", "question": "生活费是多少？"}（也可写 "query"；'
                  'id 可省略，省略时用行号）；空行跳过')


def read_queries(path: str) -> list[tuple[str, str]]:
    """`search --queries FILE`: (id, text) per non-blank line, each a JSON object with the query under
    "question" (the question-file field, so an eval question set works as it is) or "query", and an
    optional "id" (the line number when absent). A bad line is an InvalidQuestionFile naming its number."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise errors.InvalidQuestionFile(f"查询文件「{path}」不是 UTF-8 编码的文本。") from exc
    queries = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise errors.InvalidQuestionFile(f"查询文件第 {n} 行不是有效的 JSON。格式：{QUERIES_FORMAT}。") from exc
        if not isinstance(record, dict):
            raise errors.InvalidQuestionFile(f"查询文件第 {n} 行应是 JSON 对象（{{…}}）。格式：{QUERIES_FORMAT}。")
        text = record.get("question", record.get("query"))
        if not isinstance(text, str) or not text.strip():
            field = "question" if "question" in record else "query" if "query" in record else None
            problem = f"的 {field} 不是非空的文本" if field else "缺少 question（或 query）字段"
            raise errors.InvalidQuestionFile(f"查询文件第 {n} 行{problem}。格式：{QUERIES_FORMAT}。")
        queries.append((str(record.get("id", n)), text))
    if not queries:
        raise errors.InvalidQuestionFile(f"查询文件「{path}」里没有查询。格式：{QUERIES_FORMAT}。")
    return queries


def cmd_search(args) -> int:
    kb = _kb(args)
    settings = _retrieval_settings(args, kb)
    queries = read_queries(args.queries) if args.queries else [(None, " ".join(args.query))]
    if not queries or not queries[0][1].strip():
        raise errors.WendaoError("请输入查询内容。")
    retriever = kb.retriever(settings)  # one retriever for the whole query file (models loaded once)
    for qid, text in queries:
        start = time.perf_counter()
        result = retriever.search(text)
        ms = (time.perf_counter() - start) * 1000
        if args.json or args.queries:
            out = {"id": qid, "ms": round(ms, 2), "hits": public_pages([h.to_json() for h in result.hits])}
            if not args.queries:
                out.update(query=text, terms=result.terms, timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()})
            _print_json(out)
        else:
            print(f"查询：{text}  （{ms:.0f} ms，词项：{' / '.join(result.terms)}）")
            for i, h in enumerate(result.hits, start=1):
                scores = " ".join(f"{k}={v:.3f}" for k, v in h.scores.items())
                where = " ".join(filter(None, [shown(h.doc), page_label(h.page, doc=h.doc)]))
                print(f"{i}. {where} [{h.start},{h.end}) {scores}\n   {display_text(h.text[:120])}")
    return 0


def cmd_eval(args) -> int:
    kb = _kb(args)
    with open(args.questions, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    overrides = {"top_k": args.top_k, "reranker_model": args.reranker}
    job = kb.evaluate(lines, args.modes.split(","), [bool(args.rerank)], ["current"], args.limit,
                      overrides={k: v for k, v in overrides.items() if v}, names="mode")
    result = _run(kb, job, verbose=True, label=lambda stage: "评测")
    summaries = result["summaries"]
    if args.json:
        _print_json({"questions": result["questions"], "results": summaries})
    else:
        keys = list(next(iter(summaries.values())))
        print("mode".ljust(16) + "".join(k.rjust(18) for k in keys))
        for name, s in summaries.items():
            print(name.ljust(16) + "".join(f"{s[k]:18.4f}" if isinstance(s[k], float) else f"{s[k]:18}" for k in keys))
    return 0


def cmd_ask(args) -> int:
    kb = _kb(args)
    settings = _retrieval_settings(args, kb)
    llm = kb.llm_settings()  # the KB's endpoint, resolved as the chat page resolves it
    if args.no_llm:
        llm = replace(llm, model="")
    if args.questions:
        from services.tuning.evaluation import load_questions

        questions = load_questions(args.questions)[: args.limit or None]
        report = kb.answer_batch(questions, llm, settings)
        _print_json(report) if args.json else print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    conversation = None if args.conversation in (None, "new") else args.conversation
    stream = kb.ask(" ".join(args.question), conversation, settings=settings, llm=llm,
                    save=args.conversation is not None, start=True)
    answer = stream.finish()
    if args.json:
        _print_json({**public_pages(answer.to_json()),
                     **({"conversation_id": stream.conversation} if stream.conversation else {})})
    else:
        print(display_text(answer.text, keep_lines=True))
        from services.conversations import closest_passages

        for line in closest_passages(answer.to_json()).splitlines():  # what a refusal promises
            print(display_text(line))
        for c in answer.citations:
            mark = "" if c.supported else "（未核实）"
            print(f"[{c.n}] {shown(c.doc)} {page_label(c.page, doc=c.doc)}".rstrip() + f"{mark}：{display_text(c.quote)}")
        if stream.conversation:
            print(f"（对话 {stream.conversation}：继续追问请加 --conversation {stream.conversation}）", file=sys.stderr)
    return 0


def cmd_kbs(args) -> int:
    rows = [kb.to_json() for kb in _session().kbs()]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{shown(r['name'])} (#{r['id']}): {r['documents']} 文档, {r['chunks']} 片段")
    return 0


def cmd_reindex(args) -> int:
    kb = _kb(args, "editor")
    result = _run(kb, kb.reindex(), args.verbose)
    if args.json:
        _print_json(result)
    else:
        print(f"已重建知识库「{shown(kb.name)}」的索引：{result['chunks']} 个片段，用时 {result['seconds']:.1f} 秒")
    return 0


def cmd_check(args) -> int:
    kb = _kb(args)
    report = kb.check()
    if args.json:
        _print_json(report)
    else:
        state = "一致" if report["ok"] else "不一致"
        print(f"知识库「{shown(kb.name)}」：SQLite {report['sqlite']['chunks']} 个片段；索引与 SQLite {state}")
        for name, r in report["indexes"].items():
            print(f"  {name}: {r['points']} 个点，缺失 {r['missing']}，孤立 {r['orphans']}")
        for p in report["problems"]:
            print(shown(f"  问题：{p}"))
        if report["indexes"]["dense"].get("mode") == "cache":
            print("  （数据目录由另一个进程持有或不可写：向量按 SQLite 中缓存的向量核对）")
        if report["vectors_pending"]:
            print(shown(f"  向量未完成（暂时只能按关键词检索）的文档 {len(report['vectors_pending'])} 个："
                        + "、".join(report["vectors_pending"])))
            print("  运行网页应用（它会在后台补全）、重新导入这些文件，或运行 reindex 可补全。")
    if args.strict and report["vectors_pending"]:
        return 1
    return 0 if report["ok"] else 1


def cmd_finetune(args) -> int:
    from services.tuning.finetune import FinetuneSettings

    kb = _kb(args, "editor")
    given = {"epochs": args.epochs, "max_pairs": args.max_pairs, "batch_size": args.batch_size}
    given = {k: v for k, v in given.items() if v is not None}
    if args.kind == "reranker":
        return _finetune_reranker(args, kb, given)
    settings = FinetuneSettings(**given)
    seen = {"stage": None}

    def listener(stage, done, total, extra):
        if stage != seen["stage"]:
            seen["stage"] = stage
            print(f"[{stage}]", file=sys.stderr)
        if stage == "train" and total and extra.get("losses") and (args.verbose or done == total):
            eta = f"，预计还需 {extra['eta_s']:.0f} 秒" if extra.get("eta_s") else ""
            print(f"  训练 {done}/{total}，loss {extra['losses'][-1]:.4f}{eta}", file=sys.stderr)

    job = kb.run_now(kb.finetune(args.name, settings), listener)
    if job.status != "done":
        raise errors.WendaoError(job.result.get("reason") or f"微调未完成（{job.status}）。")
    card = job.result

    def table(before, after):
        return [{"retrieval": kind, "model": label, **{k: round(v, 4) for k, v in metrics[kind].items()}}
                for kind in ("dense", "hybrid") for metrics, label in ((before, "base"), (after, args.name))]

    rows = table(card["before"], card["after"])
    questions = card.get("questions")  # the KB's saved question set, when it has one
    question_rows = table(questions["before"], questions["after"]) if questions else None
    if args.json:
        report = {"name": card["name"], "path": card["path"], "base_model": card["base_model"],
                  "pairs": card["pairs"], "better": card["better"], "seconds": card["seconds"],
                  "before": card["before"], "after": card["after"], "table": rows, "better_on": card["better_on"],
                  "warning": kb.finetune_verdict(card)["warning"]}
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
        verdict = kb.finetune_verdict(card)  # the words 设置 and the 微调 page use, with the numbers and caveats
        caveats = "；".join(c for c in (verdict["caveats"]["heldout"], verdict["caveats"]["questions"]) if c)
        print(("新模型更好，可在设置中切换到它。" if card["better"] else f"新模型没有更好，不建议切换（{verdict['warning']}）。")
              + judged + (f"注意：{caveats}。" if caveats else ""))
    return 0


def _finetune_reranker(args, kb, given: dict) -> int:
    """`finetune --kind reranker`: train a reranker on the KB (services.tuning.rerank_training, as a job
    run here) and print the before/after table with reranking off and on."""
    from services.tuning.rerank_training import SET_ZH, RerankSettings, result_rows

    def listener(stage, done, total, extra):
        if stage == "train" and total and extra.get("losses") and (args.verbose or done == total):
            eta = f"，预计还需 {extra['eta_s']:.0f} 秒" if extra.get("eta_s") else ""
            print(f"  训练 {done}/{total}，loss {extra['losses'][-1]:.4f}{eta}", file=sys.stderr)

    job = kb.run_now(kb.finetune(args.name, RerankSettings(**given), kind="reranker"), listener)
    if job.status != "done":
        raise errors.WendaoError(job.result.get("reason") or f"训练未完成（{job.status}）。")
    card = job.result
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
    print("重排后更好：该知识库已默认开启重排并使用这个模型。" if card["applied"]
          else "重排后没有更好，未启用（不建议使用这个模型）。")
    return 0


def cmd_user(args) -> int:
    """Local accounts for team mode (WENDAO_AUTH=local): add, list, remove, passwd."""
    me = _session()
    if args.action in ("add", "passwd"):
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            import getpass

            password = getpass.getpass("密码（至少 8 个字符）：")
            if getpass.getpass("再输入一次：") != password:
                raise errors.WendaoError("两次输入的密码不一致。")
        if args.action == "passwd":
            me.set_password(args.name, password)
            print(f"已修改「{shown(args.name)}」的密码，其所有登录会话已失效。", file=sys.stderr)
            return 0
        user = me.add_user(args.name, password, args.admin)
        _print_json(user.to_json()) if args.json else print(f"已创建{'管理员' if user.admin else '用户'}「{user.name}」。")
    elif args.action == "list":
        users = [u.to_json() for u in me.users()]
        if args.json:
            _print_json(users)
        else:
            for u in users:
                print(f"{shown(u['name'])}{'（管理员）' if u['admin'] else ''}")
    else:
        me.remove_user(args.name)
        print(f"已删除用户「{shown(args.name)}」。", file=sys.stderr)
    return 0


def cmd_key(args) -> int:
    """API keys scoped to one KB: add (printed once), list, revoke."""
    me = _session()
    if args.action == "add":
        key = me.kb(args.kb, "owner").create_key(args.scope, args.name or "")
        if args.json:
            _print_json(key.to_json())
        else:
            print(key.key)
            print(f"（密钥 #{key.id}，知识库「{shown(key.kb)}」，权限 {key.scope}。只显示这一次，请妥善保存。）",
                  file=sys.stderr)
    elif args.action == "list":
        keys = me.kb(args.kb, "owner").keys() if args.kb else me.all_keys()
        names = {k.id: k.name for k in me.kbs()}
        rows = [{**k.to_json(), "kb": names.get(k.kb_id, k.kb_id)} for k in keys]
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                state = "已吊销" if r["revoked"] else ("从未使用" if not r["last_used"] else
                                                     time.strftime("最近使用 %Y-%m-%d %H:%M", time.localtime(r["last_used"])))
                print(f"#{r['id']} {r['prefix']}… 知识库「{shown(str(r['kb']))}」 {r['scope']} {state}")
    else:
        key = next((k for k in me.all_keys() if k.id == args.id), None)
        if key is None:
            raise errors.WendaoError("找不到这个密钥。")
        me.kb(key.kb_id, "owner").revoke_key(args.id)
        print(f"已吊销密钥 #{args.id}。", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    """Start the web app (pages and, in the same process, the HTTP API) with uvicorn."""
    from services.serving import serve

    return serve(args.address, args.port)


JSON_HELP = "输出 JSON（字段稳定，见 README）"
MODE_HELP = "检索方式：bm25 关键词，dense 向量，hybrid 两者合并（默认用知识库的设置）"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="wendao", description="问道 Wendao 命令行（也可用 python -m services）")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="索引文件或文件夹")
    s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    s.add_argument("--chunker", choices=STRATEGIES, default="sentence",
                   help="切分方式：fixed 按固定长度，sentence 按句子拼到 --chunk-size（默认），window 按 --window 句一窗滑动")
    s.add_argument("--chunk-size", type=int, default=300, metavar="N", help="每个片段最多多少（按 --unit 计；默认 %(default)s）")
    s.add_argument("--overlap", type=int, default=120, metavar="N",
                   help="相邻片段重叠多少（fixed、sentence；默认 %(default)s）")
    s.add_argument("--window", type=int, default=4, metavar="W", help="window 切分：每个片段几句（默认 %(default)s）")
    s.add_argument("--stride", type=int, default=2, metavar="S",
                   help="window 切分：每次向后移几句（不大于 --window；默认 %(default)s）")
    s.add_argument("--unit", choices=("chars", "tokens"), default="chars",
                   help="--chunk-size 的单位：chars 字符（默认），tokens 向量模型的词元（sentence 切分）")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument("-v", "--verbose", action="store_true", help="显示每个文件各阶段的进度")
    s.add_argument("--allow-failures", action="store_true", help="有文件失败时仍以 0 退出")
    s.add_argument("paths", nargs="+", metavar="文件或文件夹", help="要索引的文件或文件夹（文件夹内逐个读取，不跟随符号链接）")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("chunks", help="列出文档的片段")
    s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    s.add_argument("--doc", required=True, help="文档的文件名或 id")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_chunks)

    for name, func, help_ in (("search", cmd_search, "检索"), ("ask", cmd_ask, "问答"), ("eval", cmd_eval, "评测")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
        s.add_argument("--json", action="store_true", help=JSON_HELP)
        s.add_argument("--rerank", action="store_true", help="打开重排（默认用知识库的设置）")
        s.add_argument("--reranker", metavar="MODEL", help="重排模型（注册表名称、Hugging Face ID 或本地目录；默认用知识库的设置）")
        s.add_argument("--top-k", type=int, metavar="K",
                       help="返回（问答时交给回答）的段落数（默认用知识库的设置）" if name != "eval"
                       else "评测时检索的段落数（默认用知识库的设置）")
        s.set_defaults(func=func)
        if name == "search":
            s.add_argument("--mode", choices=("bm25", "dense", "hybrid"), help=MODE_HELP)
            s.add_argument("--queries", metavar="FILE",
                           help="批量检索：从 JSONL 文件读取查询，" + QUERIES_FORMAT
                                + "；每个查询输出一行 JSON {\"id\",\"ms\",\"hits\"}")
            s.add_argument("query", nargs="*", metavar="查询", help="要检索的文字（不用 --queries 时）")
        elif name == "ask":
            s.add_argument("--mode", choices=("bm25", "dense", "hybrid"), help=MODE_HELP)
            s.add_argument("--questions", metavar="FILE",
                           help="批量问答：问题集 JSONL（与 eval 相同），输出含金答案率、拒答率、引用准确率")
            s.add_argument("--limit", type=int, metavar="N", help="只用问题集的前 N 个问题")
            s.add_argument("--no-llm", action="store_true", help="不调用大模型，只给摘录式回答")
            s.add_argument("--conversation", metavar="ID",
                           help="在保存的对话 ID 中继续提问（追问沿用该对话的文档；ID 还不存在时以此 ID 新建，new 表示随机 ID），"
                                "并保存这一轮")
            s.add_argument("question", nargs="*", metavar="问题", help="要问的问题（不用 --questions 时）")
        else:
            s.add_argument("--questions", required=True, metavar="FILE",
                           help='问题集 JSONL：每行 {"question","doc_file","answer"}，或用 "answer_spans" 给出精确位置')
            s.add_argument("--modes", default="bm25,dense,hybrid",
                           help="要比较的检索方式，逗号分隔（默认 %(default)s）")
            s.add_argument("--limit", type=int, metavar="N", help="只用问题集的前 N 个问题")

    s = sub.add_parser("kbs", help="列出知识库")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_kbs)

    s = sub.add_parser("reindex", help="从 SQLite 重建知识库的 BM25 与向量索引")
    s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument("-v", "--verbose", action="store_true", help="显示各阶段的进度")
    s.set_defaults(func=cmd_reindex)

    s = sub.add_parser("finetune", help="用知识库自己的文档微调向量模型（或训练重排模型），输出前后对比")
    s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    s.add_argument("--name", required=True, help="新模型的名称（保存在 数据目录/models/<名称>/）")
    s.add_argument("--kind", choices=("embedder", "reranker"), default="embedder",
                   help="embedder：微调向量模型（默认）；reranker：训练重排模型")
    s.add_argument("--epochs", type=int, default=None, help="训练轮数（默认同微调页）")
    s.add_argument("--max-pairs", type=int, default=None, help="最多训练查询数（默认同微调页）")
    s.add_argument("--batch-size", type=int, default=None, help="每批训练查询数（默认同微调页）")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument("-v", "--verbose", action="store_true", help="显示每一步训练的损失和剩余时间")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("user", help="管理团队模式的本地账号（add / list / remove / passwd）")
    users = s.add_subparsers(dest="action", required=True)
    u = users.add_parser("add", help="创建用户")
    u.add_argument("name", metavar="用户名", help="新用户的用户名")
    u.add_argument("--admin", action="store_true", help="管理员")
    u.add_argument("--password-stdin", action="store_true", help="从标准输入读取密码（一行）")
    u.add_argument("--json", action="store_true", help=JSON_HELP)
    u = users.add_parser("list", help="列出用户")
    u.add_argument("--json", action="store_true", help=JSON_HELP)
    u = users.add_parser("remove", help="删除用户")
    u.add_argument("name", metavar="用户名", help="要删除的用户")
    u = users.add_parser("passwd", help="修改密码（该用户的所有登录会话随之失效）")
    u.add_argument("name", metavar="用户名", help="要改密码的用户")
    u.add_argument("--password-stdin", action="store_true", help="从标准输入读取密码（一行）")
    s.set_defaults(func=cmd_user, json=False)

    s = sub.add_parser("key", help="管理知识库的 API 密钥（add / list / revoke）")
    keys = s.add_subparsers(dest="action", required=True)
    k = keys.add_parser("add", help="创建密钥（只显示一次）")
    k.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    k.add_argument("--scope", choices=("read", "write"), required=True,
                   help="read：只能提问、检索；write：还能上传、删除文档")
    k.add_argument("--name", help="备注")
    k.add_argument("--json", action="store_true", help=JSON_HELP)
    k = keys.add_parser("list", help="列出密钥")
    k.add_argument("--kb", help="只列这个知识库的密钥（默认列出你管理的全部密钥）")
    k.add_argument("--json", action="store_true", help=JSON_HELP)
    k = keys.add_parser("revoke", help="吊销密钥")
    k.add_argument("id", type=int, metavar="编号", help="密钥编号（key list 中的 #编号）")
    s.set_defaults(func=cmd_key, json=False)

    s = sub.add_parser("serve", help="启动网页应用（同一端口提供 HTTP API）")
    s.add_argument("--port", type=int, default=8501, help="端口（默认 %(default)s）")
    s.add_argument("--address", default="127.0.0.1",
                   help="监听地址（默认 %(default)s，只有本机能访问；0.0.0.0 等网络地址需要开启登录 WENDAO_AUTH）")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check", help="核对索引与 SQLite 是否一致（不一致时退出码为 1）")
    s.add_argument("--kb", required=True, help="知识库名称（重名时用 #编号）")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument("--strict", action="store_true", help="还有文档的向量未完成时也以 1 退出")
    s.set_defaults(func=cmd_check)
    return p


def _os_error_zh(exc: Exception) -> str:
    """A Chinese message for an OSError / SQLite error that reached the command (a full or read-only
    disk is named as such; never an English system message or traceback)."""
    disk = errors.storage_error(exc)
    if disk is not None:
        return disk.message_zh
    if isinstance(exc, OSError):
        where = f"「{exc.filename}」" if getattr(exc, "filename", None) else ""
        return errors.FileUnreadable.from_os_error(exc).message_zh.replace("无法读取文件", f"无法读取文件{where}", 1)
    if isinstance(exc, sqlite3.Error):
        return "数据库出错，操作没有完成（数据目录未做修改）。可运行 check 核对。"
    return str(exc)


BROKEN_PIPE_EXIT = 128 + 13  # what a shell reports for a command killed by SIGPIPE (`wendao ask … | head`)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. When the reader of stdout goes away (`| head`), the command ends
    quietly with BROKEN_PIPE_EXIT: nothing more is written, and no error — the pipe is not a file
    this command failed to read (Python's documented way: the rest of stdout goes to /dev/null)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at interpreter exit, where a broken pipe is an ignored-exception message
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return BROKEN_PIPE_EXIT


def _stdout_to_devnull() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests, embedding)
        pass


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        raise
    except errors.WendaoError as exc:
        print(shown(f"错误：{exc.message_zh}"), file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError, sqlite3.Error) as exc:
        print(shown(f"错误：{_os_error_zh(exc)}"), file=sys.stderr)
        return 1
    finally:
        from services.index.vectors import close_all

        close_all()
