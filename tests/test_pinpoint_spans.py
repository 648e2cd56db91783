"""The marked answer span of pinpointed extracts (services.answers.extractive): the asked-for type and the
value's whole extent (issue 21, "Pinpointed extracts")."""
from __future__ import annotations

import pytest

from services.answers.answer_types import answer_type, asks_carer, carer_spans, typed_values
from services.answers.extractive import pinpoint
from services.documents.chunking import Chunk
from services.search.retrieval import Hit


def make_hit(text, doc="d.txt", start=0):
    c = Chunk(0, start, start + len(text), text, 1, 1, id=start + 1, doc_id=doc)
    return Hit(c, doc, start, start + len(text), text, 1, 1, chunk_ids=[start + 1])


@pytest.mark.parametrize("question,kind", [
    ("清代时于云南所设置的迤东道在哪一个革命之后被废除？", None),  # 在哪一个革命: no place
    ("在伯力设置黑水府是在哪个皇帝在位的期间执行？", None),
    ("全美国第二大的学生活动中心为何？", None),  # …为何? asks what it is, not why
    ("潘仕成逝世的时间是？", "date"),
    ("他为何离开家乡？", "reason"), ("原告在哪里工作？", "place"), ("李x6现在在哪上学？", "place"),
    ("黄鳍紫鱼分布在哪些地区？", "place")])
def test_the_asked_for_type(question, kind):
    assert answer_type(question) == kind


@pytest.mark.parametrize("kind,text,values", [
    ("number", "耶稣在十字架上忍受了6个小时的煎熬", ["6个小时"]),  # not 6个
    ("number", "大多数的校园设施建成于50和60年代间", ["60年代"]),
    ("number", "穆斯林大约占人类的五分之一，分布在许多国家", ["五分之一"]),
    ("date", "委托被告人垫付注册资金100万元代为办理公司工商登记", []),  # 万元代为 holds no 元代
    ("date", "在元代，蒙古人把他们纳入帝国的政治系统", ["元代"]),
    # CAIL2019 masks 万元 as a name (万某): after digits it is an amount
    ("amount", "送给时任客户经理付某某人民币20万某并让其提供关照", ["人民币20万某"]),
    ("amount", "骗取苗某某430.35万某。", ["430.35万某"]), ("amount", "被告人万某某到场", [])])
def test_values_have_their_whole_unit(kind, text, values):
    assert [text[a:b] for a, b in typed_values(kind, text)] == values


def test_the_value_whose_clause_asks_the_question_is_marked():
    """An enumeration of changes in one long sentence: the clause holding the question's own words
    (短程长话) is the answer, not the next one that only inherits them from the sentence's start."""
    text = ("彰化市内的公用电话在日治时期为磁石式，光复后由电信局接管，1963年改为拨号式市内短程长话公用电话，"
            "1975年改为拨号式市内长途直拨公用电话，1977年改为按钮式市内长途直拨公用电话，1990年改为卡式公用电话并开放直拨国际电话。")
    extract = pinpoint("彰化市内的公用电话在哪一年时被改为拨号式市内短程长话公用电话？", [make_hit(text)], reader=False)
    assert extract.span.text == "1963年"


def test_a_fraction_answers_a_share_question():
    text = "穆斯林的人数介于12到16亿人，大约占人类的五分之一，分布在许多不同的国家和民族群体。"
    extract = pinpoint("穆斯林的人数占人类总人口的多少比例？", [make_hit(text)], reader=False)
    assert extract.span.text == "五分之一"


def test_several_names_are_marked_as_one_list():
    """管理处成员有谁？ asks for all of them: the list, not its first name."""
    text = ("时任村党支部书记的被告人方某担任该管理处的主任，主持公墓区的全部工作，负责公墓区的现场建设施工；"
            "管理处成员有方某、黄某2、张某、方某1。2013年2月6日，公墓管理处主任改由村主任蔡某担任。")
    extract = pinpoint("管理处成员有谁？", [make_hit(text)], reader=False)
    assert extract.span.text == "方某、黄某2、张某、方某1"
    text = "后该酒吧看场人员张某、罗某、周某等人分别拿刀和鱼叉到酒吧门口拦住被告人高某。"
    extract = pinpoint("鱼叉是谁带来的？", [make_hit(text)], reader=False)
    assert extract.span.text == "张某、罗某、周某等人"  # closed by 等人: they all brought it
    text = "被告人高某在酒吧门口遇到张某，与其发生争执。"
    assert pinpoint("被告人高某在酒吧门口遇到了谁？", [make_hit(text)], reader=False).span.text == "张某"


def test_a_list_question_marks_the_whole_enumeration():
    """哪些学校: every item of the enumeration, those the place patterns miss (古亭国小) included."""
    text = "蔡敏曾就学于台北市空军子弟学校、台北市古亭国小、台北市万华女中、台北县新店崇光女中，后赴美深造。"
    extract = pinpoint("蔡敏就读于哪些学校？", [make_hit(text)], reader=False)
    assert extract.span.text == "台北市空军子弟学校、台北市古亭国小、台北市万华女中、台北县新店崇光女中"
    text = "在中国境内，分布于广东、广西、贵州、四川南部、中南半岛及云南，生长于山谷。"
    assert pinpoint("假苹婆主要分布在哪些地方？", [make_hit(text)], reader=False).span.text == "广东、广西、贵州、四川南部、中南半岛及云南"


def test_how_long_is_a_duration_not_a_date():
    assert answer_type("条约的有效期是多长时间？") == "number"


@pytest.mark.parametrize("question,kind", [
    ("奥斯陆的人口大约减少了三分之一是由于什么病变？", None),  # 人口 is no number asked for: 什么病变 is
    ("全台湾人口第二密集的县辖市为何？", None),
    ("该市人口有多少？", "number"), ("被告的借款金额是？", "amount"), ("以什么价格出售？", "amount")])
def test_a_number_noun_asks_for_a_number_only_without_another_question_word(question, kind):
    assert answer_type(question) == kind


@pytest.mark.parametrize("kind,text,values", [
    ("country", "按照中国大陆1978年出版《辞海·军事分册》之定义", ["中国大陆"]),
    ("number", "民国31年3月，为适应战时需要", ["民国31年", "3月"])])
def test_a_value_takes_its_qualifier(kind, text, values):
    assert [text[a:b] for a, b in typed_values(kind, text)] == values


def test_a_name_the_question_gives_is_not_its_answer_even_with_a_character_attached():
    """征讨黄祖以及谁: 黄祖时 (黄祖 + 时) is the question's own name, 刘表 the answer."""
    text = "191年，孙坚征荆州刘表、黄祖时战死，年仅37岁。"
    extract = pinpoint("孙坚是在191年时征讨黄祖以及谁时所战死？", [make_hit(text)], reader=False)
    assert extract.span.text == "刘表"


def test_a_place_of_the_asked_kind_is_marked():
    """哪一所大学: the university, not the founder's name nor another place."""
    text = "国立中山大学是一所于1980年在台湾高雄市西子湾建立的国立大学，前身为1924年由孙中山创立的国立广东大学。"
    extract = pinpoint("国立中山大学的前身为哪一所大学？", [make_hit(text)], reader=False)
    assert extract.span.text.endswith("广东大学")


def test_a_fraction_answers_only_a_share_question():
    """百分之五十 (a penalty rate) is no answer to 贷款期限是多久？: the unit holding 36个月 is."""
    hits = [make_hit("被告未按合同期限归还贷款本金的罚息利率为合同约定的贷款执行利率基础上上浮百分之五十", "a.txt"),
            make_hit("贷款期限36个月(2013年7月24日至2016年7月24日),以贷款借据中的约定为准;", "a.txt", start=200)]
    assert pinpoint("被告所借贷款期限是多久？", hits, reader=False).span.text == "36个月"


def test_a_number_in_the_asked_unit_chooses_the_quote():
    """多少公分: the sentence with 24公分 is the answer, not the one with a date (12月) that shares more words."""
    hits = [make_hit("挪威海螯虾每年的捕获量大概有60,000多公吨。在1995年12月，生物学家在一只挪威海螯虾的嘴巴上，"
                     "找到一种新品种的生物。", "a.txt"),
            make_hit("牠们的体长约有24公分，身体呈橙色。", "a.txt", start=300)]
    extract = pinpoint("挪威海螯虾的体长约是多少公分？", hits, reader=False)
    assert extract.span.text == "24公分"
    assert "24公分" in "".join(p.text for p in extract.picks)
    hits = [make_hit("产后出血一般在胎盘娩出时发生，子宫口开到10公分时胎儿娩出，通常出血量不超过500毫升。")]
    assert pinpoint("生产时胎盘排出会出血，通常血量不会超过多少？", hits, reader=False).span.text.endswith("500毫升")


def test_a_unit_of_the_subjects_article_answers_without_naming_it():
    """斯氏腔吻鳕主要以什么为食？: the article's units need not repeat its subject ("几乎是以多毛类为食"); the unit
    that only names the subject holds no answer."""
    article = ("斯氏腔吻鳕\n斯氏腔吻鳕为辐鳍鱼纲鳕形目鼠尾鳕科的其中一种。本鱼分布于南日本太平洋侧、中国南海、台湾、菲律宾。"
               "本鱼头部腹面光滑无鳞，眼窝极大，口小。生活在混浊的泥沙底质上，几乎是以多毛类为食，偶在胃中发现甲壳类。")
    extract = pinpoint("斯氏腔吻鳕主要以什么为食？", [make_hit(article, "fish.txt")], reader=False)
    assert "以多毛类为食" in extract.span.text


def test_rates_written_as_fen_permille_and_percent_are_compared_as_one_unit():
    """月利率 2分 = 2% = 20‰ (the same answer), 15‰ is another: two judgments' different rates are said out loud."""
    from services.answers.extractive import _as_rate, _same_value, _value_unit

    assert _same_value(_as_rate("2分"), _as_rate("20‰")) and not _same_value(_as_rate("2分"), _as_rate("15‰"))
    assert _value_unit(_as_rate("15‰")) == _value_unit(_as_rate("2分")) == "%"
    hits = [make_hit("原告与被告约定借款月利率按2分计算，按月付息。", "a.txt"),
            make_hit("原告与被告约定借款月利率为15‰，按月付息。", "b.txt")]
    extract = pinpoint("约定月利率是多少？", hits, reader=False)
    assert extract.ambiguous and {extract.span.text, extract.alternatives[0].text} == {"2分", "15‰"}


def test_where_someone_is_now_is_the_place_they_moved_to():
    """「目前在何处上学」 over 「从A转入B上学至今」: B, not the school left (a walkthrough's confident wrong answer)."""
    text = "婚生女孩马62从内乡县第二小学转入沈阳大学新民师范学院附属小学上学至今,诉至法院,请求依法变更小孩马62由原告抚养"
    assert pinpoint("马62目前在何处上学？", [make_hit(text)], reader=False).span.text == "沈阳大学新民师范学院附属小学"
    # without "now" in the question nothing changes: where she went to school first is still answerable
    assert pinpoint("马62原来在哪所学校上学？", [make_hit(text)], reader=False).span.text != "沈阳大学新民师范学院附属小学"


def test_a_clause_that_only_introduces_the_topic_is_not_the_answer():
    """「…双方不付抚养费关于财产，约定平房归男方所有」: asked how the property was divided, the answer is what
    follows 关于财产, not the clause that names it (a walkthrough bolded 「双方不付抚养费关于财产」)."""
    text = "小女儿隋星艺随女方生活,双方不付抚养费关于财产,约定东系山平房包括南厢耳房归男方所有,存款归女方所有"
    span = pinpoint("隋星艺的父母离婚时财产是怎么分的？", [make_hit(text)], reader=False).span
    assert span.text.startswith("约定东系山平房") and "关于财产" not in span.text
    assert span.text.endswith("存款归女方所有")  # the parallel clause completes the answer


def test_a_run_of_parallel_clauses_is_marked_whole():
    """「…约定东系山平房包括南厢耳房归男方所有,存款归女方所有」: the marked clause is one of a run dividing the
    property (X归A所有，Y归B所有); the answer is the run, not its first half. In a judgment without 。 the
    next clause runs on (「存款归女方所有原告后来…」): the mark stops at the frame's end, the quote holds it."""
    text = ("婚生女王小红随女方生活,双方不付抚养费关于财产,约定北屋三间包括西厢房归男方所有,存款归女方所有"
            "原告离婚后另行购房,现与女儿共同居住")
    extract = pinpoint("王小红的父母离婚时财产是怎么分的？", [make_hit(text)], reader=False)
    assert extract.span.text == "约定北屋三间包括西厢房归男方所有,存款归女方所有"
    [quote] = [p.text for p in extract.picks if p.start <= extract.span.start]
    assert "存款归女方所有" in quote and extract.picks[0].support >= 0.4  # quoted, and still a supported quote
    start = extract.text.index(extract.span.text)
    assert (start, start + len(extract.span.text)) in extract.emphasis  # the bold covers the run


@pytest.mark.parametrize("text, marked, run", [
    ("房屋归男方所有，存款归女方所有，汽车归男方使用，双方再无其他争议", "存款归女方所有",
     "房屋归男方所有，存款归女方所有，汽车归男方使用"),  # both sides, the verb may differ
    ("房屋归男方所有，存款归女方所有，债务由男方偿还", "房屋归男方所有", "房屋归男方所有，存款归女方所有"),  # another frame ends it
    ("诉讼费由被告负担，其余由原告负担。原告不服", "诉讼费由被告负担", "诉讼费由被告负担，其余由原告负担"),
    ("约定房屋归男方所有，双方不付抚养费", "约定房屋归男方所有", "约定房屋归男方所有"),  # nothing parallel beside it
    ("原告要求分割夫妻共同财产，被告不同意", "原告要求分割夫妻共同财产", "原告要求分割夫妻共同财产"),  # no frame
    ("经查明被告在婚前购买的位于本市东城区的两套房屋及一辆汽车归男方所有，存款归女方所有",  # a long subject: no run
     "存款归女方所有", "存款归女方所有"),
])
def test_parallel_runs(text, marked, run):
    from services.answers.extractive import _parallel_run

    a = text.index(marked)
    x, y = _parallel_run(text, a, a + len(marked))
    assert text[x:y] == run


def test_documents_that_disagree_on_a_yes_no_question_are_said_to_differ():
    """「原告是否再婚？」 over two judgments, 「原告未再婚」 and 「现已再婚」: said out loud, each with its quote (a
    walkthrough saw both quoted as if they agreed, the bold running across sentences)."""
    a = "原、被告离婚后,被告再婚,但未再生育子女;原告未再婚离婚时大女儿隋星梅20岁,后读了三年技校"
    b = "原告曹0系重庆博耐特压铸有限公司职工,收入比较稳定,现已再婚,其与丈夫何祖君共同购买了位于荣昌县昌元的住房"
    hits = [make_hit(a, "a.txt"), make_hit(b, "b.txt", 1000)]
    extract = pinpoint("原告是否再婚？", hits, reader=False)
    assert extract.span.text == "原告未再婚"  # the asked verb's phrase, its negation included, not the run-on clause
    assert extract.ambiguous and extract.alternatives[0].text == "现已再婚"
    assert extract.text.startswith("有 2 份文档给出不同答案")
    # naming the party picks the judgment that names her, and nothing is said to differ
    named = pinpoint("原告曹0后来再婚了吗？", hits, reader=False)
    assert not named.ambiguous and named.span.text == "现已再婚"
    # two documents that say the same are no disagreement
    same = [make_hit(a, "a.txt"), make_hit("原告离婚后一直未再婚,独自抚养孩子", "c.txt", 1000)]
    assert not pinpoint("原告是否再婚？", same, reader=False).ambiguous


@pytest.mark.parametrize("phrase,negative", [("原告未再婚", True), ("现已再婚", False), ("被告没有按时支付", True),
                                             ("被告未能按时支付", True), ("被告已支付", False)])
def test_a_yes_no_phrase_says_whether_the_verb_happened(phrase, negative):
    from services.answers.extractive import negated

    assert negated(phrase, ["再婚", "支付"]) is negative


# --- why-questions: the clause stating the cause (s26 walkthrough) ---------------------------------
DIVORCE = ("经审理查明:原告刘0与被告陈x2原系夫妻关系2005年3月12日,婚后生育一子陈x72012年9月18日,原、被告因夫妻感情破裂,"
           "经本院调解离婚,调解书载明陈x7随原告生活,被告每月支付抚养费600元此后,被告一直未按约定支付抚养费另查明:"
           "陈x7现在某县实验小学上学,原告刘0系某公司职工,收入稳定")


@pytest.mark.parametrize("question", ["原告刘0与被告陈x2因何离婚？", "原告刘0与被告陈x2为什么离婚？",
                                      "原告刘0与被告陈x2离婚的原因是什么？"])
def test_a_why_question_marks_the_clause_stating_the_cause(question):
    """「…因何离婚？」 bolded 「原告曹0与被告张x1原5夫妻关系2001年5月27日」 (a date clause naming the parties) and quoted
    three unrelated clauses as supported; the answer is the clause with the causal marker."""
    assert answer_type(question) == "reason"
    extract = pinpoint(question, [make_hit(DIVORCE)], reader=False)
    assert extract.span is not None and "感情破裂" in extract.span.text
    assert not any(ch.isdigit() for ch in extract.span.text)  # never a date or a number
    quoted = "".join(p.text for p in extract.picks)
    assert "2005年3月12日" not in quoted and "600元" not in quoted and "实验小学" not in quoted


@pytest.mark.parametrize("text,question,cause", [
    ("这座桥于1998年建成，2003年7月封闭，封闭的原因是桥墩出现裂缝。此后改建为人行桥。", "这座桥为什么封闭？", "桥墩出现裂缝"),
    ("2010年前后，该湖面积缩小了三成，上游大量修建水库导致入湖水量减少。", "该湖面积为什么缩小？", "修建水库"),
    ("这种病由一种基因突变引起，患者多在20岁以后发病。", "这种病因何而起？", "基因突变")])
def test_a_cause_written_with_other_markers_is_marked(text, question, cause):
    span = pinpoint(question, [make_hit(text)], reader=False).span
    assert span is not None and cause in span.text and not span.text[:1].isdigit()


def test_cause_spans_are_not_consequences_or_words_with_yin():
    from services.answers.answer_types import cause_spans

    text = "基因决定了性状因此后代相似,原因不明,由于天气原因比赛推迟"
    assert [text[a:b] for a, b in cause_spans(text)] == ["由于天气原因比赛推迟"]


# --- overlapping windows of one document (s26 walkthrough, item 11) -------------------------------
CHEMISTRY = ("结构简式通常包括烃基及官能团两部分。常见官能团：碳碳双键、羟基、羧基、醛基等。官能团对有机物的性质起决定作用，"
             "—X、—OH、—CHO、—COOH、—NO2、-SO3H等决定了有机物中的卤代烃、醇或酚、醛、羧酸、硝基化合物、磺酸类有机物的化学性质键线式"
             "也称骨架式、拓扑式、折线简式，是在纸面表示分子结构的一种方法，在表示有机化合物的立体结构时尤其常用。"
             "用键线式表示的结构简明易懂，并且容易书写。")


def _windows(text, cut, end):
    """Two overlapping windows of one document, as a sliding chunker makes them: the first-ranked one opens
    at `cut` (inside a formula), the second holds the sentence whole and ends at `end`."""
    return [make_hit(text[cut:], "chem.pdf", cut), make_hit(text[:end], "chem.pdf", 0)]


def test_overlapping_windows_quote_the_same_text_once():
    cut = CHEMISTRY.index("-SO3H")
    hits = _windows(CHEMISTRY, cut, CHEMISTRY.index("是在纸面表示") + 6)
    extract = pinpoint("键线式也叫什么？", hits, reader=False)
    ranges = sorted((p.start, p.end) for p in extract.picks)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))  # no document text quoted twice
    assert extract.text.split("以下内容摘自文档：")[-1].count("硝基化合物") == 1  # README: 同一句不会出现两次
    assert not any(p.text.startswith("-SO3H") for p in extract.picks)
    assert extract.span is not None and not extract.span.text.startswith("-SO3H") and "骨架式" in extract.span.text


def test_a_passage_opening_inside_a_formula_does_not_quote_the_formulas_tail():
    cut = CHEMISTRY.index("-SO3H")
    hit = make_hit(CHEMISTRY[cut:], "chem.pdf", cut)
    extract = pinpoint("哪些基团决定了有机物中的卤代烃、醇或酚、醛的化学性质？", [hit], reader=False)
    assert extract.picks and not any(p.text.startswith("-SO3H") for p in extract.picks)
    assert extract.span is None or not extract.span.text.startswith("-SO3H")


@pytest.mark.parametrize("question,why", [("原告曹0与被告张x1因何离婚？", True), ("原告为何上诉？", True),
                                          ("张某的最终死亡原因是什么？", True),
                                          ("当时为什么部落的官称？", False),  # 为 + 什么部落: which tribe
                                          ("这座城市名为什么？", False), ("什么事情改变了九龙湾的印象？", False),
                                          ("如今的赛里木湖被誉为什么？", False), ("该岛被视为什么？", False)])
def test_why_questions_ask_for_a_cause(question, why):
    from services.answers.extractive import asks_why

    assert asks_why(question) is why


# --- the value's whole extent (issue 21, dev misses of bench/pinpoint.py --dev) --------------------------------
@pytest.mark.parametrize("text,names", [
    ("另外，李晨亦是好友的儿子杜宇麒（嗯哼）的干爹。", "杜宇麒"),  # jieba: 杜宇 | 麒
    ("在该剧播出前，制作人伍宗德一再表明", "伍宗德"),  # jieba: 人伍 | 宗德
    ("1220年，耶律留哥死后，其妻姚里氏统治辽东。", "姚里氏"),  # 姚 | 里氏, one character each side
    ("现任校长为阮爱馨女士。", "阮爱馨女士"),
    ("元皇后，北齐孝昭帝高演的皇后。", "孝昭帝高演"),
    ("同名主题曲《鳄鱼泪》，由袁丽嫦原唱。", "袁丽嫦")])  # a name jieba does not know (x)
def test_a_person_is_marked_by_the_whole_name(text, names):
    assert names in [text[a:b] for a, b in typed_values("person", text)]


@pytest.mark.parametrize("text,date", [
    ("在永禄5年 （1562年）元服，被任命为知行。", "永禄5年 （1562年）"),
    ("正德五年（1510年）十月，刘六、刘七在霸州起义。", "正德五年（1510年）十月"),
    ("1993年（民国82年）1月24日起，《台视周日卡通》停播", "1993年（民国82年）1月24日"),
    ("承光元年（577年），北齐亡", "承光元年（577年）"),
    ("1930年代已经形成繁盛的商业街，1990年代以后经过彻底改建", "1990年代以后")])
def test_a_date_is_marked_as_the_whole_date_expression(text, date):
    assert date in [text[a:b] for a, b in typed_values("date", text)]
    assert [text[a:b] for a, b in typed_values("date", "人民币元年终奖")] == []


@pytest.mark.parametrize("text", [
    "出口额达五十亿美元年增长百分之八",
    "贷款一百万港元年利率为百分之三",
    "尚欠三千欧元年底结清",
    "每人三十元年费",
    "人民币元年终奖"])
def test_yuan_the_currency_before_nian_is_no_first_year_of_an_era(text):
    assert not [text[a:b] for a, b in typed_values("date", text) if "元" in text[a:b]]


@pytest.mark.parametrize("kind,text,value", [
    ("number", "生长于海拔50米至1,520米的地区", "50米至1,520米"),
    ("number", "上部叶小，长2-4厘米，宽1-2厘米", "2-4厘米"),
    ("amount", "约定月租金3000元至5000元不等", "3000元至5000元")])
def test_a_number_is_marked_as_the_whole_range(kind, text, value):
    assert value in [text[a:b] for a, b in typed_values(kind, text)]


def test_two_counts_asked_at_once_are_marked_as_their_list():
    text = "区划调整后为8个村、2个社区。"
    assert pinpoint("路口镇管辖下有几个村和社区？", [make_hit(text)], reader=False).span.text == "8个村、2个社区"


def test_an_untyped_questions_short_answering_sentence_is_marked_whole():
    """CMRC's answers to descriptive questions are whole sentences: one of up to SPAN_WHOLE characters is
    marked whole, not its best clause."""
    text = "城市由十个设有护城墙的城堡组成，这些城堡用作礼仪、葬礼、庙宇、贮水及居住用途。"
    span = pinpoint("昌昌内的十个城堡的用途是什么？", [make_hit(text)], reader=False).span
    assert span.text == text


def test_a_place_takes_the_nouns_naming_the_institution_after_it():
    text = "2013年6月1日18时许，被告人清某在成都市金牛区玉居庵东路菲城网吧被公安机关挡获。"
    assert pinpoint("被告人清某在何地被抓获？", [make_hit(text)], reader=False).span.text == "成都市金牛区玉居庵东路菲城网吧"
    text = "苏佩维埃尔生于乌拉圭蒙得维的亚。"
    assert pinpoint("苏佩维埃尔出生于哪里？", [make_hit(text)], reader=False).span.text == "乌拉圭蒙得维的亚"
CUSTODY = ("经审理查明:原告王0与被告李x3原系夫妻关系,婚后生育一女李x6,2012年3月5日,双方经本院调解离婚,"
           "调解书载明:“李x6随被告李x3生活”离婚后双方又自行协商,约定李x6暂由原告代管,"
           "被告每月向原告支付李x6的生活费600元,此后李x6一直随原告生活至今,期间被告未按约定支付生活费")


@pytest.mark.parametrize("question", ["李x6 那孩子跟谁生活？", "李x6跟谁生活？", "孩子由谁抚养？"])
def test_who_a_child_lives_with_is_the_carer_of_the_arrangement_that_holds_now(question):
    """The s26 walkthrough's follow-up 「那孩子跟谁生活？」 bolded the father's name from the mediation's old
    arrangement (随被告李x3生活), while the judgment says the child has lived with the plaintiff since: a role
    (原告) is the answer, from the clause stating the arrangement that holds now (…一直随原告生活至今)."""
    extract = pinpoint(question, [make_hit(CUSTODY)], reader=False)
    assert extract.span.text == "原告"
    assert CUSTODY[extract.span.start - 6:extract.span.end + 4] == "李x6一直随原告生活至今"
    assert "李x6一直随原告生活至今" in extract.text


@pytest.mark.parametrize("question,carer", [("那孩子跟谁生活？", True), ("孩子由谁抚养？", True), ("抚养权归谁？", True),
                                            ("他和谁住在一起？", True), ("谁支付抚养费？", False), ("原告与谁结婚？", False)])
def test_questions_asking_who_raises_a_child(question, carer):
    assert asks_carer(question) is carer


@pytest.mark.parametrize("text,carers", [
    ("张x6一直随原告生活至今", ["原告"]), ("约定孩子暂由原告代管", ["原告"]), ("孩子由其外婆照顾", ["外婆"]),
    ("婚生子由其母抚养", ["其母"]), ("现在自己愿意随母亲曹0生活", ["母亲曹0"]), ("婚生女归被告抚养", ["被告"]),
    ("原告要求被告支付抚养费", []), ("夫妻和睦生活", [])])
def test_carers_are_read_from_the_clause_stating_the_arrangement(text, carers):
    assert [text[a:b] for a, b in carer_spans(text)] == carers


def test_a_quote_runs_over_the_line_wraps_of_a_pdf_box():
    """The chemistry PDF (s26 walkthrough): the answer was cut at a line wrap of a box narrower than the page,
    「用键线式表示的结构简明易懂，并且」 without 「容易书写」. A line break inside a sentence is no boundary."""
    from test_parsing import MIND_MAP

    extract = pinpoint("用键线式表示的结构有什么特点？", [make_hit(MIND_MAP, start=40)], reader=False)
    assert extract.span.text == "用键线式表示的结构简明易懂，并且\n容易书写"
    assert MIND_MAP[extract.span.start - 40:extract.span.end - 40] == extract.span.text


def test_what_something_is_called_is_no_why_question():
    """被誉为什么 asks for the name it is praised as (天山的明珠), not a cause: the sentence saying so is quoted,
    not the one with 因此 (dev sample, 7 Dec 2026)."""
    text = ("虽然地处高山，但却位于古今交通要道上，奎屯-赛里木湖高等级公路就从湖边经过，因此赛里木湖很早就以其优美的风光而闻名于世。"
            "如今的赛里木湖被誉为“天山的明珠”，已成为一个著名的旅游景点。")
    assert answer_type("如今的赛里木湖被誉为什么？") is None
    extract = pinpoint("如今的赛里木湖被誉为什么？", [make_hit(text)], reader=False)
    assert "天山的明珠" in "".join(p.text for p in extract.picks)


def test_a_place_question_keeps_a_much_better_unit_without_a_recognised_place():
    """葛家菜窖内 is no place the patterns know: the unit saying where the bodies were put (far the best) is
    kept over another passage's address, which scores 0.58 of it (LOOSE_TYPED_RATIO; dev sample)."""
    first = ("之后，刁1某脱下葛某某之女崔某（被害人，殁年11岁）的衣服，捆绑崔某的双手于背后，将崔某强奸。"
             "刁1某将葛某某、崔某的尸体扔进葛家菜窖内，翻乱葛家物品，伪造被抢劫假象后逃离。")
    second = ("（一）关于故意杀人、强奸事实1995年8月8日20时许，被告人刁1某来到位于黑龙江省呼玛县XX镇XX街XX号的被害人"
              "葛某某（女，殁年34岁）家，欲与葛某某发生性关系。")
    extract = pinpoint("刁1某把葛某某、崔某的尸体放在何处？", [make_hit(first), make_hit(second, start=1000)], reader=False)
    assert "葛家菜窖内" in "".join(p.text for p in extract.picks)


@pytest.mark.parametrize("question,text,value", [
    # the question's 逝世 is the text's 卒 (`_ALIASES`); the birth date is another event's
    ("潘仕成逝世的时间是？", "清嘉庆九年(1804年)，祖籍福建且家族世居广州的潘仕成出生。道光二十三年（1843年）七月，由李光铨等将制成的水雷送北京。"
                        "清同治十二年(1873年)，卒。", "同治十二年(1873年)"),
    ("道制在什么时候被废除？", "早期实行祖师制，在第十代祖师后被废除。民国2年2月25日，迤西、迤南更名为滇西、滇南。"
                          "民国16年南京国民政府进驻后，道制才正式废止。", "民国16年"),
    # 建于哪一年: the date of the building, not of the renaming the subject's sentence tells
    ("富国银行广场建于哪一年？", "富国银行广场（Wells Fargo Bank Plaza），位于美国明尼亚波利斯。1986年，西北国家银行在原址兴建新大厦，"
                           "并于1988年落成。1998年，西北银行收购旧富国银行，并改名为富国银行，大厦亦改名为富国银行广场。", "1988年")])
def test_a_date_question_marks_the_date_of_the_event_it_asks_about(question, text, value):
    extract = pinpoint(question, [make_hit(text)], reader=False)
    assert extract.span.text == value


def test_a_weapon_question_finds_the_knife():
    """作案工具 / 凶器: the text names the weapon (一把尖刀), never the word 凶器."""
    text = ("之后，刁1某脱下崔某的衣服，捆绑崔某的双手于背后。葛某某拒绝并反抗，刁1某拿起一把尖刀捅刺葛某某胸部三刀，致葛某某心脏破裂当场死亡。"
            "刁1某将葛某某、崔某的尸体扔进葛家菜窖内，翻乱葛家物品，伪造被抢劫假象后逃离。")
    other = "从被告人吕某身上缴获工具1袋（内有钥匙3串、自制螺丝刀头8个、套筒1个、折叠尖刀1把）。"
    extract = pinpoint("刁1某的作案工具？", [make_hit(text), make_hit(other, doc="e.txt")], reader=False)
    assert "一把尖刀" in "".join(p.text for p in extract.picks)


def test_the_unit_stating_the_asked_attribute_is_quoted():
    """X的支流有哪些？: clauses naming single tributaries (右岸支流桑曲汇入) outscore the sentence listing them
    (主要支流有：…); a unit stating the asked attribute (Y是/为/有/：) is quoted when it scores half the best
    (ATTRIBUTE_RATIO; dev sample)."""
    first = ("Urlung Qu）汇合后始称拉萨河，向东南流入墨竹工卡县、经达孜县、拉萨市城关区、堆龙德庆区，至曲水县汇入雅鲁藏布江。"
             "拉萨河流域东西长约551千米，流域面积约为3万2471平方千米。在拉萨市附近的拉萨河段，建有青藏铁路的拉萨河大桥。"
             "主要支流有：麦曲、桑曲、拉曲、学绒藏布及堆龙曲等。")
    second = ("拉萨河（）位于西藏自治区，藏语称为吉曲。拉萨河发源于嘉黎县北部念青唐古拉山中段北麓彭措拉孔马沟，源头海拔约5283米，"
              "向西北流，经彭措怕尔玛和鼓措卧玛两小湖，流入澎措（Pum Co）。出澎措后称麦地藏布，向西流，进入那曲县，再折向南流回嘉黎县，"
              "在嘉黎县措多乡古塘村附近与拉萨河左岸支流麦曲汇合后改称色绒藏布，向西南流经当雄县、林周县交界处有右岸支流桑曲汇入，"
              "从此改称热振藏布，在林周县旁多乡与右岸支流拉曲（乌鲁龙曲；Urlung Qu）汇合后始称拉萨河，向东南流入墨竹工卡县、"
              "经达孜县、拉萨市城关区、堆龙德庆区，至曲水县汇入雅鲁藏布江。")
    extract = pinpoint("拉萨河的支流有哪些？", [make_hit(first), make_hit(second, start=1000)], reader=False)
    assert "主要支流有：麦曲、桑曲、拉曲、学绒藏布及堆龙曲等。" in "".join(p.text for p in extract.picks)


def test_the_value_after_the_stated_attribute_is_marked():
    """华8五金厂的投资人是谁？: 邓x7 follows 投资人为, not the other party named in the best clause (龙9)."""
    text = ("原告龙9保安公司是于2014年7月10日成立的从事保安服务的有限责任公司被告华8五金厂是于2010年7月7日成立的个人独资企业,"
            "投资人为邓x7,经营地址为阳江市阳东区东城镇裕东三路63号")
    extract = pinpoint("华8五金厂的投资人是谁？", [make_hit(text)], reader=False)
    assert extract.span.text == "邓x7"


@pytest.mark.parametrize("question,stated", [("《大富翁8》著作权人的权利范围是？", "权利范围是全部权利"),
                                             ("《大富翁8》著作权人的权利取得方式是？", "权利取得方式是原始取得")])
def test_the_clause_stating_the_asked_attribute_is_marked(question, stated):
    """A judgment's run of clauses: the one stating the asked attribute (权利范围是…) is quoted and marked, at 0.4
    of the best unit's score (ATTRIBUTE_RATIO), not the clause naming the copyright holders."""
    text = ("经审理查明,2001年12月31日,国家版权局作出软著登字第0013642号《计算机软件著作权登记证书》,载明《大富翁六》的著作权人是"
            "软xx0(北京)有限公司,并且从2001年12月20日开始在法定的期限内享有该软件的著作权2005年12月1日,国家版权局作出软著登字"
            "第045941号《计算机软件著作权登记证书》,载明《大富翁8》的著作权人是软xx0(北京)有限公司、大宇资讯股份有限公司,"
            "权利取得方式是原始取得,权利范围是全部权利,首次发表日期是2005年9月25日2007年11月29日,国家版权局作出软著登字第084874号"
            "《计算机软件著作权登记证书》,载明《轩辕剑外传.汉之云》的著作权人是软")
    extract = pinpoint(question, [make_hit(text)], reader=False)
    assert stated in extract.span.text and "著作权人" not in extract.span.text


@pytest.mark.parametrize("question,texts,answer", [
    ("金正恩的母亲为？", ["杨亨燮同日还向媒体证实，金正恩是金正日的儿子，这也是北韩官方第一次公开确认金正恩的身份。",
                     "据报道，金正恩身高1.75公尺。金正恩是金正日和第四任夫人高容姬所生的第二个儿子，为金正日第三子；"], "高容姬"),
    ("类比讯号的定义是什么？", ["类比讯号的概念常常在涉及电的领域中被使用，不过经典力学、气动力学、水力学等学科有时也会使用类比讯号的概念。",
                        "理论上，类比讯号的解析度趋近无穷大。类比讯号是指在时域上数学形式为连续函式的讯号。"], "在时域上数学形式为连续函式的讯号")])
def test_kin_and_definition_words_the_text_says_otherwise(question, texts, answer):
    """母亲 is said 之母 / 所生, a definition 是指 (`_ALIASES`; dev sample)."""
    hits = [make_hit(t, start=1000 * i) for i, t in enumerate(texts)]
    extract = pinpoint(question, hits, reader=False)
    assert answer in extract.span.text


# --- what a symbol or term stands for (s27 walkthrough, item 7) ----------------------------------------------
# The sample mineru_chemical_symbols_zh.pdf as the walkthrough's KB extracted it (PDF line wraps kept; its letters are
# math italic: 𝑄 is U+1D444, 𝐻 U+1D43B), cut into the two passages retrieval returned first (0–299, 184–473).
CHEM_PDF = ("化学学科常用符号公式\n及其表示\n方程式\n又称化学反应式、化学反应方程式，是用化学式来描述各种物质之间的不同化学反应的式子"
            "（类似于数学公\n式，注意特殊符号表达）\n一般化学方程式\n各反应物与各生成物之间用“+”号连接，读作“和”，在反应物与生成物之间用"
            "“→”连接，读作“生成”\n热化学方程式\n在配平完的方程式后根据事实写上“△𝐻=𝑄”，其中𝑄代表放出或吸收的热量（焓变）。"
            "放热反应，𝑄<0；吸热反应，𝑄>0\n反应条件\n△代表加热\n某物质名称代表此物质为催化剂\n其他反应条件（如通电、光照）均以文字标明\n"
            "反应现象\n↑代表此生成物为气体，且反应物中无气体\n↓代表此生成物有沉淀，且反应物中无固体\n非结构式\n分子式\n"
            "是用元素符号及各元素个数表示物质（单质、化\n合物）分子的组成、该物质分子量的化学式；分\n子式仅能表示一个分子所含每种原子的数目，并\n"
            "不能表明分子的结构。\n葡萄糖一个分子含 6个碳原子、12个氢原子、6个氧原子实验式（最简式）\n"
            "实验式（empirical formula）又称简式、最简式，是一种表示化合物中各原子最简单整数比例\n的化学式。\n")


def _chem_hits():
    return [make_hit(CHEM_PDF[:299], "chem.pdf", 0), make_hit(CHEM_PDF[184:473], "chem.pdf", 184)]


@pytest.mark.parametrize("question", ["热化学方程式中Q代表什么？", "热化学方程式中𝑄代表什么？", "热化学方程式中的Q表示什么？",
                                      "热化学方程式里Q指的是什么？"])
def test_what_a_symbol_stands_for_is_the_clause_after_daibiao(question):
    """「热化学方程式中Q代表什么？」 bolded 「在配平完的方程式后根据事实写上“△𝐻=𝑄”」 (the clause before the answer), had no
    answer line and quoted the definition of 方程式 first. The answer is what follows 「𝑄代表」, the plain Q of the
    question matching the PDF's math italic 𝑄 (NFKC); offsets stay those of the document."""
    extract = pinpoint(question, _chem_hits(), reader=False)
    span = extract.span
    assert span is not None and span.text == "放出或吸收的热量（焓变）"
    assert CHEM_PDF[span.start:span.end] == span.text  # exact document offsets (citations, PDF boxes)
    assert extract.text.startswith("放出或吸收的热量（焓变）\n\n")  # the answer line, bold, like 「4分钟」
    assert [extract.text[a:b] for a, b in extract.emphasis] == ["放出或吸收的热量（焓变）"] * 2
    assert "又称化学反应式" not in extract.text  # the definition of 方程式 says nothing about Q
    assert "其中𝑄代表放出或吸收的热量（焓变）" in extract.text


@pytest.mark.parametrize("question,meaning", [("反应条件中△代表什么？", "加热"), ("反应现象中↑代表什么？", "此生成物为气体")])
def test_what_other_symbols_of_the_pdf_stand_for(question, meaning):
    extract = pinpoint(question, _chem_hits(), reader=False)
    assert extract.span is not None and extract.span.text == meaning


@pytest.mark.parametrize("question,term", [
    ("热化学方程式中Q代表什么？", "q"), ("热化学方程式中的Q代表的是什么？", "q"), ("路易斯结构中的点表示什么？", "点"),
    ("SMILES是什么意思？", "smiles"), ("WLN的意思是什么？", "wln"), ("初期的75门小炮台代表了什么？", "75门小炮台"),
    ("「五六式衝鋒鎗」指的是什麼?", "五六式冲锋鎗"),
    ("热化学方程式是什么？", ""), ("谁代表公司出席了会议？", ""), ("原告表示什么时候还款？", "")])
def test_the_term_whose_meaning_is_asked(question, term):
    from services.answers.answer_types import asked_meaning

    assert asked_meaning(question) == term


@pytest.mark.parametrize("text,term,meanings", [
    ("在配平完的方程式后根据事实写上“△𝐻=𝑄”，其中𝑄代表放出或吸收的热量（焓变）。", "q", ["放出或吸收的热量（焓变）"]),
    ("↑代表此生成物为气体，且反应物中无气体", "↑", ["此生成物为气体"]),
    ("SMILES是指简化分子线性输入规范", "smiles", ["简化分子线性输入规范"]),
    ("the equation代表方程", "q", []),  # a letter inside a word is not the symbol
    ("𝑄<0代表放热", "q", [])])  # Q<0 is another thing than Q
def test_meaning_spans(text, term, meanings):
    from services.answers.answer_types import meaning_spans

    assert [text[a:b] for a, b in meaning_spans(text, term)] == meanings


def test_meaning_spans_of_a_long_unit_stop_at_the_longest_gloss():
    """Every occurrence used to scan on to its clause's end (quadratic: seconds on a long unit)."""
    import time

    from services.answers.answer_types import MEANING_MAX, meaning_spans

    text = "Q代表热量与" * 2000  # 12,000 characters, one clause
    start = time.perf_counter()
    spans = meaning_spans(text, "q")
    assert time.perf_counter() - start < 1.0
    assert spans and all(b == len(text) and b - a <= MEANING_MAX for a, b in spans)  # only the tail's glosses
    for n, found in ((MEANING_MAX, 1), (MEANING_MAX + 1, 0)):  # the bound, trailing spaces not counted
        gloss = "其中Q代表" + "热" * n + "   。"
        assert len(meaning_spans(gloss, "q")) == found


@pytest.mark.parametrize("question,term", [("“吾无汗马劳，徒以际会得此。\"这句话是什么意思？", "这句话"),
                                           ("可汗意同於漢語中的什麼意思?", "")])  # which word of Chinese: no term's meaning
def test_the_term_whose_meaning_is_asked_ends_at_a_sentence(question, term):
    from services.answers.answer_types import asked_meaning

    assert asked_meaning(question) == term


CAIL_0002 = ("依据上述有效证据,本院确认以下案件事实:原、被告双方于××××年××月份结婚,婚后生一女孩,取名马62,2013年11月21日,"
             "双方在新民市民政局协议离婚,协议内容为:婚生女孩马62由女方别x2抚养,男方每月给孩子抚养费1000元(从2013年12月1日起至"
             "2020年12月止)双方离婚后,小孩马62一直随被告生活××××年××月××日,婚生女孩马62从内乡县第二小学转入沈阳大学新民师范学院"
             "附属小学上学至今,现原告以小孩马62已年满十周岁,自愿提出与原告一起生活为由,诉至法院,请求依法变更小孩马62由原告抚养\n")


def test_a_carer_question_naming_the_agreement_marks_the_agreed_carer():
    """s27 walkthrough A: 离婚协议约定…由谁抚养？ asks about the agreement (协议内容为:…由女方别x2抚养), not the change the
    plaintiff asks for (请求依法变更…由原告抚养), nor the arrangement now (一直随被告生活)."""
    extract = pinpoint("离婚协议约定马62由谁抚养？", [make_hit(CAIL_0002)], reader=False)
    assert extract.span.text == "女方别x2"


@pytest.mark.parametrize("text,carers", [
    ("诉至法院,请求依法变更小孩马62由原告抚养", []), ("自愿提出与原告一起生活为由", []),
    ("协议内容为:婚生女孩马62由女方别x2抚养", ["女方别x2"])])
def test_a_requested_arrangement_is_no_carer(text, carers):
    assert [text[a:b] for a, b in carer_spans(text)] == carers


def test_who_did_it_marks_the_agent_after_you_before_the_asked_verb():
    """s27 walkthrough B: 由谁捐献 asks for the agent of 捐献 (an organisation counts), not a road named elsewhere."""
    text = ("乍都节公园（）位于泰国的首都曼谷的乍都节县，是拍凤裕庭路、威拍哇丽兰室路、甘烹碧路之间的一处公众游园地。"
            "1975年由泰国国家铁路局捐献土地建筑成公园。1980年12月4日，泰国国王拉玛九世62岁生日那天，公园开放。")
    extract = pinpoint("乍都节公园是由谁捐献土地建造出来的？", [make_hit(text)], reader=False)
    assert extract.span.text == "泰国国家铁路局"


def test_the_date_right_before_the_event_verb_is_marked_in_unpunctuated_text():
    """s27 walkthrough C: 于2012年2月10日出生2013年1月14日 — the next date begins the next clause (no punctuation)."""
    text = ("经审理查明,原、被告于2010年11月5日登记结婚,婚生子王凯翔(现改名为那8)于2012年2月10日出生2013年1月14日,"
            "经本院主持调解,双方当事人就抚养权自愿达成如下协议:婚生子王凯翔由葛x1抚养,王0从2013年1月起每月承担抚养费10000元"
            "至王翔凯独立生活之日止2012年9月22日,原告王0与他人孕育一男孩")
    extract = pinpoint("婚生子王凯翔出生日期为何时？", [make_hit(text)], reader=False)
    assert extract.span.text == "2012年2月10日"
    assert all(not p.text.endswith("2013年1月14日") for p in extract.picks)  # nor is the next date quoted


def test_a_date_question_marks_the_date_of_the_clause_telling_the_event():
    """s27 walkthrough D: 何时离婚 is the date before 双方…协议离婚, not the 抚养费 period before 双方离婚后 (a time reference)."""
    extract = pinpoint("原、被告双方于何时离婚？", [make_hit(CAIL_0002)], reader=False)
    assert extract.span.text == "2013年11月21日"


CAIL_0001_PART = ("原告曹0系重庆博耐特压铸有限公司职工,其与丈夫何祖君共同购买了位于荣昌县昌元街道昌州大道西段的房屋一套本案在审理过程中,"
                  "原告曹0与被告张x1于2011年7月21日经本院调解离婚,约定小孩张x6暂由原告代管,被告每月向原告支付张x6的生活费800元因此,"
                  "张x6一直随原告生活至今,期间被告未依照约定按时向原告支付")


def test_a_span_stops_before_the_next_clause_of_an_unpunctuated_judgment():
    """s27 walkthrough F: 本案在审理过程中 starts the next clause though no comma precedes it."""
    extract = pinpoint("原告曹0与其丈夫在何处购买了房产？", [make_hit(CAIL_0001_PART)], reader=False)
    assert extract.span.text.startswith("荣昌县昌元街道昌州大道西段")
    assert "本案" not in extract.span.text


def test_a_quote_stops_before_the_next_clause_of_an_unpunctuated_judgment():
    extract = pinpoint("双方约定被告每月支付多少生活费？", [make_hit(CAIL_0001_PART)], reader=False)
    assert extract.span.text == "800元"
    assert all(not p.text.endswith("因此") for p in extract.picks)
    assert any(p.text.endswith("800元") for p in extract.picks)


def test_what_period_asks_for_the_period_name_not_a_date():
    """s27 walkthrough E: 什么时期的武将 is 日本战国时代至安土桃山时代, not the lifespan; the same-name warrior's
    sentence (a date, no period) is not quoted."""
    text = ("松平康忠（1546年－1618年9月28日）是日本战国时代至安土桃山时代的武将。长泽松平家第8代当主。德川氏的家臣。"
            "在天文9年（1540年）的安城合战中战死的同名武将松平康忠（甚六郎）是松平宗家亲忠系的松平张忠的儿子，不是同一人。")
    extract = pinpoint("松平康忠是什么时期的武将？", [make_hit(text)], reader=False)
    assert extract.span.text == "日本战国时代至安土桃山时代"
    assert all("同名" not in p.text for p in extract.picks)
