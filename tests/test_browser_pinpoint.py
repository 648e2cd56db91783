"""Issue 21 in a real browser: the judgment conversation from the issue, replayed without an LLM.

"双方约定被告每月支付多少生活费？" is answered with 800元 first and bold, then the quote; the follow-up
"那孩子现在在哪上学？" is answered from the same judgment (荣昌县城西小学), and its details name the
conversation's document. The judgment is written by the test (tests/test_pinpoint.py), not CAIL's.
"""
import pytest

from test_browser import CHROMIUM, browser_page, running_app, wait_idle  # noqa: F401 (skip marker comes along)
from test_pinpoint import GUN, JUDGMENT_A, JUDGMENT_B

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.skipif(not CHROMIUM, reason="Debian chromium not installed")]


@pytest.fixture(scope="module")
def judgment_app(tmp_path_factory):
    from services.documents.chunking import ChunkingConfig
    from services.index.ingest import ingest_bytes
    from services.index.library import Library
    from services.index.vectors import close_all

    data = tmp_path_factory.mktemp("pinpoint-data")
    lib = Library(data)
    kb = lib.kb("判决书", create=True)
    for text, name in ((JUDGMENT_A, "李x6抚养纠纷.txt"), (JUDGMENT_B, "赵0离婚.txt"), (GUN, "射击断续器.txt")):
        ingest_bytes(lib, kb, text.encode(), name, ChunkingConfig())
    lib.close()
    close_all()
    with running_app(data, OPENAI_BASE_URL="", OPENAI_API_KEY="", WENDAO_LLM_MODEL="") as url:
        yield url


def ask(page, question: str, turn: int):
    box = page.get_by_placeholder("就文档提问")
    box.fill(question)
    box.press("Enter")
    answer = page.locator('[data-testid="stChatMessage"]').nth(2 * turn + 1)
    answer.locator("button.wd-cite").first.wait_for()  # the kept turn, with its clickable [n]
    wait_idle(page)
    return answer


def test_the_judgment_conversation_from_the_issue(judgment_app, tmp_path):
    outside: list[str] = []
    with browser_page(outside) as page:
        page.goto(judgment_app + "/")
        wait_idle(page)
        first = ask(page, "双方约定被告每月支付多少生活费？", 0)
        bold = first.locator(".wd-answer strong")
        assert bold.first.inner_text() == "800元"  # the marked answer, first and bold
        assert first.locator(".wd-answer").inner_text().startswith("800元")
        assert "被告每月向原告支付李x6的生活费800元" in first.inner_text()
        follow = ask(page, "那孩子现在在哪上学？", 1)
        assert follow.locator(".wd-answer strong").first.inner_text() == "荣昌县城西小学"
        assert follow.get_by_role("button", name="李x6抚养纠纷.txt").count() >= 1  # cited from the same judgment
        assert "赵0离婚.txt" not in follow.inner_text()
        follow.get_by_text("检索详情").click()
        follow.get_by_text("对话上下文").wait_for()
        assert "《李x6抚养纠纷.txt》" in follow.inner_text()
        page.screenshot(path=str(tmp_path / "pinpoint-conversation.png"), full_page=True)
    assert not outside
