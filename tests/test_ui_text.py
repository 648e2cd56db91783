"""A fresh-eyes walkthrough's UI-text findings (issue 22 items 7, 12, 14 and polish): one display
rule for untrusted names, the 评测 page's messages, the model label."""
from services.conversations import export_markdown
from services.documents.text import display_name


# --- 1. one readable display rule for control characters, pages and export alike ---------------
def test_control_characters_show_as_readable_ascii_not_control_pictures():
    shown = display_name("bad\x07na\x1bme.txt")
    assert shown == "bad<U+0007>na<U+001B>me.txt"
    # the Control Pictures block (U+2400-243F) is drawn as empty boxes by the CJK fonts
    assert not any(0x2400 <= ord(ch) <= 0x243F for ch in display_name("".join(map(chr, range(0x20))) + "\x7f"))
    assert display_name("invoice\u202eexe.txt") == "invoice<U+202E>exe.txt"
    assert display_name("长江 报告（2024）.pdf") == "长江 报告（2024）.pdf"


def test_export_shows_names_by_the_same_rule_as_the_page():
    name = "bad\x07na\x1bme.txt"
    answer = {"answer": "长江全长约六千三百公里[1]。",
              "sources": [{"doc": name, "pages": [1, 1], "text": "长江全长约六千三百公里。", "start": 0}],
              "citations": [{"n": 1, "doc": name, "quote": "长江全长约六千三百公里。", "supported": True}]}
    md = export_markdown("库\x1b[31m", [{"question": "长江多长？", "answer": answer}])
    assert "《bad<U+0007>na<U+001B>me.txt》" in md, md
    assert "库<U+001B>[31m" in md
    assert "\x07" not in md and "\x1b" not in md
