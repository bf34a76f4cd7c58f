"""lorita.runs.experiment_spec's PLAIN_SIDE and LORITA_SIDE: a setting of one side changes nothing the other side's
trainings, fine-tuning, cuts or target are made from (``lorita.runs.measured_cuts`` takes that side's cuts from a
run that differs in it)."""

from types import SimpleNamespace

import pytest

from lorita.runs import ExperimentSpec
from lorita.runs.experiment_spec import LORITA_SIDE, PLAIN_SIDE
from lorita.runs.reuse import comparable_config

BASE = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
        "depths": [1, 2], "finetune_epochs": 2, "train": {"epochs": 6, "lr": 0.05, "weight_decay": 0.001}}
# one valid change of every one-sided key
CHANGES = {"lorita_train": {"lr": 0.01}, "lorita_finetune_epochs": 1, "lorita_cut_rule": "loss",
           "init": "default", "init_scale": 0.5, "factor_side": "smaller", "warm_start_epochs": 1,
           "warm_start_lr": 0.01, "warm_start_weight_decay": 0.01,
           "plain_train": {"lr": 0.01}, "plain_finetune_epochs": 1, "plain_cut_rule": "loss", "torch_pruning": False,
           "prune_rounds": 2, "prune_importance": "l2", "calibrate": 4, "small_dense": True,
           "small_dense_refine": 1, "factorized": True, "factorized_refine": 1, "target_train": {"lr": 0.01}}
DATA = SimpleNamespace(name="digits", model_inputs={"num_classes": 10, "in_channels": 1, "image_size": 8})


def _side(spec: ExperimentSpec, depth: int) -> dict:
    """What one side's columns are made from, besides the target: its training's config (compared as reuse
    compares it), its shorter training's and fine-tuning's recipes, how it cuts, its warm start."""
    train = spec.recipe.train
    view = {"run": comparable_config(spec.run_config(DATA, depth, spec.recipe.for_depth(train, depth)).to_dict()),
            "short": spec.short_recipe(train, depth).to_dict(),
            "finetune": spec.finetune_recipe(train, depth).to_dict(),
            "svd": spec.columns.svd(depth), "whitened": spec.columns.svd(depth, whitened=True) if depth == 1 else None}
    if depth > 1 and spec.recipe.warm_start_epochs:
        view["warm"] = (spec.warm_recipe(train).to_dict(), spec.warm_rest_recipe(train).to_dict())
    return view


def test_every_one_sided_key_has_a_change_to_try():
    assert set(CHANGES) == set(PLAIN_SIDE) | set(LORITA_SIDE)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_a_setting_of_one_side_leaves_the_other_side_as_it_was(key):
    flat = {**BASE, "warm_start_epochs": 2} if key in ("warm_start_lr", "warm_start_weight_decay") else BASE
    base = ExperimentSpec.from_flat(flat)
    changed = ExperimentSpec.from_flat({**flat, key: CHANGES[key]})
    other = 2 if key in PLAIN_SIDE else 1
    assert _side(changed, other) == _side(base, other)
    assert _side(changed, 3 - other) != _side(base, 3 - other) or key in (
        "torch_pruning", "prune_rounds", "prune_importance", "small_dense", "small_dense_refine", "factorized",
        "factorized_refine", "target_train", "calibrate")  # these change only the plain columns (or the target)
