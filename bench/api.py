"""HTTP API under load: `wendao serve` (single-user mode, loopback) over a ~1,000-chunk KB of DRCD dev
articles; 20 concurrent retrieval requests and 10 concurrent extractive asks through /api/v1, while a
page load and the health check are timed, to see that the UI stays responsive.

    python bench/api.py [--docs 120] [--rounds 5]

Every round sends different questions (distinct DRCD dev questions across all rounds and workloads), so
no request is answered from the server's query-vector cache (services.index.embedding.embed_query);
the row "retrieval (repeated)" sends one round's questions again in every round, i.e. cache hits, to
show what the rest of a request costs. Prints p50 / p95 latency (ms), errors and requests per second
per workload, and the median of the server's own search time (the `ms` of /api/v1/retrieval).
The KB is built once under bench/.cache/api.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, SHARED, table

CACHE = ROOT / "bench" / ".cache" / "api"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_kb(n_docs: int, env: dict) -> None:
    marker = CACHE / f"built-{n_docs}"
    if marker.exists():
        return
    docs = sorted((SHARED / "data" / "drcd_dev" / "docs").glob("*.txt"))[:n_docs]
    subprocess.run([sys.executable, "-m", "services", "ingest", "--kb", "bench", *map(str, docs)], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    marker.write_text("ok")


def post(url: str, body: dict) -> tuple[float, bool, float | None]:
    """(client-side ms, ok, the server's own search ms when the answer reports one)."""
    data = json.dumps(body, ensure_ascii=False).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    started = time.perf_counter()
    server_ms = None
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            ok = response.status == 200 and bool(answer)
            server_ms = answer.get("ms") if isinstance(answer, dict) else None
    except Exception:  # noqa: BLE001 - counted as an error
        ok = False
    return (time.perf_counter() - started) * 1000, ok, server_ms


def get(url: str) -> float:
    started = time.perf_counter()
    urllib.request.urlopen(url, timeout=60).read()
    return (time.perf_counter() - started) * 1000


def rounds_of(calls: list, concurrency: int, rounds: int, distinct: bool) -> list[list]:
    """`rounds` batches of `concurrency` calls: consecutive slices of `calls` (distinct) or its first
    slice every time (repeated)."""
    if distinct and len(calls) < concurrency * rounds:
        raise SystemExit(f"need {concurrency * rounds} distinct questions, have {len(calls)}")
    return [calls[(r if distinct else 0) * concurrency:((r if distinct else 0) + 1) * concurrency] for r in range(rounds)]


def load(name: str, batches: list[list], base: str) -> dict:
    """Send each batch of (path, body) calls all at once, one batch after another; time the UI meanwhile."""
    ui, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            ui.append(get(base + "/_stcore/health"))
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    results = []
    started = time.perf_counter()
    concurrency = len(batches[0])
    with ThreadPoolExecutor(concurrency) as pool:
        for batch in batches:
            results += list(pool.map(lambda c: post(base + c[0], c[1]), batch))
    wall = time.perf_counter() - started
    stop.set()
    prober.join()
    ms = sorted(r[0] for r in results)
    server = [r[2] for r in results if r[2] is not None]
    return {"workload": name, "requests": len(ms), "concurrency": concurrency, "p50_ms": statistics.median(ms),
            "p95_ms": ms[max(0, int(0.95 * len(ms)) - 1)], "errors": sum(not r[1] for r in results),
            "req_per_s": len(ms) / wall, "server_search_p50_ms": statistics.median(server) if server else "",
            "ui_health_p95_ms": sorted(ui)[max(0, int(0.95 * len(ui)) - 1)] if ui else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WENDAO_DATA_DIR": str(CACHE), "WENDAO_AUTH": "", "WENDAO_API_RATE_LIMIT": "100000/minute"}
    build_kb(args.docs, env)
    lines = (SHARED / "data" / "drcd_dev" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = list(dict.fromkeys(json.loads(line)["question"] for line in lines))  # distinct, in file order
    n_retrieval, n_ask = 20 * args.rounds, 10 * args.rounds
    warm, questions = questions[0], questions[1:]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "services", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                get(base + "/_stcore/health")
                break
            except OSError:
                time.sleep(0.5)
        chunks = json.loads(urllib.request.urlopen(base + "/api/v1/kbs").read())["kbs"][0]["chunks"]
        post(base + "/api/v1/retrieval", {"kb": "bench", "query": warm})  # warm: models loaded
        idle_page = statistics.median(get(base + "/") for _ in range(5))
        retrieval = [("/api/v1/retrieval", {"kb": "bench", "query": q, "top_k": 5}) for q in questions[:n_retrieval]]
        asks = [("/api/v1/chat/completions", {"model": "bench", "no_llm": True,
                                               "messages": [{"role": "user", "content": q}]})
                for q in questions[n_retrieval:n_retrieval + n_ask]]
        rows = [load("retrieval", rounds_of(retrieval, 20, args.rounds, True), base),
                load("extractive ask", rounds_of(asks, 10, args.rounds, True), base),
                load("retrieval (repeated)", rounds_of(retrieval, 20, args.rounds, False), base)]
        print(f"KB: {args.docs} DRCD dev articles, {chunks} chunks; page load idle {idle_page:.0f} ms; "
              f"machine: {os.cpu_count()} CPU cores, no GPU")
        print(table(rows))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
