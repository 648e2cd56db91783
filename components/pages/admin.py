"""管理: users and their roles, every API key, and the audit log (admins only; the core refuses others)."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from components.safe_text import inert
from components.state import session, show_error
from services import errors
from services.views import SCOPE_ZH, action_zh, detail_zh

me = session()
st.title("管理")
if not me.who.admin:
    st.warning("只有管理员可以打开这个页面。")
    st.stop()


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


tab_users, tab_keys, tab_audit = st.tabs(["用户", "API 密钥", "审计日志"])
with tab_users:
    users = me.users()
    st.dataframe(pd.DataFrame([{"用户": u.name, "角色": "管理员" if u.admin else "成员",
                                "登录方式": "单点登录" if u.sso else "密码", "创建时间": when(u.created_at)} for u in users]),
                 hide_index=True, width="stretch")
    with st.form("add_user", clear_on_submit=True):
        st.markdown("**新建用户**")
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        name = c1.text_input("用户名")
        password = c2.text_input("初始密码（至少 8 个字符）", type="password")
        admin = c3.checkbox("管理员")
        if st.form_submit_button("创建", type="primary"):
            try:
                me.add_user(name, password, admin)
                st.rerun()
            except errors.WendaoError as exc:
                show_error(exc)
    others = [u.name for u in users if u.id != me.who.user_id]
    if others:
        c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        picked = c1.selectbox("用户", others, format_func=lambda n: inert(n, keep_lines=False), key="admin_pick")
        target = next(u for u in users if u.name == picked)
        if c2.button("取消管理员" if target.admin else "设为管理员", width="stretch"):
            try:
                me.set_admin(picked, not target.admin)
                st.rerun()
            except errors.WendaoError as exc:
                show_error(exc)
        if c3.button("删除用户", width="stretch"):
            st.session_state["confirm_remove_user"] = picked
        if st.session_state.get("confirm_remove_user") == picked:
            st.warning(f"确定删除用户「{inert(picked, keep_lines=False)}」？其登录会话立即失效，对话记录保留。")
            if st.button("确认删除", type="primary"):
                try:
                    me.remove_user(picked)
                    st.session_state.pop("confirm_remove_user", None)
                    st.rerun()
                except errors.WendaoError as exc:
                    show_error(exc)
with tab_keys:
    names = {k.id: k.name for k in me.kbs()}
    keys = me.all_keys()
    flash = st.session_state.pop("admin_key_flash", None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    if not keys:
        st.caption("还没有 API 密钥。在「文档库」页的知识库管理中为某个知识库创建。")
    else:
        st.dataframe(pd.DataFrame([{"编号": k.id, "前缀": k.prefix + "…", "知识库": names.get(k.kb_id, k.kb_id),
                                    "权限": SCOPE_ZH.get(k.scope, k.scope), "备注": k.name, "创建者": k.created_by,
                                    "创建时间": when(k.created_at), "最近使用": when(k.last_used),
                                    "状态": "已吊销" if k.revoked_at else "有效"}
                                   for k in keys]), hide_index=True, width="stretch")
        active = [k for k in keys if not k.revoked_at]
        if active:
            c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
            picked = c1.selectbox("吊销密钥", [k.id for k in active], key="admin_revoke_pick",
                                  format_func=lambda i: next(
                                      f"#{k.id} {k.prefix}… · {inert(str(names.get(k.kb_id, k.kb_id)), keep_lines=False)} · "
                                      f"{SCOPE_ZH.get(k.scope, k.scope)}" + (f" · {inert(k.name, keep_lines=False)}" if k.name else "")
                                      for k in active if k.id == i),
                                  help="吊销后这个密钥立即失效，不能恢复；用它的程序需要换新密钥。")
            if c2.button("吊销", key="admin_revoke", width="stretch"):
                st.session_state["confirm_revoke_key"] = picked  # asked first: a revoke cannot be undone
            key = next((k for k in active if k.id == st.session_state.get("confirm_revoke_key")), None)
            if key is not None:
                st.warning(f"确定吊销密钥 #{key.id}（{key.prefix}…）？吊销后立即失效、不能恢复，用它的程序需要换新密钥。")
                y, n = st.columns(2)
                if y.button("确认吊销", type="primary", key="admin_revoke_yes", width="stretch"):
                    try:  # the same use case as the library's key panel (the core checks the role)
                        me.kb(key.kb_id, "owner").revoke_key(key.id)
                        st.session_state.pop("confirm_revoke_key", None)
                        st.session_state["admin_key_flash"] = f"已吊销密钥 #{key.id}（{key.prefix}…）。"
                        st.rerun()
                    except errors.WendaoError as exc:
                        show_error(exc)
                if n.button("取消", key="admin_revoke_no", width="stretch"):
                    st.session_state.pop("confirm_revoke_key", None)
                    st.rerun()
with tab_audit:
    events = me.audit_log()
    st.dataframe(pd.DataFrame([{"时间": when(e.at), "谁": e.actor, "操作": action_zh(e.action), "对象": e.target,
                                "详情": detail_zh(e.action, e.detail), "来源地址": e.address} for e in events]),
                 hide_index=True, width="stretch")
