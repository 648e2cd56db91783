"""Walkthrough s26 item 13: a PDF's upload showed a full bar reading 「解析 1/1 步 · 剩余约 0 秒」 for seconds
while work went on (loading the tokenizer, chunking). The ingest now says 切分 as soon as parsing is done,
and a finished step under a still-running job never says 「剩余约 0 秒」."""
from services.index.ingest import ingest_bytes
from services.index.library import open_library


def test_the_chunk_stage_is_reported_as_soon_as_parsing_is_done(tmp_path):
    lib = open_library(tmp_path / "data")
    kb = lib.store.create_kb("资料", 0)
    calls = []
    result = ingest_bytes(lib, kb, "长江是中国第一长河。黄河是中国第二长河。".encode(), "河流.txt",
                          progress=lambda stage, done, total, **_: calls.append((stage, done, total)))
    assert result.status == "ok", result
    after_parse = calls[calls.index(("parse", 1, 1)) + 1]
    assert after_parse == ("chunk", 0, 0), calls  # not silence under 「解析 1/1」 until chunks exist
    lib.close()


def test_a_finished_step_of_a_running_job_never_says_zero_seconds_left():
    from streamlit.testing.v1 import AppTest

    def page():
        import time as t

        from components.job_view import running_line
        from services.index.repositories import Job as J

        now = t.time()
        running_line(J(1, 1, "报告.pdf", "running", "parse", 1, 1, {"rate": 0.25, "eta_s": 0.0}, now - 4, now - 4, now))
        running_line(J(2, 1, "报告.pdf", "running", "chunk", 0, 0, {"rate": 0.0, "eta_s": None}, now - 5, now - 5, now))

    at = AppTest.from_function(page).run()
    assert not at.exception
    lines = [m.value for m in at.markdown]
    assert "剩余约 0 秒" not in lines[0] and "这一步已完成，正在准备下一步" in lines[0], lines
    assert "**切分**" in lines[1] and "剩余" not in lines[1], lines


def test_cancel_buttons_only_for_those_the_core_lets_cancel():
    """A viewer may start an evaluation but not cancel jobs (the core refuses): no 取消 button for them."""
    from streamlit.testing.v1 import AppTest

    def page(role):
        import time as t

        from components.job_view import job_panel
        from services.access import at_least
        from services.index.repositories import Job as J

        class FakeKB:  # what the panel asks of the core's KB handle
            id = 1

            def jobs(self, since=None, kinds=()):
                now = t.time()
                return [J(1, 1, "评测", "running", "questions", 3, 10, {}, now - 5, now - 5, now, kind="evaluate"),
                        J(2, 1, "评测", "queued", "", 0, 0, {}, now, None, now, kind="evaluate")]

            def may(self, need):
                return at_least(role, need)

            def job_label(self, job):
                return "评测"

            def waiting_for(self, job):
                return ""

        job_panel(FakeKB(), ("evaluate",), "evaluate")

    for role, offered in (("viewer", False), ("editor", True)):
        at = AppTest.from_function(page, args=(role,)).run()
        assert not at.exception, [e.value for e in at.exception]
        cancels = [b.label for b in at.button if b.label.startswith("取消")]
        assert bool(cancels) == offered, (role, cancels)
