"""设置: retrieval settings (apply immediately, saved per knowledge base), chunking for new
uploads, embedding model (with re-embedding), reranker, LLM endpoint with a connection test.

Every widget key carries the KB id: Streamlit keeps a keyed widget's value across reruns, so an
unscoped key would write one KB's settings into the next one picked in the sidebar.
"""
from __future__ import annotations

from dataclasses import asdict, replace

import streamlit as st

from components.safe_text import inert
from components.state import api_key, current_kb, library, llm_secrets, show_error
from components.widgets import chunking_form
from services.tuning.finetune import finetuned_models
from services.config import redact_url, restore_redacted
from services.search.fusion import METHODS
from services.index.library import (chunking_config, llm_settings, retrieval_settings, save_llm_settings,
                              save_settings)
from services.index.models import AVAILABILITY_ZH, MODELS, availability, embedding_models, reranker_models
from services.search.retrieval import MODES

KEY_SOURCE_ZH = {"server": "已在服务器配置（不会发送到浏览器；只用于服务器配置的接口地址）",
                 "saved": "已保存在数据目录（明文，只用于保存时的接口地址）",
                 "session": "已在本会话中填写"}

lib = library()
kb = current_kb()
st.title("设置")
if kb is None:
    st.info("先在文档库创建一个知识库。")
    st.page_link("components/pages/library.py", label="前往文档库", icon=":material/folder_open:")
    st.stop()
st.caption(f"以下设置保存在知识库「{inert(kb.name, keep_lines=False)}」中，修改后立即生效。")


def key(name: str) -> str:
    """A widget key scoped to the current knowledge base."""
    return f"settings_{kb.id}_{name}"



# --- retrieval ------------------------------------------------------------------------------
st.subheader("检索")
r = retrieval_settings(lib, kb)
modes = list(MODES)
c1, c2, c3 = st.columns(3)
mode = c1.radio("检索方式", modes, index=modes.index(r.mode), format_func=MODES.get, key=key("mode"))
fusion = c2.selectbox("融合方法", list(METHODS), index=list(METHODS).index(r.fusion), format_func=METHODS.get,
                      disabled=mode != "hybrid", key=key("fusion"))
weight = c3.slider("向量权重（加权融合）", 0.0, 1.0, float(r.dense_weight), 0.05,
                   disabled=mode != "hybrid" or fusion != "weighted", help="BM25 权重 = 1 − 向量权重", key=key("weight"))
c1, c2, c3, c4 = st.columns(4)
rrf_k = c1.number_input("RRF k", 1, 1000, int(r.rrf_k), disabled=fusion != "rrf", key=key("rrf_k"))
bm25_k = c2.number_input("BM25 候选数", 1, 500, int(r.bm25_top_k), key=key("bm25_k"))
dense_k = c3.number_input("向量候选数", 1, 500, int(r.dense_top_k), key=key("dense_k"))
top_k = c4.number_input("最终返回条数", 1, 50, int(r.top_k), key=key("top_k"))
c1, c2, c3 = st.columns(3)
rerank = c1.toggle("启用重排（cross-encoder）", r.rerank, key=key("rerank"))
trained = {m["path"]: f"训练：{m['name']}（{m['kb']}）" for m in finetuned_models(lib, "reranker") if m.get("better")}
rerankers = [m.name for m in reranker_models()] + list(trained)  # + rerankers trained on a KB (微调 page)
custom = r.reranker_model not in rerankers
reranker = c2.selectbox("重排模型", rerankers + ["自定义…"], index=len(rerankers) if custom else rerankers.index(r.reranker_model),
                        format_func=lambda n: trained.get(n, n), key=key("reranker"))
if reranker == "自定义…":
    reranker = c2.text_input("重排模型 ID 或本地路径", r.reranker_model if custom else "", key=key("reranker_path"))
rerank_n = c3.number_input("重排候选数", 1, 200, int(r.rerank_top_n), key=key("rerank_n"))
if reranker in MODELS:
    spec = MODELS[reranker]
    st.caption(f"{spec.hf_id} · 许可：{spec.license} · {AVAILABILITY_ZH[availability(spec)]}")
new_r = replace(r, mode=mode, fusion=fusion, dense_weight=float(weight), rrf_k=int(rrf_k), bm25_top_k=int(bm25_k),
                dense_top_k=int(dense_k), top_k=int(top_k), rerank=rerank, reranker_model=reranker or r.reranker_model,
                rerank_top_n=int(rerank_n))
if new_r != r:
    save_settings(lib, kb, "retrieval", asdict(new_r))
    st.toast("检索设置已保存")
if rerank and st.button("测试重排模型", key=key("test_reranker")):
    with st.spinner("加载重排模型…"):
        try:
            from services.search.rerank import load_reranker

            model = load_reranker(new_r.reranker_model)
            model.score("测试", ["测试段落"] * 10)
            st.success(f"重排模型可用（{model.device}，每 100 对 {model.last_ms_per_100:.0f} ms）。")
        except Exception as exc:
            show_error(exc)

# --- chunking -------------------------------------------------------------------------------
st.subheader("切分（用于之后上传的文档）")
ch = chunking_config(lib, kb)
new_ch = chunking_form(key("chunking"), ch)  # the same form as the library's upload controls
if new_ch is not None and new_ch != ch:
    save_settings(lib, kb, "chunking", new_ch.to_dict())
    st.toast("切分设置已保存")

# --- embedding model ------------------------------------------------------------------------
st.subheader("向量模型")
current = lib.embedding_model(kb)
tuned = {m["path"]: f"微调：{m['name']}（{m['kb']}）" for m in finetuned_models(lib)}  # services.tuning.finetune's folders
names = [m.name for m in embedding_models()] + list(tuned)
choice = st.selectbox("模型", names + ["自定义…"], index=names.index(current) if current in names else len(names),
                      format_func=lambda n: tuned.get(n, n), key=key("embedder"))
if choice in tuned:
    st.caption("在本机数据目录中微调得到的模型；微调前后的对比见「微调」页。")
if choice == "自定义…":
    choice = st.text_input("Hugging Face 模型 ID 或本地目录", "" if current in names else current, key=key("embedder_path"))
if choice in MODELS:
    spec = MODELS[choice]
    st.markdown(f"`{spec.hf_id}` · 维度 **{spec.dim}** · 最大长度 **{spec.max_tokens}** tokens · 许可 **{spec.license}** · "
                f"**{AVAILABILITY_ZH[availability(spec)]}**" + (f"  \n{spec.note}" if spec.note else "")
                + (f"  \n查询指令：`{spec.query_prefix}`" if spec.query_prefix else ""))
if choice and choice != current:
    st.info(f"当前知识库使用「{inert(tuned.get(current, current), keep_lines=False)}」。切换模型需要把全部片段重新向量化。")
    if st.button(f"切换到「{inert(tuned.get(choice, choice), keep_lines=False)}」并重新向量化", type="primary",
                 key=key("reembed")):
        from services.index.reembed import reembed

        bar = st.progress(0.0, text="加载模型…")
        try:
            n = reembed(lib, kb, choice, lambda d, t: bar.progress(d / max(1, t), text=f"重新向量化 {d}/{t}"))
            st.success(f"已切换，{n} 个片段已重新向量化。")
        except Exception as exc:
            show_error(exc)

# --- LLM ------------------------------------------------------------------------------------
st.subheader("大模型（OpenAI 兼容接口）")
st.caption("支持 OpenAI、DeepSeek、通义千问、Moonshot、智谱、vLLM、Ollama、llama.cpp 等。不填模型名则使用摘录式回答。")
llm = llm_settings(lib, kb, api_key(), llm_secrets())
with st.form(key("llm")):
    c1, c2 = st.columns(2)
    # Shown with any password / key-like query value masked (a server URL can carry credentials);
    # left unchanged, the masked form means the real URL again.
    base_url = c1.text_input("接口地址 base_url", redact_url(llm.base_url), placeholder="例如 http://127.0.0.1:8080/v1")
    model = c2.text_input("模型名", llm.model, placeholder="例如 qwen2.5-7b-instruct / deepseek-chat")
    # Never prefilled: a key configured on the server (or saved by someone else) must not reach the browser.
    typed_key = st.text_input("API Key", "", type="password", placeholder=KEY_SOURCE_ZH.get(llm.key_source, "未设置"),
                              help="填写后只保存在当前浏览器会话中，并用于你填写的接口地址。服务器配置的 Key 只会发往服务器配置的接口地址；"
                                   "换成其他接口地址时，请填写你自己的 Key。")
    c1, c2, c3 = st.columns(3)
    temperature = c1.slider("随机性（温度）", 0.0, 1.5, float(llm.temperature), 0.05,
                            help="越低回答越稳定、越贴近资料；文档问答建议 0–0.3")
    max_tokens = c2.number_input("最大输出 tokens", 64, 32000, int(llm.max_tokens))
    timeout = c3.number_input("超时（秒）", 1, 600, int(llm.timeout))
    structured = st.checkbox("优先使用结构化输出（JSON schema，小模型引用更准确）", llm.structured_output)
    verify = st.checkbox("回答前先让大模型核对资料里是否有答案（没有就拒答，减少答非所问；小模型每题多几秒）",
                         llm.verify_answerable, help="需要结构化输出。模型要先逐字摘抄资料中回答问题的原句，摘抄不到就拒答。")
    save_key = st.checkbox("把 API Key 也保存到本机数据目录（以明文 JSON 保存在 wendao.db 中，能读取数据目录的人都能看到；不推荐）",
                           llm.key_source == "saved")
    c1, c2 = st.columns(2)
    saved = c1.form_submit_button("保存", type="primary")
    tested = c2.form_submit_button("测试连接", help="只测试，不保存任何设置")
if llm.key_source:
    st.caption(f"API Key：{KEY_SOURCE_ZH[llm.key_source]}")
form = {"base_url": restore_redacted(base_url, llm.base_url).strip(), "model": model.strip(), "temperature": float(temperature),
        "max_tokens": int(max_tokens), "timeout": float(timeout), "structured_output": structured,
        "verify_answerable": verify}
session_key = typed_key.strip() or api_key()
# The key is resolved on the server for the endpoint in the form (never the server's key for another host).
new_llm = llm_settings(lib, kb, session_key, llm_secrets(), unsaved=form)
if saved:
    if typed_key.strip():
        st.session_state["llm_api_key"] = typed_key.strip()
    # persist what the visitor typed (blank = the server's default), with the key resolved above
    save_llm_settings(lib, kb, replace(new_llm, base_url=form["base_url"], model=form["model"]), save_key)
    if save_key and new_llm.api_key and new_llm.key_source != "server":
        st.success("已保存。API Key 已以明文写入数据目录（wendao.db 的知识库设置中）。")
    else:
        st.success("已保存。" + ("API Key 只保存在当前会话中。" if new_llm.key_source == "session" else ""))
if tested:  # testing never saves anything, not even the typed key in the session
    if not new_llm.configured:
        st.warning("请先填写接口地址（或 API Key）和模型名。")
    else:
        with st.spinner("正在连接…"):
            try:
                from services.answers.llm import LLMClient

                reply = LLMClient(new_llm).test_connection()
                st.success(f"连接成功，模型回复：{inert(reply[:50], keep_lines=False)}")
            except Exception as exc:
                show_error(exc)
if api_key() and st.button("清除本会话中的 API Key", key=key("forget_session_key")):
    st.session_state.pop("llm_api_key", None)
    st.rerun()
