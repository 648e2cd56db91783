"""A refusal's closest passages never show a text twice: overlapping chunks of one document (sliding
windows, sentence chunks with overlap) are merged into the better-ranked one, rank order kept."""
from pathlib import Path

import pytest

from test_answer_trust import make_hit
from services.answers.answer import answer_question
from services.answers.refusal import distinct_hits, distinct_passages
from services.config import LLMSettings
from services.conversations import closest_passages
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever

DOC = "".join(f"第{i}句话写在这里。" for i in range(60))
CAIL = Path("/work/shared/data/cail2019_dev/docs/cail2019_dev_0001.txt")


def test_overlapping_passages_of_one_document_merge_in_rank_order():
    a, b = make_hit(DOC[180:475], "j.txt", 180, rerank=0.9), make_hit(DOC[0:300], "j.txt", 0, rerank=0.8)
    other, c = make_hit("另一份文档的内容。", "k.txt", 0), make_hit(DOC[500:560], "j.txt", 500)
    a.ranks, b.ranks = {"bm25": 3}, {"bm25": 1, "dense": 2}
    merged = distinct_hits([a, other, b, c])
    assert [(h.doc, h.start, h.end) for h in merged] == [("j.txt", 0, 475), ("k.txt", 0, 9), ("j.txt", 500, 560)]
    assert merged[0].text == DOC[0:475] and merged[0].ranks == {"bm25": 1, "dense": 2}
    assert merged[0].scores["rerank"] == 0.9 and set(merged[0].chunk_ids) == {181, 1}
    # three windows joined only through the last one
    x, y, z = (make_hit(DOC[s:e], "j.txt", s) for s, e in ((0, 100), (200, 300), (50, 250)))
    assert [(h.start, h.end, h.text) for h in distinct_hits([x, y, z])] == [(0, 300, DOC[0:300])]


def test_a_kept_turns_closest_passages_list_no_text_twice():
    sources = [{"n": 1, **make_hit(DOC[180:475], "j.txt", 180).to_json()},
               {"n": 2, **make_hit(DOC[0:300], "j.txt", 0).to_json()}]
    assert [(s["start"], s["end"]) for s in distinct_passages(sources)] == [(0, 475)]
    listing = closest_passages({"mode": "refused", "sources": sources})
    assert listing.count("第200句") == 0 and listing.count("第20句") == 1 and "[2]" not in listing, listing


@pytest.mark.skipif(not CAIL.exists(), reason="benchmark data not present")
def test_a_refusal_over_a_cail_judgment_lists_its_overlapping_chunks_once(lib, kb):
    text = CAIL.read_text(encoding="utf-8")
    ingest_bytes(lib, kb, text.encode(), CAIL.name)  # default sentence chunks overlap by design
    a = answer_question(Retriever(lib, kb), LLMSettings(), "张x6的班主任是谁？")
    assert a.mode == "refused"
    spans = sorted((h.start, h.end) for h in a.sources)
    assert all(e <= s2 for (_, e), (s2, _) in zip(spans, spans[1:])), spans
    assert all(h.text == text[h.start:h.end] for h in a.sources)
    listing = closest_passages(a.to_json())
    assert listing.count("按时向原告支付") == text[:max(e for _, e in spans)].count("按时向原告支付"), listing
