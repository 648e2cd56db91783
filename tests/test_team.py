"""Team use (issue 19): the permission matrix through the core and the HTTP API, private
conversations, API keys scoped to one KB, sign-in, the bind rule, the Host check and headers, the
endpoint guard, and secrets never stored or logged in clear."""
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from fixtures import ZH_PARAGRAPHS
from services import auth, errors, worker
from services.access import LOCAL, Principal
from services.config import LLMSettings

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
TEXT = "".join(ZH_PARAGRAPHS)
PASSWORD = "correct-horse-1"


@pytest.fixture
def team(data_dir, monkeypatch):
    """Admin A; KB1 (editor B, viewer C) and KB2; member D with no access; read/write keys for both."""
    monkeypatch.setenv("WENDAO_AUTH", "local")
    from services.workspace import open_workspace

    ws = open_workspace(data_dir)
    root = ws.session(LOCAL)
    users = {n: root.add_user(n, PASSWORD, admin=(n == "A")) for n in "ABCD"}
    who = {n: Principal("user", u.id, u.name, u.admin) for n, u in users.items()}
    kb1 = ws.session(who["A"]).create_kb("KB1")
    kb2 = ws.session(who["A"]).create_kb("KB2")
    kb1.share("B", "editor")
    kb1.share("C", "viewer")
    for kb, name in ((kb1, "k1.txt"), (kb2, "k2.txt")):
        kb.upload(name, TEXT.encode())
    assert worker.wait_idle(ws.lib, 120)
    keys = {f"{kb.name}-{scope}": kb.create_key(scope) for kb in (kb1, kb2) for scope in ("read", "write")}
    for name, key in keys.items():
        who[name] = auth.principal_from_key(ws.lib.store, key.key)
    yield ws, who, keys
    ws.lib.close()


def _allowed(fn) -> bool:
    try:
        fn()
        return True
    except (errors.PermissionDenied, errors.KnowledgeBaseNotFound):
        return False


# use case -> the principals that may do it on KB1 (A admin, B editor, C viewer, D none, keys)
MATRIX = {
    "search": {"A", "B", "C", "KB1-read", "KB1-write"},
    "ask": {"A", "B", "C", "KB1-read", "KB1-write"},
    "list documents": {"A", "B", "C", "KB1-read", "KB1-write"},
    "upload": {"A", "B", "KB1-write"},
    "switch a document off": {"A", "B", "KB1-write"},
    "save retrieval settings": {"A", "B", "KB1-write"},
    "reindex": {"A", "B", "KB1-write"},
    "read the upload log": {"A", "B", "KB1-write"},  # an editor's log (file names, failures): not a viewer's
    "save the LLM endpoint": {"A"},
    "share": {"A"},
    "create a key": {"A"},
    "rename": {"A"},
}
PRINCIPALS = ["A", "B", "C", "D", "KB1-read", "KB1-write", "KB2-read", "KB2-write"]


def _use_case(ws, who, name):
    def run():
        me = ws.session(who)
        need = "viewer" if name in ("search", "ask", "list documents", "read the upload log") else "editor"
        kb = me.kb("KB1", need)
        if name == "search":
            assert kb.search("长江有多长").hits
        elif name == "ask":
            kb.ask("长江有多长？", save=False).finish()
        elif name == "list documents":
            assert kb.documents()
        elif name == "upload":
            kb.upload("new.txt", "新的文档内容。".encode())
        elif name == "switch a document off":
            doc = kb.documents()[0]
            kb.set_enabled(doc.id, True)
        elif name == "save retrieval settings":
            kb.save_retrieval(kb.retrieval_settings())
        elif name == "reindex":
            kb.reindex()
        elif name == "read the upload log":
            upload = ws.session(LOCAL).kb("KB1").jobs(since=0.0, kinds=("ingest",))[0]
            assert me.job(upload.id).filename == "k1.txt"  # the API's GET /v1/jobs/{id}
            assert [j.filename for j in kb.jobs(since=0.0, kinds=("ingest",))][:1] == ["k1.txt"]
        elif name == "save the LLM endpoint":
            kb.save_llm(LLMSettings())
        elif name == "share":
            kb.share("D", "")
        elif name == "create a key":
            kb.create_key("read")
        elif name == "rename":
            kb.rename("KB1")
    return run


def test_permission_matrix_through_the_core(team):
    ws, who, _ = team
    for use_case, allowed in MATRIX.items():
        for p in PRINCIPALS:
            assert _allowed(_use_case(ws, who[p], use_case)) == (p in allowed), (use_case, p)
    assert worker.wait_idle(ws.lib, 120)
    # what each principal sees: D and KB2's keys see no KB1; nobody sees a hidden KB
    assert [k.name for k in ws.session(who["D"]).kbs()] == []
    assert [k.name for k in ws.session(who["C"]).kbs()] == ["KB1"]
    assert [k.name for k in ws.session(who["KB2-read"]).kbs()] == ["KB2"]
    assert {k.name for k in ws.session(who["A"]).kbs()} == {"KB1", "KB2"}
    # a key can never delete its KB, create a KB or a key
    for p in ("KB1-read", "KB1-write"):
        assert not _allowed(lambda: ws.session(who[p]).kb("KB1").delete())
        assert not _allowed(lambda: ws.session(who[p]).create_kb("X"))
    # only the owner (or an admin) deletes the KB; the editor cannot
    assert not _allowed(lambda: ws.session(who["B"]).kb("KB1").delete())


def test_conversations_are_private_to_their_user(team):
    ws, who, _ = team
    b = ws.session(who["B"]).kb("KB1")
    stream = b.ask("长江有多长？")
    stream.finish()
    key = stream.conversation
    assert len(key) >= 20 and not key.isdigit()  # unguessable, not a sequential id
    assert [c.key for c in b.conversations()] == [key]
    c = ws.session(who["C"]).kb("KB1")
    assert c.conversations() == []
    for attempt in (lambda: c.turns(key), lambda: c.delete_conversation(key), lambda: c.ask("继续", key)):
        with pytest.raises(errors.ConversationNotFound):
            attempt()
    assert b.turns(key)[0]["question"] == "长江有多长？"


def test_audit_records_who_did_what_and_only_admins_read_it(team):
    ws, who, _ = team
    kb = ws.session(who["B"]).kb("KB1", "editor")
    doc = kb.documents()[0]
    kb.delete_document(doc.id)
    events = ws.session(who["A"]).audit_log()
    assert any(e.action == "document_deleted" and e.actor == "B" and e.target == "KB1" for e in events)
    assert any(e.action == "key_created" for e in events)
    with pytest.raises(errors.PermissionDenied):
        ws.session(who["B"]).audit_log()


def test_http_api_matrix_with_keys_and_cookies(team):
    from services.api import create_api

    ws, who, keys = team
    client = TestClient(create_api())

    def call(method, path, principal, **kw):
        headers = {}
        client.cookies.clear()
        if principal.startswith("KB"):
            headers["Authorization"] = f"Bearer {keys[principal].key}"
        elif principal != "anonymous":
            client.cookies.set(auth.COOKIE, auth.sign_in(ws.lib.store, ws.lib.root, principal, PASSWORD))
        return client.request(method, path, headers=headers, **kw)

    for p in ["anonymous", *PRINCIPALS]:
        r = call("POST", "/v1/retrieval", p, json={"kb": "KB1", "query": "长江有多长"})
        expected = 200 if p in MATRIX["search"] else (401 if p == "anonymous" else 404)
        assert r.status_code == expected, (p, r.text)
        if expected == 200:
            assert r.json()["hits"][0]["doc"] == "k1.txt" and {"scores", "ranks", "start", "end"} <= set(r.json()["hits"][0])
        else:
            assert r.json()["error"]["message"]  # a Chinese message, never a traceback
        r = call("POST", "/v1/kbs/KB1/documents", p, files={"file": ("x.txt", "新文档。".encode())})
        assert r.status_code == (202 if p in MATRIX["upload"] else 401 if p == "anonymous" else
                                 403 if p in ("C", "KB1-read") else 404), (p, r.text)
    # a key for KB2 cannot touch KB1's documents or jobs
    doc = ws.session(LOCAL).kb("KB1").documents()[0]
    r = call("DELETE", f"/v1/kbs/KB1/documents/{doc.id}", "KB2-write")
    assert r.status_code == 404
    job = ws.session(LOCAL).kb("KB1").reindex()
    assert call("GET", f"/v1/jobs/{job}", "KB2-read").status_code == 404
    assert call("GET", f"/v1/jobs/{job}", "KB1-write").status_code == 200
    r = call("GET", f"/v1/jobs/{job}", "KB1-read")  # an editor's job: not a read-only key's (nor a viewer's)
    assert r.status_code == 403 and "编辑者" in r.json()["error"]["message"]
    r = call("DELETE", f"/v1/kbs/KB1/documents/{doc.id}", "KB1-read")
    assert r.status_code == 403
    assert call("DELETE", f"/v1/kbs/KB1/documents/{doc.id}", "KB1-write").status_code == 200
    assert worker.wait_idle(ws.lib, 120)


def test_revoked_key_and_forged_cookie_are_refused(team):
    from services.api import create_api

    ws, who, keys = team
    client = TestClient(create_api())
    key = keys["KB1-read"]
    ws.session(LOCAL).kb("KB1").revoke_key(key.id)
    r = client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers={"Authorization": f"Bearer {key.key}"})
    assert r.status_code == 401
    good = auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    assert auth.principal_from_cookie(ws.lib.store, ws.lib.root, forged) is None
    assert auth.principal_from_cookie(ws.lib.store, ws.lib.root, good).name == "B"
    auth.sign_out(ws.lib.store, ws.lib.root, good)
    assert auth.principal_from_cookie(ws.lib.store, ws.lib.root, good) is None  # signed out: the cookie is dead


def test_key_use_is_written_down_at_most_once_a_minute_and_revoking_still_takes_effect_at_once(team, monkeypatch):
    """The API's hot path: a key's last-used time is not rewritten (a SQLite write under the store's
    lock) on every request, but the key itself is looked up every time, so revoking needs no wait."""
    from services.api import create_api

    ws, _, keys = team
    store, key = ws.lib.store, keys["KB1-read"]
    writes = []
    touch = store.keys.touch
    monkeypatch.setattr(store.keys, "touch", lambda key_id: (writes.append(key_id), touch(key_id)))
    client = TestClient(create_api())
    headers = {"Authorization": f"Bearer {key.key}"}
    used = store.keys.get(key.id).last_used  # the fixture used every key once
    assert used is not None
    for _ in range(5):
        assert client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=headers).status_code == 200
    assert writes == [] and store.keys.get(key.id).last_used == used
    monkeypatch.setattr(auth, "KEY_TOUCH_EVERY_S", 0.0)  # as if a minute had passed
    assert client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=headers).status_code == 200
    assert writes == [key.id] and store.keys.get(key.id).last_used > used
    ws.session(LOCAL).kb("KB1").revoke_key(key.id)
    r = client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["type"] == "NotSignedIn"


def test_api_rate_limit_per_key(team, monkeypatch):
    """WENDAO_API_RATE_LIMIT per caller key: the request over the limit gets 429 with a Chinese JSON
    error, another key keeps its own budget."""
    from services.api import create_api

    ws, _, keys = team
    monkeypatch.setenv("WENDAO_API_RATE_LIMIT", "3/minute")
    client = TestClient(create_api())

    def call(key):
        return client.post("/v1/retrieval", json={"kb": "KB1", "query": "长江"},
                           headers={"Authorization": f"Bearer {key.key}"})

    assert [call(keys["KB1-read"]).status_code for _ in range(3)] == [200, 200, 200]
    over = call(keys["KB1-read"])
    assert over.status_code == 429 and over.json()["error"]["type"] == "RateLimited" and "请求过于频繁" in over.json()["error"]["message"]
    assert call(keys["KB1-write"]).status_code == 200


def test_sign_in_page_sets_an_httponly_cookie_and_throttles(team):
    from services.api import create_api

    ws, _, _ = team
    client = TestClient(create_api(), follow_redirects=False)
    page = client.get("/auth/login")
    assert page.status_code == 200 and "登录" in page.text and 'lang="zh-CN"' in page.text
    bad = client.post("/auth/login", data={"name": "B", "password": "wrong-password"})
    assert bad.status_code == 401 and "用户名或密码不正确" in bad.text and auth.COOKIE not in bad.headers.get("set-cookie", "")
    ok = client.post("/auth/login", data={"name": "B", "password": PASSWORD})
    cookie = ok.headers["set-cookie"]
    assert ok.status_code == 303 and "HttpOnly" in cookie and "SameSite=lax" in cookie
    for _ in range(auth.MAX_FAILURES):
        client.post("/auth/login", data={"name": "C", "password": "nope-nope"})
    blocked = client.post("/auth/login", data={"name": "C", "password": PASSWORD})  # even the right one
    assert blocked.status_code == 429 and "失败次数过多" in blocked.text
    assert 0 < int(blocked.headers["retry-after"]) <= auth.FAILURE_WINDOW_S


def test_passwords_and_keys_are_never_stored_in_clear(team, capfd):
    ws, _, keys = team
    raw = (ws.lib.root / "wendao.db").read_bytes()
    for wal in ws.lib.root.glob("wendao.db-wal"):
        raw += wal.read_bytes()
    assert PASSWORD.encode() not in raw
    for key in keys.values():
        assert key.key.encode() not in raw and key.key[10:].encode() not in raw
    out = capfd.readouterr()
    assert PASSWORD not in out.out + out.err and all(k.key not in out.out + out.err for k in keys.values())


def test_visitor_endpoints_cannot_reach_internal_addresses_in_team_mode(team, monkeypatch):
    ws, who, _ = team
    kb = ws.session(who["A"]).kb("KB1", "owner")
    for url in ("http://169.254.169.254/latest/", "http://metadata.google.internal/", "http://127.0.0.1:9/v1",
                "http://10.0.0.5/v1", "file:///etc/passwd"):
        with pytest.raises(errors.UnsafeEndpoint):
            kb.save_llm(LLMSettings(base_url=url, model="m"))
        with pytest.raises(errors.UnsafeEndpoint):
            kb.test_llm(LLMSettings(base_url=url, model="m"))
    monkeypatch.setenv("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "1")  # the operator allows a model server on the LAN
    kb.save_llm(LLMSettings(base_url="http://127.0.0.1:9/v1", model="m"), test=False)
    with pytest.raises(errors.UnsafeEndpoint):  # link-local / metadata never
        kb.save_llm(LLMSettings(base_url="http://169.254.169.254/", model="m"))


@pytest.mark.slow  # starts Python processes (issue 18 item 9: multi-process tests are slow)
def test_non_loopback_bind_without_sign_in_refuses_to_start(tmp_path):
    env = {**__import__("os").environ, "WENDAO_DATA_DIR": str(tmp_path), "WENDAO_AUTH": ""}
    out = subprocess.run([sys.executable, "-m", "services", "serve", "--address", "0.0.0.0", "--port", "9"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "拒绝启动" in out.stderr and "WENDAO_AUTH" in out.stderr
    auth.check_bind("127.0.0.1")  # loopback is fine in single-user mode


def test_host_check_and_security_headers():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from services.serving import GuardMiddleware

    inner = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    client = TestClient(GuardMiddleware(inner, lambda: "127.0.0.1"), base_url="http://127.0.0.1:8501")
    ok = client.get("/")
    assert ok.status_code == 200 and "frame-ancestors 'self'" in ok.headers["content-security-policy"]
    assert ok.headers["x-frame-options"] == "SAMEORIGIN" and ok.headers["x-content-type-options"] == "nosniff"
    evil = client.get("/", headers={"Host": "attacker.example:8501"})
    assert evil.status_code == 400 and "DNS" in evil.text
    assert client.get("/", headers={"Host": "localhost:8501"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8501"}).status_code == 200


def test_first_admin_from_the_setup_token(data_dir, monkeypatch):
    monkeypatch.setenv("WENDAO_AUTH", "local")
    from services.api import create_api
    from services.workspace import open_workspace

    ws = open_workspace(data_dir)
    token = auth.setup_token(ws.lib.store)
    client = TestClient(create_api(), follow_redirects=False)
    form = client.get("/auth/setup", params={"token": token}).text
    assert 'autocomplete="new-password"' in form  # a browser offers to make a new password, not an old one
    assert 'autocomplete="current-password"' in client.get("/auth/login").text
    assert client.post("/auth/setup", data={"token": "wrong", "name": "root", "password": PASSWORD}).status_code == 400
    done = client.post("/auth/setup", data={"token": token, "name": "root", "password": PASSWORD})
    assert done.status_code == 303 and auth.COOKIE in done.headers["set-cookie"]
    assert ws.lib.store.users.find("root").admin
    again = client.post("/auth/setup", data={"token": token, "name": "x2", "password": PASSWORD})
    assert again.status_code == 410 and "已经用过" in again.text  # one time only, and it says so
    assert client.get("/auth/setup", params={"token": token}).status_code == 410
    ws.lib.close()


@pytest.fixture
def run_as(team, monkeypatch):
    """run_as(name, page): the app (AppTest) as the team's user `name`, on `page` when given."""
    import components.account as account
    from test_app import app

    _, who, _ = team

    def run(name, page=None):
        monkeypatch.setattr(account, "current_principal", lambda _ws: who[name])
        return app(page)
    return run


@pytest.mark.slow
def test_permission_matrix_through_the_pages(team, run_as):
    """The same rules in the UI (AppTest): the page acts as the signed-in principal; a viewer sees KB1 and
    can ask, is not offered deleting it, and the core refuses it in Chinese (nothing is deleted); D sees no KB at all; the admin
    page is offered to admins only."""
    ws, who, _ = team
    viewer = run_as("C", "library")
    assert "知识库：KB1" in [s.value for s in viewer.subheader]
    assert "删除知识库" not in {b.label for b in viewer.button}  # hidden (tests/test_team_ui.py); the core refuses:
    with pytest.raises(errors.PermissionDenied, match="查看者"):
        ws.session(who["C"]).kb("KB1").delete()
    assert ws.lib.store.find_kb("KB1") is not None
    # the upload log (which files, which failed and why) is the editors': the editor's page lists the upload,
    # the viewer's does not, and the core gives the viewer no upload jobs whatever a page asks
    editor = run_as("B", "library")
    assert any(e.label.startswith("文件 1/1（全部完成）") for e in editor.expander), [e.label for e in editor.expander]
    assert not any(e.label.startswith("文件") for e in viewer.expander), [e.label for e in viewer.expander]
    assert ws.session(who["C"]).kb("KB1").jobs(since=0.0) == []
    nobody = run_as("D", "library")
    assert not [s.value for s in nobody.subheader if "KB1" in s.value or "KB2" in s.value]
    assert "先创建一个知识库" in " ".join(i.value for i in nobody.info)
    admin = run_as("A", "admin")
    assert {"用户", "API 密钥", "审计日志"} <= {t.label for t in admin.tabs}
    assert any(e.action == "kb_created" for e in ws.session(who["A"]).audit_log())
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not even offered to others
        run_as("B", "admin")


def test_single_sign_on_users_are_told_apart_by_the_providers_subject_only(team):
    """OIDC (st.login): the provider's `sub` names the user. A sign-in without one was filed under the
    literal subject "None" (every such user one account); a display name equal to a local account's
    gets its own account, never the local one's rights."""
    ws, who, _ = team
    for missing in ("", "None", "  "):
        with pytest.raises(errors.SignInFailed, match="sub"):
            ws.sso_principal(missing, "某人")
    first = ws.sso_principal("oidc|123", "A")  # "A" is the local admin's name
    assert first.name != "A" and not first.admin and first.user_id != who["A"].user_id
    again = ws.sso_principal("oidc|123", "改了名字")
    assert again.user_id == first.user_id
    other = ws.sso_principal("oidc|456", "A")
    assert other.user_id not in (first.user_id, who["A"].user_id)
    assert [kb.name for kb in ws.session(first).kbs()] == []  # a new member sees nothing until shared


@pytest.mark.slow
def test_oidc_mode_refuses_identity_from_request_headers(data_dir, monkeypatch):
    """Streamlit's server.trustedUserHeaders copies request headers into st.user: with it set, anyone
    could claim any identity, so OIDC mode refuses to serve; without it the sign-in button is shown.
    Without an [auth] section the page said nothing useful (AttributeError: st.user has no
    is_logged_in); now it says what to configure."""
    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WENDAO_AUTH", "oidc")
    auth_section = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32,
                    "client_id": "wendao", "client_secret": "x",
                    "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}

    def page():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.secrets["auth"] = auth_section
        return at

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)  # no [auth]: said, not a traceback
    at.run()
    assert not at.exception and not at.button and any("[auth]" in e.value for e in at.error)
    at = page()
    at.run()
    assert not at.exception and [b.label for b in at.button] == ["登录"]
    st_config.set_option("server.trustedUserHeaders", {"X-Forwarded-User": "sub"})
    try:
        at = page()
        at.run()
    finally:
        st_config.set_option("server.trustedUserHeaders", {})
    assert not at.exception and not at.button
    assert any("trustedUserHeaders" in e.value for e in at.error)
