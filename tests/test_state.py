"""The SQLite <-> index contract (issue 8): one owner per data dir, exact BM25 after any sequence,
explicit collection and cache identity, atomic replace / re-chunk, crashes at any point, and a
randomized 200-operation sequence after which `check` finds nothing and BM25 equals a fresh build."""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from fixtures import ZH_PARAGRAPHS
from services.index.bm25 import exact_scores, query_vector
from services.documents.chunking import ChunkingConfig
from services.index.ingest import ingest_bytes, rechunk_document
from services.index.library import Library
from services.index.maintenance import check
from services.search.retrieval import Retriever
from tiny_models import tiny_embedder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ChunkingConfig("sentence", 40, 0)
DOCS = {
    "rivers.txt": "".join(ZH_PARAGRAPHS),
    "planets.txt": "太阳系有八大行星。木星是太阳系中体积最大的行星。土星以其美丽的光环而闻名。火星被称为红色星球。",
    "cities.txt": "北京是中国的首都。上海是中国最大的城市之一。长江流经上海注入东海。广州是华南的中心城市。",
    "tiny.txt": "长江。",
}
QUERIES = ["长江有多长", "最大的行星", "中国的首都", "黄河 母亲河", "上海 东海"]


def cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, **kw)


def scores_by_text(lib, kb, query):
    """BM25 scores keyed by chunk text (chunk ids differ between data dirs)."""
    found = lib.keyword.search(kb, query_vector(query), 1000)
    chunks = lib.store.get_chunks([f.id for f in found])
    return {chunks[f.id].text: f.score for f in found}


def assert_bm25_is_exact(lib, kb):
    """The live index equals a from-scratch computation over SQLite's searchable rows (1e-6)."""
    rows = lib.keyword.rows(kb, sorted(lib.store.chunk_id_set(kb.id)))
    for q in QUERIES:
        got = {f.id: f.score for f in lib.keyword.search(kb, query_vector(q), 10_000)}
        ref = exact_scores(rows, query_vector(q))
        assert got.keys() == ref.keys(), q
        assert all(abs(got[i] - ref[i]) < 1e-6 for i in ref), q


# --- BM25 statistics (items 2, 3) --------------------------------------------------------------
def test_bm25_scores_after_delete_equal_a_fresh_build_and_a_restart(tmp_path):
    a = Library(tmp_path / "a")
    kb = a.kb("k", create=True)
    ids = {name: ingest_bytes(a, kb, text.encode(), name, SMALL).doc_id for name, text in DOCS.items()}
    a.delete_document(kb, ids["planets.txt"])
    a.delete_document(kb, ids["tiny.txt"])
    live = {q: scores_by_text(a, kb, q) for q in QUERIES}
    assert_bm25_is_exact(a, kb)
    fresh = Library(tmp_path / "fresh")
    fkb = fresh.kb("k", create=True)
    for name in ("rivers.txt", "cities.txt"):
        ingest_bytes(fresh, fkb, DOCS[name].encode(), name, SMALL)
    for q in QUERIES:
        ref = scores_by_text(fresh, fkb, q)
        assert live[q].keys() == ref.keys()
        assert all(abs(live[q][t] - ref[t]) < 1e-6 for t in ref)
    a.close()
    reopened = Library(tmp_path / "a")
    assert all(scores_by_text(reopened, reopened.kb("k"), q) == pytest.approx(live[q], abs=1e-9) for q in QUERIES)
    reopened.close()
    fresh.close()


def test_bm25_does_not_depend_on_upload_order(tmp_path):
    results = []
    for order, folder in ((["tiny.txt", "rivers.txt", "cities.txt"], "x"), (["cities.txt", "rivers.txt", "tiny.txt"], "y")):
        lib = Library(tmp_path / folder)
        kb = lib.kb("k", create=True)
        for name in order:
            ingest_bytes(lib, kb, DOCS[name].encode(), name, SMALL)
        results.append({q: scores_by_text(lib, kb, q) for q in QUERIES})
        lib.close()
    for q in QUERIES:
        assert results[0][q].keys() == results[1][q].keys()
        assert all(abs(results[0][q][t] - results[1][q][t]) < 1e-6 for t in results[0][q])


# --- reindex / check (item 4), ingest exit code (item 16) ----------------------------------------
@pytest.mark.slow
def test_check_finds_missing_and_orphan_points_and_reindex_repairs(tmp_path, data_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("rivers.txt", "planets.txt"):
        (folder / name).write_text(DOCS[name], encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    assert cli(["ingest", "--kb", "k", "--chunk-size", "40", "--overlap", "0", str(folder)], env).returncode == 0
    ok = cli(["check", "--kb", "k", "--json"], env)
    report = json.loads(ok.stdout)
    assert ok.returncode == 0 and report["ok"], report
    assert report["indexes"]["dense"]["points"] == report["sqlite"]["chunks"] == report["indexes"]["bm25"]["points"]

    lib = Library(data_dir)  # damage the dense index behind SQLite's back
    kb = lib.kb("k")
    name = lib.dense.collection(kb)
    victim = sorted(lib.store.chunk_id_set(kb.id))[0]
    lib.backend.delete(name, [victim])
    lib.backend.upsert(name, [987654], [[0.1] * lib.dense.record(kb)["dim"]], ["ghost"])
    damaged = check(lib, kb)
    assert not damaged["ok"]
    assert damaged["indexes"]["dense"]["missing"] == 1 and damaged["indexes"]["dense"]["orphans"] == 1
    lib.close()
    from services.index.vectors import close_all

    close_all()
    bad = cli(["check", "--kb", "k", "--json"], env)  # a new owner sweeps orphans; the missing point stays
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and not report["ok"]
    assert report["indexes"]["dense"]["missing"] == 1 and report["indexes"]["dense"]["orphans"] == 0
    rebuilt = cli(["reindex", "--kb", "k", "--json"], env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["chunks"] == report["sqlite"]["chunks"]
    again = cli(["check", "--kb", "k", "--json"], env)
    assert again.returncode == 0 and json.loads(again.stdout)["ok"]


# --- identity (items 5, 6) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    long = root / ("m" * 90)
    a, b = tiny_embedder(long / "a"), tiny_embedder(long / "b", seed=1)
    return a, b


@pytest.mark.torch
def test_collection_follows_the_kb_whatever_the_model_is_called(lib, kb, tiny_models):
    from services.index.reembed import reembed

    a, b = tiny_models  # two local paths that differ only after 90 characters
    r = ingest_bytes(lib, kb, DOCS["rivers.txt"].encode(), "rivers.txt", SMALL)
    reembed(lib, kb, str(a) + "/")  # raw input differs from the resolved path
    first = lib.dense.collection(kb)
    reembed(lib, kb, str(b))
    second = lib.dense.collection(kb)
    assert first != second and lib.dense.record(kb)["fingerprint"] != ""
    assert lib.backend.collections(f"kb{kb.id}__") == [second]  # the old build is gone
    lib.delete_document(kb, r.doc_id)
    assert lib.backend.count(second) == 0
    assert Retriever(lib, kb).search("长江", mode="dense").hits == []
    lib.delete_kb(kb)
    assert lib.backend.collections(f"kb{kb.id}__") == []


@pytest.mark.torch
def test_model_folder_replaced_in_place_never_reuses_cached_vectors(lib, tmp_path):
    from services.index import embedding

    folder = tiny_embedder(tmp_path / "model")
    kb = lib.kb("k", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(folder))
    ingest_bytes(lib, kb, DOCS["rivers.txt"].encode(), "rivers.txt", SMALL)
    old_fp = lib.dense.record(kb)["fingerprint"]
    shutil.rmtree(folder)
    tiny_embedder(folder, seed=3, hidden_size=48)  # other weights and another dimension, same path
    embedding._EMBEDDERS.clear()  # as after a restart
    new = lib.embedder(kb)
    assert new.fingerprint_id != old_fp and new.dim == 48
    r = ingest_bytes(lib, kb, DOCS["planets.txt"].encode(), "planets.txt", SMALL)
    assert r.status == "failed" and "重建索引" in r.reason  # a clear reason, not a raw ValueError
    with pytest.raises(Exception) as exc:
        Retriever(lib, kb).search("长江", mode="dense")
    assert "重建索引" in str(exc.value)
    from services.index.maintenance import reindex

    reindex(lib, kb)
    assert lib.dense.record(kb)["fingerprint"] == new.fingerprint_id and check(lib, kb)["ok"]
    assert Retriever(lib, kb).search("长江", mode="dense").hits
    assert ingest_bytes(lib, kb, DOCS["planets.txt"].encode(), "planets.txt", SMALL).status == "ok"


# --- concurrency and atomicity (items 7, 8) ------------------------------------------------------
def test_concurrent_uploads_of_the_same_content_dedupe_without_errors(lib, kb):
    barrier = threading.Barrier(4)
    results = []

    def upload(i):
        barrier.wait()
        results.append(ingest_bytes(lib, kb, DOCS["cities.txt"].encode(), f"copy{i}.txt", SMALL))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["duplicate", "duplicate", "duplicate", "ok"]
    assert all(r.reason for r in results if r.status == "duplicate")
    assert len(lib.store.list_documents(kb.id)) == 1 and check(lib, kb)["ok"]


def test_a_same_content_upload_while_the_first_is_embedding_is_a_duplicate(lib, kb):
    """The race the test above hit once under load: the second upload found the first one's document
    'pending' (its vectors being written at that moment) and "completed" it, so two uploads said ok.
    Now the first holds a claim on its vectors; the second is a duplicate and writes nothing."""
    from services.index import ingest
    from services.index.ingest import complete_pending_vectors

    committed, go_on, results = threading.Event(), threading.Event(), []

    def pause_after_commit(name):
        if name == "finalized":
            committed.set()
            go_on.wait(30)

    ingest.fault_point.hook = pause_after_commit
    try:
        first = threading.Thread(target=lambda: results.append(
            ingest_bytes(lib, kb, DOCS["cities.txt"].encode(), "a.txt", SMALL)))
        first.start()
        assert committed.wait(30)
        doc = lib.store.list_documents(kb.id)[0]
        assert doc.dense_state == "pending"  # keyword-searchable, vectors being written
        ingest.fault_point.hook = None
        second = ingest_bytes(lib, kb, DOCS["cities.txt"].encode(), "b.txt", SMALL)
        assert second.status == "duplicate" and "a.txt" in second.reason
        assert complete_pending_vectors(lib, kb, doc.id) == 0  # the worker leaves it to the upload too
        go_on.set()
        first.join(30)
    finally:
        ingest.fault_point.hook = None
        go_on.set()
    assert [r.status for r in results] == ["ok"]
    assert lib.store.get_document(kb.id, doc.id).dense_state == "done" and check(lib, kb)["ok"]


def test_failed_rechunk_keeps_the_old_version_searchable(lib, kb, monkeypatch):
    r = ingest_bytes(lib, kb, DOCS["rivers.txt"].encode(), "rivers.txt", SMALL)
    before = [c.text for c in lib.store.chunks_of(kb.id, r.doc_id)]
    backend = lib.backend

    def broken(*a, **k):
        raise RuntimeError("transient index error")

    monkeypatch.setattr(type(backend), "upsert", broken)
    with pytest.raises(Exception) as exc:
        rechunk_document(lib, kb, r.doc_id, ChunkingConfig("sentence", 80, 0))
    assert "原来的版本" in str(exc.value)
    monkeypatch.undo()
    doc = lib.store.get_document(kb.id, r.doc_id)
    assert doc.status == "ready" and [c.text for c in lib.store.chunks_of(kb.id, r.doc_id)] == before
    assert "珠穆朗玛峰" in Retriever(lib, kb).search("珠穆朗玛峰有多高").hits[0].text
    assert check(lib, kb)["ok"]
    root = lib.root
    lib.close()
    reopened = Library(root)
    assert reopened.store.get_document(kb.id, r.doc_id).status == "ready"
    reopened.close()


# --- processes: ownership (items 1, 14) and crashes (item 15) ---------------------------------------
HOLDER = """
import json, sys
sys.path.insert(0, "tests"); import faults; faults.install()
from services.index.library import open_library
from services.index.ingest import ingest_bytes
from services.index.maintenance import check
from services.documents.chunking import ChunkingConfig
lib = open_library()
kb = lib.kb("k", create=True)
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "ingest":
        r = ingest_bytes(lib, kb, open(arg, "rb").read(), arg.rsplit("/", 1)[-1], ChunkingConfig("sentence", 40, 0))
        print(json.dumps({"status": r.status, "reason": r.reason}), flush=True)
    elif cmd == "check":
        print(json.dumps(check(lib, kb)), flush=True)
    else:
        break
"""


def start_holder(env):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def ask(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    while True:
        out = proc.stdout.readline()
        if not out.startswith("FAULT_POINT"):
            return json.loads(out)


@pytest.mark.slow
def test_live_ingest_is_not_cleaned_by_another_process(tmp_path, data_dir):
    """An app-like process is paused mid-ingest (rows written, 'indexing'); another process opens the
    data dir and runs commands; the live document must survive and end up ready and consistent."""
    path = tmp_path / "rivers.txt"
    path.write_text(DOCS["rivers.txt"], encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "WENDAO_FAULT_PAUSE_S": "6",
           "WENDAO_FAULT_AT": "rows_written"}
    holder = start_holder(env)
    try:
        holder.stdin.write(f"ingest {path}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().startswith("FAULT_POINT rows_written")
        quiet = {**env, "WENDAO_FAULT_PAUSE_S": "0"}
        kbs = cli(["kbs", "--json"], quiet)
        assert kbs.returncode == 0, kbs.stderr
        db = sqlite3.connect(data_dir / "wendao.db")
        assert db.execute("SELECT status FROM documents").fetchall() == [("indexing",)]
        result = json.loads(holder.stdout.readline())
        assert result["status"] == "ok"
        report = ask(holder, "check")
        assert report["ok"], report
        assert db.execute("SELECT status FROM documents").fetchall() == [("ready",)]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow  # starts Python processes (issue 18 item 9: multi-process tests are slow)
def test_second_process_never_breaks_the_owner(tmp_path, data_dir):
    """With the app-like owner running, CLI reads work read-only, a CLI ingest is refused before it
    parses or embeds anything, and the owner keeps ingesting without errors."""
    files = []
    for name in ("rivers.txt", "planets.txt", "cities.txt"):
        (tmp_path / name).write_text(DOCS[name], encoding="utf-8")
        files.append(tmp_path / name)
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    holder = start_holder(env)
    try:
        assert ask(holder, f"ingest {files[0]}")["status"] == "ok"
        cache = sqlite3.connect(data_dir / "embeddings.db")
        cached = cache.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        search = cli(["search", "--kb", "k", "--json", "珠穆朗玛峰有多高"], env)
        assert search.returncode == 0 and "珠穆朗玛峰" in json.loads(search.stdout)["hits"][0]["text"]
        refused = cli(["ingest", "--kb", "k", str(files[1])], env)
        assert refused.returncode == 1 and "另一个进程" in refused.stderr and "Traceback" not in refused.stderr
        new_kb = cli(["ingest", "--kb", "other", str(files[1])], env)
        assert new_kb.returncode == 1 and "另一个进程" in new_kb.stderr
        assert cache.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == cached  # nothing embedded
        assert cli(["reindex", "--kb", "k"], env).returncode == 1
        for f in files[1:]:
            assert ask(holder, f"ingest {f}")["status"] == "ok"
        assert ask(holder, "check")["ok"]
    finally:
        holder.kill()
        holder.wait()
    kbs = sqlite3.connect(data_dir / "wendao.db").execute("SELECT name FROM kbs").fetchall()
    assert kbs == [("k",)]


KILLER = """
import sys
sys.path.insert(0, "tests"); import faults; faults.install()
from services.index.library import open_library
from services.index.ingest import ingest_bytes, rechunk_document
from services.documents.chunking import ChunkingConfig
lib = open_library()
kb = lib.kb("k", create=True)
op, name, text = sys.argv[1], sys.argv[2], sys.argv[3]
if op == "rechunk":
    doc = [d for d in lib.store.list_documents(kb.id) if d.filename == name][0]
    rechunk_document(lib, kb, doc.id, ChunkingConfig("sentence", int(text), 0))
else:
    ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig("sentence", 40, 0))
print("DONE", flush=True)
"""


def run_and_maybe_kill(env, op, name, arg, point):
    """Run one operation in a child; kill -9 it when it reaches fault point `point` (None: finish)."""
    proc = subprocess.Popen([sys.executable, "-c", KILLER, op, name, arg], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**env, "WENDAO_FAULT_PAUSE_S": "30" if point else "0",
                                            "WENDAO_FAULT_AT": point or ""})
    for line in proc.stdout:
        if point and line.startswith(f"FAULT_POINT {point}"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    return proc.returncode


def state_after_restart(data_dir):
    lib = Library(data_dir)
    kb = lib.kb("k")
    docs = {d.filename: (d.status, d.chunk_count) for d in lib.store.list_documents(kb.id)}
    texts = {d.filename: lib.store.document_text(kb.id, d.id) for d in lib.store.list_documents(kb.id)}
    report = check(lib, kb)
    assert_bm25_is_exact(lib, kb)
    lib.close()
    from services.index.vectors import close_all

    close_all()
    return docs, texts, report


@pytest.mark.slow  # three CLI processes per case, one killed with -9 (issue 18 item 9: multi-process tests)
@pytest.mark.parametrize("point", ["rows_written", "points_written", "finalized"])
def test_kill_while_replacing_a_same_named_file_is_recoverable(data_dir, point):
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    old, new = DOCS["rivers.txt"], DOCS["cities.txt"]
    assert run_and_maybe_kill(env, "ingest", "notes.txt", old, None) == 0
    assert run_and_maybe_kill(env, "ingest", "notes.txt", new, point) != 0
    docs, texts, report = state_after_restart(data_dir)
    assert report["ok"], report
    assert list(docs) == ["notes.txt"] and docs["notes.txt"][0] == "ready"  # exactly one version
    assert texts["notes.txt"] == (old if point == "rows_written" else new)  # keyword-ready = committed
    assert run_and_maybe_kill(env, "ingest", "notes.txt", new, None) == 0  # re-running completes it
    docs, texts, report = state_after_restart(data_dir)
    assert report["ok"] and texts == {"notes.txt": new}


@pytest.mark.slow
def test_kill_at_random_points_of_ingest_replace_and_rechunk(data_dir):
    """Seeded: each round runs an ingest, a replacement or a re-chunk and kills it at a random fault
    point (or lets it finish); after every round `check` passes and nothing committed is lost."""
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    rng = random.Random(8)
    committed: dict[str, str] = {}
    names = list(DOCS)
    for _ in range(6):
        op = rng.choice(["ingest", "replace", "rechunk"] if committed else ["ingest"])
        point = rng.choice(["rows_written", "points_written", "finalized", None])
        if op == "rechunk":
            name = rng.choice(sorted(committed))
            run_and_maybe_kill(env, "rechunk", name, str(rng.choice([20, 60, 90])), point)
        else:
            name = rng.choice(sorted(committed)) if op == "replace" else rng.choice(names)
            text = DOCS[rng.choice(names)] + ("" if op == "ingest" else f"第{rng.randint(1, 99)}版。")
            run_and_maybe_kill(env, "ingest", name, text, point)
            if point != "rows_written":
                committed = {k: v for k, v in committed.items() if v != text}  # dedup: same content elsewhere
                if not any(v == text for v in committed.values()):
                    committed[name] = text
        docs, texts, report = state_after_restart(data_dir)
        assert report["ok"], (op, point, report)
        assert all(status == "ready" for status, _ in docs.values())
        for name, text in committed.items():
            assert texts.get(name) == text, (op, point, name)
        committed = dict(texts)


# --- a randomized sequence of 200 operations ------------------------------------------------------
@pytest.mark.slow
def test_random_sequence_of_200_operations_keeps_every_index_consistent(lib, tiny_models):
    from services.index.reembed import reembed

    rng = random.Random(2024)
    a, b = tiny_models
    kb = lib.kb("random", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=str(a))
    sentences = [s + "。" for p in list(DOCS.values()) for s in p.split("。") if s]
    for step in range(200):
        docs = [d for d in lib.store.list_documents(kb.id)]
        op = rng.choices(["upload", "replace", "delete", "rechunk", "reembed"], [6, 2, 3, 2, 1])[0]
        if op == "upload" or not docs:
            text = "".join(rng.sample(sentences, rng.randint(1, 6)))
            ingest_bytes(lib, kb, text.encode(), f"f{rng.randint(0, 30)}.txt", SMALL)
        elif op == "replace":
            doc = rng.choice(docs)
            ingest_bytes(lib, kb, ("".join(rng.sample(sentences, 3)) + f"{step}").encode(), doc.filename, SMALL)
        elif op == "delete":
            lib.delete_document(kb, rng.choice(docs).id)
        elif op == "rechunk":
            rechunk_document(lib, kb, rng.choice(docs).id, ChunkingConfig("sentence", rng.choice([20, 40, 80]), 0))
        else:
            reembed(lib, kb, str(b) if lib.embedding_model(kb) == str(a) else str(a))
        if step % 50 == 49 or step == 199:
            report = check(lib, kb)
            assert report["ok"], (step, report)
            assert_bm25_is_exact(lib, kb)
    assert report["sqlite"]["documents"] > 0


# --- the app offers check and rebuild ------------------------------------------------------------
def test_library_page_checks_and_rebuilds_the_index(data_dir):
    from streamlit.testing.v1 import AppTest

    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("地理", create=True)
    ingest_bytes(lib, kb, DOCS["rivers.txt"].encode(), "rivers.txt", SMALL)
    lib.backend.delete(lib.dense.collection(kb), [min(lib.store.chunk_id_set(kb.id))])  # damage
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=120)
    at.run()
    at.switch_page("components/pages/library.py").run()
    next(b for b in at.button if b.label == "核对索引").click().run()
    assert any("发现不一致" in e.value and "缺失 1" in e.value for e in at.error)
    next(b for b in at.button if b.label == "重建索引").click().run()
    from services import worker

    assert worker.wait_idle(lib, 120)  # rebuilt by the background worker
    at.run()
    assert any("已重建" in s.value for s in at.success), [e.value for e in at.error]
    next(b for b in at.button if b.label == "核对索引").click().run()
    assert any("索引与数据库一致：数据库 " in s.value for s in at.success)
    assert not at.exception


@pytest.mark.slow  # starts Python processes (issue 18 item 9: multi-process tests are slow)
def test_keyword_only_document_gets_its_vectors_after_a_crash(data_dir):
    """Killed after the document became keyword-searchable but before its vectors were written: the
    next owner's worker writes them; until then check is clean and search says so."""
    from services import worker

    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    assert run_and_maybe_kill(env, "ingest", "rivers.txt", DOCS["rivers.txt"], "finalized") != 0
    lib = Library(data_dir)
    kb = lib.kb("k")
    doc = lib.store.list_documents(kb.id)[0]
    assert doc.status == "ready" and doc.dense_state == "pending"
    report = check(lib, kb)
    assert report["ok"] and report["indexes"]["dense"]["vectors_pending"] == doc.chunk_count
    result = Retriever(lib, kb).search("珠穆朗玛峰有多高")
    assert "珠穆朗玛峰" in result.hits[0].text and "向量化进行中" in result.notice
    assert worker.wait_idle(lib, 120)
    assert lib.store.get_document(kb.id, doc.id).dense_state == "done"
    report = check(lib, kb)
    assert report["ok"] and report["indexes"]["dense"]["points"] == doc.chunk_count
    assert Retriever(lib, kb).search("珠穆朗玛峰有多高", mode="dense").hits
    lib.close()


def test_data_dir_from_before_recorded_collections_keeps_its_vectors(tmp_path):
    """Upgrading: a KB whose dense collection was named after its model (and a Qdrant BM25
    collection) keeps searching after the upgrade; the old BM25 collection is dropped."""
    import json as _json

    from services.index.models import BUNDLED_EMBEDDER, resolve
    from services.index.vectors import IndexSpec, close_all, collection_name

    root = tmp_path / "old"
    lib = Library(root)
    kb = lib.kb("k", create=True)
    lib.store.update_kb_settings(kb.id, embedding_model=BUNDLED_EMBEDDER)  # what the old app indexed with
    ingest_bytes(lib, kb, DOCS["rivers.txt"].encode(), "rivers.txt", SMALL)
    record = lib.dense.record(kb)
    lib.close()
    close_all()
    qdrant = root / "qdrant"
    legacy = collection_name(kb.id, IndexSpec(resolve(BUNDLED_EMBEDDER).name, 1))
    (qdrant / record["collection"]).rename(qdrant / legacy)
    meta = _json.loads((qdrant / legacy / "meta.json").read_text())
    meta.pop("fingerprint")
    (qdrant / legacy / "meta.json").write_text(_json.dumps(meta))
    (qdrant / f"kb{kb.id}__bm25").mkdir()
    (qdrant / f"kb{kb.id}__bm25" / "meta.json").write_text(_json.dumps({"model": "bm25", "dim": 0}))
    db = sqlite3.connect(root / "wendao.db")
    db.execute("UPDATE kbs SET settings='{}'")
    db.execute("UPDATE chunks SET terms=NULL, length=NULL")  # BM25 terms are backfilled from the text
    db.commit()
    db.close()
    upgraded = Library(root)
    kb = upgraded.kb("k")
    assert upgraded.dense.collection(kb) == legacy  # settings were lost: the old bundled model is assumed
    assert upgraded.embedding_model(kb) == BUNDLED_EMBEDDER
    assert Retriever(upgraded, kb).search("珠穆朗玛峰有多高", mode="dense").hits
    assert "珠穆朗玛峰" in Retriever(upgraded, kb).search("珠穆朗玛峰有多高", mode="bm25").hits[0].text
    assert upgraded.dense.record(kb)["fingerprint"] == upgraded.embedder(kb).fingerprint_id
    assert check(upgraded, kb)["ok"]
    assert not (qdrant / f"kb{kb.id}__bm25").exists()
    upgraded.close()
