"""The server: Streamlit's st.App serving the pages (app.py) and, in the same process, the HTTP API
under /api (services.api), behind the Host check and security headers (services.serving); the page
itself is sent as zh-CN (services.serving.PageLanguageMiddleware).

Started by `wendao serve` (services.serving.serve runs `streamlit run components/server.py`, which
finds this st.App and serves it with uvicorn)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.routing import Mount

from services.api import create_api
from services.serving import GuardMiddleware, PageLanguageMiddleware, SignInMiddleware, announce_setup
from services.workspace import open_workspace

ROOT = Path(__file__).resolve().parent.parent

announce_setup(open_workspace(), str(st.get_option("server.address") or ""), int(st.get_option("server.port") or 8501),
               str(st.get_option("server.baseUrlPath") or ""))  # the setup link as a full URL on this server
app = st.App(str(ROOT / "app.py"), routes=[Mount("/api", app=create_api())],
             middleware=[Middleware(GuardMiddleware), Middleware(SignInMiddleware), Middleware(PageLanguageMiddleware)])
