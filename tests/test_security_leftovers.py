"""Leftovers of the adversarial passes over team mode (issue 19), each test an attack that worked before its fix:

1. X-Forwarded-For / X-Real-IP from any loopback peer were taken as the client's address (uvicorn's default), so
   anything able to reach the port through a local proxy, or any local process, chose the address that sign-in
   throttling, rate limits and the audit log go by; now only from proxies the operator lists
   (WENDAO_TRUSTED_PROXIES), right-most untrusted hop first.
3. Calls to LLM / embedding / rerank servers followed HTTPS_PROXY / HTTP_PROXY / ALL_PROXY (keys included), and a
   visitor-chosen endpoint went through such a proxy unpinned; now only WENDAO_OUTBOUND_PROXY, with the target checked.
2. Fine-tuned models were named for the whole data dir: one KB's owner could not use a name another KB had
   taken (and learned it), and could delete a model of another KB still being evaluated by starting one of that name;
   names are per KB now (models/@kb<id>-<created>/<name>), NFKC-normalised, never a path or a Windows device name.
4. One write key could queue any number of uploads (disk, the one worker); now a cap per key and per user
   (WENDAO_MAX_UPLOADS_PER_KEY / _PER_USER), a Chinese 429 in the API.
"""
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures import free_port, serving, stop
from services import auth, serving as serving_module
from services.access import LOCAL
from test_team import PASSWORD, team  # noqa: F401 - the shared fixture (admin A, editor B, viewer C, D; keys)

ROOT = Path(__file__).resolve().parent.parent


# --- 1. forwarded addresses -----------------------------------------------------------------------------------
def _wendao(*args, env, stdin=None):
    out = subprocess.run([sys.executable, "-m", "services", *args], cwd=ROOT, env=env, input=stdin,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow  # starts `wendao serve`
def test_a_loopback_peer_cannot_choose_its_address_with_forwarded_headers(tmp_path):
    """A local process (or anyone behind a proxy on this host that passes the headers on) sent a fresh
    X-Forwarded-For with every guess: each was a new address, so the per-(name, address) pause never came,
    and the audit log recorded whatever address the guesser made up."""
    data = tmp_path / "data"
    env = {**os.environ, "WENDAO_DATA_DIR": str(data), "WENDAO_AUTH": "local"}
    env.pop("WENDAO_TRUSTED_PROXIES", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    _wendao("user", "add", "C", "--password-stdin", env=env, stdin=PASSWORD + "\n")
    port = free_port()
    proc, url = serving([sys.executable, "-m", "services", "serve", "--port", str(port)], port, env, ROOT)
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=60) as client:
            codes = [client.post("/api/auth/login", data={"name": "C", "password": f"guess-{i}"},
                                 headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"203.0.113.{i}"}).status_code
                     for i in range(auth.MAX_FAILURES + 1)]
        assert codes == [401] * auth.MAX_FAILURES + [429], codes  # before: 401 each time, a new "address" per guess
    finally:
        stop(proc)
    with sqlite3.connect(f"file:{data / 'wendao.db'}?mode=ro", uri=True) as db:
        addresses = {a for (a,) in db.execute("SELECT address FROM audit WHERE action='sign_in_failed'")}
    assert addresses == {"127.0.0.1"}, addresses


def _last_failed_address() -> str:
    from services.access import LOCAL
    from services.workspace import open_workspace

    return next(e.address for e in open_workspace().session(LOCAL).audit_log() if e.action == "sign_in_failed")


def test_forwarded_headers_count_only_from_a_listed_proxy_right_most_untrusted_first(team, monkeypatch):
    from test_security_review import _app

    def failed_from(peer, headers) -> str:
        client = TestClient(_app(), base_url="http://127.0.0.1:8501", client=(peer, 40000), follow_redirects=False)
        assert client.post("/api/auth/login", data={"name": "B", "password": "wrong-password"},
                           headers=headers).status_code == 401
        return _last_failed_address()

    spoof = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7", "X-Real-IP": "6.6.6.6"}
    monkeypatch.delenv("WENDAO_TRUSTED_PROXIES", raising=False)
    assert failed_from("127.0.0.1", spoof) == "127.0.0.1"  # by default no proxy is trusted, loopback neither
    monkeypatch.setenv("WENDAO_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    assert failed_from("127.0.0.1", spoof) == "198.51.100.7"  # the hop our proxy saw, not what the client wrote
    assert failed_from("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.8, 10.1.2.3"}) == "198.51.100.8"
    assert failed_from("127.0.0.1", {"X-Real-IP": "198.51.100.9"}) == "198.51.100.9"  # nginx's usual header
    assert failed_from("192.0.2.5", spoof) == "192.0.2.5"  # a peer that is not a listed proxy is the client
    assert failed_from("127.0.0.1", {"X-Forwarded-For": "not-an-address, 10.1.2.3"}) == "10.1.2.3"


@pytest.mark.parametrize("peer, headers, expected", [
    ("127.0.0.1", [(b"x-forwarded-for", b"6.6.6.6")], ("127.0.0.1", None)),  # nothing listed
    ("::1", [(b"x-forwarded-for", b"6.6.6.6")], ("::1", None)),
])
def test_without_listed_proxies_the_peer_is_the_client(peer, headers, expected):
    assert serving_module.client_address(peer, headers, []) == expected


def test_forwarded_entries_and_the_scheme_from_a_listed_proxy():
    import ipaddress

    nets = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")]
    at = serving_module.client_address
    assert at("::1", [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"[2001:db8::5]:443")], nets) \
        == ("2001:db8::5", None)  # two headers are one list; ports and brackets dropped
    assert at("127.0.0.1", [(b"x-forwarded-for", b"198.51.100.1:5555"), (b"x-forwarded-proto", b"http, https")],
              nets) == ("198.51.100.1", "https")
    assert at("127.0.0.1", [(b"x-forwarded-proto", b"gopher")], nets) == ("127.0.0.1", None)
    assert at("127.0.0.1", [(b"x-forwarded-for", b"127.0.0.1")], nets) == ("127.0.0.1", None)  # a proxy's own request
    assert at("::ffff:127.0.0.1", [(b"x-forwarded-for", b"198.51.100.2")], nets) == ("198.51.100.2", None)  # dual stack


def test_a_mistyped_trusted_proxy_refuses_to_start(monkeypatch):
    from services import errors

    monkeypatch.setenv("WENDAO_TRUSTED_PROXIES", "127.0.0.1, nginx.local")
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("the server was started"))
    with pytest.raises(errors.WendaoError, match="WENDAO_TRUSTED_PROXIES"):
        serving_module.serve("127.0.0.1", free_port())
    assert [str(n) for n in serving_module.trusted_proxies()] == ["127.0.0.1/32"]  # the middleware skips it


# --- 2. fine-tuned model names ---------------------------------------------------------------------------------------
def _quick_training(monkeypatch):
    """`services.tuning.finetune.finetune` as the app runs it, with every heavy step faked (no data, no
    training): what is left is naming, folders, cards and listing."""
    from services.tuning import finetune as ft

    pairs = [ft.Pair(f"问题{i}", f"段落{i}", i, f"doc{i % 3}", kind="question") for i in range(10)]
    scores = {"dense": {"recall@5": 0.5, "mrr@10": 0.5}, "hybrid": {"recall@5": 0.5, "mrr@10": 0.5}}
    monkeypatch.setattr(ft, "trainable_base", lambda lib, kb: "base")
    monkeypatch.setattr(ft, "generate_pairs", lambda *a, **k: list(pairs))
    monkeypatch.setattr(ft, "mine_negatives", lambda lib, kb, pairs, *a, **k: pairs)
    monkeypatch.setattr(ft, "current_embedder", lambda lib, kb: None)
    monkeypatch.setattr(ft, "split_pairs", lambda pairs, settings: (pairs[:6], pairs[6:], []))
    monkeypatch.setattr(ft, "question_set", lambda lib, kb: None)
    monkeypatch.setattr(ft, "pair_questions", lambda *a, **k: [])
    monkeypatch.setattr(ft, "evaluate_sets", lambda *a, **k: {"heldout": scores, "questions": {}})

    def train(base, pairs, out, settings, on_step=None, cancelled=None):
        out.mkdir(parents=True)
        (out / "weights.bin").write_text("trained", encoding="utf-8")
        return ft.Progress(step=1, steps=1, losses=[1.0])

    monkeypatch.setattr(ft, "train", train)


def _tune(kb, name):
    from services import worker

    job = kb.finetune(name)
    assert worker.wait_idle(kb.lib, 120)
    return kb.job(job)


def test_two_kbs_may_name_their_models_alike_without_touching_each_other(team, monkeypatch):
    """Fine-tuned models were saved as models/<name>: the first KB to use a name took it for the whole
    data dir (another KB's owner was told 「已有名为…的微调模型」, learning what someone else's KB trained),
    and a model still being evaluated was deleted when another KB started one under the same name."""
    _quick_training(monkeypatch)
    ws, who, _ = team
    kb1 = ws.session(who["A"]).kb("KB1", "owner")
    d_kb = ws.session(who["D"]).create_kb("D的库")
    d_kb.upload("d.txt", "丁的文档。".encode())
    assert _tune(kb1, "薪资模型").status == "done"
    from services.tuning import finetune as ft

    evaluating = ft.model_folder(ws.lib, kb1.row, "评估中")  # KB1's run, stopped while evaluating its model
    evaluating.mkdir(parents=True)
    (evaluating / ft.CARD).write_text('{"name": "评估中", "status": "evaluating"}', encoding="utf-8")
    assert _tune(d_kb, "评估中").status == "done" and evaluating.exists()  # before: D's run deleted it
    second = _tune(d_kb, "薪资模型")
    assert second.status == "done", second.result  # before: failed, naming KB1's model
    a_models = {m["kb"]: m["path"] for m in ws.session(who["B"]).finetuned_models()}  # B: editor of KB1
    d_models = [m for m in ws.session(who["D"]).finetuned_models() if m["name"] == "薪资模型"]
    assert {m["kb"] for m in d_models} == {"D的库"} and set(a_models) == {"KB1"}  # each sees their own only
    assert d_models[0]["path"] != a_models["KB1"]
    assert all(Path(p).resolve().is_relative_to((ws.lib.root / "models").resolve()) for p in (*a_models.values(), d_models[0]["path"]))
    ws.session(who["D"]).delete_finetuned_model("薪资模型")  # D's own, by name: KB1's is untouched
    assert Path(a_models["KB1"]).exists() and not Path(d_models[0]["path"]).exists()
    with pytest.raises(Exception):
        ws.session(who["D"]).delete_finetuned_model(a_models["KB1"])  # nor by its path
    assert Path(a_models["KB1"]).exists()
    b = ws.session(who["B"]).kb("KB1", "editor")  # names in one KB still differ (also in case: one folder on Windows)
    from services import errors

    for same in ("薪资模型", "薪资模型 "):
        with pytest.raises(errors.InvalidName, match="已有名为"):
            b.finetune(same)
    _tune(kb1, "Model")
    with pytest.raises(errors.InvalidName, match="Model"):
        b.finetune("ｍｏｄｅｌ")


def test_a_kb_made_under_a_reused_id_does_not_inherit_the_models_folder(team, monkeypatch):
    _quick_training(monkeypatch)
    ws, who, _ = team
    gone = ws.session(who["A"]).create_kb("临时")
    gone.upload("t.txt", "临时的文档。".encode())
    assert _tune(gone, "临时模型").status == "done"
    gone.delete()
    reused = ws.session(who["D"]).create_kb("新库")
    assert reused.id == gone.id
    reused.upload("n.txt", "新库的文档。".encode())
    assert ws.session(who["D"]).finetuned_models() == []
    assert _tune(reused, "临时模型").status == "done"  # its own folder: nothing to take over or to be refused by
    assert [m["kb"] for m in ws.session(who["D"]).finetuned_models()] == ["新库"]
    assert len(ws.session(LOCAL).finetuned_models()) == 2  # the admin still sees the orphan


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc/passwd", "a\\b", "C:\\x", "C:x", "．．", "．．／x",
                                  "a／b", "a＼b", "con", "NUL", "com1.txt", "lpt9", "a.", ".hidden", "x" * 61,
                                  "a\u200bb", "", " ", "a\x00", "a\nb", "@kb1-1"])
def test_a_model_name_cannot_name_a_folder_elsewhere(team, name):
    from services import errors
    from services.tuning.finetune import model_folder, valid_model_name

    ws, who, _ = team
    with pytest.raises(errors.InvalidName):
        valid_model_name(name)
    with pytest.raises(errors.InvalidName):
        ws.session(who["B"]).kb("KB1", "editor").finetune(name)
    with pytest.raises(errors.InvalidName):
        model_folder(ws.lib, ws.lib.store.find_kb("KB1"), name)


def test_look_alike_model_names_are_saved_as_their_plain_form():
    from services.tuning.finetune import valid_model_name

    assert valid_model_name("ｍｏｄｅｌ－１") == "model-1"  # full width, as an IME types it
    assert valid_model_name("法律①") == "法律1"
    assert valid_model_name("v1.2_法规") == "v1.2_法规"


# --- 4. uploads in flight per key and per user ---------------------------------------------------------------------
def test_one_write_key_cannot_queue_unbounded_uploads(team, monkeypatch):
    """Each upload through the API was queued at once, its bytes kept on disk until the data dir's one worker
    indexed it: one write key could queue thousands, filling the disk and keeping everyone else's uploads waiting."""
    from services import worker
    from services.api import create_api

    ws, who, keys = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "2")
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_USER", "3")
    ws.lib.store.jobs.claim_next = lambda: None  # the worker busy elsewhere: uploads stay queued
    client = TestClient(create_api(), raise_server_exceptions=False)

    def upload(key: str, i: int):
        return client.post(f"/v1/kbs/{key.split('-')[0]}/documents", headers={"Authorization": f"Bearer {keys[key].key}"},
                           files={"file": (f"f{i}.txt", f"第{i}份文件。".encode())})

    assert [upload("KB1-write", i).status_code for i in range(2)] == [202, 202]
    refused = upload("KB1-write", 2)
    assert refused.status_code == 429, refused.text  # before: 202, any number of times
    error = refused.json()["error"]
    assert error["type"] == "TooManyUploads" and error["code"] == 429
    assert "这个 API 密钥" in error["message"] and "排队" in error["message"]
    assert upload("KB2-write", 3).status_code == 202  # another key of the same maker (A): its own budget ...
    over = upload("KB2-write", 4)  # ... but A's keys together are held to the per-user limit
    assert over.status_code == 429 and "你已有 3 个上传" in over.json()["error"]["message"]
    assert ws.session(who["B"]).kb("KB1", "editor").upload("b.txt", "编辑者的文件。".encode())  # B is not A
    del ws.lib.store.jobs.claim_next
    worker.worker_for(ws.lib).wake()
    assert worker.wait_idle(ws.lib, 120)
    assert upload("KB1-write", 5).status_code == 202  # done uploads free their places
    assert worker.wait_idle(ws.lib, 120)


def test_parallel_uploads_of_one_key_get_no_more_places_than_the_limit(team, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from services import errors, worker

    ws, who, _ = team
    monkeypatch.setenv("WENDAO_MAX_UPLOADS_PER_KEY", "2")
    ws.lib.store.jobs.claim_next = lambda: None
    kb = ws.session(who["KB1-write"]).kb("KB1", "editor")

    def one(i):
        try:
            return kb.upload(f"p{i}.txt", f"并发的第{i}份。".encode())
        except errors.TooManyUploads:
            return None

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(8)))
    assert sum(o is not None for o in outcomes) == 2, outcomes
    assert ws.session(LOCAL).kb("KB1").upload("local.txt", "本机用户不受限。".encode())
    del ws.lib.store.jobs.claim_next
    worker.worker_for(ws.lib).wake()
    assert worker.wait_idle(ws.lib, 120)


# --- 3. model calls and proxies ----------------------------------------------------------------------------------
class RecordingProxy:
    """A forward HTTP proxy on 127.0.0.1 that records each request line and Host header it is asked to
    forward (one request per connection, plain HTTP only; CONNECT is recorded and refused)."""

    def __init__(self):
        import socket
        import threading

        self.seen: list[tuple[str, str]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        import socket
        from urllib.parse import urlsplit

        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                part = conn.recv(65536)
                if not part:
                    return
                head += part
            head, body = head.split(b"\r\n\r\n", 1)
            line, *headers = head.decode("latin-1").split("\r\n")
            fields = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in headers if ":" in h}
            self.seen.append((line, fields.get("host", "")))
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                return
            while len(body) < int(fields.get("content-length", "0")):
                body += conn.recv(65536)
            parts = urlsplit(target)
            kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in ("connection", "proxy-connection")]
            request = (f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                       + "\r\n".join(kept + ["Connection: close"]) + "\r\n\r\n").encode("latin-1") + body
            with socket.create_connection((parts.hostname, parts.port or 80), timeout=30) as upstream:
                upstream.sendall(request)
                while chunk := upstream.recv(65536):
                    conn.sendall(chunk)

    def close(self):
        self.sock.close()


@pytest.fixture
def recording_proxy(monkeypatch):
    proxy = RecordingProxy()
    for name in ("NO_PROXY", "no_proxy", "WENDAO_OUTBOUND_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield proxy
    proxy.close()


def _call_every_model_server(llm_url: str, model_url: str):
    """One chat completion, one embedding and one rerank call, as the app makes them."""
    from services.answers.llm import LLMClient
    from services.config import LLMSettings
    from services.index.served import ServedEmbedder, ServedModel
    from services.search.rerank import ServedReranker

    text = "".join(LLMClient(LLMSettings(base_url=llm_url, model="echo", api_key="sk-secret", max_retries=0))
                   .stream([{"role": "user", "content": "请只回答：好"}]))
    vector = ServedEmbedder(ServedModel(model_url, "fake-e5"), api_key="emb-secret").encode_query("长江")
    scores = ServedReranker(ServedModel(model_url, "fake-reranker"), api_key="rr-secret").score("长江", ["长江很长。"])
    return text, vector, scores


def test_model_calls_ignore_the_environments_proxy_variables(recording_proxy, monkeypatch):
    """HTTPS_PROXY / HTTP_PROXY / ALL_PROXY set for other programs on the server sent every question,
    passage and API key through that proxy (the SDKs honour them), past the endpoint guard."""
    from llm_server import FakeLLMServer
    from model_server import FakeModelServer

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, recording_proxy.url)
    with FakeLLMServer() as llm, FakeModelServer(models=["fake-e5", "fake-reranker"]) as models:
        text, vector, scores = _call_every_model_server(llm.url, models.url)
    assert text and vector.shape[0] > 0 and len(scores) == 1
    assert recording_proxy.seen == []  # before: all three went through the proxy


def test_an_explicit_outbound_proxy_carries_model_calls(recording_proxy, monkeypatch):
    from llm_server import FakeLLMServer
    from model_server import FakeModelServer

    monkeypatch.setenv("WENDAO_OUTBOUND_PROXY", recording_proxy.url)
    with FakeLLMServer() as llm, FakeModelServer(models=["fake-e5", "fake-reranker"]) as models:
        text, _, scores = _call_every_model_server(llm.url, models.url)
        assert text and len(scores) == 1
        lines = [line for line, _ in recording_proxy.seen]
        assert any(line.startswith(f"POST {llm.url}/chat/completions") for line in lines), lines
        assert any(f"{models.url}/embeddings" in line for line in lines) and any("/rerank" in line for line in lines)
        recording_proxy.seen.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the usual exemption still works
        _call_every_model_server(llm.url, models.url)
        assert recording_proxy.seen == []


def test_a_proxy_cannot_carry_a_visitors_endpoint_past_the_address_check(team, recording_proxy, monkeypatch):
    """Team mode, an endpoint a KB owner typed: through a proxy the proxy resolved the name itself, so the
    address check at connection time (DNS rebinding, redirects) was skipped. Through the environment's
    proxy that was the old behaviour; through WENDAO_OUTBOUND_PROXY the target is resolved and checked here,
    and plain HTTP is sent to the checked address."""
    import socket

    from llm_server import FakeLLMServer
    from services import errors
    from services.answers.llm import LLMClient
    from services.config import LLMSettings

    real = socket.getaddrinfo
    target = {"ip": "169.254.169.254"}

    def resolve(host, port, *args, **kwargs):
        if host == "models.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (target["ip"], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "1")

    def ask(port):
        client = LLMClient(LLMSettings(base_url=f"http://models.example:{port}/v1", model="echo", api_key="k",
                                       max_retries=0, timeout=10))
        return "".join(client.stream([{"role": "user", "content": "请只回答：好"}]))

    with FakeLLMServer() as llm:
        port = int(llm.url.split(":")[2].split("/")[0])
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):  # the environment's proxy: not used at all
            monkeypatch.setenv(name, recording_proxy.url)
        with pytest.raises(errors.WendaoError):
            ask(port)  # metadata address: refused before anything is sent
        assert recording_proxy.seen == []  # before: sent to the proxy, which would resolve the name itself
        monkeypatch.setenv("WENDAO_OUTBOUND_PROXY", recording_proxy.url)
        with pytest.raises(errors.WendaoError):
            ask(port)
        assert recording_proxy.seen == []
        target["ip"] = "127.0.0.1"  # an allowed address: through the proxy, to the address checked here
        assert ask(port)
        assert recording_proxy.seen and all(line.split()[1].startswith(f"http://127.0.0.1:{port}/")
                                            and host == f"models.example:{port}" for line, host in recording_proxy.seen)
