"""The cuts a seed of an experiment has measured, kept on disk so that a killed experiment resumes past them.

An experiment's trainings are run folders, taken up by ``--resume`` (``lorita.runs.reuse``); the
measurements after them (every column cut to every size, fine-tuned where the column fine-tunes, the
smaller dense models trained at each size) lived in memory until the seed was done, hours of compute on
a small machine that a kill lost. ``MeasuredCuts`` writes each measured cut (its figures and details,
not its model) to the seed's ``measured-cuts.json`` as soon as it is measured (rewritten atomically),
and takes the cuts an earlier attempt of exactly this experiment and seed measured (the folders its
``reuse`` names, ``OUT.resume`` first on ``--resume``), so they are not measured again.

Each cut is measured on its own terms (cutters, fine-tuning, BatchNorm re-estimation and the smaller
models' inits are seeded per cut), so a resumed seed records the figures an uninterrupted one would;
a cut taken from an earlier attempt keeps that attempt's seconds, as a reused training keeps its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable

from lorita import __version__, jsonio
from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError
from lorita.runs.compare import Cut
from lorita.runs.folder import is_marked

log = logging.getLogger(__name__)

MEASURED_CUTS = "measured-cuts.json"  # one of lorita.runs.folder.RUN_FILES
_NUMBERS = ("size", "params_kept", "macs_kept", "val", "test", "val_cut", "test_cut", "seconds")


def cut_to_json(cut: Cut | None) -> dict | None:
    """``cut`` as plain JSON, without the model it holds (None: a size out of the column's reach).

    Example:
        >>> cut_to_json(Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {"ranks": {"fc": 4}, "model": None}))
        ... # doctest: +NORMALIZE_WHITESPACE
        {'size': 0.1, 'params_kept': 0.09, 'macs_kept': 0.08, 'val': 90.0, 'test': 89.5, 'val_cut': 85.0,
         'test_cut': 84.0, 'finetune_epoch_kept': 2, 'seconds': 3.5, 'detail': {'ranks': {'fc': 4}}}
    """
    if cut is None:
        return None
    out = dataclasses.asdict(dataclasses.replace(cut, detail={}))
    out["detail"] = {k: v for k, v in cut.detail.items() if k != "model"}
    return out


def cut_from_json(value) -> Cut | None:
    """A cut ``cut_to_json`` wrote, its model None; raises LoritaError when ``value`` is not one.

    Example:
        >>> cut = Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {"ranks": {"fc": 4}})
        >>> cut_from_json(cut_to_json(cut)) == dataclasses.replace(cut, detail={"ranks": {"fc": 4}, "model": None})
        True
    """
    if value is None:
        return None
    fields = [f.name for f in dataclasses.fields(Cut)]
    if not isinstance(value, dict) or sorted(value) != sorted(fields):
        raise LoritaError(f"a measured cut must be an object with {fields}")
    if any(isinstance(value[k], bool) or not isinstance(value[k], (int, float)) for k in _NUMBERS):
        raise LoritaError(f"a measured cut's {', '.join(_NUMBERS)} must be numbers")
    if not all(math.isfinite(value[k]) for k in ("size", "params_kept", "macs_kept", "seconds")):
        raise LoritaError("a measured cut's size, params_kept, macs_kept and seconds must be finite")
    kept = value["finetune_epoch_kept"]
    if isinstance(kept, bool) or not isinstance(kept, int) or kept < 0:
        raise LoritaError("a measured cut's finetune_epoch_kept must be a whole number >= 0")
    if not isinstance(value["detail"], dict):
        raise LoritaError("a measured cut's detail must be an object")
    return Cut(**{**value, "detail": {**value["detail"], "model": None}})


class MeasuredCuts:
    """The measured cuts of one seed: ``measure(label, size, compute)`` returns the cut of column ``label`` at
    ``size``, from this seed's record or an earlier attempt's, else ``compute()``'s, recorded at once.

    ``key`` says what the measurements depend on (the experiment's settings, the seed, lorita's version); an
    earlier attempt's record is taken only when its key is equal. ``earlier``: the folders to look in for one
    (marked lorita folders; a link, or a record that does not read, is passed over).

    Example:
        >>> import tempfile
        >>> from lorita.runs.folder import mark, write_json
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_json(folder / "config.json", mark({"command": "experiment"}))  # a killed attempt's folder
        >>> cuts = MeasuredCuts(folder, {"seed": 0}, [])
        >>> cut = Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
        >>> cuts.measure("plain + SVD + FT", 0.1, lambda: cut).val
        90.0
        >>> again = MeasuredCuts(folder / "next", {"seed": 0}, [folder])  # a resumed attempt: not measured again
        >>> again.measure("plain + SVD + FT", 0.1, lambda: None).val
        90.0
    """

    def __init__(self, folder: str | Path, key: dict, earlier: list[Path]):
        self.path = Path(folder) / MEASURED_CUTS
        self.key = json.loads(json.dumps(key))  # as the file reads back (tuples as lists)
        self.cuts: dict[str, dict | None] = {}
        for place in earlier:
            taken = self._take(Path(place) / MEASURED_CUTS)
            if taken:
                log.info("%d cuts measured before taken from %s (the same experiment and seed)", taken, place)
        if self.cuts:
            self._write()

    @staticmethod
    def _name(label: str, size: float) -> str:
        return f"{label} @ {round(size, 6)!r}"

    def _take(self, path: Path) -> int:
        """The cuts recorded at ``path`` under this key, not yet here; how many."""
        if path.is_symlink() or not path.is_file() or not is_marked(path.parent):
            return 0
        try:
            record = jsonio.read(path, allow_nan=True)
            if not isinstance(record, dict) or record.get("key") != self.key or not isinstance(record.get("cuts"),
                                                                                              dict):
                return 0
            found = {str(name): cut_to_json(cut_from_json(value)) for name, value in record["cuts"].items()}
        except LoritaError as err:
            log.warning("%s: not taken (%s); its cuts are measured again", path, err)
            return 0
        new = {name: value for name, value in found.items() if name not in self.cuts}
        self.cuts.update(new)
        return len(new)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"lorita_version": __version__, "key": self.key, "cuts": self.cuts},
                                                indent=1) + "\n")

    def measure(self, label: str, size: float, compute: Callable[[], Cut | None]) -> Cut | None:
        """The cut of column ``label`` at ``size``: recorded, else ``compute()``'s (then recorded)."""
        name = self._name(label, size)
        if name in self.cuts:
            return cut_from_json(self.cuts[name])
        cut = compute()
        self.cuts[name] = cut_to_json(cut)
        self._write()
        return cut


def measure_now(label: str, size: float, compute: Callable[[], Cut | None]) -> Cut | None:
    """No record: ``compute()``'s cut (``MeasuredCuts.measure``'s shape, where nothing is kept).

    Example:
        >>> measure_now("plain + SVD", 0.1, lambda: None) is None
        True
    """
    return compute()
