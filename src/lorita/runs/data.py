"""The data of a run: load a ``DataSpec`` (falling back to digits where asked), or a run folder's own data."""

from __future__ import annotations

import logging
from pathlib import Path

from lorita.errors import LoritaError
from lorita.runs.folder import read_json

log = logging.getLogger(__name__)


TEXT_DATASETS = ("fortunes", "text")  # "text": the folder of text files given as data_dir


def load_data(spec, *, model=None, train=None, fallback_to_digits: bool = False):
    """The dataset ``spec`` (a ``lorita.runs.config.DataSpec``) names, split by its seed.

    Image datasets: ``lorita.data.load_dataset``. Text (``"fortunes"``, or ``"text"`` with
    ``data_dir`` a folder of text files), split by entry 90/5/5: a
    ``lorita.data.language.LanguageData`` with windows of ``model``'s context (a
    ``ModelSpec``) for ``train``'s batch size. ``fallback_to_digits``: when the image files
    are missing, use scikit-learn's digits instead and say so in the log (the demo's
    behaviour on a machine without Fashion-MNIST).

    Example:
        >>> from lorita.runs.config import DataSpec
        >>> len(load_data(DataSpec("digits")).test)
        359
    """
    from lorita.data import DataNotFoundError, Split, load_dataset

    if spec.name in TEXT_DATASETS:
        return _load_text(spec, model, train)
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


def _load_text(spec, model, train):
    from lorita.data.language import LanguageData
    from lorita.data.text import load_text_dataset
    from lorita.models.registry import model_kwargs

    if spec.name == "text" and spec.data_dir is None:
        raise LoritaError("dataset 'text' reads your own text files: pass the folder as --data-dir")
    if model is None or train is None:
        raise LoritaError(f"{spec.name} is text: loading it needs the model (for its context) and the training "
                          "recipe (for its batch size)")
    if "context" not in model_kwargs(model.name):
        raise LoritaError(f"model {model.name!r} is not a language model; text datasets train 'gpt'")
    text = load_text_dataset("fortunes" if spec.name == "fortunes" else spec.data_dir, seed=spec.seed)
    context = {**model_kwargs(model.name), **model.kwargs}["context"]
    return LanguageData(text, context, spec.steps_per_epoch, train.batch_size)


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
    config = train_config_of(run)
    spec = config.dataset
    try:
        return spec.load(model=config.model, train=config.train)
    except LoritaError as err:
        raise LoritaError(f"the data of run {run} (its training config.json names dataset {spec.name!r}) cannot be "
                          f"loaded: {err}") from None
