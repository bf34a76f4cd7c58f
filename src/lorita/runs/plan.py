"""The trainings an experiment makes for each seed, known before any of them runs.

``lorita experiment CONFIG --dry-run`` prints them, and every experiment logs them before its first
training: each training's run folder, the columns it serves, its epochs and its penalty exposure
(``lorita.train.exposure``: how hard its weight decay pushes towards low rank), from the recipes
``ExperimentSpec`` derives (each side's changes, the fine-tuned columns' shorter runs, a warm
start, the target's own plain model). Only the training split's size is needed, for the steps
per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorita.runs.experiment_spec import ExperimentSpec, column_label
from lorita.runs.factorized import FACTORIZED
from lorita.runs.small_dense import SMALL_DENSE
from lorita.train import TrainConfig
from lorita.train.exposure import describe_exposure, penalty_exposure, steps_per_epoch

_SEARCHES = {SMALL_DENSE: "the smaller dense model's search", FACTORIZED: "the factorized model's search"}

__all__ = ["ExperimentPlan", "PlannedTraining", "planned_trainings"]


@dataclass(frozen=True)
class PlannedTraining:
    """One training of one seed: ``folder`` (its run folder in the seed's folder; for the smaller dense model,
    a description: it trains once per size its search tries), the ``columns`` it serves, the factors per
    composed layer (``depth``, 1: plain), its ``recipe``, optimizer ``steps`` per epoch, and the fine-tuning
    recipe its cuts get afterwards (``finetune``), if any."""

    folder: str
    columns: tuple[str, ...]
    depth: int
    recipe: TrainConfig
    steps: int
    finetune: TrainConfig | None = None

    @property
    def exposure(self) -> float:
        """Its penalty exposure (``lorita.train.exposure.penalty_exposure``)."""
        return penalty_exposure(self.recipe, self.steps, self.depth)

    def describe(self) -> str:
        """One line: folder, epochs, fine-tuning, columns, exposure."""
        then = f" (then {self.finetune.epochs} of fine-tuning)" if self.finetune is not None else ""
        return (f"{self.folder}: {self.recipe.epochs} epochs{then} for {', '.join(self.columns)}; "
                f"{describe_exposure(self.recipe, self.steps, self.depth)}")


def planned_trainings(spec: ExperimentSpec, train_examples: int, *, world_size: int = 1,
                      torch_pruning: bool = False) -> list[PlannedTraining]:
    """The trainings ``spec`` makes for each seed, in the order it makes them, for a training split of
    ``train_examples`` examples (``world_size`` processes); ``torch_pruning``: whether the Torch-Pruning column
    runs (it fine-tunes the plain short run's cuts).

    Example:
        >>> spec = ExperimentSpec.from_flat({"name": "x", "model": "fcn", "dataset": "digits", "depths": [1, 2],
        ...     "finetune_epochs": 2, "train": {"epochs": 10, "lr": 0.5, "weight_decay": 1e-3,
        ...     "schedule": "constant"}})
        >>> plan = planned_trainings(spec, 1280)
        >>> [(p.folder, p.recipe.epochs, round(p.exposure, 2)) for p in plan]
        [('depth1', 10, 0.5), ('depth2', 10, 1.0), ('depth1-short', 8, 0.4), ('depth2-short', 8, 0.8)]
    """
    recipe, columns = spec.recipe, spec.columns
    train = recipe.train
    steps = steps_per_epoch(train_examples, train.batch_size, world_size)
    depths = sorted(set(recipe.depths))
    plan = []
    if recipe.warm_start_epochs:
        plan.append(PlannedTraining("warm-start", ("the LoRITa depths' warm start",), 1, spec.warm_recipe(train),
                                    steps))

    def trained(depth: int, full: TrainConfig) -> TrainConfig:  # a warm-started LoRITa depth trains the rest
        return spec.warm_rest_recipe(full) if depth > 1 and recipe.warm_start_epochs else full

    for depth in depths:
        served = [column_label(depth, False)] + (["plain + whitened SVD"] if depth == 1 and columns.calibrate else [])
        plan.append(PlannedTraining(f"depth{depth}", tuple(served), depth,
                                    trained(depth, recipe.for_depth(train, depth)), steps))
    target = spec.target_recipe(train)
    if target is not None:
        plan.append(PlannedTraining("depth1-target", ("the target's plain model",), 1,
                                    target, steps))
    if columns.finetune_epochs:
        for depth in depths:
            served = [column_label(depth, True)]
            if depth == 1:
                served += (["plain + whitened SVD + FT"] if columns.calibrate else []) + \
                          (["Torch-Pruning + FT"] if torch_pruning else [])
            plan.append(PlannedTraining(f"depth{depth}-short", tuple(served), depth,
                                        trained(depth, spec.short_recipe(train, depth)), steps,
                                        finetune=spec.finetune_recipe(train, depth)))
    if columns.small_dense:
        plan.append(PlannedTraining("(one narrower model per size its search tries)", (SMALL_DENSE,), 1,
                                    recipe.for_depth(train, 1), steps))
    if columns.factorized:
        plan.append(PlannedTraining("(one factorized model per size its search tries)", (FACTORIZED,), 1,
                                    recipe.for_depth(train, 1), steps))
    return plan


@dataclass(frozen=True)
class ExperimentPlan:
    """An experiment's trainings for each seed (``trainings``) on a training split of ``train_examples``."""

    spec: ExperimentSpec
    train_examples: int
    trainings: tuple[PlannedTraining, ...]

    def lines(self) -> list[str]:
        """The plan as ``lorita experiment --dry-run`` prints it: a heading, one line per training, the totals.

        Example:
            >>> spec = ExperimentSpec.from_flat({"name": "x", "model": "fcn", "dataset": "digits", "depths": [1, 2],
            ...     "train": {"epochs": 10, "lr": 0.05, "weight_decay": 1e-3, "schedule": "constant"}})
            >>> print(ExperimentPlan(spec, 1280, tuple(planned_trainings(spec, 1280))).lines()[-1])
            2 trainings a seed, 20 epochs in all, x 1 seed(s): 20 epochs of 10 steps
        """
        spec, plan = self.spec, self.trainings
        seeds = spec.recipe.seed_list
        searched = [p for p in plan if p.columns[0] in _SEARCHES]  # a training per size tried
        fixed = [p for p in plan if p not in searched]
        epochs = sum(p.recipe.epochs for p in fixed)
        steps = plan[0].steps if plan else 0
        lines = [f"[{spec.name}] plan: {spec.setup.model} on {spec.setup.dataset}, {self.train_examples:,} training "
                 f"examples ({steps} steps per epoch), seeds {' '.join(map(str, seeds))}; nothing is trained or "
                 "written"]
        lines += [f"  {p.describe()}" for p in plan]
        more = (["each fine-tuned cut"] if any(p.finetune for p in plan) else []) + \
            [_SEARCHES[p.columns[0]] for p in searched]
        plus = f", plus {' and '.join(more)}" if more else ""
        lines.append(f"{len(fixed)} trainings a seed, {epochs} epochs in all, x {len(seeds)} seed(s): "
                     f"{epochs * len(seeds)} epochs of {steps} steps{plus}")
        return lines
