"""Index: the SQLite store (the truth), exact BM25, the dense index and embedders, the model registry, ingest."""
