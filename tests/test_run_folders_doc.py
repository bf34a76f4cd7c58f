"""docs/RUN_FOLDERS.md names every file, folder and results key the commands write."""

import json
import re
from pathlib import Path

import pytest

from lorita.cli import main

DOC = (Path(__file__).resolve().parent.parent / "docs" / "RUN_FOLDERS.md").read_text(encoding="utf-8")


def documented(name: str) -> bool:
    return f"`{name}`" in DOC or f"`{name}/`" in DOC or f'"{name}"' in DOC


def generic(name: str) -> str:
    return re.sub(r"^(depth|seed)\d+", r"\1N", name)


@pytest.mark.slow
def test_run_folders_doc_names_what_the_commands_write(tmp_path):
    demo, report = tmp_path / "demo", tmp_path / "report"
    assert main(["demo", "--dataset", "digits", "--epochs", "3", "--finetune-epochs", "1", "--warm-start-epochs", "1",
                 "--width", "16", "--hidden-layers", "1", "--depths", "1", "2", "--points", "3", "--sizes", "0.5",
                 "--seeds", "0", "1", "--no-torch-pruning", "--no-progress", "--out", str(demo)]) == 0
    assert main(["evaluate", str(demo / "seed0" / "depth2"), "--write"]) == 0
    assert main(["report", str(demo / "seed0" / "depth1"), str(demo / "seed0" / "depth2"),
                 "--out", str(report), "--no-progress"]) == 0
    names = {generic(p.name) for root in (demo, report) for p in root.rglob("*")}
    missing = sorted(n for n in names if not documented(n))
    assert not missing, f"docs/RUN_FOLDERS.md does not name {missing}"
    keys = set()
    for path in demo.rglob("results.json"):
        keys |= set(json.loads(path.read_text()))
    undocumented = sorted(k for k in keys if f'"{k}"' not in DOC)
    assert not undocumented, f"docs/RUN_FOLDERS.md does not name the results.json keys {undocumented}"
