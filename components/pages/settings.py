"""设置: retrieval settings (apply immediately, saved per knowledge base), chunking for new
uploads, embedding model (with re-embedding), reranker, LLM endpoint with a connection test."""
from __future__ import annotations

from dataclasses import asdict, replace

import streamlit as st

from components.state import api_key, current_kb, library, llm_secrets, show_error
from services.chunking import STRATEGIES, ChunkingConfig
from services.config import LLMSettings
from services.fusion import METHODS
from services.library import (chunking_config, llm_settings, retrieval_settings, save_llm_settings,
                              save_settings)
from services.models import AVAILABILITY_ZH, MODELS, availability, embedding_models, reranker_models
from services.retrieval import MODES

lib = library()
kb = current_kb()
st.title("设置")
if kb is None:
    st.info("先在文档库创建一个知识库。")
    st.page_link("components/pages/library.py", label="前往文档库", icon=":material/folder_open:")
    st.stop()
st.caption(f"以下设置保存在知识库「{kb.name}」中，修改后立即生效。")

# --- retrieval ------------------------------------------------------------------------------
st.subheader("检索")
r = retrieval_settings(lib, kb)
modes = list(MODES)
c1, c2, c3 = st.columns(3)
mode = c1.radio("检索方式", modes, index=modes.index(r.mode), format_func=MODES.get, key="set_mode")
fusion = c2.selectbox("融合方法", list(METHODS), index=list(METHODS).index(r.fusion), format_func=METHODS.get,
                      disabled=mode != "hybrid")
weight = c3.slider("向量权重（加权融合）", 0.0, 1.0, float(r.dense_weight), 0.05,
                   disabled=mode != "hybrid" or fusion != "weighted", help="BM25 权重 = 1 − 向量权重")
c1, c2, c3, c4 = st.columns(4)
rrf_k = c1.number_input("RRF k", 1, 1000, int(r.rrf_k), disabled=fusion != "rrf")
bm25_k = c2.number_input("BM25 候选数", 1, 500, int(r.bm25_top_k))
dense_k = c3.number_input("向量候选数", 1, 500, int(r.dense_top_k))
top_k = c4.number_input("最终返回条数", 1, 50, int(r.top_k))
c1, c2, c3 = st.columns(3)
rerank = c1.toggle("启用重排（cross-encoder）", r.rerank)
rerankers = [m.name for m in reranker_models()]
custom = r.reranker_model not in rerankers
reranker = c2.selectbox("重排模型", rerankers + ["自定义…"], index=len(rerankers) if custom else rerankers.index(r.reranker_model))
if reranker == "自定义…":
    reranker = c2.text_input("重排模型 ID 或本地路径", r.reranker_model if custom else "")
rerank_n = c3.number_input("重排候选数", 1, 200, int(r.rerank_top_n))
if reranker in MODELS:
    spec = MODELS[reranker]
    st.caption(f"{spec.hf_id} · 许可：{spec.license} · {AVAILABILITY_ZH[availability(spec)]}")
new_r = replace(r, mode=mode, fusion=fusion, dense_weight=float(weight), rrf_k=int(rrf_k), bm25_top_k=int(bm25_k),
                dense_top_k=int(dense_k), top_k=int(top_k), rerank=rerank, reranker_model=reranker or r.reranker_model,
                rerank_top_n=int(rerank_n))
if new_r != r:
    save_settings(lib, kb, "retrieval", asdict(new_r))
    st.toast("检索设置已保存")
if rerank and st.button("测试重排模型"):
    with st.spinner("加载重排模型…"):
        try:
            from services.rerank import load_reranker

            model = load_reranker(new_r.reranker_model)
            model.score("测试", ["测试段落"] * 10)
            st.success(f"重排模型可用（{model.device}，每 100 对 {model.last_ms_per_100:.0f} ms）。")
        except Exception as exc:
            show_error(exc)

# --- chunking -------------------------------------------------------------------------------
st.subheader("切分（用于之后上传的文档）")
ch = chunking_config(lib, kb)
c1, c2, c3, c4, c5 = st.columns(5)
strategy = c1.selectbox("切分方式", STRATEGIES, index=STRATEGIES.index(ch.strategy),
                        format_func={"fixed": "固定长度", "sentence": "按句子", "window": "滑动窗口"}.get)
size = c2.number_input("片段长度 N", 20, 4000, ch.chunk_size, step=10)
overlap = c3.number_input("重叠 M", 0, 2000, ch.overlap, step=10)
window = c4.number_input("窗口句数 W", 1, 50, ch.window)
stride = c5.number_input("步长 S", 1, 50, ch.stride)
try:
    new_ch = ChunkingConfig(strategy, int(size), int(overlap), int(window), int(stride), ch.unit)
    if new_ch != ch:
        save_settings(lib, kb, "chunking", new_ch.to_dict())
        st.toast("切分设置已保存")
except ValueError:
    st.warning("设置无效：重叠必须小于片段长度，步长不能大于窗口。")

# --- embedding model ------------------------------------------------------------------------
st.subheader("向量模型")
current = lib.embedding_model(kb)
names = [m.name for m in embedding_models()]
choice = st.selectbox("模型", names + ["自定义…"], index=names.index(current) if current in names else len(names))
if choice == "自定义…":
    choice = st.text_input("Hugging Face 模型 ID 或本地目录", "" if current in names else current)
if choice in MODELS:
    spec = MODELS[choice]
    st.markdown(f"`{spec.hf_id}` · 维度 **{spec.dim}** · 最大长度 **{spec.max_tokens}** tokens · 许可 **{spec.license}** · "
                f"**{AVAILABILITY_ZH[availability(spec)]}**" + (f"  \n{spec.note}" if spec.note else "")
                + (f"  \n查询指令：`{spec.query_prefix}`" if spec.query_prefix else ""))
if choice and choice != current:
    st.info(f"当前知识库使用「{current}」。切换模型需要把全部片段重新向量化。")
    if st.button(f"切换到「{choice}」并重新向量化", type="primary"):
        from services.reembed import reembed

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
with st.form("llm"):
    c1, c2 = st.columns(2)
    base_url = c1.text_input("接口地址 base_url", llm.base_url, placeholder="例如 http://127.0.0.1:8080/v1")
    model = c2.text_input("模型名", llm.model, placeholder="例如 qwen2.5-7b-instruct / deepseek-chat")
    key = st.text_input("API Key", llm.api_key, type="password", help="默认只保存在当前浏览器会话中")
    c1, c2, c3 = st.columns(3)
    temperature = c1.slider("temperature", 0.0, 1.5, float(llm.temperature), 0.05)
    max_tokens = c2.number_input("最大输出 tokens", 64, 32000, int(llm.max_tokens))
    timeout = c3.number_input("超时（秒）", 1, 600, int(llm.timeout))
    structured = st.checkbox("优先使用结构化输出（JSON schema，小模型引用更准确）", llm.structured_output)
    save_key = st.checkbox("把 API Key 也保存到本机数据目录（不推荐）", False)
    c1, c2 = st.columns(2)
    saved = c1.form_submit_button("保存", type="primary")
    tested = c2.form_submit_button("测试连接")
new_llm = LLMSettings(base_url.strip(), key.strip(), model.strip(), float(temperature), int(max_tokens), float(timeout),
                      llm.max_retries, structured)
if saved or tested:
    st.session_state["llm_api_key"] = key.strip()
    save_llm_settings(lib, kb, new_llm, save_key)
    if saved:
        st.success("已保存。" + ("API Key 已写入数据目录。" if save_key else "API Key 只保存在当前会话中。"))
if tested:
    if not new_llm.configured:
        st.warning("请先填写接口地址（或 API Key）和模型名。")
    else:
        with st.spinner("正在连接…"):
            try:
                from services.llm import LLMClient

                reply = LLMClient(new_llm).test_connection()
                st.success(f"连接成功，模型回复：{reply[:50]}")
            except Exception as exc:
                show_error(exc)
