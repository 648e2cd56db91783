"""Walkthrough s27 on 检索实验室 (findings 1, 2, 4, 13, 14, 15): 「期望找到的内容」 is matched the way a user
means it and explained per case; the lab says which results the chat sees; highlighting marks words,
not stray characters; merged passages say so; a rerank that did not run shows no rerank time."""
from dataclasses import replace

import pytest

from services import errors
from services.documents.tokenizer import highlight_terms, term_spans
from services.search import diagnosis
from services.search.retrieval import Hit, Retriever, SearchResult, merge_hits
from services.documents.chunking import Chunk
from fixtures import ZH_PARAGRAPHS

CHEM = ("化学方程式\n化学方程式，又称化学反应式，是用化学式来描述物质的化学反应的式子（类似于数学公\n式，注意特殊符号表达）。"
        "热化学方程式中要写上焓变。")
GAME = ("游戏规则\n若游戏中离，则4分钟内不得进行配对。每次中离加2分钟。" + "".join(f"第{n}段：{p}" for n, p in enumerate(ZH_PARAGRAPHS * 3))
        + "比赛胜利得到积分。比赛失败扣分。退出比赛的人下次比赛排在后面。")
FAMILY = "抚养协议\n双方约定王0每月支付抚养费1000元，于2010年11月5日前付清。王0同意孩子户口为城镇居民户口。"


@pytest.fixture
def kb3(lib):
    from services.index.ingest import ingest_bytes

    kb = lib.kb("实验", create=True)
    for name, text in (("化学.txt", CHEM), ("游戏.txt", GAME), ("抚养.txt", FAMILY)):
        ingest_bytes(lib, kb, text.encode(), name)
    return lib, kb


def _explain(lib, kb, query, expected, chat_k=5, **settings):
    retriever = Retriever(lib, kb, replace(lib_settings(lib, kb), **settings))
    result = retriever.search(query, top_k=settings.get("top_k"))
    return diagnosis.explain(retriever, result, expected, chat_k), result


def lib_settings(lib, kb):
    from services.index.kb_settings import retrieval_settings

    return retrieval_settings(lib, kb)


# --- 1. a sentence with a PDF line break inside is found -----------------------------------------
def test_expected_text_with_a_line_break_inside_is_found_as_result_one(kb3):
    lib, kb = kb3
    report, result = _explain(lib, kb, "化学方程式是什么？", "类似于数学公式，注意特殊符号表达", mode="bm25")
    assert "公\n式" in result.hits[0].text  # the stored passage wraps inside the sentence
    assert report.state == "found", report.lines
    assert "最终第 1 名" in report.lines[0] and "《化学.txt》" in report.lines[0], report.lines
    # full-width letters and other punctuation match too
    assert diagnosis.explain(Retriever(lib, kb, lib_settings(lib, kb)), result, "类似于数学公式 注意特殊符号表达", 5).found


def test_a_close_but_not_exact_text_is_reported_as_the_closest_result(kb3):
    lib, kb = kb3
    report, _ = _explain(lib, kb, "化学方程式是什么？", "用化学式来描写物质的化学反应的式子", mode="bm25")
    assert report.found and "没有逐字相同的段落；最接近的是第 1 名（相似" in report.lines[0], report.lines


# --- 2. the explanation is specific to the case ---------------------------------------------------
def test_text_in_no_document_is_said_to_be_in_no_document(kb3):
    lib, kb = kb3
    report, _ = _explain(lib, kb, "退出比赛会受到什么处罚？", "这句话根本不在任何文档里", mode="bm25")
    assert report.state == "absent" and "不在知识库的任何文档中" in report.lines[0], report.lines


def test_bm25_only_miss_names_the_document_the_shared_words_and_never_vectors(kb3):
    lib, kb = kb3
    report, _ = _explain(lib, kb, "游戏比赛退出的处罚", "若游戏中离，则4分钟内不得进行配对", mode="bm25", top_k=1,
                         bm25_top_k=1)
    text = "\n".join(report.lines)
    assert report.state == "missed", report.lines
    assert "在《游戏.txt》第" in text and "（所在片段第 1–" in text and "没有进入候选" in text, text
    assert "关键词检索：这个片段排第 " in text and "候选只取前 1 名（第 1 名得分" in text, text
    assert "向量" not in text, text  # only BM25 ran
    assert "它含有「游戏」" in text and "缺少「比赛 / 退出 / 处罚」" in text, text


def test_a_passage_sharing_no_word_suggests_vector_search(kb3):
    lib, kb = kb3
    report, _ = _explain(lib, kb, "退出会受到什么处罚？", "若游戏中离，则4分钟内不得进行配对", mode="bm25")
    text = "\n".join(report.lines)
    assert "它不含问题中的任何一个词（「退出 / 会 / 受到 / 处罚」都不在其中）" in text, text
    assert "试试「向量」或「混合」检索" in text, text


def test_hybrid_miss_gives_the_chunks_dense_rank_and_similarity(kb3):
    lib, kb = kb3
    report, _ = _explain(lib, kb, "退出比赛会受到什么处罚？", "双方约定王0每月支付抚养费", mode="hybrid", top_k=1,
                         bm25_top_k=1, dense_top_k=1)
    text = "\n".join(report.lines)
    assert report.state == "missed" and "向量检索：这个片段排第" in text and "相似度" in text, text
    assert "关键词检索：这个片段" in text, text


def test_a_hybrid_result_found_by_one_search_says_the_other_missed_it(kb3):
    lib, kb = kb3
    report, result = _explain(lib, kb, "退出会受到什么处罚？", "若游戏中离，则4分钟内不得进行配对", mode="hybrid", top_k=10)
    assert report.lines and "关键词检索未进前" in report.lines[0] and "向量检索第" in report.lines[0], report.lines


def test_a_candidate_below_the_chat_count_is_said_to_be_unseen_by_the_chat(kb3):
    lib, kb = kb3
    report, result = _explain(lib, kb, "游戏 配对 积分 抚养费 方程式", "双方约定王0每月支付抚养费", mode="bm25", top_k=10, chat_k=1)
    rank = next(r for r, h in enumerate(result.hits, start=1) if "抚养费" in h.text)
    if rank == 1:
        pytest.skip("ranked first here")
    assert report.state == "hidden" and f"最终第 {rank} 名" in report.lines[0], report.lines
    assert "在问答中看不到（问答只用前 1 条）" in report.lines[0], report.lines
    assert diagnosis.chat_cut_line(5, 10).startswith("问答只用前 5 条")


def test_a_candidate_below_the_labs_count_says_its_final_rank(kb3):
    lib, kb = kb3
    report, result = _explain(lib, kb, "游戏 配对 积分 抚养费 方程式", "双方约定王0每月支付抚养费", mode="bm25", top_k=1, chat_k=1)
    if "抚养费" in result.hits[0].text:
        pytest.skip("ranked first here")
    assert report.state == "cut" and "未进入这里显示的前 1 条" in report.lines[0], report.lines


# --- 13. highlighting ------------------------------------------------------------------------------
def test_highlighting_marks_words_not_stray_digits_or_single_characters():
    text = "双方约定王0于2010年11月5日支付10000元。"
    marked = [text[a:b] for a, b in term_spans(text, highlight_terms("双方约定王0每月支付多少抚养费"))]
    assert marked == ["双方约定王0", "支付"], marked  # was every 「0」 of 2010 / 11 / 10000 too
    rule = "若游戏中离，则4分钟内不得进行配对。中国内地"
    marked = [rule[a:b] for a, b in term_spans(rule, highlight_terms("若游戏中离则4分钟内不得进行配对"))]
    assert "中离" in "".join(marked) and "内" not in marked and "中" not in marked, marked
    assert "尤金" in highlight_terms("尤金袋鼠生活在哪里") and "尤" not in highlight_terms("尤金袋鼠生活在哪里")


# --- 14. merged passages say so ----------------------------------------------------------------
def test_a_merged_passage_says_how_many_chunks_it_joins():
    text = "一句。二句。三句。四句。"
    hits = [Hit(Chunk(0, 0, 6, text[:6], strategy="window", sentence_start=0, sentence_end=2, id=1, doc_id="d"),
                "d.txt", 0, 6, text[:6], 1, 1, {"bm25": 2.0}, {"bm25": 2}, [1]),
            Hit(Chunk(1, 3, 9, text[3:9], strategy="window", sentence_start=1, sentence_end=3, id=2, doc_id="d"),
                "d.txt", 3, 9, text[3:9], 1, 1, {"bm25": 3.0}, {"bm25": 3}, [2])]
    merged = merge_hits(hits, lambda _: text)
    assert diagnosis.merged_note(merged[0]) == "（由相邻的 2 个片段合并）"
    result = SearchResult("q", merged, {"bm25": 1.0}, ["二句"], hits, "", merged)

    class R:  # explain reads the KB only when the text is in no result
        from services.config import RetrievalSettings as _S
        settings = _S()

    report = diagnosis.explain(R(), result, "二句。三句", 5)
    assert "（由相邻的 2 个片段合并）" in report.lines[0] and "最终第 1 名" in report.lines[0], report.lines


# --- 15. no rerank time when nothing was reranked ---------------------------------------------
def test_a_failed_rerank_lists_no_rerank_time(kb3, monkeypatch):
    lib, kb = kb3

    def broken(*a, **k):
        raise errors.ModelLoadError("重排模型不在本地。")

    monkeypatch.setattr("services.search.rerank.load_reranker", broken)
    result = Retriever(lib, kb, replace(lib_settings(lib, kb), mode="bm25", rerank=True)).search("游戏")
    assert "本次未重排" in result.notice
    assert "rerank" not in result.timings_ms and "rerank_attempt" in result.timings_ms, result.timings_ms
    assert result.timings_ms["total"] >= result.timings_ms["bm25"]


# --- the page renders what the core says ---------------------------------------------------------
def test_lab_page_finds_the_wrapped_sentence_explains_a_bm25_miss_and_marks_the_chat_cut(kb3):
    from test_app import app

    lib, kb = kb3
    at = app("lab")
    at.radio(key=f"a_{kb.id}_mode").set_value("bm25").run()
    at.text_input[0].input("化学方程式是什么？").run()
    at.text_input[1].input("类似于数学公式，注意特殊符号表达").run()
    assert any("最终第 1 名" in i.value and "《化学" in i.value for i in at.info), [i.value for i in at.info]
    assert not [w.value for w in at.warning if "期望" in w.value or "不在" in w.value], [w.value for w in at.warning]
    captions = [c.value for c in at.caption]
    assert any(c.startswith("问答使用前 5 条") or c.startswith("问答只用前 5 条") for c in captions), captions
    at.text_input[0].input("退出会受到什么处罚？").run()
    at.text_input[1].input("若游戏中离，则4分钟内不得进行配对").run()
    warnings = "\n".join(w.value for w in at.warning)
    assert "《游戏" in warnings and "没有进入候选" in warnings and "不含问题中的任何一个词" in warnings, warnings
    assert "向量检索前" not in warnings and "向量检索：" not in warnings, warnings
    at.text_input[1].input("这句话根本不在任何文档里").run()
    assert any("不在知识库的任何文档中" in w.value for w in at.warning), [w.value for w in at.warning]


def test_lab_page_marks_results_the_chat_cannot_see_and_lists_no_rerank_time_without_a_rerank(kb3, monkeypatch):
    from test_app import app

    lib, kb = kb3

    def broken(*a, **k):
        raise errors.ModelLoadError("重排模型不在本地。")

    from services.index.ingest import ingest_bytes

    for n, text in enumerate(ZH_PARAGRAPHS):  # more passages than the chat's 5
        ingest_bytes(lib, kb, f"河山{n}\n{text}".encode(), f"河山{n}.txt")
    monkeypatch.setattr("services.search.rerank.load_reranker", broken)
    at = app("lab")
    at.radio(key=f"a_{kb.id}_mode").set_value("hybrid").run()
    at.text_input[0].input("游戏 比赛 抚养费").run()
    heads = [m.value for m in at.markdown if m.value.startswith("**") and "\\." in m.value[:8]]
    assert len(heads) > 5, heads  # the lab lists up to 10, the chat uses the KB's 5
    assert all(("在问答中看不到（问答只用前 5 条）" in h) == (i > 5) for i, h in enumerate(heads, start=1)), heads
    assert any(c.value.startswith("问答只用前 5 条") for c in at.caption), [c.value for c in at.caption]
    at.toggle(key=f"a_{kb.id}_rerank").set_value(True).run()
    assert any("本次未重排" in w.value for w in at.warning), [w.value for w in at.warning]
    timing = next(c.value for c in at.caption if "问题切成的词" in c.value)
    assert "重排" not in timing, timing  # was 「重排 1.1 毫秒」 though nothing was reranked


def test_text_across_a_chunk_boundary_and_text_in_a_filtered_out_document_are_said_so(kb3):
    lib, kb = kb3
    doc = next(d for d in lib.store.list_documents(kb.id) if d.filename == "游戏.txt")
    chunks = lib.store.chunks_of(kb.id, doc.id)
    assert len(chunks) > 1
    text = lib.store.document_text(kb.id, doc.id)
    across = text[chunks[1].start - 20:chunks[0].end + 20]
    report, _ = _explain(lib, kb, "长江 黄河 珠穆朗玛峰", across, mode="bm25")
    # the closest passage holds most of it; the report says the whole text crosses a chunk boundary
    assert "最接近的是第" in report.lines[0], report.lines
    assert any("跨越了 2 个片段" in line and "没有一个片段完整包含它" in line for line in report.lines), report.lines
    report, _ = _explain(lib, kb, "退出会受到什么处罚？", across, mode="bm25")  # no candidate close to it
    assert report.state == "missed" and any("没有一个片段完整包含它" in line for line in report.lines), report.lines
    other = next(d for d in lib.store.list_documents(kb.id) if d.filename != "游戏.txt")
    retriever = Retriever(lib, kb, replace(lib_settings(lib, kb), mode="bm25"), doc_ids=[other.id])
    report = diagnosis.explain(retriever, retriever.search("配对"), "若游戏中离，则4分钟内不得进行配对", 5)
    assert report.state == "filtered" and "不在本次选择的检索范围内" in report.lines[0], report.lines


# --- review of the lab's explanations: big documents, several copies, costly alignments, names ------------
class _Doc:
    def __init__(self, id, filename, text, enabled=True):
        self.id, self.filename, self.text, self.enabled, self.status = id, filename, text, enabled, "ready"


class _Store:
    def __init__(self, docs):
        self.docs = docs

    def list_documents(self, kb_id):
        return list(self.docs)

    def document_text(self, kb_id, doc_id):
        return next(d.text for d in self.docs if d.id == doc_id)

    def chunks_of(self, kb_id, doc_id):
        text = self.document_text(kb_id, doc_id)
        return [Chunk(ordinal=0, id=0, doc_id=doc_id, text=text, start=0, end=len(text))]


class _Retriever:
    def __init__(self, docs, doc_ids=None):
        self.lib = type("Lib", (), {"store": _Store(docs)})()
        self.kb = type("Kb", (), {"id": "kb"})()
        self.doc_ids = doc_ids
        self.settings = type("Settings", (), {"bm25_top_k": 10, "dense_top_k": 10})()


def test_text_in_a_document_of_millions_of_characters_is_located_quickly():
    """The whole document used to be squeezed character by character once the cheap check passed (26 s)."""
    import time

    filler = "".join(f"第{n}段：{p}\n" for n, p in enumerate(ZH_PARAGRAPHS * 200))
    head = (filler * (1_500_000 // len(filler) + 1))[:1_500_000]
    wanted = "若游戏中离，则4分钟\n内不得进行配对"
    text = head + wanted + head  # 3M characters, the text in the middle with a line break inside
    retriever = _Retriever([_Doc("d", "大.txt", text)])
    start = time.perf_counter()
    place = diagnosis._locate(retriever, "若游戏中离则4分钟内不得进行配对")
    assert time.perf_counter() - start < 3.0
    assert place and (place[2], place[3]) == (len(head), len(head) + len(wanted))
    for at in range(diagnosis.BLOCK - 12, diagnosis.BLOCK + 2):  # across the blocks checked one by one
        text = "甲" * at + "，" + wanted + "。" + "乙" * 40_000
        assert diagnosis.find_squeezed(text, "若游戏中离则4分钟内不得进行配对") == (at + 1, at + 1 + len(wanted))


def test_a_searchable_copy_is_preferred_to_a_switched_off_or_filtered_out_one():
    """The first document holding the text was reported: 「已停用」 although a searchable copy existed."""
    docs = [_Doc("off", "停用.txt", FAMILY, enabled=False), _Doc("out", "筛掉.txt", "前言。" + FAMILY),
            _Doc("in", "可检索.txt", "前言前言。" + FAMILY)]
    assert diagnosis._locate(_Retriever(docs, doc_ids=["in"]), "王0同意孩子户口为城镇居民户口")[0].id == "in"
    assert diagnosis._locate(_Retriever(docs[:2], doc_ids=["in"]), "王0同意孩子户口为城镇居民户口")[0].id == "out"
    assert diagnosis._locate(_Retriever(docs), "王0同意孩子户口为城镇居民户口")[0].id == "out"
    assert diagnosis._locate(_Retriever(docs[:1]), "王0同意孩子户口为城镇居民户口")[0].id == "off"


def _result(hits):
    return SearchResult(query="q", hits=hits[:5], timings_ms={"bm25": 1.0}, terms=["q"], ranked=hits)


def _hit(doc, text):
    return Hit(chunk=Chunk(ordinal=0, id=0, doc_id="x", text=text, start=0, end=len(text)), doc=doc, start=0,
               end=len(text), text=text, page_start=1, page_end=1)


def test_closest_passage_search_is_bounded_on_repetitive_text():
    """SequenceMatcher(autojunk=False) on repetitive text: ~30 s for one 2,000-character passage, times every hit."""
    import time

    hits = [_hit(f"表{n}.txt", "甲乙丙戊" * 500) for n in range(50)]
    start = time.perf_counter()
    report = diagnosis.explain(_Retriever([]), _result(hits), "甲乙丙丁" * 500, 5)
    assert time.perf_counter() - start < diagnosis.SIMILAR_BUDGET_S + 3.0
    assert report.state == "absent", report.lines
    # an ordinary close passage still scores as the full alignment does
    from difflib import SequenceMatcher

    expected, text = "用化学式来描写物质的化学反应的式子", "是用化学式来描述物质的化学反应的式子类似于数学公式"
    blocks = SequenceMatcher(None, expected, text, autojunk=False).get_matching_blocks()
    assert diagnosis.similarity(expected, text) == sum(b.size for b in blocks if b.size >= 2) / len(expected)


def test_document_names_in_the_explanations_show_control_and_bidi_characters():
    name = "invoice\u202eexe.txt\x1b[31m"
    docs = [_Doc("d", name, FAMILY, enabled=False)]
    report = diagnosis.explain(_Retriever(docs), _result([_hit(name, "王0同意孩子户口为城镇")]), "王0同意孩子户口为城镇居民户口", 5)
    assert report.state == "filtered" and "invoice<U+202E>exe.txt<U+001B>[31m" in report.lines[0], report.lines
    report = diagnosis.explain(_Retriever([]), _result([_hit(name, "王0同意孩子户口为城镇居民户口")]), "王0同意孩子户口", 5)
    assert report.found and "<U+202E>" in report.lines[0] and "\u202e" not in report.lines[0], report.lines
