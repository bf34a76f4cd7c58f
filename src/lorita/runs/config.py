"""What a run folder's ``config.json`` holds, as typed dataclasses with one JSON round trip.

A training run is ``RunConfig`` (model, dataset, composition, training recipe, and the
source model when it continues a trained one); a compression run is ``CompressConfig``.
Both are validated when made, so a damaged or hand-edited ``config.json`` is a
LoritaError naming the field, and both are written with the run-folder mark
(``lorita.runs.folder.mark``).

Example:
    >>> config = RunConfig(ModelSpec("fcn", {"width": 64}, {"num_classes": 10, "in_channels": 1, "image_size": 28}),
    ...                    DataSpec("digits"), ComposeSpec(depth=3))
    >>> RunConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorita import __version__
from lorita.checks import check_choice, check_fraction, check_int, check_json_object, check_number, check_str
from lorita.compose import COMPOSE_INITS, FACTOR_SIDES
from lorita.composed import MAX_DEPTH, MODES
from lorita.cut_source import cut_source
from lorita.cutspec import CutSpec, cut_from_dict, cut_from_strategy
from lorita.data.datasets import DataNotFoundError, reads_files, recorded_folder, recorded_relative
from lorita.errors import LoritaError
from lorita.models import create_model
from lorita.runs.data import TEXT_DATASETS, load_data
from lorita.runs.folder import mark, read_json, write_json  # noqa: F401 (write_json: the doctests)
from lorita.train import TrainConfig
from lorita.train.config import MAX_SEED

log = logging.getLogger(__name__)


def _section(values: dict, key: str, where: str) -> dict:
    value = values.get(key)
    if not isinstance(value, dict):
        raise LoritaError(f"{where}: {key!r} must be an object, got {type(value).__name__}; the run may be damaged")
    return value


@dataclass
class ModelSpec:
    """A zoo model: its name, its own arguments, and the arguments that come from the data.

    Example:
        >>> ModelSpec("fcn", {}, {"num_classes": 10, "in_channels": 1, "image_size": 8}).build().head.out_features
        10
    """

    name: str
    kwargs: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str("model name", self.name)
        check_json_object("model kwargs", self.kwargs)
        check_json_object("model inputs", self.inputs)
        clash = sorted(set(self.kwargs) & set(self.inputs))
        if clash:
            raise LoritaError(f"model argument(s) {clash} come from the data, not the model's own arguments; "
                              "leave them out of the model kwargs")

    def build(self):
        """The plain zoo model (checked by the zoo's registry)."""
        return create_model(self.name, **self.inputs, **self.kwargs)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        inputs = values.get("inputs")
        if inputs is None:  # run folders written before the inputs section: image models only
            inputs = {k: values[k] for k in ("num_classes", "in_channels", "image_size") if k in values}
        return cls(values.get("name"), values.get("kwargs") or {}, inputs)


@dataclass
class DataSpec:
    """The data a run used: name (or folder), split and seed, and an optional cap on training examples."""

    name: str
    data_dir: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    max_train: int | None = None
    steps_per_epoch: int | None = None  # text: training batches per epoch (None: about one pass)

    def __post_init__(self) -> None:
        check_str("dataset name", self.name)
        if self.name.strip().lower() in TEXT_DATASETS:  # "Fortunes" as "fortunes", as image names are taken
            self.name = self.name.strip().lower()
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        check_fraction("val_fraction", self.val_fraction, low_open=True, high_open=True)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.max_train is not None:
            check_int("max_train", self.max_train)
        if self.steps_per_epoch is not None:
            check_int("steps_per_epoch", self.steps_per_epoch)

    def check_applies(self) -> None:
        """Refuse options the dataset would ignore: ``data_dir`` for the built-in digits or the fortunes
        package, ``steps_per_epoch`` for images (an epoch is one pass). Checked for new runs only, so a
        run folder written before the check still loads.

        Example:
            >>> DataSpec("digits", data_dir="/data").check_applies()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lorita.errors.LoritaError: dataset 'digits' is bundled with scikit-learn and reads no files: ...
        """
        text = self.name in TEXT_DATASETS
        if self.data_dir is not None and self.name == "fortunes":
            raise LoritaError("dataset 'fortunes' reads the Debian package's folder: leave data_dir (--data-dir) out, "
                              "or train on your own folder with dataset 'text'")
        if self.data_dir is not None and not text and not reads_files(self.name):
            raise LoritaError(f"dataset {self.name!r} is bundled with scikit-learn and reads no files: leave data_dir "
                              "(--data-dir) out")
        if self.steps_per_epoch is not None and not text:
            raise LoritaError(f"steps_per_epoch (--steps-per-epoch) sets the batches of a text epoch; an epoch of "
                              f"{self.name!r} is one pass over its images: leave it out")

    def load(self, *, model: ModelSpec | None = None, train: TrainConfig | None = None,
             fallback_to_digits: bool = False):
        """The dataset, split exactly as when the run was made. Text is cut into windows of ``model``'s
        context for ``train``'s batch size (``lorita.data.language.LanguageData``)."""
        return load_data(self, model=model, train=train, fallback_to_digits=fallback_to_digits)


@dataclass
class ComposeSpec:
    """How the model is composed: depth (1: plain), factor init, forward mode, factor side, plain layers,
    init scale (``lorita.compose``'s arguments)."""

    depth: int = 1
    init: str = "auto"
    mode: str = "auto"
    factor_side: str = "input"
    exclude: list[str] | None = None
    init_scale: float | None = None

    def __post_init__(self) -> None:
        check_int("depth", self.depth, maximum=MAX_DEPTH,
                  meaning=f"factors per layer; a lorita model file holds at most {MAX_DEPTH}")
        check_choice("init", self.init, COMPOSE_INITS)
        if self.init_scale is not None:
            check_number("init_scale", self.init_scale, minimum=0, low_open=True)
            if self.init not in ("auto", "default"):
                raise LoritaError(f"init_scale applies to init 'default' or 'auto', not {self.init!r}")
        check_choice("mode", self.mode, MODES)
        check_choice("factor_side", self.factor_side, FACTOR_SIDES)
        if self.exclude is not None and (not isinstance(self.exclude, list)
                                         or not all(isinstance(x, str) and x for x in self.exclude)):
            raise LoritaError(f"exclude must be a list of module names, got {self.exclude!r}")


@dataclass
class RunConfig:
    """A training run: what ``lorita train`` writes to ``config.json`` and ``lorita.runs.train_run`` reads.

    ``source``: the model file or run folder a continued run started from (``--from``),
    else None.
    """

    model: ModelSpec
    dataset: DataSpec
    compose: ComposeSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str | None = None
    command: str = "train"

    def to_dict(self) -> dict:
        """The JSON form, marked as a lorita run folder's config."""
        out = {"command": self.command, "lorita_version": __version__, **asdict(self)}
        out["train"] = self.train.to_dict()
        return mark(out)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config.json") -> "RunConfig":
        """Rebuild from ``to_dict``'s output (or a config.json from before the run-folder mark)."""
        if not isinstance(values, dict):
            raise LoritaError(f"{where} must hold a JSON object")
        if values.get("command") != "train":
            raise LoritaError(f"{where} is not a training run's config (command {values.get('command')!r})")
        try:
            data = _section(values, "dataset", where)
            data = {k: data.get(k) for k in ("name", "data_dir", "val_fraction", "seed", "max_train",
                                             "steps_per_epoch") if k in data}
            return cls(model=ModelSpec.from_dict(_section(values, "model", where)), dataset=DataSpec(**data),
                       compose=ComposeSpec(**{k: v for k, v in _section(values, "compose", where).items()
                                              if k in ComposeSpec.__dataclass_fields__}),
                       train=TrainConfig.from_dict(_section(values, "train", where)), source=values.get("source"))
        except (TypeError, LoritaError) as err:
            raise LoritaError(f"{where} is damaged or from another lorita: {err}") from None


@dataclass
class CompressConfig:
    """A compression run: its source run folder, how it was cut (a ``lorita.cutspec`` object), and the
    fine-tuning recipe (None: no fine-tuning).

    Example:
        >>> from lorita.cutspec import Energy
        >>> config = CompressConfig("runs/fcn-d3", Energy(0.95))
        >>> CompressConfig.from_dict(config.to_dict()) == config
        True
    """

    source: str
    cut: CutSpec
    finetune: TrainConfig | None = None
    command: str = "compress"

    def __post_init__(self) -> None:
        check_str("source", self.source)
        if not isinstance(self.cut, CutSpec):
            raise LoritaError(f"cut must be a way to cut (lorita.cutspec: Energy(0.95), Budget(params=0.3), ...), "
                              f"got {self.cut!r}")

    def to_dict(self) -> dict:
        """The JSON form, marked as a lorita run folder's config."""
        return mark({"command": self.command, "lorita_version": __version__, "source": self.source,
                     "cut": self.cut.to_dict(),
                     "finetune": self.finetune.to_dict() if self.finetune is not None else None})

    @classmethod
    def from_dict(cls, values: dict, where: str = "config.json") -> "CompressConfig":
        """Rebuild from ``to_dict``'s output, or from a config.json written before ``"cut"`` (``"strategy"`` and
        ``"options"``, whitening as ``options["calibrate"]``)."""
        if not isinstance(values, dict) or values.get("command") != "compress":
            raise LoritaError(f"{where} is not a compress run's config")
        try:
            if "cut" in values:
                how = cut_from_dict(values["cut"], f"{where}: cut")
            else:
                how = cut_from_strategy(values.get("strategy"), _section(values, "options", where))
            finetune = values.get("finetune")
            return cls(values.get("source"), how, TrainConfig.from_dict(finetune) if finetune is not None else None)
        except (TypeError, LoritaError) as err:
            raise LoritaError(f"{where} is damaged or from another lorita: {err}") from None


def recorded(config: "RunConfig", where: str | Path) -> "RunConfig":
    """``config`` as read from a run's ``where`` (its config.json), with a warning when its data folder is a relative
    path, as runs recorded it before lorita kept it whole: it is read from the current folder, which may not be the
    one the run started in.

    Example:
        >>> recorded(RunConfig(ModelSpec("fcn"), DataSpec("digits"), ComposeSpec()), "run/config.json").model.name
        'fcn'
    """
    folder = config.dataset.data_dir
    if recorded_relative(folder):
        log.warning("%s records its data folder as a relative path (%r), read from the current folder: %s. Run it "
                    "from the folder it was started in if that is not where its data is", where, folder,
                    recorded_folder(folder))
    return config


def train_config_of(run: str | Path):
    """The ``RunConfig`` of the training run behind ``run`` (following compress runs to their source).

    Example:
        >>> import tempfile
        >>> from lorita.runs.config import ComposeSpec, DataSpec, ModelSpec, RunConfig
        >>> from lorita.runs.folder import write_json
        >>> d = Path(tempfile.mkdtemp())
        >>> write_json(d / "config.json", RunConfig(ModelSpec("fcn"), DataSpec("digits"), ComposeSpec()).to_dict())
        >>> train_config_of(d).model.name
        'fcn'
    """
    run = Path(run)
    seen = set()
    while True:
        where = run / "config.json"
        config = read_json(where, "'lorita train' or 'lorita compress'")
        if config.get("command") == "train":
            return recorded(RunConfig.from_dict(config, str(where)), where)
        source = config.get("source")
        if config.get("command") != "compress":
            raise LoritaError(f"{where} is neither a train nor a compress run (its command is "
                              f"{config.get('command')!r})")
        if config.get("kind") == "lm":  # a compressed pretrained language model's run: its source is a model
            raise LoritaError(f"{run} is a compressed pretrained language model's run, which is not compressed again: "
                              "compress its source model instead (its config.json's 'source'), or evaluate it with "
                              "lorita evaluate RUN --text FILE")
        if not isinstance(source, str) or not source:
            raise LoritaError(f"{where} is a compress run's config without its 'source' (the run it was cut from): "
                              "the file is damaged; compress that run again")
        if run.resolve() in seen:
            raise LoritaError(f"{where}: its 'source' leads back to a run already followed ({source!r}): the file is "
                              "damaged; compress that run again")
        seen.add(run.resolve())
        cut, run = run, cut_source(run, source)
        if not run.exists():
            raise LoritaError(f"{where}: its source {source!r}, the run it was cut from, is not there (not beside "
                              f"{cut}, nor from the current folder); put that run back, or set 'source' to its path")


def data_of(run: str | Path):
    """The dataset (same splits, same seed) a run was trained on.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> write_json(d / "config.json", RunConfig(ModelSpec("fcn"), DataSpec("digits"), ComposeSpec()).to_dict())
        >>> len(data_of(d).test)
        359
    """
    config = train_config_of(run)
    spec = config.dataset
    try:
        return spec.load(model=config.model, train=config.train)
    except DataNotFoundError as err:  # its advice (--data-dir) is for a new training: a run reads its own folder
        where = f"the folder its config.json records ({spec.data_dir})" if spec.data_dir else "its default folder"
        raise LoritaError(f"the data of run {run} (dataset {spec.name!r}) is no longer in {where}: "
                          f"{str(err).splitlines()[0]}; a run reads the data it was trained on: put the files back "
                          "there (nothing is downloaded)") from None
    except LoritaError as err:
        raise LoritaError(f"the data of run {run} (its training config.json names dataset {spec.name!r}) cannot be "
                          f"loaded: {err}") from None
