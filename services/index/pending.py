"""Vectors left pending because a knowledge base's model server was down: queue them when it is back.

Ingest never waits for an embedding server: a document whose vectors could not be computed (server
unreachable before or during its upload) is committed keyword-searchable with its vectors 'pending'
(services.index.ingest). The data dir's worker calls `queue_when_servers_back` when it is idle; for
each KB with pending documents whose embedder is a served model, it checks that the server answers
with the model the KB's index was built with, and only then queues the 'vectors' jobs (so a server
that stays down does not fill the job list with failures, and a server now serving another model is
left to the 重建索引 the search page asks for).
"""
from __future__ import annotations

import logging

from services import errors
from services.index.library import Library
from services.index.served import parse_served

log = logging.getLogger(__name__)


def queue_when_servers_back(lib: Library) -> int:
    """Queue 'vectors' jobs for pending documents of served-model KBs whose server answers again with
    the same model; returns how many jobs were queued."""
    ready: set[int] = set()
    for kb_id in sorted({kb_id for kb_id, _ in lib.store.dense_pending()}):
        try:
            kb = lib.store.get_kb(kb_id)
            if parse_served(lib.embedding_model(kb)) is None:
                continue  # in-process models: reconcile already queued these
            embedder = lib.embedder(kb)
            if not embedder.reachable():
                continue
            record = lib.dense.record(kb)
            if record is None or record["fingerprint"] == embedder.fingerprint_id:
                ready.add(kb_id)
        except errors.WendaoError as exc:
            log.info("vectors of KB %s still pending: %s", kb_id, exc.message_zh)
    return lib.store.jobs.queue_vectors([(k, d) for k, d in lib.store.dense_pending() if k in ready]) if ready else 0
