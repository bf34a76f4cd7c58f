"""What LoRITa offers besides the one cut: K sizes from one training, against K fine-tuned alternatives.

A LoRITa model trained once can be cut to any size without fine-tuning; an alternative that
needs fine-tuning pays a fine-tuning run per size, and a smaller dense model pays a whole
training per size. :func:`many_sizes` puts that side by side from an experiment's measured
columns: for each column, its accuracy at each of the K sizes and the compute, in measured
seconds, to produce all K models (its training once, plus every cut at those sizes: the cut,
its BatchNorm re-estimation and fine-tuning where the column does them, or the training
itself for the small dense model).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from lorita.errors import LoritaError


def many_sizes(columns: Mapping[str, dict], sizes: Sequence[float]) -> list[dict]:
    """One row per column: accuracy at each size and the seconds to produce the K models.

    ``columns``: label -> ``{"lorita", "finetune_epochs", "train_seconds", "cuts": [{"size",
    "params_kept", "val_acc", "test_acc", "seconds"}, ...]}`` (an experiment seed's
    ``columns``). Row: ``{"label", "lorita", "finetune_epochs", "at": {size: {"params_kept",
    "val_acc", "test_acc"} | None}, "reached": how many sizes it produced, "train_seconds",
    "cut_seconds", "seconds"}``; a size the column cannot reach is None and costs nothing.

    Example:
        >>> cols = {"LoRITa N=2": {"lorita": True, "finetune_epochs": 0, "train_seconds": 100.0, "cuts": [
        ...             {"size": s, "params_kept": s, "val_acc": 90.0, "test_acc": 89.0, "seconds": 1.0}
        ...             for s in (0.1, 0.2)]},
        ...         "plain + SVD + FT": {"lorita": False, "finetune_epochs": 2, "train_seconds": 50.0, "cuts": [
        ...             {"size": s, "params_kept": s, "val_acc": 90.0, "test_acc": 89.5, "seconds": 30.0}
        ...             for s in (0.1, 0.2)]}}
        >>> [(r["label"], r["seconds"]) for r in many_sizes(cols, [0.1, 0.2])]
        [('LoRITa N=2', 102.0), ('plain + SVD + FT', 110.0)]
    """
    if not sizes:
        raise LoritaError("many_sizes needs at least one size (a fraction of the original params)")
    rows = []
    for label, column in columns.items():
        if not isinstance(column, Mapping) or "cuts" not in column:
            raise LoritaError(f"column {label!r} has no 'cuts'; pass an experiment seed's 'columns'")
        at, cut_seconds = {}, 0.0
        for size in sizes:
            cut = next((c for c in column["cuts"] if c is not None and abs(c["size"] - size) < 1e-9), None)
            at[size] = None if cut is None else {k: cut[k] for k in ("params_kept", "val_acc", "test_acc")}
            cut_seconds += 0.0 if cut is None else float(cut["seconds"])
        train_seconds = float(column.get("train_seconds") or 0.0)
        rows.append({"label": label, "lorita": bool(column.get("lorita")),
                     "finetune_epochs": int(column.get("finetune_epochs") or 0), "at": at,
                     "reached": sum(v is not None for v in at.values()), "train_seconds": train_seconds,
                     "cut_seconds": cut_seconds, "seconds": train_seconds + cut_seconds})
    return rows
