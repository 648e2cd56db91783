"""问道 Wendao services: the whole document-QA pipeline as pure Python (no UI code).

Layers (low to high): text, tokenizer, store, vectors, bm25 -> chunking, parsing, embedding,
fusion, rerank -> retrieval, ingest, answer, evaluation -> cli.
"""
