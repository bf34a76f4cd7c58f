"""What one experiment runs, in the parts a reader thinks in: the model and data, the training recipe, the
columns compared, how cuts are chosen, and the report.

``ExperimentSpec.from_flat`` reads the flat keys of ``experiments/*.json`` (and ``lorita demo``'s
flags); ``flat()`` writes them back, as results.json records the spec.

Example:
    >>> spec = ExperimentSpec.from_flat({"name": "demo", "model": "fcn", "dataset": "digits", "max_drop": 0.5})
    >>> spec.recipe.depths, spec.cuts.max_drop, spec.cuts.judged_by.test
    ([1, 2, 3], 0.5, 'test_acc')
    >>> ExperimentSpec.from_flat(spec.flat()) == spec
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lorita import jsonio
from lorita.checks import check_choice, check_int, check_json_object, check_number, check_str, is_int, is_number
from lorita.compose import FACTOR_SIDES
from lorita.composed import MAX_DEPTH
from lorita.cutspec import RULES, Budget
from lorita.data.datasets import recorded_folder
from lorita.errors import LoritaError
from lorita.metric import Metric, metric_named
from lorita.models import paper_exclude
from lorita.prune import IMPORTANCES
from lorita.runs.compare import FIXED_SIZES
from lorita.runs.config import ComposeSpec, DataSpec, ModelSpec, RunConfig
from lorita.runs.data import TEXT_DATASETS
from lorita.train import TrainConfig
from lorita.train.config import MAX_RATE, MAX_SEED

# recipe fields every column shares: the budget (equal total epochs), the seed (pairing), where it runs
SHARED_FIELDS = frozenset({"epochs", "seed", "device"})

__all__ = ["Columns", "Cuts", "ExperimentSpec", "Recipe", "Report", "Setup", "column_depth", "column_label", "load_spec"]


def column_label(depth: int, finetuned: bool) -> str:
    """The label of an SVD column: "plain + SVD" at depth 1, "LoRITa N=2" at depth 2, "+ FT" when fine-tuned.

    Example:
        >>> column_label(1, False), column_label(2, True)
        ('plain + SVD', 'LoRITa N=2 + FT')
    """
    return ("plain + SVD" if depth == 1 else f"LoRITa N={depth}") + (" + FT" if finetuned else "")


def column_depth(label: str, depths: Iterable[int]) -> int | None:
    """The depth of the SVD column named ``label`` among an experiment's ``depths`` (``column_label``'s inverse),
    or None where ``label`` names no SVD column of those depths (Torch-Pruning, the smaller dense model, ...).

    Example:
        >>> column_depth("LoRITa N=3 + FT", [1, 2, 3]), column_depth("plain + SVD", [1, 2])
        (3, 1)
        >>> column_depth("small dense", [1, 2]) is None
        True
    """
    for depth in sorted(set(depths)):
        if label in (column_label(depth, False), column_label(depth, True)):
            return depth
    return None


def _check_bools(part: Any, *names: str) -> None:
    for what in names:
        if not isinstance(getattr(part, what), bool):
            raise LoritaError(f"{what} must be true or false, got {getattr(part, what)!r}")


@dataclass
class Setup:
    """The model and the data: a zoo model and its arguments, the dataset (``max_train`` caps its training split;
    ``steps_per_epoch``: text batches per epoch; ``fallback_to_digits``: digits where the dataset is missing)."""

    model: str
    dataset: str
    model_kwargs: dict = field(default_factory=dict)
    data_dir: str | None = None
    max_train: int | None = None
    steps_per_epoch: int | None = None
    fallback_to_digits: bool = False

    def __post_init__(self) -> None:
        check_str("model", self.model)
        check_str("dataset", self.dataset)
        check_json_object("model_kwargs", self.model_kwargs)
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        if self.max_train is not None:
            check_int("max_train (a positive number of examples)", self.max_train)
        if self.steps_per_epoch is not None:
            check_int("steps_per_epoch", self.steps_per_epoch)
        _check_bools(self, "fallback_to_digits")

    def data_spec(self, seed: int) -> DataSpec:
        return DataSpec(self.dataset, self.data_dir, seed=seed, max_train=self.max_train,
                        steps_per_epoch=self.steps_per_epoch)


@dataclass
class Recipe:
    """How each depth is trained: the recipe, the depths (1: the plain baseline), the composition, the seeds
    (None: the recipe's; each changes split, init and batch order), an optional plain warm start of the
    LoRITa depths (``warm_start_*``: its epochs, and the LoRITa phase's lr and weight decay), and each side's
    changes to the recipe (``plain_train``: depth 1 and the small dense model; ``lorita_train``: the LoRITa
    depths), e.g. ``{"warmup_epochs": 2}`` or ``{"lr": 0.025, "weight_decay": 0.002}``: a grid setting that
    changes one side leaves the other's recipe as it was. ``reuse``: earlier experiments' folders (one seed's, or
    one holding ``seedS`` folders), tried in order, whose training runs are copied where this experiment would
    train exactly the same run (``lorita.runs.reuse``), so such a setting trains only the side it changes (and a
    killed experiment, run again, only what it had not finished: a training it was in continues from its last
    finished epoch; warm-started trainings excepted, they train again). ``target_train``:
    the changes of the plain model that sets the target, when they are not ``plain_train``'s (None: they are),
    so every plain-side setting is judged at one target."""

    train: TrainConfig = field(default_factory=TrainConfig)
    depths: list[int] = field(default_factory=lambda: [1, 2, 3])
    init: str = "auto"  # lorita.compose's; "default" is the paper's
    init_scale: float | None = None
    factor_side: str = "input"
    exclude: list[str] | None = None  # None: the paper's choice for the model
    seeds: list[int] | None = None
    warm_start_epochs: int = 0
    warm_start_lr: float | None = None
    warm_start_weight_decay: float | None = None
    plain_train: dict = field(default_factory=dict)
    lorita_train: dict = field(default_factory=dict)
    reuse: list[str] = field(default_factory=list)
    target_train: dict | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        if not isinstance(self.train, TrainConfig):
            raise LoritaError(f"train must be an object of training-recipe fields, got {self.train!r}")
        for side in ("plain_train", "lorita_train", "target_train"):
            changes = getattr(self, side)
            if changes is None and side == "target_train":
                continue
            check_json_object(side, changes)
            fixed = sorted(set(changes) & SHARED_FIELDS)
            if fixed:
                raise LoritaError(f"{side} may not change {', '.join(fixed)}: every column shares them (set them in "
                                  "train)")
            try:
                TrainConfig.from_dict({**self.train.to_dict(), **changes})
            except LoritaError as err:
                raise LoritaError(f"{side}: {err}") from None
        if not isinstance(self.depths, list) or not self.depths or \
                not all(is_int(d) and 1 <= d <= MAX_DEPTH for d in self.depths):
            raise LoritaError(f"depths must be a list of integers from 1 to {MAX_DEPTH} (the most a lorita model file "
                              f"holds), got {self.depths!r}")
        if 1 not in self.depths:
            raise LoritaError("depths must include 1: the plain baseline every comparison is made against")
        if len(set(self.depths)) != len(self.depths):
            raise LoritaError(f"depths must name each depth once, got {self.depths!r}")
        ComposeSpec(init=self.init, init_scale=self.init_scale)  # checks init and init_scale
        check_choice("factor_side", self.factor_side, FACTOR_SIDES)
        ComposeSpec(exclude=self.exclude)  # a list of names or None
        if self.seeds is not None and (not isinstance(self.seeds, list) or not self.seeds
                                       or not all(is_int(x) and 0 <= x <= MAX_SEED for x in self.seeds)
                                       or len(set(self.seeds)) != len(self.seeds)):
            raise LoritaError(f"seeds must be a list of distinct integers from 0 to 2^64 - 1, got {self.seeds!r}")
        if not isinstance(self.reuse, list) or not all(isinstance(f, str) and f for f in self.reuse):
            raise LoritaError(f"reuse must be a list of earlier experiments' folders, got {self.reuse!r}")
        for what in ("warm_start_lr", "warm_start_weight_decay"):
            if getattr(self, what) is not None:
                check_number(what, getattr(self, what), minimum=0, low_open=what == "warm_start_lr", maximum=MAX_RATE)

    def for_depth(self, train: TrainConfig, depth: int) -> TrainConfig:
        """``train`` with the changes of ``depth``'s side (``plain_train`` at depth 1, else ``lorita_train``).

        Example:
            >>> Recipe(lorita_train={"warmup_epochs": 2}).for_depth(TrainConfig(epochs=9), 2).warmup_epochs
            2
        """
        changes = self.plain_train if depth == 1 else self.lorita_train
        return TrainConfig.from_dict({**train.to_dict(), **changes}) if changes else train

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.train.seed]


@dataclass
class Columns:
    """The alternatives, at equal total epochs: fine-tuned columns (trained ``finetune_epochs`` less, cut,
    fine-tuned at ``finetune_lr``, default lr / 10), Torch-Pruning + FT (None: when installed; in
    ``prune_rounds`` rounds that share the fine-tuning epochs, ``prune_importance`` "l1", "l2" or "taylor"),
    whitened SVD (``calibrate`` training batches; 0: none), the smaller dense model trained directly
    (``small_dense``; its crossing bisected ``small_dense_refine`` times: each size is a training), the factorized
    baseline of Khodak et al. trained at each size with spectral init and Frobenius decay (``factorized``,
    ``lorita.runs.factorized``; bisected ``factorized_refine`` times, each size a training), BatchNorm
    statistics re-estimated on ``batchnorm`` training batches after every cut (0: not), the params fractions
    every column is measured at, the bisection steps of a fine-tuned column's crossing of the target, and how
    every SVD-family column (plain, whitened, LoRITa; with or without fine-tuning) shares its ranks out among
    the layers at a size (``cut_rule``: ``"threshold"``, the paper's one global ``sigma / sigma_max``
    threshold; ``"loss"``, the least-loss allocation of ``lorita.ranks.budget_ranks``; the uncut columns' answer
    is then searched like the fine-tuned ones', while each depth's sweep, its plots and its saved view cuts stay
    the threshold sweep's; ``plain_cut_rule`` and ``lorita_cut_rule`` set one side's rule, null: ``cut_rule``), and
    whether every fine-tuned column's thin pairs are rebalanced before its fine-tuning (``finetune_rebalance``: the
    quantile of ``lorita.rebalance.rebalance_pairs``, 0.9 say; null: fine-tuned as cut)."""

    finetune_epochs: int = 0
    finetune_lr: float | None = None
    torch_pruning: bool | None = None
    calibrate: int = 0
    sizes: list[float] = field(default_factory=lambda: list(FIXED_SIZES))
    refine_sizes: int = 3
    batchnorm: int = 0
    small_dense: bool = False
    small_dense_refine: int = 2
    factorized: bool = False
    factorized_refine: int = 2
    prune_rounds: int = 1
    prune_importance: str = "l1"
    plain_finetune_epochs: int | None = None
    lorita_finetune_epochs: int | None = None
    cut_rule: str = "threshold"
    plain_cut_rule: str | None = None
    lorita_cut_rule: str | None = None
    finetune_rebalance: float | None = None

    def __post_init__(self) -> None:
        check_int("finetune_epochs", self.finetune_epochs, minimum=0)
        if self.finetune_rebalance is not None:
            check_number("finetune_rebalance", self.finetune_rebalance, minimum=0, maximum=1, low_open=True,
                         meaning="the quantile each thin pair is rebalanced to before fine-tuning; null: not")
            if not self.finetune_epochs:
                raise LoritaError("finetune_rebalance needs fine-tuned columns: set finetune_epochs too")
        if self.finetune_lr is not None:
            check_number("finetune_lr", self.finetune_lr, minimum=0, low_open=True, maximum=MAX_RATE)
        if self.torch_pruning not in (None, True, False):
            raise LoritaError(f"torch_pruning must be true, false or null (when installed), got {self.torch_pruning!r}")
        check_int("calibrate", self.calibrate, minimum=0)
        if not isinstance(self.sizes, list) or not self.sizes or \
                not all(is_number(x) and 0 < x < 1 for x in self.sizes):
            raise LoritaError(f"sizes must be a list of fractions in (0, 1) of the original params, got {self.sizes!r}")
        check_int("refine_sizes", self.refine_sizes, minimum=0)
        check_int("batchnorm", self.batchnorm, minimum=0,
                  meaning="training batches BatchNorm statistics are re-estimated on after every cut; 0: not")
        _check_bools(self, "small_dense", "factorized")
        check_int("small_dense_refine", self.small_dense_refine, minimum=0)
        check_int("factorized_refine", self.factorized_refine, minimum=0)
        check_int("prune_rounds", self.prune_rounds, meaning="Torch-Pruning rounds, fine-tuned between")
        check_choice("prune_importance", self.prune_importance, IMPORTANCES)
        check_choice("cut_rule", self.cut_rule, RULES)
        for side in ("plain_cut_rule", "lorita_cut_rule"):
            if getattr(self, side) is not None:
                check_choice(side, getattr(self, side), RULES)
        for side in ("plain_finetune_epochs", "lorita_finetune_epochs"):
            if getattr(self, side) is not None:
                check_int(side, getattr(self, side), meaning="this side's fine-tuning epochs; null: finetune_epochs")
                if not self.finetune_epochs:
                    raise LoritaError(f"{side} needs fine-tuned columns: set finetune_epochs too")

    def finetune_for(self, depth: int) -> int:
        """The fine-tuning epochs of ``depth``'s side (``plain_finetune_epochs`` or ``lorita_finetune_epochs``,
        else ``finetune_epochs``).

        Example:
            >>> Columns(finetune_epochs=2, lorita_finetune_epochs=4).finetune_for(2)
            4
        """
        side = self.plain_finetune_epochs if depth == 1 else self.lorita_finetune_epochs
        return self.finetune_epochs if side is None else side

    def cut_rule_for(self, depth: int) -> str:
        """How ``depth``'s side shares its ranks out (``plain_cut_rule`` or ``lorita_cut_rule``, else
        ``cut_rule``).

        Example:
            >>> Columns(lorita_cut_rule="loss").cut_rule_for(2), Columns(lorita_cut_rule="loss").cut_rule_for(1)
            ('loss', 'threshold')
        """
        side = self.plain_cut_rule if depth == 1 else self.lorita_cut_rule
        return self.cut_rule if side is None else side

    def svd(self, depth: int, whitened: bool = False) -> Budget:
        """How an SVD column of ``depth``'s side cuts to a size: its side's rule within the params (whitened:
        calibrated).

        Example:
            >>> Columns(cut_rule="loss", calibrate=16).svd(1, whitened=True).rule
            'loss'
        """
        return Budget(params=1.0, rule=self.cut_rule_for(depth), calibrate=self.calibrate if whitened else 0)


@dataclass
class Cuts:
    """How cuts are chosen on validation data: the metric (``"val_acc"``, or ``"val_loss"`` for language
    models: lower is better, ``max_drop`` in nats, ln 1.02 is +2% perplexity), the drop allowed, the sweep's
    points and refinement steps per target, and whether every swept cut is tested (False: only the chosen)."""

    metric: str = "val_acc"
    max_drop: float = 1.0
    points: int = 40
    refine_steps: int = 6
    test_every_cut: bool = True

    def __post_init__(self) -> None:
        check_choice("metric", self.metric, ("val_acc", "val_loss"))
        check_number("max_drop (accuracy points)", self.max_drop, minimum=0)
        check_int("points", self.points, minimum=2)
        check_int("refine_steps", self.refine_steps, minimum=0)
        _check_bools(self, "test_every_cut")

    @property
    def judged_by(self) -> Metric:
        """The ``lorita.metric.Metric`` of ``metric``."""
        return metric_named(self.metric)


@dataclass
class Report:
    """What the report adds: the bar (LoRITa keeps at most ``bar_ratio`` of the best alternative's params),
    for text, ``samples`` characters generated from ``sample_prompt`` by each chosen model (0: none), and the
    column named before the runs (``pre_registered``, e.g. "LoRITa N=2 + FT"), whose ratio to the best
    alternative over seeds, paired differences at the fixed sizes and K-sizes table the results add."""

    bar_ratio: float = 0.5
    samples: int = 0
    sample_prompt: str = "The "
    pre_registered: str | None = None

    def __post_init__(self) -> None:
        check_number("bar_ratio", self.bar_ratio, minimum=0, low_open=True)
        if self.pre_registered is not None:
            check_str("pre_registered", self.pre_registered)
        check_int("samples", self.samples, minimum=0)
        check_str("sample_prompt", self.sample_prompt)


_PARTS = {"setup": Setup, "recipe": Recipe, "columns": Columns, "cuts": Cuts, "report": Report}
# the flat keys of experiments/*.json, in the order results.json has always listed them
_FLAT = ("model", "dataset", "model_kwargs", "data_dir", "max_train", "depths", "init", "init_scale", "factor_side",
         "exclude",
         "train", "max_drop", "points", "refine_steps", "test_every_cut", "fallback_to_digits", "seeds",
         "finetune_epochs", "finetune_lr", "torch_pruning", "sizes", "refine_sizes", "metric", "calibrate",
         "steps_per_epoch", "samples", "sample_prompt", "warm_start_epochs", "warm_start_lr",
         "warm_start_weight_decay", "bar_ratio", "batchnorm", "small_dense", "small_dense_refine", "prune_rounds",
         "prune_importance", "pre_registered", "plain_train", "lorita_train", "plain_finetune_epochs",
         "lorita_finetune_epochs", "reuse", "target_train", "cut_rule", "plain_cut_rule", "lorita_cut_rule",
         "factorized", "factorized_refine", "finetune_rebalance")
_PART_OF = {f.name: part for part, cls in _PARTS.items() for f in fields(cls)}
assert set(_FLAT) == set(_PART_OF)
# The flat keys only one side's columns depend on besides the trainings they cut: the plain side's (depth 1: its
# recipe, its alternatives, the target's recipe, which counts for the other side through the target alone) and
# LoRITa's (depth 2 and up: its recipe, how its factors start, its warm start). A grid setting that changes one side
# leaves the other side's measured cuts valid (``lorita.runs.measured_cuts``); every other key counts for both.
PLAIN_SIDE = ("plain_train", "plain_finetune_epochs", "plain_cut_rule", "torch_pruning", "prune_rounds",
              "prune_importance", "calibrate", "small_dense", "small_dense_refine", "factorized", "factorized_refine",
              "target_train")
LORITA_SIDE = ("lorita_train", "lorita_finetune_epochs", "lorita_cut_rule", "init", "init_scale", "factor_side",
               "warm_start_epochs", "warm_start_lr", "warm_start_weight_decay")
assert set(PLAIN_SIDE + LORITA_SIDE) <= set(_FLAT) and not set(PLAIN_SIDE) & set(LORITA_SIDE)


@dataclass
class ExperimentSpec:
    """One experiment: its name and its parts."""

    name: str
    setup: Setup
    recipe: Recipe = field(default_factory=Recipe)
    columns: Columns = field(default_factory=Columns)
    cuts: Cuts = field(default_factory=Cuts)
    report: Report = field(default_factory=Report)

    def __post_init__(self) -> None:
        check_str("name", self.name)
        for part, cls in _PARTS.items():
            if not isinstance(getattr(self, part), cls):
                raise LoritaError(f"{part} must be a {cls.__name__}, got {getattr(self, part)!r}")
        epochs = self.recipe.train.epochs
        check_int("finetune_epochs", self.columns.finetune_epochs, minimum=0, maximum=epochs - 1)
        check_int("warm_start_epochs", self.recipe.warm_start_epochs, minimum=0,
                  maximum=epochs - self.columns.finetune_epochs - 1)
        columns = self.columns
        for side in ("plain_finetune_epochs", "lorita_finetune_epochs"):
            if getattr(columns, side) is not None:
                check_int(side, getattr(columns, side), maximum=epochs - 1)
        plain_ft = columns.finetune_for(1)
        if columns.finetune_epochs and columns.prune_rounds > plain_ft:
            raise LoritaError(f"prune_rounds ({columns.prune_rounds}) must be at most the plain side's fine-tuning "
                              f"epochs ({plain_ft}): the rounds share them, at least one each")
        plain_optimizer = self.recipe.for_depth(self.recipe.train, 1).optimizer
        if columns.factorized and plain_optimizer != "sgd":
            raise LoritaError(f"factorized trains with Frobenius decay added to the loss, which equals the plain "
                              f"model's weight decay only under SGD; the plain side's optimizer is {plain_optimizer!r}: "
                              "use optimizer 'sgd' or leave factorized off")
        named = self.report.pre_registered
        if named is not None and named not in self.lorita_columns():
            raise LoritaError(f"pre_registered must be one of this experiment's LoRITa columns "
                              f"({', '.join(self.lorita_columns())}), got {named!r}")
        if self.report.samples and self.setup.dataset not in TEXT_DATASETS:
            raise LoritaError(f"samples generates text from the chosen models; {self.setup.dataset!r} is an image "
                              "dataset: leave samples at 0")
        self.setup.data_spec(self.recipe.train.seed).check_applies()
        if self.columns.finetune_epochs:  # derived recipes checked before anything trains
            for depth in sorted(set(self.recipe.depths)):
                self.short_recipe(self.recipe.train, depth)
        if self.recipe.warm_start_epochs:
            self.warm_recipe(self.recipe.train)

    def short_recipe(self, train: TrainConfig, depth: int = 1) -> TrainConfig:
        """The recipe of a ``depth`` column fine-tuned after the cut: its side's recipe (``Recipe.for_depth``),
        that side's fine-tuning epochs fewer."""
        train = self.recipe.for_depth(train, depth)
        return _derived(train, "the fine-tuned columns", epochs=train.epochs - self.columns.finetune_for(depth),
                        fix="lower finetune_epochs (--finetune-epochs) or warmup_epochs, or raise epochs")

    def warm_recipe(self, train: TrainConfig) -> TrainConfig:
        """The warm start's recipe: plain, ``warm_start_epochs`` long."""
        return _derived(train, "the warm start", epochs=self.recipe.warm_start_epochs,
                        fix="lower warmup_epochs or raise warm_start_epochs")

    def warm_rest_recipe(self, train: TrainConfig) -> TrainConfig:
        """What a warm-started LoRITa depth trains after the warm start: ``train`` (its side's recipe) for the
        epochs the warm start left, no warm-up, at ``warm_start_lr`` / ``warm_start_weight_decay`` when given.

        Example:
            >>> spec = ExperimentSpec.from_flat({"name": "x", "model": "fcn", "dataset": "digits",
            ...     "train": {"epochs": 10}, "warm_start_epochs": 6, "warm_start_weight_decay": 0.002})
            >>> rest = spec.warm_rest_recipe(spec.recipe.train)
            >>> rest.epochs, rest.weight_decay
            (4, 0.002)
        """
        recipe = self.recipe
        return dataclasses.replace(
            train, epochs=train.epochs - recipe.warm_start_epochs, warmup_epochs=0,
            lr=recipe.warm_start_lr if recipe.warm_start_lr is not None else train.lr,
            weight_decay=recipe.warm_start_weight_decay if recipe.warm_start_weight_decay is not None
            else train.weight_decay)

    def target_recipe(self, train: TrainConfig) -> TrainConfig | None:
        """The recipe of the plain model that sets the target when it is not the plain columns' (``target_train``
        differs from ``plain_train``); None when the plain columns' model sets it.

        Example:
            >>> spec = ExperimentSpec.from_flat({"name": "x", "model": "fcn", "dataset": "digits",
            ...     "plain_train": {"weight_decay": 0.0005}, "target_train": {}})
            >>> spec.target_recipe(spec.recipe.train).weight_decay == spec.recipe.train.weight_decay
            True
        """
        recipe = self.recipe
        if recipe.target_train is None or recipe.target_train == recipe.plain_train:
            return None
        return TrainConfig.from_dict({**train.to_dict(), **recipe.target_train})

    @classmethod
    def from_flat(cls, values: dict) -> "ExperimentSpec":
        """From the flat keys of an experiment config (``name`` and the fields of every part)."""
        unknown = sorted(set(values) - set(_PART_OF) - {"name"})
        if unknown:
            raise LoritaError(f"unknown keys {unknown}; allowed: {sorted([*_PART_OF, 'name'])}")
        missing = [k for k in ("model", "dataset") if k not in values]
        if missing:
            raise LoritaError(f"missing {', '.join(missing)} (in 'common' or the recipe's section)")
        parts = {part: {} for part in _PARTS}
        for key, value in values.items():
            if key != "name":
                parts[_PART_OF[key]][key] = value
        return cls(values.get("name", "experiment"), **{part: _PARTS[part](**kw) for part, kw in parts.items()})

    def flat(self) -> dict:
        """The flat keys (``train`` as a dict), as results.json and config.json record the spec."""
        out = {"name": self.name}
        for key in _FLAT:
            value = getattr(getattr(self, _PART_OF[key]), key)
            out[key] = dataclasses.asdict(value) if key == "train" else value
        return out

    def lorita_columns(self) -> list[str]:
        """The labels of the LoRITa columns this experiment measures (one per depth above 1, and its "+ FT" when
        columns are fine-tuned)."""
        finetuned = (False, True) if self.columns.finetune_epochs else (False,)
        return [column_label(d, ft) for d in sorted(set(self.recipe.depths)) if d > 1 for ft in finetuned]

    def run_config(self, data, depth: int, train: TrainConfig) -> RunConfig:
        """The training run of one depth with recipe ``train``, on ``data`` (which may be the digits fallback)."""
        setup, recipe = self.setup, self.recipe
        exclude = paper_exclude(setup.model) if recipe.exclude is None else recipe.exclude
        name = setup.dataset if setup.dataset in TEXT_DATASETS else data.name  # the digits fallback is recorded
        return RunConfig(ModelSpec(setup.model, dict(setup.model_kwargs), data.model_inputs),
                         DataSpec(name, setup.data_dir if name == setup.dataset else None, seed=train.seed,
                                  max_train=setup.max_train, steps_per_epoch=setup.steps_per_epoch),
                         ComposeSpec(depth, recipe.init, "auto", recipe.factor_side, exclude, recipe.init_scale), train)

    def finetune_recipe(self, train: TrainConfig, depth: int = 1) -> TrainConfig:
        """The fine-tuning recipe after a cut of a ``depth`` model: its side's recipe (``train`` with that side's
        changes), that side's fine-tuning epochs long, cosine from ``finetune_lr`` (default: lr / 10), no warm-up."""
        train = self.recipe.for_depth(train, depth)
        lr = self.columns.finetune_lr if self.columns.finetune_lr is not None else train.lr / 10
        return dataclasses.replace(train, epochs=self.columns.finetune_for(depth), lr=lr, warmup_epochs=0,
                                   schedule="cosine")


def _derived(train: TrainConfig, who: str, fix: str, **changes) -> TrainConfig:
    """``train`` with ``changes``, or a LoritaError saying which derived recipe is invalid and how to fix it."""
    try:
        return dataclasses.replace(train, **changes)
    except LoritaError as err:
        raise LoritaError(f"{who} train {changes.get('epochs')} epoch(s), where {str(err).split(';')[0]}: "
                          f"{fix}") from None


def config_settings(path: str | Path) -> dict[str, dict]:
    """The named overrides in an experiment config's ``settings`` (the converged study's grid,
    ``experiments/converged/*.json``; ``{}`` where it has none), each an object of spec fields.

    Example:
        >>> sorted(config_settings("experiments/converged/fcn.json"))[:3]
        ['fd', 'g1', 'g2']
    """
    data = jsonio.read(path, fix="pass the study's config, e.g. experiments/converged/fcn.json")
    if not isinstance(data, dict):
        raise LoritaError(f"{path}: 'settings' must map a setting's name to an object of overrides")
    return _settings_in(path, data)


_CONFIG_KEYS = ("common", "full", "reduced", "paper", "settings")  # paper: a note on the paper's recipe, not read


def _settings_in(path: str | Path, config: dict) -> dict[str, dict]:
    """``config``'s ``settings``, checked: an object of named objects of overrides."""
    settings = config.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise LoritaError(f"{path}: 'settings' must map a setting's name to an object of overrides")
    return settings


def _check_sections(path: Path, config: object, section: str) -> None:
    """An experiment config's top level: an object of known keys, its sections objects, ``section`` among them."""
    if not isinstance(config, dict):
        raise LoritaError(f"{path} must hold a JSON object with 'common', 'full' and 'reduced' sections")
    if "command" in config and "format" in config:
        raise LoritaError(f"{path} is a run folder's config.json ('lorita {config['command']}' wrote it), not an "
                          "experiment config; pass one of experiments/*.json or your own in their form")
    misplaced = sorted(k for k in config if k not in _CONFIG_KEYS and k in (*_FLAT, "train", "name"))
    if misplaced:  # other keys (a description, a schema) are notes, left alone
        raise LoritaError(f"{path}: {misplaced} at the top level is not read: an experiment's fields go in its "
                          "'common', 'full' or 'reduced' section; move them there")
    for key in ("common", section):
        if not isinstance(config.get(key, {}), dict):
            raise LoritaError(f"{path}: the '{key}' section must be an object")
    if section not in config:
        raise LoritaError(f"{path} has no '{section}' section")
    _settings_in(path, config)


def load_spec(path: str | Path, *, reduced: bool = False, train_override: dict | None = None,
              model_kwargs_override: dict | None = None, **override) -> ExperimentSpec:
    """An ExperimentSpec from a JSON config with ``common``, ``full`` and ``reduced`` sections.

    ``override``: spec fields that replace the config's; ``train_override`` / ``model_kwargs_override``:
    recipe fields / model arguments, merged into the config's. A ``data_dir`` (the config's or the override's) is
    read from the current folder and kept as an absolute path, so the trainings record the folder they read.

    Example:
        >>> load_spec("experiments/fcn_fashion_mnist.json", reduced=True).recipe.train.epochs  # doctest: +SKIP
        15
    """
    path = Path(path)
    if path.is_dir():
        raise LoritaError(f"{path} is a folder; pass an experiment config file (experiments/*.json)")
    if not path.exists():
        raise LoritaError(f"no experiment config at {path}; see the experiments/ folder")
    config = jsonio.read(path, fix="fix the config (experiments/*.json are examples)")
    section = "reduced" if reduced else "full"
    _check_sections(path, config, section)
    values = {"name": path.stem, **config.get("common", {})}
    for key, value in config[section].items():
        if key in ("train", "model_kwargs") and isinstance(value, dict) and isinstance(values.get(key, {}), dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    values.update({k: v for k, v in override.items() if v is not None})
    for key, extra in (("train", train_override), ("model_kwargs", model_kwargs_override)):
        if extra:
            values[key] = {**values.get(key, {}), **extra}
    if isinstance(values.get("data_dir"), str) and values["data_dir"]:  # read from here, recorded whole: a resume
        values["data_dir"] = recorded_folder(values["data_dir"])  # from anywhere reads the same data
    try:
        return ExperimentSpec.from_flat(values)
    except LoritaError as err:
        raise LoritaError(f"{path}: {err}") from None
