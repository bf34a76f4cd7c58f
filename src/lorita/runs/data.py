"""The data of a run: load a ``DataSpec`` (images, or text cut into windows; digits as a fallback where asked)."""

from __future__ import annotations

import logging
from lorita.errors import LoritaError

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
