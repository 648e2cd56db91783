"""Team mode in the pages (walkthrough s26): the pages ask the core what the signed-in user may do and
hide or disable the rest with a one-line note; the admin page speaks Chinese and revokes keys; the
share dialog starts from a user and a role and confirms what it did. The core still refuses on its own
(tests/test_team.py::test_permission_matrix_through_the_core)."""
import pytest

from test_team import PASSWORD, ROOT, team  # noqa: F401 - the fixture


@pytest.fixture
def run_as(team, monkeypatch):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    import components.account as account

    ws, who, _ = team

    def run(name, page=None):
        monkeypatch.setattr(account, "current_principal", lambda _ws: who[name])
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        if page:
            at.switch_page(f"components/pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return run


def texts(at) -> str:
    return " ".join([i.value for i in at.info] + [c.value for c in at.caption] + [m.value for m in at.markdown])


def test_a_viewer_sees_no_editing_controls_and_is_told_why(run_as):
    viewer = run_as("C", "library")
    labels = {b.label for b in viewer.button}
    assert "你在此知识库中是查看者，只能提问和查看。" in [i.value for i in viewer.info]
    assert not {"删除知识库", "重命名", "按这些设置重新切分", "共享给其他人…"} & labels, labels
    assert next(b for b in viewer.button if b.label == "重建索引").disabled
    assert not viewer.get("file_uploader") and "上传文档" not in texts(viewer)
    assert all(t.disabled for t in viewer.toggle if t.label == "参与检索")
    assert "要删除文档" not in texts(viewer)
    settings = run_as("C", "settings")
    assert "你在此知识库中是查看者，只能提问和查看。" in [i.value for i in settings.info]
    assert settings.radio and all(r.disabled for r in settings.radio) and all(t.disabled for t in settings.toggle)
    assert not [f for f in settings.button if f.label in ("保存", "测试连接")]  # the LLM form is the owner's
    finetune = run_as("C", "finetune")
    assert next(b for b in finetune.button if b.label == "开始微调").disabled
    assert "你在此知识库中是查看者，只能提问和查看。" in [i.value for i in finetune.info]


def test_an_editor_edits_documents_but_not_the_kb_itself(run_as):
    editor = run_as("B", "library")
    labels = {b.label for b in editor.button}
    assert "按这些设置重新切分" in labels and "删除知识库" not in labels
    assert not [i for i in editor.info if "查看者" in i.value]
    assert not any(t.disabled for t in editor.toggle if t.label == "参与检索")
    assert "将使用：按句子" in texts(editor)  # the re-split says which settings it uses
    settings = run_as("B", "settings")
    assert not any(r.disabled for r in settings.radio)
    assert "你在此知识库中是编辑者" in texts(settings)
    owner = run_as("A", "library")
    assert {"删除知识库", "按这些设置重新切分"} <= {b.label for b in owner.button}
    assert not [i for i in owner.info if "你在此知识库中" in i.value]
