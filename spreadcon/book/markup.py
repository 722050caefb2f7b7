"""What a record says, shown as text: the one escaping function of the book's tables.

A record's strings (its device, git commit, torch version, dataset and method
names, ...) are data. The chapters display tables as Markdown, which MyST
parses with raw HTML allowed, so a device recorded as
``<img src=x onerror=alert(1)>`` would become an element of the published
page. Every table and sentence builder in :mod:`spreadcon.book` passes such
strings through :func:`escape_md` before they reach Markdown.

Example:
    >>> escape_md("<script>alert(1)</script>")
    '\\\\<script\\\\>alert(1)\\\\</script\\\\>'
    >>> escape_md("cuda:0 (NVIDIA H100)"), escape_md("2.14.1+cu130"), escape_md(3)
    ('cuda:0 (NVIDIA H100)', '2.14.1+cu130', '3')
"""

from __future__ import annotations

import re

__all__ = ["escape_md"]

# Characters that start Markdown or MyST markup inline, end a table cell, or open
# HTML: a backslash escape makes each one literal text (CommonMark: any ASCII
# punctuation may be escaped). Characters that matter only at the start of a line
# (#, -, +, >, 1.) are safe once the text is one line inside a cell or a sentence.
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|$&~])")


def escape_md(value: object) -> str:
    """``str(value)`` as Markdown that renders as exactly that text, on one line.

    Whitespace runs (newlines included: a newline would end a table row) become
    one space; every character in ``\\ ` * _ { } [ ] < > | $ &  ~`` gets a
    backslash, so no HTML element, link, code span, emphasis, math, MyST role or
    substitution, and no extra table column, can come out of it. Text without
    those characters (commit hashes, ``cuda:0``, ``2.14.1+cu130``, dataset and
    method names) is returned unchanged.
    """
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
