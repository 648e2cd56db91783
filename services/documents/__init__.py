"""Documents: bytes -> text with pages (parsing, office formats, OCR), normalisation, tokenizing, chunking."""
