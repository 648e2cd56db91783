"""Walkthrough s27 polish (评测, uploads, 设置): the re-chunk phase of an evaluation reports per document,
评测 says what 「当前知识库的切分」 is and which questions will not be scored before the run, and a
new session's upload summary counts the last batch, not the last hour's."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from services.documents.chunking import ChunkingConfig
from test_finetune import CONFIG, TOPICS, question_lines
from tiny_models import tiny_embedder


@pytest.fixture
def tiny_kb(data_dir, tmp_path):
    """A KB of TOPICS (a tiny random BERT embeds it in moments): four documents chunked by sentence,
    two with sliding windows; the workspace runs no background worker (jobs are run here)."""
    from services.index.ingest import ingest_bytes
    from services.workspace import open_workspace

    ws = open_workspace(data_dir, background=False)
    kb = ws.session().create_kb("评测库")
    ws.lib.store.update_kb_settings(kb.id, embedding_model=str(tiny_embedder(tmp_path / "base")))
    window = ChunkingConfig("window", window=2, stride=1)
    for n, (name, text) in enumerate(TOPICS.items()):
        ingest_bytes(ws.lib, ws.lib.kb("评测库"), text.encode(), f"{name}.txt", window if n >= 4 else CONFIG)
    return ws, kb


def test_the_current_chunking_is_described_by_its_documents(tiny_kb):
    _, kb = tiny_kb
    assert kb.chunking_summary() == "4 个文档按句子 40/0，2 个滑动窗口 2/1"


def test_the_questions_left_out_of_the_score_are_said_before_the_run(tiny_kb):
    from services.views import parse_questions

    _, kb = tiny_kb
    lines = question_lines() + [json.dumps({"question": "长江是中国第一大河吗？", "doc_file": "docs/长江.txt",
                                            "answer": "是", "answer_type": "yesno"}, ensure_ascii=False),
                                json.dumps({"question": "长江有多少条支流？", "doc_file": "docs/长江.txt"}, ensure_ascii=False)]
    said = kb.unscored(parse_questions(lines))
    assert "1 个是非题" in said and "1 个没有答案的问题" in said and "不在知识库中（火星" in said, said
    assert kb.unscored(parse_questions(question_lines()[:4])) == ""  # all scored: nothing to say


def test_the_rechunk_phase_of_an_evaluation_reports_each_document(tiny_kb):
    ws, kb = tiny_kb
    job = kb.evaluate(question_lines(), ["bm25"], [False], ["current", "fixed"])
    seen = []
    done = kb.run_now(job, lambda stage, d, total, extra: seen.append((stage, d, total, extra.get("config"))))
    assert done.status == "done", done.result
    variant = [(d, total) for stage, d, total, _ in seen if stage == "variant" and total]
    assert variant[0] == (0, 6) and variant[-1] == (6, 6) and len(variant) == 7, variant  # was one 「1/2 种配置」
    assert all("第 2/2 种配置" in config for stage, _, _, config in seen if stage == "variant")


def _job(id, created, updated, status="done"):
    return SimpleNamespace(id=id, created_at=created, updated_at=updated, status=status,
                           active=status in ("queued", "running", "cancelling"))


def test_a_new_sessions_upload_summary_counts_the_last_batch():
    from services.views import latest_batch

    first = [_job(1, 0.0, 5.0), _job(2, 0.0, 9.0)]  # two files queued together, finished at 5 s and 9 s
    second = [_job(3, 20.0, 22.0), _job(4, 20.0, 23.0)]  # uploaded again later: a batch of its own
    assert [j.id for j in latest_batch(first + second)] == [3, 4]  # not 「文件 4/4」
    joined = [_job(1, 0.0, 5.0), _job(2, 0.0, 9.0), _job(3, 7.0, 12.0)]  # added while job 2 still ran
    assert [j.id for j in latest_batch(joined)] == [1, 2, 3]
    running = [_job(1, 0.0, 5.0), _job(2, 20.0, 21.0, "running"), _job(3, 20.0, 20.0, "queued")]
    assert [j.id for j in latest_batch(running)] == [2, 3]
    assert latest_batch([]) == []


@pytest.mark.slow  # an AppTest run of the 评测 page
def test_the_evaluation_page_says_the_current_chunking_and_the_unscored_questions_before_the_run(tiny_kb):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.tuning.evaluation import save_question_set

    ws, kb = tiny_kb
    yes_no = json.dumps({"question": "长江是中国第一大河吗？", "doc_file": "docs/长江.txt", "answer": "是",
                         "answer_type": "yesno"}, ensure_ascii=False)
    save_question_set(ws.lib, ws.lib.kb("评测库"), question_lines() + [yes_no])  # 火星 is not in the KB
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["kb_id"] = kb.id
    at.run()
    at.switch_page("components/pages/evaluation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(c.value for c in at.caption).replace("\\", "")
    assert "「当前知识库的切分」：4 个文档按句子 40/0，2 个滑动窗口 2/1" in captions, captions
    assert "其中不计入检索评分：1 个是非题。" in captions, captions  # before the run; 火星 said once, apart
    assert captions.count("不在知识库中（火星.txt）") == 1, captions
