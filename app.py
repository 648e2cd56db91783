"""问道 Wendao — the Streamlit entry point: page config, navigation, shared sidebar."""
from pathlib import Path

import streamlit as st

from components.account import user_menu
from components.state import follow_url, principal, setup_logging, sidebar
from components.widgets import inject_css

# A local image: an emoji or :material/…: page icon makes every browser fetch it from a CDN.
ICON = Path(__file__).resolve().parent / "components" / "assets" / "wendao.png"

setup_logging()
st.set_page_config(page_title="问道 · 文档问答", page_icon=str(ICON), layout="wide")
inject_css()
who = principal()  # team mode: the sign-in page (and stop) until signed in

# The default page is served at the app's root (/); the url_path it reserves is never routed to it.
CHAT = st.Page("components/pages/chat.py", title="问答", icon=":material/forum:", default=True, url_path="home")


def chat_address() -> None:
    """/chat — the address the chat has by the other pages' rule (/library, /lab…), typed or kept from
    older links — opens the chat at /, its query (?c=<conversation>) kept."""
    st.switch_page(CHAT, query_params=st.query_params.to_dict())


pages = [
    CHAT,
    st.Page("components/pages/library.py", title="文档库", icon=":material/folder_open:", url_path="library"),
    st.Page("components/pages/lab.py", title="检索实验室", icon=":material/science:", url_path="lab"),
    st.Page("components/pages/evaluation.py", title="评测", icon=":material/monitoring:", url_path="evaluation"),
    st.Page("components/pages/finetune.py", title="微调", icon=":material/model_training:", url_path="finetune"),
    st.Page("components/pages/settings.py", title="设置", icon=":material/settings:", url_path="settings"),
]
pages.append(st.Page(chat_address, title="问答", url_path="chat", visibility="hidden"))
if who.kind == "user" and who.admin:
    pages.append(st.Page("components/pages/admin.py", title="管理", icon=":material/admin_panel_settings:",
                         url_path="admin"))
navigation = st.navigation(pages)
follow_url()  # ?c=<conversation> after a reload: open it in its knowledge base
counts = sidebar()
user_menu(who)
navigation.run()
counts.refresh()  # after the page ran, so uploads and deletions show at once
