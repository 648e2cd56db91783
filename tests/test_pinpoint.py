"""Issue 21: answers that point at the answer (the clause and the value, marked), follow-ups that stay
on the case, ambiguity said out loud, the support check judging the question, the CLI's conversations.

Fixtures are written here (court-judgment-like texts without 。, as the CAIL2019 judgments are), never
copied from ../shared/data.
"""
import json
import os
import subprocess
import sys

import pytest

from llm_server import FakeLLMServer
from services import conversations, errors
from services.answers.answer import (UNSUPPORTED_LLM_NOTICE, Conversation, Turn, answer_question,
                                     heuristic_rewrite)
from services.answers.answer_types import answer_type, asked_verbs
from services.answers.extractive import pinpoint, question_role
from services.config import LLMSettings
from services.documents.chunking import Chunk, ChunkingConfig
from services.index.ingest import ingest_bytes
from services.search.retrieval import Hit, Retriever

# Judgments in the style of court records: long runs of clauses joined by commas, no 。
JUDGMENT_A = ("重庆市某区人民法院民事判决书\n经审理查明:原告王0与被告李x3原系夫妻关系,婚后生育一女李x6,2011年7月21日,"
              "原、被告因感情不和经本院调解离婚,调解书载明李x6随被告生活,离婚后双方又自行协商,约定李x6暂由原告抚养,"
              "被告每月向原告支付李x6的生活费800元,此后李x6一直随原告生活至今,期间被告未按约定支付生活费另查明:"
              "李x6现在荣昌县城西小学上学,为城镇居民户口,原告王0系本地一家压铸有限公司职工,收入比较稳定,现已再婚"
              "本院认为,变更抚养关系应当以有利于子女身心健康为原则,原告要求被告支付拖欠的生活费,理由正当,本院予以支持")
JUDGMENT_B = ("四川省某县人民法院民事判决书\n经审理查明:原告赵0与被告孙x2于2009年登记结婚,婚生一子孙x8,2015年3月双方协议离婚,"
              "离婚协议约定孙x8由原告抚养,原告每个月需要支付抚养费1000元给孙x8的外祖母代为照看,孙x8现在永川区实验小学就读,"
              "被告孙x2在外地务工,收入不固定本院认为,父母对子女有抚养教育的义务,原告的请求本院予以支持")
JUDGMENT_C = ("湖北省某县人民法院民事判决书\n经审理查明:原告周0与被告吴x5于2003年结婚,婚后育有一子吴x9,2016年5月双方离婚,"
              "约定吴x9由被告抚养,原告每个月需要支付抚养费10000元,直至吴x9年满十八周岁止,原告现在深圳经商,收入较高"
              "本院认为,原告的抚养能力足以负担上述费用")
GUN = ("射击断续器\n早期的战斗机无法透过旋转的螺旋桨向前开火。第一次世界大战中飞机上最重要的一项发明就是射击断续器。"
       "这个由荷兰人所发明的装置，让机枪的子弹能够从旋转的螺旋桨之间穿过而不打坏桨叶。后来德国的福克公司把它装上了战斗机。")


def ingest(lib, kb, text, name):
    return ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig("sentence", 300, 0))


def make_hit(text, doc="d.txt", start=0, doc_id=None):
    c = Chunk(0, start, start + len(text), text, 1, 1, id=start + 1, doc_id=doc_id or doc)
    return Hit(c, doc, start, start + len(text), text, 1, 1, chunk_ids=[start + 1])


@pytest.fixture(scope="module")
def server():
    with FakeLLMServer(stall_seconds=5) as s:
        yield s


def llm(server, model="echo"):
    return LLMSettings(base_url=server.url, api_key="sk-test", model=model, timeout=10)


# --- pinpointed extracts --------------------------------------------------------------------------
def test_a_judgment_question_is_answered_with_the_clause_and_the_amount_marked(lib, kb):
    """The issue's first complaint: a ~280-character run of a judgment with 800元 buried in it."""
    ingest(lib, kb, JUDGMENT_A, "李x6抚养纠纷.txt")
    a = answer_question(Retriever(lib, kb), LLMSettings(), "双方约定被告每月支付多少生活费？")
    assert a.mode == "extractive" and a.answer_span.text == "800元"
    assert a.text.startswith("800元\n\n以下内容摘自文档：")  # the answer first, then the quote with [n]
    quote = a.citations[0].quote
    assert "被告每月向原告支付李x6的生活费800元" in quote and len(quote) <= 120
    # the marked answer's offsets are the document's; the quote is exactly what the citation covers
    text = lib.store.document_text(kb.id, lib.store.find_by_filename(kb.id, "李x6抚养纠纷.txt")[0].id)
    span = a.to_json()["answer_span"]
    assert set(span) == {"text", "doc", "start", "end"} and text[span["start"]:span["end"]] == "800元"
    for c in a.citations:
        assert text[c.start:c.end] == c.quote and c.quote in a.text
    # bold: the answer line and the same value inside the quote
    assert [a.text[s:e] for s, e in a.emphasis] == ["800元", "800元"]
    assert all(c.supported for c in a.citations)


def test_the_answer_in_the_next_sentence_is_looked_up():
    """"…一项发明就是射击断续器。" names the subject; the next sentence holds 荷兰."""
    extract = pinpoint("射击断续器是哪个国家发明的？", [make_hit(GUN, "gun.txt")])
    assert extract.span.text == "荷兰" and extract.span.kind == "country"
    quoted = "".join(p.text for p in extract.picks)
    assert "射击断续器" in quoted and "荷兰" in quoted
    assert all(p.support >= 0.4 for p in extract.picks)


@pytest.mark.parametrize("question,kind,value", [
    ("被告什么时候与原告离婚？", "date", "2011年7月21日"), ("李x6现在在哪上学？", "place", "荣昌县城西小学"),
    ("被告每月支付多少生活费？", "amount", "800元")])
def test_the_marked_span_is_the_asked_for_type(question, kind, value):
    extract = pinpoint(question, [make_hit(JUDGMENT_A, "a.txt")])
    assert answer_type(question) == kind and extract.span.text == value
    assert extract.text.startswith(value + "\n\n")


def test_a_quote_without_the_asked_for_type_is_not_supported():
    """The support check judges the question: a sentence naming the subject but not a number does
    not answer "how many"."""
    hit = make_hit("长江\n长江是中国第一大河，流经青藏高原和四川盆地，最后注入东海。", "river.txt")
    extract = pinpoint("长江全长多少公里？", [hit])
    assert extract.picks and all(p.support < 0.4 for p in extract.picks)
    assert extract.span.kind is None  # no value to mark: the best clause is marked, nothing shown first
    assert extract.text.startswith("以下内容摘自文档：")


def test_extract_is_fast_on_long_judgments():
    import time

    hits = [make_hit((JUDGMENT_A + JUDGMENT_B + JUDGMENT_C) * 2, f"d{i}.txt", i * 5000) for i in range(6)]
    pinpoint("双方约定被告每月支付多少生活费？", hits)  # warm the tagger
    started = time.perf_counter()
    for _ in range(10):
        pinpoint("双方约定被告每月支付多少生活费？", hits)
    assert (time.perf_counter() - started) / 10 < 0.1


# --- ambiguity ------------------------------------------------------------------------------------
def test_different_answers_in_different_documents_are_said_out_loud(lib, kb):
    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, JUDGMENT_C, "周0离婚.txt")
    a = answer_question(Retriever(lib, kb), LLMSettings(), "原告每个月需要支付多少抚养费？")
    assert a.text.startswith("有 2 份文档给出不同答案：")
    assert "1000元" in a.text and "10000元" in a.text
    docs = {c.doc for c in a.citations}
    assert docs == {"赵0离婚.txt", "周0离婚.txt"}
    for line in a.text.splitlines()[2:]:  # each answer with its own citation
        assert line.rstrip().endswith("]")
    assert {a.text[s:e] for s, e in a.emphasis} == {"1000元", "10000元"}
    assert a.to_json()["alternatives"]


def test_a_question_naming_its_subject_is_not_flagged(lib, kb):
    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, JUDGMENT_C, "周0离婚.txt")
    a = answer_question(Retriever(lib, kb), LLMSettings(), "原告周0每个月需要支付多少抚养费？")
    assert "份文档给出不同答案" not in a.text and a.answer_span.text == "10000元"


# Other judgments of the kind the ambiguity set asks about (bench/pinpoint.py): the answer differs between them.
DRUNK_A = "经审理查明：被告人孔3某醉酒后驾驶小型轿车上路行驶。经鉴定，孔3某血液中酒精含量为191mg/100ml。"
DRUNK_B = "经审理查明：被告人兰某醉酒驾驶机动车。经福建行健司法鉴定所鉴定，被告人兰某血液酒精含量为90mg／100ml。"
LOAN_A = "经审理查明：被告向原告借款，双方约定借款期限一年，被告借了贷款5万元，至今未还。"
LOAN_B = "经审理查明：被告因经营需要向原告借款，被告借了贷款50000元，约定月利率1.5%。"
LOAN_C = "经审理查明：被告因经营需要向原告借款，被告借了贷款1800元，约定按月归还。"
LOAN_D = "经审理查明：被告因经营需要向原告借款，被告借了贷款800元，约定按月归还。"


def test_another_documents_answer_beyond_the_top_passages_is_found():
    """The top passages all come from one judgment (retrieval windows of it); the other judgment's
    best passage, further down the candidates, is read for the ambiguity check (ambiguity_passages)
    and, when quoted, numbered after the answer's own passages."""
    from services.answers.extractive import ambiguity_passages

    own = [make_hit(JUDGMENT_C, "c.txt", i * 1000, doc_id="c") for i in range(5)]
    other = make_hit(JUDGMENT_B, "b.txt", 0, doc_id="b")
    candidates = own + [make_hit(JUDGMENT_C, "c.txt", 9000, doc_id="c"), other]
    more = ambiguity_passages(candidates, own)
    assert [h.doc for h in more] == ["b.txt"]
    question = "原告每个月需要支付多少抚养费？"
    assert not pinpoint(question, own).ambiguous  # the five passages hold one answer
    extract = pinpoint(question, own, more=more)
    assert extract.ambiguous and {extract.span.text, extract.alternatives[0].text} == {"10000元", "1000元"}
    assert extract.more_sources == [other]
    cited = [p for p in extract.picks if p.doc == "b.txt"]
    assert cited and all(p.n == 6 for p in cited) and "[6]" in extract.text
    assert not pinpoint("原告周0每个月需要支付多少抚养费？", own, more=more).ambiguous  # names its party


def test_other_documents_found_by_the_answer_flow_are_added_to_its_sources(lib, kb):
    """Through answer_question with one source passage (top_k=1): the other judgment's passage among
    the retrieval candidates is read, its different answer cited with its own [n], and the passage
    added to the answer's sources."""
    from services.config import RetrievalSettings

    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, JUDGMENT_C, "周0离婚.txt")
    a = answer_question(Retriever(lib, kb, RetrievalSettings(top_k=1)), LLMSettings(), "原告每个月需要支付多少抚养费？")
    assert a.text.startswith("有 2 份文档给出不同答案：") and "1000元" in a.text and "10000元" in a.text
    assert len(a.sources) == 2 and {c.doc for c in a.citations} == {"赵0离婚.txt", "周0离婚.txt"}
    for c in a.citations:
        assert a.sources[c.n - 1].doc == c.doc and c.quote in a.sources[c.n - 1].text


def test_measurements_are_values_of_a_number_question():
    """191mg/100ml and 90mg／100ml are numbers with their unit: two judgments' different answers."""
    extract = pinpoint("被告人血液酒精含量是多少？", [make_hit(DRUNK_A, "a.txt", doc_id="a"),
                                                      make_hit(DRUNK_B, "b.txt", doc_id="b")])
    assert extract.ambiguous
    assert {extract.span.text, extract.alternatives[0].text} == {"191mg/100ml", "90mg／100ml"}


def test_the_same_value_written_two_ways_is_one_answer():
    """5万元 and 50000元 are the same amount: no disagreement. 800元 and 1800元 are two."""
    hits = [make_hit(LOAN_A, "a.txt", doc_id="a"), make_hit(LOAN_B, "b.txt", doc_id="b")]
    assert not pinpoint("被告借了多少贷款？", hits).ambiguous
    hits = [make_hit(LOAN_C, "c.txt", doc_id="c"), make_hit(LOAN_D, "d.txt", doc_id="d")]
    extract = pinpoint("被告借了多少贷款？", hits)
    assert extract.ambiguous and {extract.span.text, extract.alternatives[0].text} == {"1800元", "800元"}


def test_another_documents_value_in_another_unit_is_no_other_answer():
    """A loan's term: 36个月 and 3年 are two answers (both durations); 15% (a rate in the other judgment's
    clause) is none."""
    term = make_hit("经审理查明：被告向原告借款，双方约定贷款期限为36个月，按月还款。", "a.txt", doc_id="a")
    rate = make_hit("经审理查明：被告向原告借款，双方约定贷款期限内利率上浮15%，按月还款。", "b.txt", doc_id="b")
    years = make_hit("经审理查明：被告向原告借款，双方约定贷款期限为3年，按月还款。", "c.txt", doc_id="c")
    assert not pinpoint("被告所借贷款期限是多久？", [term, rate]).ambiguous
    extract = pinpoint("被告所借贷款期限是多久？", [term, years])
    assert extract.ambiguous and {extract.span.text, extract.alternatives[0].text} == {"36个月", "3年"}


def test_a_chosen_document_without_the_named_party_is_not_a_disagreement():
    """The question names 徐0; when the best-scoring passage is another judgment's (it words the
    question's "每月…支付…生活费" more closely), the two do not disagree: one is not about 徐0, and the
    answer comes from the judgment that is (a strong unit of it, with the asked-for value)."""
    hits = [make_hit(JUDGMENT_A, "a.txt", doc_id="a"),
            make_hit("依法判决:准许原告沈x2与被告徐0离婚,婚生儿子沈x7由原告沈x2抚养,跟随原告生活被告徐0每月给付儿子沈x7生活费300元,"
                     "从2015年7月起至儿子沈x7年满十八周岁之日止", "b.txt", doc_id="b")]
    extract = pinpoint("徐0每月需要支付多少生活费？", hits)
    assert not extract.ambiguous
    assert extract.span.text == "300元" and {p.doc for p in extract.picks} == {"b.txt"}  # the judgment naming 徐0


def test_another_document_about_another_subject_is_not_a_different_answer():
    """蓍 is the question's subject: another plant's range is no other answer to it."""
    hits = [make_hit("蓍\n蓍分布在蒙古、伊朗、欧洲、俄罗斯以及中国大陆的东北、内蒙古等地。", "a.txt", doc_id="a"),
            make_hit("柳叶菜\n柳叶菜分布在亚洲、大洋洲的热带和亚热带地区以及中国大陆的广西、广东等地。", "b.txt", doc_id="b")]
    assert not pinpoint("蓍分布在哪些地区？", hits).ambiguous


def test_role_words_are_not_names_the_documents_must_hold():
    """原被告 (the parties' roles) is no name: judgments that write 原、被告 still disagree."""
    hits = [make_hit("经审理查明：2014年6月10日，原、被告签订了合同，约定被告承建原告的厂房。", "a.txt", doc_id="a"),
            make_hit("经审理查明：2000年11月17日，原、被告签订了合同，约定原告承包被告的荒山。", "b.txt", doc_id="b")]
    extract = pinpoint("原被告何时签订合同？", hits)
    assert extract.ambiguous and {extract.span.text, extract.alternatives[0].text} == {"2014年6月10日", "2000年11月17日"}


# --- conversations --------------------------------------------------------------------------------
@pytest.fixture
def cases(lib, kb):
    ingest(lib, kb, JUDGMENT_A, "李x6抚养纠纷.txt")
    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, GUN, "射击断续器.txt")
    return kb


def test_a_follow_up_stays_on_the_case(lib, cases):
    """The issue's conversation: the follow-up is answered from the same judgment, the rewrite adds
    the case's names (never 双方约定), the context is reported."""
    retriever, conv = Retriever(lib, cases), Conversation()
    first = answer_question(retriever, LLMSettings(), "原告王0与被告李x3约定被告每月支付多少生活费？", conv)
    assert first.answer_span.text == "800元"
    conv.add(first)
    a = answer_question(retriever, LLMSettings(), "那孩子现在在哪上学？", conv)
    assert a.answer_span.text == "荣昌县城西小学" and {c.doc for c in a.citations} == {"李x6抚养纠纷.txt"}
    assert all(c.supported for c in a.citations)
    data = a.to_json()
    assert [d["doc"] for d in data["context_documents"]] == ["李x6抚养纠纷.txt"]
    assert data["rewritten_query"] and "双方" not in data["rewritten_query"] and "约定" not in data["rewritten_query"]
    assert "王0" in data["rewritten_query"] or "李x3" in data["rewritten_query"]


def test_a_follow_up_after_two_judgments_carries_only_the_followed_case(lib, cases):
    """The walkthrough's conversation: the first answer lists two judgments (different amounts), the
    second is answered from one of them, and "他后来再婚了吗？" was rewritten with both cases' parties
    and answered with loose mentions of the child, its one answering clause "未核实". Now only the
    names the conversation's document holds are carried, and the extract is chosen by the words asked
    (再婚) inside that document."""
    retriever = Retriever(lib, cases)
    doc_a = lib.store.find_by_filename(cases.id, "李x6抚养纠纷.txt")[0].id
    doc_b = lib.store.find_by_filename(cases.id, "赵0离婚.txt")[0].id
    conv = Conversation([Turn("原告每个月需要支付多少生活费？", "李x6 孙x8 那孩子现在在哪上学？",
                  "荣昌县城西小学\n\n以下内容摘自文档：\n\n李x6现在荣昌县城西小学上学[1]", [doc_a])])
    a = answer_question(retriever, LLMSettings(), "他后来再婚了吗？", conv)
    assert a.rewritten_query == "李x6 他后来再婚了吗？"  # 孙x8 is the other judgment's child
    assert "现已再婚" in a.text and a.citations
    assert all(c.supported and c.doc == "李x6抚养纠纷.txt" for c in a.citations)
    assert [c.doc_id for c in a.citations if c.doc_id == doc_b] == []


def test_a_follow_up_about_two_listed_judgments_still_says_they_differ(lib, kb):
    """After a first answer that listed two judgments, the conversation is about both: a follow-up
    whose answer differs between them says so again instead of picking one silently (walkthrough)."""
    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, JUDGMENT_C, "周0离婚.txt")
    docs = [lib.store.find_by_filename(kb.id, n)[0].id for n in ("赵0离婚.txt", "周0离婚.txt")]
    conv = Conversation([Turn("孩子由谁抚养？", "孩子由谁抚养？", "……", docs)])
    a = answer_question(Retriever(lib, kb), LLMSettings(), "那原告每个月需要支付多少抚养费呢？", conv)
    assert a.text.startswith("有 2 份文档给出不同答案：") and "1000元" in a.text and "10000元" in a.text
    assert {c.doc for c in a.citations} == {"赵0离婚.txt", "周0离婚.txt"}


def test_a_self_contained_question_is_not_rewritten_and_leaves_the_case(lib, cases):
    retriever, conv = Retriever(lib, cases), Conversation()
    conv.add(answer_question(retriever, LLMSettings(), "原告王0与被告李x3约定被告每月支付多少生活费？", conv))
    a = answer_question(retriever, LLMSettings(), "射击断续器是哪个国家发明的？那个装置有什么作用？", conv)
    assert a.rewritten_query is None and a.query == "射击断续器是哪个国家发明的？那个装置有什么作用？"
    assert a.context_documents == [] and a.citations and a.citations[0].doc == "射击断续器.txt"


MATSU = ("馬祖列島\n馬祖列島位於臺灣海峽西北方，由南竿、北竿、莒光、東引等島嶼組成。島上多花崗岩地形，海岸曲折。"
         "1999年以馬祖列島為範圍的馬祖國家風景區成立，隸屬於交通部觀光局管理。風景區內有芹壁聚落等閩東式石屋。"
         "每年春夏之交，海面常見藍眼淚，吸引許多遊客前來觀賞。島上居民多以漁業與觀光業為生。")
SKELETAL = ("有机物的表示方法\n结构简式通常包括烃基及官能团两部分。官能团对有机物的性质起决定作用。"
            "键线式也称骨架式、拓扑式、折线简式，是在纸面表示分子结构的一种方法，在表示有机化合物的立体结构时尤其常用。"
            "用键线式表示的结构简明易懂，并且容易书写。")


@pytest.mark.parametrize("question", ["键线式叫什么？", "什么是键线式？", "键线式也叫什么？"])
def test_a_new_topic_after_one_turn_is_searched_over_the_whole_kb(lib, kb, question):
    """The s26 walkthrough: after a question about 马祖, "键线式叫什么？" (a word the search tokenizer cuts
    into 键 / 线 / 式) was kept to the 马祖 article and refused, while a new conversation answered it from
    the chemistry document. A self-contained question its documents do not cover leaves the conversation."""
    ingest_bytes(lib, kb, MATSU.encode(), "马祖.txt", ChunkingConfig("sentence", 60, 0))
    ingest_bytes(lib, kb, SKELETAL.encode(), "有机物.txt", ChunkingConfig("sentence", 60, 0))
    retriever, conv = Retriever(lib, kb), Conversation()
    first = answer_question(retriever, LLMSettings(), "負責管理馬祖國家風景區的單位為？", conv)
    assert {c.doc for c in first.citations} == {"马祖.txt"}
    conv.add(first)
    a = answer_question(retriever, LLMSettings(), question, conv)
    assert a.mode == "extractive" and a.context_documents == []
    assert "骨架式" in a.text and {c.doc for c in a.citations if c.supported} == {"有机物.txt"}


def test_a_question_the_conversation_cannot_answer_is_answered_from_the_whole_kb():
    """A self-contained question kept to the conversation's documents whose evidence there refuses is
    answered from the whole KB's search when that one does not refuse (`widen_when_refused`)."""
    from services.answers.answer import ContextPlan, widen_when_refused
    from services.search.retrieval import SearchResult

    question = "骨架式是什么的别称？"
    scoped = SearchResult(question, [make_hit("馬祖國家風景區隸屬於交通部觀光局管理。", "马祖.txt")], {}, [])
    wide = SearchResult(question, [make_hit(SKELETAL, "有机物.txt")], {}, [])
    plan = ContextPlan(question, documents=["马祖.txt"], reason="same-subject", wide=wide)
    assert widen_when_refused(plan, scoped, 3000) is wide and plan.documents == [] and plan.reason == "other-subject"
    kept = ContextPlan(question, documents=["有机物.txt"], reason="same-subject", wide=scoped)
    answered = SearchResult(question, [make_hit(SKELETAL, "有机物.txt")], {}, [])
    assert widen_when_refused(kept, answered, 3000) is answered and kept.documents == ["有机物.txt"]


def test_a_quote_from_another_document_does_not_support_a_follow_up(lib, cases):
    """Item 4: within a conversation about one judgment, an extract from another one is not supported."""
    retriever = Retriever(lib, cases)
    doc_a = lib.store.find_by_filename(cases.id, "李x6抚养纠纷.txt")[0].id
    conv = Conversation([Turn("原告王0每月收到多少生活费？", "原告王0每月收到多少生活费？", "800元", [doc_a])])
    a = answer_question(retriever, LLMSettings(), "那孙x8在哪上学？", conv)  # only the other judgment says
    other = [c for c in a.citations if c.doc != "李x6抚养纠纷.txt"]
    assert all(not c.supported for c in other)


def test_heuristic_rewrite_never_adds_generic_words():
    conv = Conversation([Turn("双方约定被告每月支付多少生活费？", "双方约定被告每月支付多少生活费？",
                              "800元\n\n以下内容摘自文档：\n\n被告每月向原告支付李x6的生活费800元[1]")])
    rewritten = heuristic_rewrite("那孩子现在在哪上学？", conv)
    assert "双方" not in rewritten and "约定" not in rewritten
    assert rewritten == "李x6 那孩子现在在哪上学？"  # the case's name, from the quote the answer gave


def test_history_rebuilds_the_documents_of_saved_turns(lib, cases):
    """Turns saved before citations carried doc ids find their documents through the cited chunks."""
    cid = conversations.create(lib.store, cases.id)
    a = answer_question(Retriever(lib, cases), LLMSettings(), "原告王0与被告李x3约定被告每月支付多少生活费？")
    doc_a = lib.store.find_by_filename(cases.id, "李x6抚养纠纷.txt")[0].id
    old = a.to_json()
    for c in old["citations"]:
        c.pop("doc_id")
    old.pop("answer_span")
    conversations.add_turn(lib.store, cid, "原告王0与被告李x3约定被告每月支付多少生活费？", old)
    assert conversations.history(lib.store, cid).turns[0].documents == [doc_a]


def test_ask_in_a_saved_conversation_continues_it(lib, cases):
    from services.workspace import Workspace

    me = Workspace(lib, background=False).session()
    kb = me.kb(cases.id)
    first = kb.ask("原告王0与被告李x3约定被告每月支付多少生活费？")
    first.finish()
    follow = kb.ask("那孩子现在在哪上学？", first.conversation)
    assert follow.finish().answer_span.text == "荣昌县城西小学" and follow.conversation == first.conversation
    kept = kb.turns(first.conversation)
    assert [t["question"] for t in kept] == ["原告王0与被告李x3约定被告每月支付多少生活费？", "那孩子现在在哪上学？"]
    assert kept[1]["answer"]["context_documents"][0]["doc"] == "李x6抚养纠纷.txt"
    other_kb = me.create_kb("另一个库")
    with pytest.raises(errors.ConversationNotFound):  # a conversation of another KB is not continued here
        other_kb.ask("那孩子现在在哪上学？", first.conversation)


@pytest.mark.slow
def test_cli_ask_conversation_json(tmp_path, data_dir):
    """`ask --conversation ID` starts the conversation under that id, then continues it; --json adds
    rewritten_query, context_documents and answer_span."""
    (tmp_path / "李x6抚养纠纷.txt").write_text(JUDGMENT_A, encoding="utf-8")
    (tmp_path / "赵0离婚.txt").write_text(JUDGMENT_B, encoding="utf-8")
    env = {**os.environ, "WENDAO_DATA_DIR": str(data_dir)}
    env.pop("OPENAI_BASE_URL", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "services", *args], cwd=root, env=env, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("ingest", "--kb", "案件", str(tmp_path / "李x6抚养纠纷.txt"), str(tmp_path / "赵0离婚.txt"))
    first = json.loads(cli("ask", "--kb", "案件", "--no-llm", "--json", "--conversation", "7",
                           "原告王0与被告李x3约定被告每月支付多少生活费？"))
    assert first["conversation_id"] == "7" and first["answer_span"]["text"] == "800元"
    assert first["rewritten_query"] is None and first["context_documents"] == []
    second = json.loads(cli("ask", "--kb", "案件", "--no-llm", "--json", "--conversation", "7", "那孩子现在在哪上学？"))
    assert second["answer_span"] == {"text": "荣昌县城西小学", "doc": "李x6抚养纠纷.txt",
                                     "start": second["answer_span"]["start"], "end": second["answer_span"]["end"]}
    assert second["context_documents"][0]["doc"] == "李x6抚养纠纷.txt" and second["rewritten_query"]
    plain = cli("ask", "--kb", "案件", "--no-llm", "--conversation", "7", "他现在的收入怎么样？")
    assert "[1]" in plain


# --- with an LLM ----------------------------------------------------------------------------------
def test_llm_follow_up_uses_the_same_context(lib, cases, server):
    retriever, conv = Retriever(lib, cases), Conversation()
    conv.add(answer_question(retriever, llm(server), "原告王0与被告李x3约定被告每月支付多少生活费？", conv))
    before = len(server.requests)
    a = answer_question(retriever, llm(server), "射击断续器是哪个国家发明的？那个装置有什么作用？", conv)
    asked = server.requests[before:]
    assert not any("改写" in r["body"]["messages"][0]["content"] for r in asked)  # self-contained: no rewrite call
    assert a.rewritten_query is None and a.context_documents == []
    assert "射击断续器" in asked[-1]["body"]["messages"][-1]["content"]
    follow = answer_question(retriever, llm(server), "那孩子现在在哪上学？", conv)
    prompt = server.requests[-1]["body"]["messages"][-1]["content"]
    assert follow.context_documents and 'doc="李x6抚养纠纷.txt"' in prompt.split("</source>")[0]


def test_llm_answer_without_supported_citation_shows_the_extract(lib, cases, server):
    a = answer_question(Retriever(lib, cases), llm(server, "off-topic"), "原告王0与被告李x3约定被告每月支付多少生活费？")
    assert a.mode == "extractive" and UNSUPPORTED_LLM_NOTICE in a.notice
    assert "四十二" not in a.text and a.answer_span.text == "800元"


def test_llm_answer_is_told_when_the_documents_disagree(lib, kb, server):
    ingest(lib, kb, JUDGMENT_B, "赵0离婚.txt")
    ingest(lib, kb, JUDGMENT_C, "周0离婚.txt")
    a = answer_question(Retriever(lib, kb), llm(server), "原告每个月需要支付多少抚养费？")
    assert a.mode == "llm" and "有 2 份文档给出不同答案" in a.notice
    assert "1000元（赵0离婚.txt）" in a.notice and "10000元（周0离婚.txt）" in a.notice
    # a slow model reads one passage; whether the documents disagree is still judged on the usual sources
    a = answer_question(Retriever(lib, kb), llm(server), "原告每个月需要支付多少抚养费？", context_tokens=50)
    assert len(a.sources) == 1 and "有 2 份文档给出不同答案" in a.notice


def test_llm_rewrite_may_add_only_the_subject(lib, cases, server):
    from services.answers.answer import adds_only_the_subject

    conv = Conversation([Turn("北京的人口是多少？", "北京的人口是多少？", "约2189万[1]")])
    assert adds_only_the_subject("北京的面积呢？", "那它的面积呢？", conv)
    conv = Conversation([Turn("儒略日的使用者中以什么族群为多数？", "儒略日的使用者中以什么族群为多数？", "天文学家[1]")])
    assert not adds_only_the_subject("儒略日的使用者中以天文学家为多数，它以什么时间点当作起点？", "它以什么时间点当作起点？", conv)
    # end to end: the fake model puts the previous question's words in place of 它; they are not a subject
    retriever, conv = Retriever(lib, cases), Conversation()
    conv.add(answer_question(retriever, llm(server), "双方约定被告每月支付的生活费是多少？", conv))
    a = answer_question(retriever, llm(server), "那它是从什么时候开始支付的？", conv)
    assert "双方" not in a.query and "约定" not in a.query


def test_no_usable_unit_in_the_first_passages_gives_no_extract():
    hits = [make_hit("短。", f"s{i}.txt", i * 10) for i in range(4)] + [make_hit(GUN, "gun.txt", 100)]
    extract = pinpoint("射击断续器是哪个国家发明的？", hits)
    assert extract.picks == [] and extract.text == ""


# --- trust: the named party, yes/no questions, the asked-about party, no bold unsupported answer -----
# Two judgments in the walkthrough's shape: the one the conversation is about says 现已再婚 once, among clauses
# naming its party; the other words the question more closely (原告未再婚) but names another party.
REMARRIED = ("经审理查明:原告曹0与被告张x1原系夫妻关系,2001年5月27日生育一女张x6,双方在本院调解离婚,约定张x6随原告生活,"
             "被告每月支付生活费800元另查明:张x6现在城西小学上学,为城镇居民户口,原告曹0系本地一家压铸公司职工,收入比较稳定,"
             "现已再婚,其与丈夫共同购买了房屋一套本院依法对张x6作了询问笔录,张x6称愿意随母亲曹0生活,上述事实有原告曹0陈述等证据证实")
NOT_REMARRIED = ("经审理查明:原告于0与被告隋1登记结婚,共生育二女,离婚协议约定大女儿随男方生活,小女儿随女方生活,"
                 "原、被告离婚后,被告再婚,但未再生育子女;原告未再婚离婚时大女儿20岁,后读了三年技校原告主张现在无工作,"
                 "要求变更抚养关系被告同时表示每月可给原告300元抚养费")


def test_a_question_naming_a_party_is_answered_from_the_document_holding_it():
    """原告曹0后来再婚了吗？: the other judgment's 原告未再婚 shares more words, but only the first names 曹0;
    its clause with the asked verb (现已再婚) is the answer, and the other judgment is not quoted."""
    hits = [make_hit(NOT_REMARRIED, "b.txt", doc_id="b"), make_hit(REMARRIED, "a.txt", doc_id="a")]
    extract = pinpoint("原告曹0后来再婚了吗？", hits, reader=False)
    assert {p.doc for p in extract.picks} == {"a.txt"}
    assert extract.span is not None and "现已再婚" in extract.span.text and extract.span.doc == "a.txt"


def test_a_yes_no_question_quotes_the_clause_with_the_asked_verb():
    """Within the named judgment every clause names 曹0; the one saying whether (现已再婚) is quoted,
    with the clause naming the party before it, and supported."""
    extract = pinpoint("原告曹0后来再婚了吗？", [make_hit(REMARRIED, "a.txt", doc_id="a")], reader=False)
    assert "现已再婚" in extract.span.text
    assert all("再婚" in p.text for p in extract.picks)  # no loose mention of 曹0 without the asked verb
    assert all(p.support >= 0.4 for p in extract.picks)
    assert asked_verbs("原告曹0后来再婚了吗？") == ["再婚"] and asked_verbs("张x1有没有支付抚养费？") == ["支付"]
    assert asked_verbs("被告每月支付多少抚养费？") == []


def test_the_party_the_question_asks_about_is_the_one_paying():
    """被告每月支付多少抚养费？: a clause where the 原告 pays is no answer, first or alternative."""
    hits = [make_hit("经审理查明,原告王x0与被告张1原系夫妻关系,2011年3月16日生育一女王某雯2016年1月20日,原告王x0与被告张1协议离婚,"
                     "约定婚生女王某雯由被告张1抚养,原告王x0每月支付1000.00元抚养费直到婚生女王某雯满十八周岁另查明,婚生女王某雯随被告张1"
                     "现居住在本市,被告张1现在一家商贸公司工作", "a.txt", doc_id="a"),
            make_hit("经审理查明:原告于0与被告隋1登记结婚,共生育二女,离婚协议约定大女儿随男方生活,小女儿随女方生活,原告主张现在无工作,"
                     "没有能力抚养小女儿,要求变更抚养关系被告则表示其已按协议尽到抚养大女儿的义务,不同意由其抚养小女儿被告同时表示每月可给原告"
                     "300元抚养费", "b.txt", doc_id="b")]
    extract = pinpoint("被告每月支付多少抚养费？", hits, reader=False)
    assert extract.span.text == "300元" and extract.span.doc == "b.txt"
    assert all(s.text != "1000.00元" for s in extract.alternatives)
    assert question_role("被告每月支付多少抚养费？") == "被告" and question_role("原被告何时签订合同？") is None


def test_another_partys_amount_is_quoted_but_never_marked_as_the_answer():
    """A recheck walkthrough: 被告每月支付多少抚养费？ over a judgment where only the 原告 paid (原告支付了1200元抚养费)
    showed **1200元** as the answer. The clause may be quoted; its amount is not the asked party's, so nothing is bold."""
    hits = [make_hit("经审理查明,原告李0与被告王1于2010年离婚,婚生子王某随原告生活,离婚后原告支付了1200元抚养费,"
                     "现原告要求被告负担抚养费", "c.txt", doc_id="c")]
    extract = pinpoint("被告每月支付多少抚养费？", hits, reader=False)
    assert extract.span is None and extract.emphasis == []
    assert "1200元" not in [extract.text[a:b] for a, b in extract.emphasis]


def test_a_conversation_question_is_answered_from_its_judgment(lib, kb):
    """The walkthrough's conversation: after a question about 曹0's judgment, 原告后来再婚了吗？ (no name, not
    a pronoun follow-up) is answered from that judgment, not from the other one's 原告未再婚."""
    ingest(lib, kb, REMARRIED, "曹0.txt")
    ingest(lib, kb, NOT_REMARRIED, "于0.txt")
    retriever, conv = Retriever(lib, kb), Conversation()
    first = answer_question(retriever, LLMSettings(), "张x6现在在哪里上学？", conv)
    assert {c.doc for c in first.citations} == {"曹0.txt"}
    conv.add(first)
    for question in ("原告后来再婚了吗？", "原告曹0后来再婚了吗？"):
        a = answer_question(retriever, LLMSettings(), question, conv)
        assert {c.doc for c in a.citations} == {"曹0.txt"} and all(c.supported for c in a.citations)
        assert "现已再婚" in a.answer_span.text


def test_no_marked_answer_from_an_unsupported_quote(lib, cases):
    """A quote from outside the conversation's judgment is 未核实: the extract shows it without a bold
    answer line or marked span."""
    retriever = Retriever(lib, cases)
    doc_a = lib.store.find_by_filename(cases.id, "李x6抚养纠纷.txt")[0].id
    conv = Conversation([Turn("原告王0每月收到多少生活费？", "原告王0每月收到多少生活费？", "800元", [doc_a])])
    a = answer_question(retriever, LLMSettings(), "那孙x8在哪上学？", conv)  # only the other judgment says
    assert a.citations and not any(c.supported for c in a.citations)
    assert a.answer_span is None and a.emphasis == [] and a.text.startswith("以下内容摘自文档")
    assert "都未能核实" in a.notice  # and the answer says so, not only the chips of its quotes
