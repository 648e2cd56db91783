"""A follow-up's pronoun (它/他/那…) stands for the previous question's subject — its noun phrase, in the
user's own words (馬祖國家風景區), not a bare name of it (馬祖, which also names 馬祖列島燕鷗保護區) nor the
previous answer's names (馬祖列島, 交通部觀光局). Walkthrough: 「負責管理馬祖國家風景區的單位為？」 then
「它是哪一年成立的？」 was rewritten 「馬祖列島 交通部 它是哪一年成立的？」 and marked 2000年 (the bird
reserve's year) instead of 1999年.

Fixtures are written here, never copied from ../shared/data.
"""
from services.answers.answer import Conversation, Turn, answer_question, heuristic_rewrite, subject_terms
from services.config import LLMSettings
from services.documents.chunking import ChunkingConfig
from services.index.ingest import ingest_bytes
from services.search.retrieval import Retriever

MATSU = ("馬祖\n馬祖列島位於臺灣海峽西北方，由南竿島、北竿島、東引島等島嶼組成，陸地面積約三十平方公里。"
         "1999年以馬祖列島為範圍的馬祖國家風景區成立，隸屬於交通部觀光局管理。"
         "除了島嶼風光和閩東建築之外，因位於候鳥遷徙的路線上，2000年成立馬祖列島燕鷗保護區，保護多種燕鷗在此繁殖。"
         "島上的居民多數說福州話，傳統節慶以擺暝最為有名。")
RICE = ("水稻\n水稻是世界上最重要的糧食作物之一，原產於亞洲的熱帶和亞熱帶地區。"
        "中國長江流域栽培水稻的歷史已有七千年以上，稻米是南方居民的主食。")
FIRST = "負責管理馬祖國家風景區的單位為？"
FIRST_ANSWER = ("以下内容摘自文档：\n\n1999年以馬祖列島為範圍的馬祖國家風景區成立，隸屬於交通部觀光局管理。[1]")


def test_the_subject_carried_is_the_previous_questions_noun_phrase():
    conv = Conversation([Turn(FIRST, FIRST, FIRST_ANSWER, [])])
    assert heuristic_rewrite("它是哪一年成立的？", conv) == "馬祖國家風景區 它是哪一年成立的？"
    # a chained follow-up keeps it
    conv.turns.append(Turn("它是哪一年成立的？", "馬祖國家風景區 它是哪一年成立的？", "1999年", []))
    assert heuristic_rewrite("那它的面積呢？", conv) == "馬祖國家風景區 那它的面積呢？"


def test_a_name_common_in_the_kb_does_not_hand_the_subject_to_the_answers_words():
    """In a KB where 馬祖 is in most chunks, the bare name was dropped as generic and the previous
    answer's names (馬祖列島, 交通部觀光局) were carried instead; the question's phrase is specific."""
    shares = {"": 100, "马祖": 0.6, "国家": 0.05, "风景": 0.02, "景区": 0.02, "风景区": 0.02, "列岛": 0.1}
    conv = Conversation([Turn(FIRST, FIRST, FIRST_ANSWER, [])])
    rewritten = heuristic_rewrite("它是哪一年成立的？", conv, shares)
    assert rewritten == "馬祖國家風景區 它是哪一年成立的？"
    assert "交通部" not in rewritten and "列島" not in rewritten


def test_subject_phrases_stop_at_the_particle():
    assert subject_terms("馬祖國家風景區是哪一年成立的？", phrases=True) == ["馬祖國家風景區"]
    assert subject_terms("保山市隸屬於哪一個省？", phrases=True) == ["保山市"]  # 隶属于: a verb tagged a noun
    assert subject_terms("原告王0与被告李x3约定被告每月支付多少生活费？", phrases=True) == ["王0", "李x3"]


def test_the_follow_up_is_answered_about_the_subject_asked(lib, kb):
    for text, name in ((MATSU, "馬祖.txt"), (RICE, "水稻.txt")):
        ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig("sentence", 300, 0))
    retriever, conv = Retriever(lib, kb), Conversation()
    first = answer_question(retriever, LLMSettings(), FIRST, conv)
    assert "交通部觀光局" in first.text
    conv.add(first)
    second = answer_question(retriever, LLMSettings(), "它是哪一年成立的？", conv)
    assert second.rewritten_query == "馬祖國家風景區 它是哪一年成立的？"
    assert second.answer_span is not None and second.answer_span.text == "1999年"
    assert {c.doc for c in second.citations} == {"馬祖.txt"}
