"""The running text of an HTML page: paragraphs, titles, lists and examples, without navigation or index terms.

For documentation shipped as HTML (Debian's ``debian-handbook``, read by ``lorita.lm.corpus`` as the
``debian-handbook`` text source). Python's own ``html.parser``; nothing in the page is run or fetched.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

SKIPPED_TAGS = {"script", "style", "head"}
SKIPPED_CLASSES = {"toc", "indexterm", "navheader", "navfooter", "docnav", "breadcrumbs", "index"}
BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "li", "dt", "dd", "pre", "tr", "br", "title"}
VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr"}


class _RunningText(HTMLParser):
    """Collects text outside skipped tags and classes, a line break around every block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.open: list[bool] = []  # per open element: whether it (or an ancestor) is skipped

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        skipped = (bool(self.open) and self.open[-1]) or tag in SKIPPED_TAGS or bool(classes & SKIPPED_CLASSES)
        if tag in BLOCKS:
            self.parts.append("\n")
        if tag not in VOID:
            self.open.append(skipped)

    def handle_endtag(self, tag):
        if tag not in VOID and self.open:
            self.open.pop()
        if tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not (self.open and self.open[-1]):
            self.parts.append(data)


def html_text(html: str) -> str:
    """The running text of ``html``: one line per block, blank lines collapsed, spaces squeezed.

    Example:
        >>> html_text('<html><head><title>T</title></head><body><div class="navheader">Prev Next</div>'
        ...           '<h1>Title</h1><p>One <em>para</em>graph &amp; more.</p><span class="indexterm">x</span>'
        ...           '<ul><li>a</li><li>b</li></ul></body></html>')
        'Title\\n\\nOne paragraph & more.\\n\\na\\n\\nb'
    """
    parser = _RunningText()
    parser.feed(html)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
