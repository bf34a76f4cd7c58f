"""The README runs as written: its Python blocks in order, and its command-line walk-through in order."""

import doctest
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _walkthrough():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("transformers")
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    # The bar: a composed MLP without normalisation, the README's recipe, 5 epochs on digits, learns.
    accuracy, dense, test_set = namespace["accuracy"], namespace["dense"], namespace["test_set"]
    assert accuracy(dense, test_set) >= 85.0
    assert not namespace["again"].training and not namespace["again_lm"].training  # lorita.load: eval mode
    assert (tmp_path / "small.lorita").is_file()


def test_walkthrough_commands_are_read_from_the_readme():
    module = _walkthrough()
    assert doctest.testmod(module).failed == 0
    lines = module.commands(README)
    assert lines[0].startswith("lorita") and any(line.startswith("torchrun") for line in lines)
    assert not any("..." in line for line in lines)  # no placeholders: every line runs as written


@pytest.mark.slow
def test_readme_command_line_walkthrough_runs_in_order(tmp_path):
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("the walk-through's GPT lines read Debian's fortunes (apt-get install fortunes)")
    if shutil.which("bash") is None or not torch.distributed.is_available():
        pytest.skip("needs bash and torch.distributed")
    module = _walkthrough()
    times = module.run(tmp_path, module.commands(README), log=lambda line: None)
    assert (tmp_path / "runs" / "fcn-d3" / "model.lorita").is_file()
    assert len(times) == len(module.commands(README))
