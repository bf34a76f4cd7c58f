"""TrainConfig: every knob of the training loop, validated when it is made.

The defaults are the Fashion-MNIST calibration recipe of METHOD.md section 5
(SGD 0.05, cosine, label smoothing 0.1, weight decay 5e-4). The authors' CIFAR
recipe (METHOD.md section 4) is ``TrainConfig(lr=0.01, weight_decay=1e-3,
schedule="plateau", plateau_factor=0.1, epochs=300)``.

Weight decay and LoRITa. The theory (METHOD.md section 1, step 2) needs the
plain L2 penalty ``lambda * sum_i ||W_i||_F^2`` on every factor of a composed
layer: that penalty is what makes depth ``N >= 2`` low-rank inducing (nuclear
norm at N=2, a Schatten-2/N quasi-norm beyond). PyTorch's SGD weight decay is
*coupled*: it adds ``weight_decay * W`` to the gradient, which is exactly the
gradient of ``(weight_decay / 2) * ||W||_F^2``, so ``optimizer="sgd"`` trains
with that penalty (``lambda = weight_decay / 2``). AdamW's decay is
*decoupled*: it shrinks the weights outside the adaptive update, which is not
the gradient of any fixed penalty on the factors; ``optimizer="adamw"`` is
offered for models that need it (e.g. ViTs) but is not the penalty the theory
speaks of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, get_args

from lorita.checks import check_device, is_int, is_number
from lorita.errors import LoritaError

SelectBy = Literal["val_acc", "val_loss"]
Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "plateau", "constant"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
MAX_SEED = (1 << 64) - 1  # the largest seed torch.manual_seed takes
MAX_EPOCHS = 100_000  # far past any recipe (the paper's longest: 300); a schedule is listed per epoch
MAX_RATE = 1e6  # lr and weight_decay: far past any that trains, still a float32 step (1e39 overflows)


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`lorita.train.train`, checked in ``__post_init__``.

    Fields: ``epochs``; ``batch_size`` (the global batch, split over ranks
    under DDP); ``optimizer`` ("sgd" or "adamw"); ``lr``; ``momentum`` (SGD
    only); ``weight_decay`` (on every parameter, as the authors do; see the
    module docstring for why SGD's coupled decay is the LoRITa penalty and
    AdamW's is not); ``label_smoothing``; ``schedule`` ("cosine": to 0 over
    the epochs after warm-up, "plateau": times ``plateau_factor`` after
    ``plateau_patience`` epochs without a lower validation loss, "constant");
    ``warmup_epochs`` (linear warm-up, per epoch); ``seed``; ``augment``
    (None: the dataset's default); ``device`` ("auto": CUDA when available,
    else CPU; or any ``torch.device`` string); ``eval_batch_size``.

    Example:
        >>> cfg = TrainConfig(epochs=5, lr=0.01, schedule="plateau")
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    epochs: int = field(default=20, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "global batch (split over ranks under torchrun)"})
    optimizer: Optimizer = field(default="sgd", metadata={
        "help": "sgd: coupled weight decay = the LoRITa penalty; adamw: decoupled, a different penalty"})
    lr: float = field(default=0.05, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay on every parameter"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the training loss"})
    schedule: Schedule = field(default="cosine", metadata={"help": "learning-rate schedule"})
    plateau_patience: int = field(default=5, metadata={"help": "plateau: epochs without a lower val loss"})
    plateau_factor: float = field(default=0.1, metadata={"help": "plateau: lr factor"})
    warmup_epochs: int = field(default=0, metadata={"help": "linear warm-up epochs"})
    seed: int = field(default=0, metadata={"help": "seed of the split, the init and the batch order"})
    augment: bool | None = field(default=None, metadata={
        "help": "random crop + flip (default: on for CIFAR, off for MNIST-like data)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available), cpu, cuda, cuda:1 ..."})
    eval_batch_size: int = field(default=1000, metadata={"help": "batch size of evaluation passes"})
    grad_clip: float | None = field(default=None, metadata={"help": "clip the gradient norm to this (default: no)"})
    shard: bool = field(default=False, metadata={
        "help": "under torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2) instead of "
                "replicating them (DDP); for models that outgrow one device"})
    select_by: SelectBy = field(default="val_acc", metadata={
        "help": "which validation figure picks the best epoch: val_acc (higher) or val_loss (lower)"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise LoritaError(f"{name} must be an integer >= 1, got {value!r}")
        if self.epochs > MAX_EPOCHS:
            raise LoritaError(f"epochs must be an integer from 1 to {MAX_EPOCHS:,}, got {self.epochs:,}")
        for name in ("plateau_patience", "warmup_epochs", "seed"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise LoritaError(f"{name} must be an integer >= 0, got {value!r}")
        if self.seed > MAX_SEED:
            raise LoritaError(f"seed must be an integer from 0 to 2^64 - 1 (what torch takes), got {self.seed}")
        if self.warmup_epochs >= self.epochs:
            raise LoritaError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs}); "
                "lower warmup_epochs or raise epochs"
            )
        if self.optimizer not in OPTIMIZERS:
            raise LoritaError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise LoritaError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not is_number(self.lr) or not 0 < self.lr <= MAX_RATE:
            raise LoritaError(f"lr must be a finite number > 0 and <= {MAX_RATE:g}, got {self.lr!r}")
        if not is_number(self.weight_decay) or not 0 <= self.weight_decay <= MAX_RATE:
            raise LoritaError(f"weight_decay must be a finite number >= 0 and <= {MAX_RATE:g}, "
                              f"got {self.weight_decay!r}")
        for name in ("momentum", "label_smoothing"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value < 1:
                raise LoritaError(f"{name} must be a number in [0, 1), got {value!r}")
        if not is_number(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise LoritaError(f"plateau_factor must be a number in (0, 1), got {self.plateau_factor!r}")
        if self.grad_clip is not None and (not is_number(self.grad_clip) or self.grad_clip <= 0):
            raise LoritaError(f"grad_clip must be a number > 0 (the largest gradient norm) or None, got {self.grad_clip!r}")
        if self.select_by not in get_args(SelectBy):
            raise LoritaError(f"select_by must be one of {get_args(SelectBy)}, got {self.select_by!r}")
        if not isinstance(self.shard, bool):
            raise LoritaError(f"shard must be True or False, got {self.shard!r}")
        if self.augment is not None and not isinstance(self.augment, bool):
            raise LoritaError(f"augment must be True, False or None (dataset default), got {self.augment!r}")
        self._check_device()
        # Plain floats, so that to_dict() round-trips and checkpoints compare equal.
        for name in ("lr", "momentum", "weight_decay", "label_smoothing", "plateau_factor"):
            setattr(self, name, float(getattr(self, name)))
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)

    def _check_device(self) -> None:
        if not isinstance(self.device, str):
            raise LoritaError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {self.device!r}")
        check_device(self.device, "trained on it", auto=True)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON- and ``weights_only``-safe).

        Example:
            >>> TrainConfig(epochs=3).to_dict()["epochs"]
            3
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build a config from a dict; unknown keys are an error that names them.

        Missing keys take their defaults.

        Example:
            >>> TrainConfig.from_dict({"epochs": 3, "optimizer": "adamw"}).optimizer
            'adamw'
        """
        if not isinstance(values, Mapping):
            raise LoritaError(f"TrainConfig.from_dict needs a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LoritaError(
                f"unknown TrainConfig key(s): {', '.join(map(str, unknown))}; "
                f"allowed keys are: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))
