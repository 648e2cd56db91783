"""问道 Wendao services: the whole document-QA pipeline as pure Python (never imports streamlit).

Layers, high to low (import-linter contracts in pyproject.toml; a layer imports only those below it):
adapters (cli, api, serving) -> the core (workspace) -> jobs -> worker -> conversations, auth, views ->
tuning/ -> answers/ -> search/ -> index/ -> documents/ -> access, netguard -> config, errors.
See README "Architecture" for the path of an upload and of a question.
"""

import os as _os

# oneDNN (torch's CPU kernels) caches a compiled primitive per input shape, 1,024 by default. Embedding
# length-sorted batches makes a new shape almost every batch, so that cache grew the ingesting process
# by ~0.4-0.75 GB on a long PDF (1,289 chunks: 1,659 MB RSS by default, 1,485 MB at 32, 1,296 MB at 8) at
# the same CPU time; a few entries are enough. Set before torch is imported; an explicit value wins.
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
