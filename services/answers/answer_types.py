"""The answer type a question asks for and the values of each type in a text, with exact offsets:
`answer_type` (number, amount, date, title, country, person, place, reason or None), `asked_verbs` of a
yes/no question, `typed_values` / `entity_spans` (800元, 2011年7月21日, 《书名》, 荷兰, 张x6, 荣昌县城西小学) and
`has_type`. Pure patterns and jieba's part-of-speech tags, no model; services.answers.extractive chooses and
marks answers with them, services.answers.answerability reads them as signals."""
from __future__ import annotations

import re
import unicodedata

from services.documents.tokenizer import comparable, term_matches, to_simplified

TYPED = frozenset({"number", "amount", "date", "title", "country", "person", "place"})

# --- the asked-for type ----------------------------------------------------------------------
_DATE_Q = re.compile(r"哪一?个?时期|什么时期|哪个年代|哪一?年|何年|哪一?天|何时|什么时候|哪个时候|日期|年份|几月|几日|哪个朝代|什么时间|哪一?个?世纪|几号|何日|哪个月|(?<![长多段])(?:时间|日子)[是为]?[？?。\s]*$")
_TITLE_Q = re.compile(r"哪一?[部本首篇张]|什么(?:书|作品|电影|电视剧|歌曲|歌|小说|专辑|节目|游戏|杂志|报纸|著作|剧)|书名|作品名|片名|歌名|剧名")
_COUNTRY_Q = re.compile(r"哪一?个?国家?|何国|国籍|哪一国")
_PLACE_Q = re.compile(r"哪里|哪儿|何处|何地|(?:在|去|到|从|来自)哪(?![一个种位些])|哪(?:一|些)?个?(?:城市|省份?|地方|地区|县|市|区|镇|乡|村|学校|医院|大学|州|洲|岛|国家)|"
                      r"哪一?[所座]|什么地方|地点|地址|住址|住所|什么位置|何方")
_PERSON_Q = re.compile(r"谁|何人|哪位|哪一位|什么人|哪个人|姓名|名字叫|叫什么名字")
_AMOUNT_Q = re.compile(r"多少钱|多少元|多少万元|金额|价款|价格|价值多少|罚金|罚款|租金|工资|多少.{0,8}[费款金钱资价]|[费款金钱资价].{0,6}多少")
_NUMBER_Q = re.compile(r"多少|几[个次位种年天名岁座条项件本家所人只台部层届倍辆套户间]|多[大长高远重久宽深]|数量|人口|面积|价格|金额|比例|百分|几成|几何")
# a number question asks with 多少/几/多大; a noun alone (人口, 金额) asks for a number only when no other question
# word asks for something else (人口减少是由于什么病变? 人口第二密集的县辖市为何?), or that word asks for the noun (什么价格)
_COUNT_Q = re.compile(r"多少|几|多[大长高远重久宽深]")
_OTHER_WH = re.compile(r"什么|甚么|哪|谁|何|怎")
_WH_NOUN = re.compile(r"(?:什么|哪一?[个种]?|何种)(?:数量|人口|面积|价格|金额|比例|价款|罚金|罚款|租金|工资)")
# 为 + 什么 after a verb of naming or regarding (名为什么, 被誉为什么, 被视为什么) asks "what", not why
NAMED_AS_WHAT = r"(?<![名称作成叫译改誉视列定奉尊封选认])"
_REASON_Q = re.compile(NAMED_AS_WHAT + r"为什么|为何|原因|怎么来|由来|因何|何故|为啥|怎么会|何事|什么事")
_WHAT_END = re.compile(r"为何[？?。\s]*$")  # "…中心为何?": what it is (Taiwanese usage), not why
_YES_NO_Q = re.compile(r"[了过]吗|吗[？?！!。.\s]*$|是否|有没有|有无|是不是|能否|可否|会不会|能不能")
_AUXILIARY = frozenset("是 有 能 会 要 需要 可以 应该 应当 能够 愿意 同意".split())


def answer_type(question: str) -> str | None:
    """The asked-for answer type: 'date', 'title', 'country', 'place', 'person', 'amount' (money),
    'number' (a number with its unit), 'reason' or None (anything else: the best clause answers)."""
    q = comparable(question)
    if _DATE_Q.search(q):
        return "date"
    if _TITLE_Q.search(q):
        return "title"
    if _COUNTRY_Q.search(q):
        return "country"
    if _PERSON_Q.search(q):
        return "person"
    if _PLACE_Q.search(q):
        return "place"
    if (_NUMBER_Q.search(q) or _AMOUNT_Q.search(q)) and (_COUNT_Q.search(q) or not _OTHER_WH.search(q) or _WH_NOUN.search(q)):
        return "amount" if _AMOUNT_Q.search(q) else "number"
    if _REASON_Q.search(_WHAT_END.sub("", q)):
        return "reason"
    return None


def asks_yes_no(question: str) -> bool:
    """Whether a question asks yes or no (…了吗, 是否…, 有没有…, 能否…)."""
    return bool(_YES_NO_Q.search(question))


def asked_verbs(question: str) -> list[str]:
    """For a yes/no question (…了吗, 是否…, 有没有…), the verbs it asks about, folded (再婚 of
    原告曹0后来再婚了吗？, 支付 of 张x1有没有支付抚养费？); [] for any other question."""
    if not _YES_NO_Q.search(question):
        return []
    t = aligned(question)
    return [comparable(t[a:b]) for a, b, flag in pos_tags(t)
            if flag in ("v", "vn") and b - a >= 2 and t[a:b] not in _AUXILIARY and not _YES_NO_Q.fullmatch(t[a:b])]


# --- values of a type, with exact offsets ------------------------------------------------------
NUM = r"(?:[0-9]+(?:[.,][0-9]+)*|[零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟]+)"
_MONEY = r"(?:美元|美金|港元|港币|欧元|英镑|日元|韩元|新台币|台币|澳元|加元|越南盾|卢布|卢比|法郎|马克|比索|泰铢|里拉|元|块钱|两白银|两银子|银两)"
# CAIL2019's judgments mask 万元 as if 万 were a surname (人民币5万某, 430.35万某): an amount too, after digits
_AMOUNT = re.compile(rf"(?:人民币)?(?<![A-Za-z0-9.,]){NUM}(?:余|多)?(?:万|亿|千)?{_MONEY}(?:整)?|"
                     r"(?:人民币)?(?<![A-Za-z0-9.,])[0-9]+(?:\.[0-9]+)?(?:余|多)?万某(?![某甲乙丙丁戊0-9])")
UNIT = ("平方公里|平方千米|平方米|平方英里|立方米|公顷|亩|公里|千米|公尺|公分|厘米|毫米|英尺|英里|海里|米|公斤|千克|克|吨|磅|" + _MONEY[3:-1]
         + "|个小时|个钟头|个星期|个工作日|周岁|岁|年代|年|个月|月|周|星期|天|日|小时|分钟|秒|人次|人|名|位|个|种|座|条|项|件|本|家|所|只|台|部|倍|%|‰|户|间|套|辆|层|届|场|首|"
           "篇|册|集|章|度|℃|枚|颗|株|棵|头|匹|支|艘|架|列|幅|张|份|次|期|版|级|分|票|岁|孔|栋|块|批|处|粒|盒|瓶|袋|箱|桶|斤|升|毫升|码")
# measurements in Latin or metric units, as reports write them: 191mg/100ml, 90毫克/100毫升, 2.5kg
_MEASURE = r"(?<![A-Za-z0-9.,])[0-9]+(?:\.[0-9]+)?(?:mg|ml|kg|km|cm|mm|g|毫克|毫升)(?:[/／][0-9]*(?:ml|毫升|L|升|kg|公斤|g))?(?![A-Za-z])"
# fractions and percentages in words: 五分之一, 百分之三十
SHARE_Q = re.compile(r"比例|百分|几成|占|分之|比率|利率|税率|率")  # a question a fraction (五分之一) answers
_FRACTION = r"[0-9零〇一二两三四五六七八九十百千]+分之[0-9零〇一二两三四五六七八九十.]+"
_NUMBER = re.compile(rf"{_MEASURE}|{_FRACTION}|(?:约|近|逾|超过|共|达|民国|公元前?|西元前?)?(?<![A-Za-z0-9.,]){NUM}(?:余|多)?(?:万|亿|千)?(?:{UNIT})|"
                     rf"(?<![A-Za-z0-9])[0-9]+\.[0-9]+|(?<![A-Za-z0-9])[0-9]+(?:,[0-9]{{3}})+|(?<![A-Za-z0-9.,])[0-9]{{4,}}(?![0-9])")
# 元年 is an era's first year (承光元年) only after an era name: never after a numeral or a currency word,
# where 元 is the currency (五十亿美元年增长, 一百万港元年利率, 三千欧元年底, 人民币元年终奖)
_NOT_ERA = "零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟余多美港欧日韩澳加台币金块"
_D = r"(?:[0-9]{1,4}|[零〇一二三四五六七八九十]{1,4})"
_DAY = r"(?:[0-9]{1,2}|[一二三四五六七八九十]{1,3})"
_DATE_ONE = (rf"(?:公元前?|西元前?|民国|[\u4e00-\u9fff]{{2}}(?=[0-9一二三四五六七八九十元]{{1,3}}年))?(?:(?:{_D}|(?<=[\u4e00-\u9fff]{{2}})(?<![{_NOT_ERA}])元|同|次|当|翌|是|该|本|去|前)年(?:代)?(?:初|底|末|间|春|夏|秋|冬)?)?"
             rf"(?:{_DAY}月(?:份)?(?:初|底|末|中旬|上旬|下旬|间)?(?:{_DAY}[日号]?)?|{_DAY}日)?"
             rf"(?:(?:凌晨|上午|中午|下午|晚上|晚)?[0-9]{{1,2}}[时点](?:[0-9]{{1,2}}分?)?许?)?")
_DATE = re.compile(rf"{_D}世纪(?:[0-9]{{2}}年代)?(?:初|末|中叶|中期)?|(?<![0-9万亿千百])[夏商周秦汉晋隋唐宋辽金元明清][朝代]|"
                   rf"[\u4e00-\u9fff]{{2,4}}时期|[上中下晚早]?[\u4e00-\u9fff]{{2}}纪(?:早期|中期|晚期|初期|末期)?|{_DATE_ONE}(?:(?:至|到|-|—|~|～|起至){_DATE_ONE})?")
_TITLE = re.compile(r"《[^》\n]{1,40}》")
_COUNTRIES = ("中国 美国 英国 法国 德国 日本 韩国 朝鲜 俄罗斯 苏联 意大利 西班牙 葡萄牙 荷兰 比利时 瑞士 瑞典 挪威 丹麦 芬兰 冰岛 爱尔兰 "
              "奥地利 匈牙利 波兰 捷克 希腊 土耳其 埃及 印度 巴基斯坦 伊朗 伊拉克 以色列 沙特 越南 泰国 缅甸 柬埔寨 老挝 新加坡 马来西亚 "
              "印度尼西亚 印尼 菲律宾 蒙古 澳大利亚 澳洲 新西兰 加拿大 墨西哥 巴西 阿根廷 智利 秘鲁 古巴 南非 普鲁士 拜占庭 罗马 "
              "苏格兰 英格兰 威尔士 乌克兰 白俄罗斯 罗马尼亚 保加利亚 塞尔维亚 克罗地亚 阿富汗 尼泊尔 不丹 孟加拉 斯里兰卡 哈萨克斯坦 "
              "乌兹别克斯坦 叙利亚 黎巴嫩 约旦 科威特 卡塔尔 阿联酋 也门 阿曼 利比亚 突尼斯 阿尔及利亚 摩洛哥 苏丹 埃塞俄比亚 肯尼亚 "
              "尼日利亚 加纳 刚果 安哥拉 委内瑞拉 哥伦比亚 厄瓜多尔 玻利维亚 乌拉圭 巴拉圭").split()
_COUNTRY_NAMED = re.compile("|".join(sorted(_COUNTRIES, key=len, reverse=True)))
_COUNTRY_OTHER = re.compile(r"[^\W由在到于从向和与及对把被为是的了中全外本各我两他邻敌該该此其][\u4e00-\u9fff]{0,3}?(?:帝国|王国|共和国|公国|联邦|国(?![家际内外王民道会务营产籍土]))")
# Names as court judgments mask them (张x6, 曹0, 刘1某, 王某甲), not followed by a unit (费800元 is no name).
_SURNAMES = ("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏"
             "钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹黎易常武乔贺赖龚文庞樊兰殷施陶洪翟安颜倪严牛"
             "温芦季俞章鲁葛伍韦申尤毕聂丛焦向柳邢路岳齐沿梅莫庄辛管祝左涂谷祁时舒耿牟卜詹关苗凌费纪靳盛童欧甄项曲成游阳裴席卫查屈鲍"
             "位覃霍翁隋植甘景薄单包司柏宁柯阮桂闵解强柴华车冉房边辜吉饶刁瞿戚丘古米池滕晋苑邬臧畅宫来嵺苟全褚廉简娄盖符奚木穆党燕郎邸"
             "冀谈姬屠连郜晏栾郁商蒙计喻揣冷訾寇应尚")
MASKED_NAME = re.compile(rf"[{_SURNAMES}](?:[xX×][0-9]{{1,3}}|[0-9]{{1,3}}某?|某[甲乙丙丁戊己庚辛某0-9]?)"
                         r"(?![0-9.:：/\-元万亿千百年月日号岁%个次人名位天件份米吨斤户间])")
_PLACE_SUFFIX = ("省 市 县 区 州 镇 乡 村 街道 路 街 巷 号 小学 中学 大学 学院 学校 幼儿园 医院 公园 广场 车站 机场 港 岛 群岛 列岛 山 山脉 河 江 湖 海 湾 半岛 "
                 "盆地 高原 平原 沙漠 洲 大道 社区 小区 公司 法院 酒店 宾馆 大厦 门口 寺 宫 城 峡 湖泊 流域 地区").split()
_PLACE_END = re.compile("(?:" + "|".join(sorted(_PLACE_SUFFIX, key=len, reverse=True)) + ")$")
_PLACE_AFTER = re.compile(r"(?:位于|坐落于|坐落在|地处|出生于|生于|来自|发源于|总部设于|总部设在|总部位于|设于|迁至|迁往|迁到|搬到|前往|"
                          r"居住在|居住于|住在|家住|在位于)([^，,。；;！？、（(]{2,30})")
DOTTED_NAME = re.compile(r"[\u4e00-\u9fff]{1,6}(?:[·・][\u4e00-\u9fff]{1,8})+")
REASON = re.compile(r"(?:因为|由于|因|为了|是为|以便|出于)[^，,；;。！？]*")
# A clause stating a cause (services.answers.extractive, for 为什么/因何 questions): "因/由于/鉴于 …" to the end
# of its clause — not 因此/因而 (a consequence), 基因, 原因 — "原因是 …", and a clause with the cause before
# 导致/致使/造成/以致 (or a clause ending …所致, …的结果) or one saying a marriage broke down (感情破裂, 感情不和: the cause judgments give for a divorce).
_CAUSE_BEFORE = re.compile(r"(?:因为|由于|鉴于|基于|出于|为了|是为|以便|(?<![基原诱起成主死病近远])因(?![此而果素子]))[^，,；;。！？]*")
_CAUSE_AFTER = re.compile(r"原因(?:是|在于|为|系|乃)[^，,；;。！？]*|以[^，,；;。！？]{2,30}?为由")
_CAUSE_IN_CLAUSE = re.compile(r"导致|致使|造成|以致|引起|引发|所致|的结果|的缘故|之故|感情(?:确已|已经|已)?(?:破裂|不和)")
_REASON_HINT = re.compile(r"因为|由于|因此|所以|故|得名|导致|原因|以便|为了|因")

# Who a child lives with or is raised by (那孩子跟谁生活？, 孩子由谁抚养？): the answer is often a party's role or a
# relative (原告, 其母, 母亲曹0), which no name pattern finds. `carer_spans` finds the carer of each clause stating
# the arrangement: 随/跟/和/与/同 Y (一起)生活/居住, 由/归 Y 抚养/监护/照顾/代管…, Y 抚养 (a role only, not 抚养费).
_CARER_Q = re.compile(r"(?:随|跟随?|和|与|同)谁(?:一起|共同)?(?:生活|居住|住|过|长大)|(?:由|归|跟)?谁(?:来|直接|负责)?"
                      r"(?:抚养|抚育|监护|照顾|照看|带|扶养|养育)(?!费)|(?:抚养|监护)(?:权|人)?(?:归|是|为)?谁")
_CARER_ROLE = (r"(?:其)?(?:原告|被告|申请人|被申请人|上诉人|被上诉人|男方|女方|生母|生父|母亲|父亲|其母|其父|妈妈|爸爸|"
               r"外祖父母|外祖母|外祖父|祖父母|祖母|祖父|爷爷|奶奶|姥姥|姥爷|外婆|外公|父母|双方)")
# CAIL2019 masks names as a character and x + digits; the character need not be a known surname (女方别x2)
_X_NAME = r"[\u4e00-\u9fff][xX×][0-9]{1,3}"
_CARER = rf"(?:{_CARER_ROLE}(?:{MASKED_NAME.pattern}|{_X_NAME})?|{MASKED_NAME.pattern}|{_X_NAME})"
_CARER_LIVES = re.compile(rf"(?:随|跟随?|和|与|同)({_CARER}|[\u4e00-\u9fff]{{2,4}}?)(?:一起|共同)?(?:生活|居住|长大)")
_CARER_RAISES = re.compile(rf"(?:由|归)({_CARER}|[\u4e00-\u9fff]{{2,4}}?)(?:直接|继续|暂时|一方|负责)?"
                           r"(?:抚养|抚育|监护|照顾|照看|代管|带养|看护|扶养|养育)(?!费)")
_CARER_SUBJECT = re.compile(rf"({_CARER_ROLE}(?:{MASKED_NAME.pattern})?)(?:直接|继续|一直|独自)?(?:抚养|抚育|监护|扶养|养育)(?!费|义务|能力|条件|关系)")


# a change or wish a party asks for is no arrangement that holds (请求依法变更小孩马62由原告抚养, 提出与原告一起生活为由)
_CARER_REQUESTED = re.compile(r"请求|要求|诉请|诉求|申请|提出|请判|主张")
_CLAUSE_MARKS = "，,；;。！？!?：:\n"


def _clause_start(text: str, i: int) -> int:
    """Where the clause holding text[i] starts (after the last ，；。：… before it)."""
    return max(text.rfind(ch, 0, i) for ch in _CLAUSE_MARKS) + 1


def asks_carer(question: str) -> bool:
    """Whether a 谁 question asks who someone lives with or is raised by (那孩子跟谁生活？, 孩子由谁抚养？)."""
    return bool(_CARER_Q.search(comparable(question)))


def carer_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of the carers `text` names in a clause stating a living arrangement (张x6一直随原告生活至今 ->
    原告, 暂由原告代管 -> 原告, 愿意随母亲曹0生活 -> 母亲曹0): a party's role, a relative or a name."""
    t = aligned(text)
    spans = [m.span(1) for pattern in (_CARER_LIVES, _CARER_RAISES, _CARER_SUBJECT) for m in pattern.finditer(t)
             if not _CARER_REQUESTED.search(t, _clause_start(t, m.start()), m.start())]
    return merge_spans([(a + 1 if t[a] == "其" and b - a > 2 else a, b) for a, b in spans])  # 其外婆 -> 外婆; 其母 stays


# 由谁 + verb (乍都节公园是由谁捐献土地建造出来的？, 由谁设计): the agent the text names right after 由 before that verb
# (1975年由泰国国家铁路局捐献土地…) — an organisation answers a 谁 question too, which no name pattern finds
_AGENT_Q = re.compile(r"由谁(?:来|所|负责|亲自|主持|出资)?([\u4e00-\u9fff]{2})")
_AGENT_FILLER = r"(?:来|所|负责|亲自|主持|出资|共同|联合|独自)?"


def asked_agent(question: str) -> str:
    """The verb of a "由谁 V" question (捐献 of 是由谁捐献土地建造出来的？), folded; "" for any other question."""
    m = _AGENT_Q.search(comparable(question))
    return m.group(1) if m else ""


def agent_spans(text: str, verb: str) -> list[tuple[int, int]]:
    """[start, end) of the agents `text` names as 由 X (来/所/负责…) `verb` (由泰国国家铁路局捐献 -> 泰国国家铁路局)."""
    if not verb:
        return []
    t = aligned(text)
    return [m.span(1) for m in re.finditer(rf"由([^由，,；;。！？!?：:、\s（）()“”\"]{{2,15}}?){_AGENT_FILLER}{re.escape(verb)}", t)]


# 什么时期 / 哪个时代 asks for a period's name (日本战国时代至安土桃山时代, 日治时期), not a date (a lifespan)
_PERIOD_Q = re.compile(r"(?:什么|哪一?个?|何)(?:时期|时代|朝代)")
_PERIOD = re.compile(r"[\u4e00-\u9fff]{2,8}?(?:时代|时期)(?:(?:至|到|和|与|、|及)[\u4e00-\u9fff]{2,8}?(?:时代|时期))?")
_PERIOD_LEAD_CHARS = "是在于为的从自即到它他她其该此这"


def asks_period(question: str) -> bool:
    """Whether a date question asks for a period's name (松平康忠是什么时期的武将？)."""
    return bool(_PERIOD_Q.search(comparable(question)))


def period_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of the periods `text` names (…是日本战国时代至安土桃山时代的武将 -> 日本战国时代至安土桃山时代)."""
    t = aligned(text)
    out = []
    for m in _PERIOD.finditer(t):
        name_end = re.search(r"时代|时期", t[m.start():m.end()]).start() + m.start()
        # the name starts after the last function word before it (它是|战国时期, 于|江户时代)
        a = max([m.start()] + [i + 1 for i in range(m.start(), name_end - 2) if t[i] in _PERIOD_LEAD_CHARS])
        if m.end() - a >= 4:
            out.append((a, m.end()))
    return out


def cause_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of the pieces of `text` that state a cause: "因/由于 …" and "原因是 …" to the end of their
    clause, "以 … 为由", and the whole clause around 导致/致使/感情破裂 (clauses end at ，,；;。！？ and line breaks)."""
    t = aligned(text)
    spans = [m.span() for m in _CAUSE_BEFORE.finditer(t)] + [m.span() for m in _CAUSE_AFTER.finditer(t)]
    for m in _CAUSE_IN_CLAUSE.finditer(t):
        a = max((i + 1 for i in range(m.start()) if t[i] in "，,；;。！？!?\n"), default=0)
        b = next((i for i in range(m.end(), len(t)) if t[i] in "，,；;。！？!?\n"), len(t))
        spans.append((a, b))
    return merge_spans([(a, b) for a, b in spans if b - a >= 3])


# "X代表什么？" / "X表示什么" / "X指的是什么" / "X是什么意思": the question asks what X stands for or means, and a text
# says it right after X (其中𝑄代表放出或吸收的热量, ↑代表此生成物为气体, SMILES是指…)
_MEANING_VERB = r"(?:所)?(?:代表|表示|是指|指的是|指|意为|意思是|意指|意即)"
_MEANING_Q = re.compile(_MEANING_VERB + r"(?:了|着)?(?:的是)?(?:什么|甚么|啥|何)(?:意思|含义|意义)?[？?。！!\s]*$"
                        r"|(?:是|有)(?:什么|甚么|啥)(?:意思|含义)[？?。！!\s]*$|的(?:意思|含义)是?(?:什么|甚么|啥)[？?。！!\s]*$")
# where the asked term starts: after the last of these words before it (热化学方程式 | 中 | Q, 路易斯结构中的 | 点)
_MEANING_CUT = frozenset("中 里 内 上 的 之 里面 当中 之中 ， , 、 ： : 。 ！ ？ ! ? ； ;".split())
_MEANING_QUOTES = "「」『』“”\"'‘’《》〈〉()（）[]【】 \t"
_MEANING_STATED = re.compile(r"[”\"’」』]?\s?" + _MEANING_VERB + r"(?:的是|着)?\s?[：:]?\s?")
_MEANING_END = "，,；;。！？!?\n"
MEANING_MAX = 60  # characters at most of a stated meaning (longer: not a gloss, the clause is marked as before)


def asked_meaning(question: str) -> str:
    """The term a question asks the meaning of (`_MEANING_Q`: X代表什么？, X是什么意思？), folded (`comparable`:
    the plain Q of 热化学方程式中Q代表什么？ is the PDF's math italic 𝑄), or "" for any other question. The term is
    the words before the asking verb back to a place or possessive word (中, 里, 的…) or the question's start."""
    q = aligned(question.strip())
    m = _MEANING_Q.search(q)
    if m is None:
        return ""
    head = q[:m.start()]
    if head.endswith("的") and not m.group().startswith("的"):
        head = head[:-1]  # 现金流量表所代表的 → 现金流量表
    tags = pos_tags(head)
    cut = max((b for a, b, _f in tags if head[a:b] in _MEANING_CUT and b < len(head)), default=0)
    term = comparable(head[cut:]).strip(_MEANING_QUOTES)
    if not term or len(term) > 16 or _OTHER_WH.search(term):
        return ""
    return term


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def meaning_spans(text: str, term: str) -> list[tuple[int, int]]:
    """[start, end) of what `text` says `term` (folded, `asked_meaning`) stands for: the words right after "term
    代表 / 表示 / 是指 / 意为 …" to the end of their clause (其中𝑄代表|放出或吸收的热量（焓变）|。), brackets kept whole; at
    most MEANING_MAX characters. A letter inside a word (the q of equation) or a term followed by more of an
    expression (𝑄<0) is no occurrence. Offsets are exact in `text` (the folding maps each character back)."""
    out = []
    t = aligned(text)
    for s, e, _term in term_matches(text, [term]):
        if _ascii_word(term[0]) and s > 0 and _ascii_word(unicodedata.normalize("NFKC", text[s - 1])[-1:]) \
                or _ascii_word(term[-1]) and e < len(text) and _ascii_word(unicodedata.normalize("NFKC", text[e])[:1]):
            continue
        m = _MEANING_STATED.match(t, e)
        if m is None:
            continue
        a, depth, b, long = m.end(), 0, m.end(), False
        while b < len(t) and not (depth == 0 and t[b] in _MEANING_END):
            if b - a >= MEANING_MAX and not t[b].isspace():  # longer than a gloss: stop (scanning on was quadratic)
                long = True
                break
            depth += 1 if t[b] in "（(《“「[【" else -1 if t[b] in "）)》”」]】" and depth > 0 else 0
            b += 1
        while b > a and t[b - 1].isspace():
            b -= 1
        if not long and 0 < b - a <= MEANING_MAX:
            out.append((a, b))
    return out


def aligned(text: str) -> str:
    """`text` folded for matching (NFKC, simplified) when that keeps every offset, else `text` itself."""
    folded = to_simplified(unicodedata.normalize("NFKC", text))
    return folded if len(folded) == len(text) else text


def pos_tags(text: str) -> list[tuple[int, int, str]]:
    """(start, end, part of speech) of the words of `text` (rjieba, else jieba.posseg)."""
    out, pos = [], 0
    for word, flag in _tagger()(text):
        a = text.find(word, pos)
        if a < 0:
            continue
        out.append((a, a + len(word), flag))
        pos = a + len(word)
    return out


_TAGGER = None


def _tagger():
    global _TAGGER
    if _TAGGER is None:
        try:
            import rjieba

            jieba = rjieba.Jieba()
            _TAGGER = jieba.tag
        except ImportError:  # pragma: no cover - rjieba ships with the app
            import jieba.posseg

            _TAGGER = lambda text: [(w.word, w.flag) for w in jieba.posseg.cut(text)]  # noqa: E731
    return _TAGGER


def _runs(tags, keep) -> list[tuple[int, int]]:
    """Maximal runs of adjacent words whose tag (start, end, flag, index) satisfies `keep`."""
    runs: list[tuple[int, int]] = []
    for i, t in enumerate(tags):
        if keep(t, i):
            if runs and runs[-1][1] == t[0]:
                runs[-1] = (runs[-1][0], t[1])
            else:
                runs.append((t[0], t[1]))
    return runs


def typed_values(kind: str | None, text: str) -> list[tuple[int, int]]:
    """[start, end) spans of `text` holding a value of the type (cheap patterns and jieba's parts of
    speech, no NER model); [] for untyped questions."""
    if kind not in TYPED and kind != "reason":
        return []
    t = aligned(text)
    if kind == "amount":
        spans = [m.span() for m in _AMOUNT.finditer(t)]
        return _ranges(t, spans or [m.span() for m in _NUMBER.finditer(t) if not re.search(r"[年月日时]$", m.group())])
    if kind == "number":
        return _ranges(t, [m.span() for m in _NUMBER.finditer(t)] + [m.span() for m in _AMOUNT.finditer(t)])
    if kind == "date":
        spans = []
        for m in _DATE.finditer(t):
            a = m.start() + len(m.group()) - len(m.group().lstrip("至到-—~～起"))
            if m.end() - a >= 2 and re.search(rf"[0-9零〇一二三四五六七八九十世朝代]|[\u4e00-\u9fff]{{2}}(?<![{_NOT_ERA}])元年", t[a:m.end()]) \
                    and not t.startswith("级", m.end()) and not (t[a:m.end()].isdigit() or t[m.end() - 1] in "号日" and t[m.end():m.end() + 1] in ("楼", "院")):
                spans.append((a, m.end()))
        return _whole_dates(t, spans)
    if kind == "title":
        return [m.span() for m in _TITLE.finditer(t)]
    if kind == "country":
        named = [_mainland(t, *m.span()) for m in _COUNTRY_NAMED.finditer(t)]
        return sorted(named + [m.span() for m in _COUNTRY_OTHER.finditer(t)
                               if not any(a < m.end() and m.start() < b for a, b in named)])
    if kind == "reason":
        return [m.span() for m in REASON.finditer(t) if m.end() - m.start() >= 3]
    tags = pos_tags(t)
    if kind == "person":
        names = [m.span() for m in MASKED_NAME.finditer(t)]
        names += _whole_names(t, tags, _runs(tags, lambda w, i: _name_word(t, tags, i)))
        names += [m.span() for m in DOTTED_NAME.finditer(t)]
        return merge_spans(names)
    # place: runs of place names and words ending with a place suffix (荣昌县 城西 小学), or a lone ns
    def placeish(w, i):
        word = t[w[0]:w[1]]
        return w[2] in ("ns", "nt") or bool(_PLACE_END.search(word)) and w[2] not in ("v", "vn", "d", "r", "p", "uj")

    runs = [_mainland(t, a, b) for a, b in _whole_places(t, tags, _runs(tags, placeish)) if b - a >= 2]
    anchored = [m.span(1) for m in _PLACE_AFTER.finditer(t)]
    return sorted(anchored + [r for r in runs if not any(a <= r[0] and r[1] <= b for a, b in anchored)])


_NAME_TAGS = frozenset({"nr", "nrt", "nrfg"})
_NOT_IN_NAME = frozenset("的之是在于和与及或跟同把被将对为从向也都亦又还并而曾已就即乃等了着过年月日")
_HONORIFIC = re.compile(r"女士|先生|小姐|夫人")
_EMPEROR = re.compile(r"[帝王宗祖]$")


def _cjk(word: str) -> bool:
    return bool(word) and all("\u4e00" <= ch <= "\u9fff" for ch in word)


def _name_word(t: str, tags, i: int) -> bool:
    """Whether word i is (part of) a person's name: a name jieba tags (nr, nrt, nrfg) of two or more
    characters, or of one beside another (姚 + 里氏), or a word jieba does not know (x) of 2-4 Chinese
    characters opening with a surname (袁丽嫦, 黄霑)."""
    a, b, flag = tags[i]
    if flag in _NAME_TAGS:
        return b - a >= 2 or any(0 <= j < len(tags) and tags[j][2] in _NAME_TAGS and tags[j][1] - tags[j][0] >= 2
                                 and (tags[j][1] == a or tags[j][0] == b) for j in (i - 1, i + 1))
    return flag == "x" and 2 <= b - a <= 4 and _cjk(t[a:b]) and t[a] in _SURNAMES


def _whole_names(t: str, tags, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Name runs widened to the whole name where jieba cuts it: the surname it glued to the word before
    (制作人伍 + 宗德 -> 伍宗德), the given name's last character it left apart (杜宇 + 麒 -> 杜宇麒), an
    emperor's name with its temple-name character and personal name (孝 + 昭帝 + 高演 -> 孝昭帝高演), and a
    title of address after it (阮爱馨 + 女士)."""
    by_start = {w[0]: k for k, w in enumerate(tags)}
    by_end = {w[1]: k for k, w in enumerate(tags)}
    out = []
    for a, b in runs:
        i, j = by_start.get(a), by_end.get(b)
        if i is None or j is None:
            out.append((a, b))
            continue
        if b - a == 2 and i > 0 and tags[i - 1][1] == a and t[a - 1] in _SURNAMES and tags[i - 1][1] - tags[i - 1][0] >= 2 \
                and tags[i - 1][2] in ("n", "nr", "ng", "vn") and t[a - 2] not in _SURNAMES:
            a -= 1  # 制作人伍 | 宗德
        if _EMPEROR.search(t[a:b]):
            if i > 0 and tags[i - 1][1] == a and tags[i - 1][1] - tags[i - 1][0] == 1 and _cjk(t[a - 1]) \
                    and t[a - 1] not in _NOT_IN_NAME and tags[i - 1][2] in ("ng", "n", "a", "nr"):
                a -= 1  # 孝 | 昭帝
            if j + 1 < len(tags) and tags[j + 1][0] == b and 2 <= tags[j + 1][1] - b <= 3 and t[b] in _SURNAMES \
                    and _cjk(t[b:tags[j + 1][1]]):
                j += 1
                b = tags[j][1]  # 昭帝 | 高演
        elif b - a == 2 and j + 1 < len(tags) and tags[j + 1][0] == b and tags[j + 1][1] - b == 1 \
                and tags[j + 1][2] in ("n", "ng", "nr") and _cjk(t[b]) and t[b] not in _NOT_IN_NAME \
                and (tags[j + 1][1] >= len(t) or not _cjk(t[tags[j + 1][1]]) or t[tags[j + 1][1]] in _NOT_IN_NAME):
            b += 1  # 杜宇 | 麒 （
        m = _HONORIFIC.match(t, b)
        if m:
            b = m.end()
        out.append((a, b))
    return out


_RANGE_JOIN = re.compile(r"\s*(?:至|到|~|～|-|－|–|—|―)\s*")
_RANGE_FROM = re.compile(rf"(?<![A-Za-z0-9.,]){NUM}\s*(?:至|到|~|～|-|－|–|—|―)\s*$")


def _ranges(t: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Number spans joined into the range they are the ends of (50米至1,520米, 10-20万元), the bare number
    before a range's end included (2-4厘米, 三至五年)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(set(spans)):
        if out and a < out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
            continue
        if out and _RANGE_JOIN.fullmatch(t, out[-1][1], a):
            out[-1] = (out[-1][0], b)
            continue
        m = _RANGE_FROM.search(t, max(0, a - 16), a)
        if m and not (out and out[-1][1] > m.start()) and not t[a:b].startswith(("约", "近", "逾", "超过", "共", "达")):
            a = m.start()
        out.append((a, b))
    return out


_DATE_GLOSS = re.compile(r"\s*[（(]")
_DATE_GLOSS_END = re.compile(r"[）)]")
_DATE_AFTER = re.compile(r"以后|以前|之后|之前|以来")


def _whole_dates(t: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Date spans joined into the whole date expression: a year with the same year of another calendar in
    brackets, and the month and day after them (永禄5年 （1562年）, 正德五年（1510年）十月, 1993年（民国82年）1月24日);
    a decade or year with 以后/以前 (1990年代以后)."""
    out: list[tuple[int, int]] = []
    k = 0
    while k < len(spans):
        a, b = spans[k]
        gloss = _DATE_GLOSS.match(t, b)
        if gloss and k + 1 < len(spans) and spans[k + 1][0] == gloss.end() and re.search(r"年$", t[a:b]) \
                and (close := _DATE_GLOSS_END.match(t, spans[k + 1][1])) is not None:
            b, k = close.end(), k + 1
            if k + 1 < len(spans) and spans[k + 1][0] == b:
                b, k = spans[k + 1][1], k + 1  # …（1510年）十月
        after = _DATE_AFTER.match(t, b)
        if after and re.search(r"年代?$", t[a:b]):
            b = after.end()
        out.append((a, b))
        k += 1
    return out


def _mainland(t: str, a: int, b: int) -> tuple[int, int]:
    """A country or place with the part of it that follows (中国 + 大陆, 日本 + 本土): the whole region named."""
    m = re.compile(r"大陆|本土|内地|本岛").match(t, b)
    return (a, m.end()) if m else (a, b)


# The whole name of a place or an institution, where jieba splits it: a name it took for a person's before
# a bare administrative suffix (阳朔/nr + 镇 + 中心小学), and the modifiers between a place and the
# institution after it (中关村 + 第一 + 小学, 永川区 + 实验 + 小学, 雨花区 + 人民 + 医院).
_ADMIN_SUFFIX = frozenset("省市县区州镇乡村")
_NAME_BEFORE_SUFFIX = frozenset({"nr", "nrt", "nrfg", "ns", "nz", "j", "n"})
_PLACE_BRIDGE = frozenset({"m", "mq", "vn", "n", "nz", "j", "a", "b", "nr", "ns", "nt", "nrt"})
_PLACE_BRIDGE_CHARS = 4


def _whole_places(t: str, tags, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Place runs (services: typed_values) widened to the whole name: a run that starts with a bare
    administrative suffix (镇) takes the name before it, and runs joined only by a few modifier words
    (第一, 实验, 人民) become one — 阳朔镇中心小学, not 镇中心小学."""
    by_start = {a: i for i, (a, _b, _f) in enumerate(tags)}
    widened = []
    for a, b in runs:
        i = by_start.get(a)
        if i is not None and i > 0 and t[a:tags[i][1]] in _ADMIN_SUFFIX:
            pa, pb, flag = tags[i - 1]
            if pb == a and flag in _NAME_BEFORE_SUFFIX and pb - pa >= 2 and not MASKED_NAME.fullmatch(t[pa:pb]):
                a = pa
        widened.append((a, b))
    out: list[tuple[int, int]] = []
    for a, b in widened:
        if out:
            gap = [w for w in tags if out[-1][1] <= w[0] and w[1] <= a]
            if (0 < a - out[-1][1] <= _PLACE_BRIDGE_CHARS and gap and gap[0][0] == out[-1][1] and gap[-1][1] == a
                    and all(w[2] in _PLACE_BRIDGE for w in gap)):
                out[-1] = (out[-1][0], b)
                continue
        out.append((a, b))
    return out


_ENTITY_TAGS = frozenset({"nr", "nrt", "nrfg", "ns", "nt", "nz", "j"})
_ATTACHED_TAGS = frozenset({"n", "ng", "eng"})


def entity_spans(text: str, kinds: frozenset | None = None) -> list[tuple[int, int]]:
    """[start, end) of the names in `text` — people, places, organisations, works (jieba's parts of
    speech), masked names of court judgments (张x6, 曹0, 王某甲) and 《titles》 — each with the nouns
    attached to it (京沪 + 高铁 = 京沪高铁, 马 + 祖列岛). `kinds`: only these tags ("masked" for
    masked names and titles)."""
    t = aligned(text)
    tags = pos_tags(t)
    wanted = _ENTITY_TAGS if kinds is None else _ENTITY_TAGS & kinds
    spans = [m.span() for m in MASKED_NAME.finditer(t)] + [m.span() for m in _TITLE.finditer(t)] \
        if kinds is None or "masked" in kinds else []
    i = 0
    while i < len(tags):
        a, b, flag = tags[i]
        if flag in wanted and (b - a >= 2 or i + 1 < len(tags) and tags[i + 1][2] in _ENTITY_TAGS):
            j = i
            while j + 1 < len(tags) and tags[j + 1][0] == tags[j][1] and tags[j + 1][1] - a <= 10 and (
                    tags[j + 1][2] in _ENTITY_TAGS or tags[j][2] == "j" and tags[j + 1][2] in _ATTACHED_TAGS):
                j += 1  # 京沪 (an abbreviation) + 高铁; names next to names
            if i > 0 and tags[i - 1][2] in ("n", "ng") and tags[i - 1][1] - tags[i - 1][0] == 1 and tags[i - 1][1] == a:
                a = tags[i - 1][0]
            spans.append((a, tags[j][1]))
            i = j + 1
        else:
            i += 1
    return merge_spans(spans)


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def has_type(kind: str | None, sentence: str) -> bool:
    """Whether a sentence holds a value of the expected type."""
    if kind == "reason":
        return bool(_REASON_HINT.search(sentence))
    return bool(typed_values(kind, sentence))


# --- Chinese and Arabic numerals --------------------------------------------------------------
CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2} | \
    {c: i + 1 for i, c in enumerate("壹贰叁肆伍陆柒捌玖")}
CN_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
CN_BIG = {"万": 10 ** 4, "亿": 10 ** 8}


def numeral_value(text: str) -> float | None:
    """The number a numeral stands for: 50,000 / 3.5 / 5万 / 四千二百 / 十五 / 三万 / 伍万, and a run of
    digits read digit by digit (二〇〇一 -> 2001, as years are written); None if it is not one."""
    if re.fullmatch(r"[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?", text):
        return float(text.replace(",", ""))
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([万亿千])", text)
    if m:
        return float(m.group(1)) * {"万": 10 ** 4, "亿": 10 ** 8, "千": 1000}[m.group(2)]
    if not text or any(ch not in CN_DIGITS and ch not in CN_UNITS and ch not in CN_BIG for ch in text):
        return None
    if len(text) > 1 and all(ch in CN_DIGITS for ch in text):
        return float("".join(str(CN_DIGITS[ch]) for ch in text))
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in CN_DIGITS:
            digit = CN_DIGITS[ch]
        elif ch in CN_UNITS:
            section += (1 if digit is None else digit) * CN_UNITS[ch]
            digit = None
        else:  # 万 / 亿 scale what came before (alone: one of them)
            total = (total + section + (digit or 0)) * CN_BIG[ch] if (total or section or digit) else CN_BIG[ch]
            section, digit = 0, None
    return float(total + section + (digit or 0))
