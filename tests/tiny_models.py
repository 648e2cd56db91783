"""Tiny random-weight BERT models saved to a temp dir, to exercise the real sentence-transformers
loading code (embedder and cross-encoder) without any download."""
from __future__ import annotations

from pathlib import Path

CHARS = ("的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里"
         "长江黄河中华北京上海公里全约第条员工作小时年假天河流母亲高峰珠穆朗玛海拔米世界最，。！？；：“”（）")


def _vocab_and_config(path: Path, **config):
    from transformers import BertConfig, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(dict.fromkeys(CHARS)) + [str(i) for i in range(10)]
    (path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), tokenize_chinese_chars=True, model_max_length=512)
    tokenizer.save_pretrained(path)
    settings = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=512)
    settings.update(config)
    return BertConfig(**settings)


def tiny_embedder(path: Path, seed: int = 0, hidden_size: int = 32, num_hidden_layers: int = 1) -> Path:
    """A random BERT saved at `path` (another seed or size: other weights / dimension, same path)."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(_vocab_and_config(path, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers)).save_pretrained(path)
    return path


def tiny_cross_encoder(path: Path) -> Path:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification(_vocab_and_config(path, num_labels=1)).save_pretrained(path)
    return path
