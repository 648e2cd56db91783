"""Hostile environments (issue 22 items 4-8): links and special files, full and read-only disks,
kill -9 during embedding, control characters in names, and the smaller cases.

Every case ends with `check` clean and nothing committed lost. Real FIFOs and symlinks; real
processes killed with SIGKILL; a real full tmpfs and a real read-only bind mount inside a user
namespace (`unshare -Urm`, skipped where the kernel does not allow it) next to injected
ENOSPC / EROFS errors.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fixtures import ZH_PARAGRAPHS
from services import errors

ROOT = Path(__file__).resolve().parent.parent
TEXT = "".join(ZH_PARAGRAPHS)
TEXT_B = "太阳系有八大行星。木星是太阳系中体积最大的行星。土星以其美丽的光环而闻名。火星被称为红色星球。"
SECRET = "WENDAO_TEST_SECRET_7f3a9c"


def cli(args, env, timeout=180, **kw):
    return subprocess.run([sys.executable, "-m", "services", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def doc_state(lib, kb) -> dict:
    """filename -> (status, chunk count, text) of every document: what 'nothing committed lost' compares."""
    return {d.filename: (d.status, d.chunk_count, lib.store.document_text(kb.id, d.id))
            for d in lib.store.list_documents(kb.id)}


def assert_check_clean(lib, kb):
    from services.index.maintenance import check

    report = check(lib, kb)
    assert report["ok"], report
    return report


# --- item 4: only regular files are ingested --------------------------------------------------
def hostile_folder(tmp_path: Path) -> Path:
    """A folder of two real documents among links (inside and outside it, to /etc/passwd,
    /proc/self/environ, /dev/zero, a folder) and a real FIFO."""
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.txt").write_text(TEXT, encoding="utf-8")
    (folder / "sub" / "inner.txt").write_text(TEXT_B, encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("机密文件：金库口令是八八六六。", encoding="utf-8")
    os.symlink("/etc/passwd", folder / "a.txt")
    os.symlink("/proc/self/environ", folder / "env.txt")
    os.symlink("/dev/zero", folder / "z.txt")
    os.symlink(folder / "good.txt", folder / "inside.txt")  # a link that stays in the folder
    os.symlink("sub/inner.txt", folder / "rel.txt")  # relative, inside too
    os.symlink(outside / "secret.txt", folder / "secret.txt")  # leaves the folder
    os.symlink(outside, folder / "linked_folder")  # a link to a folder is not walked
    os.mkfifo(folder / "pipe.txt")
    return folder


REFUSED = {"a.txt": "符号链接", "env.txt": "符号链接", "z.txt": "符号链接", "inside.txt": "符号链接",
           "rel.txt": "符号链接", "secret.txt": "符号链接", "linked_folder": "符号链接", "pipe.txt": "命名管道"}


def run_bounded(fn, seconds=60):
    """Run fn in a thread; fail (instead of hanging the suite) when it has not returned in time."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "ingest hung (a FIFO or device was read)"
    return out["value"]


def test_folder_ingest_reads_only_regular_files(lib, kb, tmp_path):
    from services.index.ingest import ingest_paths

    folder = hostile_folder(tmp_path)
    report = run_bounded(lambda: ingest_paths(lib, kb, [folder]))
    status = {r.file: (r.status, r.reason) for r in report.results}
    assert status["good.txt"][0] == "ok" and status["inner.txt"][0] == "ok"
    for name, word in REFUSED.items():
        assert status[name][0] == "failed" and word in status[name][1], (name, status[name])
    assert len(report.results) == 2 + len(REFUSED)  # nothing under the linked folder or /etc
    docs = doc_state(lib, kb)
    assert sorted(docs) == ["good.txt", "inner.txt"]
    stored = (lib.root / "wendao.db").read_bytes()
    assert b"root:x:0:0" not in stored and "八八六六".encode() not in stored
    assert len(list((lib.root / "originals").rglob("*.*"))) == 2  # only the two real files kept
    assert_check_clean(lib, kb)


def test_links_and_special_files_named_directly_are_refused_at_once(lib, kb, tmp_path, monkeypatch):
    from services.index.ingest import ingest_paths

    monkeypatch.setenv(SECRET, "do-not-index-me")
    folder = hostile_folder(tmp_path)
    named = [folder / "pipe.txt", folder / "a.txt", folder / "env.txt", "/dev/zero", "/proc/self/environ",
             "/proc/self/status", folder / "linked_folder"]
    started = time.perf_counter()
    report = run_bounded(lambda: ingest_paths(lib, kb, named))
    assert time.perf_counter() - started < 30
    reasons = [r.reason for r in report.results]
    assert all(r.status == "failed" for r in report.results), reasons
    assert "命名管道" in reasons[0] and "符号链接" in reasons[1] and "符号链接" in reasons[2]
    assert "设备文件" in reasons[3] and "虚拟文件" in reasons[4] and "虚拟文件" in reasons[5]
    assert "符号链接" in reasons[6]
    assert lib.store.list_documents(kb.id) == []
    assert b"do-not-index-me" not in (lib.root / "wendao.db").read_bytes()


def test_every_read_is_bounded_whatever_stat_says(tmp_path, monkeypatch):
    """A file whose stat says 0 bytes (like /proc files, or one growing while read) is read only up
    to the limit + 1 byte, then refused as too large."""
    from services.documents import files

    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "0.01")
    limit = int(0.01 * 1024 * 1024)
    big = tmp_path / "grows.txt"
    big.write_bytes("长江。".encode() * limit)  # 9x the limit
    real_fstat, real_read = os.fstat, os.read
    read = []

    class Zero:
        def __init__(self, st):
            self._st = st

        def __getattr__(self, name):
            return 0 if name == "st_size" else getattr(self._st, name)

    monkeypatch.setattr(files.os, "fstat", lambda fd: Zero(real_fstat(fd)))
    monkeypatch.setattr(files.os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    with pytest.raises(errors.FileTooLarge) as caught:
        files.read_regular_file(big)
    assert "上限" in caught.value.message_zh
    assert sum(read) <= limit + 1
    small = tmp_path / "small.txt"
    small.write_text(TEXT_B, encoding="utf-8")
    assert files.read_regular_file(small).decode() == TEXT_B


@pytest.mark.slow
def test_cli_ingest_of_a_hostile_folder_never_hangs_or_leaks(tmp_path, data_dir):
    """The real command on a folder with a FIFO and links to /etc/passwd, /proc/self/environ and
    /dev/zero (with a secret in its environment): finishes, indexes the two real files, leaks
    nothing, and `check` is clean."""
    folder = hostile_folder(tmp_path)
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), SECRET: "env-secret-value-91"}
    done = cli(["ingest", "--kb", "k", "--allow-failures", folder], env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "文档 2 个" in done.stdout
    assert done.stdout.count("符号链接") == 7 and "命名管道" in done.stdout
    db = (data_dir / "wendao.db").read_bytes()
    assert b"env-secret-value-91" not in db and b"root:x:0:0" not in db
    check = cli(["check", "--kb", "k"], env)
    assert check.returncode == 0, check.stdout + check.stderr
    search = cli(["search", "--kb", "k", "--json", "root"], env)
    assert all("root:" not in h["text"] for h in json.loads(search.stdout)["hits"])


# --- item 7: untrusted names are shown, not obeyed -----------------------------------------------
HOSTILE_NAMES = ["a\x1b[31mred\x1b[0m.txt", "two\nlines.txt", "invoice\u202eexe.txt", "x\u2066y\u2069\u200f.txt",
                 "bell\x07\x9b2J.txt"]


def test_display_name_makes_controls_and_bidi_visible():
    from services.documents.text import display_name

    assert display_name("invoice\u202eexe.txt") == "invoice<U+202E>exe.txt"
    assert display_name("a\x1b[31mred.txt") == "a<U+001B>[31mred.txt"
    assert display_name("two\nlines.txt") == "two<U+000A>lines.txt"
    assert display_name("bell\x07\x9b2J.txt") == "bell<U+0007><U+009B>2J.txt"
    assert display_name("长江 报告（2024）.pdf") == "长江 报告（2024）.pdf"
    for name in HOSTILE_NAMES:
        shown = display_name(name)
        assert shown.isprintable(), repr(shown)
        assert not any(ch in shown for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def test_stored_name_is_unchanged_and_pages_show_it_visibly(data_dir):
    from streamlit.testing.v1 import AppTest

    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("资料", create=True)
    ingest_bytes(lib, kb, TEXT.encode(), "invoice\u202eexe.txt")
    assert [d.filename for d in lib.store.list_documents(kb.id)] == ["invoice\u202eexe.txt"]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("components/pages/library.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["文件名"]) == ["invoice<U+202E>exe.txt"]
    picker = next(s for s in at.selectbox if s.label == "查看或调整的文档")
    assert all("\u202e" not in str(o) for o in picker.options)


@pytest.mark.slow
def test_cli_output_never_carries_control_characters(tmp_path, data_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = [TEXT, TEXT_B, "北京是中国的首都。上海是中国最大的城市之一。", "黄河是中华民族的母亲河。", "火星被称为红色星球。"]
    for name, text in zip(HOSTILE_NAMES, texts):
        (folder / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    done = cli(["ingest", "--kb", "k", "-v", folder], env)
    assert done.returncode == 0, done.stderr
    search = cli(["search", "--kb", "k", "长江", "行星", "首都"], env)
    for out in (done.stdout, done.stderr, search.stdout):
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out and "\x9b" not in out
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == len(HOSTILE_NAMES) and all("：完成 — " in line for line in progress), progress
    assert any("two<U+000A>lines.txt" in line for line in progress)
    assert "invoice<U+202E>exe.txt" in search.stdout or "invoice<U+202E>exe.txt" in done.stderr
    stored = {r[0] for r in sqlite3.connect(data_dir / "wendao.db").execute("SELECT filename FROM documents")}
    assert stored == set(HOSTILE_NAMES)  # the names themselves are kept exactly


# --- item 6: kill -9 while embedding ----------------------------------------------------------------
KILLER = """
import sys
sys.path.insert(0, "tests")
try:  # where fault injection is a test-only hook (tests/faults.py), install it
    import faults; faults.install()
except ImportError:
    pass
from services.index.library import open_library
from services.index.ingest import ingest_bytes
from services.documents.chunking import ChunkingConfig
lib = open_library()
kb = lib.kb("k", create=True)
ingest_bytes(lib, kb, open(sys.argv[1], "rb").read(), sys.argv[2], ChunkingConfig("sentence", 40, 0))
print("DONE", flush=True)
"""
LONG = "".join(f"第{i}条：长江流经第{i}座城市，沿岸有{i * 7}个码头。" for i in range(60))  # ~60 chunks, 2 batches


def kill_while_embedding(env, path: Path) -> None:
    """Ingest `path` in a child and kill -9 it once the first batch of vectors is computed (the
    document is already keyword-searchable, its vectors are not written)."""
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path), path.name], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**env, "WENDAO_FAULT_PAUSE_S": "60", "WENDAO_FAULT_AT": "embedding"})
    try:
        for line in proc.stdout:
            if line.startswith("FAULT_POINT embedding"):
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=120) == -signal.SIGKILL
    finally:
        proc.kill()


def pending_documents(data_dir) -> list:
    db = sqlite3.connect(data_dir / "wendao.db")
    try:
        return db.execute("SELECT filename FROM documents WHERE status='ready' AND dense_state='pending'").fetchall()
    finally:
        db.close()


@pytest.fixture
def killed_mid_embedding(tmp_path, data_dir):
    """A data dir whose one document 'long.txt' was left keyword-only by kill -9 during embedding."""
    path = tmp_path / "long.txt"
    path.write_text(LONG, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    kill_while_embedding(env, path)
    assert pending_documents(data_dir) == [("long.txt",)]
    return env, path


@pytest.mark.slow
def test_check_names_keyword_only_documents_and_reupload_completes_them(killed_mid_embedding, data_dir):
    env, path = killed_mid_embedding
    report = json.loads(cli(["check", "--kb", "k", "--json"], env).stdout)
    assert report["ok"] and report["vectors_pending"] == ["long.txt"]
    strict = cli(["check", "--kb", "k", "--strict"], env)
    assert strict.returncode == 1 and "long.txt" in strict.stdout and "向量未完成" in strict.stdout
    again = cli(["ingest", "--kb", "k", "--json", path], env)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)["files"][0]
    assert result["status"] == "ok" and "补全" in result["warnings"][0], result
    assert pending_documents(data_dir) == []
    assert cli(["check", "--kb", "k", "--strict"], env).returncode == 0
    dense = json.loads(cli(["search", "--kb", "k", "--json", "--mode", "dense", "第17座城市的码头"], env).stdout)
    assert dense["hits"] and dense["hits"][0]["doc"] == "long.txt"


@pytest.mark.slow
def test_app_start_completes_vectors_a_killed_process_left_pending(killed_mid_embedding, data_dir):
    """Nothing is uploaded: opening the app alone starts the worker, which writes the vectors."""
    from streamlit.testing.v1 import AppTest

    from services.index.library import open_library

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    deadline = time.time() + 120
    while pending_documents(data_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert pending_documents(data_dir) == []
    lib = open_library(data_dir)
    assert_check_clean(lib, lib.kb("k"))


HOLDER = """
import sys
from services.index.library import open_library
lib = open_library()
print("owner" if lib.owner else "not owner", flush=True)
sys.stdin.read()
"""


def hold_data_dir(env):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "owner"
    return proc


@pytest.mark.slow
def test_worker_runs_pending_vectors_once_its_process_becomes_owner(killed_mid_embedding, data_dir):
    """The app started while a CLI command held the data dir: when that command ends, the app's
    worker becomes the owner by itself and completes the pending vectors."""
    from services import worker
    from services.index.library import Library

    env, _ = killed_mid_embedding
    holder = hold_data_dir(env)
    try:
        lib = Library(data_dir)
        assert not lib.owner
        worker.start(lib)
        time.sleep(3)
        assert pending_documents(data_dir) == [("long.txt",)]  # the holder owns: nothing touched
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    deadline = time.time() + 120
    while pending_documents(data_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert lib.owner and pending_documents(data_dir) == []
    assert_check_clean(lib, lib.kb("k"))
    lib.close()


# --- item 8: check while another process owns the data dir ----------------------------------------
@pytest.mark.slow
def test_check_works_while_another_process_owns_the_data_dir(tmp_path, data_dir):
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    (tmp_path / "rivers.txt").write_text(TEXT, encoding="utf-8")
    assert cli(["ingest", "--kb", "k", tmp_path / "rivers.txt"], env).returncode == 0
    holder = hold_data_dir(env)
    try:
        done = cli(["check", "--kb", "k"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "一致" in done.stdout and "需要写入" not in done.stderr and "缓存的向量" in done.stdout
        cache = sqlite3.connect(data_dir / "embeddings.db")  # damage: one chunk's vector is lost
        cache.execute("DELETE FROM vectors WHERE rowid = (SELECT MIN(rowid) FROM vectors)")
        cache.commit()
        cache.close()
        damaged = json.loads(cli(["check", "--kb", "k", "--json"], env).stdout)
        assert not damaged["ok"] and damaged["indexes"]["dense"]["missing"] == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# --- item 5: full and read-only disks --------------------------------------------------------------
MIB = 1024 * 1024


def test_ingest_refused_before_writing_when_the_disk_is_short(lib, kb, monkeypatch):
    from services.index import storage
    from services.index.ingest import ingest_bytes

    assert ingest_bytes(lib, kb, TEXT.encode(), "rivers.txt").status == "ok"
    before = doc_state(lib, kb)
    big = ("长江是中国第一大河。" * 70_000).encode()  # ~2 MB of text
    monkeypatch.setattr(storage, "free_bytes", lambda root: storage.RESERVE_BYTES + MIB)
    result = ingest_bytes(lib, kb, big, "big.txt")
    assert result.status == "failed" and result.reason.startswith("磁盘空间不足：还需约 "), result.reason
    needed = int(result.reason.split("还需约 ")[1].split(" MB")[0])
    assert 2 <= needed <= 50  # the estimate follows the upload (text, chunks, vectors), not a constant
    assert doc_state(lib, kb) == before and not list((lib.root / "originals").rglob(".*tmp"))
    assert_check_clean(lib, kb)


def _submit_upload(worker, lib, kb, name: str, data: bytes) -> int:
    """Queue an upload as the library page does (the job API with a kind, or the older upload-only one)."""
    import inspect

    from services.documents.chunking import ChunkingConfig

    if "kind" in inspect.signature(worker.submit).parameters:
        return worker.submit(lib, kb, "ingest", name, ChunkingConfig().to_dict(), data=data)
    return worker.submit(lib, kb, name, data, ChunkingConfig())


def test_upload_from_the_page_refused_when_the_disk_is_short(lib, kb, monkeypatch):
    from services import worker
    from services.index import storage

    monkeypatch.setattr(storage, "free_bytes", lambda root: storage.RESERVE_BYTES)
    with pytest.raises(errors.DiskFull) as caught:
        _submit_upload(worker, lib, kb, "a.txt", TEXT.encode() * 100)
    assert "磁盘空间不足：还需约" in caught.value.message_zh
    assert not (lib.root / "uploads").exists() or not list((lib.root / "uploads").iterdir())
    assert lib.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


@pytest.mark.parametrize("code, word", [("ENOSPC", "磁盘空间不足"), ("EROFS", "只读")])
def test_injected_disk_errors_while_writing_leave_the_kb_as_it_was(lib, kb, monkeypatch, code, word):
    import errno

    from services.index.ingest import ingest_bytes

    assert ingest_bytes(lib, kb, TEXT.encode(), "rivers.txt").status == "ok"
    before = doc_state(lib, kb)

    def failing(*args, **kwargs):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(type(lib.originals), "save", failing)  # after the rows, before 'ready'
    result = ingest_bytes(lib, kb, TEXT_B.encode(), "planets.txt")
    assert result.status == "failed" and word in result.reason, result.reason
    assert "Errno" not in result.reason and "内部错误" not in result.reason
    assert doc_state(lib, kb) == before
    assert_check_clean(lib, kb)


def test_sqlite_database_full_is_a_typed_chinese_error(lib, kb):
    """A real SQLITE_FULL (the database may not grow: max_page_count) in the middle of an ingest."""
    from services.index.ingest import ingest_bytes

    assert ingest_bytes(lib, kb, TEXT.encode(), "rivers.txt").status == "ok"
    before = doc_state(lib, kb)
    pages = lib.store.db.execute("PRAGMA page_count").fetchone()[0]
    lib.store.db.execute(f"PRAGMA max_page_count = {pages}")
    result = ingest_bytes(lib, kb, ("黄河是中华民族的母亲河。" * 3000).encode(), "huanghe.txt")
    assert result.status == "failed" and "磁盘空间不足" in result.reason, result.reason
    lib.store.db.execute("PRAGMA max_page_count = 1073741823")
    assert doc_state(lib, kb) == before
    assert_check_clean(lib, kb)


def test_storage_errors_are_recognised():
    import errno

    assert isinstance(errors.storage_error(OSError(errno.ENOSPC, "No space left on device")), errors.DiskFull)
    assert isinstance(errors.storage_error(OSError(errno.EROFS, "Read-only file system")), errors.ReadOnlyStorage)
    assert isinstance(errors.storage_error(RuntimeError("Service internal error: No space left on device (os error 28)")),
                      errors.DiskFull)
    wrapped = errors.WendaoError("x")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert isinstance(errors.storage_error(wrapped), errors.DiskFull)
    assert errors.storage_error(ValueError("bad")) is None
    assert errors.DiskFull(needed_bytes=5 * MIB + 1, free_bytes=3 * MIB).message_zh.startswith(
        "磁盘空间不足：还需约 6 MB（数据目录所在磁盘剩余 3 MB）")


def test_read_only_disk_opens_for_reading_and_refuses_every_write(data_dir, monkeypatch):
    """A Library opened on a disk that cannot be written (probe injected: EROFS) reads SQLite
    read-only, searches (dense from the cached vectors), checks, and refuses writes in Chinese."""
    from services.index import storage
    from services.index.ingest import ingest_bytes
    from services.index.library import Library
    from services.index.maintenance import check
    from services.search.retrieval import Retriever
    from services.index.vectors import close_all

    lib = Library(data_dir)
    kb = lib.kb("k", create=True)
    assert ingest_bytes(lib, kb, TEXT.encode(), "rivers.txt").status == "ok"
    before = doc_state(lib, kb)
    lib.close()
    close_all()
    monkeypatch.setattr(storage, "probe", lambda root: errors.ReadOnlyStorage())
    ro = Library(data_dir)
    try:
        kb = ro.kb("k")
        assert not ro.owner and ro.store.readonly
        assert "珠穆朗玛峰" in Retriever(ro, kb).search("珠穆朗玛峰有多高").hits[0].text
        assert Retriever(ro, kb).search("珠穆朗玛峰有多高", mode="dense").hits
        report = check(ro, kb)
        assert report["ok"] and report["indexes"]["dense"]["mode"] == "cache", report
        for write in (lambda: ro.kb("new", create=True), lambda: ro.delete_document(kb, next(iter(ro.store.filenames(kb.id)))),
                      lambda: ro.rename_kb(kb, "x")):
            with pytest.raises(errors.ReadOnlyStorage):
                write()
        result = ingest_bytes(ro, kb, TEXT_B.encode(), "planets.txt")
        assert result.status == "failed" and "只读" in result.reason
        assert doc_state(ro, kb) == before
    finally:
        ro.close()


@pytest.mark.parametrize("probe, word", [("short", "磁盘空间不足：还需约 36 MB"), ("ENOSPC", "磁盘空间不足"),
                                         ("EROFS", "磁盘无法写入")])
def test_a_new_data_dir_on_a_disk_that_cannot_take_it_says_why(tmp_path, monkeypatch, probe, word):
    """The second walkthrough of issue 22: a new data dir on an empty 60 MB disk (under the 96 MB the
    vector store needs) said 「数据目录所在的磁盘无法写入」 for every command; too little room now says
    how much more is needed, and only a read-only disk says it cannot be written."""
    import errno

    from services.index import storage
    from services.index.library import Library

    if probe == "short":
        monkeypatch.setattr(storage, "free_bytes", lambda root: 60 * MIB)
    else:
        def failing(*args, **kwargs):
            raise OSError(getattr(errno, probe), os.strerror(getattr(errno, probe)))

        monkeypatch.setattr(storage.os, "write", failing)  # the probe's test file cannot be written
    with pytest.raises(errors.StorageError) as caught:
        Library(tmp_path / "new")
    assert word in caught.value.message_zh, caught.value.message_zh
    assert isinstance(caught.value, errors.ReadOnlyStorage if probe == "EROFS" else errors.DiskFull)
    assert "还没有知识库数据" in caught.value.message_zh
    assert not (tmp_path / "new" / "wendao.db").exists()


UNSHARE = shutil.which("unshare")


def _can_unshare() -> bool:
    if not UNSHARE or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run([UNSHARE, "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


NAMESPACE_SCRIPT = r"""
set -u
M="$1"; DATA="$2"; OUT="$3"; MODE="$4"; LEAVE="$5"; NEWFILE="$6"
if [ "$MODE" = full ]; then
  mount -t tmpfs -o size=160m tmpfs "$M"
  cp -a "$DATA" "$M/data"
  FREE=$(df -m --output=avail "$M" | tail -1)
  dd if=/dev/zero of="$M/filler" bs=1M count=$((FREE - LEAVE)) status=none 2>/dev/null || true
  export WENDAO_DATA_DIR="$M/data"
else
  mount --bind "$DATA" "$M" && mount -o remount,bind,ro "$M"
  export WENDAO_DATA_DIR="$M"
fi
df -m --output=avail "$M" | tail -1 > "$OUT/free"
i=0
for c in "kbs --json" "search --kb k --json 珠穆朗玛峰有多高" "search --kb k --json --mode dense 珠穆朗玛峰有多高" \
         "check --kb k --json" "ask --kb k --json --no-llm 珠穆朗玛峰有多高" "chunks --kb k --doc rivers.txt --json" \
         "ingest --kb k $NEWFILE" "reindex --kb k" "kbs --json" "check --kb k --json"; do
  i=$((i+1))
  "$PYTHON" -m services $c > "$OUT/$i.out" 2> "$OUT/$i.err"
  echo $? > "$OUT/$i.rc"
done
"""
READS = {1: "kbs", 2: "search", 3: "search dense", 4: "check", 5: "ask", 6: "chunks"}


@pytest.mark.slow
@pytest.mark.parametrize("mode, leave_mb", [("full", 18), ("full", 0), ("readonly", 0)])
def test_real_full_or_read_only_disk(tmp_path, data_dir, mode, leave_mb):
    """A real tmpfs with 18 MB left (every command used to die of SIGBUS) or none left ("No space
    left on device" tracebacks), and a real read-only bind mount ("unable to open database file"):
    read commands work; ingest and reindex are refused in Chinese; the KB is as it was."""
    if not _can_unshare():
        pytest.skip("no user namespaces with mounts here (unshare -Urm)")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "PYTHON": sys.executable}
    (tmp_path / "rivers.txt").write_text(TEXT, encoding="utf-8")
    assert cli(["ingest", "--kb", "k", tmp_path / "rivers.txt"], env).returncode == 0
    before = json.loads(cli(["kbs", "--json"], env).stdout)
    (tmp_path / "new.txt").write_text(TEXT_B, encoding="utf-8")
    mount, out = tmp_path / "mnt", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    subprocess.run([UNSHARE, "-Urm", "bash", "-c", NAMESPACE_SCRIPT, "ns", mount, data_dir, out, mode,
                    str(leave_mb), tmp_path / "new.txt"], cwd=ROOT, env=env, timeout=600, check=True)
    assert int((out / "free").read_text()) <= max(leave_mb, 0) + 1 or mode == "readonly"
    results = {i: (int((out / f"{i}.rc").read_text()), (out / f"{i}.out").read_text(), (out / f"{i}.err").read_text())
               for i in range(1, 11)}
    for i, name in READS.items():
        rc, stdout, stderr = results[i]
        assert rc == 0, (name, rc, stderr[-2000:])
        json.loads(stdout.splitlines()[-1])
        assert "Traceback" not in stderr, (name, stderr)
    assert json.loads(results[2][1])["hits"][0]["doc"] == "rivers.txt"
    assert json.loads(results[3][1])["hits"], "dense search works from the cached vectors"
    assert json.loads(results[4][1])["ok"]
    word = "只读" if mode == "readonly" else "磁盘空间不足：还需约"
    for i in (7, 8):  # ingest, reindex
        rc, stdout, stderr = results[i]
        assert rc == 1 and word in stderr and "Traceback" not in stderr, (i, rc, stderr[-2000:])
    assert json.loads(results[9][1]) == before and json.loads(results[10][1])["ok"]  # nothing lost
    assert json.loads(cli(["kbs", "--json"], env).stdout) == before  # the original data dir too


@pytest.mark.slow
def test_real_small_disk_with_a_new_data_dir_says_how_much_room_is_missing(tmp_path):
    """An empty 60 MB tmpfs and a data dir not yet created on it: every command said 「数据目录所在的
    磁盘无法写入」; it now says 「磁盘空间不足：还需约 N MB」 in Chinese, without a traceback."""
    if not _can_unshare():
        pytest.skip("no user namespaces with mounts here (unshare -Urm)")
    mount, out = tmp_path / "mnt", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    script = r"""
set -u
mount -t tmpfs -o size=60m tmpfs "$1"
export WENDAO_DATA_DIR="$1/data"
i=0
for c in "kbs --json" "ingest --kb k $3"; do
  i=$((i+1))
  "$PYTHON" -m services $c > "$2/$i.out" 2> "$2/$i.err"
  echo $? > "$2/$i.rc"
done
"""
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([UNSHARE, "-Urm", "bash", "-c", script, "ns", mount, out, tmp_path / "a.txt"], cwd=ROOT,
                   env=env, timeout=300, check=True)
    for i in (1, 2):
        rc, err = int((out / f"{i}.rc").read_text()), (out / f"{i}.err").read_text()
        assert rc == 1 and "磁盘空间不足：还需约 " in err and "Traceback" not in err, (i, rc, err[-2000:])
        assert "无法写入" not in err


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root ignores file permissions (the read-only mount case covers it)")
def test_read_only_copy_by_permissions(tmp_path, data_dir):
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    (tmp_path / "rivers.txt").write_text(TEXT, encoding="utf-8")
    assert cli(["ingest", "--kb", "k", tmp_path / "rivers.txt"], env).returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    subprocess.run(["chmod", "-R", "a-w", str(copy)], check=True)
    try:
        ro = {**env, "WENDAO_DATA_DIR": str(copy)}
        for args in (["kbs", "--json"], ["search", "--kb", "k", "--json", "长江"], ["check", "--kb", "k", "--json"]):
            done = cli(args, ro)
            assert done.returncode == 0, done.stderr
        refused = cli(["ingest", "--kb", "k", tmp_path / "rivers.txt"], ro)
        assert refused.returncode == 1 and "只读" in refused.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True)


# --- item 8: the smaller cases -----------------------------------------------------------------------
def test_page_ranges():
    from services.documents.doctypes import page_ranges

    assert page_ranges(range(2, 5001)) == "第2–5000页"
    assert page_ranges([1, 3, 4, 5, 9]) == "第1、3–5、9页"
    assert page_ranges([7]) == "第7页"
    many = page_ranges(range(1, 200, 2))  # 100 separate pages
    assert many.endswith("等，共 100 页") and len(many) < 120


def test_pdf_of_thousands_of_empty_pages_warns_in_ranges():
    """4,999 pages, only the first with text: the warning names the range, not 4,998 numbers."""
    import io

    from pypdf import PdfReader, PdfWriter

    from fixtures import make_pdf
    from services.documents.parsing import parse

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([ZH_PARAGRAPHS[0]]))))
    box = writer.pages[0].mediabox
    for _ in range(4998):
        writer.add_blank_page(width=box.width, height=box.height)
    out = io.BytesIO()
    writer.write(out)
    doc = parse(out.getvalue(), "blank.pdf")
    assert doc.page_count == 4999 and len(doc.skipped_pages) == 4998
    (warning,) = [w for w in doc.warnings if "没有可用文字" in w]
    assert warning.endswith("第2–4999页") and len(warning) < 60, warning


def _ooxml_with(data: bytes, part: str, change) -> bytes:
    import io
    import zipfile

    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            body = source.read(info.filename)
            target.writestr(info, change(body) if info.filename == part else body)
    return out.getvalue()


def _with_dtd(xml: bytes, declarations: bytes) -> bytes:
    """Insert <!DOCTYPE root [declarations]> before the root element of an XML part."""
    head, sep, rest = xml.partition(b"?>") if xml.startswith(b"<?xml") else (b"", b"", xml)
    rest = rest.lstrip()
    root = rest[1:].split(b" ", 1)[0].split(b">", 1)[0]
    return head + sep + b"<!DOCTYPE " + root + b" [" + declarations + b"]>" + rest


def _xlsx() -> bytes:
    import io

    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["河流", "长度"])
    book.active.append(["长江", "6300 公里"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _pptx(body: str) -> bytes:
    import io

    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "长江"
    slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


@pytest.mark.parametrize("declarations", [b'<!ENTITY x "&#38271;&#27743;">', b'<!ENTITY x SYSTEM "file:///etc/passwd">',
                                          b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">',
                                          b"<!ELEMENT worksheet ANY>"])
def test_xlsx_with_a_dtd_says_what_it_is(declarations):
    from services.documents.parsing import parse

    hostile = _ooxml_with(_xlsx(), "xl/worksheets/sheet1.xml", lambda xml: _with_dtd(xml, declarations))
    with pytest.raises(errors.UnsafeXml) as caught:
        parse(hostile, "表.xlsx")
    assert "DTD" in caught.value.message_zh and "为安全起见" in caught.value.message_zh
    assert "已损坏" not in caught.value.message_zh
    assert "长江" in parse(_xlsx(), "表.xlsx").text  # an ordinary workbook still reads


def test_pptx_entity_never_silently_drops_the_text_after_it():
    from services.documents.parsing import parse

    def entity(xml: bytes) -> bytes:
        return _with_dtd(xml, '<!ENTITY x "实体">'.encode()).replace("前文XX后文".encode(), "前文&x;后文".encode())

    plain = parse(_pptx("前文XX后文"), "s.pptx")
    assert "前文XX后文" in plain.text
    with pytest.raises(errors.UnsafeXml) as caught:  # it used to give "长江\n前文": the rest was lost
        parse(_ooxml_with(_pptx("前文XX后文"), "ppt/slides/slide1.xml", entity), "s.pptx")
    assert "DTD" in caught.value.message_zh


@pytest.mark.slow
def test_one_line_markdown_of_a_megabyte_indexes_in_linear_time():
    """Parse, chunk and tokenise a 1 MB one-line Markdown file with and without punctuation: both
    well under a minute (each stage is linear; embedding time follows the chunk count)."""
    import random

    from services.documents.chunking import ChunkingConfig, chunk_text
    from services.documents.parsing import parse
    from services.index.index_text import document_title, index_rows, index_text

    rng = random.Random(1)
    words = ["长江", "黄河", "中国", "城市", "发展", "经济", "历史", "文化"]
    for punct in (True, False):
        parts, size = [], 0
        while size < 1024 * 1024:
            s = "".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + (rng.choice("，。；！？、") if punct else "")
            parts.append(s)
            size += len(s.encode())
        started = time.perf_counter()
        doc = parse("".join(parts).encode(), "one-line.md")
        chunks = chunk_text(doc.text, ChunkingConfig(), doc.page_at)
        title = document_title(doc.text, doc.filename)
        index_rows([index_text(title, c) for c in chunks])
        assert time.perf_counter() - started < 60
        assert all(len(c.text) <= 300 for c in chunks)
