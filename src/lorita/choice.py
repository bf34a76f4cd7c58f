"""Which column of a comparison is the best: at the target (``smallest_at_target``) and at a fixed size
(``best_at_size``), one rule each for an experiment's headline, the paired statistics over seeds
(``lorita.runs.paired``) and the reports (``lorita.report.converged``, ``lorita.report.demo``). Every choice is made
on validation; a test figure is only reported.

A column (an experiment's ``results.json`` ``columns`` entry) has ``lorita`` (bool), ``cuts`` (every model
measured, with its requested ``size``, ``params_kept`` and figures) and ``chosen``: its smallest cut reaching the
target, chosen on validation (``params_kept`` and the validation figure), or None.
"""

from __future__ import annotations

import math

from lorita.metric import ACCURACY, Metric


def smallest_at_target(columns: dict, lorita: bool, metric: Metric = ACCURACY) -> tuple[str, dict] | None:
    """``(label, chosen cut)`` of the LoRITa (``lorita``) or alternative side's column whose cut at the target keeps
    the fewest params; a tie goes to the better validation figure, then to the first label in alphabetical order
    (no test figure in the choice; a cut without one comes last). None when no column of that side reaches the
    target.

    Example:
        >>> columns = {"B": {"lorita": False, "chosen": {"params_kept": 0.1, "val_acc": 90.2}},
        ...            "A": {"lorita": False, "chosen": {"params_kept": 0.1, "val_acc": 90.2}},
        ...            "C": {"lorita": False, "chosen": {"params_kept": 0.1, "val_acc": 90.4}},
        ...            "L": {"lorita": True, "chosen": None}}
        >>> smallest_at_target(columns, lorita=False)[0], smallest_at_target(columns, lorita=True)
        ('C', None)
    """
    entries = [(label, c["chosen"]) for label, c in columns.items()
               if bool(c.get("lorita")) == lorita and c.get("chosen") is not None]
    if not entries:
        return None

    def order(entry):
        label, chosen = entry
        value = chosen.get(metric.val)
        return chosen["params_kept"], math.inf if value is None else -metric.score(value), label

    return min(entries, key=order)


def best_at_size(cuts: dict[str, dict], metric: Metric = ACCURACY) -> tuple[str, dict] | None:
    """``(label, cut)`` of the best of ``cuts`` (column label -> that column's cut at one fixed size) on validation;
    a tie goes to the cut keeping fewer params, then to the first label in alphabetical order (no test figure in
    the choice; a cut without a validation figure comes last). None when ``cuts`` is empty.

    Example:
        >>> cuts = {"B": {"params_kept": 0.29, "val_acc": 91.2, "test_acc": 90.6},
        ...         "A": {"params_kept": 0.27, "val_acc": 91.2, "test_acc": 90.3},
        ...         "C": {"params_kept": 0.25, "val_acc": 90.1, "test_acc": 91.0}}
        >>> best_at_size(cuts)[0]
        'A'
    """
    def order(entry):
        label, cut = entry
        value = cut.get(metric.val)
        return math.inf if value is None else -metric.score(value), cut.get("params_kept", math.inf), label

    return min(cuts.items(), key=order) if cuts else None
