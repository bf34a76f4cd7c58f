"""The README runs as written: its Python blocks in order, its install lines, its scripts, its command-line
walk-through in order."""

import doctest
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CHECK = "README-CHECK "
# Appended to the README's Python blocks: what the bar asks of them, read back as JSON.
TRAILER = f"""
import json as _json
print({CHECK!r} + _json.dumps({{
    "plain_mlp_test_accuracy": accuracy(dense, test_set),      # the quick start's MLP, no normalisation
    "loaded_training": [again.training, again_lm.training],     # lorita.load: eval mode
    "whiten_reachable": hasattr(lorita, "whiten"),
}}))
"""


def _walkthrough():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_python_blocks_run_in_order_in_a_fresh_interpreter(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("transformers")
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 4
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(blocks) + TRAILER, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checked = json.loads(done.stdout.split(CHECK, 1)[1].splitlines()[0])
    # The bar: a composed MLP without normalisation, the README's recipe, 5 epochs on digits, learns.
    assert checked["plain_mlp_test_accuracy"] >= 85.0, done.stdout
    assert checked["loaded_training"] == [False, False]
    assert checked["whiten_reachable"]
    assert (tmp_path / "small.lorita").is_file() and (tmp_path / "small-gpt2.lorita").is_file()
    assert (tmp_path / "runs" / "hf-gpt2" / "final" / "config.json").is_file()  # the Trainer example's checkpoint


def test_readme_install_lines_are_what_setup_runs():
    # CI (.ci/run) runs the README's install block as written; scripts/setup.sh, which scripts/test.sh calls,
    # must install the same pinned torch and the same editable lorita, and every extra named must exist.
    module = _walkthrough()
    install = module.commands(README, "install")
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    torch_pin = re.search(r'pip install "torch==([\d.]+)"', " ".join(install)).group(1)
    assert f'"torch=={torch_pin}"' in setup
    assert any('pip install -e ".[cli]"' in line for line in install) and 'install -q -e ".[${extras}]"' in setup
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^(\w+) = \[", section, re.M))
    named = set(re.findall(r"`(\w+)`\s+\(", README.split("## Install", 1)[1].split("\n## ", 1)[0]))
    assert named == extras, (named, extras)


def test_ci_runs_the_readme_scripts_as_the_readme_writes_them():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    scripts = re.findall(r"^(bash scripts/\S+\.sh.*?)\s*(?:#.*)?$", ci, re.M)
    assert {"bash scripts/test.sh", "bash scripts/demo.sh"} <= \
        {" ".join(s.split()[:2]) for s in scripts}
    for line in scripts:  # as the README writes it, CI's own output folder and quiet progress aside
        core = re.sub(r"\s+(--no-progress|--out\s+\S+)", "", line)
        assert f"`{core}`" in README or f"\n{core} " in README or f"\n{core}\n" in README, core
    assert "readme_commands.py --print install" in ci  # the install block, as written


def test_walkthrough_commands_are_read_from_the_readme():
    module = _walkthrough()
    assert doctest.testmod(module).failed == 0
    lines = module.commands(README)
    assert lines[0].startswith("lorita") and any(line.startswith("torchrun") for line in lines)
    assert not any("..." in line for line in lines)  # no placeholders: every line runs as written
    assert "WALK_" not in README  # the walk-through's times are filled in


@pytest.mark.slow
def test_readme_command_line_walkthrough_runs_in_order(tmp_path):
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("the walk-through's GPT lines read Debian's fortunes (apt-get install fortunes)")
    if shutil.which("bash") is None or not torch.distributed.is_available():
        pytest.skip("needs bash and torch.distributed")
    module = _walkthrough()
    times = module.run(tmp_path, module.commands(README), log=lambda line: None)
    assert (tmp_path / "runs" / "fcn-d3" / "model.lorita").is_file()
    assert (tmp_path / "runs" / "gpt-fsdp" / "results.json").is_file()
    assert len(times) == len(module.commands(README))
