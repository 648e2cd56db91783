"""设置: retrieval settings (apply immediately, saved per knowledge base), chunking for new
uploads, embedding model (switching re-embeds every chunk in a background job, whose progress
is polled here), reranker, LLM endpoint with a connection test. All through the core's KB handle.

Every widget key carries the KB id: Streamlit keeps a keyed widget's value across reruns, so an
unscoped key would write one KB's settings into the next one picked in the sidebar.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from components.job_view import job_panel, jobs_running, new_batch, reembed_finished
from components.safe_text import inert, inert_code_urls
from components.state import api_key, current_kb, session, show_error, without_paths
from components.widgets import chunking_form
from components.words import FUSION_HELP, METHOD_ZH
from services.config import redact_url, restore_redacted
from services.views import (AVAILABILITY_ZH, METHODS, MODELS, MODES, availability, embedding_models, model_label,
                            reranker_models, served_embedders, served_rerankers)

KEY_SOURCE_ZH = {"server": "已在服务器配置（不会发送到浏览器；只用于服务器配置的接口地址）",
                 "saved": "已保存在数据目录（明文，只用于保存时的接口地址）",
                 "session": "已在本会话中填写"}

kb = current_kb()
st.title("设置")
if kb is None:
    st.info("先在文档库创建一个知识库。")
    st.page_link("components/pages/library.py", label="前往文档库", icon=":material/folder_open:")
    st.stop()
locked = not kb.may("editor")  # the core says what this principal may change; the rest is shown, not editable
if locked:
    st.caption(f"以下是知识库「{inert(kb.name, keep_lines=False)}」的设置。")
    st.info(kb.role_note("editor"), icon=":material/visibility:")
else:
    st.caption(f"以下设置保存在知识库「{inert(kb.name, keep_lines=False)}」中，修改后立即生效。")


def license_zh(spec) -> str:
    """A model's licence, written one way wherever a model is described."""
    return f"许可：{spec.license}"


def key(name: str) -> str:
    """A widget key scoped to the current knowledge base."""
    return f"settings_{kb.id}_{name}"



# --- retrieval ------------------------------------------------------------------------------
st.subheader("检索")
r = kb.retrieval_settings()
modes = list(MODES)
c1, c2, c3 = st.columns(3)
mode = c1.radio("检索方式", modes, index=modes.index(r.mode), format_func=MODES.get, key=key("mode"), disabled=locked)
fusion = c2.selectbox("合并方式", list(METHODS), index=list(METHODS).index(r.fusion), format_func=METHOD_ZH.get,
                      disabled=locked or mode != "hybrid", key=key("fusion"), help=FUSION_HELP)
weight = c3.slider("向量权重", 0.0, 1.0, float(r.dense_weight), 0.05, disabled=locked or mode != "hybrid" or fusion != "weighted",
                   help="按分数加权合并时向量一路的权重；关键词（BM25）权重 = 1 − 向量权重", key=key("weight"))
c1, c2, c3, c4 = st.columns(4)
rrf_k = c1.number_input("名次合并的平滑系数", 1, 1000, int(r.rrf_k), disabled=locked or fusion != "rrf", key=key("rrf_k"),
                        help="RRF（倒数排名融合）的参数 k：每种检索中排第 n 名的候选得 1/(k+n) 分，再相加。"
                             "k 越大，前几名之间的差距越小；常用 60。")
bm25_k = c2.number_input("关键词候选数", 1, 500, int(r.bm25_top_k), key=key("bm25_k"), disabled=locked,
                         help="关键词检索（BM25）取前多少名进入合并")
dense_k = c3.number_input("向量候选数", 1, 500, int(r.dense_top_k), key=key("dense_k"), disabled=locked)
top_k = c4.number_input("最终返回条数", 1, 50, int(r.top_k), key=key("top_k"), disabled=locked)
rerank = st.toggle("启用重排", r.rerank, key=key("rerank"), disabled=locked,  # its own row: in a quarter column its words were cut off
                   help="逐条细读候选段落、重新排序：重排模型（cross-encoder）把问题和每个候选段落放在一起打分，"
                        "比只比较向量更准，但每次检索更慢。")
trained = {m["path"]: f"训练：{m['name']}（{m['kb']}）" for m in session().finetuned_models("reranker") if m.get("better")}
c2, c3, c4 = st.columns(3)
rerankers = list(dict.fromkeys([m.name for m in reranker_models()] + list(trained) + served_rerankers(r.reranker_model)))
custom = r.reranker_model not in rerankers
reranker = c2.selectbox("重排模型", rerankers + ["自定义…"], index=len(rerankers) if custom else rerankers.index(r.reranker_model),
                        format_func=lambda n: trained.get(n, model_label(n)), key=key("reranker"), disabled=locked)
if reranker == "自定义…":
    reranker = c2.text_input("重排模型 ID 或本地路径", r.reranker_model if custom else "", key=key("reranker_path"), disabled=locked)
rerank_n = c3.number_input("重排候选数", 1, 200, int(r.rerank_top_n), key=key("rerank_n"), disabled=locked)
rerank_w = c4.number_input("重排权重", 0.0, 1.0, float(r.rerank_weight), step=0.1, key=key("rerank_w"), disabled=locked,
                           help="重排分数占多大比重：1 = 只按重排分数排序；小于 1 时与第一轮检索的名次混合（RRF）。"
                                "在本知识库上训练的重排模型，这个值由训练时的测量选定。")
if reranker in MODELS:
    spec = MODELS[reranker]
    st.caption(f"{spec.hf_id} · {license_zh(spec)} · {AVAILABILITY_ZH[availability(spec)]}")
new_r = replace(r, mode=mode, fusion=fusion, dense_weight=float(weight), rrf_k=int(rrf_k), bm25_top_k=int(bm25_k),
                dense_top_k=int(dense_k), top_k=int(top_k), rerank=rerank, reranker_model=reranker or r.reranker_model,
                rerank_top_n=int(rerank_n), rerank_weight=float(rerank_w))
if new_r != r and not locked:
    try:
        kb.save_retrieval(new_r)
        st.toast("检索设置已保存")
    except Exception as exc:
        show_error(exc)
if rerank and not locked and st.button("测试重排模型", key=key("test_reranker")):
    with st.spinner("加载重排模型…"):
        try:
            model = kb.test_reranker(new_r.reranker_model)
            st.success(f"重排模型可用（{model.device}，每 100 对 {model.last_ms_per_100:.0f} ms）。")
        except Exception as exc:
            show_error(exc)

# --- chunking -------------------------------------------------------------------------------
st.subheader("切分（用于之后上传的文档）")
st.caption("已上传的文档保持原来的切分，改这里不会改变它们；要按新设置切分已有文档，"
           "到「文档库」的「查看或调整的文档」中选一个文档，点「按这些设置重新切分」（每次一个文档）。")
ch = kb.chunking_config()
new_ch = chunking_form(key("chunking"), ch, disabled=locked)  # the same form as the library's upload controls
if new_ch is not None and new_ch != ch and not locked:
    try:
        kb.save_chunking(new_ch)
        st.toast("切分设置已保存")
    except Exception as exc:
        show_error(exc)

# --- embedding model ------------------------------------------------------------------------
st.subheader("向量模型")
current = kb.embedding_model()
finetuned = session().finetuned_models()
tuned = {m["path"]: f"微调：{m['name']}（{m['kb']}）" for m in finetuned}
# a model its run measured not better says so wherever it is listed (the core's verdict, with its numbers)
advised_against = {m["path"]: m["verdict"]["warning"] for m in finetuned if m.get("verdict", {}).get("warning")}
names = list(dict.fromkeys([m.name for m in embedding_models(current)] + list(tuned) + served_embedders(current)))
choice = st.selectbox("模型", names + ["自定义…"], index=names.index(current) if current in names else len(names),
                      format_func=lambda n: tuned.get(n, model_label(n)) + ("（不建议使用）" if n in advised_against else ""),
                      key=key("embedder"), disabled=locked)
if choice in advised_against:
    st.warning(f"{advised_against[choice]}。微调前后的对比见「微调」页。", icon=":material/warning:")
elif choice in tuned:
    st.caption("在本机数据目录中微调得到的模型；微调前后的对比见「微调」页。")
if choice == "自定义…":
    choice = st.text_input("Hugging Face 模型 ID 或本地目录", "" if current in names else current, key=key("embedder_path"),
                           disabled=locked)
if choice in MODELS:
    spec = MODELS[choice]
    st.markdown(f"`{spec.hf_id}` · 向量维度 **{spec.dim}** · 一段最多读入 **{spec.max_tokens}** 个词元 · {license_zh(spec)} · "
                f"**{AVAILABILITY_ZH[availability(spec)]}**" + (f"  \n{spec.note}" if spec.note else "")
                + (f"  \n提问前自动加上：`{spec.query_prefix}`" if spec.query_prefix else ""),
                help="词元（token）是模型切分文字的单位，一个汉字约 1 个词元；超出的部分不参与向量计算。"
                     + (f"\n\n{spec.detail}" if spec.detail else ""))
busy = jobs_running(kb, ("reembed",))
if choice and choice != current:
    st.info(f"当前知识库使用「{inert(tuned.get(current, model_label(current)), keep_lines=False)}」。切换模型需要把全部片段重新向量化"
            "（在后台进行：可以离开本页，期间仍用原模型检索）。")
    confirmed = choice in advised_against and st.checkbox(
        "我知道这个模型在检测中没有变好，仍然要切换", key=key("reembed_confirm"), disabled=locked)
    if st.button(f"切换到「{inert(tuned.get(choice, model_label(choice)), keep_lines=False)}」并重新向量化", type="primary",
                 key=key("reembed"), disabled=busy or (choice in advised_against and not confirmed),
                 help="已有一个重新向量化任务在进行" if busy else
                 "先勾选上面的确认" if choice in advised_against and not confirmed else None):
        try:
            new_batch(kb, ("reembed",), "reembed")
            kb.reembed(choice, confirmed=bool(confirmed))
            st.rerun()
        except Exception as exc:
            show_error(exc)
job_panel(kb, ("reembed",), "reembed", finished=lambda job: reembed_finished(
    job, f"「{inert(tuned[job.filename], keep_lines=False)}」" if job.filename in tuned else None))

# --- LLM ------------------------------------------------------------------------------------
st.subheader("大模型（OpenAI 兼容接口）")
st.caption("支持 OpenAI、DeepSeek、通义千问、Moonshot、智谱、vLLM、Ollama、llama.cpp 等。不填模型名则使用摘录式回答。")
llm = kb.llm_settings(api_key())
if not kb.may("owner"):  # where questions and passages are sent is the owner's decision (the core refuses others)
    st.markdown(f"当前：{inert(llm.model, keep_lines=False) if llm.configured else '未设置（摘录式回答）'}")
    st.caption(kb.role_note("owner") if not locked else "大模型接口和模型服务由知识库的所有者设置。")
else:
    with st.form(key("llm")):
        c1, c2 = st.columns(2)
        # Shown with any password / key-like query value masked (a server URL can carry credentials);
        # left unchanged, the masked form means the real URL again.
        # Every field has a key: an unkeyed widget whose default is the saved value becomes a new widget
        # once a save changes that value, and Streamlit then drops what was typed for the next save.
        base_url = c1.text_input("接口地址", redact_url(llm.base_url), placeholder="例如 http://127.0.0.1:8080/v1",
                                 help="OpenAI 兼容接口的 base_url，通常以 /v1 结尾", key=key("llm_base_url"))
        model = c2.text_input("模型名", llm.model, placeholder="例如 qwen2.5-7b-instruct / deepseek-chat", key=key("llm_model"))
        # Never prefilled: a key configured on the server (or saved by someone else) must not reach the browser.
        typed_key = st.text_input("API Key", "", type="password", placeholder=KEY_SOURCE_ZH.get(llm.key_source, "未设置"), key=key("llm_key"),
                                  help="填写后只保存在当前浏览器会话中，并用于你填写的接口地址。服务器配置的 Key 只会发往服务器配置的接口地址；"
                                       "换成其他接口地址时，请填写你自己的 Key。")
        c1, c2, c3 = st.columns(3)
        temperature = c1.slider("随机性（温度）", 0.0, 1.5, float(llm.temperature), 0.05, key=key("llm_temperature"),
                                help="越低回答越稳定、越贴近资料；文档问答建议 0–0.3")
        max_tokens = c2.number_input("回答的最大长度（词元）", 64, 32000, int(llm.max_tokens), key=key("llm_max_tokens"),
                                     help="max_tokens：大模型一次最多输出多少个词元（token），一个汉字约 1–2 个词元")
        timeout = c3.number_input("超时（秒）", 1, 600, int(llm.timeout), key=key("llm_timeout"))
        structured = st.checkbox("让大模型按固定格式作答（小模型的引用更准确）", llm.structured_output, key=key("llm_structured"),
                                 help="使用接口的结构化输出（JSON schema）：{answerable, answer, citations}；接口不支持时自动改用行内 [n] 引用")
        verify = st.checkbox("回答前先让大模型核对资料里是否有答案（没有就拒答，减少答非所问；小模型每题多几秒）",
                             llm.verify_answerable, key=key("llm_verify"), help="需要结构化输出。模型要先逐字摘抄资料中回答问题的原句，摘抄不到就拒答。")
        save_key = st.checkbox("把 API Key 也保存到本机数据目录（明文保存，不加密，能读取数据目录的人都能看到；不推荐）",
                               llm.key_source == "saved", key=key("llm_save_key"), help="以明文 JSON 保存在数据目录的 wendao.db 中")
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
    new_llm = kb.llm_settings(session_key, unsaved=form)
    if saved:
        if typed_key.strip():
            st.session_state["llm_api_key"] = typed_key.strip()
        try:  # persist what the visitor typed (blank = the server's default), with the key resolved above
            problem = kb.save_llm(replace(new_llm, base_url=form["base_url"], model=form["model"]), save_key)
        except Exception as exc:
            show_error(exc)
        else:
            if save_key and new_llm.api_key and new_llm.key_source != "server":
                st.success("已保存。API Key 已以明文写入数据目录（wendao.db 的知识库设置中）。")
            else:
                st.success("已保存。" + ("API Key 只保存在当前会话中。" if new_llm.key_source == "session" else ""))
            if problem:  # the core tested the endpoint while saving and says why it did not answer
                st.warning("但测试没有通过，回答会改用摘录式：" + inert_code_urls(without_paths(problem)))
    if tested:  # testing never saves anything, not even the typed key in the session
        if not new_llm.configured:
            st.warning("请先填写接口地址（或 API Key）和模型名。")
        else:
            with st.spinner("正在连接…"):
                try:
                    reply = kb.test_llm(new_llm)
                    st.success(f"连接成功，模型回复：{inert(reply[:50], keep_lines=False)}")
                except Exception as exc:
                    show_error(exc)
    if api_key() and st.button("清除本会话中的 API Key", key=key("forget_session_key")):
        st.session_state.pop("llm_api_key", None)
        st.rerun()

    # --- model servers (kept last: a small block, services.index.model_servers / services.search.rerank) ---
    st.subheader("模型服务")
    with st.expander("使用模型服务计算向量（Infinity、TEI、vLLM、Xinference、Ollama、OpenAI 等）"):
        form = kb.embedding_server_form()
        with st.form(key("embedding_server")):
            c1, c2 = st.columns(2)
            es_url = c1.text_input("模型服务地址", redact_url(form["base_url"]), placeholder="例如 http://127.0.0.1:7997",
                                   help="OpenAI 兼容的向量接口（/embeddings）的 base_url", key=key("es_url"))
            es_model = c2.text_input("服务端的模型名", form["model"], placeholder="例如 bge-m3 / multilingual-e5-large", key=key("es_model"))
            c1, c2 = st.columns(2)
            es_query = c1.text_input("查询前缀", form["query_prefix"], key=key("es_query"), help="e5：\"query: \"；BGE 中文：检索指令；其他模型通常留空")
            es_passage = c2.text_input("段落前缀", form["passage_prefix"], key=key("es_passage"), help="e5：\"passage: \"；其他模型通常留空")
            es_key = st.text_input("模型服务 API Key", type="password", placeholder=KEY_SOURCE_ZH.get(form["key_source"], "未设置（本地服务通常不需要）"),
                                   help="后台索引要用到，所以填写后会以明文保存在数据目录，只发往这个接口地址。服务器配置的 Key 只发往服务器配置的地址。")
            c1, c2 = st.columns(2)
            es_test = c1.form_submit_button("测试模型服务")
            es_use = c2.form_submit_button("切换到该服务并重新向量化", type="primary")
        es_url = restore_redacted(es_url, form["base_url"]).strip()
        if es_test or es_use:
            try:
                if es_test:
                    got = kb.try_embedding_server(es_url, es_model.strip(), es_query, es_passage, es_key.strip())
                    st.success(f"连接成功：向量维度 {got['dim']}，用时 {got['ms']:.0f} 毫秒。")
                else:
                    kb.use_embedding_server(es_url, es_model.strip(), es_query, es_passage, es_key.strip())
                    st.success("已开始在后台用模型服务重新向量化（进度见上方「向量模型」）；完成前仍用原来的向量检索。")
            except Exception as exc:
                show_error(exc)
    with st.expander("使用模型服务重排（TEI、Infinity、Xinference、Jina、Cohere 等）"):
        with st.form(key("rerank_server")):
            c1, c2 = st.columns(2)
            rr_url = c1.text_input("重排服务地址", placeholder="例如 http://127.0.0.1:7997")
            rr_model = c2.text_input("重排模型名", placeholder="例如 bge-reranker-base")
            rr_key = st.text_input("API Key（可选；填写后以明文保存在数据目录，只发往这个地址）", type="password")
            if st.form_submit_button("测试并使用"):
                try:
                    got = kb.use_rerank_server(rr_url, rr_model, rr_key.strip())
                    st.success(f"已改用模型服务重排（每 100 对 {got['ms_per_100']:.0f} ms）。")
                except Exception as exc:
                    show_error(exc)
