"""Issue 22 (walkthrough leftovers): file sizes read the same in the document table as in the
uploader's chips — bytes up to half a KB ("43 B", not 「0」 KB), then KB / MB with one decimal from half a
unit on ("0.6 KB" for 643 bytes, as the chip says), 1 KB being 1000 bytes as Streamlit's chips count (1024
on Windows, as its frontend does there)."""
import pytest

from services.views import format_size
from test_ui_everyday import app, two_docs  # noqa: F401 - fixture


@pytest.mark.parametrize("size, base, shown", [
    (0, 1000, "0 B"), (43, 1000, "43 B"), (500, 1000, "500 B"), (501, 1000, "0.5 KB"),
    (643, 1000, "0.6 KB"),  # the chip's "0.6KB" (walkthrough s26: the table said 643 B)
    (999, 1000, "1.0 KB"), (1000, 1000, "1.0 KB"), (1250, 1000, "1.3 KB"),  # toFixed rounds a tie up
    (2500, 1000, "2.5 KB"), (43_000, 1000, "43.0 KB"), (558_200, 1000, "0.6 MB"),  # the chip's "0.6MB", not 558.2 KB
    (999_949, 1000, "1.0 MB"), (2_345_678, 1000, "2.3 MB"), (3 * 10**9, 1000, "3.0 GB"),
    (512, 1024, "512 B"), (1000, 1024, "1.0 KB"), (2500, 1024, "2.4 KB"), (43_000, 1024, "42.0 KB"),
    (5 * 1024**2, 1024, "5.0 MB"),
])
def test_sizes_read_like_the_chips(size, base, shown):
    assert format_size(size, base) == shown


def test_the_document_table_shows_readable_sizes(two_docs):  # noqa: F811
    lib, kb = two_docs
    sizes = {d.filename: d.size for d in lib.store.list_documents(kb.id)}
    at = app("library")
    table = at.dataframe[0].value
    assert "大小 (KB)" not in table.columns
    shown = dict(zip(table["文件名"], table["大小"]))
    assert shown == {name: format_size(size) for name, size in sizes.items()}, shown
    assert shown["制度.txt"] == format_size(sizes["制度.txt"]) != "0 KB"  # (it showed 0.1)
