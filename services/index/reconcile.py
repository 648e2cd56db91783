"""What a process does when it becomes a data dir's owner: finish what dead processes left.

Holding the owner lock (services.index.ownership) proves no other live process writes, so rows a
dead one left half-written are safe to remove: 'indexing' documents and pending re-chunks go with
their points, kept originals without a document are deleted, background jobs it was running are
queued again, keyword-only documents get a 'vectors' job, and the dense side is swept (orphan
points, collections no KB records).
"""
from __future__ import annotations

from services.index.dense import DenseIndex
from services.index.originals import Originals
from services.index.store import Store


def reconcile(store: Store, dense: DenseIndex, originals: Originals, write_lock) -> int:
    """Owner only: remove what dead processes left half-done; returns how many documents and
    re-chunks were removed. Holds `write_lock` (the process's one-writer lock) throughout."""
    removed = 0
    with write_lock:
        for doc in store.stale_documents():
            dense.drop_points(store.get_kb(doc.kb_id), store.delete_document(doc.kb_id, doc.id))
            removed += 1
        for kb_id, doc_id in store.stale_pending():
            dense.drop_points(store.get_kb(kb_id), store.discard_pending(kb_id, doc_id))
            removed += 1
        originals.sweep(lambda kb_id: set(store.filenames(kb_id)))
        store.jobs.requeue_interrupted()  # background jobs a dead owner was running start again
        store.jobs.queue_vectors(store.dense_pending())  # keyword-only documents get their vectors
        dense.sweep()
    return removed
