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
  the split is not); the schedule, the step and everything else resume.

After training ``trainer.model`` is still composed (``train()`` may be called again);
``lorita.merge(trainer.model)`` gives the plain model in memory.

This module imports transformers (the ``hf`` extra); ``lorita.hf`` loads it on first use.
"""

from __future__ import annotations

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
from lorita.linalg import check_finite
from lorita.targets import Selector


class LoritaCallback(TrainerCallback):
    """Compose the Trainer's model before its optimizer is built; save it merged; resume it composed.

    Args:
        depth: factors per layer (at least 2).
        targets / exclude / mode / factor_side: as in ``lorita.compose``.
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
                 init: ComposeInit = "preserve", mode: Mode = "auto", factor_side: FactorSide = "input"):
        self.depth = check_int("depth", depth, minimum=2, maximum=MAX_DEPTH,
                               meaning="factors per layer; LoRITa needs at least 2")
        self.init: ComposeInit = check_choice("init", init, COMPOSE_INITS)
        self.mode: Mode = check_choice("mode", mode, MODES)
        self.factor_side: FactorSide = check_choice("factor_side", factor_side, FACTOR_SIDES)
        self.targets, self.exclude = targets, exclude
        self.recomposed: list[nn.Module] = []  # layers whose factors were set from a merged state dict

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
        compose(model, self.depth, targets=self.targets, exclude=self.exclude, init=self.init, mode=self.mode,
                factor_side=self.factor_side, inplace=True)
        for name, module in model.named_modules():
            if isinstance(module, COMPOSED_TYPES):
                self._attach(module, name)
        if not args.weight_decay:
            warnings.warn("LoritaCallback: args.weight_decay is 0, and LoRITa's low rank comes from weight decay "
                          "on the factors; set TrainingArguments(weight_decay=...) (e.g. 1e-4 to 1e-2)",
                          LoritaWarning, stacklevel=2)
        return control

    def on_train_begin(self, args, state, control, model: nn.Module | None = None, optimizer=None, **kwargs: Any):
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

    def _attach(self, module: nn.Module, name: str) -> None:
        setattr(module, MERGED_VIEW, True)
        module.register_state_dict_post_hook(_merged_state_dict)
        module.register_load_state_dict_pre_hook(lambda *a: self._load_merged(*a, name=name))

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
