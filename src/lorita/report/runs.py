"""Read one run folder (docs/RUN_FOLDERS.md) into a :class:`Run`, checking what the report uses.

A "train" run holds ``config.json``, ``results.json``, ``metrics.csv`` and
``spectrum.json``; a "compress" run ``config.json`` and ``results.json``; an "lm" run (a pretrained
language model cut by ``lorita compress SOURCE --params P``) the same two, its results.json marked
``"kind": "lm"``. The ``command`` (and ``kind``) keys of ``results.json`` say which. Nothing is
recomputed: no model or checkpoint is loaded.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from lorita import jsonio
from lorita.checks import is_number, is_real
from lorita.cut_source import cut_source
from lorita.errors import LoritaError
from lorita.metric import ACCURACY, LOSS, METRICS, Metric

log = logging.getLogger(__name__)

KINDS = ("train", "compress", "lm")  # "lm": a compress run of a pretrained language model (lorita.runs.lm)
LM_STAGES = ("dense", "after_cut", "after_recovery")  # an lm run's perplexities: text -> {"ppl", "nll", "tokens"}
PRODUCED_BY = {
    "results.json": "`lorita train ... --out RUN` or `lorita compress RUN ... --out OUT` (written when the run ends; "
                    "an interrupted run has none: resume or rerun it)",
    "config.json": "`lorita train ... --out RUN` or `lorita compress RUN ... --out OUT` (written when the run starts)",
    "metrics.csv": "`lorita train ... --out RUN` (one row per finished epoch)",
    "spectrum.json": "`lorita train ... --out RUN` (written with the best model)",
}
# Numeric entries of results.json the report reads; each may be absent or null (shown as n/a).
NUMBERS = {
    "train": [("depth",), ("epochs",), ("best_epoch",), ("val_acc",), ("test_acc",), ("val_loss",), ("test_loss",),
              ("params",), ("macs",), ("flops",), ("seconds",)],
    "compress": [("original", "params"), ("original", "macs"), ("before", "val_acc"), ("before", "test_acc"),
                 ("after_cut", "params"), ("after_cut", "macs"), ("after_cut", "val_acc"), ("after_cut", "test_acc"),
                 ("after_finetune", "val_acc"), ("after_finetune", "test_acc"), ("before", "val_loss"),
                 ("before", "test_loss"), ("after_cut", "val_loss"), ("after_cut", "test_loss"),
                 ("after_finetune", "val_loss"), ("after_finetune", "test_loss"), ("kept", "params"), ("kept", "macs"),
                 ("kept", "flops"), ("evaluations",), ("seconds",)],
    "lm": [("params", "dense"), ("params", "cut"), ("params", "kept"), ("recovery", "steps"), ("seconds", "total")],
}
METRIC_REQUIRED = ("epoch", "val_acc")


@dataclass
class Run:
    """One run folder as read from disk.

    ``kind`` is "train" or "compress"; ``metrics`` holds metrics.csv's rows as
    floats (train runs; empty for compress runs); ``spectrum`` maps layer name
    to singular values, descending (train runs with spectrum.json, else None).

    Example:
        >>> run = Run(Path("runs/fcn-d3"), "train", {}, {"command": "train", "depth": 3}, [], None)
        >>> run.name, run.depth, run.label
        ('fcn-d3', 3, 'fcn-d3 (depth 3)')
    """

    path: Path
    kind: str
    config: dict
    results: dict
    metrics: list[dict]
    spectrum: dict[str, list[float]] | None

    @property
    def name(self) -> str:
        """The folder name (bytes that are not UTF-8 shown as U+FFFD, so plots and Markdown can show it)."""
        return display_name(self.path)

    @property
    def depth(self) -> int | None:
        """Composition depth N of a train run (results.json, else config.json), None if unknown."""
        depth = self.results.get("depth")
        if depth is None:
            compose = self.config.get("compose")
            depth = compose.get("depth") if isinstance(compose, dict) else None
        return int(depth) if is_number(depth) and depth == int(depth) else None  # NaN, 2.5: unknown

    @property
    def metric(self) -> Metric:
        """What the run is judged by: a train run's ``select_by`` (config.json), a compress run's ``metric``
        (results.json; accuracy for runs from before it was recorded). Loss for language models trained so, and for
        a pretrained language model's compress runs ("lm").

        Example:
            >>> Run(Path("c"), "compress", {}, {"metric": "val_loss"}, [], None).metric.test
            'test_loss'
        """
        if self.kind == "lm":  # a pretrained language model's cut: by its loss (perplexity) on each text
            return LOSS
        if self.kind == "train":
            train = self.config.get("train")
            name = train.get("select_by") if isinstance(train, dict) else None
        else:
            name = self.results.get("metric")
        return METRICS.get(name, ACCURACY) if isinstance(name, str) else ACCURACY

    @property
    def label(self) -> str:
        """Folder name, plus the depth for train runs: ``'fcn-d3 (depth 3)'``."""
        return self.name if self.depth is None else f"{self.name} (depth {self.depth})"

    def get(self, *keys: str) -> Any:
        """A nested results.json entry, None where any level is missing or null.

        Example:
            >>> Run(Path("c"), "compress", {}, {"kept": {"params": 0.2}}, [], None).get("kept", "params")
            0.2
        """
        value: Any = self.results
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value




def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise LoritaError(f"{path} is missing: it is written by {PRODUCED_BY[path.name]}")
    data = jsonio.read(path, allow_nan=True, fix=f"it is written by {PRODUCED_BY[path.name]}: rerun that command, "
                       "or fix the file by hand")
    if not isinstance(data, dict):
        raise LoritaError(f"{path} must hold a JSON object, got {type(data).__name__}; "
                          f"it is written by {PRODUCED_BY[path.name]}")
    return data


def _check_results(results: dict, file: Path) -> str:
    kind = results.get("command")
    if kind in ("experiment", "demo"):  # a folder of runs with its own report (with several seeds: one a seed)
        folder = file.parent
        nested, pattern = _nested_runs(folder), f"{folder}/*/"
        if not nested:
            seeds = sorted(p.name for p in folder.iterdir() if p.is_dir() and _nested_runs(p))
            nested, pattern = [f"{s}/{r}" for s in seeds[:1] for r in _nested_runs(folder / s)], f"{folder}/*/*/"
        shown = ", ".join(nested[:4]) or "its run folders"
        raise LoritaError(f"{folder} is a 'lorita {kind}' folder, which holds its own report.md; to report on "
                          f"its runs, pass them ({shown}, e.g. {pattern})")
    if kind not in ("train", "compress"):
        raise LoritaError(f"{file} has command {kind!r}; expected 'train' or 'compress'. "
                          f"The file is written by {PRODUCED_BY['results.json']}")
    if kind == "compress" and results.get("kind") == "lm":
        kind = "lm"
        for stage in LM_STAGES:
            texts = results.get(stage)
            if texts is not None and not (isinstance(texts, dict) and all(
                    isinstance(v, dict) and (v.get("ppl") is None or _is_float(v.get("ppl"))) for v in texts.values())):
                raise LoritaError(f"{file}: {stage} must be an object of text -> {{\"ppl\": number, ...}}, got "
                                  f"{_short(texts)}")
    for keys in NUMBERS[kind]:
        value: Any = results
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not _is_float(value):
            raise LoritaError(f"{file}: {'.'.join(keys)} must be a number or null, got {_short(value)}")
    if kind == "compress":
        ranks = results.get("ranks")
        if ranks is not None and (not isinstance(ranks, dict) or not all(_is_float(r) for r in ranks.values())):
            raise LoritaError(f"{file}: ranks must be an object of layer name -> rank, got {_short(ranks)}")
        dense = results.get("dense_layers")
        if dense is not None and (not isinstance(dense, list) or not all(isinstance(n, str) for n in dense)):
            raise LoritaError(f"{file}: dense_layers must be a list of layer names, got {_short(dense)}")
    return kind


def _is_float(value: Any) -> bool:
    """A number (NaN and infinity included) that a float can hold: not a bool, no int beyond 1e308."""
    if not is_real(value):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _to_float(text: str | None) -> float:
    return math.nan if text is None or text.strip() == "" else float(text)


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        log.warning("%s is missing (written by %s); no training curve for this run", path, PRODUCED_BY["metrics.csv"])
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return _metric_rows(path, csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:  # bytes that are not UTF-8, a field over csv's size limit
        raise LoritaError(f"{path} is not a readable CSV file ({type(err).__name__}: {str(err)[:200]}); it is "
                          f"written by {PRODUCED_BY['metrics.csv']}: rerun it, or fix or delete the file") from None


def _metric_rows(path: Path, reader: csv.DictReader) -> list[dict]:
    missing = [c for c in METRIC_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise LoritaError(f"{path} has no {', '.join(missing)} column (header: {_short(reader.fieldnames)}); "
                          f"expected a header line 'epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds' "
                          f"as written by {PRODUCED_BY['metrics.csv']}")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            rows.append({key: _to_float(value) for key, value in row.items() if key is not None})
        except ValueError as err:
            raise LoritaError(f"{path}, line {line}: every value must be a number ({str(err)[:200]}); "
                              "fix or delete that line") from None
    return rows


def _read_spectrum(path: Path) -> dict[str, list[float]] | None:
    if not path.is_file():
        log.warning("%s is missing (written by %s); no spectrum plot for this run", path, PRODUCED_BY["spectrum.json"])
        return None
    layers = _read_json(path).get("layers")
    if not isinstance(layers, dict) or not all(
            isinstance(v, list) and all(_is_float(x) for x in v) for v in layers.values()):
        raise LoritaError(f"{path} must hold {{\"layers\": {{layer name: [singular values, descending]}}}}; "
                          f"it is written by {PRODUCED_BY['spectrum.json']}")
    spectrum = {name: [float(x) for x in values] for name, values in layers.items()}
    bad = sorted(name for name, values in spectrum.items() if not all(math.isfinite(x) and x >= 0 for x in values))
    if bad:
        log.warning("%s: layer(s) %s hold singular values that are negative, NaN or infinite (a damaged file or a "
                    "diverged training); no spectrum plot for this run", path, ", ".join(bad[:5])[:300])
        return None
    return spectrum


def _nested_runs(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if (p / "results.json").is_file())
    except OSError:
        return []


def read_run(path: str | os.PathLike) -> Run:
    """Read a train or compress run folder written by the CLI (a pretrained language model's compress run is kind
    "lm").

    Raises LoritaError naming the file when the folder or its results.json is
    missing or malformed; a missing metrics.csv or spectrum.json only logs a warning.

    Example:
        >>> import json, tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "results.json").write_text(json.dumps({"command": "compress", "seconds": 2.5}))
        >>> run = read_run(folder)
        >>> run.kind, run.results["seconds"], run.config
        ('compress', 2.5, {})
    """
    folder = Path(path)
    if not folder.is_dir():
        raise LoritaError(f"run folder {folder} does not exist (or is not a folder); pass a folder written by "
                          "`lorita train ... --out RUN` or `lorita compress RUN ... --out OUT`")
    results_file = folder / "results.json"
    if not results_file.is_file():
        nested = _nested_runs(folder)
        if nested:
            shown = ", ".join(nested[:5]) + (", ..." if len(nested) > 5 else "")
            raise LoritaError(f"{results_file} is missing, but subfolders of {folder} are runs ({shown}): "
                              f"pass those folders instead, e.g. {folder / '*'}")
    results = _read_json(results_file)
    kind = _check_results(results, results_file)
    config_file = folder / "config.json"
    if config_file.is_file():
        config = _read_json(config_file)
        if config.get("command", results["command"]) != results["command"]:
            raise LoritaError(f"{config_file} says command {config.get('command')!r} but {results_file} says "
                              f"{results['command']!r}: the two files come from different runs; rerun into an empty "
                              "folder")
    else:
        log.warning("%s is missing (written by %s); %s", config_file, PRODUCED_BY["config.json"],
                    "the report reads results.json alone" if kind == "lm" else "model and dataset will show as n/a")
        config = {}
    metrics = _read_metrics(folder / "metrics.csv") if kind == "train" else []
    spectrum = _read_spectrum(folder / "spectrum.json") if kind == "train" else None
    return Run(folder, kind, config, results, metrics, spectrum)


def read_runs(paths: str | os.PathLike | Run | Iterable[str | os.PathLike | Run]) -> list[Run]:
    """Read several run folders (Run objects pass through), in the order given, dropping repeats.

    Example:
        >>> read_runs([])
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no run folders given; pass one or more folders written by `lorita train` or `lorita compress`
    """
    if isinstance(paths, (str, os.PathLike, Run)):
        paths = [paths]
    runs, seen = [], set()
    for item in paths:
        run = item if isinstance(item, Run) else read_run(item)
        key = run.path.resolve()
        if key in seen:
            log.warning("run folder %s given twice; reporting it once", run.path)
            continue
        seen.add(key)
        runs.append(run)
    if not runs:
        raise LoritaError("no run folders given; pass one or more folders written by `lorita train` or `lorita compress`")
    return runs


def find_source(run: Run, runs: Sequence[Run]) -> Run | None:
    """The train run among ``runs`` that compress run ``run`` was cut from, or None.

    Matches results.json's ``source`` as a path (as given, or relative to the
    compress folder's parent), then by folder name when that is unambiguous.

    Example:
        >>> train = Run(Path("runs/d3"), "train", {}, {"command": "train"}, [], None)
        >>> cut = Run(Path("runs/d3-cut"), "compress", {}, {"command": "compress", "source": "elsewhere/d3"}, [], None)
        >>> find_source(cut, [train, cut]).name
        'd3'
    """
    source = run.results.get("source") or run.config.get("source")
    if not isinstance(source, str) or not source:
        return None
    trains = [r for r in runs if r.kind == "train"]
    where = cut_source(run.path, source, warn=False).resolve()
    for train in trains:
        if train.path.resolve() == where:
            return train
    by_name = [t for t in trains if t.name == Path(source).name]
    return by_name[0] if len(by_name) == 1 else None


def source_key(run: Run) -> str:
    """Which run compress run ``run`` was cut from, as one path (``lorita.cut_source``, resolved), so that cuts of
    one source are grouped together and same-named sources of different folders apart; ``"?"`` without a source.

    Example:
        >>> source_key(Run(Path("/runs/seed0/cut"), "compress", {}, {"source": "d2"}, [], None))
        '/runs/seed0/d2'
    """
    source = run.results.get("source") or run.config.get("source")
    if not isinstance(source, str) or not source:
        return "?"
    return str(cut_source(run.path, source, warn=False).resolve())


def source_name(run: Run) -> str:
    """The source folder's name of a compress run (``'?'`` if results.json has none); of an "lm" run, the name its
    command line gave the model (a packaged name, or a file or folder's name).

    Example:
        >>> source_name(Run(Path("c"), "compress", {}, {"source": "runs/d3/"}, [], None))
        'd3'
    """
    source = run.results.get("source") or run.config.get("source")
    if isinstance(source, dict):  # a pretrained language model's (an "lm" run): as the command line named it
        source = source.get("text")
    return display_name(Path(source)) if isinstance(source, str) and source else "?"


def lm_texts(runs: Sequence[Run]) -> list[str]:
    """The texts a pretrained language model's compress runs ("lm") were measured on, in the order they first appear.

    Example:
        >>> lm_texts([Run(Path("a"), "lm", {}, {"dense": {"fortunes-val": {"ppl": 40.8}}}, [], None)])
        ['fortunes-val']
    """
    texts: dict[str, None] = {}
    for run in runs:
        dense = run.get("dense") if run.kind == "lm" else None
        for text in dense if isinstance(dense, dict) else {}:
            texts.setdefault(str(text), None)
    return list(texts)


def lm_method(run: Run) -> str:
    """How an "lm" run was cut: ``'low-rank'``, ``'width'`` or ``'width (global)'``.

    Example:
        >>> lm_method(Run(Path("a"), "lm", {}, {"compression": {"method": "width", "allocation": "global"}}, [], None))
        'width (global)'
    """
    compression = run.get("compression")
    compression = compression if isinstance(compression, dict) else {}
    method = str(compression.get("method") or "low-rank")  # runs from before the width method have no key
    allocation = compression.get("allocation")
    return f"{method} ({allocation})" if method == "width" and allocation not in (None, "uniform") else method


def lm_recovery(run: Run) -> str:
    """An "lm" run's recovery after the cut: ``'lora'``, ``'full'`` or ``'none'``.

    Example:
        >>> lm_recovery(Run(Path("a"), "lm", {}, {"compression": {"recovery": None}}, [], None))
        'none'
    """
    recipe = run.get("compression", "recovery")
    return str(recipe.get("mode", "?")) if isinstance(recipe, dict) else "none"


def display_name(path: Path) -> str:
    """A folder's name for plots and Markdown: bytes that are not UTF-8 shown as U+FFFD.

    Example:
        >>> display_name(Path("runs/d3"))
        'd3'
    """
    return path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
