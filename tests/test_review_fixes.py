"""Fixes from the review of the per-KB model names and the upload cap (each test failed before its fix)."""
import pytest
from fastapi.testclient import TestClient

from services import errors
from test_team import team  # noqa: F401 - the shared fixture (admin A, editor B, viewer C, D; keys)


# --- the upload cap ---------------------------------------------------------------------------------------------
def capped(team, monkeypatch, limit: int):
    """The team's workspace with WENDAO_MAX_UPLOADS_PER_KEY = `limit` and the worker busy elsewhere (uploads stay
    queued), and KB1 as the write key sees it."""
    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", str(limit))
    ws.lib.store.jobs.claim_next = lambda: None
    return ws, who, ws.session(who["KB1-write"]).kb("KB1", "editor")


def test_an_upload_whose_job_is_written_is_counted_once(team, monkeypatch):
    """The reservation of an upload was released only after its job row was written: in between, the upload
    counted as queued and as starting, so with a limit of 2 the second upload was refused while one was in flight."""
    ws, who, kb = capped(team, monkeypatch, 2)
    jobs = ws.lib.store.jobs
    add, second = jobs.add, []

    def add_then_upload_again(*args, **kw):
        job = add(*args, **kw)
        if not second:  # the first upload's row is written; its call has not returned yet
            second.append(None)
            second[0] = kb.upload("b.txt", "第二份。".encode())
        return job

    monkeypatch.setattr(jobs, "add", add_then_upload_again)
    assert kb.upload("a.txt", "第一份。".encode())
    assert second and second[0]  # before: TooManyUploads (1 queued + 1 starting >= 2)
    with pytest.raises(errors.TooManyUploads) as refused:
        kb.upload("c.txt", "第三份。".encode())
    assert "已有 2 个上传" in str(refused.value) and "上限 2 个" in str(refused.value)


def test_the_refusal_says_how_many_are_in_flight(team, monkeypatch):
    """The message said the limit where it meant the count (「已有 {limit} 个」)."""
    ws, who, kb = capped(team, monkeypatch, 1)
    kb.upload("a.txt", "第一份。".encode())
    # a job queued meanwhile by the same key (another process): the count is 2, the limit 1
    ws.lib.store.jobs.add(kb.id, "ingest", "x.txt", {"by": [f"k{who['KB1-write'].key_id}"]})
    with pytest.raises(errors.TooManyUploads) as refused:
        kb.upload("b.txt", "第二份。".encode())
    assert "已有 2 个上传" in str(refused.value) and "上限 1 个" in str(refused.value)


def test_a_refused_upload_leaves_no_file_behind(team, monkeypatch):
    ws, who, kb = capped(team, monkeypatch, 1)
    kb.upload("a.txt", "第一份。".encode())
    kept = set((ws.lib.root / "uploads").iterdir())
    check = ws.lib.store.jobs.check_caps  # past the pre-check (a place was free then): the insert decides
    monkeypatch.setattr(ws.lib.store.jobs, "check_caps", lambda *a: check(*a) if ws.lib.store.db.in_transaction else None)
    with pytest.raises(errors.TooManyUploads):
        kb.upload("b.txt", "第二份。".encode())
    assert set((ws.lib.root / "uploads").iterdir()) == kept


def test_the_api_refuses_an_upload_over_the_cap_before_reading_it(team, monkeypatch):
    """The API read the whole file (up to 200 MB) into memory before the cap refused it."""
    from starlette.datastructures import UploadFile

    from services.api import create_api

    ws, who, keys = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "1")
    ws.lib.store.jobs.claim_next = lambda: None
    client = TestClient(create_api(), raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {keys['KB1-write'].key}"}
    assert client.post("/v1/kbs/KB1/documents", headers=headers, files={"file": ("a.txt", "第一份。".encode())}).status_code == 202
    reads = []
    original = UploadFile.read

    async def read(self, *args):
        reads.append(args)
        return await original(self, *args)

    monkeypatch.setattr(UploadFile, "read", read)
    refused = client.post("/v1/kbs/KB1/documents", headers=headers, files={"file": ("b.txt", "第二份。".encode())})
    assert refused.status_code == 429 and "已有 1 个上传" in refused.json()["error"]["message"]
    assert reads == []  # before: the bytes were read first


@pytest.mark.parametrize("value", ["abc", "-1", "2.5"])
def test_a_bad_upload_limit_is_refused_in_chinese(team, monkeypatch, value):
    """A non-numeric value raised a bare ValueError; a negative one refused every upload."""
    from services.config import max_uploads_in_flight

    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", value)
    with pytest.raises(errors.WendaoError, match="WENDAO_MAX_UPLOADS_PER_KEY 应为不小于 0 的整数"):
        ws.session(who["KB1-write"]).kb("KB1", "editor").upload("a.txt", "一份。".encode())
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "0")
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_USER", " 5 ")
    assert max_uploads_in_flight() == (0, 5)


# --- fine-tuned models of the same name ---------------------------------------------------------------------------
def _metrics(mrr: float) -> dict:
    return {kind: {"recall@1": 0.5, "recall@5": 0.8, "recall@10": 0.9, "mrr@10": mrr} for kind in ("dense", "hybrid")}


def _fake_model(folder, kb, name, kind="embedding", mrr=0.9, made=None) -> str:
    """A fine-tuned model folder as services.tuning leaves it (the card only: nothing loads it here)."""
    import json
    import time

    folder.mkdir(parents=True)
    card = {"name": name, "kind": kind, "base_model": "multilingual-e5-small", "kb": kb.name, "kb_id": kb.id,
            "created_at": made or time.time() + 1, "pairs": {"train": 34, "heldout": 6, "dev": 0},
            "settings": {"epochs": 1}, "better": False, "losses": [1.0]}
    if kind == "embedding":
        card.update(before={**_metrics(0.5), "queries": 6}, after={**_metrics(mrr), "queries": 6})
    else:
        side = {"questions": 6, "recall@1": 0.5, "recall@5": 0.8, "mrr@10": mrr, "coverage@1000chars": 0.7, "p50_ms": 10}
        card.update(results={"heldout": {"off": side, "on": side}}, seconds=3, added_ms_p50=5)
    (folder / "wendao_card.json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return str(folder)


@pytest.fixture
def same_names(data_dir):
    """Two KBs that both have a fine-tuned model "m1" (per KB), the first also an old top-level "m1" and a reranker
    "r1" both old (models/r1) and per KB."""
    import time

    from services.index.library import open_library
    from services.tuning.finetune import kb_models_dir, models_dir

    from services.index.ingest import ingest_bytes
    from test_app import GBK_TEXT

    lib = open_library(data_dir)
    first, second = lib.kb("甲库", create=True), lib.kb("乙库", create=True)
    ingest_bytes(lib, first, GBK_TEXT.encode("gbk"), "rivers.txt")  # the page needs a searchable KB
    paths = {"甲-new": _fake_model(kb_models_dir(lib, first) / "m1", first, "m1", mrr=0.91),
             "乙-new": _fake_model(kb_models_dir(lib, second) / "m1", second, "m1", mrr=0.92),
             "甲-old": _fake_model(models_dir(lib) / "m1", first, "m1", mrr=0.93, made=time.time()),
             "甲-r-old": _fake_model(models_dir(lib) / "r1", first, "r1", kind="reranker", made=time.time()),
             "甲-r-new": _fake_model(kb_models_dir(lib, first) / "r1", first, "r1", kind="reranker")}
    return lib, first, second, paths


def test_the_finetune_page_shows_models_of_the_same_name_apart(same_names):
    """Delete buttons were keyed by the model's name: with "m1" in two KBs (names are per KB) the page crashed with
    StreamlitDuplicateElementKey, and the 微调前后对比 choice picked the first "m1" whichever was chosen."""
    from test_app import app

    lib, first, _, paths = same_names
    at = app("finetune")  # the single local user sees every KB's models; 甲库 is picked
    assert at.session_state["kb_id"] == first.id
    deletes = [b for b in at.button if b.label == "删除"]
    assert len(deletes) == 5  # 3 embedders (2 of 甲库, 1 of 乙库) + 甲库's 2 rerankers; before: a duplicate key
    [choice] = [s for s in at.selectbox if s.label == "微调模型"]
    assert len(choice.options) == 2 and len(set(choice.options)) == 2  # told apart by their time
    assert all(label.startswith("m1（") for label in choice.options)
    shown = {}
    for which in ("甲-new", "甲-old"):
        choice.set_value(paths[which]).run()
        assert not at.exception, [e.value for e in at.exception]
        shown[which] = at.dataframe[0].value.to_csv()
    assert shown["甲-new"] != shown["甲-old"]  # before: the first "m1" whichever was chosen
    assert ",0.91\n" in shown["甲-new"] and ",0.93\n" in shown["甲-old"]


def test_an_old_top_level_model_takes_its_name_in_its_kb(same_names):
    """`taken_name` looked only in the KB's new folder: a new "r1" could be trained beside the KB's old top-level "r1"."""
    import shutil

    from services.tuning.finetune import new_model_folder
    from services.workspace import open_workspace

    lib, first, second, paths = same_names
    shutil.rmtree(paths["甲-r-new"])
    kb = open_workspace(lib.root, background=False).session().kb(first.id)
    with pytest.raises(errors.InvalidName, match="已有名为「r1」"):
        kb.finetune("R1", kind="reranker")
    with pytest.raises(errors.InvalidName, match="已有名为「r1」"):
        new_model_folder(lib, lib.store.get_kb(first.id), "r1")
    assert new_model_folder(lib, lib.store.get_kb(second.id), "r1")  # 乙库's names are its own


def test_deleting_one_of_two_models_of_the_same_name_deletes_that_one(same_names):
    from pathlib import Path

    from services.workspace import open_workspace
    from test_app import app

    lib, first, _, paths = same_names
    order = [m["path"] for m in open_workspace(lib.root, background=False).session().finetuned_models()]
    at = app("finetune")
    deletes = [b for b in at.button if b.label == "删除"]
    deletes[order.index(paths["甲-old"])].click().run()  # the embedders' cards come first, in the core's order
    assert not at.exception, [e.value for e in at.exception]
    assert [k for k, p in paths.items() if not Path(p).exists()] == ["甲-old"]
    with pytest.raises(errors.WendaoError, match="有 2 个名为「m1」"):  # by name: ambiguous, nothing deleted
        open_workspace(lib.root, background=False).session().delete_finetuned_model("m1")


# --- bench/rerank.py ----------------------------------------------------------------------------------------------
def test_the_rerank_benchmark_skips_queries_whose_reranking_failed(monkeypatch):
    """A failed rerank's time is under "rerank_attempt": the benchmark read timings_ms["rerank"] and stopped (KeyError)."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from services.config import RetrievalSettings

    bench = str(Path(__file__).resolve().parent.parent / "bench")
    monkeypatch.syspath_prepend(bench)
    sys.modules.pop("rerank", None)
    import rerank

    timings = iter([{"rerank": 1.0}, {"rerank": 4.0}, {"rerank_attempt": 9.0}, {"rerank": 2.0}, {"rerank_attempt": 8.0}])

    class FakeRetriever:
        def __init__(self, *args):
            pass

        def search(self, question):
            return SimpleNamespace(timings_ms=next(timings))

    monkeypatch.setattr("services.search.retrieval.Retriever", FakeRetriever)
    monkeypatch.setattr("services.index.kb_settings.retrieval_settings", lambda lib, kb: RetrievalSettings())
    questions = [SimpleNamespace(question=f"问题{i}") for i in range(5)]
    result = rerank.rerank_latency(None, None, "/m", questions, 4)  # the first search loads the model
    assert result["rerank_p50_ms"] == 3.0 and result["latency_queries"] == 2 and result["rerank_failed"] == 2
    sys.modules.pop("rerank", None)


# --- a document's failure reason -----------------------------------------------------------------------------------
def test_a_viewer_does_not_see_a_documents_failure_reason(team):
    """README: viewers see no 失败原因; the library's table still showed a document's error (which may name server
    paths) to them."""
    import sqlite3

    from services.index.ingest import ingest_bytes

    ws, who, _ = team
    kb1 = ws.lib.store.find_kb("KB1")
    ingest_bytes(ws.lib, kb1, "一份文档。".encode(), "a.txt")
    [doc] = [d for d in ws.lib.store.list_documents(kb1.id) if d.filename == "a.txt"]
    with sqlite3.connect(ws.lib.store.path) as db:  # a reason left by an older version
        db.execute("UPDATE documents SET error=? WHERE id=?", ("读取 /srv/wendao/uploads/x 失败", doc.id))
    assert ws.session(who["B"]).kb("KB1").document(doc.id).error == "读取 /srv/wendao/uploads/x 失败"  # editor
    viewer = ws.session(who["C"]).kb("KB1")
    assert not any(d.error for d in viewer.documents()) and viewer.document(doc.id).error is None


# --- forwarded addresses: the two nginx setups README names -------------------------------------------------------
def test_the_proxy_setups_readme_names_give_the_real_client():
    """README's WENDAO_TRUSTED_PROXIES row: the proxy must append X-Forwarded-For, or, setting only X-Real-IP, clear
    it; the client's own headers then never choose the address."""
    import ipaddress

    from services.serving import client_address

    nets = [ipaddress.ip_network("127.0.0.1/32")]
    # $proxy_add_x_forwarded_for: the client's made-up entry, then the real address; a made-up X-Real-IP passed on
    appended = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7"), (b"x-real-ip", b"6.6.6.7")]
    assert client_address("127.0.0.1", appended, nets) == ("198.51.100.7", None)
    # X-Real-IP $remote_addr with X-Forwarded-For "" (nginx drops an empty header)
    assert client_address("127.0.0.1", [(b"x-real-ip", b"198.51.100.8")], nets) == ("198.51.100.8", None)
    # what README warns about: X-Real-IP set, the client's X-Forwarded-For passed on unchanged, wins
    assert client_address("127.0.0.1", [(b"x-forwarded-for", b"6.6.6.6"), (b"x-real-ip", b"198.51.100.9")],
                          nets) == ("6.6.6.6", None)


def test_readme_says_the_proxy_must_append_forwarded_for():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `WENDAO_TRUSTED_PROXIES`"))
    assert "$proxy_add_x_forwarded_for" in row and 'X-Forwarded-For "";' in row


def test_the_upload_caps_tags_are_not_handed_out_with_the_job(team):
    """The job's parameters carried `by` (the uploading key's and its maker's ids) to every editor reading the job."""
    ws, who, _ = team
    ws.lib.store.jobs.claim_next = lambda: None
    job = ws.session(who["KB1-write"]).kb("KB1", "editor").upload("a.txt", "一份。".encode())
    assert "by" in ws.lib.store.jobs.get(job).params  # kept for the cap
    editor = ws.session(who["B"])
    assert "by" not in editor.job(job).params and "by" not in editor.kb("KB1").job(job).params
    assert all("by" not in j.params for j in editor.kb("KB1").jobs())
    assert "params" not in editor.job(job).to_json()
