"""The examples in the docstrings of the scripts outside the package (benchmarks/, experiments/, scripts/).

pytest's ``--doctest-modules`` collects only ``tests`` and ``src/lorita`` (pyproject's ``testpaths``): the
scripts are not importable as a package, so their examples are run here, each script imported from its file
with its own folder on ``sys.path`` (as ``python benchmarks/x.py`` would have it).
"""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path for folder in ("benchmarks", "experiments", "scripts") for path in (ROOT / folder).glob("*.py")
                 if ">>>" in path.read_text(encoding="utf-8"))


def _import(path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_some_scripts_have_examples():
    assert len(SCRIPTS) >= 3, SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_script_examples_hold(path, monkeypatch):
    module = _import(path, monkeypatch)
    result = doctest.testmod(module, verbose=False, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {path.name} failed (output above)"
    sys.modules.pop(module.__name__, None)
