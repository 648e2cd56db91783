"""An LLM answer is shown as verified only when its sources say what it says (walkthrough s26 #1).

A fake endpoint always answers "被告每月支付生活费4200元。[1]" while the judgment says 800元, and answers
the pre-check (先核对) with the answer's own JSON, without its `evidence` field. Before: the answer
was shown in `llm` mode with [1] supported (its quote an unrelated date clause) and nothing marked.
"""
import json
import os
import subprocess
import sys

import pytest

from llm_server import FakeLLMServer
from test_answer_trust import make_hit
from test_pinpoint import GUN, JUDGMENT_A, JUDGMENT_B
from services.answers.answer import UNSUPPORTED_LLM_NOTICE, answer_question
from services.answers.citations import UNVERIFIED_MARK, claim_values, mark_unverified, missing_values, repair_citations
from services.config import LLMSettings
from services.documents.chunking import ChunkingConfig
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever

WRONG = "被告每月支付生活费4200元。[1]"
QUESTION = "被告每月向原告支付李x6的生活费多少钱？"


def settings(server, **kw):
    return LLMSettings(base_url=server.url, api_key="sk-test", model="fixed", timeout=10, **kw)


@pytest.fixture
def judgments(lib, kb):
    for text, name in ((JUDGMENT_A, "李x6抚养纠纷.txt"), (JUDGMENT_B, "赵0离婚.txt"), (GUN, "射击断续器.txt")):
        ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig("sentence", 300, 0))
    return kb


# --- the citation check ---------------------------------------------------------------------------
def test_a_number_the_passage_does_not_state_is_no_support():
    hits = [make_hit(JUDGMENT_A, "a.txt")]
    _, (c,) = repair_citations(WRONG, hits)
    assert not c.supported  # every other word of the sentence is in the judgment: the number is not
    assert "生活费800元" in c.quote and "2011年7月21日" not in c.quote and len(c.quote) < 60  # the clause it contradicts
    for written in ("800元", "八百元", "８００元", "800.00元"):
        _, (c,) = repair_citations(f"被告每月支付李x6的生活费{written}。[1]", hits)
        assert c.supported and "生活费800元" in c.quote and len(c.quote) < 60, written


def test_values_are_compared_however_they_are_written():
    assert missing_values("合同金额为1,000元。", "合同金额为1000元") == []
    assert missing_values("金额5万元。", "金额50000元") == missing_values("金额50000元。", "金额伍万元") == []
    assert missing_values("于二〇〇一年五月结婚。", "于2001年5月结婚") == []
    assert missing_values("罚款1800元。", "罚款800元") == ["1800"]  # 800 is no part of 1800
    assert missing_values("原告曹5每月支付800元。", "原告曹0每月支付800元") == ["曹5"]  # a name is a value too
    assert missing_values("李x6出生于2011年。", "生育一女李x62011年7月21日") == []  # a masked name runs into the year
    assert claim_values("1. 被告一直支付生活费。") == claim_values("这是一个国家。") == []  # numbering, 一直, 一个
    # a name the question states is the user's: a passage saying 他… supports the restated subject, numbers never are
    assert missing_values("乔治·居维叶是19世纪初灾变论的支持者。", "他是19世纪初灾变论的支持者", asked="乔治·居维叶是谁？") == []
    assert missing_values("被告每月支付4200元。", "被告每月支付800元", asked="被告每月支付4200元吗？") == ["4200"]


def test_a_partly_supported_answer_marks_its_unsupported_sentences():
    hits = [make_hit(JUDGMENT_A, "a.txt")]
    text, cits = repair_citations("李x6现在荣昌县城西小学上学。[1]" + WRONG, hits)
    assert [c.supported for c in cits] == [True, False]
    assert mark_unverified(text, cits) == f"李x6现在荣昌县城西小学上学。[1]被告每月支付生活费4200元{UNVERIFIED_MARK}。[1]"


def test_every_marker_the_model_wrote_stays_in_the_text():
    """Two claims of one sentence citing the same source keep both markers; only a run of adjacent
    markers that repair makes equal ("[3][1]" -> "[1]") loses its duplicate."""
    hits = [make_hit(JUDGMENT_A, "a.txt")]
    both = "原、被告经本院调解离婚[1]，离婚后被告每月向原告支付李x6的生活费800元[1]。"
    text, cits = repair_citations(both, hits)
    assert text == both and mark_unverified(text, cits) == both
    text, _ = repair_citations("被告每月向原告支付李x6的生活费800元[3][1]。", hits)
    assert text == "被告每月向原告支付李x6的生活费800元[1]。"


# --- the flow, the core and the CLI -----------------------------------------------------------------
def test_a_check_reply_without_its_fields_is_no_pass(lib, judgments):
    with FakeLLMServer(fixed=WRONG) as server:
        a = answer_question(Retriever(lib, judgments), settings(server), QUESTION)
        asked = [r["body"].get("response_format", {}).get("json_schema", {}).get("name") for r in server.requests]
    assert asked == ["answerable_check"]  # the failed check: the answer is not asked for
    assert a.mode == "extractive" and "4200" not in a.text and a.answer_span.text == "800元"
    assert "evidence" in a.notice and "摘录" in a.notice


def test_an_answer_its_sources_contradict_is_never_shown_as_verified(lib, judgments):
    """Through the core: the check off, the model's wrong number is replaced by the extract."""
    from services.workspace import Workspace

    handle = Workspace(lib, background=False).session().kb(judgments.id)
    with FakeLLMServer(fixed=WRONG) as server:
        a = handle.ask(QUESTION, llm=settings(server, verify_answerable=False)).finish()
        assert a.mode == "extractive" and UNSUPPORTED_LLM_NOTICE in a.notice
        assert "4200" not in a.text and a.answer_span.text == "800元" and all(c.supported for c in a.citations)
        server.fixed = "李x6现在荣昌县城西小学上学。[1]" + WRONG
        b = handle.ask(QUESTION, llm=settings(server, verify_answerable=False)).finish()
    assert b.mode == "llm" and b.text.endswith(f"4200元{UNVERIFIED_MARK}。[1]") and "上学。[1]" in b.text
    kept = handle.turns(handle.conversations()[0].key)[-1]["answer"]
    assert UNVERIFIED_MARK in kept["answer"] and [c["supported"] for c in kept["citations"]] == [True, False]


def test_without_a_supported_citation_or_an_extract_the_answer_is_refused(lib, judgments, monkeypatch):
    """No quotable clause for the extract either: the unsupported LLM answer is never shown."""
    from services.answers import answer as flow
    from services.answers.extractive import Extract

    monkeypatch.setattr(flow, "pinpoint", lambda *a, **k: Extract([]))
    with FakeLLMServer(fixed=WRONG) as server:
        a = answer_question(Retriever(lib, judgments), settings(server, verify_answerable=False), QUESTION)
    assert a.mode == "refused" and "4200" not in a.text and a.text.startswith("文档中没有找到")
    assert "没有一条引用得到原文支持" in a.notice and "已改为显示文档摘录" not in a.notice


@pytest.mark.slow  # starts Python processes
def test_cli_ask_json_does_not_pass_a_wrong_number(tmp_path, data_dir):
    (tmp_path / "李x6抚养纠纷.txt").write_text(JUDGMENT_A, encoding="utf-8")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with FakeLLMServer(fixed=WRONG) as server:
        env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir), "OPENAI_BASE_URL": server.url,
               "OPENAI_API_KEY": "sk-test", "WENDAO_LLM_MODEL": "fixed"}
        subprocess.run([sys.executable, "-m", "services", "ingest", "--kb", "资料", str(tmp_path / "李x6抚养纠纷.txt")],
                       cwd=root, env=env, check=True, capture_output=True, timeout=180)
        out = subprocess.run([sys.executable, "-m", "services", "ask", "--kb", "资料", "--json", QUESTION],
                             cwd=root, env=env, capture_output=True, text=True, timeout=180)
    data = json.loads(out.stdout)
    assert data["mode"] == "extractive" and "4200" not in data["answer"] and data["answer_span"]["text"] == "800元"
    assert "evidence" in data["notice"] and all(c["supported"] for c in data["citations"])


@pytest.mark.parametrize("text, value", [("50,000", 50000), ("3.5", 3.5), ("5万", 50000), ("四千二百", 4200),
                                         ("十五", 15), ("三万", 30000), ("伍万", 50000), ("二〇〇一", 2001),
                                         ("万", 10000), ("两", 2), ("元", None), ("", None)])
def test_one_numeral_reader_serves_citations_and_extracts(text, value):
    """Citations (a claim's values) and extracts (ambiguity, typed values) read numerals the same way."""
    from services.answers.answer_types import numeral_value

    assert numeral_value(text) == value


# --- the chat page: a chip counts its unverified claims ---------------------------------------------
PARTLY = "被告每月向原告支付李x6的生活费800元。[1] 被告还需支付李x6的教育费3000元。[1]"


def test_a_chip_says_how_many_of_its_claims_are_unverified(lib, judgments, monkeypatch):
    """One of two claims citing [1] is unsupported: the chip says 1 处未核实 (not the whole source
    未核实) and its dialog names the claim; the answer keeps both markers."""
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.index.kb_settings import save_llm_settings

    with FakeLLMServer(fixed=PARTLY) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("WENDAO_LLM_MODEL", "fixed")
        save_llm_settings(lib, judgments, settings(server, verify_answerable=False))
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("components/pages/chat.py").run()
        at.chat_input[0].set_value(QUESTION).run()
        assert not at.exception, [e.value for e in at.exception]
        chips = [b for b in at.button if b.label.startswith("\\[1\\]")]
        assert [b.label for b in chips] == ["\\[1\\] 李x6抚养纠纷\\.txt（1 处未核实）"], [b.label for b in at.button]
        chips[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
    shown = [t.value for t in at.text]
    assert "未核实：被告还需支付李x6的教育费3000元。" in shown, shown
    assert not any("800元" in t for t in shown if t.startswith("未核实"))
