"""Accuracy and loss of a classifier, or of a language model's next-token predictions, on one data split."""

from __future__ import annotations

import torch
from torch import nn

from lorita.errors import LoritaError

IGNORE_INDEX = -100  # a target to skip: PyTorch's cross-entropy default, the labels transformers pads with


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU when it has neither.

    Example:
        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, split, batch_size: int = 1000, device: str | torch.device | None = None) -> tuple[float, float]:
    """Top-1 accuracy in percent and mean cross-entropy (no label smoothing, nats) on ``split``.

    For a language model (logits ``(B, T, vocab)``, targets ``(B, T)``) both are per token. Targets set to
    ``-100`` (``IGNORE_INDEX``: padding, a prompt's tokens) are left out of both.

    ``split`` is a :class:`lorita.data.Split` (anything with ``len`` and
    ``batches(batch_size)`` yielding ``(x, y)``). The model runs in eval mode
    and is put back in the mode it was in; it is not moved: ``device``
    (default: where the model's parameters are) is where batches are sent.
    Losses are summed in float64, so the result does not depend on
    ``batch_size`` beyond float32 rounding inside the model.

    Example:
        >>> from lorita.data import Split
        >>> s = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), [0.], [1.])
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> acc, loss = evaluate(net, s)
        >>> acc
        50.0
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LoritaError(f"evaluate: batch_size must be an int >= 1, got {batch_size!r}")
    n = len(split)
    if n == 0:
        raise LoritaError("evaluate: the split is empty; give a split with at least one sample")
    device = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for x, y in split.batches(batch_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits, y = flat_logits(logits_of(model, x, "evaluate"), y, "evaluate")  # (N, classes), (N,)
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()  # an ignored target (-100) is never a class
            count += (y != IGNORE_INDEX).sum()
    finally:
        model.train(was_training)
    if not count:
        raise LoritaError(f"evaluate: every target of the split is {IGNORE_INDEX} (skipped), so there is nothing to "
                          "score; give the split targets that are class indices")
    return 100.0 * correct.item() / count.item(), loss_sum.item() / count.item()


def _check_targets(targets: torch.Tensor, classes: int, who: str) -> None:
    """Targets are class indices: integers, and on the CPU checked to lie in ``0..classes-1`` or be ``IGNORE_INDEX``
    (cross-entropy would fail on one past the end without saying which; on a GPU the check would wait for the
    device every step, and PyTorch's own assert stops an index out of range)."""
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise LoritaError(f"{who}: targets must be class indices (integers), got dtype {targets.dtype}; return "
                          "torch.long labels from your Dataset")
    if targets.device.type != "cpu":
        return
    scored = targets[targets != IGNORE_INDEX] if targets.dtype.is_signed else targets
    if scored.numel():
        low, high = int(scored.min()), int(scored.max())
        if low < 0 or high >= classes:
            raise LoritaError(f"{who}: targets span {low}..{high}, but the model gives {classes} classes "
                              f"(0..{classes - 1}); fix the labels or the model's number of classes "
                              f"({IGNORE_INDEX} marks a target to skip)")


def logits_of(model: nn.Module, x: torch.Tensor, who: str) -> torch.Tensor:
    """The model's logits on batch ``x``: its output tensor, or a transformers-style output's ``.logits``. A model
    returning anything else, or failing on inputs of another floating dtype than its parameters', is a LoritaError
    saying so (PyTorch's own errors named neither).

    Example:
        >>> logits_of(nn.Linear(3, 2), torch.zeros(4, 3), "x").shape
        torch.Size([4, 2])
        >>> logits_of(nn.Linear(3, 2).double(), torch.zeros(4, 3), "training")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: training: the model's parameters are torch.float64 but the inputs are torch.float32; cast the model (model.to(torch.float32)) or the data to one dtype
    """
    try:
        out = model(x)
    except RuntimeError as err:
        dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()})
        if x.is_floating_point() and str(x.dtype) not in dtypes and any(w in str(err) for w in ("dtype", "type (")):
            raise LoritaError(f"{who}: the model's parameters are {', '.join(dtypes)} but the inputs are {x.dtype}; "
                              f"cast the model (model.to({x.dtype})) or the data to one dtype") from err
        raise
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise LoritaError(f"{who}: the model returned a {type(out).__name__}, not a tensor of logits; lorita trains and "
                      "evaluates a model whose forward returns the logits (wrap yours in a module that returns them)")


def flat_logits(logits: torch.Tensor, targets: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, classes)`` logits and ``(N,)`` targets: a classifier's as they are, a language model's
    ``(B, T, vocab)`` / ``(B, T)`` flattened over the tokens.

    Example:
        >>> flat_logits(torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long), "x")[0].shape
        torch.Size([10, 7])
    """
    if logits.dim() == targets.dim() + 1 and logits.shape[:-1] == targets.shape:
        _check_targets(targets, logits.shape[-1], who)
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long()  # cross-entropy takes int64
    raise LoritaError(f"{who}: the model must return logits of shape (batch, classes) for targets (batch,), or "
                      f"(batch, tokens, vocab) for targets (batch, tokens); got {tuple(logits.shape)} for targets "
                      f"{tuple(targets.shape)}")
