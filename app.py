"""问道 Wendao — the Streamlit entry point: page config, navigation, shared sidebar."""
import streamlit as st

from components.state import sidebar
from components.widgets import inject_css

st.set_page_config(page_title="问道 · 文档问答", page_icon="📚", layout="wide")
inject_css()

pages = [
    st.Page("components/pages/chat.py", title="问答", icon="💬", default=True, url_path="chat"),
    st.Page("components/pages/library.py", title="文档库", icon="📁", url_path="library"),
    st.Page("components/pages/lab.py", title="检索实验室", icon="🔬", url_path="lab"),
    st.Page("components/pages/evaluation.py", title="评测", icon="📊", url_path="evaluation"),
    st.Page("components/pages/settings.py", title="设置", icon="⚙️", url_path="settings"),
]
navigation = st.navigation(pages)
sidebar()
navigation.run()
