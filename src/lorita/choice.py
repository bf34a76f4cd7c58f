"""Which column of a comparison is the best at the target: one rule for an experiment's headline, the paired
statistics over seeds (``lorita.runs.paired``) and the reports (``lorita.report.converged``).

A column (an experiment's ``results.json`` ``columns`` entry) has ``lorita`` (bool) and ``chosen``: its
smallest cut reaching the target, chosen on validation (``params_kept`` and the validation figure), or None.
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
