"""Language-model runs: ``lorita compress SOURCE --params P`` for a pretrained causal LM, and its evaluation on a text.

``compress_lm_run(source, out, LMCompression(params=0.8))`` checks the source (a packaged name,
a ``.gguf`` file or a Hugging Face folder: ``lorita.lm.sources``), the texts and the output
folder before anything is loaded, then compresses the model in memory
(``lorita.lm.pipeline.compress_pretrained``: load, calibrate, cut, recover, measure) and writes
the run folder only when all of it is done (``lorita.runs.output.RunOutput``):

* ``config.json``: the run-folder mark, ``"command": "compress"``, ``"kind": "lm"``, the
  source, the compression settings and the model's transformers config;
* ``model.lorita``: the cut model (``lorita.save``: the thin pairs and their ranks, a tied
  embedding stored once), rebuilt on load with transformers' own class for that config;
* ``results.json``: the dense and cut perplexities on each text's validation documents (the
  same windows), params, ranks, the recovery's history, seconds per stage.

The tokenizer is the source's: ``evaluate_lm_run`` loads the source model with it and scores
both models on the same windows of a text.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from pathlib import Path

from lorita import __version__, jsonio
from lorita.checks import is_int
from lorita.errors import LoritaError
from lorita.lm.corpus import TEXT_SOURCES, check_text, read_user_text
from lorita.lm.cut import count_params
from lorita.lm.deploy import MODEL_FILE, config_from_dict, rebuild_lm
from lorita.lm.pipeline import LMCompression, compare_on_text, compress_pretrained
from lorita.lm.sources import (PACKAGED, ModelSource, load_pretrained, require, resolve_source, source_files,
                               source_from_dict)
from lorita.runs.folder import is_marked, mark, read_json, write_json
from lorita.runs.output import RunOutput
from lorita.serialization import save

log = logging.getLogger(__name__)

KIND = "lm"


def names_lm_source(text: str | os.PathLike) -> bool:
    """Whether ``text`` names a pretrained language model (a packaged name, a ``.gguf`` path, a Hugging Face folder)
    rather than a lorita run folder; nothing is loaded.

    Example:
        >>> names_lm_source("smollm2-135m"), names_lm_source("runs/fcn-d3")
        (True, False)
    """
    text = str(text)
    if text.strip().lower() in PACKAGED or text.lower().endswith(".gguf"):
        return True
    path = Path(text).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        return False
    try:  # a Hugging Face model folder: its config names a model_type; a lorita run's (damaged or not) does not
        config = jsonio.read(path / "config.json")
    except LoritaError:
        return False
    return isinstance(config, dict) and "model_type" in config and "command" not in config


def is_lm_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a language-model compress run (its marked config.json says ``"kind": "lm"``).

    Example:
        >>> is_lm_run("/no/such/run")
        False
    """
    if not is_marked(folder):
        return False
    try:
        config = read_json(Path(folder) / "config.json", "lorita")
    except LoritaError:
        return False
    return config.get("command") == "compress" and config.get("kind") == KIND


def _model_path(found: ModelSource) -> str:
    return os.path.join(found.folder, found.gguf_file) if found.gguf_file else found.folder


def compress_lm_run(source: str | os.PathLike, out: str | os.PathLike, how: LMCompression = LMCompression(), *,
                    overwrite: bool = False, progress: bool = False) -> dict:
    """Compress the pretrained LM ``source`` as ``how`` says into the run folder ``out``; return its results.json.

    Everything is checked before the model is loaded: the source, the extra it needs, the
    texts (``how``), the output folder (not inside the model or a text, locked, replaced only
    with ``overwrite``). ``progress``: bars over the long parts (``compress_pretrained``).

    Example:
        >>> compress_lm_run("no-such-model", "runs/x")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no-such-model is not a packaged model (smollm2-135m), a .gguf file or a Hugging Face model folder (no such file or folder)
    """
    found = resolve_source(source)
    if not isinstance(how, LMCompression):
        raise LoritaError(f"how must be a lorita.lm.pipeline.LMCompression, got {type(how).__name__}")
    require("transformers", *(("gguf", "accelerate") if found.gguf_file else ()))
    inputs = [(_model_path(found), "the model it compresses")]
    inputs += [(t, "a text it reads") for t in how.texts if t not in TEXT_SOURCES]
    for text in how.texts:  # read once here to check them (UTF-8, some text, bounded): not after the model loads
        documents = read_user_text(text)
        if len(documents) < 3:  # one each for calibration and recovery, validation, test
            raise LoritaError(f"text {text} holds {len(documents)} document(s); the split by document needs at least 3 "
                              "(dozens are better): add files to the folder, one document each")
    output = RunOutput(out, overwrite=overwrite, inputs=inputs)  # checked and locked before the slow part
    try:
        files = source_files(found)  # before it loads: what the run is cut from
        done = compress_pretrained(found, how, progress=progress)
    except BaseException:
        output.abandon()
        raise
    with output as folder:
        results = write_lm_run(folder, found, done.how, done.model, done.results, files)  # the lengths used
    return results


def write_lm_run(folder: Path, found: ModelSource, how: LMCompression, model, results: dict,
                 files: dict[str, str] | None = None) -> dict:
    """A language-model run's files in ``folder`` (a ``RunOutput`` staging folder): config.json, model.lorita,
    results.json (``results`` marked with the command and kind, and returned). ``files``: the source's
    ``source_files``, recorded for later comparisons against it."""
    config = mark({"command": "compress", "kind": KIND, "lorita_version": __version__, "source": found.to_dict(),
                   **({"source_files": files} if files is not None else {}),
                   "compression": how.to_dict(), "model_config": json.loads(model.config.to_json_string(use_diff=False))})
    results = {"command": "compress", "kind": KIND, **results}
    write_json(folder / "config.json", config)
    save(model, folder / MODEL_FILE)
    write_json(folder / "results.json", results)
    return results


def read_lm_run(run: str | os.PathLike) -> dict:
    """The config.json of a language-model compress run, checked.

    Example:
        >>> read_lm_run("/no/such/run")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: /no/such/run is not a language-model run: no model.lorita (is it a finished 'lorita compress SOURCE --params P' run?)
    """
    run = Path(run)
    if not (run / MODEL_FILE).is_file():
        raise LoritaError(f"{run} is not a language-model run: no {MODEL_FILE} (is it a finished 'lorita compress "
                          "SOURCE --params P' run?)")
    config = read_json(run / "config.json", "'lorita compress'")
    if config.get("command") != "compress" or config.get("kind") != KIND:
        raise LoritaError(f"{run} is a lorita run, but not a language model's ('kind': 'lm' in its config.json)")
    for key in ("source", "compression", "model_config"):
        if not isinstance(config.get(key), dict):
            raise LoritaError(f"{run / 'config.json'}: {key!r} is missing or not an object; write the run again")
    return config


def load_lm_run(run: str | os.PathLike):
    """The cut model a language-model run saved, on transformers' own class (no code from anywhere), in eval mode.

    Example:
        >>> load_lm_run("/no/such/run")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: /no/such/run is not a language-model run: no model.lorita (is it a finished 'lorita compress SOURCE --params P' run?)
    """
    config = read_lm_run(run)
    return rebuild_lm(Path(run) / MODEL_FILE, config_from_dict(config["model_config"], f"{run}/config.json"))




def _check_source_files(run: Path, found, recorded: Any) -> None:
    """Refuse a source whose files differ from those the run recorded (``source_files``; an older run without them
    is checked by its parameter count alone): the same sizes can hold another model's weights."""
    if not isinstance(recorded, dict):
        return
    now = source_files(found)
    changed = sorted(name for name in {*recorded, *now} if recorded.get(name) != now.get(name))
    if changed:
        raise LoritaError(f"{found.describe()} has changed since {run} was cut from it ({', '.join(changed[:3])} "
                          "differ from what the run recorded): it is not the model the run was cut from; put that one "
                          "back to compare against it")


def _check_same_source(run: Path, found, params: int) -> None:
    """Refuse a source model whose parameter count differs from the one the run was cut from (its results.json's
    ``params.dense``; a run without it is not checked): the file or folder now holds another model."""
    try:
        recorded = read_json(Path(run) / "results.json", "'lorita compress'")["params"]["dense"]
    except (LoritaError, KeyError, TypeError):
        return
    if is_int(recorded) and recorded != params:
        raise LoritaError(f"{found.describe()} now holds a model of {params:,} params, but {run} was cut from one of "
                          f"{recorded:,} (its results.json's params.dense): it is not the model the run was cut from; "
                          "put that one back to compare against it")


def evaluate_lm_run(run: str | os.PathLike, text: str | os.PathLike) -> dict:
    """``{"ppl", "dense_ppl", "tokens"}``: a language-model run's model and its source model on ``text`` (a UTF-8
    file, a folder of them or a named text source), the same windows (the run's evaluation context).

    Example:
        >>> evaluate_lm_run("/no/such/run", "licenses")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: /no/such/run is not a language-model run: no model.lorita (is it a finished 'lorita compress SOURCE --params P' run?)
    """
    config = read_lm_run(run)
    text = check_text(text)
    documents = read_user_text(text)  # read and checked before the models load (a slow load for a typo)
    found = source_from_dict(config["source"])
    _check_source_files(Path(run), found, config.get("source_files"))
    context = config["compression"].get("context")
    model = load_lm_run(run)
    dense, tokenizer = load_pretrained(found)
    _check_same_source(run, found, count_params(dense))
    log.info("evaluating %s and %s on %s", run, found.describe(), text)
    return compare_on_text(model, dense, tokenizer, documents, **({"context": context} if context else {}))
