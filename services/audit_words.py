"""The audit log in Chinese: every action the core records (services.workspace, services.auth) with its
label, and each action's detail read back in words (「bob：查看者」, 「密钥 #3 只读」). The one place these
names are translated; the admin page and anything else that shows the log use `action_zh` / `detail_zh`."""
from __future__ import annotations

import re

from services.access import ROLE_ZH

ACTION_ZH = {
    "sign_in": "登录", "sign_in_failed": "登录失败", "sign_out": "退出登录",
    "first_admin_created": "创建第一个管理员", "user_added": "新建用户", "user_added_by_sso": "单点登录新用户",
    "user_removed": "删除用户", "user_role": "更改管理员身份", "password_changed": "修改密码",
    "kb_created": "新建知识库", "kb_renamed": "重命名知识库", "kb_deleted": "删除知识库",
    "kb_shared": "共享知识库", "kb_unshared": "取消共享",
    "key_created": "创建 API 密钥", "key_revoked": "吊销 API 密钥",
    "document_uploaded": "上传文档", "document_deleted": "删除文档", "document_enabled": "启用文档",
    "document_disabled": "停用文档", "document_rechunked": "重新切分文档", "conversation_deleted": "删除对话",
    "retrieval_settings_saved": "保存检索设置", "chunking_settings_saved": "保存切分设置",
    "llm_endpoint_saved": "保存大模型接口", "embedding_server_used": "改用向量模型服务",
    "rerank_server_used": "改用重排模型服务", "reembed": "切换向量模型",
    "finetune_started": "开始微调", "model_deleted": "删除微调模型",
    "question_set_saved": "保存问题集", "question_set_deleted": "删除问题集",
    "job_cancelled": "取消任务", "job_cancel_too_late": "取消任务（已来不及）",
}
SCOPE_ZH = {"read": "只读", "write": "读写"}
ACCOUNT_ZH = {"admin": "管理员", "member": "成员"}
JOB_ZH = {"ingest": "上传", "vectors": "计算向量", "rechunk": "重新切分", "reindex": "重建索引", "reembed": "重新向量化",
          "optimize": "优化索引", "sample": "导入示例", "evaluate": "评测", "finetune": "微调",
          "finetune_reranker": "训练重排模型", "embedding": "向量模型", "reranker": "重排模型"}


def action_zh(action: str) -> str:
    """An audit action's label; an action this version does not know (a newer one) as recorded."""
    return ACTION_ZH.get(action, action)


def detail_zh(action: str, detail: str) -> str:
    """An audit row's detail in words: roles, key scopes and job kinds translated, names kept as recorded."""
    detail = detail or ""
    if action in ("kb_shared", "kb_unshared"):
        who, _, role = detail.rpartition(":")
        who = who or detail
        return f"{who}：{ROLE_ZH[role]}" if role in ROLE_ZH else who
    if action in ("user_added", "user_role"):
        return ACCOUNT_ZH.get(detail, detail)
    if action in ("key_created", "key_revoked"):
        m = re.fullmatch(r"#(\d+)(?: (read|write))?(?: (.*))?", detail, re.S)
        if m:
            return (f"密钥 #{m[1]}" + (f" {SCOPE_ZH[m[2]]}" if m[2] else "")
                    + (f"（{m[3]}）" if m[3] else ""))
        return detail
    if action in ("job_cancelled", "job_cancel_too_late", "finetune_started", "document_uploaded"):
        m = re.fullmatch(r"#(\d+) (.*)", detail, re.S)
        if not m:
            return detail
        first, _, rest = m[2].partition(" ")
        if action != "document_uploaded" and first in JOB_ZH:
            return f"任务 #{m[1]}：{JOB_ZH[first]} {rest}".rstrip()
        return f"任务 #{m[1]}：{m[2]}"
    if action == "retrieval_settings_saved":
        m = re.fullmatch(r"(\w+) top_k=(\d+) rerank=(True|False)", detail)
        if m:
            from services.search.retrieval import MODES

            return f"{MODES.get(m[1], m[1])} · 返回 {m[2]} 条 · 重排{'开' if m[3] == 'True' else '关'}"
    return detail
