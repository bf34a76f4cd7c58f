"""The data of a run: load a ``DataSpec`` (images, or text cut into windows; digits as a fallback where asked)."""

from __future__ import annotations

import dataclasses
import logging

from lorita.data import DataNotFoundError, Split, list_datasets, load_dataset
from lorita.data.datasets import is_image_dataset
from lorita.data.language import LanguageData
from lorita.data.text import load_text_dataset
from lorita.errors import LoritaError
from lorita.models.registry import model_kwargs

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
    if spec.name in TEXT_DATASETS:
        return _load_text(spec, model, train)
    if not is_image_dataset(spec.name):
        raise LoritaError(f"unknown dataset {spec.name!r}; image datasets: {', '.join(list_datasets())}; text "
                          "datasets (for 'gpt'): fortunes, or text with --data-dir a folder of .txt files")
    if model is not None and "context" in model_kwargs(model.name):
        raise LoritaError(f"model {model.name!r} is a language model and {spec.name!r} holds images: train it on "
                          "text (--dataset fortunes, or --dataset text --data-dir a folder of .txt files)")
    try:
        data = load_dataset(spec.name, spec.data_dir, val_fraction=spec.val_fraction, seed=spec.seed)
    except DataNotFoundError as err:
        if not fallback_to_digits:
            raise
        log.warning("%s not found (%s); using scikit-learn's digits instead. For Fashion-MNIST: "
                    "apt-get install dataset-fashion-mnist", spec.name, str(err).splitlines()[0])
        data = load_dataset("digits", val_fraction=spec.val_fraction, seed=spec.seed)
    return capped(data, spec.max_train)


def capped(data, max_train: int | None = None, max_eval: int | None = None):
    """``data`` with only the first ``max_train`` training and ``max_eval`` validation and test images (None: all);
    the splits and the normalisation were already made from the full data, so they do not change.

    Example:
        >>> from lorita.data import load_dataset
        >>> small = capped(load_dataset("digits"), max_train=100, max_eval=50)
        >>> len(small.train), len(small.val), len(small.test)
        (100, 50, 50)
    """
    for name, cap in (("train", max_train), ("val", max_eval), ("test", max_eval)):
        split = getattr(data, name)
        if cap is not None and cap < len(split):
            data = dataclasses.replace(data, **{name: Split(split.images[:cap], split.labels[:cap], split.mean,
                                                            split.std)})
    return data


def _load_text(spec, model, train):
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
