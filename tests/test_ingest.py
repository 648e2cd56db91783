"""Store + ingest: dedup, replacement, deletion, failures, crash safety, CLI."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fixtures import ZH_PARAGRAPHS, make_docx, make_pdf
from services.documents.chunking import ChunkingConfig
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever
from services.index.store import MIGRATIONS, Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_A = "".join(ZH_PARAGRAPHS)
TEXT_B = "太阳系有八大行星。木星是太阳系中体积最大的行星。土星以其美丽的光环而闻名。"


def points(lib, kb):
    dense = lib.dense.collection(kb)
    return len(lib.keyword.index(kb).ids), lib.backend.count(dense) if dense else 0


def test_ingest_and_search(lib, kb):
    r = ingest_bytes(lib, kb, TEXT_A.encode("gbk"), "rivers.txt")
    assert r.status == "ok" and r.chunks >= 1
    hits = Retriever(lib, kb).search("珠穆朗玛峰有多高").hits
    assert hits[0].doc == "rivers.txt" and "珠穆朗玛峰" in hits[0].text
    assert points(lib, kb) == (r.chunks, r.chunks)


def test_same_content_any_filename_is_duplicate(lib, kb):
    ingest_bytes(lib, kb, TEXT_A.encode("utf-8"), "a.txt")
    r = ingest_bytes(lib, kb, TEXT_A.encode("utf-16"), "copy-of-a.txt")
    assert r.status == "duplicate" and "a.txt" in r.reason
    assert len(lib.store.list_documents(kb.id)) == 1


def test_same_content_in_other_kb_is_indexed(lib, kb):
    other = lib.kb("另一个库", create=True)
    ingest_bytes(lib, kb, TEXT_A.encode(), "a.txt")
    assert ingest_bytes(lib, other, TEXT_A.encode(), "a.txt").status == "ok"


def test_same_filename_new_content_replaces_only_in_its_kb(lib, kb):
    other = lib.kb("另一个库", create=True)
    ingest_bytes(lib, kb, TEXT_A.encode(), "notes.txt")
    ingest_bytes(lib, other, TEXT_A.encode(), "notes.txt")
    r = ingest_bytes(lib, kb, TEXT_B.encode(), "notes.txt")
    assert r.status == "replaced"
    docs = lib.store.list_documents(kb.id)
    assert len(docs) == 1 and "木星" in lib.store.document_text(kb.id, docs[0].id)
    assert "长江" in lib.store.document_text(other.id, lib.store.list_documents(other.id)[0].id)
    assert points(lib, kb) == (r.chunks, r.chunks)
    assert all(h.doc == "notes.txt" and "长江" not in h.text for h in Retriever(lib, kb).search("长江").hits)


def test_bad_file_is_reported_and_index_untouched(lib, kb):
    ok = ingest_bytes(lib, kb, TEXT_A.encode(), "a.txt")
    bad = ingest_bytes(lib, kb, make_pdf(["x"], encrypt_password="pw"), "locked.pdf")
    assert bad.status == "failed" and "加密" in bad.reason
    assert [d.filename for d in lib.store.list_documents(kb.id)] == ["a.txt"]
    assert points(lib, kb) == (ok.chunks, ok.chunks)


def test_delete_document_removes_points(lib, kb):
    a = ingest_bytes(lib, kb, TEXT_A.encode(), "a.txt")
    b = ingest_bytes(lib, kb, TEXT_B.encode(), "b.txt")
    lib.delete_document(kb, a.doc_id)
    assert points(lib, kb) == (b.chunks, b.chunks)
    assert all(h.doc == "b.txt" for h in Retriever(lib, kb).search("长江").hits)


def test_pdf_and_docx_pages(lib, kb):
    r = ingest_bytes(lib, kb, make_pdf([ZH_PARAGRAPHS[0], ZH_PARAGRAPHS[2]]), "geo.pdf",
                     ChunkingConfig("sentence", 60, 0))
    assert r.pages == 2
    hit = Retriever(lib, kb).search("珠穆朗玛峰海拔").hits[0]
    assert hit.page == 2
    assert ingest_bytes(lib, kb, make_docx(), "rules.docx").status == "ok"


def test_rechunk_keeps_document(lib, kb):
    from services.index.ingest import rechunk_document

    r = ingest_bytes(lib, kb, TEXT_A.encode(), "a.txt", ChunkingConfig("sentence", 300))
    r2 = rechunk_document(lib, kb, r.doc_id, ChunkingConfig("window", window=2, stride=1))
    assert r2.chunks > r.chunks
    assert points(lib, kb) == (r2.chunks, r2.chunks)
    assert lib.store.chunks_of(kb.id, r.doc_id)[0].strategy == "window"


def test_migrations_from_empty_and_idempotent(tmp_path):
    path = tmp_path / "x.db"
    sqlite3.connect(path).close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    store.close()
    assert Store(path).migrate() == len(MIGRATIONS)


def run_cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


@pytest.mark.slow  # starts Python processes (issue 18 item 9: multi-process tests are slow)
def test_cli_ingest_json_and_chunks(tmp_path, data_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_bytes(TEXT_A.encode("gbk"))
    (folder / "b.txt").write_bytes(TEXT_A.encode("utf-8"))  # duplicate content
    (folder / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    out = run_cli(["ingest", "--kb", "k", "--chunker", "sentence", "--chunk-size", "40", "--json", str(folder)], env)
    assert out.returncode == 1, out.stderr  # a file failed: non-zero exit (issue 8 item 16), JSON still printed
    assert "1 个文件索引失败" in out.stderr
    report = json.loads(out.stdout)
    assert report["documents"] == 1 and report["chunks"] >= 3 and report["seconds"] > 0
    assert {s["file"] for s in report["skipped"]} == {"b.txt", "bad.pdf"}
    assert "[3/3]" in out.stderr
    out = run_cli(["chunks", "--kb", "k", "--doc", "a.txt", "--json"], env)
    chunks = json.loads(out.stdout)["chunks"]
    text = TEXT_A
    assert all(text[c["start"]:c["end"]] == c["text"] for c in chunks)
    assert all(set(c) >= {"text", "start", "end", "pages"} for c in chunks)
    missing = run_cli(["chunks", "--kb", "k", "--doc", "nope.txt", "--json"], env)
    assert missing.returncode == 1 and "nope.txt" in missing.stderr
    allowed = run_cli(["ingest", "--kb", "k", "--allow-failures", "--json", str(folder / "bad.pdf")], env)
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["documents"] == 0
    dup_only = run_cli(["ingest", "--kb", "k", "--json", str(folder / "b.txt")], env)
    assert dup_only.returncode == 0  # a duplicate is not a failure


@pytest.mark.slow
def test_kill_during_ingest_leaves_no_half_document(tmp_path, data_dir):
    """kill -9 between the SQLite write and the index write; the next start cleans up."""
    (tmp_path / "1.txt").write_text(TEXT_A, encoding="utf-8")
    (tmp_path / "2.txt").write_text(TEXT_B, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "WENDAO_FAULT_PAUSE_S": "4"}
    proc = subprocess.Popen([sys.executable, "tests/faults.py", "ingest", "--kb", "k",
                             str(tmp_path / "1.txt"), str(tmp_path / "2.txt")],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("[1/2]"):
            break
    db = sqlite3.connect(data_dir / "wendao.db")
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until 2.txt is written as 'indexing' (inside the pause)
        if db.execute("SELECT COUNT(*) FROM documents WHERE status='indexing'").fetchone()[0]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("second document never reached 'indexing'")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db.close()

    from services.index.library import Library

    lib = Library(data_dir)
    kb = lib.kb("k")
    docs = lib.store.list_documents(kb.id)
    assert [(d.filename, d.status) for d in docs] == [("1.txt", "ready")]
    assert points(lib, kb) == (docs[0].chunk_count, docs[0].chunk_count)
    lib.close()
    env.pop("WENDAO_FAULT_PAUSE_S")
    from services.index.vectors import close_all

    close_all()
    again = run_cli(["ingest", "--kb", "k", "--json", str(tmp_path / "2.txt")], env)
    assert json.loads(again.stdout)["documents"] == 1


def test_library_keeps_indexes_under_its_own_root(tmp_path, monkeypatch):
    """Regression: Library(root) must not put its Qdrant shards under WENDAO_DATA_DIR."""
    from services.index.library import Library
    from services.index.vectors import close_all

    monkeypatch.setenv("WENDAO_DATA_DIR", str(tmp_path / "elsewhere"))
    root = tmp_path / "root"
    lib = Library(root)
    kb = lib.kb("k", create=True)
    ingest_bytes(lib, kb, TEXT_A.encode(), "a.txt")
    lib.close()
    close_all()
    reopened = Library(root)
    assert Retriever(reopened, reopened.kb("k")).search("长江").hits
    assert (root / "qdrant").is_dir() and not (tmp_path / "elsewhere" / "qdrant").exists()
    close_all()


def test_llm_settings_precedence_and_key_not_saved(lib, kb, monkeypatch):
    from services.config import LLMSettings
    from services.index.kb_settings import llm_settings, save_llm_settings

    monkeypatch.setenv("OPENAI_BASE_URL", "http://env/v1")
    monkeypatch.setenv("WENDAO_LLM_MODEL", "env-model")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert llm_settings(lib, kb).model == "env-model"
    assert llm_settings(lib, kb, secrets={"model": "secret-model", "api_key": "sk-s"}).api_key == "sk-s"
    save_llm_settings(lib, kb, LLMSettings("http://saved/v1", "sk-typed", "saved-model"))
    assert "sk-typed" not in json.dumps(lib.store.get_kb(kb.id).settings)
    s = llm_settings(lib, kb, "sk-session", {"model": "secret-model"})
    assert (s.base_url, s.model, s.api_key) == ("http://saved/v1", "saved-model", "sk-session")


@pytest.mark.slow
def test_index_locked_by_another_process_is_a_clear_error(tmp_path, data_dir):
    """The embedded engine allows one process per index: a second one gets a Chinese message,
    writes nothing, and the first process's data stays intact."""
    (tmp_path / "1.txt").write_text(TEXT_A, encoding="utf-8")
    (tmp_path / "2.txt").write_text(TEXT_B, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    assert json.loads(run_cli(["ingest", "--kb", "k", "--json", str(tmp_path / "1.txt")], env).stdout)["documents"] == 1
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from services.index.library import open_library; from services.search.retrieval "
         "import Retriever; lib = open_library(); Retriever(lib, lib.kb('k')).search('长江'); print('ready', flush=True); "
         "time.sleep(60)"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = run_cli(["ingest", "--kb", "k", "--json", str(tmp_path / "2.txt")], env)
        assert out.returncode == 1 and "另一个进程" in out.stderr and "Traceback" not in out.stderr
        # read commands work read-only (BM25 from SQLite, dense over the cached vectors)
        for mode in ("bm25", "dense", "hybrid"):
            search = run_cli(["search", "--kb", "k", "--mode", mode, "--json", "长江有多长"], env)
            assert search.returncode == 0, search.stderr
            assert "长江" in json.loads(search.stdout)["hits"][0]["text"]
    finally:
        holder.kill()
        holder.wait()
    db = sqlite3.connect(data_dir / "wendao.db")
    assert db.execute("SELECT filename, status FROM documents").fetchall() == [("1.txt", "ready")]


def test_chunk_ending_in_page_separator_keeps_its_page(lib, kb):
    """Regression: a chunk ending in the blank separator after page 2 was reported as ending on page 1."""
    r = ingest_bytes(lib, kb, make_pdf(ZH_PARAGRAPHS), "three.pdf", ChunkingConfig("sentence", 40, 0))
    chunks = lib.store.chunks_of(kb.id, r.doc_id)
    assert all(c.page_start <= c.page_end for c in chunks)
    assert [c.page_end for c in chunks] == sorted(c.page_end for c in chunks)
