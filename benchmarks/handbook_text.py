"""The Debian Administrator's Handbook as plain-text documents: broad English prose for recovery text.

Debian's package ``debian-handbook`` (GPL-2+ or CC-BY-SA 3.0) ships the book as HTML pages. This
writes the running text of each English page (its paragraphs, titles, lists and examples; no
navigation, table of contents or index terms) to ``OUT/<page>.txt``, one document per page, for
``lorita compress ... --texts fortunes python-docs OUT`` (a folder of UTF-8 files is a text source).
The book quotes no licence text in full, so the Debian licence texts stay unseen.

    apt-get install debian-handbook
    python benchmarks/handbook_text.py runs/handbook-text
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

PAGES = Path("/usr/share/doc/debian-handbook/html/en-US")
SKIPPED_TAGS = {"script", "style", "head"}
SKIPPED_CLASSES = {"toc", "indexterm", "navheader", "navfooter", "docnav", "breadcrumbs", "index"}
BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "li", "dt", "dd", "pre", "tr", "br", "title"}


class RunningText(HTMLParser):
    """The text of an HTML page outside skipped tags and classes, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.open: list[bool] = []  # per open element: whether it (or an ancestor) is skipped
        self.void = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr"}

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        skipped = (bool(self.open) and self.open[-1]) or tag in SKIPPED_TAGS or bool(classes & SKIPPED_CLASSES)
        if tag in BLOCKS:
            self.parts.append("\n")
        if tag not in self.void:
            self.open.append(skipped)

    def handle_endtag(self, tag):
        if tag not in self.void and self.open:
            self.open.pop()
        if tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not (self.open and self.open[-1]):
            self.parts.append(data)

    def text(self) -> str:
        lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="a new folder for the text files")
    p.add_argument("--pages", type=Path, default=PAGES, help="the book's English HTML pages")
    args = p.parse_args(argv)
    pages = sorted(args.pages.glob("*.html"))
    if not pages:
        print(f"no HTML pages in {args.pages}: apt-get install debian-handbook", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=False)
    chars = 0
    for page in pages:
        parser = RunningText()
        parser.feed(page.read_text(encoding="utf-8"))
        text = parser.text()
        if len(text) >= 200:  # skip pages that are only a title and links
            (args.out / f"{page.stem}.txt").write_text(text + "\n", encoding="utf-8")
            chars += len(text)
    print(f"{len(list(args.out.glob('*.txt')))} documents, {chars:,} characters, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
