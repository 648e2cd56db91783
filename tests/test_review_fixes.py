"""Fixes from the review of the per-KB model names and the upload cap (each test failed before its fix)."""
import pytest
from fastapi.testclient import TestClient

from services import errors
from test_team import team  # noqa: F401 - the shared fixture (admin A, editor B, viewer C, D; keys)


# --- the upload cap ---------------------------------------------------------------------------------------------
def test_an_upload_whose_job_is_written_is_counted_once(team, monkeypatch):
    """The reservation of an upload was released only after its job row was written: in between, the upload
    counted as queued and as starting, so with a limit of 2 the second upload was refused while one was in flight."""
    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "2")
    jobs = ws.lib.store.jobs
    jobs.claim_next = lambda: None  # the worker busy elsewhere: uploads stay queued
    kb = ws.session(who["KB1-write"]).kb("KB1", "editor")
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
    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "1")
    ws.lib.store.jobs.claim_next = lambda: None
    kb = ws.session(who["KB1-write"]).kb("KB1", "editor")
    kb.upload("a.txt", "第一份。".encode())
    # a job queued meanwhile by the same key (another process): the count is 2, the limit 1
    ws.lib.store.jobs.add(kb.id, "ingest", "x.txt", {"by": [f"k{who['KB1-write'].key_id}"]})
    with pytest.raises(errors.TooManyUploads) as refused:
        kb.upload("b.txt", "第二份。".encode())
    assert "已有 2 个上传" in str(refused.value) and "上限 1 个" in str(refused.value)


def test_a_refused_upload_leaves_no_file_behind(team, monkeypatch):
    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "1")
    ws.lib.store.jobs.claim_next = lambda: None
    kb = ws.session(who["KB1-write"]).kb("KB1", "editor")
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
def test_a_bad_upload_limit_is_refused_in_chinese(monkeypatch, value):
    """A non-numeric value raised a bare ValueError; a negative one refused every upload."""
    from services.config import max_uploads_in_flight

    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", value)
    with pytest.raises(errors.WendaoError, match="WENDAO_MAX_UPLOADS_PER_KEY"):
        max_uploads_in_flight()
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "0")
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_USER", " 5 ")
    assert max_uploads_in_flight() == (0, 5)
