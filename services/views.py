"""The view types and display constants front ends may use besides the core (services.workspace):
plain data and pure functions re-exported in one place, so pages never import an engine module
(the import-linter contract in pyproject.toml holds components to this module, the core, access, auth,
config and errors)."""
from __future__ import annotations

from services.answers.citations import parse_markers, source_claims
from services.answers.refusal import joined_sources
from services.audit_words import SCOPE_ZH, action_zh, detail_zh
from services.config import LLMSettings, RetrievalSettings, redact_url, restore_redacted
from services.documents.chunking import STRATEGIES, Chunk, ChunkingConfig
from services.documents.doctypes import MIB, format_mb, format_size, page_for_offset, page_ranges
from services.documents.pageview import page_label
from services.documents.parsing import SUPPORTED_EXTENSIONS, unsupported
from services.documents.text import display_name
from services.documents.tokenizer import term_spans
from services.index.ingest import STAGE_ZH
from services.index.library import OPTIMIZE_FROM_CHUNKS
from services.index.model_servers import served_embedders, served_rerankers
from services.index.models import AVAILABILITY_ZH, MODELS, availability, embedding_models, reranker_models, resolve
from services.index.repositories import ACTIVE, ApiKey, AuditEvent, ConversationInfo, Job, User
from services.index.served import display_name as _served_label
from services.index.store import Document, KnowledgeBase
from services.search.fusion import METHODS
from services.search.diagnosis import ExpectedReport, chat_cut_line, chat_note, merged_note
from services.search.retrieval import MODES, Hit, SearchResult
from services.tuning.evaluation import (CHUNKER_NAMES, KS, MATCH_RULE_ZH, config_labels, doc_key, parse_questions,
                                        sample_question_lines)
from services.tuning.finetune import QUESTION_LIMIT, FinetuneSettings, card_of
from services.tuning.rerank_training import SET_ZH as RERANK_SET_ZH, RerankSettings
from services.tuning.rerank_training import result_rows as rerank_result_rows

__all__ = [
    "ACTIVE", "AVAILABILITY_ZH", "ApiKey", "AuditEvent", "CHUNKER_NAMES", "Chunk", "config_labels", "doc_key", "ChunkingConfig", "ConversationInfo",
    "Document", "FinetuneSettings", "Hit", "Job", "KS", "KnowledgeBase", "LLMSettings", "MATCH_RULE_ZH", "METHODS",
    "MIB", "MODELS", "MODES", "OPTIMIZE_FROM_CHUNKS", "RetrievalSettings", "STAGE_ZH", "STRATEGIES",
    "SUPPORTED_EXTENSIONS", "unsupported", "SearchResult", "User", "availability", "display_name", "embedding_models", "format_mb",
    "format_size",
    "joined_sources", "page_for_offset", "page_label", "page_ranges", "parse_markers", "source_claims", "parse_questions", "redact_url", "reranker_models", "resolve",
    "restore_redacted", "sample_question_lines", "latest_batch", "term_spans", "served_embedders", "served_rerankers", "model_label",
    "ExpectedReport", "chat_cut_line", "chat_note", "merged_note",
    "RERANK_SET_ZH", "RerankSettings", "rerank_result_rows", "QUESTION_LIMIT", "SCOPE_ZH", "action_zh", "detail_zh",
]


def model_label(name: str) -> str:
    """A model as users know it wherever it is named (pickers, job lines, waiting lines): a
    fine-tuned model's folder as 「微调：名称（知识库）」, never the data dir's path; served models as
    「模型服务 · 模型 · 地址」 (credentials masked); registry entries by their label."""
    card = card_of(name)
    if card is not None:
        return f"微调：{card['name']}" + (f"（{card['kb']}）" if card.get("kb") else "")
    return _served_label(name)


def latest_batch(jobs: list) -> list:
    """The jobs (ordered by id) of the newest batch: a batch starts with a job submitted when every
    earlier one had finished — what a page's 「new batch」 marks in its session — so after a reload
    the upload summary counts the last upload's files (14/14), not the last hour's (「文件 28/28」)."""
    start = 0
    for i, job in enumerate(jobs):
        if i and all(not j.active and j.updated_at <= job.created_at for j in jobs[:i]):
            start = i
    return jobs[start:]
