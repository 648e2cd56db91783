"""Conversations kept before citations carried `sentence` (the index of the answer sentence citing them):
opening one must not break nor show less — its chips and citation dialog name each claim, as for a new
answer. `services.conversations.turns` fills the field in when it reads a turn."""
from services import conversations
from services.answers.citations import source_claims

ANSWER = "长江全长六千三百公里。[1]长江流经十一个省级行政区（未核实）。[1]它在上海注入东海。"
QUOTE = "长江是中国第一大河，全长六千三百公里"


def old_turn() -> dict:
    """An LLM answer's JSON as turns were kept before the `sentence` field: no citation names its sentence."""
    citation = {"n": 1, "doc": "rivers.txt", "page": 1, "start": 0, "end": len(QUOTE), "quote": QUOTE,
                "supported": True, "support": 0.9, "posthoc": False, "corrected": False, "cited_n": None, "doc_id": ""}
    return {"answer": ANSWER, "mode": "llm", "query": "长江有多长？", "question": "长江有多长？",
            "citations": [citation, {**citation, "supported": False, "support": 0.2},
                          {**citation, "posthoc": True, "supported": True}],
            "sources": [{"doc": "rivers.txt", "start": 0, "end": 40, "text": QUOTE + "，流经十一个省", "page": 1,
                         "pages": [1, 1], "chunk_ids": [], "scores": {}, "ranks": {}}],
            "timings_ms": {}, "notice": ""}


def test_a_turn_kept_without_citation_sentences_names_its_claims_when_opened(lib, kb):
    conv = conversations.create(lib.store, kb.id)
    conversations.add_turn(lib.store, conv, "长江有多长？", old_turn())  # the row as an older version wrote it
    (turn,) = conversations.turns(lib.store, conv)
    answer = turn["answer"]
    assert [c["sentence"] for c in answer["citations"]] == [0, 1, 2]  # [1] of sentence 0, of 1; matched to 2
    claims = source_claims(answer, 1)
    assert [c["claim"] for c in claims] == ["长江全长六千三百公里。", "长江流经十一个省级行政区。", "它在上海注入东海。"]
    assert [c["supported"] for c in claims] == [True, False, True]  # the dialog's 「未核实：长江流经…」, not the quote
    history = conversations.history(lib.store, conv)  # continuing it works as before
    assert history.turns[0].answer == ANSWER


def test_an_old_extract_numbers_its_quotes_and_new_turns_are_left_alone():
    extract = {"answer": "以下内容摘自文档：\n\nA[1]\nB[2]", "mode": "extractive",
               "citations": [{"n": 1, "quote": "A"}, {"n": 2, "quote": "B"}]}
    assert [c["sentence"] for c in conversations.with_sentences(extract)["citations"]] == [0, 1]
    new = {**extract, "citations": [{"n": 1, "quote": "A", "sentence": 0}]}
    assert conversations.with_sentences(new) is new


def test_the_chat_page_opens_an_old_conversation_and_its_dialog_names_the_unverified_claim(lib, kb):
    """The page (AppTest): ?c= opens the kept turn, its chip counts the one unverified claim of [1] and the
    dialog names that claim — not the quote, which is what a turn without `sentence` showed."""
    from test_ui_everyday import app

    from services.index.ingest import ingest_bytes

    ingest_bytes(lib, kb, (QUOTE + "，流经十一个省级行政区，最后在上海注入东海。").encode(), "rivers.txt")
    conv = conversations.create(lib.store, kb.id, key="oldturn")
    conversations.add_turn(lib.store, conv, "长江有多长？", old_turn())
    at = app(query={"c": "oldturn"})
    chips = [b for b in at.button if b.label.startswith("\\[1\\]")]
    assert [b.label for b in chips] == ["\\[1\\] rivers\\.txt（1 处未核实）"], [b.label for b in at.button]
    chips[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [t.value for t in at.text]
    assert "未核实：长江流经十一个省级行政区。" in shown, shown
