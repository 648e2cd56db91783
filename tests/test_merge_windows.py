"""Merging neighbouring window hits: passages never overlap and cover every selected window
(issue 8 item 9: with window 4 / stride 2 the same sentences came back twice as separate sources)."""
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.documents.chunking import ChunkingConfig, chunk_text
from services.search.retrieval import Hit, merge_windows

STAGES = ("bm25", "dense", "fused", "rerank")


def _doc_text(doc: int, sentences: int) -> str:
    return "".join(f"文档{doc}的第{i}句。" for i in range(sentences))


def _hits(texts: dict[str, str], config: ChunkingConfig, picks, draw_scores) -> list[Hit]:
    """Window chunks of every document, the picked ones as ranked hits (best first)."""
    chunks = []
    for doc_id, text in texts.items():
        for c in chunk_text(text, config):
            c.doc_id, c.id = doc_id, len(chunks)
            chunks.append(c)
    hits = []
    for n, i in enumerate(dict.fromkeys(i % len(chunks) for i in picks)):
        c = chunks[i]
        scores, ranks = draw_scores(n)
        hits.append(Hit(c, f"{c.doc_id}.txt", c.start, c.end, c.text, c.page_start, c.page_end,
                        scores, ranks, chunk_ids=[c.id]))
    return hits


def _fake_lib(texts: dict[str, str]):
    store = SimpleNamespace(document_text=lambda kb_id, doc_id: texts[doc_id])
    return SimpleNamespace(store=store), SimpleNamespace(id=1)


def _check(hits: list[Hit], merged: list[Hit], texts: dict[str, str]) -> None:
    by_doc: dict[str, list[tuple[int, int]]] = {}
    for m in merged:
        assert m.text == texts[m.chunk.doc_id][m.start:m.end]
        by_doc.setdefault(m.chunk.doc_id, []).append((m.start, m.end))
    for spans in by_doc.values():  # passages of one document never overlap
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    owner = {}
    for m in merged:
        for i in m.chunk_ids:
            assert i not in owner, "a window returned in two passages"
            owner[i] = m
    for h in hits:  # every selected window lies inside the passage that lists it
        m = owner[h.chunk_ids[0]]
        assert m.chunk.doc_id == h.chunk.doc_id and m.start <= h.start and h.end <= m.end
        assert m.page_start <= h.page_start and h.page_end <= m.page_end
    for m in merged:  # best stage diagnostics of the members
        members = [h for h in hits if h.chunk_ids[0] in m.chunk_ids]
        for stage in {s for h in members for s in h.scores}:
            assert m.scores[stage] == max(h.scores[stage] for h in members if stage in h.scores)
            assert m.ranks[stage] == min(h.ranks[stage] for h in members if stage in h.ranks)
    firsts = [min(hits.index(h) for h in hits if h.chunk_ids[0] in m.chunk_ids) for m in merged]
    assert firsts == sorted(firsts)  # a passage takes the place of its best-ranked member
    scores = [m.score for m in merged]
    assert scores == sorted(scores, reverse=True)


@settings(max_examples=150, deadline=None)
@given(
    sentences=st.lists(st.integers(1, 14), min_size=1, max_size=3),
    window=st.integers(1, 5),
    stride=st.integers(1, 5),
    picks=st.lists(st.integers(0, 200), min_size=1, max_size=12),
    stages=st.lists(st.sets(st.sampled_from(STAGES[:2]), min_size=1), min_size=12, max_size=12),
)
def test_merged_passages_never_overlap_and_cover_every_window(sentences, window, stride, picks, stages):
    stride = min(stride, window)
    texts = {f"d{n}": _doc_text(n, k) for n, k in enumerate(sentences)}

    def draw_scores(n):  # hits arrive ranked by fused score; bm25/dense present or not per hit
        scores = {s: 10.0 - n + 0.5 * (s == "dense") for s in stages[n]}
        scores["fused"] = 1.0 - n / 100
        return scores, {s: n + 1 for s in scores}

    hits = _hits(texts, ChunkingConfig("window", window=window, stride=stride), picks, draw_scores)
    lib, kb = _fake_lib(texts)
    _check(hits, merge_windows(lib, kb, hits), texts)


def test_a_window_joining_two_passages_merges_all_three():
    """Window 4 / stride 2 (the UI default): hits on sentences 0-4, 6-10, then 4-8 used to give two
    passages overlapping on sentences 6-8."""
    texts = {"d0": _doc_text(0, 12)}
    config = ChunkingConfig("window", window=4, stride=2)
    by_start = {c.sentence_start: n for n, c in enumerate(chunk_text(texts["d0"], config))}
    hits = _hits(texts, config, [by_start[0], by_start[6], by_start[4]],
                 lambda n: ({"bm25": 3.0 - n, "fused": 1.0 - n / 10}, {"bm25": n + 1, "fused": n + 1}))
    lib, kb = _fake_lib(texts)
    merged = merge_windows(lib, kb, hits)
    assert len(merged) == 1
    assert (merged[0].start, merged[0].end) == (hits[0].start, hits[1].end)
    assert merged[0].chunk_ids == [h.chunk_ids[0] for h in hits]
    assert merged[0].ranks == {"bm25": 1, "fused": 1}


def test_window_merge_end_to_end_with_ui_defaults(lib, kb):
    """Through the retriever with window 4 / stride 2: passages of one document never overlap."""
    from services.config import RetrievalSettings
    from services.index.ingest import ingest_bytes
    from services.search.retrieval import Retriever

    text = "".join(f"第{i}句讲的是长江的第{i}个特点{'，也讲黄河' if i % 3 == 0 else ''}。" for i in range(30))
    ingest_bytes(lib, kb, text.encode(), "w.txt", ChunkingConfig("window", window=4, stride=2))
    for query in ("长江 特点", "黄河", "第7句 第15句 第22句"):
        hits = Retriever(lib, kb, RetrievalSettings(mode="bm25", top_k=20)).search(query).hits
        spans = sorted((h.start, h.end) for h in hits)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (query, spans)
        assert all(h.text == text[h.start:h.end] for h in hits)
