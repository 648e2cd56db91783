"""A second adversarial pass over team mode (issue 19), probing a running server as an outsider, a member
without access, a viewer, an editor and API-key holders; each test is an attack that worked before its fix.

- one API key dodging its rate limit by writing its `Authorization` header another way;
- sign-in names of a megabyte (kept in the throttle's memory and written to the audit log on every
  try) and invisible characters that pass for another user's name in the audit log;
- password guesses spread over many source addresses (an IPv6 /64) or one password sprayed over
  many names, never throttled;
- user names differing only in case, width or invisible characters (an SSO user named "ａｄｍｉｎ" or
  "A\u200b" looked exactly like the admin in the share dialog and the audit log);
- model endpoints in ranges that are neither private nor public (100.64.0.0/10: carrier NAT,
  Tailscale) or reaching metadata / loopback addresses through IPv6 translation (NAT64, 6to4).
"""
import socket

import pytest
from fastapi.testclient import TestClient

from services import auth, errors, netguard
from services.access import LOCAL
from services.config import LLMSettings
from test_team import PASSWORD, team  # noqa: F401 - the shared fixture (admin A, editor B, viewer C, D; keys)


# --- 1. one key, one rate-limit bucket ----------------------------------------------------------------------
def test_a_key_cannot_dodge_its_rate_limit_by_rewriting_the_header(team, monkeypatch):
    from services.api import create_api

    _, _, keys = team
    monkeypatch.setenv("WENDAO_API_RATE_LIMIT", "3/minute")
    client = TestClient(create_api())
    key = keys["KB1-read"].key
    assert [client.get("/v1/kbs", headers={"Authorization": f"Bearer {key}"}).status_code
            for _ in range(3)] == [200, 200, 200]
    for header in (f"Bearer  {key}", f"bearer {key}", f"BEARER {key}", f"Bearer \t {key}"):
        over = client.get("/v1/kbs", headers={"Authorization": header})
        assert over.status_code == 429, header  # before: a fresh bucket for every spelling
        assert over.json()["error"]["type"] == "RateLimited"
    assert client.get("/v1/kbs", headers={"Authorization": f"Bearer {keys['KB1-write'].key}"}).status_code == 200


def test_a_key_bucket_cannot_be_used_up_by_someone_knowing_only_its_start(team, monkeypatch):
    from services.api import create_api

    _, _, keys = team
    monkeypatch.setenv("WENDAO_API_RATE_LIMIT", "3/minute")
    client = TestClient(create_api())
    key = keys["KB1-read"].key
    for i in range(5):  # an outsider's made-up keys sharing the real key's first 16 characters
        assert client.get("/v1/kbs", headers={"Authorization": f"Bearer {key[:16]}{i:x}fake"}).status_code == 401
    assert client.get("/v1/kbs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


# --- 2. what a sign-in name may leave behind ----------------------------------------------------------------
def test_an_oversized_or_invisible_sign_in_name_is_neither_kept_nor_audited(team):
    from services.api import create_api

    ws, _, _ = team
    client = TestClient(create_api(), follow_redirects=False)
    for name in ("x" * 500_000, "B\u200b", "B\u202e", "\u200b"):
        bad = client.post("/auth/login", data={"name": name, "password": "wrong-password"})
        assert bad.status_code == 401 and "用户名或密码不正确" in bad.text
    failed = [e.actor for e in ws.session(LOCAL).audit_log() if e.action == "sign_in_failed"]
    assert len(failed) == 4 and all(len(a) <= 64 for a in failed), [a[:80] for a in failed]
    assert not any("\u200b" in a or "\u202e" in a or a == "B" for a in failed)  # nothing passes for user B
    assert all(len(name) <= 64 for name, _ in auth.THROTTLE._failures), "a megabyte name kept in memory"


# --- 3. guesses spread over addresses or names ----------------------------------------------------------------
def test_guesses_from_many_addresses_are_throttled_per_name(team):
    ws, _, _ = team
    for i in range(auth.MAX_NAME_FAILURES):  # an IPv6 /64 gives an attacker as many addresses as they like
        with pytest.raises(errors.SignInFailed):
            auth.sign_in(ws.lib.store, ws.lib.root, "C", f"guess-{i}", f"2001:db8::{i:x}")
    with pytest.raises(errors.SignInThrottled):  # before: every fresh address had 5 more tries
        auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD, "2001:db8::ffff")
    assert auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "2001:db8::ffff")  # other names are not locked


def test_one_password_sprayed_over_many_names_is_throttled_per_address(team):
    ws, _, _ = team
    for i in range(auth.MAX_ADDRESS_FAILURES):
        with pytest.raises(errors.SignInFailed):
            auth.sign_in(ws.lib.store, ws.lib.root, f"user{i}", "Spring2026!", "198.51.100.7")
    with pytest.raises(errors.SignInThrottled):
        auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "198.51.100.7")
    assert auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "198.51.100.8")


def test_successful_sign_ins_do_not_count_against_a_shared_address(team):
    ws, _, _ = team
    for _ in range(auth.MAX_ADDRESS_FAILURES + 5):  # a whole office behind one NAT address signing in
        assert auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "203.0.113.9")
    with pytest.raises(errors.SignInFailed):
        auth.sign_in(ws.lib.store, ws.lib.root, "C", "typo-typo", "203.0.113.9")
    assert auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD, "203.0.113.9")


def test_case_and_width_variants_of_a_name_share_one_counter(team):
    ws, _, _ = team
    for name in ("C", "c", "Ｃ", "ｃ", " C "):
        with pytest.raises(errors.SignInFailed):
            auth.sign_in(ws.lib.store, ws.lib.root, name, "wrong-password", "192.0.2.1")
    with pytest.raises(errors.SignInThrottled):
        auth.sign_in(ws.lib.store, ws.lib.root, "C", PASSWORD, "192.0.2.1")


def test_a_full_width_name_typed_with_an_ime_signs_in(team):
    ws, _, _ = team
    assert auth.sign_in(ws.lib.store, ws.lib.root, "Ｂ", PASSWORD, "192.0.2.2")


# --- 4. names that pass for another user's ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "Ａ", "ａ", "A\u200b", "\u200bA", "A\u202e", "A\u00a0"])
def test_a_name_that_looks_like_an_existing_one_is_refused(team, name):
    ws, who, _ = team
    with pytest.raises(errors.InvalidName):
        ws.session(who["A"]).add_user(name, PASSWORD)
    assert [u.name for u in ws.session(who["A"]).users()] == ["A", "B", "C", "D"]


@pytest.mark.parametrize("shown", ["Ａ", "a", "A\u200b", "A\u2066"])
def test_a_single_sign_on_user_cannot_take_a_name_that_looks_like_the_admins(team, shown):
    ws, _, _ = team
    who = ws.sso_principal(f"sub-{shown!r}", shown)
    assert who.name.casefold().startswith("a-") and not who.admin, who.name  # told apart by a suffix
    assert all(ch.isascii() and ch.isprintable() for ch in who.name)


# --- 5. endpoints in ranges that are neither private nor public ---------------------------------------------------
@pytest.mark.parametrize("address", ["100.64.0.1", "100.101.102.103", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
                                     "2002:a9fe:a9fe::1", "2002:7f00:1::1", "::7f00:1", "192.0.0.170"])
def test_endpoints_reaching_internal_addresses_some_other_way_are_refused(team, monkeypatch, address):
    ws, who, _ = team
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host == "models.example":
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    kb = ws.session(who["A"]).kb("KB1")
    with pytest.raises(errors.UnsafeEndpoint):
        kb.test_llm(LLMSettings(base_url="http://models.example/v1", model="m"))
    with pytest.raises(errors.UnsafeEndpoint):
        kb.try_embedding_server("http://models.example/v1", "m")


def test_public_addresses_stay_allowed_and_operators_may_allow_private_ones():
    assert netguard.vetted_addresses("8.8.8.8", 443, allow_private=False) == ["8.8.8.8"]
    assert netguard.vetted_addresses("2001:4860:4860::8888", 443, allow_private=False)
    assert netguard.vetted_addresses("100.101.102.103", 443, allow_private=True)  # a tailnet model server
    with pytest.raises(errors.UnsafeEndpoint):  # metadata never, even where private ones are allowed
        netguard.vetted_addresses("64:ff9b::a9fe:a9fe", 80, allow_private=True)


# --- 6. one request must not hold a core for minutes --------------------------------------------------------------
def test_an_overlong_question_or_query_is_refused_before_any_work(team, monkeypatch):
    """Every character of a question is embedded (510-token windows): a 400,000-character question sent
    by a read key kept the server's CPU busy for minutes. Refused at once now, in the core and the API."""
    from services.api import create_api
    from services.index import library

    ws, who, keys = team
    embedded = []
    monkeypatch.setattr(library.Library, "embedder", lambda *a, **k: embedded.append(1) or pytest.fail("embedded"))
    kb = ws.session(who["C"]).kb("KB1")
    long = "长江" * 200_000
    with pytest.raises(errors.QueryTooLong):
        kb.ask(long)
    with pytest.raises(errors.QueryTooLong):
        kb.search(long)
    client = TestClient(create_api())
    auth_header = {"Authorization": f"Bearer {keys['KB1-read'].key}"}
    chat = client.post("/v1/chat/completions", headers=auth_header,
                       json={"model": "KB1", "messages": [{"role": "user", "content": long}], "no_llm": True})
    assert chat.status_code == 413 and chat.json()["error"]["type"] == "QueryTooLong"
    assert "问题太长" in chat.json()["error"]["message"]
    found = client.post("/v1/retrieval", headers=auth_header, json={"kb": "KB1", "query": long})
    assert found.status_code == 413 and "查询太长" in found.json()["error"]["message"]
    assert not embedded


def test_a_callers_history_is_cut_to_what_answering_reads(team, monkeypatch):
    from services.answers import answer as answer_module
    from services.answers.answer import Conversation, Turn
    from services.workspace import HISTORY_TURNS, MAX_HISTORY_ANSWER_CHARS, MAX_QUERY_CHARS

    ws, who, _ = team
    seen = []

    def capture(retriever, llm, question, history, **kwargs):
        seen.append(history)
        return iter(())

    monkeypatch.setattr(answer_module, "stream_answer", capture)
    huge = Conversation([Turn("长江" * 300_000, "长江" * 300_000, "答" * 1_000_000) for _ in range(40)])
    ws.session(who["C"]).kb("KB1").ask("那它有多长？", history=huge, save=False)
    (history,) = seen
    assert len(history.turns) == HISTORY_TURNS
    assert all(len(t.question) <= MAX_QUERY_CHARS and len(t.query) <= MAX_QUERY_CHARS
               and len(t.answer) <= MAX_HISTORY_ANSWER_CHARS for t in history.turns)
    assert len(huge.turns[0].answer) == 1_000_000  # the caller's object is left as it was


def test_a_viewer_cannot_queue_evaluations_that_hold_the_worker(team):
    """The data dir has one worker; a viewer may evaluate but not cancel: each further evaluation of the
    KB is refused while one is queued or running (before: any number queued, every upload waiting)."""
    from services import worker

    ws, who, _ = team
    ws.lib.store.jobs.claim_next = lambda: None  # the worker busy elsewhere
    viewer = ws.session(who["C"]).kb("KB1")
    line = '{"question": "长江有多长？", "doc_file": "k1.txt", "answer": "六千三百公里"}'
    first = viewer.evaluate([line], ["bm25"], [False], ["current"])
    with pytest.raises(errors.WendaoError, match="已有一个评测"):
        viewer.evaluate([line], ["bm25"], [False], ["current"])
    assert [j.id for j in viewer.jobs(kinds=("evaluate",))] == [first]
    del ws.lib.store.jobs.claim_next  # the class's method again
    worker.worker_for(ws.lib).wake()
    assert worker.wait_idle(ws.lib, 120)
    assert viewer.evaluate([line], ["bm25"], [False], ["current"])  # once it is done, the next one runs
    assert worker.wait_idle(ws.lib, 120)


# --- 7. the files behind the roles ------------------------------------------------------------------------------
def test_a_new_data_dir_is_readable_by_its_owner_only(tmp_path, monkeypatch, capsys):
    """Every KB's text, every conversation and saved endpoint keys are in the data dir: another account
    on a shared machine could read them all, past sign-in and roles, from a 0755 folder."""
    import stat

    from services import serving
    from services.config import data_dir
    from services.workspace import open_workspace

    monkeypatch.setenv("WENDAO_DATA_DIR", str(tmp_path / "made" / "by" / "wendao"))
    assert stat.S_IMODE(data_dir().stat().st_mode) == 0o700
    ws = open_workspace(tmp_path / "opened")
    assert stat.S_IMODE((tmp_path / "opened").stat().st_mode) == 0o700
    ws.lib.close()
    monkeypatch.setenv("WENDAO_AUTH", "local")
    serving.warn_open_data_dir()
    assert capsys.readouterr().err == ""
    (tmp_path / "made" / "by" / "wendao").chmod(0o755)  # one made before, or by hand
    serving.warn_open_data_dir()
    assert "chmod 700" in capsys.readouterr().err


def test_another_site_cannot_sign_a_user_out_through_the_get_link(team):
    """The user menu signs out with a GET link; SameSite=Lax sends the cookie on a top-level navigation
    from any site, so a page elsewhere could end the user's session at will (POST was already refused)."""
    from test_security_review import _app

    client = TestClient(_app(), base_url="http://127.0.0.1:8501", follow_redirects=False)
    ok = client.post("/api/auth/login", data={"name": "B", "password": PASSWORD})
    assert ok.status_code == 303
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert client.get("/api/auth/logout", headers=headers).status_code == 403
        assert client.get("/api/v1/kbs").status_code == 200  # still signed in
    out = client.get("/api/auth/logout", headers={"Sec-Fetch-Site": "same-origin"})  # the app's own link
    assert out.status_code == 303 and client.get("/api/v1/kbs").status_code == 401


# --- 8. the audit log names who changed what the KB answers from --------------------------------------------------
def test_uploads_switches_re_splits_settings_and_sign_outs_are_audited(team):
    """Who put a text into a KB (a write key's upload of a planted document), who switched a document off
    or re-split it, who changed how the KB searches, and who signed out: none was in the audit log."""
    from dataclasses import replace as changed

    from services.api import create_api

    ws, who, keys = team
    editor = ws.session(who["B"]).kb("KB1", "editor")
    doc = editor.documents()[0]
    editor.set_enabled(doc.id, False)
    editor.set_enabled(doc.id, True)
    editor.rechunk(doc.id, editor.chunking_config())
    editor.save_retrieval(changed(editor.retrieval_settings(), top_k=7))
    editor.save_chunking(editor.chunking_config())
    client = TestClient(create_api(), follow_redirects=False)
    assert client.post("/v1/kbs/KB1/documents", files={"file": ("planted.txt", "植入的内容。".encode())},
                       headers={"Authorization": f"Bearer {keys['KB1-write'].key}"}).status_code == 202
    assert client.post("/auth/login", data={"name": "C", "password": PASSWORD}).status_code == 303
    assert client.get("/auth/logout").status_code == 303
    from services import worker

    assert worker.wait_idle(ws.lib, 120)
    events = {(e.actor, e.action, e.target) for e in ws.session(who["A"]).audit_log()}
    for action in ("document_disabled", "document_enabled", "document_rechunked", "retrieval_settings_saved",
                   "chunking_settings_saved"):
        assert ("B", action, "KB1") in events, action
    key_id = keys["KB1-write"].id
    assert (f"API 密钥 #{key_id}", "document_uploaded", "KB1") in events
    assert ("C", "sign_out", "") in events


def test_a_document_filter_of_a_million_entries_costs_one_look_up_each(team):
    """`documents` in /v1/retrieval and /v1/chat/completions was matched by scanning the KB once per entry:
    a 16 MB list against a KB of many documents kept the server busy for minutes. Now a dictionary look-up
    each, duplicates dropped before the search."""
    import time

    from services.api import app as api_app

    ws, who, _ = team
    kb = ws.session(who["C"]).kb("KB1")
    doc = kb.documents()[0]

    class Many:  # a KB of 5,000 documents, as far as the filter is concerned
        def documents(self):
            return [type(doc)(**{**doc.__dict__, "id": f"id{i}", "filename": f"f{i}.txt"}) for i in range(5000)] + [doc]

    started = time.perf_counter()
    assert api_app._doc_ids(Many(), [doc.filename] * 200_000 + [doc.id] * 200_000 + ["f4999.txt"]) == [doc.id, "id4999"]
    assert time.perf_counter() - started < 5  # before: 400,000 scans of 5,001 documents (minutes)
    with pytest.raises(errors.DocumentNotFound):
        api_app._doc_ids(Many(), ["nope"])


# --- 9. rights are read when used, not when a handle or a principal was made ----------------------------------------
def test_a_demoted_owner_cannot_keep_sharing_through_a_handle_made_before(team):
    """A page keeps a KB handle (and its principal) through a dialog's reruns: the share dialog stays open
    while the owner is demoted, then its form re-grants them owner. The handle's role was trusted."""
    ws, who, _ = team
    a = ws.session(who["A"]).kb("KB1")
    a.share("B", "owner")
    handle = ws.session(who["B"]).kb("KB1", "owner")  # the open share dialog's handle
    a.share("B", "viewer")  # demoted meanwhile
    with pytest.raises(errors.PermissionDenied):
        handle.share("B", "owner")
    with pytest.raises(errors.PermissionDenied):
        handle.create_key("write")
    with pytest.raises(errors.PermissionDenied):
        handle.upload("x.txt", "内容。".encode())
    assert dict(a.members())["B"] == "viewer"


def test_a_removed_user_or_demoted_admin_loses_rights_held_by_an_earlier_principal(team):
    ws, who, _ = team
    root = ws.session(LOCAL)
    root.set_admin("B", True)
    b_admin = ws.session(auth.principal_from_cookie(
        ws.lib.store, ws.lib.root, auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD)))
    kb2 = b_admin.kb("KB2", "owner")  # B sees every KB while an admin
    root.set_admin("B", False)  # the page's principal (cached a few seconds, or held by a dialog) says admin
    with pytest.raises(errors.PermissionDenied):
        b_admin.add_user("mallory", PASSWORD, admin=True)
    with pytest.raises(errors.PermissionDenied):
        b_admin.audit_log()
    with pytest.raises((errors.PermissionDenied, errors.KnowledgeBaseNotFound)):
        kb2.delete()
    with pytest.raises(errors.KnowledgeBaseNotFound):
        b_admin.kb("KB2")
    held = ws.session(who["C"]).kb("KB1")
    root.remove_user("C")
    with pytest.raises(errors.KnowledgeBaseNotFound):
        held.search("长江")
    with pytest.raises(errors.KnowledgeBaseNotFound):
        held.ask("长江有多长？")
    with pytest.raises(errors.KnowledgeBaseNotFound):
        held.evaluate(['{"question": "长江有多长？", "doc_file": "k1.txt", "answer": "六千三百公里"}'],
                      ["bm25"], [False], ["current"])


def test_a_session_ended_by_sign_out_or_a_new_password_stops_its_held_handles(team):
    """An open dialog keeps its principal without the page's cookie re-check: after signing out (or a new
    password ending every session, e.g. of a stolen cookie) the held handle must stop working."""
    ws, _, _ = team
    for end in ("sign out", "new password"):
        cookie = auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD)
        held = ws.session(auth.principal_from_cookie(ws.lib.store, ws.lib.root, cookie)).kb("KB1", "editor")
        if end == "sign out":
            auth.sign_out(ws.lib.store, ws.lib.root, cookie)
        else:
            ws.session(LOCAL).set_password("B", PASSWORD)
        with pytest.raises(errors.KnowledgeBaseNotFound):
            held.upload("x.txt", "内容。".encode())
        with pytest.raises(errors.KnowledgeBaseNotFound):
            held.search("长江")


# --- 10. malformed requests get the API's Chinese error, never a 500 -----------------------------------------------------
def test_malformed_requests_are_refused_in_chinese_without_a_server_error(team):
    from services.api import create_api

    _, _, keys = team
    client = TestClient(create_api(), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {keys['KB1-read'].key}"}

    def chat(**extra):
        return client.post("/v1/chat/completions", headers=h, json={
            "model": "KB1", "messages": [{"role": "user", "content": "长江有多长？"}], "no_llm": True, **extra})

    assert chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]).status_code == 200  # was 500
    for reply in (chat(mode="evil"), chat(top_k=0), chat(top_k=10**12), client.get("/v1/jobs/99999999999999999999", headers=h),
                  client.post("/v1/retrieval", headers=h, json={"kb": "KB1", "query": "长江", "mode": "evil"}),
                  client.post("/v1/retrieval", headers=h, content=b"{bad", )):
        assert reply.status_code in (400, 422), reply.text  # 400: a body that is not JSON at all
        error = reply.json()["error"]
        assert error["type"] == "InvalidRequest" and error["message"].startswith(("请求参数不正确", "请求体不是有效的 JSON"))


def test_guesses_from_elsewhere_do_not_lock_a_user_out_of_an_address_they_use(team):
    """The per-name limit would let anyone lock the admin out with 20 requests every 15 minutes; an
    address the user signed in from lately is spared it (a new address is not)."""
    ws, _, _ = team
    assert auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "192.0.2.50")  # B's own machine
    for i in range(auth.MAX_NAME_FAILURES + 3):
        with pytest.raises((errors.SignInFailed, errors.SignInThrottled)):
            auth.sign_in(ws.lib.store, ws.lib.root, "B", f"guess-{i}", f"2001:db8::{i:x}")
    assert auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "192.0.2.50")
    with pytest.raises(errors.SignInThrottled):
        auth.sign_in(ws.lib.store, ws.lib.root, "B", PASSWORD, "192.0.2.51")


def test_a_long_or_invisible_provider_name_still_signs_in(team):
    ws, _, _ = team
    assert len(ws.sso_principal("sub-long", "很长的名字" * 30).name) <= 64
    assert ws.sso_principal("sub-blank", "\u200b\u200b").name == "sso-user"


def test_a_read_key_is_told_its_scope_not_its_makers_role(team):
    """A read key refused an upload used to hear 「你…是查看者」 although the admin made it: the scope of
    the key is what stops it, and the message says so (and what to use instead)."""
    from services.api import create_api

    _, _, keys = team
    client = TestClient(create_api(), raise_server_exceptions=False)
    reply = client.post("/v1/kbs/KB1/documents", headers={"Authorization": f"Bearer {keys['KB1-read'].key}"},
                        files={"file": ("x.txt", "新文档。".encode())})
    assert reply.status_code == 403
    message = reply.json()["error"]["message"]
    assert "只读" in message and "读写密钥" in message and "查看者" not in message
