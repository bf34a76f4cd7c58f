"""Training: one epoch-based loop for any classifier, checkpoints, resume, DDP.

Example:
    >>> from lorita.train import TrainConfig, train, evaluate
    >>> cfg = TrainConfig(epochs=2, lr=0.01, schedule="plateau")
    >>> cfg.optimizer
    'sgd'
"""

from lorita.train.config import TrainConfig
from lorita.train.evaluate import evaluate
from lorita.train.finetuning import FineTuned, finetune
from lorita.train.loop import TrainResult, train

__all__ = ["FineTuned", "TrainConfig", "TrainResult", "evaluate", "finetune", "train"]
