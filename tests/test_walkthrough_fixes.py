"""Items of a fresh-eyes walkthrough of the app in Chromium (issue 22's polish, issue 21's pinpointed
answers) that AppTest or a plain call can check; the visual ones are in tests/test_browser_walkthrough.py."""
import pytest

from test_ui_everyday import app, ask, click, two_docs  # noqa: F401 - fixture


def dialog_elements(at) -> list:
    """The Markdown and caption elements inside the open dialog (st.dialog), in page order."""
    found = []

    def walk(node, inside: bool) -> None:
        proto = getattr(node, "proto", None)
        if type(node).__name__ == "Block" and proto is not None and proto.WhichOneof("type") == "dialog":
            inside = True
        if inside and type(node).__name__ in ("Markdown", "Caption"):
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child, inside)

    walk(at._tree, False)
    return found


# --- 1. the citation dialog shows the passage once -------------------------------------------------
def test_citation_dialog_shows_the_passage_once_inside_its_context(two_docs):  # noqa: F811
    at = app("chat")
    ask(at, "长江全长多少公里？")
    click(at, "\\[1\\] rivers\\.txt", exact=False)
    shown = dialog_elements(at)
    assert shown, "the dialog did not open"
    boxes = [e.value for e in shown if "wendao-passage" in e.value]
    assert len([b for b in boxes if "它发源于青藏高原" in b]) == 1, boxes  # was twice: passage, then context
    assert 'class="wendao-cited"' in boxes[0] and "<mark" in boxes[0]  # the passage shaded, the quote marked
