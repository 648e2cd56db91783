"""One plain-Chinese vocabulary for retrieval and evaluation, shared by 检索实验室, 评测, 设置 and the
chat's 检索详情: the words a person reads first, the technical term (BM25, fusion, RRF, Recall@k,
MRR, nDCG, cross-encoder, offsets) only in the help tooltip next to them."""
from __future__ import annotations

# The stages of one search, as columns, charts and timings name them.
STAGE_ZH = {"bm25": "关键词", "dense": "向量", "fused": "合并", "rerank": "重排"}
SCORE_ZH = {"bm25": "关键词得分", "dense": "向量相似度", "fused": "合并得分", "rerank": "重排得分"}
RANK_ZH = {"bm25": "关键词名次", "dense": "向量名次", "fused": "合并名次", "rerank": "重排名次"}
SCORE_HELP = {
    "bm25": "关键词检索（BM25）的原始分数：问题里的词在片段中出现得越多、越少见，分数越高；没有上限，只能在同一次检索里比较。",
    "dense": "问题和片段的向量之间的余弦相似度（0–1），越接近 1 意思越接近。",
    "fused": "把关键词和向量两路结果合并排序（融合，fusion）后的分数：按名次合并（RRF）或按分数加权合并。",
    "rerank": "重排模型（cross-encoder）把问题和片段放在一起读后给出的分数，越高越相关。",
}
RANK_HELP = {k: f"这个片段在{STAGE_ZH[k]}{'检索' if k in ('bm25', 'dense') else ''}中排第几名；“—”表示这一路没有找到它。"
             for k in STAGE_ZH}

TIMING_ZH = {"rewrite": "追问改写", "bm25": "关键词检索", "embed_query": "问题转为向量", "dense": "向量检索",
             "fusion": "合并排序", "load": "读取片段", "rerank": "重排", "rerank_attempt": "尝试重排（未成功，本次未重排）",
             "merge": "合并相邻片段", "extractive": "摘录",
             "llm_first_token": "大模型首字", "llm": "大模型生成", "total": "合计"}
TIMING_HELP = ("各阶段的技术名称：关键词检索 = BM25；问题转为向量 = 查询向量化（embedding）；向量检索 = 近邻搜索；"
               "合并排序 = 融合（fusion：RRF 或加权）；重排 = cross-encoder 打分；合并相邻片段 = 合并相邻窗口。")

METHOD_ZH = {"rrf": "按名次合并", "weighted": "按分数加权合并"}
FUSION_HELP = ("混合检索同时做关键词检索和向量检索，再把两路结果合并成一个排序（技术上叫融合，fusion）。"
               "按名次合并 = 倒数排名融合（RRF）：只看各自的名次；按分数加权合并：两路分数各自归一化到 0–1 后按权重相加。")


def span_zh(start: int, end: int) -> str:
    """A passage's place in its document in words: characters [start, end) as 第 start+1–end 字."""
    return f"第 {start + 1}–{end} 字"


SPAN_HELP = "片段在文档全文中的位置：从第几个字到第几个字（技术上是字符偏移 [起, 止)，从 0 开始计）。"

# Evaluation metrics (services.tuning.evaluation.summarize): the table's headers and their tooltips.
METRIC_ZH = {"recall@1": "第1条命中", "recall@5": "前5条命中", "recall@10": "前10条命中", "recall@20": "前20条命中",
             "mrr@10": "名次得分", "ndcg@10": "排序质量", "doc_recall@5": "前5条含文档",
             "coverage@1000chars": "前1000字含答案", "coverage@2000chars": "前2000字含答案",
             "p50_ms": "通常用时", "p95_ms": "较慢时用时", "questions": "题数"}
METRIC_HELP = {
    "recall@1": "Recall@1：第一条结果就含有答案的问题所占比例。",
    "recall@5": "Recall@5：前 5 条结果里有含答案片段的问题所占比例。",
    "recall@10": "Recall@10：前 10 条结果里有含答案片段的问题所占比例。",
    "recall@20": "Recall@20：前 20 条结果里有含答案片段的问题所占比例。",
    "mrr@10": "MRR@10：第一个含答案片段名次的倒数的平均（第 1 名得 1 分，第 2 名 0.5 分……前 10 名之外 0 分）。",
    "ndcg@10": "nDCG@10：前 10 条的排序质量（含答案的片段越靠前越接近 1）。",
    "doc_recall@5": "文档 Recall@5：前 5 条结果里有来自正确文档的片段的问题所占比例。",
    "coverage@1000chars": "答案覆盖@1000字：按顺序读结果的前 1000 个字，其中含有标准答案的问题所占比例（大模型读的就是这些字）。",
    "coverage@2000chars": "答案覆盖@2000字：按顺序读结果的前 2000 个字，其中含有标准答案的问题所占比例。",
    "p50_ms": "延迟 p50（中位数，毫秒）：一半的问题在这个时间内检索完成。",
    "p95_ms": "延迟 p95（毫秒）：95% 的问题在这个时间内检索完成。",
    "questions": "参与检索评分的问题数。",
}
# The two tables of an evaluation's results (each fits the page): retrieval quality, then answer coverage and time.
QUALITY = ("recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10", "doc_recall@5")
COVERAGE = ("coverage@1000chars", "coverage@2000chars", "p50_ms", "p95_ms", "questions")
CURVE_TITLE = "前 k 条命中率"
CURVE_NOTE = "横轴是看前几条结果，纵轴是其中有含答案片段的问题所占比例。"
CURVE_HELP = "即 Recall@k 曲线（k = 1、5、10、20）。"
