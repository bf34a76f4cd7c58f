"""LoRITa in a plain ``accelerate`` loop: the example of docs/TRAINER.md, run as written (tiny GPT-2, CPU).

The block is read from the doc and executed, so the doc cannot drift from what is tested.
It composes before the optimizer, trains 3 steps through ``accelerator.prepare``, merges
and saves; the unmodified class must load the folder with no missing, unexpected or
mismatched keys and give the merged model's outputs exactly (the same float32 tensors).
"""

import re
import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import lorita  # noqa: E402
from lorita.composed import COMPOSED_TYPES  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "TRAINER.md"


def accelerate_example() -> str:
    section = DOC.read_text().split("## With `accelerate`", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_accelerate_example_trains_composed_and_saves_a_folder_the_plain_class_loads(tmp_path):
    scope = {"out": str(tmp_path / "plain")}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")  # GPT-2's tied lm_head stays plain
        exec(compile(accelerate_example(), str(DOC), "exec"), scope)
    trained = scope["accelerator"].unwrap_model(scope["model"])
    assert sum(isinstance(m, COMPOSED_TYPES) for m in trained.modules()) == 8  # 4 Conv1D layers a block, 2 blocks
    decayed = {id(p) for group in scope["optimizer"].param_groups if group["weight_decay"] > 0
               for p in group["params"]}
    factors = [p for m in trained.modules() if isinstance(m, COMPOSED_TYPES)
               for name, p in m.named_parameters() if name != "bias"]
    assert factors and all(id(p) in decayed for p in factors)
    torch.manual_seed(0)  # as the example: the model it started from
    start = transformers.GPT2LMHeadModel(scope["config"])
    moved = [name for name, before in start.named_parameters() if name.endswith(".weight") and ".h." in name
             and before.dim() == 2 and not torch.equal(before, scope["plain"].get_parameter(name))]
    assert len(moved) == 8  # every composed layer's weight was trained, not only saved
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(scope["out"], output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and info["error_msgs"] == []
    x = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(trained.eval()(x).logits, scope["plain"](x).logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.eval()(x).logits, scope["plain"](x).logits, atol=0, rtol=0)
        torch.testing.assert_close(scope["again"].eval()(x).logits, scope["plain"](x).logits, atol=0, rtol=0)
