"""Every format and every typed error, with generated fixtures."""
import pytest

from fixtures import ZH_PARAGRAPHS, make_docx, make_pdf, make_zip_bomb_docx
from services import errors
from services.documents.parsing import decode_text, parse

TEXT = "第一章 总则\n" + "".join(ZH_PARAGRAPHS)
TRADITIONAL = "臺灣是一個位於東亞的島嶼，這裡的人們說國語與臺灣話。馬祖列島距離中國大陸最近點約九公里。"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "gbk", "gb18030"])
def test_text_encodings_decode_exactly(encoding):
    doc = parse(TEXT.encode(encoding), "a.txt")
    assert doc.text == TEXT


def test_big5_traditional_chinese():
    doc = parse(TRADITIONAL.encode("big5"), "tw.txt")
    assert doc.text == TRADITIONAL
    assert doc.encoding == "big5"


def test_undecodable_bytes_never_crash():
    data = "正常的文字。".encode("utf-8") + bytes([0xFF, 0xFE, 0x81, 0x00, 0xC3]) + "后面".encode("gbk")
    text, _ = decode_text(data)
    assert isinstance(text, str) and text


@pytest.mark.parametrize("name", ["notes.md", "table.csv"])
def test_markdown_and_csv_are_text(name):
    assert parse("# 标题\n城市,人口\n北京,2189万".encode(), name).text.startswith("# 标题")


def test_html_visible_text_only():
    html = ("<html><head><title>t</title><style>body{color:red}</style></head><body><h1>标题</h1>"
            "<script>alert('坏')</script><p>正文内容。</p><!-- 注释 --><noscript>无</noscript></body></html>")
    doc = parse(html.encode("utf-8"), "page.html")
    assert "标题" in doc.text and "正文内容。" in doc.text
    assert "alert" not in doc.text and "color" not in doc.text and "注释" not in doc.text


def test_pdf_pages_and_page_numbers():
    doc = parse(make_pdf(["第一页" + ZH_PARAGRAPHS[0], "第二页" + ZH_PARAGRAPHS[1]]), "a.pdf")
    assert [p.page for p in doc.pages] == [1, 2]
    assert "长江" in doc.text[doc.pages[0].start:doc.pages[0].end]
    assert "黄河" in doc.text[doc.pages[1].start:doc.pages[1].end]
    assert doc.page_at(doc.pages[1].start + 3) == 2


def test_pdf_textless_page_is_reported_not_indexed():
    doc = parse(make_pdf([ZH_PARAGRAPHS[0], "", ZH_PARAGRAPHS[1]]), "scan.pdf")
    assert doc.skipped_pages == [2]
    assert [p.page for p in doc.pages] == [1, 3]
    assert "2" in doc.warnings[0]


def test_pdf_without_any_text():
    with pytest.raises(errors.NoExtractableText):
        parse(make_pdf(["", ""]), "scan.pdf")


def test_pdf_kangxi_radicals_are_folded():
    from services.documents.text import fold_chars

    assert fold_chars("⽤⽂⻓度") == "用文长度"


def test_encrypted_pdf():
    with pytest.raises(errors.EncryptedPDF) as exc:
        parse(make_pdf([ZH_PARAGRAPHS[0]], encrypt_password="secret"), "locked.pdf")
    assert "加密" in exc.value.message_zh


def test_pdf_encrypted_with_empty_user_password_opens():
    doc = parse(make_pdf([ZH_PARAGRAPHS[0]], encrypt_password=""), "open.pdf")
    assert "长江" in doc.text


@pytest.mark.parametrize("data", [b"%PDF-1.7\n garbage", make_pdf(["长江"])[:200], b"\x00\x01\x02" * 10])
def test_corrupt_pdf(data):
    with pytest.raises((errors.CorruptFile, errors.NoExtractableText, errors.EmptyDocument)):
        parse(data, "broken.pdf")


def test_docx_headings_paragraphs_tables_in_order():
    doc = parse(make_docx(), "a.docx")
    lines = doc.text.split("\n")
    assert lines[0] == "第一章 总则"
    assert "北京 | 2189万" in lines
    assert lines.index("北京 | 2189万") < lines.index("表格之后的段落。")


def test_corrupt_docx():
    with pytest.raises(errors.CorruptFile):
        parse(b"PK\x03\x04 not really a zip", "bad.docx")


def test_zip_bomb_docx_refused():
    with pytest.raises(errors.FileTooLarge):
        parse(make_zip_bomb_docx(), "bomb.docx")


def test_unsupported_type():
    with pytest.raises(errors.UnsupportedFileType) as exc:
        parse(b"MZ...", "virus.exe")
    assert ".exe" in exc.value.message_zh


@pytest.mark.parametrize("data", [b"", b"   \n\n  "])
def test_empty_document(data):
    with pytest.raises(errors.EmptyDocument):
        parse(data, "empty.txt")


def test_too_large(monkeypatch):
    monkeypatch.setenv("WENDAO_MAX_FILE_MB", "0.001")
    with pytest.raises(errors.FileTooLarge):
        parse(("长" * 2000).encode(), "big.txt")


def test_errors_have_chinese_messages():
    for cls in (errors.UnsupportedFileType, errors.EmptyDocument, errors.EncryptedPDF, errors.CorruptFile,
                errors.FileTooLarge, errors.NoExtractableText):
        assert any("\u4e00" <= ch <= "\u9fff" for ch in cls().message_zh)


def test_pdf_layout_line_wraps_are_joined_but_headings_kept():
    long = ZH_PARAGRAPHS[0] + ZH_PARAGRAPHS[1]  # wraps over several 35-character lines
    doc = parse(make_pdf(["第一章 总则\n" + long]), "wrapped.pdf")
    assert ZH_PARAGRAPHS[0] in doc.text and ZH_PARAGRAPHS[1] in doc.text  # no newline inside sentences
    assert doc.text.startswith("第一章 总则\n")


def test_join_wrapped_lines_rules():
    from services.documents.text import join_wrapped_lines

    text = "标题\n" + "很长的一行文字没有结束标点继续" * 2 + "\n下一行接着写完。\n" + "这一行以句号结束了呀呀呀呀呀呀呀呀呀呀呀呀呀。\n新段落"
    out = join_wrapped_lines(text)
    assert out.startswith("标题\n") and "继续下一行接着写完。" in out and "。\n新段落" in out
    english = "The quick brown fox jumps over\nthe lazy dog and keeps running\nfar away."
    assert join_wrapped_lines(english) == "The quick brown fox jumps over the lazy dog and keeps running far away."


def _table_pdf(rows) -> bytes:
    """A reportlab table (the layout that pypdf + line joining glued across rows)."""
    import io

    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import SimpleDocTemplate, Table

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    SimpleDocTemplate(buf).build([Table(rows, style=[("FONT", (0, 0), (-1, -1), "STSong-Light", 11)])])
    return buf.getvalue()


@pytest.mark.parametrize("rows", [
    [["城市", "简介"], ["北京", "首都，政治文化中心"], ["上海", "经济中心"], ["广州", "华南门户城市"]],
    [["年份", "收入（亿元）", "增长"], ["2019年", "1,234.5", "3.2%"], ["2020年", "1,301.7", "5.4%"]],
])
def test_pdf_table_rows_are_not_glued_together(rows):
    doc = parse(_table_pdf(rows), "table.pdf")
    assert "首都，政治文化中心上海" not in doc.text and "3.2%2020年" not in doc.text
    lines = [tuple(line.split()) for line in doc.text.split("\n")]
    assert lines == [tuple(row) for row in rows], doc.text


def test_title_gap_on_a_paragraph_line_does_not_stop_joining():
    from services.documents.text import join_wrapped_lines

    text = ("明圣王后 金氏本贯清风。清风府院君金佑明和德恩府夫人宋氏之长女，朝鲜王\n"
            "朝第18代君主显宗的王妃，第19代君主肃宗的母亲。朝鲜仁祖二十年五月十七日\n"
            "金氏生于长通坊私第。孝宗二年被封为世子嫔，与世子李棩行嘉礼于于义洞。")
    assert "朝鲜王朝第18代君主显宗的王妃" in join_wrapped_lines(text)


def test_pdf_wrap_inside_a_number_or_latin_word_adds_no_space():
    # make_pdf wraps every 35 characters: "20|07" and "Pyt|hon" straddle line ends.
    text = "甲" * 33 + "2007年成立的公司" + "乙" * 24 + "Python语言写的程序" + "丙" * 30 + "。"
    assert text.index("2007") == 33 and text.index("Python") == 67
    doc = parse(make_pdf([text]), "wrap.pdf")
    assert "2007年" in doc.text and "Python语言" in doc.text, doc.text
    assert doc.text == text


def test_join_wrapped_lines_never_spaces_inside_cjk_lines():
    from services.documents.text import join_wrapped_lines

    text = ("公司成立于二零零七年也就是公元200\n7年，当时只有三个人在一间小屋里面工作写代\n码，后来我们大家一起开会决定使用Pyt\n"
            "hon重写了全部的程序，并且在世界各地都开了分公司。\n下一段")
    out = join_wrapped_lines(text)
    assert "2007年" in out and "写代码" in out and "Python重写" in out
    assert out.endswith("。\n下一段")


def test_join_in_mixed_lines_keeps_words_numbers_and_typeset_spaces():
    from services.documents.text import join_wrapped_lines

    lines = ["细胞内的蛋白质不断减少。MIT OpenCour", "seWare是由麻省理工学院在20年前的20",
             "02年创始的一项计划，导演是Kevin ", "Smith先生，他在美国长大成人后工作",
             "写完。"]
    out = join_wrapped_lines("\n".join(lines))
    assert "MIT OpenCourseWare是由" in out and "的2002年创始" in out and "Kevin Smith先生" in out, out


def test_pdf_hyphen_at_a_line_end_is_kept():
    text = "甲" * 24 + "2009年9月27日-10月9日举行" + "乙" * 40 + "。"
    assert text.index("-") == 34  # the last character of the first 35-character line
    doc = parse(make_pdf([text]), "hyphen.pdf")
    assert "27日-10月" in doc.text, doc.text


# A page laid out like a mind map: boxes of different widths (lines of 50 characters beside a box of 21), with
# headings, a paragraph wrapped mid-word by its box (简明易|懂 would be one cut) and list items of about one width.
SKELETAL = ("键线式又称骨架式，是在纸面上表示分子结构的一种简便方法，在表示有机化合物的立体结构时尤其常用。"
            "用键线式表示的结构简明易懂，并且容易书写")
SKELETAL_BOX = [SKELETAL[i:i + 21] for i in range(0, len(SKELETAL), 21)]
MIND_MAP = "\n".join([
    "有机物结构的表示方法", "概述",
    "有机化合物的结构可以用多种方法来表示，常见的有分子式、结构式、结构简式和键线式等几种，它们各有各的用途。",
    "分子式只说明分子里各种原子的数目，不能说明原子之间怎样连接，所以同一个分子式可以对应好几种不同的物质。",
    "结构式把每一个化学键都画出来，最为完整，但书写起来比较麻烦，因此在日常学习中人们更常用结构简式来代替它。",
    "键线式", *SKELETAL_BOX, "线形结构",
    "↑表示生成物为气体，而且反应物中没有气体", "↓表示生成物有沉淀，而且反应物中没有固体", "非结构式", "分子式"])


def test_a_box_narrower_than_the_page_is_joined_where_its_lines_wrap():
    """The chemistry PDF's walkthrough: a quote cut mid-word at a line wrap of a box narrower than the page
    (「…结构简明易」). A line filling its own box wraps; headings and list items keep their newline."""
    from services.documents.text import join_wrapped_lines, split_sentences

    assert SKELETAL_BOX[2].endswith("并且") and SKELETAL_BOX[3] == "容易书写"
    joined = join_wrapped_lines(MIND_MAP)
    assert "\n键线式\n" + SKELETAL + "\n线形结构\n↑" in joined
    assert "没有气体\n↓表示" in joined and "没有固体\n非结构式\n分子式" in joined
    rules = "公司制度\n第一条 员工每天工作八小时并按时打卡签到\n第二条 员工每年享有十五天带薪年假福利\n第三条 加班需要提前申请"
    assert join_wrapped_lines(rules) == rules  # articles of about one width are no wrapped paragraph
    # a document stored before (the newlines kept): sentences run over the box's wraps, offsets exact
    spans = split_sentences(MIND_MAP)
    assert "".join(MIND_MAP[a:b] for a, b in spans) == MIND_MAP
    sentences = [MIND_MAP[a:b].replace("\n", "") for a, b in spans]
    assert "用键线式表示的结构简明易懂，并且容易书写" in sentences
    assert "键线式又称骨架式，是在纸面上表示分子结构的一种简便方法，在表示有机化合物的立体结构时尤其常用。" in sentences
