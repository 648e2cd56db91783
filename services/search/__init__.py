"""Search: the retriever (BM25 + dense -> fusion -> rerank -> merged passages)."""
