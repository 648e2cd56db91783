"""Uploaded files kept as they came (`<data>/originals/<kb id>/<doc id>.<ext>`), so the page view can
render the cited page of the original (uploads since schema 3). Written after the document's rows
and deleted with them; a crash between the two leaves a file that `sweep` removes."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable


class Originals:
    """The kept original files of one data dir."""

    def __init__(self, root: Path):
        self.root = root / "originals"

    def path(self, kb_id: int, doc_id: str) -> Path | None:
        """The uploaded file of a document, when it was kept."""
        folder = self.root / str(kb_id)
        found = sorted(folder.glob(doc_id + ".*")) if folder.exists() else []
        return found[0] if found else None

    def save(self, kb_id: int, doc_id: str, filename: str, data: bytes) -> None:
        """Keep `data` under the document's id with the file name's extension (".bin" when odd)."""
        folder = self.root / str(kb_id)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = Path(filename).suffix.lower()
        suffix = suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 6 else ".bin"
        tmp = folder / f".{doc_id}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / (doc_id + suffix))

    def remove(self, kb_id: int, doc_id: str) -> None:
        folder = self.root / str(kb_id)
        for f in folder.glob(doc_id + ".*") if folder.exists() else []:
            f.unlink(missing_ok=True)

    def remove_kb(self, kb_id: int) -> None:
        shutil.rmtree(self.root / str(kb_id), ignore_errors=True)

    def sweep(self, documents_of: Callable[[int], set[str]]) -> None:
        """Delete kept files whose document no longer exists (`documents_of(kb_id)`: its doc ids)
        and temporary files a crash left."""
        if not self.root.exists():
            return
        for folder in self.root.iterdir():
            known = documents_of(int(folder.name)) if folder.name.isdigit() else set()
            for f in folder.iterdir():
                if f.name.startswith(".") or f.name.split(".")[0] not in known:
                    f.unlink(missing_ok=True)
