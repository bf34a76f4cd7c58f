"""``evaluate_run``: accuracy and size of a run's saved model on the run's own validation and test data (a language
model's: next-token accuracy, loss and perplexity)."""

from __future__ import annotations

import math
from pathlib import Path

import lorita
from lorita.data.language import LanguageData
from lorita.errors import LoritaError
from lorita.runs.config import data_of
from lorita.runs.train import example_input
from lorita.train import evaluate


def _exp(loss: float) -> float:
    """Perplexity of a loss; infinite for a diverged model (``math.exp`` overflows above 709)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def evaluate_run(run_dir: str | Path) -> tuple[dict, "lorita.Profile"]:
    """Evaluate ``run_dir/model.lorita`` (a train or compress run); return the figures and the profile.

    The figures: ``val_acc``, ``val_loss``, ``test_acc``, ``test_loss`` (cross-entropy per example, per token for
    text), ``params``, ``macs``, ``flops``; for a run on text also ``val_ppl`` and ``test_ppl`` (exp of the loss).

    Example:
        >>> import tempfile, lorita
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> run = train_run(folder, config, config.dataset.load(), progress=False)
        >>> figures, counts = evaluate_run(folder)
        >>> figures["test_acc"] == run.results["test_acc"], counts.params == run.results["params"]
        (True, True)
    """
    run_dir = Path(run_dir)
    if not (run_dir / "model.lorita").is_file():
        raise LoritaError(f"{run_dir} has no model.lorita: is it a finished 'lorita train' or 'lorita compress' run?")
    data = data_of(run_dir)
    model = lorita.load(run_dir / "model.lorita").eval()
    counts = lorita.profile(lorita.merge(model), example_input(data))
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    figures = {"val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc, "test_loss": test_loss,
               "params": counts.params, "macs": counts.macs, "flops": counts.flops}
    if isinstance(data, LanguageData):
        figures.update(val_ppl=_exp(val_loss), test_ppl=_exp(test_loss))
    return figures, counts
