"""An adversarial review of team mode (issue 19): each test is an attack that worked before its fix.

- an editor (or a write key) pointing the KB's embedding / rerank model at a server of their choosing
  through a `served:` model name, past the owner-only endpoint rule and the internal-address guard;
- cross-origin POSTs to /api from any web page (CSRF: uploads in single-user mode, login CSRF);
- API keys that outlive the rights of the user who made them (removed, demoted);
- parallel wrong passwords outrunning the sign-in throttle;
- fine-tuned models of private KBs listed (with the KB's name) to everyone, deletable by whoever
  later owns a KB of the same name;
- destructive actions missing from the audit log;
- model-endpoint requests following redirects / DNS answers to link-local and metadata addresses.
"""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from services import auth, errors, worker
from services.access import LOCAL
from services.config import LLMSettings, served_name
from test_team import PASSWORD, team  # noqa: F401 - the shared fixture (admin A, editor B, viewer C, D; keys)

EVIL = served_name("http://attacker.example/v1", "steal")


def _app(address="127.0.0.1"):
    """The server's ASGI stack as components/server.py builds it, minus the Streamlit pages."""
    from services.api import create_api
    from services.serving import GuardMiddleware, SignInMiddleware

    inner = Starlette(routes=[Mount("/api", app=create_api())])
    return GuardMiddleware(SignInMiddleware(inner), lambda: address)


# --- 1. model servers chosen by an editor ----------------------------------------------------------------
def test_an_editor_cannot_send_the_kb_to_a_model_server_of_their_choosing(team, monkeypatch):
    ws, who, _ = team
    for name in ("B", "KB1-write"):
        editor = ws.session(who[name]).kb("KB1", "editor")
        before = editor.embedding_model()
        with pytest.raises(errors.PermissionDenied):
            editor.reembed(EVIL)
        with pytest.raises(errors.PermissionDenied):
            editor.save_retrieval(replace(editor.retrieval_settings(), rerank=True, reranker_model=EVIL))
        with pytest.raises(errors.PermissionDenied):
            editor.test_reranker(EVIL)
        assert editor.refresh().retrieval_settings().reranker_model != EVIL
        assert not [j for j in editor.jobs(since=0.0, kinds=("reembed",)) if j.filename == EVIL]
        assert editor.embedding_model() == before
        # choosing among in-process models stays an editor's decision
        editor.save_retrieval(replace(editor.retrieval_settings(), reranker_model="bge-reranker-base"))
    viewer = ws.session(who["C"]).kb("KB1")
    with pytest.raises(errors.PermissionDenied):  # an evaluation run is no back door
        viewer.evaluate(['{"question": "长江有多长？", "answer": "6300"}'], ["hybrid"], [True], ["current"],
                        overrides={"rerank": True, "reranker_model": EVIL})
    # the owner may, but in team mode not towards internal addresses
    owner = ws.session(who["A"]).kb("KB1", "owner")
    for url in ("http://169.254.169.254/v1", "http://127.0.0.1:9/v1"):
        with pytest.raises(errors.UnsafeEndpoint):
            owner.reembed(served_name(url, "m"))
        with pytest.raises(errors.UnsafeEndpoint):
            owner.save_retrieval(replace(owner.retrieval_settings(), reranker_model=served_name(url, "m")))
    # the server's own model server (configured by the operator) is every editor's to use
    monkeypatch.setenv("WENDAO_RERANK_BASE_URL", "http://127.0.0.1:7997")
    editor = ws.session(who["B"]).kb("KB1", "editor")
    editor.save_retrieval(replace(editor.retrieval_settings(), reranker_model=served_name("http://127.0.0.1:7997", "r")))
    assert worker.wait_idle(ws.lib, 120)


# --- 2. cross-origin requests (CSRF) -----------------------------------------------------------------------
def test_cross_origin_posts_are_refused_in_single_user_mode(data_dir, monkeypatch):
    """Without sign-in, any web page the user visits could upload into their KBs with a plain form POST
    (a "simple" request: no preflight); the browser always says where such a request comes from."""
    monkeypatch.delenv("WENDAO_AUTH", raising=False)
    from services.workspace import open_workspace

    ws = open_workspace(data_dir)
    ws.session(LOCAL).create_kb("KB")
    client = TestClient(_app(), base_url="http://127.0.0.1:8501")
    upload = {"files": {"file": ("x.txt", "注入的内容。".encode())}}
    for origin in ("https://evil.example", "null", "http://127.0.0.1:3000", "http://localhost:8501"):
        r = client.post("/api/v1/kbs/KB/documents", headers={"Origin": origin}, **upload)
        assert r.status_code == 403 and "跨站" in r.json()["error"]["message"], (origin, r.text)
    r = client.post("/api/v1/retrieval", headers={"Sec-Fetch-Site": "cross-site"}, json={"kb": "KB", "query": "x"})
    assert r.status_code == 403
    assert ws.session(LOCAL).kb("KB").documents() == [] and not ws.session(LOCAL).kb("KB").jobs(since=0.0)
    # the app's own pages (same origin) and non-browser clients (no Origin) are served
    assert client.post("/api/v1/kbs/KB/documents", headers={"Origin": "http://127.0.0.1:8501"}, **upload).status_code == 202
    assert client.post("/api/v1/kbs/KB/documents", **upload).status_code == 202
    assert client.get("/api/v1/kbs", headers={"Origin": "https://evil.example"}).status_code == 200  # reads: CORS
    # a name the operator declared (a reverse proxy in front) counts as ours
    monkeypatch.setenv("WENDAO_ALLOWED_HOSTS", "wendao.corp.example")
    proxied = TestClient(_app(), base_url="http://127.0.0.1:8501")
    assert proxied.post("/api/v1/kbs/KB/documents", headers={"Origin": "https://wendao.corp.example"},
                        **upload).status_code == 202
    assert worker.wait_idle(ws.lib, 120)
    ws.lib.close()


def test_login_csrf_and_cross_origin_cookie_writes_are_refused(team):
    """A page elsewhere cannot sign the victim into the attacker's account (their questions would land
    there), nor use the victim's cookie for writes from a sibling origin (same site, other port)."""
    ws, _, _ = team
    client = TestClient(_app(), base_url="http://127.0.0.1:8501", follow_redirects=False)
    r = client.post("/api/auth/login", data={"name": "D", "password": PASSWORD},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and auth.COOKIE not in r.headers.get("set-cookie", "")
    ok = client.post("/api/auth/login", data={"name": "B", "password": PASSWORD},
                     headers={"Origin": "http://127.0.0.1:8501"})
    assert ok.status_code == 303 and auth.COOKIE in ok.headers["set-cookie"]
    r = client.post("/api/v1/kbs/KB1/documents", files={"file": ("x.txt", "注入。".encode())},
                    headers={"Origin": "http://127.0.0.1:9000"})
    assert r.status_code == 403
    r = client.post("/api/auth/logout", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert client.post("/api/v1/kbs/KB1/documents", files={"file": ("x.txt", "正常上传。".encode())},
                       headers={"Origin": "http://127.0.0.1:8501"}).status_code == 202
    assert worker.wait_idle(ws.lib, 120)


def test_cross_origin_websocket_is_refused():
    """A page on another origin cannot open the app's WebSocket (it would drive the UI with no sign-in
    in single-user mode), even when the Host is ours."""
    from starlette.websockets import WebSocket

    from services.serving import GuardMiddleware

    async def echo(scope, receive, send):
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await ws.send_text("hello")
        await ws.close()

    client = TestClient(GuardMiddleware(echo, lambda: "127.0.0.1"), base_url="http://127.0.0.1:8501")
    with client.websocket_connect("/_stcore/stream", headers={"Host": "127.0.0.1:8501", "Origin": "http://127.0.0.1:8501"}) as ws:
        assert ws.receive_text() == "hello"
    with pytest.raises(Exception):
        with client.websocket_connect("/_stcore/stream", headers={"Host": "127.0.0.1:8501", "Origin": "https://evil.example"}) as ws:
            ws.receive_text()


# --- 3. keys that outlive their maker's rights -------------------------------------------------------------
def test_a_key_never_grants_more_than_its_maker_still_has(team):
    from services.api import create_api

    ws, who, keys = team
    admin = ws.session(who["A"])
    admin.kb("KB1", "owner").share("B", "owner")
    key = ws.session(who["B"]).kb("KB1", "owner").create_key("write")
    client = TestClient(create_api())
    bearer = {"Authorization": f"Bearer {key.key}"}

    def upload():
        return client.post("/v1/kbs/KB1/documents", files={"file": ("y.txt", "新文档。".encode())}, headers=bearer)

    assert upload().status_code == 202
    admin.kb("KB1", "owner").share("B", "viewer")  # demoted: their write key reads only
    assert upload().status_code == 403
    assert client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=bearer).status_code == 200
    admin.kb("KB1", "owner").share("B", "")  # no access at all: the key sees nothing
    assert client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=bearer).status_code == 404
    admin.kb("KB1", "owner").share("B", "owner")
    assert upload().status_code == 202
    admin.remove_user("B")  # removed: the keys they made are revoked (and say so in the keys panel)
    r = client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=bearer)
    assert r.status_code == 401
    assert next(k for k in admin.kb("KB1", "owner").keys() if k.id == key.id).revoked_at is not None
    assert any(e.action == "key_revoked" and e.detail.startswith(f"#{key.id}") for e in admin.audit_log())
    # keys made by an admin or on the server's command line are unaffected
    assert client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"},
                       headers={"Authorization": f"Bearer {keys['KB1-read'].key}"}).status_code == 200
    cli_key = ws.session(LOCAL).kb("KB1", "owner").create_key("read")
    assert auth.principal_from_key(ws.lib.store, cli_key.key) is not None
    assert worker.wait_idle(ws.lib, 120)


# --- 4. the throttle against parallel guesses ----------------------------------------------------------------
def test_parallel_wrong_passwords_do_not_outrun_the_throttle(team):
    ws, _, _ = team
    outcomes = []

    def guess(i):
        try:
            auth.sign_in(ws.lib.store, ws.lib.root, "C", f"guess-{i:04d}", "10.9.9.9")
        except errors.SignInThrottled:
            outcomes.append("throttled")
        except errors.SignInFailed:
            outcomes.append("checked")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(guess, range(8)))
    assert outcomes.count("checked") <= auth.MAX_FAILURES, outcomes
    with pytest.raises(errors.SignInThrottled):
        auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD, "10.9.9.9")
    assert auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD, "10.0.0.1")  # another address is not locked out


# --- 5. fine-tuned models follow their KB --------------------------------------------------------------------
def _fake_model(ws, name, kb, kind="embedding"):
    from services.tuning.finetune import CARD, models_dir

    folder = models_dir(ws.lib) / name
    folder.mkdir(parents=True)
    card = {"name": name, "kind": kind, "kb": kb.name, "kb_id": kb.id, "created_at": time.time(), "after": {},
            "results": {}}
    (folder / CARD).write_text(json.dumps(card), encoding="utf-8")
    return folder


def test_fine_tuned_models_are_seen_and_deleted_only_through_their_kb(team):
    ws, who, _ = team
    kb2 = ws.session(who["A"]).kb("KB2", "owner")
    folder = _fake_model(ws, "薪资模型", kb2)
    reranker = _fake_model(ws, "薪资重排", kb2, kind="reranker")
    for name in ("B", "C", "D", "KB1-write"):
        me = ws.session(who[name])
        assert [m["name"] for m in me.finetuned_models()] == []  # KB2's name and model stay private
        assert [m["name"] for m in me.finetuned_models("reranker")] == []
        with pytest.raises((errors.KnowledgeBaseNotFound, errors.WendaoError)):
            me.delete_finetuned_model("薪资模型")
    assert folder.exists()
    # KB2 renamed; D creates a KB with its old name: D still does not own KB2's model
    kb2.rename("KB2-新")
    ws.session(who["D"]).create_kb("KB2")
    d = ws.session(who["D"])
    assert [m["name"] for m in d.finetuned_models()] == []
    with pytest.raises(errors.WendaoError):
        d.delete_finetuned_model("薪资模型")
    with pytest.raises(errors.WendaoError):
        d.delete_finetuned_model("薪资重排")
    assert folder.exists() and reranker.exists()
    a = ws.session(who["A"])
    assert [m["name"] for m in a.finetuned_models()] == ["薪资模型"]
    a.delete_finetuned_model("薪资重排")  # rerankers are deleted the same way
    a.delete_finetuned_model("薪资模型")
    assert not folder.exists() and not reranker.exists()
    assert {"model_deleted"} <= {e.action for e in a.audit_log()}
    # a KB id is reused after the newest KB is deleted: a model of the deleted KB does not pass to the new one
    gone = a.create_kb("临时")
    orphan = _fake_model(ws, "临时模型", gone)
    gone.delete()
    reused = d.create_kb("新库")
    assert reused.id == gone.id
    assert d.finetuned_models() == [] and orphan.exists()
    with pytest.raises(errors.WendaoError):
        d.delete_finetuned_model("临时模型")


def test_members_cannot_probe_or_load_server_folders_as_models(team, tmp_path):
    """A member naming a server folder as a model learned whether it exists (a different error) and
    could load files from wherever the server can read; an admin may, a visible fine-tuned model stays
    selectable, and the refusal is the same for a folder that exists and one that does not."""
    ws, who, _ = team
    kb1 = ws.session(who["A"]).kb("KB1", "owner")
    trained = _fake_model(ws, "KB1模型", kb1)
    real = tmp_path / "secret-model"
    real.mkdir()
    editor = ws.session(who["B"]).kb("KB1", "editor")
    before = editor.embedding_model()
    messages = set()
    for name in (str(real), str(tmp_path / "no-such-folder"), "~/.ssh", "../../etc"):
        with pytest.raises(errors.PermissionDenied) as refused:
            editor.reembed(name)
        messages.add(refused.value.message_zh)
        with pytest.raises(errors.PermissionDenied):
            editor.save_retrieval(replace(editor.retrieval_settings(), rerank=True, reranker_model=name))
        with pytest.raises(errors.PermissionDenied):
            editor.test_reranker(name)
    assert len(messages) == 1 and "管理员" in next(iter(messages))
    assert editor.refresh().embedding_model() == before
    # registry models, hub ids and the KB's own fine-tuned model stay an editor's choice
    editor.save_retrieval(replace(editor.retrieval_settings(), reranker_model="bge-reranker-base"))
    editor.save_retrieval(replace(editor.retrieval_settings(), reranker_model="BAAI/bge-reranker-v2-m3"))
    editor._check_model(str(trained))
    # another member who cannot see KB1 cannot name its model's folder either
    with pytest.raises(errors.PermissionDenied):
        ws.session(who["D"]).create_kb("D的库").reembed(str(trained))
    # an admin may use a server folder
    ws.session(who["A"]).kb("KB1", "owner")._check_model(str(real))
    assert worker.wait_idle(ws.lib, 120)


def test_deleted_text_leaves_no_cached_vectors_behind(team):
    """Walkthrough: after a KB was deleted, uploading the same file elsewhere said "向量全部来自缓存" —
    the embedding cache kept the deleted text's vectors, telling any member that someone once had
    that text. Vectors of text no KB holds any more are dropped; text another KB still holds keeps them."""
    ws, who, _ = team
    lib = ws.lib
    a = ws.session(who["A"])
    secret = "机密备忘录：第三季度并购目标为某某科技有限公司，报价每股十二元。" * 3
    shared = "公开资料：公司成立于二〇〇一年，总部位于重庆。" * 3
    kb = a.create_kb("机密")
    other = a.create_kb("公开")
    kb.upload("secret.txt", secret.encode())
    kb.upload("shared.txt", shared.encode())
    other.upload("shared.txt", shared.encode())
    assert worker.wait_idle(lib, 120)

    def cached(keys):
        return {k for k in keys if lib.cache.db.execute("SELECT 1 FROM vectors WHERE hash=?", (k,)).fetchone()}

    secret_keys = lib.store.embed_keys_of(kb.id, lib.store.find_by_filename(kb.id, "secret.txt")[0].id)
    shared_keys = lib.store.embed_keys_of(other.id)
    assert secret_keys and cached(secret_keys) == secret_keys and cached(shared_keys) == shared_keys
    kb.delete_document(lib.store.find_by_filename(kb.id, "secret.txt")[0].id)
    assert cached(secret_keys) == set()  # a deleted document's vectors go with it
    kb.upload("secret.txt", secret.encode())
    assert worker.wait_idle(lib, 120)
    kb.delete()
    assert cached(secret_keys) == set() and cached(shared_keys) == shared_keys  # still held by 公开


# --- 6. audit gaps ---------------------------------------------------------------------------------------------
def test_destructive_actions_are_audited(team):
    ws, who, _ = team
    kb = ws.session(who["B"]).kb("KB1", "editor")
    kb.evaluate(['{"question": "长江有多长？", "doc_file": "k1.txt", "answer": "六千三百公里"}'], ["bm25"], [False],
                ["current"], keep=True)  # a set with no usable question is refused (and not saved)
    assert worker.wait_idle(ws.lib, 120)
    kb.delete_question_set()
    kb.reembed("multilingual-e5-small (内置)")
    job = kb.reindex()
    kb.cancel(job)
    stream = kb.ask("长江有多长？")
    stream.finish()
    kb.delete_conversation(stream.conversation)
    assert worker.wait_idle(ws.lib, 120)
    actions = {(e.actor, e.action, e.target) for e in ws.session(who["A"]).audit_log()}
    for action in ("question_set_deleted", "reembed", "conversation_deleted"):
        assert ("B", action, "KB1") in actions, action
    assert {("B", "job_cancelled", "KB1"), ("B", "job_cancel_too_late", "KB1")} & actions  # it may have finished


# --- 7. model endpoints: redirects and DNS answers ------------------------------------------------------------
class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_POST(self):  # noqa: N802
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def connections(monkeypatch):
    """Every TCP connection the process opens (host, port); only loopback ones are really made."""
    made = []
    real = socket.create_connection

    def record(address, *args, **kwargs):
        host, port = address[0], address[1]
        ip = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]  # where it would connect
        made.append((ip, port))
        if ip not in ("127.0.0.1", "::1"):
            raise OSError("no network in tests")
        return real((ip, port), *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", record)
    return made


def test_endpoint_redirects_to_metadata_are_not_followed(team, monkeypatch, connections):
    ws, who, _ = team
    monkeypatch.setenv("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "1")  # the LAN model server is allowed; metadata never
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    _Redirect.target = "http://169.254.169.254/latest/meta-data/iam/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kb = ws.session(who["A"]).kb("KB1", "owner")
        base = f"http://127.0.0.1:{server.server_port}/v1"
        with pytest.raises(errors.WendaoError):
            kb.test_llm(LLMSettings(base_url=base, model="m", timeout=5, max_retries=0))
        with pytest.raises(errors.WendaoError):
            kb.use_rerank_server(base, "r")
    finally:
        server.shutdown()
    assert connections and not [c for c in connections if c[0].startswith("169.254")], connections


def test_endpoint_dns_answers_are_checked_when_connecting(team, monkeypatch, connections):
    """DNS rebinding: the name resolves to a public address when the endpoint is checked and to the
    metadata address when the client connects; the address connected to is the one checked."""
    ws, who, _ = team
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"] + ["169.254.169.254"] * 50)

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            ip = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, args[0] if args else 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    kb = ws.session(who["A"]).kb("KB1", "owner")
    with pytest.raises(errors.WendaoError):
        kb.test_llm(LLMSettings(base_url="http://rebind.example/v1", model="m", timeout=5, max_retries=0))
    assert not [c for c in connections if str(c[0]).startswith("169.254")], connections


def test_principal_cannot_be_forged_by_headers_or_query(team):
    """The API knows the caller only from a key or the signed session cookie: an X-Forwarded-User,
    a user id in the query or a cookie of the right name with a made-up value gets nothing."""
    ws, who, _ = team
    client = TestClient(_app(), base_url="http://127.0.0.1:8501", follow_redirects=False)
    for headers in ({"X-Forwarded-User": "A"}, {"X-Remote-User": "A", "Remote-User": "A"},
                    {"Cookie": f"{auth.COOKIE}=1"}, {"Authorization": "Bearer wd_" + "A" * 43}):
        r = client.get("/api/v1/kbs?user=A&admin=1", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        page = client.get("/?user=A", headers=headers)
        assert page.status_code == 303 and page.headers["location"] == "/api/auth/login"


def test_removed_or_demoted_users_lose_access_at_once(team):
    """Checked sound: the principal is read from the sessions and users tables on every request, so a
    removed user's cookie dies with them and a demoted admin is a member at the next request."""
    from services.api import create_api

    ws, who, _ = team
    client = TestClient(create_api())
    admin = ws.session(who["A"])
    admin.add_user("E", PASSWORD, admin=True)
    e_cookie = auth.sign_in(ws.lib.store, ws.lib.root, "E", PASSWORD)
    b_cookie = auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD)
    client.cookies.set(auth.COOKIE, e_cookie)
    assert {k["name"] for k in client.get("/v1/kbs").json()["kbs"]} == {"KB1", "KB2"}
    admin.set_admin("E", False)
    assert client.get("/v1/kbs").json()["kbs"] == []
    client.cookies.set(auth.COOKIE, b_cookie)
    assert [k["name"] for k in client.get("/v1/kbs").json()["kbs"]] == ["KB1"]
    admin.remove_user("B")
    assert client.get("/v1/kbs").status_code == 401
    assert auth.principal_from_cookie(ws.lib.store, ws.lib.root, b_cookie) is None


def test_a_new_password_ends_every_session_of_that_user(team):
    ws, who, _ = team
    old = [auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD) for _ in range(2)]  # two browsers
    with pytest.raises(errors.PermissionDenied):
        ws.session(who["C"]).set_password("B", "c-chose-this-1")
    ws.session(who["B"]).set_password("B", "new-horse-22")  # their own
    assert all(auth.principal_from_cookie(ws.lib.store, ws.lib.root, c) is None for c in old)
    with pytest.raises(errors.SignInFailed):
        auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "10.1.1.1")
    fresh = auth.sign_in(ws.lib.store, ws.lib.root, "B", "new-horse-22")
    ws.session(who["A"]).set_password("B", "admin-reset-33")  # an admin resets it
    assert auth.principal_from_cookie(ws.lib.store, ws.lib.root, fresh) is None
    assert [e.actor for e in ws.session(who["A"]).audit_log() if e.action == "password_changed"] == ["A", "B"]
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "services", "user", "passwd", "C", "--password-stdin"],
                         input="cli-horse-444\n", capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "WENDAO_DATA_DIR": str(ws.lib.root)})
    assert out.returncode == 0, out.stderr
    assert auth.sign_in(ws.lib.store, ws.lib.root, "C", "cli-horse-444")


def test_model_server_credentials_never_reach_api_callers(team, monkeypatch):
    """An endpoint may carry credentials (http://user:pass@host/v1): the job that switches to it is
    named after it, and jobs are readable by every editor and write key of the KB (a viewer's and a read
    key's request is refused: re-embedding is an editor's job)."""
    from services.api import create_api

    ws, who, keys = team
    monkeypatch.setenv("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "1")
    from model_server import FakeModelServer

    owner = ws.session(who["A"]).kb("KB1", "owner")
    with FakeModelServer(models=["bge-m3"]) as server:  # the switch probes the server first (walkthrough s27 #6)
        job = owner.use_embedding_server(server.url.replace("http://", "http://svc:s3cret-pass@"), "bge-m3")
        client = TestClient(create_api())
        r = client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {keys['KB1-write'].key}"})
        assert r.status_code == 200 and "bge-m3" in r.text
        assert "s3cret-pass" not in r.text
        r = client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {keys['KB1-read'].key}"})
        assert r.status_code == 403 and "s3cret-pass" not in r.text
        assert "s3cret-pass" not in json.dumps([e.to_json() for e in ws.session(who["A"]).audit_log()], ensure_ascii=False)
        assert worker.wait_idle(ws.lib, 120)


def test_oversized_bodies_are_refused_before_they_are_read(team, monkeypatch):
    """FastAPI reads a request's whole body (JSON into memory, multipart to temporary files) before it
    asks who is calling: anyone who reaches the port could fill memory or disk without a key."""
    from services.api import create_api

    ws, _, keys = team
    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "1")
    client = TestClient(create_api())
    big = b"x" * (3 * 1024 * 1024)
    r = client.post("/v1/kbs/KB1/documents", files={"file": ("big.txt", big)})
    assert r.status_code == 413 and r.json()["error"]["message"]
    r = client.post("/v1/retrieval", content=b'{"kb": "KB1", "query": "' + b"x" * (17 * 1024 * 1024) + b'"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"y" * (1024 * 1024)

    r = client.post("/v1/retrieval", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # within the limits everything works as before
    ok = client.post("/v1/kbs/KB1/documents", files={"file": ("ok.txt", "正常大小的文档。".encode())},
                     headers={"Authorization": f"Bearer {keys['KB1-write'].key}"})
    assert ok.status_code == 202
    assert worker.wait_idle(ws.lib, 120)


def test_sign_in_bursts_hash_a_few_passwords_at_a_time_and_forget_old_names(team, monkeypatch):
    """Sign-in needs no account: a burst under made-up names must not run dozens of 64 MiB argon2
    hashes at once, nor grow the throttle's memory without bound."""
    import argon2

    ws, _, _ = team
    running, peak, lock = [0], [0], threading.Lock()
    real_hash, real_verify = argon2.PasswordHasher.hash, argon2.PasswordHasher.verify

    def watched(real):
        def run(self, *args, **kwargs):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                time.sleep(0.05)
                return real(self, *args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1
        return run

    monkeypatch.setattr(argon2.PasswordHasher, "hash", watched(real_hash))
    monkeypatch.setattr(argon2.PasswordHasher, "verify", watched(real_verify))

    def guess(i):
        with pytest.raises(errors.SignInFailed):
            auth.sign_in(ws.lib.store, ws.lib.root, f"nobody-{i}" if i % 2 else "C", f"guess-{i}", f"10.0.0.{i}")

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(guess, range(12)))
    assert peak[0] <= auth.HASHING_SLOTS
    throttle = auth.Throttle()
    monkeypatch.setattr(auth, "MAX_TRACKED", 100)
    old = time.time() - auth.FAILURE_WINDOW_S - 1
    throttle._failures.update({(f"n{i}", "a"): [old] for i in range(150)})
    throttle.attempt("fresh", "b")
    assert set(throttle._failures) == {("fresh", "b"), ("fresh", auth.ANY), (auth.ANY, "b")}  # the old ones dropped


def _handshake(url: str, path: str, origin: str, cookie: str = "") -> str:
    """The status line a raw WebSocket handshake gets."""
    import base64
    import os
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: {origin}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


@pytest.mark.slow
def test_against_wendao_serve_cross_origin_sign_in_and_websocket_are_refused(tmp_path):
    """The same rules in the real server (`wendao serve`, st.App with the middleware), by raw HTTP."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.parse
    import urllib.request

    from fixtures import free_port, serving, stop
    from test_team import ROOT

    env = {**os.environ, "WENDAO_DATA_DIR": str(tmp_path / "data"), "WENDAO_AUTH": "local"}
    made = subprocess.run([sys.executable, "-m", "services", "user", "add", "alice", "--password-stdin"],
                          input=PASSWORD + "\n", env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
    try:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)

        def sign_in(origin):
            data = urllib.parse.urlencode({"name": "alice", "password": PASSWORD}).encode()
            request = urllib.request.Request(url + "/api/auth/login", data=data, headers={"Origin": origin})
            try:
                return opener.open(request, timeout=30)
            except urllib.error.HTTPError as exc:
                return exc

        foreign = sign_in("https://evil.example")
        assert foreign.status == 403 and "Set-Cookie" not in foreign.headers
        own = sign_in(url)
        assert own.status == 303
        cookie = own.headers["Set-Cookie"].split(";", 1)[0]
        assert _handshake(url, "/_stcore/stream", "https://evil.example", cookie).split()[1] != "101"
        assert _handshake(url, "/_stcore/stream", "http://localhost:3000", cookie).split()[1] != "101"
        assert _handshake(url, "/_stcore/stream", url, cookie).split()[1] == "101"
    finally:
        stop(proc)


# --- KB names are unique per owner: another user's private KB name never leaks ---------------------------
def test_a_private_kb_name_does_not_leak_through_create_or_rename(team):
    """Names were UNIQUE across the data dir: member D, who may not see A's KB2, learned it existed
    from "知识库「KB2」已存在" when creating or renaming a KB of that name. Now names are unique per
    owner: D gets their own KB2, and only their own names are refused."""
    ws, who, _ = team
    d = ws.session(who["D"])
    mine = d.create_kb("KB2")  # A's private KB2 exists: no refusal, nothing said about it
    assert [k.name for k in d.kbs()] == ["KB2"] and d.kb("KB2").id == mine.id != ws.session(who["A"]).kb("KB2").id
    with pytest.raises(errors.KnowledgeBaseError) as exc:
        d.create_kb("KB2")  # their own name: refused, speaking of their own KB
    assert "你已经有一个叫「KB2」的知识库" in exc.value.message_zh
    other = d.create_kb("草稿")
    other.rename("KB1")  # A's KB1 (shared with B and C, not D): renaming onto it says nothing either
    with pytest.raises(errors.KnowledgeBaseError):
        other.rename("KB2")  # onto their own KB2: refused
    assert {k.name for k in d.kbs()} == {"KB1", "KB2"}
    assert d.kb("KB1").id == other.id
    # the admin sees both KB2s and gets their own first; the key for A's KB2 stays on A's KB2
    a = ws.session(who["A"])
    assert a.kb("KB2").id != mine.id and ws.session(who["KB2-read"]).kb("KB2").id == a.kb("KB2").id
    # an upload by D went to D's KB, not A's
    assert d.kb("KB2").documents() == [] and [x.filename for x in a.kb("KB2").documents()] == ["k2.txt"]


def test_two_visible_kbs_of_one_name_ask_for_the_id(team):
    """A viewer who can see two KBs of one name (neither theirs) gets a Chinese error naming both ids;
    "#id" picks one, in the core, the CLI's --kb and the HTTP API (409 with the message)."""
    from services.api import create_api

    ws, who, keys = team
    b = ws.session(who["B"])
    own = b.create_kb("KB1")  # B's own KB1 beside A's KB1 (where B is editor)
    assert b.kb("KB1").id == own.id  # their own first
    own.share("C", "viewer")
    c = ws.session(who["C"])
    with pytest.raises(errors.AmbiguousKnowledgeBase) as exc:
        c.kb("KB1")
    a_kb1 = ws.session(who["A"]).kb("KB1")
    message = exc.value.message_zh
    assert f"#{a_kb1.id}" in message and f"#{own.id}" in message and "「B」创建" in message and "编号" in message
    assert c.kb(f"#{own.id}").id == own.id and c.kb(f"#{a_kb1.id}").id == a_kb1.id
    with pytest.raises(errors.KnowledgeBaseNotFound):
        ws.session(who["D"]).kb(f"#{own.id}")  # an id is no way around the permission check
    client = TestClient(create_api())
    client.cookies.set(auth.COOKIE, auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD))
    r = client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江有多长"})
    assert r.status_code == 409 and f"#{own.id}" in r.json()["error"]["message"], r.text
    r = client.post("/v1/retrieval", json={"kb": f"#{a_kb1.id}", "query": "长江有多长"})
    assert r.status_code == 200 and r.json()["hits"][0]["doc"] == "k1.txt", r.text
    r = client.post("/v1/chat/completions", json={"model": f"#{a_kb1.id}", "messages": [{"role": "user", "content": "长江有多长"}]})
    assert r.status_code == 200 and r.json()["model"] == "KB1", r.text
    listed = client.get("/v1/kbs").json()["kbs"]
    assert sorted((k["name"], k["id"]) for k in listed) == sorted([("KB1", a_kb1.id), ("KB1", own.id)])
    client.cookies.clear()  # a key for A's KB1 resolves "KB1" to it, whatever else is named so
    r = client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江有多长"},
                    headers={"Authorization": f"Bearer {keys['KB1-read'].key}"})
    assert r.status_code == 200, r.text


def test_cli_kb_resolves_its_own_name_first_and_takes_an_id(team, capsys):
    """The command line acts as the local admin: its own KB first, "#id" for another owner's."""
    from services import cli

    ws, who, _ = team
    theirs = ws.session(who["D"]).create_kb("资料")
    theirs.upload("d.txt", "丁的文档：黄河是中国第二长河。".encode())
    ours = ws.session(LOCAL).create_kb("资料")  # the command line's own, beside D's
    ours.upload("ours.txt", "本机的文档：黄河流经黄土高原。".encode())
    assert worker.wait_idle(ws.lib, 120)
    assert cli.main(["search", "--kb", "资料", "--json", "黄河"]) == 0
    out = capsys.readouterr().out
    assert "ours.txt" in out and "d.txt" not in out
    assert cli.main(["search", "--kb", f"#{theirs.id}", "--json", "黄河"]) == 0
    out = capsys.readouterr().out
    assert "d.txt" in out and "ours.txt" not in out


def test_migration_7_keeps_every_kb_and_its_rows_and_gives_each_its_owner(tmp_path):
    """The kbs table is rebuilt without its global UNIQUE: documents, memberships and jobs keep
    pointing at their KB (no cascade from the rebuild), owners come from the owner memberships."""
    import sqlite3

    from services.index.store import MIGRATIONS, Store

    path = tmp_path / "wendao.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:6], start=1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    db.execute("INSERT INTO kbs(id, name, created_at) VALUES (1, '甲', 1), (2, '乙', 2)")
    db.execute("INSERT INTO users(id, name, created_at) VALUES (7, 'u7', 0)")
    db.execute("INSERT INTO memberships VALUES (2, 7, 'owner'), (1, 7, 'viewer')")
    db.execute("INSERT INTO documents(kb_id, id, filename, size, pages, status, text, created_at)"
               " VALUES (1, 'd1', 'a.txt', 1, 1, 'ready', 'x', 0)")
    db.close()
    store = Store(path)
    assert [(k.id, k.name, k.owner_id) for k in store.list_kbs()] == [(1, "甲", 0), (2, "乙", 7)]
    assert [d.filename for d in store.list_documents(1)] == ["a.txt"]
    assert store.access.role(2, 7) == "owner"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.create_kb("乙").owner_id == 0  # another owner may use the name
    with pytest.raises(errors.KnowledgeBaseError):
        store.create_kb("乙", 7)
    store.delete_kb(1)  # the cascade still works after the rebuild
    assert store.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0
    store.close()


def test_the_sidebar_tells_two_kbs_of_one_name_apart(team, monkeypatch):
    """Two KBs of one name in the picker carry their ids; a name of one's own stays as it is."""
    from streamlit.testing.v1 import AppTest

    import components.account as account
    from conftest import ROOT

    ws, who, _ = team
    b = ws.session(who["B"])
    own = b.create_kb("KB1")
    monkeypatch.setattr(account, "current_principal", lambda _ws: who["B"])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.sidebar.selectbox[0]
    labels = sorted(picker.options)  # the labels as shown
    a_kb1 = ws.session(who["A"]).kb("KB1").id
    assert labels == sorted([f"KB1（#{a_kb1}）", f"KB1（#{own.id}）"]), labels
