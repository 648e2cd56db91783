"""Everyday use, services side (issue 11): kept conversations, documents switched off, search within
selected documents, KB rename/delete, and background ingestion with progress in SQLite."""
import os
import subprocess
import sys

import pytest

from fixtures import ZH_PARAGRAPHS
from services import conversations, worker
from services.answers.answer import answer_question
from services.documents.chunking import ChunkingConfig
from services.config import LLMSettings
from services.index.ingest import ingest_bytes
from services.index.library import Library
from services.index.maintenance import check
from services.search.retrieval import Retriever

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ChunkingConfig("sentence", 60, 0)
RIVERS = "".join(ZH_PARAGRAPHS)
PLANETS = "太阳系有八大行星。木星是太阳系中体积最大的行星。土星以其美丽的光环而闻名。火星被称为红色星球。"


def test_conversations_survive_a_restart_and_continue(lib, kb):
    ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", SMALL)
    cid = conversations.create(lib.store, kb.id)
    answer = answer_question(Retriever(lib, kb), LLMSettings(), "珠穆朗玛峰有多高？")
    conversations.add_turn(lib.store, cid, "珠穆朗玛峰有多高？", answer.to_json(), {"mode": "hybrid"})
    root = lib.root
    lib.close()
    reopened = Library(root)
    listed = conversations.list_for(reopened.store, kb.id)
    assert [(c.title, c.turns) for c in listed] == [("珠穆朗玛峰有多高？", 1)]
    turn = conversations.turns(reopened.store, cid)[0]
    assert turn["answer"]["answer"] == answer.text and turn["settings"] == {"mode": "hybrid"}
    assert turn["answer"]["citations"] and {"start", "end"} <= set(turn["answer"]["citations"][0])
    history = conversations.history(reopened.store, cid)
    assert history.turns[0].question == "珠穆朗玛峰有多高？"
    conversations.rename(reopened.store, cid, "登山")
    assert conversations.get(reopened.store, cid).title == "登山"
    with pytest.raises(Exception):
        conversations.rename(reopened.store, cid, "  ")
    conversations.delete(reopened.store, cid)
    assert conversations.list_for(reopened.store, kb.id) == []
    reopened.close()


def test_switched_off_documents_and_search_within_selected_documents(lib, kb):
    a = ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", SMALL)
    b = ingest_bytes(lib, kb, PLANETS.encode(), "planets.txt", SMALL)
    for mode in ("bm25", "dense", "hybrid"):
        only = Retriever(lib, kb, doc_ids=[b.doc_id]).search("长江 行星", mode=mode).hits
        assert only and {h.doc for h in only} == {"planets.txt"}, mode
    lib.set_enabled(kb, a.doc_id, False)
    for mode in ("bm25", "dense", "hybrid"):
        hits = Retriever(lib, kb).search("长江有多长", mode=mode).hits
        assert all(h.doc != "rivers.txt" for h in hits), mode
    assert check(lib, kb)["ok"]
    lib.set_enabled(kb, a.doc_id, True)
    assert Retriever(lib, kb).search("长江有多长", mode="bm25").hits[0].doc == "rivers.txt"
    assert check(lib, kb)["ok"]


def test_rename_and_delete_knowledge_base(lib, kb):
    ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", SMALL)
    cid = conversations.create(lib.store, kb.id)
    renamed = lib.rename_kb(kb, "河流")
    assert renamed.name == "河流" and lib.kb("河流").id == kb.id
    other = lib.kb("别的", create=True)
    with pytest.raises(Exception):
        lib.rename_kb(other, "河流")
    lib.delete_kb(renamed)
    assert [k.name for k in lib.store.list_kbs()] == ["别的"]
    assert lib.backend.collections(f"kb{kb.id}__") == []
    assert lib.store.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0
    with pytest.raises(Exception):
        conversations.get(lib.store, cid)


def test_background_ingest_reports_progress_and_keeps_search_available(lib, kb):
    ingest_bytes(lib, kb, PLANETS.encode(), "planets.txt", SMALL)
    ids = [worker.submit(lib, kb, "ingest", f"r{i}.txt", SMALL.to_dict(), (RIVERS + f"第{i}份。").encode())
           for i in range(3)]
    ids.append(worker.submit(lib, kb, "ingest", "bad.pdf", SMALL.to_dict(), b"%PDF-1.4 broken"))
    # searching what is indexed works while the worker runs
    assert Retriever(lib, kb).search("最大的行星", mode="bm25").hits[0].doc == "planets.txt"
    assert worker.wait_idle(lib, 120)
    jobs = {j.id: j for j in worker.jobs(lib, kb)}
    assert [jobs[i].status for i in ids] == ["done", "done", "done", "failed"]
    assert jobs[ids[0]].result["chunks"] > 0 and jobs[ids[0]].stage == "index"
    assert jobs[ids[3]].result["reason"]
    assert not list((lib.root / "uploads").iterdir())  # uploads removed once processed
    assert check(lib, kb)["ok"]


@pytest.mark.slow  # starts Python processes (issue 18 item 9: multi-process tests are slow)
def test_jobs_of_a_dead_owner_resume_after_restart(tmp_path):
    """A job queued (or running) in a process that died is picked up by the next owner."""
    root = tmp_path / "data"
    script = (
        "import json, os, sys\n"
        "from services.index.library import Library\n"
        "from services.documents.chunking import ChunkingConfig\n"
        "lib = Library(sys.argv[1]); kb = lib.kb('k', create=True)\n"
        "lib.store.db.execute(\"INSERT INTO jobs(kb_id, kind, filename, path, params, status, created_at, updated_at)"
        " VALUES (?, 'ingest', 'r.txt', ?, ?, 'running', 0, 0)\", (kb.id, sys.argv[2], json.dumps(ChunkingConfig().to_dict())))\n"
        "os.kill(os.getpid(), 9)\n")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(RIVERS.encode())
    subprocess.run([sys.executable, "-c", script, str(root), str(upload)], cwd=ROOT, timeout=120)
    lib = Library(root)
    kb = lib.kb("k")
    assert [j.status for j in worker.jobs(lib, kb, since=0)] == ["queued"]
    assert worker.wait_idle(lib, 120)
    assert [j.status for j in worker.jobs(lib, kb, since=0)] == ["done"]
    assert [d.filename for d in lib.store.list_documents(kb.id)] == ["r.txt"]
    lib.close()


def test_original_files_are_kept_for_the_page_view_and_follow_the_document(lib, kb):
    from fixtures import make_pdf

    pdf = make_pdf(["第一页" + ZH_PARAGRAPHS[0], "第二页" + ZH_PARAGRAPHS[2]])
    r = ingest_bytes(lib, kb, pdf, "geo.pdf", SMALL)
    path = lib.originals.path(kb.id, r.doc_id)
    assert path is not None and path.read_bytes() == pdf and path.suffix == ".pdf"
    new = ingest_bytes(lib, kb, make_pdf(["第一页" + ZH_PARAGRAPHS[1]]), "geo.pdf", SMALL)
    assert new.status == "replaced" and lib.originals.path(kb.id, r.doc_id) is None
    assert lib.originals.path(kb.id, new.doc_id) is not None
    lib.delete_document(kb, new.doc_id)
    assert lib.originals.path(kb.id, new.doc_id) is None
    stray = lib.root / "originals" / str(kb.id) / "deadbeef.pdf"
    stray.write_bytes(b"x")
    root = lib.root
    lib.close()
    Library(root).close()  # the next owner sweeps files whose document does not exist
    assert not stray.exists()


def test_a_document_is_keyword_searchable_before_its_vectors_are_written(lib, kb):
    """Issue 12 item 3: BM25 answers as soon as a document is chunked; dense follows."""
    seen = {}

    def progress(stage, done, total):
        if stage == "keywords":
            result = Retriever(lib, kb).search("珠穆朗玛峰有多高")
            seen["bm25"] = [h.doc for h in Retriever(lib, kb).search("珠穆朗玛峰有多高", mode="bm25").hits]
            seen["dense"] = [h.doc for h in Retriever(lib, kb).search("珠穆朗玛峰有多高", mode="dense").hits]
            seen["notice"] = result.notice

    r = ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", SMALL, progress)
    assert r.status == "ok"
    assert seen["bm25"][0] == "rivers.txt" and seen["dense"] == [] and "向量化进行中" in seen["notice"]
    assert Retriever(lib, kb).search("珠穆朗玛峰有多高", mode="dense").hits[0].doc == "rivers.txt"
    assert Retriever(lib, kb).search("珠穆朗玛峰有多高").notice == ""


def test_deleting_a_kb_removes_its_hidden_evaluation_copies(lib, kb):
    from services.tuning.evaluation import chunker_variant

    ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", SMALL)
    variant = chunker_variant(lib, kb, ChunkingConfig("fixed", 80, 0))
    assert lib.store.get_kb(variant.id).settings.get("source_kb") == kb.id
    lib.delete_kb(kb)
    assert lib.store.list_kbs() == []
    assert lib.backend.collections(f"kb{variant.id}__") == []
