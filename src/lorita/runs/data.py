"""The data of a run: load a ``DataSpec`` (falling back to digits where asked), or a run folder's own data."""

from __future__ import annotations

import logging
from pathlib import Path

from lorita.errors import LoritaError
from lorita.runs.folder import read_json

log = logging.getLogger(__name__)


def load_data(spec, *, fallback_to_digits: bool = False):
    """The dataset ``spec`` (a ``lorita.runs.config.DataSpec``) names, split by its seed.

    ``fallback_to_digits``: when the files are missing, use scikit-learn's digits instead
    and say so in the log (the demo's behaviour on a machine without Fashion-MNIST).

    Example:
        >>> from lorita.runs.config import DataSpec
        >>> len(load_data(DataSpec("digits")).test)
        359
    """
    from lorita.data import DataNotFoundError, Split, load_dataset

    try:
        data = load_dataset(spec.name, spec.data_dir, val_fraction=spec.val_fraction, seed=spec.seed)
    except DataNotFoundError as err:
        if not fallback_to_digits:
            raise
        log.warning("%s not found (%s); using scikit-learn's digits instead. For Fashion-MNIST: "
                    "apt-get install dataset-fashion-mnist", spec.name, str(err).splitlines()[0])
        data = load_dataset("digits", val_fraction=spec.val_fraction, seed=spec.seed)
    if spec.max_train is not None and spec.max_train < len(data.train):
        t = data.train  # the val split and normalisation were already carved from the full training data
        data.train = Split(t.images[: spec.max_train], t.labels[: spec.max_train], t.mean, t.std)
    return data


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
    from lorita.runs.config import RunConfig

    run = Path(run)
    seen = set()
    while True:
        where = run / "config.json"
        config = read_json(where, "'lorita train' or 'lorita compress'")
        if config.get("command") == "train":
            return RunConfig.from_dict(config, str(where))
        source = config.get("source")
        if config.get("command") != "compress" or not isinstance(source, str) or not source or run.resolve() in seen:
            raise LoritaError(f"{where} is neither a train nor a compress run")
        seen.add(run.resolve())
        source = Path(source)
        run = source if source.is_absolute() or source.exists() else run.parent / source


def data_of(run: str | Path):
    """The dataset (same splits, same seed) a run was trained on.

    Example:
        >>> # data_of("runs/fcn-d3").test  -> the test Split
    """
    spec = train_config_of(run).dataset
    try:
        return spec.load()
    except LoritaError as err:
        raise LoritaError(f"the data of run {run} (its training config.json names dataset {spec.name!r}) cannot be "
                          f"loaded: {err}") from None
