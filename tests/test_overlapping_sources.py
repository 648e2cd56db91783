"""检索详情 lists an answer's sources: sentence chunks overlap by design (ChunkingConfig.overlap), and two
overlapping chunks of one document were listed as two passages repeating the same text; the retriever joins
only window chunks. Overlapping sources of one document are now shown once, joined ([1][2]), while the
answer's own sources, scores and ranks (its [n], the API, the lab, the evaluator) stay as they were."""
from services.answers.refusal import joined_sources

RIVERS = ("长江是中国第一大河，全长六千三百公里，流经十一个省级行政区，最后在上海注入东海。"
          "黄河是中国第二长河，全长约五千四百六十四公里，被称为中华民族的母亲河。"
          "珠江是中国南方最大的河流，由西江、北江和东江汇合而成，流经广东等地。"
          "淮河位于长江与黄河之间，是中国南北方的一条重要地理分界线，历史上水患频繁。"
          "松花江是黑龙江在中国境内的最大支流，冬季有很长的封冻期，两岸物产丰富。"
          "雅鲁藏布江发源于喜马拉雅山北麓，是世界上海拔最高的大河之一，下游流入印度。")


def source(text, start, n_ranks, doc="rivers.txt"):
    return {"doc": doc, "doc_id": doc, "start": start, "end": start + len(text), "text": text,
            "page": 1, "pages": [1, 1], "ranks": n_ranks, "scores": {"fused": 0.5}}


def test_overlapping_sources_of_one_document_are_listed_once_joined():
    a, b = RIVERS[:110], RIVERS[70:180]  # two sentence chunks sharing 40 characters
    other = RIVERS[:50]
    answer = {"sources": [source(b, 70, {"bm25": 1, "dense": 3}), source(other, 0, {"bm25": 2}, doc="别的.txt"),
                          source(a, 0, {"bm25": 4, "dense": 1})],
              "citations": [{"n": 1, "start": 120, "end": 150, "quote": RIVERS[120:150]},
                            {"n": 3, "start": 10, "end": 20, "quote": RIVERS[10:20]}]}
    shown = joined_sources(answer)
    assert [s["numbers"] for s in shown] == [[1, 3], [2]]
    joined = shown[0]
    assert joined["text"] == RIVERS[:180] and (joined["start"], joined["end"]) == (0, 180)
    assert joined["ranks"] == {"bm25": 1, "dense": 1}  # the best of either, as for merged windows
    assert sorted(joined["quotes"]) == [(10, 20), (120, 150)]  # each quote where it is in the joined text
    assert answer["sources"][0]["text"] == b and len(answer["sources"]) == 3  # the answer itself is unchanged
    apart = {"sources": [source(RIVERS[:50], 0, {}), source(RIVERS[60:100], 60, {})], "citations": []}
    assert [s["numbers"] for s in joined_sources(apart)] == [[1], [2]]  # a gap: two passages


def test_the_details_of_an_answer_show_overlapping_chunks_once(data_dir):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.index.library import open_library

    lib = open_library(data_dir)
    kb = lib.kb("河流", create=True)
    ingest_bytes(lib, kb, RIVERS.encode(), "rivers.txt", ChunkingConfig("sentence", 120, 60))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("components/pages/chat.py").run()
    at.chat_input[0].set_value("淮河是哪两条河之间的分界线？").run()
    assert not at.exception, [e.value for e in at.exception]
    details = next(e for e in at.expander if "检索详情" in e.label)
    shown = [m.value for m in details.markdown]
    titles = [v for v in shown if "rivers" in v]
    boxes = [v for v in shown if "wendao-passage" in v]
    assert len(titles) == 1 and titles[0].startswith("**\\[1\\]\\[2\\]"), titles  # was [1] … and [2] … apart
    assert len(boxes) == 1 and boxes[0].count("淮河位于长江与黄河之间") == 1
