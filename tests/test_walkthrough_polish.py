"""What a new user's walkthrough of every page in Chromium found (issue 18's walkthrough, issue 22's
polish items), where AppTest or a plain call is enough; the browser side is in
tests/test_browser_walkthrough.py."""
from services.conversations import export_markdown


# --- 9. the export lists each cited source once ---------------------------------------------------
def test_export_lists_each_source_once_with_its_quotes():
    source = {"doc": "长江.txt", "pages": [1, 1], "text": "长江全长约六千三百公里。它发源于青藏高原。", "start": 0}
    answer = {"answer": "长江全长约六千三百公里[1]，发源于青藏高原[1]，注入东海[1]。[2]",
              "sources": [source, {"doc": "黄河.txt", "pages": [2, 3], "text": "黄河", "start": 0}],
              "citations": [{"n": 1, "doc": "长江.txt", "quote": "长江全长约六千三百公里。", "supported": True},
                            {"n": 1, "doc": "长江.txt", "quote": "它发源于青藏高原。", "supported": True},
                            {"n": 1, "doc": "长江.txt", "quote": "长江全长约六千三百公里。", "supported": True},
                            {"n": 2, "doc": "黄河.txt", "quote": "注入东海。", "supported": False}]}
    md = export_markdown("地理", [{"question": "长江有多长？", "answer": answer}])
    listed = [line for line in md.splitlines() if line.startswith("- [")]
    assert len(listed) == 2, md  # [1] once, [2] once
    assert listed[0].startswith("- [1] 《长江.txt》第1页")
    assert listed[0].count("长江全长约六千三百公里") == 1 and "它发源于青藏高原" in listed[0]
    assert listed[1].startswith("- [2] 《黄河.txt》第2–3页") and "（未核实）" in listed[1]
