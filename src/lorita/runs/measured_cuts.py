"""The cuts a seed of an experiment has measured, kept on disk so that a killed experiment resumes past them.

An experiment's trainings are run folders, taken up by ``--resume`` (``lorita.runs.reuse``); the
measurements after them (every column cut to every size, fine-tuned where the column fine-tunes, the
smaller dense models trained at each size) lived in memory until the seed was done, hours of compute on
a small machine that a kill lost. ``MeasuredCuts`` writes each measured cut (its figures and details,
not its model) to the seed's ``measured-cuts.json`` as soon as it is measured (rewritten atomically),
and takes the cuts an earlier attempt of exactly this experiment and seed measured (the folders its
``reuse`` names, ``OUT.resume`` first on ``--resume``), so they are not measured again. Each depth's
sweep of cuts (every point's figures and ranks, the chosen ones' test figures included) is kept the
same way: a resume does not sweep again.

A recorded cut is taken only under the same key (the experiment's settings less ``reuse``, ``seeds`` and
the settings of one side alone, the seed, lorita's version) and the same inputs of its side: a
fingerprint of the seed's data (every split's tensors), of the trained models the side's cuts come
from (each training's ``model.lorita``: the plain side's, or LoRITa's, and any that is neither's),
of the settings of that side alone (``lorita.runs.experiment_spec.PLAIN_SIDE``, ``LORITA_SIDE``) and
of the target, taken once the trainings are done; a training made again, or other data, measures
every cut of its side again. So a grid setting that changes one side (LoRITa's recipe, say) takes
every cut of the other side from the run it names in ``reuse``, as it takes that side's trainings.
A depth's sweep is taken the same way, from the inputs of its side less the settings of that side
alone: it cuts the side's trained models by threshold before any fine-tuning, pruning or other training,
so those settings change it only through the models. Changes to lorita's own code under one version are
not seen, as for reused trainings. Each cut is measured on its own terms (cutters, fine-tuning,
BatchNorm re-estimation and the smaller models' inits are seeded per cut), so a resumed seed records the
figures an uninterrupted one would; a cut taken from an earlier attempt keeps that attempt's seconds, as
a reused training keeps its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Callable

import torch

from lorita import __version__, jsonio
from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError
from lorita.runs.compare import Cut
from lorita.runs.folder import is_marked
from lorita.sweep import SweepPoint

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


def point_from_json(value) -> SweepPoint:
    """A sweep point ``dataclasses.asdict`` wrote; raises LoritaError when ``value`` is not one.

    Example:
        >>> point = SweepPoint(0.1, 90, 80, 0.9, 0.8, 91.0, None, {"fc": 4})
        >>> point_from_json(dataclasses.asdict(point)) == point
        True
    """
    fields = [f.name for f in dataclasses.fields(SweepPoint)]
    if not isinstance(value, dict) or sorted(value) != sorted(fields):
        raise LoritaError(f"a swept point must be an object with {fields}")
    numbers = ("threshold", "params", "macs", "params_kept", "macs_kept", "val")

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not all(number(value[k]) for k in numbers) or not (value["test"] is None or number(value["test"])):
        raise LoritaError(f"a swept point's {', '.join(numbers)} must be numbers, its test a number or null")
    ranks = value["ranks"]
    if not isinstance(ranks, dict) or any(isinstance(r, bool) or not isinstance(r, int) or r < 0
                                          for r in ranks.values()):
        raise LoritaError("a swept point's ranks must be an object of whole numbers >= 0")
    return SweepPoint(**value)


def training_side(name: str) -> bool | None:
    """Which side's cuts the training ``name`` of a seed's folder is cut for: False, the plain side's (``depth1``,
    ``depth1-short``, ``depth1-target``); True, LoRITa's (``depthN`` and ``depthN-...`` with N >= 2, and the
    ``warm-start`` they continue); None, any other (counted on both sides).

    Example:
        >>> training_side("depth1-short"), training_side("depth12"), training_side("small-dense-8")
        (False, True, None)
    """
    match = re.fullmatch(r"depth([0-9]+)(-.*)?", name)
    if match is not None:
        return int(match.group(1)) > 1
    return True if name == "warm-start" else None


def inputs_fingerprint(data, folder: str | Path, side: bool | None = None, settings: dict | None = None) -> str:
    """What a seed's cuts are measured from: its data (every tensor of its train, val and test splits, and their
    other plain fields), the trained models in ``folder`` (each finished training's ``model.lorita``, by name;
    with ``side``, those of that side and of neither: ``training_side``) and ``settings`` (plain JSON).

    Example:
        >>> import tempfile
        >>> from lorita.data.datasets import load_dataset
        >>> data = load_dataset("digits")
        >>> inputs_fingerprint(data, tempfile.mkdtemp()) == inputs_fingerprint(data, tempfile.mkdtemp())
        True
        >>> inputs_fingerprint(data, tempfile.mkdtemp(), True, {"lr": 0.1}) == inputs_fingerprint(data, "x", True)
        False
    """
    digest = hashlib.sha256()
    if settings is not None:
        digest.update(f"settings:{json.dumps(settings, sort_keys=True)}".encode())
    for name in ("train", "val", "test"):
        split = getattr(data, name, None)
        for field, value in sorted(vars(split).items()) if split is not None and hasattr(split, "__dict__") else ():
            digest.update(f"{name}.{field}:".encode())
            if isinstance(value, torch.Tensor):
                digest.update(str((value.dtype, tuple(value.shape))).encode())
                digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            elif isinstance(value, (int, float, str, bool, tuple, list)) or value is None:
                digest.update(repr(value).encode())
    folder = Path(folder)
    for training in sorted(folder.iterdir()) if folder.is_dir() else ():
        model = training / "model.lorita"
        if training.name.startswith(".") or training.is_symlink() or model.is_symlink() or not model.is_file() \
                or not (training / "results.json").is_file() \
                or (side is not None and training_side(training.name) not in (None, side)):
            continue
        digest.update(f"training {training.name}:".encode())
        with open(model, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class MeasuredCuts:
    """The measured cuts of one seed, kept in ``folder``'s ``measured-cuts.json``: ``measure(label, size, compute,
    lorita)`` returns the cut of column ``label`` (LoRITa's side or the plain one's) at ``size`` recorded for the
    inputs of its side given to ``bind`` (this attempt's or an earlier one's), else ``compute()``'s, recorded at
    once; ``sweep(depth, compute, fits)`` the same for a depth's sweep (depth 1 the plain side, deeper LoRITa's),
    for the inputs given to ``bind_sweeps`` (the trainings a sweep cuts are done before those the fine-tuned
    columns cut, whose fingerprint ``bind`` takes), where ``fits`` says the recorded points suit the model. The
    inputs are one fingerprint for both sides, or one per side (``{False: plain, True: LoRITa}``).

    ``key`` says what the measurements depend on besides their inputs (the experiment's settings, the seed,
    lorita's version); an earlier attempt's record is taken only when its key is equal. ``earlier``: the folders to
    look in (marked lorita folders; a link, or a record that does not read, is passed over). Taken records are
    written here at once, so a second kill keeps them.

    Example:
        >>> import tempfile
        >>> from lorita.runs.folder import mark, write_json
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_json(folder / "config.json", mark({"command": "experiment"}))  # a killed attempt's folder
        >>> cuts = MeasuredCuts(folder, {"seed": 0}, [])
        >>> cuts.bind("data and models 1")
        >>> cut = Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
        >>> cuts.measure("plain + SVD + FT", 0.1, lambda: cut).val
        90.0
        >>> again = MeasuredCuts(folder / "next", {"seed": 0}, [folder])  # a resumed attempt: not measured again
        >>> again.bind("data and models 1")
        >>> again.measure("plain + SVD + FT", 0.1, lambda: None).val
        90.0
        >>> again.bind("other models")  # a training made again: measured again
        >>> again.measure("plain + SVD + FT", 0.1, lambda: None) is None
        True
        >>> again.bind({False: "other models", True: "other LoRITa models"})  # one side's trainings made again
        >>> again.measure("plain + SVD + FT", 0.1, lambda: cut) is None  # the other side's cut still taken
        True
        >>> again.bind_sweeps("data and the trainings swept")
        >>> [p.val for p in again.sweep(2, lambda: [SweepPoint(0.0, 90, 80, 1.0, 1.0, 91.0, 90.0, {})])]
        [91.0]
        >>> [p.val for p in again.sweep(2, lambda: [])]  # swept before, from these inputs
        [91.0]
    """

    def __init__(self, folder: str | Path, key: dict, earlier: list[Path]):
        self.path = Path(folder) / MEASURED_CUTS
        self.key = json.loads(json.dumps(key))  # as the file reads back (tuples as lists)
        self.cuts: dict[str, dict] = {}  # name -> {"inputs": fingerprint, "cut": cut_to_json(...)}
        self.sweeps: dict[str, dict] = {}  # "depth N" -> {"inputs": fingerprint, "points": [asdict(point), ...]}
        self.inputs: dict[bool, str] | None = None  # by side: LoRITa's (True) or the plain one's
        self.sweep_inputs: dict[bool, str] | None = None
        self.found: dict[str, dict[str, list[dict]]] = {"cuts": {}, "sweeps": {}}  # every earlier record's, in order
        for place in earlier:
            taken = self._take(Path(place) / MEASURED_CUTS)
            if taken:
                log.info("%d cuts measured before found in %s (the same experiment and seed)", taken, place)
        if self.cuts or self.sweeps:
            self._write()

    @staticmethod
    def _name(label: str, size: float) -> str:
        return f"{label} @ {round(size, 6)!r}"

    def _take(self, path: Path) -> int:
        """The cuts (and sweeps) recorded at ``path`` under this key, not yet here; how many cuts. Each one is kept
        among the candidates for its name too: a later folder's may be of the inputs an earlier folder's is not."""
        cuts, sweeps = read_record(path, self.key)
        for kind, entries in (("cuts", cuts), ("sweeps", sweeps)):
            for name, entry in entries.items():
                self.found[kind].setdefault(name, []).append(entry)
        new = {name: entry for name, entry in cuts.items() if name not in self.cuts}
        self.cuts.update(new)
        self.sweeps.update({name: entry for name, entry in sweeps.items() if name not in self.sweeps})
        return len(new)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_record(self.path, self.key, self.cuts, self.sweeps)

    def _recorded(self, kind: str, name: str, inputs: str) -> dict | None:
        """The entry of ``name`` (``kind``: "cuts" or "sweeps") recorded for ``inputs``: this attempt's, else the
        first earlier record's that is (then this attempt's, written at once); None when none is."""
        entries = self.cuts if kind == "cuts" else self.sweeps
        for entry in [entries.get(name), *self.found[kind].get(name, [])]:
            if entry is not None and entry["inputs"] == inputs:
                if entries.get(name) is not entry:
                    entries[name] = entry
                    self._write()
                return entry
        return None

    @staticmethod
    def _check_bound(inputs: dict[bool, str] | None, how: str) -> dict[bool, str]:
        if inputs is None:
            raise LoritaError(f"MeasuredCuts.{how}(inputs) must come first: a measurement is taken only for the same "
                              "data and trained models")
        return inputs

    @staticmethod
    def _by_side(inputs: str | dict[bool, str]) -> dict[bool, str]:
        return {False: inputs, True: inputs} if isinstance(inputs, str) else {False: inputs[False], True: inputs[True]}

    def bind(self, inputs: str | dict[bool, str]) -> None:
        """The fingerprint of what the cuts are measured from (``inputs_fingerprint``), or one per side (``{False:
        plain, True: LoRITa}``): only cuts recorded for their side's are taken."""
        self.inputs = self._by_side(inputs)
        found = self.found["cuts"]
        usable = sum(any(e["inputs"] in self.inputs.values() for e in [entry, *found.get(name, [])])
                     for name, entry in self.cuts.items())
        if self.cuts:
            log.info("%d of the %d cuts recorded before were measured from this seed's data and trained models: "
                     "taken; the rest are measured again", usable, len(self.cuts))

    def measure(self, label: str, size: float, compute: Callable[[], Cut | None], lorita: bool = False) -> Cut | None:
        """The cut of column ``label`` (of LoRITa's side, or the plain one's) at ``size``: recorded for its side's
        inputs, else ``compute()``'s (then recorded)."""
        inputs = self._check_bound(self.inputs, "bind")[bool(lorita)]
        name = self._name(label, size)
        entry = self._recorded("cuts", name, inputs)
        if entry is not None:
            return cut_from_json(entry["cut"])
        cut = compute()
        self.cuts[name] = {"inputs": inputs, "cut": cut_to_json(cut)}
        self._write()
        return cut

    def bind_sweeps(self, inputs: str | dict[bool, str]) -> None:
        """The fingerprint of what the sweeps are measured from (``inputs_fingerprint`` once the trainings they cut
        are done), or one per side as in ``bind``: only sweeps recorded for their side's are taken."""
        self.sweep_inputs = self._by_side(inputs)

    def sweep(self, depth: int, compute: Callable[[], list[SweepPoint]],
              fits: Callable[[list[SweepPoint]], bool] = lambda points: True) -> list[SweepPoint]:
        """Depth ``depth``'s sweep: recorded for these inputs when ``fits`` takes its points (a first point at
        threshold 0, the uncut model; ranks the model's layers have), else ``compute()``'s (then recorded)."""
        inputs = self._check_bound(self.sweep_inputs, "bind_sweeps")[depth > 1]
        name = f"depth {depth}"
        entry = self._recorded("sweeps", name, inputs)
        if entry is not None:
            points = [point_from_json(p) for p in entry["points"]]
            if points and points[0].threshold == 0 and fits(points):
                log.info("the sweep of depth %d was measured before from this seed's data and trained models: "
                         "taken", depth)
                return points
            log.warning("the sweep of depth %d recorded before does not suit the trained model: swept again", depth)
        points = compute()
        self.sweeps[name] = {"inputs": inputs, "points": [dataclasses.asdict(p) for p in points]}
        self._write()
        return points


def _entries(found, kind: str, read: Callable) -> dict[str, dict]:
    """A record's ``cuts`` or ``sweeps`` (``kind``): each ``{"inputs": str, <what>: ...}`` checked by ``read``."""
    what = "cut" if kind == "cuts" else "points"
    if not isinstance(found, dict):
        raise LoritaError(f"its {kind} are not an object")
    entries = {}
    for name, entry in found.items():
        if not isinstance(entry, dict) or sorted(entry) != sorted(["inputs", what]) or \
                not isinstance(entry["inputs"], str):
            raise LoritaError(f"entry {str(name)[:60]!r} is not {{'inputs': str, '{what}': ...}}")
        entries[str(name)] = {"inputs": entry["inputs"], what: read(entry[what])}
    return entries


def _points(value) -> list[dict]:
    if not isinstance(value, list):
        raise LoritaError("a sweep's points must be a list")
    return [dataclasses.asdict(point_from_json(p)) for p in value]


def read_record(path: Path, key: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """The cuts and sweeps of the record at ``path`` when it is lorita's (a plain file in a marked folder) and holds
    ``key``; empty otherwise. Each kind is read on its own: one that does not read is named in a warning and left
    out, the other taken; a record from before sweeps were kept has none.

    Example:
        >>> read_record(Path("/nonexistent") / MEASURED_CUTS, {})
        ({}, {})
    """
    if path.is_symlink() or not path.is_file() or not is_marked(path.parent):
        return {}, {}
    try:
        record = jsonio.read(path, allow_nan=True)
    except LoritaError as err:
        log.warning("%s: not taken (%s); its cuts are measured again", path, err)
        return {}, {}
    if not isinstance(record, dict) or not isinstance(record.get("cuts"), dict):
        return {}, {}
    if record.get("key") != key:
        log.info("%s: recorded under other settings (another experiment's or seed's, or by a lorita that kept its "
                 "records otherwise): none of its cuts taken", path)
        return {}, {}
    found = []
    for kind, read in (("cuts", lambda cut: cut_to_json(cut_from_json(cut))), ("sweeps", _points)):
        try:
            found.append(_entries(record.get(kind, {}), kind, read))
        except (LoritaError, OverflowError, ValueError, TypeError) as err:
            log.warning("%s: its %s not taken (%s); they are measured again", path, kind, err)
            found.append({})
    return found[0], found[1]


def write_record(path: Path, key: dict, cuts: dict[str, dict], sweeps: dict[str, dict]) -> None:
    """Write a record (atomically): its key and entries, each ``{"inputs": fingerprint, "cut": ...}`` (or
    ``"points"``)."""
    atomic_write_text(path, json.dumps({"lorita_version": __version__, "key": key, "cuts": cuts, "sweeps": sweeps},
                                       indent=1) + "\n")


def carry_record(older: Path, newer: Path) -> None:
    """After a second kill (``lorita.runs.set_aside``): the older attempt's record ``older`` into the newer's
    ``newer``, where the newer lacks one or holds the same key (its own entries kept, the older's added).

    Example:
        >>> carry_record(Path("/nonexistent/a") / MEASURED_CUTS, Path("/nonexistent/b") / MEASURED_CUTS)
    """
    if older.is_symlink() or not older.is_file() or not is_marked(older.parent):
        return
    try:
        key = jsonio.read(older, allow_nan=True).get("key")
    except (LoritaError, AttributeError):
        return
    cuts, sweeps = read_record(older, key)
    if not (cuts or sweeps) or newer.is_symlink():
        return
    if newer.exists():
        try:
            same = jsonio.read(newer, allow_nan=True).get("key") == key
        except (LoritaError, AttributeError):
            same = False
        if not same:
            return  # the attempts ran other settings, or the newer's does not read: it stays as it is
        ours = read_record(newer, key)
        cuts.update(ours[0])
        sweeps.update(ours[1])
    write_record(newer, key, cuts, sweeps)


def sweep_now(depth: int, compute: Callable[[], list[SweepPoint]], fits=None) -> list[SweepPoint]:
    """No record: ``compute()``'s sweep (``MeasuredCuts.sweep``'s shape, where nothing is kept).

    Example:
        >>> sweep_now(1, lambda: [])
        []
    """
    return compute()


def measure_now(label: str, size: float, compute: Callable[[], Cut | None], lorita: bool = False) -> Cut | None:
    """No record: ``compute()``'s cut (``MeasuredCuts.measure``'s shape, where nothing is kept).

    Example:
        >>> measure_now("plain + SVD", 0.1, lambda: None) is None
        True
    """
    return compute()
