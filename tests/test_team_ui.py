"""Team mode in the pages (walkthrough s26): the pages ask the core what the signed-in user may do and
hide or disable the rest with a one-line note; the admin page speaks Chinese and revokes keys; the
share dialog starts from a user and a role and confirms what it did. The core still refuses on its own
(tests/test_team.py::test_permission_matrix_through_the_core)."""
import pytest

from test_team import PASSWORD, ROOT, run_as, team  # noqa: F401 - the fixtures


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
    assert [s.label for s in viewer.selectbox if "的文档" in s.label] == ["查看的文档"]  # nothing to adjust
    settings = run_as("C", "settings")
    assert "你在此知识库中是查看者，只能提问和查看。" in [i.value for i in settings.info]
    assert settings.radio and all(r.disabled for r in settings.radio) and all(t.disabled for t in settings.toggle)
    assert not [f for f in settings.button if f.label in ("保存", "测试连接")]  # the LLM form is the owner's
    finetune = run_as("C", "finetune")
    assert next(b for b in finetune.button if b.label == "开始微调").disabled
    fields = [*finetune.text_input, *finetune.number_input, *finetune.checkbox]
    assert fields and all(f.disabled for f in fields)  # nothing a viewer could type into and then be refused
    assert "你在此知识库中是查看者，只能提问和查看。" in [i.value for i in finetune.info]


def test_an_editor_edits_documents_but_not_the_kb_itself(run_as):
    editor = run_as("B", "library")
    labels = {b.label for b in editor.button}
    assert "按这些设置重新切分" in labels and "删除知识库" not in labels
    assert not [i for i in editor.info if "查看者" in i.value]
    assert not any(t.disabled for t in editor.toggle if t.label == "参与检索")
    assert "将使用：按句子" in texts(editor)  # the re-split says which settings it uses
    assert "查看或调整的文档" in [s.label for s in editor.selectbox]
    settings = run_as("B", "settings")
    assert not any(r.disabled for r in settings.radio)
    assert "你在此知识库中是编辑者" in texts(settings)
    owner = run_as("A", "library")
    assert {"删除知识库", "按这些设置重新切分"} <= {b.label for b in owner.button}
    assert not [i for i in owner.info if "你在此知识库中" in i.value]


def test_the_admin_page_speaks_chinese_and_revokes_keys_through_the_core(run_as, team):  # noqa: F811
    ws, who, keys = team
    admin = run_as("A", "admin")
    frames = [d.value for d in admin.dataframe]
    key_table = next(f for f in frames if "权限" in f.columns)
    audit = next(f for f in frames if "操作" in f.columns)
    assert set(key_table["权限"]) == {"只读", "读写"}
    assert {"新建知识库", "共享知识库", "创建 API 密钥", "新建用户"} <= set(audit["操作"])
    assert not any("_" in a for a in audit["操作"])  # no code like kb_shared left
    details = set(audit["详情"])
    assert {"B：编辑者", "C：查看者", "管理员", "成员"} <= details
    assert any(d.startswith("密钥 #") and d.endswith("只读") for d in details), details
    # 吊销 through the same use case as the library's key panel
    target = keys["KB1-read"]
    admin.selectbox(key="admin_revoke_pick").set_value(target.id).run()
    next(b for b in admin.button if b.label == "吊销").click().run()
    assert not ws.lib.store.keys.get(target.id).revoked_at  # asked first: a revoke cannot be undone
    assert any(f"确定吊销密钥 #{target.id}" in w.value for w in admin.warning)
    next(b for b in admin.button if b.label == "取消").click().run()
    assert not ws.lib.store.keys.get(target.id).revoked_at and not admin.warning
    next(b for b in admin.button if b.label == "吊销").click().run()
    next(b for b in admin.button if b.label == "确认吊销").click().run()
    assert ws.lib.store.keys.get(target.id).revoked_at
    assert any(f"已吊销密钥 #{target.id}" in s.value for s in admin.success)
    assert any(e.action == "key_revoked" and e.detail == f"#{target.id}" for e in ws.session(who["A"]).audit_log())


def test_every_audit_action_the_code_records_has_a_chinese_label():
    """The labels live in one place (services/audit_words.py): an action recorded anywhere without one
    would show as its code on the admin page."""
    import re

    from services.audit_words import ACTION_ZH, detail_zh

    recorded = set()
    for path in (ROOT / "services").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\b_?audit\(|audit\.record\(", line) and "def " not in line:
                recorded |= set(re.findall(r'"([a-z]+(?:_[a-z]+)*)"', line))
    recorded -= {"admin", "member", "kb"}  # details of user_added / user_role, a card field
    assert recorded and recorded <= set(ACTION_ZH), recorded - set(ACTION_ZH)
    assert detail_zh("kb_shared", "bob:viewer") == "bob：查看者"
    assert detail_zh("kb_unshared", "所有人:") == "所有人"
    assert detail_zh("key_created", "#3 read") == "密钥 #3 只读"
    assert detail_zh("key_revoked", "#4 创建者「x」已被删除") == "密钥 #4（创建者「x」已被删除）"
    assert detail_zh("job_cancelled", "#12 rechunk 合同 a.txt") == "任务 #12：重新切分 合同 a.txt"
    assert detail_zh("document_uploaded", "#7 rechunk.txt") == "任务 #7：rechunk.txt"
    assert detail_zh("retrieval_settings_saved", "hybrid top_k=5 rerank=False") == "混合 · 返回 5 条 · 重排关"


def test_the_share_dialog_starts_from_a_user_and_a_role_confirms_and_lists_members(run_as, team):  # noqa: F811
    ws, who, _ = team
    owner = run_as("A", "library")
    assert any(c.value.startswith("成员：") and "B（编辑者）" in c.value and "C（查看者）" in c.value
               for c in owner.caption)  # the panel lists who holds a role, before any dialog
    next(b for b in owner.button if b.label == "共享给其他人…").click().run()
    user, role = owner.selectbox(key=f"share_user_{1}"), owner.selectbox(key=f"share_role_{1}")
    assert user.value == "B" and role.value == "viewer"  # a user and the weakest role, not 所有人 / 移除共享
    assert "（所有人）" not in user.options and "移除共享" not in role.options
    user.set_value("D")
    next(b for b in owner.button if b.label == "共享").click().run()
    assert ws.lib.store.access.role(1, who["D"].user_id) == "viewer"
    assert any("已共享给「D」，角色：查看者" in s.value for s in owner.success)
    members = next(d.value for d in owner.dataframe if "成员" in d.value.columns)
    assert ("D", "查看者") in list(zip(members["成员"], members["角色"]))
    # removing asks first, then says so
    owner.selectbox(key="share_remove_1").set_value("D")
    next(b for b in owner.button if b.label == "移除").click().run()
    assert ws.lib.store.access.role(1, who["D"].user_id) == "viewer"
    assert any("确定移除「D」" in w.value for w in owner.warning)
    next(b for b in owner.button if b.label == "确认移除").click().run()
    assert ws.lib.store.access.role(1, who["D"].user_id) is None
    assert any("已移除「D」" in s.value for s in owner.success)


def test_sign_in_pages_keep_the_name_say_how_to_start_and_match_the_app(team):  # noqa: F811
    from fastapi.testclient import TestClient

    from services import auth
    from services.api import create_api

    client = TestClient(create_api(), follow_redirects=False)
    page = client.get("/auth/login")
    assert "#b5472a" in page.text and "#2f5fd0" not in page.text  # the app's colour, not another blue
    assert "还没有任何用户" not in page.text
    bad = client.post("/auth/login", data={"name": "B", "password": "wrong-password"})
    assert bad.status_code == 401 and 'value="B"' in bad.text  # the name stays; the password is typed again
    assert 'id="password" name="password" type="password" autocomplete="current-password" required autofocus' in bad.text
    hostile = client.post("/auth/login", data={"name": '"><script>x</script>', "password": "wrong-password"})
    assert "<script>x" not in hostile.text and "&quot;&gt;&lt;script&gt;" in hostile.text
    for _ in range(auth.MAX_FAILURES):
        client.post("/auth/login", data={"name": "D", "password": "nope-nope"})
    blocked = client.post("/auth/login", data={"name": "D", "password": PASSWORD})
    assert blocked.status_code == 429 and blocked.headers["retry-after"].isdigit() and 'value="D"' in blocked.text


def test_with_no_user_yet_the_sign_in_page_says_how_to_make_the_first_admin(data_dir, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from services import serving
    from services.api import create_api
    from services.workspace import open_workspace

    monkeypatch.setenv("WENDAO_AUTH", "local")
    ws = open_workspace(data_dir)
    client = TestClient(create_api(), follow_redirects=False)
    page = client.get("/auth/login")
    assert "还没有任何用户" in page.text and "wendao user add --admin" in page.text and "/api/auth/setup?token=" in page.text
    serving.announce_setup(ws, "127.0.0.1", 8765)
    line = capsys.readouterr().err
    assert "http://127.0.0.1:8765/api/auth/setup?token=" in line, line  # a full link to click, not a path
    assert serving.setup_url("t", "::1", 80) == "http://[::1]:80/api/auth/setup?token=t"
    assert serving.setup_url("t", "0.0.0.0", 8501, "/wd/").startswith("http://")
    assert "0.0.0.0" not in serving.setup_url("t", "0.0.0.0", 8501) and "/wd/api/auth/setup" in serving.setup_url(
        "t", "10.1.2.3", 8501, "wd")
    ws.lib.close()
