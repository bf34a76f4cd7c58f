"""LoRITa inside the Hugging Face ``Trainer``: ``lorita.hf.LoritaCallback``.

``Trainer(model=model, args=args, ..., callbacks=[lorita.hf.LoritaCallback(depth=2)])``
trains ``model`` as LoRITa:

- at ``on_init_end`` (the end of ``Trainer.__init__``, before ``train()`` builds the
  optimizer) the model is composed in place (``lorita.compose(..., inplace=True)``), so
  the optimizer holds the factors, and ``args.weight_decay`` applies to them (the
  Trainer exempts only biases and norms);
- while composed, each composed layer's ``state_dict`` is the merged weight under the
  original key (``lorita.merge``'s product, float64, cast back): every checkpoint and
  ``trainer.save_model()`` write the plain architecture, which ``from_pretrained`` of the
  unmodified class loads with no missing or unexpected keys;
- loading a merged state dict into the composed model (``train(resume_from_checkpoint=...)``,
  ``load_best_model_at_end``) splits each weight into factors whose product equals it
  (``init="preserve"``), so a resumed run continues as LoRITa. The factors' optimizer
  moments restart then (they belonged to the previous factors; the product is the same,
  the split is not); the schedule, the step and everything else resume. Resume from the
  callback's own checkpoints (same depth and layers): a plain run's checkpoint holds optimizer
  state for other parameters, which the Trainer loads before any callback can act (torch then
  says a parameter group "doesn't match"); start from its weights instead
  (``from_pretrained``, a new Trainer with the callback);
- layers frozen when the Trainer is built (``requires_grad=False``) stay plain: nothing would
  train their factors (a PEFT model's frozen base, for one), and a ``LoritaWarning`` names them;
- before each checkpoint the factors are checked (at the step or epoch end that saves; with
  ``save_strategy="best"`` at each evaluation): a run that diverged (NaN or Inf) stops with a
  message before the Trainer writes a checkpoint that would hold no weights.

After training ``trainer.model`` is still composed (``train()`` may be called again);
``lorita.merge(trainer.model)`` gives the plain model in memory.

This module imports transformers (the ``hf`` extra); ``lorita.hf`` loads it on first use.
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback  # the hf extra: this module is loaded only on first use (lorita.hf)

from lorita.checks import check_choice, check_int
from lorita.compose import COMPOSE_INITS, FACTOR_SIDES, ComposeInit, FactorSide, compose, merge_layer
from lorita.composed import COMPOSED_TYPES, MAX_DEPTH, MERGED_VIEW, MODES, Mode
from lorita.conv1d import conv1d_base
from lorita.errors import LoritaError, LoritaWarning
from lorita.factor_init import check_init_scale
from lorita.linalg import check_finite
from lorita.messages import listed
from lorita.targets import Selector, scan_layers, select


class LoritaCallback(TrainerCallback):
    """Compose the Trainer's model before its optimizer is built; save it merged; resume it composed.

    Args:
        depth: factors per layer (at least 2).
        targets / exclude / init_scale / mode / factor_side / example_input: as in ``lorita.compose``
            (layers frozen when the Trainer is built are left out of ``targets``: module docstring).
        init: ``"preserve"`` (default: the factors' product is the model's current weight, so a
            pretrained model keeps its outputs; for a freshly built model this is the balanced
            split of its initial weights), ``"auto"`` (``lorita.compose``'s default: the paper's init
            where a normalisation layer follows, scaled to the layer's norm elsewhere), ``"default"``
            (the paper's) or ``"balanced"``.

    Example:
        >>> import transformers, lorita
        >>> config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        >>> model = transformers.GPT2LMHeadModel(config)
        >>> args = transformers.TrainingArguments("/tmp/lorita-doctest", use_cpu=True, report_to=[],
        ...                                       weight_decay=0.01)
        >>> trainer = transformers.Trainer(model=model, args=args,
        ...                                callbacks=[lorita.hf.LoritaCallback(depth=2)])  # doctest: +SKIP
        >>> LoritaCallback(depth=2).depth
        2
    """

    def __init__(self, depth: int = 2, *, targets: Selector = None, exclude: Selector = None,
                 init: ComposeInit = "preserve", init_scale: float | None = None, mode: Mode = "auto",
                 factor_side: FactorSide = "input", example_input: Any = None):
        self.depth = check_int("depth", depth, minimum=2, maximum=MAX_DEPTH,
                               meaning="factors per layer; LoRITa needs at least 2")
        self.init: ComposeInit = check_choice("init", init, COMPOSE_INITS)
        self.mode: Mode = check_choice("mode", mode, MODES)
        self.factor_side: FactorSide = check_choice("factor_side", factor_side, FACTOR_SIDES)
        check_init_scale(self.init, init_scale)
        self.targets, self.exclude, self.init_scale, self.example_input = targets, exclude, init_scale, example_input
        self.recomposed: list[nn.Module] = []  # layers whose factors were set from a merged state dict
        self.composed_at_init = False  # on_init_end ran: the callback was given to Trainer(callbacks=[...])

    def on_init_end(self, args, state, control, model: nn.Module | None = None, optimizer=None, **kwargs: Any):
        if model is None:
            raise LoritaError("LoritaCallback needs the Trainer's model (Trainer(model=..., callbacks=[...]))")
        if optimizer is not None:
            raise LoritaError("LoritaCallback composes the model, which gives it new parameters, but the Trainer "
                              "was given an optimizer built over the plain ones (optimizers=...). Let the Trainer "
                              "build the optimizer, or compose first: lorita.compose(model, inplace=True), then "
                              "build your optimizer and leave out the callback")
        if any(isinstance(m, COMPOSED_TYPES) for m in model.modules()):
            raise LoritaError("the Trainer's model is already composed; LoritaCallback composes it itself: pass "
                              "the plain model (or lorita.merge(model)), or, where model_init composes it, leave "
                              "out the callback (its checkpoints then hold the factors, not merged weights)")
        targets, exclude, example_input = self._selection_without_frozen(model)
        compose(model, self.depth, targets=targets, exclude=exclude, init=self.init, init_scale=self.init_scale,
                mode=self.mode, factor_side=self.factor_side, example_input=example_input, inplace=True)
        for name, module in model.named_modules():
            if isinstance(module, COMPOSED_TYPES):
                self._attach(module, name)
        self.composed_at_init = True
        if not args.weight_decay:
            warnings.warn("LoritaCallback: args.weight_decay is 0, and LoRITa's low rank comes from weight decay "
                          "on the factors; set TrainingArguments(weight_decay=...) (e.g. 1e-4 to 1e-2)",
                          LoritaWarning, stacklevel=2)
        return control

    def _selection_without_frozen(self, model: nn.Module) -> tuple[Selector, Selector, Any]:
        """``compose``'s targets, exclude and example_input: the callback's own, or, where some layer it selects is
        frozen, one full-match regex of the others' names."""
        if all(p.requires_grad for p in model.parameters()):
            return self.targets, self.exclude, self.example_input
        scan = scan_layers(model, composed=False, example_input=self.example_input)
        chosen = select(scan, self.targets, self.exclude, verb="compose",
                        all_modules=(n for n, _ in model.named_modules()))
        frozen = [layer.name for layer in chosen if not layer.module.weight.requires_grad]
        if not frozen:
            return self.targets, self.exclude, self.example_input
        if len(frozen) == len(chosen):
            raise LoritaError(f"every layer LoritaCallback would compose is frozen ({listed(frozen)}), so no factor "
                              "would train: unfreeze the layers LoRITa should train (requires_grad_(True)) before "
                              "building the Trainer")
        warnings.warn(f"LoritaCallback left {len(frozen)} frozen layer(s) plain, as no factor of theirs would "
                      f"train: {listed(frozen)}", LoritaWarning, stacklevel=3)
        trainable = [layer.name for layer in chosen if layer.module.weight.requires_grad]
        return "|".join(re.escape(name) for name in trainable), None, self.example_input

    def on_train_begin(self, args, state, control, model: nn.Module | None = None, optimizer=None, **kwargs: Any):
        if not self.composed_at_init:
            raise LoritaError("LoritaCallback must be given to Trainer(..., callbacks=[LoritaCallback(...)]): it "
                              "composes the model when the Trainer is built, before the optimizer exists, and "
                              "trainer.add_callback(...) comes too late for that")
        if model is not None and not any(isinstance(m, COMPOSED_TYPES) for m in model.modules()):
            raise LoritaError("the model the Trainer trains is not composed: LoritaCallback composes the model "
                              "given to Trainer(...) once, but with model_init the Trainer builds a new one in "
                              "train(); compose inside model_init instead (return lorita.compose(model, depth)) "
                              "and leave out LoritaCallback (its checkpoints then hold the factors, not merged "
                              "weights: lorita.merge the trained model before saving it for deployment)")
        if self.recomposed and optimizer is not None:
            inner = getattr(optimizer, "optimizer", optimizer)  # an accelerate-wrapped optimizer holds the real one
            for module in self.recomposed:
                for name, p in module.named_parameters():
                    if name != "bias":  # the bias is loaded as saved: its moments still fit
                        inner.state.pop(p, None)
            self.recomposed.clear()
        return control

    def on_step_end(self, args, state, control, model: nn.Module | None = None, **kwargs: Any):
        if control.should_save and model is not None:
            _check_factors(model, state.global_step)
        return control

    def on_epoch_end(self, args, state, control, model: nn.Module | None = None, **kwargs: Any):
        return self.on_step_end(args, state, control, model=model)

    def on_evaluate(self, args, state, control, model: nn.Module | None = None, **kwargs: Any):
        if getattr(args, "save_strategy", None) == "best" and model is not None:  # it decides to save after this
            _check_factors(model, state.global_step)
        return control

    def _attach(self, module: nn.Module, name: str) -> None:
        setattr(module, MERGED_VIEW, True)
        module.register_state_dict_post_hook(_merged_state_dict)
        module.register_load_state_dict_pre_hook(functools.partial(self._load_merged, name=name))  # picklable

    @torch.no_grad()
    def _load_merged(self, module, state, prefix, local_metadata, strict, missing, unexpected, errors, *, name):
        key = prefix + "weight"
        if key not in state:
            return  # a composed state dict (factors): loaded as it is
        weight = state.pop(key)
        expected = _plain_weight_shape(module)
        if tuple(weight.shape) != expected:
            errors.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)} from "
                          f"checkpoint, the shape in current model is {expected}.")
            return
        check_finite(weight, prefix.rstrip(".") or name)  # a diverged run's checkpoint: a message, not an SVD error
        if conv1d_base(getattr(module, "original_type", nn.Module)) is not None:
            weight = weight.T  # transformers Conv1D stores (in, out)
        module.load_dense(weight.to(next(module.parameters()).device), None)
        for param_name, p in module.named_parameters():
            if param_name != "bias":
                state[prefix + param_name] = p.detach().clone()
        self.recomposed.append(module)


def _check_factors(model: nn.Module, step: int) -> None:
    """Raise before a checkpoint is written when a composed layer's factors hold NaN or Inf (a diverged run)."""
    for name, module in model.named_modules():
        if isinstance(module, COMPOSED_TYPES):
            for param_name, p in module.named_parameters():
                try:
                    check_finite(p, name, "factors" if param_name != "bias" else "bias")
                except LoritaError as err:
                    raise LoritaError(f"training diverged before the checkpoint of step {step}, which is not "
                                      f"written: {err}") from None


def _plain_weight_shape(module: nn.Module) -> tuple[int, ...]:
    """The weight shape of the plain layer a composed layer stands for, as its state dict stores it."""
    shape = tuple(module.weight.shape)  # (out, in) or (C_out, C_in, kh, kw), formed from the factors
    if conv1d_base(getattr(module, "original_type", nn.Module)) is not None:
        return shape[::-1]  # Conv1D: (in, out)
    return shape


def _merged_state_dict(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: the composed layer's entries become the plain layer's (``weight``, ``bias``)."""
    plain = merge_layer(module, prefix.rstrip(".") or "layer")
    for key in [k for k in state if k.startswith(prefix) and k[len(prefix):] != "bias"]:
        del state[key]
    bias = state.pop(prefix + "bias", None)
    state[prefix + "weight"] = plain.weight.detach()
    if bias is not None:
        state[prefix + "bias"] = bias
