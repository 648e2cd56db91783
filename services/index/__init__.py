"""Index: one open data dir (library: ownership, reconcile, keyword = exact BM25 in memory, dense = each KB's
collection and model identity, kept originals), the SQLite store (the truth), per-KB settings, embedders, the
model registry, ingest, re-embedding and maintenance."""
