"""A pretrained LM compressed end to end, in memory: load, calibrate, cut, recover, measure.

``compress_pretrained(source, LMCompression(params=0.8))`` is what ``lorita compress SOURCE
--params 0.8`` does for a language model, without the run folder: the source (a packaged
name, a ``.gguf`` file or a Hugging Face folder) is loaded, its texts (by default the packaged
ones, ``lorita.lm.corpus.CALIBRATION_SOURCES``) split by document, random calibration windows
drawn from the training documents, the model cut (``lorita.lm.cut.lm_cut``: whitened,
non-uniform ranks under the whole-model budget, closed-form refit; or, with
``method="width"``, its MLP channels pruned by their activations on the calibration windows and
``down_proj`` refitted on the kept ones, ``lorita.lm.width``), recovered
(``lorita.lm.recover``) unless ``recovery=None``, and its perplexity measured on the held-out
validation documents before and after, on the same windows. ``perplexity_of_text`` scores any
text file the same way.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from lorita.checks import check_choice, check_fraction, check_int
from lorita.errors import LoritaError
from lorita.lm.corpus import CALIBRATION_SOURCES, TEXT_SOURCES, check_ids_fit, check_text, encode, \
    random_windows, read_documents, tokenized_splits
from lorita.lm.cut import lm_cut
from lorita.lm.perplexity import CONTEXT, fit_context, perplexity, positions
from lorita.lm.recover import MAX_WINDOW_BYTES, RecoveryRecipe, recover, recovery_recipe
from lorita.lm.sources import ModelSource, load_pretrained, resolve_source
from lorita.lm.width import ALLOCATIONS, prune_width, pruned_linears

logger = logging.getLogger(__name__)

METHODS = ("low-rank", "width")  # LMCompression.method: thin pairs (lorita.lm.cut), or MLP channels (lorita.lm.width)


@dataclass(frozen=True)
class LMCompression:
    """How a pretrained LM is compressed: ``params`` (fraction of the whole model kept), ``method`` (``low-rank``:
    every block linear a candidate for a thin pair; ``width``: the MLP channels pruned instead), ``windows`` calibration
    windows of ``window`` tokens, the closed-form refit after the cut (``update``, either method), ``allocation`` of the
    MLP widths (method ``width``: ``uniform``, one width for every block, or ``global``, one ranking over all of
    them, ``lorita.lm.width.prune_width``), ranks rounded to ``multiple``, the ``recovery`` recipe (None: no
    fine-tuning), ``eval_tokens`` of each validation text scored in windows of ``context``, ``seed`` (the texts'
    split by document and the calibration windows' draw);
    ``texts``: the calibration, recovery and validation texts (``lorita.lm.corpus.TEXT_SOURCES`` names, or UTF-8
    files or folders of them), each split by document.

    Example:
        >>> LMCompression(params=0.8).calibration_tokens
        16384
    """

    params: float = 0.8
    method: str = "low-rank"
    windows: int = 64
    window: int = 256
    update: bool = True
    allocation: str = "uniform"
    multiple: int = 1
    recovery: RecoveryRecipe | None = field(default_factory=recovery_recipe)
    eval_tokens: int = 4096
    context: int = CONTEXT
    seed: int = 0
    texts: tuple[str, ...] = CALIBRATION_SOURCES

    def __post_init__(self) -> None:
        check_fraction("params", self.params, meaning="the fraction of the whole model's params to keep")
        check_choice("method", self.method, METHODS)
        check_choice("allocation", self.allocation, ALLOCATIONS)
        if self.method != "width" and self.allocation != "uniform":
            raise LoritaError(f"allocation={self.allocation!r} chooses the MLP widths of method 'width'; the low-rank "
                              "cut chooses its ranks across the model itself: leave allocation at 'uniform'")
        if self.method == "width" and self.multiple != 1:
            raise LoritaError(f"multiple={self.multiple} rounds low-rank ranks; method 'width' rounds the MLP width "
                              "to a multiple of 4 itself: leave multiple at 1")
        for name in ("windows", "window", "multiple", "eval_tokens", "context"):
            check_int(name, getattr(self, name))
        if self.windows * self.window * 8 > MAX_WINDOW_BYTES:  # the calibration windows' token ids, drawn at once
            raise LoritaError(f"{self.windows:,} calibration windows (--calibrate) of {self.window} tokens are more "
                              f"than the {MAX_WINDOW_BYTES >> 30} GiB of token windows lorita draws: ask for fewer")
        check_int("seed", self.seed, minimum=0)
        if self.recovery is not None and not isinstance(self.recovery, RecoveryRecipe):
            raise LoritaError(f"recovery must be a RecoveryRecipe or None, got {type(self.recovery).__name__}")
        texts = (self.texts,) if isinstance(self.texts, str) else tuple(self.texts)
        if not texts:
            raise LoritaError(f"texts must name at least one text ({', '.join(TEXT_SOURCES)}, or a folder of UTF-8 "
                              f"files), got {self.texts!r}")
        object.__setattr__(self, "texts", tuple(check_text(t) for t in texts))
        files = [t for t in self.texts if t not in TEXT_SOURCES and Path(t).expanduser().is_file()]
        if files:  # one document: nothing would be left for validation and test
            raise LoritaError(f"text {files[0]} is a file, which is one document, and the texts are split by document "
                              "(90/5/5: calibration and recovery, validation, test): give a folder of UTF-8 files, one "
                              "document each (or a named text)")

    @property
    def calibration_tokens(self) -> int:
        return self.windows * self.window

    def to_dict(self) -> dict:
        return {**asdict(self), "texts": list(self.texts)}


@dataclass
class CompressedLM:
    """The cut (and recovered) ``model``, its ``tokenizer``, the ``source`` it came from, ``results``, and ``how`` it
    was compressed (the ``LMCompression`` asked for, fitted to the model: ``fit_to_model``)."""

    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    results: dict
    how: LMCompression


def fit_to_model(how: LMCompression, model: torch.nn.Module) -> LMCompression:
    """``how`` with its evaluation context, calibration windows and recovery windows shortened to the tokens ``model``
    reads at once (``lorita.lm.perplexity.positions``), when fewer; the results then record the lengths used.

    Example:
        >>> import transformers
        >>> gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_positions=128, n_layer=1, n_embd=8, n_head=2,
        ...                                                             vocab_size=10))
        >>> fitted = fit_to_model(LMCompression(), gpt)
        >>> fitted.context, fitted.window, fitted.recovery.context
        (128, 128, 128)
    """
    limit = positions(model)
    lengths = [how.context, how.window] + ([how.recovery.context] if how.recovery is not None else [])
    if limit is None or max(lengths) <= limit:
        return how
    names = ("evaluation", "calibration", "recovery")
    logger.warning("the model reads at most %d tokens at once: %s shortened to %d", limit,
                   ", ".join(f"{n} windows ({length})" for n, length in zip(names, lengths) if length > limit), limit)
    recovery = None if how.recovery is None else replace(how.recovery, context=min(how.recovery.context, limit))
    return replace(how, context=min(how.context, limit), window=min(how.window, limit), recovery=recovery)


def _when_nothing_was_cut(how: LMCompression, params: dict) -> LMCompression:
    """``how``, without its recovery when the cut left the model at its full size (the model unchanged: no layer
    below its break-even rank, or no MLP channel pruned, which also leaves ``down_proj`` as it was), said in a
    warning."""
    if params["cut"] < params["dense"]:
        return how
    why = "no MLP channel was pruned" if how.method == "width" else "no layer is below its break-even rank"
    logger.warning("params=%g keeps the whole model: %s, so nothing was cut%s", how.params, why,
                   " and no recovery runs" if how.recovery is not None else "")
    return replace(how, recovery=None)


def _validation(model, streams: dict[str, torch.Tensor], context: int) -> dict:
    return {name: perplexity(model, ids, context=context).to_dict() for name, ids in streams.items()}


def compress_pretrained(source, how: LMCompression = LMCompression(), *, progress: bool = False) -> CompressedLM:
    """Load ``source``, cut it to ``how.params`` of its params, recover it, and measure it (module docstring).

    ``progress``: bars over the cut's blocks and the recovery's steps (a run takes minutes to tens of minutes).

    Example:
        >>> compress_pretrained("no-such-model")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no-such-model is not a packaged model (smollm2-135m), a .gguf file or a Hugging Face model folder (no such file or folder)
    """
    found = source if isinstance(source, ModelSource) else resolve_source(source)
    seconds: dict[str, float] = {}
    begin = tic = time.perf_counter()
    model, tokenizer = load_pretrained(found)
    seconds["load"] = time.perf_counter() - tic
    how = fit_to_model(how, model)
    splits = [tokenized_splits(tokenizer, name, seed=how.seed) for name in how.texts]
    rows = model.get_input_embeddings().num_embeddings
    for split in splits:
        for ids in (split.train, split.val, split.test):
            check_ids_fit(ids, tokenizer, rows)
    empty = [s.name for s in splits if len(s.val) < 2 or len(s.train) < how.window]
    if empty:
        raise LoritaError(f"text {', '.join(empty)} is too short: its validation documents need 2 tokens and its "
                          f"training documents a calibration window of {how.window}; give more documents (the split "
                          "is by document: 90/5/5)")
    val = {f"{s.name}-val": s.val[: how.eval_tokens] for s in splits}
    tic = time.perf_counter()
    dense = _validation(model, val, how.context)
    seconds["evaluate"] = time.perf_counter() - tic
    calibration = random_windows([s.train for s in splits], how.windows, how.window, seed=how.seed)
    taught = how.recovery is not None and how.recovery.distill > 0
    teacher = copy.deepcopy(model) if taught else None  # the dense model, to distil from
    tic = time.perf_counter()
    if how.method == "width":
        pruned = prune_width(model, how.params, calibration=calibration, update=how.update, allocation=how.allocation)
        cut = {"params": {"dense": pruned["params_before"], "cut": pruned["params_after"], "kept": pruned["kept"]},
               "ranks": None, "mlp_width": {"dense": pruned["mlp_width_before"], "cut": pruned["mlp_width"],
                                                     "blocks": pruned["mlp_widths"]},
               "refit": pruned["refit"]}
        layers = pruned_linears(model)  # what the recovery trains: no thin pairs here
    else:
        done = lm_cut(model, calibration, params=how.params, update=how.update, multiple=how.multiple,
                      progress=progress)
        cut = {"params": {"dense": done.params_before, "cut": done.params_after, "kept": done.kept},
               "ranks": done.ranks}
        layers = None
    seconds["cut"] = time.perf_counter() - tic
    how = _when_nothing_was_cut(how, cut["params"])
    tic = time.perf_counter()
    after_cut = _validation(model, val, how.context)
    seconds["evaluate"] += time.perf_counter() - tic
    recovered = training = None
    if how.recovery is not None:
        tic = time.perf_counter()
        training = recover(model, [s.train for s in splits], [s.val for s in splits], how.recovery, layers=layers,
                           teacher=teacher, progress=progress)
        seconds["recovery"] = time.perf_counter() - tic
        recovered = _validation(model, val, how.context)
        seconds["evaluate"] += time.perf_counter() - seconds["recovery"] - tic
    del teacher
    seconds["total"] = time.perf_counter() - begin
    results = {"source": found.to_dict(), "compression": how.to_dict(), "dense": dense, "after_cut": after_cut,
               "after_recovery": recovered, "recovery": training.to_dict() if training else None,
               **cut, "calibration_tokens": int(calibration.numel()), "seconds": seconds}
    logger.info("compress_pretrained: %s to %.4f of its params (%s)", found.describe(), cut["params"]["kept"],
                how.method)
    return CompressedLM(model, tokenizer, found, results, how)


def perplexity_of_text(model, tokenizer, path: str | Path, *, context: int = CONTEXT) -> dict:
    """``{"ppl", "nll", "tokens"}`` of ``model`` on a UTF-8 text file (or folder of them, or a named text source), with
    its own tokenizer, in windows of ``context`` tokens (shortened to the model's positions when fewer).

    Example:
        >>> perplexity_of_text(None, None, "/no/such/file.txt")
        Traceback (most recent call last):
        ...
        lorita.data.datasets.DataNotFoundError: /no/such/file.txt is not a text source (fortunes, python-docs, debian-handbook, licenses), nor a UTF-8 file or folder of them
    """
    ids = check_ids_fit(encode(tokenizer, read_documents(path)), tokenizer, model.get_input_embeddings().num_embeddings)
    return perplexity(model, ids, context=fit_context(model, context)).to_dict()


def compare_on_text(model, dense, tokenizer, path: str | Path | list[str], *, context: int = CONTEXT) -> dict:
    """``{"ppl", "dense_ppl", "tokens"}``: a cut model and the model it was cut from, on one text, the same windows
    (of ``context`` tokens, shortened to the model's positions when fewer).

    What ``lorita evaluate RUN --text FILE --json`` reports for a language-model run. ``path``: a text file, a
    folder of them or a named text source, or its documents already read (``read_documents``).

    Example:
        >>> compare_on_text(None, None, None, "/no/such/file.txt")
        Traceback (most recent call last):
        ...
        lorita.data.datasets.DataNotFoundError: /no/such/file.txt is not a text source (fortunes, python-docs, debian-handbook, licenses), nor a UTF-8 file or folder of them
    """
    ids = encode(tokenizer, path if isinstance(path, list) else read_documents(path))
    for lm in (model, dense):
        check_ids_fit(ids, tokenizer, lm.get_input_embeddings().num_embeddings)
    context = fit_context(model, context)
    cut, full = perplexity(model, ids, context=context), perplexity(dense, ids, context=context)
    return {"ppl": cut.ppl, "dense_ppl": full.ppl, "tokens": cut.tokens}
