"""Team use in the pages: who is signed in (the sign-in page itself is served by the API, because only
an HTTP response can set the HttpOnly cookie), the user menu, sharing a KB and its API keys.

Every action goes through the core, which checks the role; these widgets only hide what the
principal could not do anyway."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from components.safe_text import inert
from services import auth, errors
from services.access import LOCAL, ROLE_ZH, ROLES, Principal
from services.views import SCOPE_ZH

SIGN_IN = "/api/auth/login"
SIGN_OUT = "/api/auth/logout"


def _address() -> str:
    try:
        return st.context.ip_address or ""
    except Exception:  # noqa: BLE001 - not in a browser session (AppTest)
        return ""


def _auth_configured() -> bool:
    """Whether secrets hold the [auth] section st.login needs (without it st.user has no is_logged_in)."""
    try:
        return bool(st.secrets.get("auth"))
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def current_principal(ws) -> Principal:
    """The principal of this browser session; in team mode without a valid sign-in, the sign-in page
    is shown and the script stops."""
    mode = auth.mode()
    if mode in ("single", "none"):
        return LOCAL
    if mode == "oidc":
        if st.get_option("server.trustedUserHeaders"):
            # Streamlit would copy these request headers into st.user: anyone reaching the port could
            # then claim any identity by sending them. Identity comes from the provider only.
            st.error("拒绝服务：WENDAO_AUTH=oidc 时不能设置 Streamlit 的 server.trustedUserHeaders——"
                     "它会把请求头当作用户身份，任何人都能伪造。请删除这项配置后重启。")
            st.stop()
        if not _auth_configured():
            st.error("WENDAO_AUTH=oidc 需要先配置身份提供方：在 .streamlit/secrets.toml 的 [auth] 中填写 "
                     "redirect_uri、cookie_secret、client_id、client_secret 和 server_metadata_url（见 README），然后重启。")
            st.stop()
        user = st.user
        if not user.get("is_logged_in"):
            st.title("问道 · 文档问答")
            st.info("请先用单位账号登录。")
            st.button("登录", type="primary", on_click=st.login)
            st.stop()
        try:
            return ws.sso_principal(str(user.get("sub") or ""), str(user.get("name") or user.get("email") or ""),
                                    _address())
        except errors.PermissionDenied as exc:
            st.error(exc.message_zh)
            st.button("退出登录", on_click=st.logout, key="sign_out_unknown")
            st.stop()
    who = ws.signed_in(st.context.cookies.get(auth.COOKIE), _address())
    if who is None:
        st.title("问道 · 文档问答")
        st.info("请先登录。")
        st.markdown(f'<a href="{SIGN_IN}" target="_self">前往登录页</a>', unsafe_allow_html=True)
        st.stop()
    return who


def user_menu(who: Principal) -> None:
    """Who is signed in and how to sign out (team mode only)."""
    if who.kind != "user":
        return
    with st.sidebar:
        st.caption(f"已登录：{inert(who.name, keep_lines=False)}" + ("（管理员）" if who.admin else ""))
        if auth.mode() == "oidc":
            st.button("退出登录", on_click=st.logout, key="sign_out")
        else:
            # A link (only an HTTP response can clear the HttpOnly cookie) drawn as the sidebar's other buttons are.
            st.markdown(f'<a class="wd-sign-out" href="{SIGN_OUT}" target="_self">退出登录</a>', unsafe_allow_html=True)


EVERYONE_ZH = "所有登录用户"


def members_line(kb) -> str:
    """Who holds a role on the KB, in one line: 「成员：alice（所有者）、bob（查看者）」."""
    members = kb.members()
    return "成员：" + "、".join(f"{inert(EVERYONE_ZH if name == '所有人' else name, keep_lines=False)}"
                              f"（{ROLE_ZH.get(role, role)}）" for name, role in members) if members else "还没有成员。"


def _forget_share() -> None:
    st.session_state.pop("share_open", None)


@st.dialog("共享知识库", width="large", on_dismiss=_forget_share)
def share_dialog(kb, names: dict[int, str], me: str = "") -> None:
    """Members of the KB with their roles; give a user (or everyone signed in) a role, or take it away.
    Each change is confirmed in the dialog, which stays open with the updated list."""
    st.caption("新建的知识库只有创建者能看到。查看者可以提问、检索和打开原文；编辑者还可以上传、删除、重新切分、改设置和微调；"
               "所有者还可以改名、删除、共享和管理 API 密钥。")
    done = st.session_state.pop(f"share_done_{kb.id}", None)
    if done:
        st.success(done, icon=":material/check_circle:")
    members = kb.members()
    if members:
        st.dataframe(pd.DataFrame([{"成员": EVERYONE_ZH if name == "所有人" else name, "角色": ROLE_ZH.get(role, role)}
                                   for name, role in members]), hide_index=True, width="stretch")
    with st.form(f"share_{kb.id}", border=False):
        c1, c2 = st.columns(2)
        options = [n for n in sorted(names.values()) if n != me] + [EVERYONE_ZH]
        user = c1.selectbox("共享给", options, format_func=lambda n: inert(n, keep_lines=False), key=f"share_user_{kb.id}",
                            help=f"「{EVERYONE_ZH}」：团队里每个已登录的人")
        role = c2.selectbox("角色", list(ROLES), format_func=ROLE_ZH.get, key=f"share_role_{kb.id}")
        if st.form_submit_button("共享", type="primary"):
            try:
                kb.share(None if user == EVERYONE_ZH else user, role)
                st.session_state[f"share_done_{kb.id}"] = f"已共享给「{inert(user, keep_lines=False)}」，角色：{ROLE_ZH[role]}。"
                st.rerun()
            except errors.WendaoError as exc:
                st.error(exc.message_zh)
    removable = [name for name, _ in members if name != me]
    if removable:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        gone = c1.selectbox("移除成员", removable, key=f"share_remove_{kb.id}",
                            format_func=lambda n: inert(EVERYONE_ZH if n == "所有人" else n, keep_lines=False))
        if c2.button("移除", key=f"share_remove_go_{kb.id}", width="stretch"):
            st.session_state[f"share_confirm_{kb.id}"] = gone
        if st.session_state.get(f"share_confirm_{kb.id}") == gone:
            shown = inert(EVERYONE_ZH if gone == "所有人" else gone, keep_lines=False)
            st.warning(f"确定移除「{shown}」？对方将不能再打开这个知识库（其 API 密钥随之失效）。")
            y, n = st.columns(2)
            if y.button("确认移除", type="primary", key=f"share_remove_yes_{kb.id}", width="stretch"):
                try:
                    kb.share(None if gone == "所有人" else gone, "")
                    st.session_state.pop(f"share_confirm_{kb.id}", None)
                    st.session_state[f"share_done_{kb.id}"] = f"已移除「{shown}」。"
                    st.rerun()
                except errors.WendaoError as exc:
                    st.error(exc.message_zh)
            if n.button("取消", key=f"share_remove_no_{kb.id}", width="stretch"):
                st.session_state.pop(f"share_confirm_{kb.id}", None)
                st.rerun()


def keys_panel(kb) -> None:
    """The KB's API keys: create one (shown once), see when each was last used, revoke."""
    st.caption("API 密钥只能访问这个知识库：「只读」密钥可以提问和检索，「读写」密钥还可以上传和删除文档。"
               "密钥只在创建时显示一次；服务器不保存密钥本身，丢了只能作废后重新创建。",
               help="服务器只保存密钥的哈希值（一种不能反推出原文的指纹），用来核对请求带来的密钥。")
    shown = st.session_state.pop(f"new_key_{kb.id}", None)
    if shown:
        st.success("新密钥（只显示这一次，请立即复制保存）：")
        st.code(shown, language=None)
    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    scope = c1.selectbox("权限", ["read", "write"], format_func=SCOPE_ZH.get, key=f"key_scope_{kb.id}",
                         help="只读（read）：提问和检索；读写（write）：还可以上传和删除文档")
    note = c2.text_input("备注（可选）", key=f"key_note_{kb.id}", max_chars=60)
    if c3.button("创建密钥", key=f"key_add_{kb.id}", width="stretch"):
        try:
            st.session_state[f"new_key_{kb.id}"] = kb.create_key(scope, note).key
            st.rerun()
        except errors.WendaoError as exc:
            st.error(exc.message_zh)
    for key in kb.keys():
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.last_used)) if key.last_used else "从未使用"
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.markdown(f"`{key.prefix}…` · {SCOPE_ZH.get(key.scope, key.scope)} · {inert(key.name, keep_lines=False) or '无备注'} · "
                    + ("**已吊销**" if key.revoked_at else f"最近使用：{used}"))
        if not key.revoked_at and c2.button("吊销", key=f"key_revoke_{key.id}", width="stretch"):
            kb.revoke_key(key.id)
            st.rerun()
