"""The 微调 page's reranker section and the reranker pickers (issue 20): a reranker trained on the KB
is shown with its before/after table (rerank off / on), offered only when it measured better, and
then selectable on the settings page and in the lab."""
import json

import pytest

from test_app import app, button
from test_finetune import CONFIG, TOPICS
from tiny_models import tiny_cross_encoder

pytestmark = pytest.mark.slow


def summary(mrr: float) -> dict:
    return {"recall@1": mrr, "recall@5": mrr, "mrr@10": mrr, "coverage@1000chars": 1.0, "p50_ms": 12.0, "questions": 9}


def trained_reranker(lib, kb, name: str, better: bool):
    """A reranker folder as services.tuning.rerank_training saves it (a tiny model, its card)."""
    from services.tuning.finetune import models_dir

    folder = tiny_cross_encoder(models_dir(lib) / name)
    card = {"name": name, "kind": "reranker", "kb": kb.name, "base_model": "e5", "created_at": 1.0,
            "pairs": {"train": 30, "examples": 120, "heldout": 9}, "seconds": 5.0, "added_ms_p50": 40.0,
            "results": {"heldout": {"off": summary(0.5), "on": summary(0.7 if better else 0.4)}},
            "better": better, "better_on": "heldout", "applied": False}
    (folder / "wendao_card.json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return str(folder)


@pytest.fixture
def kb_with_rerankers(data_dir):
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("重排库", create=True)
    for name, text in TOPICS.items():
        ingest_bytes(lib, kb, text.encode(), f"{name}.txt", CONFIG)
    return lib, kb, trained_reranker(lib, kb, "好重排", True), trained_reranker(lib, kb, "差重排", False)


def test_a_better_reranker_is_offered_and_then_reranks_the_kb(kb_with_rerankers):
    from services.index.kb_settings import retrieval_settings

    lib, kb, good, bad = kb_with_rerankers
    at = app("finetune")
    tables = [t.value for t in at.dataframe]
    assert len(tables) == 2 and list(tables[0]["重排"]) == ["关", "开"]
    assert list(tables[0].columns) == ["问题", "重排", "第1条命中", "前5条命中", "名次得分", "前1000字含答案", "通常用时"]
    assert "重排后没有更好，因此不提供。" in [w.value for w in at.warning]
    assert [b.label for b in at.button if b.label == "用它重排"] == ["用它重排"]  # only the better one
    button(at, "用它重排").click().run()
    assert not at.exception
    settings = retrieval_settings(lib, kb)
    assert settings.rerank and settings.reranker_model == good
    assert "（本知识库正在用它重排）" in "".join(m.value for m in at.markdown)

    page = app("settings")
    box = page.selectbox(key=f"settings_{kb.id}_reranker")
    assert "训练：好重排（重排库）" in box.options and "训练：差重排（重排库）" not in box.options  # (labels)
    assert box.value == good
