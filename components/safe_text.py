"""Inert rendering of untrusted text (document content, file names, KB names, LLM output).

Streamlit renders almost every string as Markdown: st.markdown, alerts, captions, toasts and even
widget labels turn `![](http://host/?q=…)` into an image the browser fetches, `[x](http://…)`
into a live link and `www.host` into an autolink. Everything a stranger wrote goes through
`inert()` before it reaches a Markdown surface, and through `html_text()` before it is placed
inside our own HTML (passage boxes). Our own formatting (bold labels, citation chips) is added
around the escaped text by the caller.
"""
from __future__ import annotations

import html
import re
import string

# Every ASCII punctuation character can be backslash-escaped in CommonMark; escaping all of them
# also breaks GFM autolinks (http\:\/\/, www\.), emoji and icon shortcodes (\:), LaTeX (\$),
# directives like :red[…] and raw HTML (\<).
_PUNCT = frozenset(string.punctuation)
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x0b\x0c\x85]")
# Streamlit's renderer finds GFM autolink literals (http://…, www.…, a@b.c) and emoji / icon
# shortcodes (:smile:, :material/home:) in the text *after* escapes are resolved, so escaping
# alone leaves them live. An invisible WORD JOINER (U+2060) inside each pattern defuses it.
_WJ = "\u2060"
_DEFUSE = re.compile(r"(?i)(https?)(?=://)|(www)(?=\.)|(?=@)|(:)")


def _escape_line(line: str) -> str:
    # Leading blanks would start an indented code block; they carry no meaning in our text.
    line = _DEFUSE.sub(lambda m: (m.group(0) or "") + _WJ, line.lstrip(" \t"))
    return "".join("\\" + ch if ch in _PUNCT else ch for ch in line)


def inert(text: object, *, keep_lines: bool = True) -> str:
    """Markdown source that displays `text` literally: no links, images, HTML, emphasis, math
    or icons. With keep_lines (default) line breaks are kept as hard breaks; otherwise the text
    becomes one line (for labels, captions and other single-line places)."""
    lines = _NEWLINES.sub("\n", str(text)).split("\n")
    if not keep_lines:
        return " ".join(_escape_line(line) for line in lines if line.strip())
    return "  \n".join(_escape_line(line) for line in lines)


def html_text(text: object) -> str:
    """`text` as HTML character data for our own HTML blocks: tags and entities escaped, every
    kind of line break turned into <br>, so no blank line can end the HTML block and let the
    rest be parsed as Markdown."""
    return _NEWLINES.sub("\n", html.escape(str(text))).replace("\n", "<br>")


# A URL up to the first blank, quote or CJK / closing punctuation (so "地址 http://h/v1，请检查" ends at "v1").
_URL = re.compile(r"(?i)(?:https?://|www\.)[^\s`\"'<>，。；、！？：）」』】]*[^\s`\"'<>，。；、！？：）」』】.,;:!?)]")


def inert_code_urls(text: object) -> str:
    """Like inert(), but every URL (an endpoint in a notice or an error) is shown as inline code:
    readable, never an auto-link that swallows the Chinese text after it."""
    lines = _NEWLINES.sub("\n", str(text)).split("\n")
    out = []
    for line in lines:
        parts, pos = [], 0
        for m in _URL.finditer(line):
            if m.start() > pos:
                parts.append(inert(line[pos:m.start()], keep_lines=False))
            parts.append(f" `{m.group(0)}` ")
            pos = m.end()
        if pos < len(line):
            parts.append(inert(line[pos:], keep_lines=False))
        out.append("".join(parts).strip())
    return "  \n".join(out)


def inert_name(name: object) -> str:
    """A file or KB name for a Markdown surface: control characters and bidi overrides made visible
    (services.documents.text.display_name), then inert() on one line."""
    from services.views import display_name

    return inert(display_name(name), keep_lines=False)
