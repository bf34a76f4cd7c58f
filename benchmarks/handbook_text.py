"""The ``debian-handbook`` text source written out as plain-text files, one per document.

``lorita.lm.corpus.read_documents("debian-handbook")`` (the running text of each English page of
Debian's ``debian-handbook`` package) to ``OUT/<page>.txt``: the same documents as a
folder, for tools other than lorita or for reading them. The bar run of docs/LM.md with the handbook
(``docs/lm/bar-width-handbook/``) was made with such a folder (``--texts fortunes python-docs FOLDER``);
``--texts fortunes python-docs debian-handbook`` reads the same documents in the same order.

    apt-get install debian-handbook
    python benchmarks/handbook_text.py runs/handbook-text
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lorita.data.datasets import DataNotFoundError
from lorita.lm.corpus import HANDBOOK_DIR, read_documents


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="a new folder for the text files")
    args = p.parse_args(argv)
    try:
        docs = read_documents("debian-handbook")
    except DataNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    pages = [page.stem for page in sorted(HANDBOOK_DIR.glob("*.html"))]  # the order the source reads them in
    if len(pages) != len(docs):  # a short page was skipped: number the documents instead of naming them
        pages = [f"{i:03d}" for i in range(len(docs))]
    if args.out.exists():
        print(f"{args.out} exists; name a new folder", file=sys.stderr)
        return 2
    staging = args.out.with_name(f".{args.out.name}.partial")  # OUT appears only when complete
    try:
        staging.mkdir(parents=True)
    except FileExistsError:
        print(f"{staging} is left from an earlier run of this script; remove it and run again", file=sys.stderr)
        return 2
    for name, text in zip(pages, docs):
        (staging / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    staging.rename(args.out)
    print(f"{len(docs)} documents, {sum(map(len, docs)):,} characters, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
