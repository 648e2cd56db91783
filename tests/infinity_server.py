"""A real third-party model server for tests and bench/model_server.py: Infinity (`infinity-emb` from
PyPI, MIT), installed in its own virtual environment because its pins (transformers 4.x,
sentence-transformers 3.x) differ from ours:

    python3 -m venv .venv-infinity && .venv-infinity/bin/pip install torch==2.13.0 \
        && .venv-infinity/bin/pip install "infinity-emb[server,torch]"

`infinity_bin()` finds its `infinity_emb` command: WENDAO_INFINITY_BIN, else .venv-infinity/ in the
repository. `InfinityServer` starts it on 127.0.0.1 offline (HF_HUB_OFFLINE=1) serving local folders
under the names given, waits until GET /models answers, and stops it (or kills it: a server that goes
away). `e5_cross_encoder` writes a cross-encoder folder initialised from the bundled e5 (random,
seeded classification head) that both sentence-transformers' CrossEncoder and Infinity's /rerank load.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def infinity_bin() -> Path | None:
    """The `infinity_emb` executable, or None when infinity-emb is not installed."""
    for candidate in (os.environ.get("WENDAO_INFINITY_BIN", ""), ROOT / ".venv-infinity" / "bin" / "infinity_emb"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def e5_cross_encoder(dest: Path, seed: int = 0) -> Path:
    """A cross-encoder (BertForSequenceClassification, 1 label) with the bundled e5's encoder weights and
    tokenizer and a seeded random head, saved at `dest`."""
    import torch
    from transformers import BertForSequenceClassification

    from services.index import torch_e5

    e5 = torch_e5.model_dir()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(e5), num_labels=1)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)  # spread the scores so orders are meaningful
    model.save_pretrained(str(dest))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(e5 / name, dest / name)
    return dest


class InfinityServer:
    """`infinity_emb v2` serving {served name: local folder} on 127.0.0.1 (CPU, torch engine)."""

    def __init__(self, models: dict[str, str | Path], port: int | None = None, dtype: str = "float32",
                 batch_size: int = 32, log: Path | None = None):
        self.models, self.dtype, self.batch_size = dict(models), dtype, batch_size
        self.port = port or free_port()
        self.log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"infinity-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> "InfinityServer":
        import httpx

        exe = infinity_bin()
        if exe is None:
            raise FileNotFoundError("infinity_emb not found (set WENDAO_INFINITY_BIN or create .venv-infinity)")
        args = [str(exe), "v2", "--engine", "torch", "--device", "cpu", "--dtype", self.dtype,
                "--batch-size", str(self.batch_size), "--no-model-warmup", "--host", "127.0.0.1", "--port", str(self.port)]
        for name, folder in self.models.items():
            args += ["--model-id", str(folder), "--served-model-name", name]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "DO_NOT_TRACK": "1"}
        self.process = subprocess.Popen(args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"infinity_emb exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"infinity_emb did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Go away at once (SIGKILL), as a crashed or unplugged server does."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
