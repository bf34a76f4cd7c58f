"""The texts the language-model benchmarks share: calibration windows and the validation streams they score.

The calibration sources (``lorita.lm.corpus.CALIBRATION_SOURCES``) split by document with ``seed``; calibration
windows drawn from their training documents; perplexity on the first ``eval_tokens`` of each source's validation
documents (``<source>-val``, where choices are made) and of the Debian licence texts (``licenses``, never seen).
"""

import torch

from lorita.lm.corpus import CALIBRATION_SOURCES, encode, random_windows, read_documents, tokenized_splits


def calibration_and_validation(tokenizer, *, windows: int, context: int, eval_tokens: int,
                               seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(calibration, evals)``: ``windows`` windows of ``context`` token ids, and the validation streams by name."""
    splits = {name: tokenized_splits(tokenizer, name, seed=seed) for name in CALIBRATION_SOURCES}
    evals = {f"{name}-val": s.val[:eval_tokens] for name, s in splits.items()}
    evals["licenses"] = encode(tokenizer, read_documents("licenses"))[:eval_tokens]
    calibration = random_windows([s.train for s in splits.values()], windows, context, seed=seed)
    return calibration, evals
