"""How the composed factors should start: the paper's init, scaled, balanced and the per-layer choice, measured.

Every option of ``lorita.compose``'s ``init`` (and the ``init_scale`` knob between the paper's
init and a product of the layer's own scale) trained briefly on four kinds of model:

- ``mlp``: 64-128-128-10 without normalisation on scikit-learn's digits, the library recipe
  (``lorita.TrainConfig`` defaults: SGD lr 0.05, momentum 0.9, weight decay 5e-4, cosine,
  label smoothing 0.1, batch 128), 5 epochs, seeds 0 1 2;
- ``cnn``: a conv net without normalisation (conv 32, conv 32, pool, conv 64, pool, linear)
  on digits, same recipe, 5 epochs;
- ``resnet20`` (BatchNorm after every conv) on digits, 3 epochs; ``fcn``: the demo's
  784-512-512-512-10 with BatchNorm on Fashion-MNIST (first 10,000 training images), 3 epochs;
- ``gpt``: the zoo's character-level GPT at the size of ``experiments/gpt_fortunes.json
  --reduced`` (dim 64, 2 blocks, context 64) on Debian's fortunes, its AdamW recipe,
  3 epochs of 100 steps, judged by validation loss.

Per run: validation and test figures of the best epoch, and the low-rank effect: the share
of the plain architecture's parameters kept by ``compress(energy=0.95)`` and (classifiers)
by the strongest global cut within 1 point of the model's own validation accuracy
(``lorita.search_accuracy``). A variant that builds exactly the model an earlier one does
(equal state dicts under one seed: ``init="auto"`` on a model whose every composed layer is
followed by a normalisation layer or is its last layer is the paper's init) is not trained
twice; the table names it beside its twin.

Run (about 30 CPU minutes on 2 cores), under the machine's lock for heavy jobs:
    python benchmarks/init_study.py --json docs/init/init_study.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

import lorita
from lorita.data import load_dataset
from lorita.models import paper_exclude
from lorita.runs.config import DataSpec, ModelSpec
from lorita.train import TrainConfig, train
from lorita.train.evaluate import evaluate

VARIANTS = {  # name -> compose arguments (depth >= 2)
    "paper": {"init": "default"},
    "paper x0.6": {"init": "default", "init_scale": 0.6},
    "scaled": {"init": "default", "init_scale": 1.0},
    "balanced": {"init": "balanced"},
    "auto": {"init": "auto"},
}


def mlp(inputs: dict) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, inputs["num_classes"]))


def cnn(inputs: dict) -> nn.Module:
    c = inputs["in_channels"]
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 2 * 2, inputs["num_classes"]))


def zoo(name: str, **kwargs):
    def build(inputs: dict) -> nn.Module:
        model = ModelSpec(name, kwargs, inputs).build()
        model.lorita_zoo_name = name  # compose leaves the paper's plain layers plain (e.g. the GPT's head)
        return model
    return build


GPT_RECIPE = dict(batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.1, label_smoothing=0.0,
                  warmup_epochs=1, grad_clip=1.0, select_by="val_loss")
CASES = {
    "mlp": dict(data="digits", build=mlp, epochs=5, depths=(2, 3), seeds=(0, 1, 2),
                variants=("paper", "paper x0.6", "scaled", "balanced", "auto")),
    "cnn": dict(data="digits", build=cnn, epochs=5, depths=(3,), seeds=(0,),
                variants=("paper", "scaled", "balanced", "auto")),
    "resnet20": dict(data="digits", build=zoo("resnet20"), epochs=3, depths=(3,), seeds=(0,),
                     variants=("paper", "scaled", "balanced", "auto")),
    "fcn": dict(data="fashion-mnist", max_train=10000, build=zoo("fcn"), epochs=3, depths=(3,), seeds=(0,),
                variants=("paper", "scaled", "balanced", "auto")),
    "gpt": dict(data="fortunes", build=None, epochs=3, depths=(3,), seeds=(0,), recipe=GPT_RECIPE,
                variants=("paper", "scaled", "balanced", "auto")),
}
GPT_KWARGS = {"dim": 64, "depth": 2, "heads": 4, "context": 64}


def load(case: dict, seed: int, config: TrainConfig):
    if case["data"] == "fortunes":
        spec = ModelSpec("gpt", dict(GPT_KWARGS))
        data = DataSpec("fortunes", seed=seed, steps_per_epoch=100).load(model=spec, train=config)
        return data, zoo("gpt", **GPT_KWARGS)
    data = load_dataset(case["data"], seed=seed)
    if case.get("max_train"):
        t = data.train
        data.train = type(t)(t.images[: case["max_train"]], t.labels[: case["max_train"]], t.mean, t.std)
    return data, case["build"]


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def low_rank(model: nn.Module, data, plain_params: int, text: bool, config: TrainConfig) -> dict:
    """Shares of the plain architecture's parameters kept by an energy cut and a 1-point accuracy cut."""
    dense = lorita.merge(model)
    out = {"energy95": params(lorita.compress(dense, energy=0.95)) / plain_params}
    if not text:
        def val_acc(m):
            return evaluate(m, data.val, config.eval_batch_size, "cpu")[0]
        found = lorita.search_accuracy(dense, val_acc, max_drop=1.0, max_evals=8)
        out["drop1"] = params(found.model) / plain_params
    return out


def one_run(name: str, case: dict, depth: int, variant: str, seed: int) -> dict:
    config = TrainConfig(epochs=case["epochs"], seed=seed, device="cpu", **case.get("recipe", {}))
    data, build = load(case, seed, config)
    torch.manual_seed(seed)
    plain = build(data.model_inputs)
    plain_params = params(plain)
    model = plain if depth == 1 else compose(plain, depth, variant)
    tic = time.perf_counter()
    result = train(model, data, config)
    seconds = time.perf_counter() - tic
    model.load_state_dict(result.best_state)
    test_acc, test_loss = evaluate(model, data.test, config.eval_batch_size, "cpu")
    row = {"case": name, "depth": depth, "variant": variant if depth > 1 else "plain", "seed": seed,
           "epochs": config.epochs, "best_epoch": result.best_epoch, "val_acc": result.best_val_acc,
           "val_loss": result.best_val_loss, "test_acc": test_acc, "test_loss": test_loss,
           "val_acc_per_epoch": [round(h["val_acc"], 2) for h in result.history],
           "val_loss_per_epoch": [round(h["val_loss"], 4) for h in result.history], "train_seconds": seconds}
    row.update(low_rank(model, data, plain_params, case["data"] == "fortunes", config))
    return row


def same_start(case: dict, depth: int) -> dict[str, str]:
    """Variants that build exactly an earlier variant's composed model (seed 0, equal state dicts): not retrained."""
    config = TrainConfig(epochs=case["epochs"], device="cpu", **case.get("recipe", {}))
    data, build = load(case, 0, config)
    states, same = {}, {}
    for variant in case["variants"]:
        torch.manual_seed(0)
        state = compose(build(data.model_inputs), depth, variant).state_dict()
        for earlier, other in states.items():
            if all(torch.equal(state[k], other[k]) for k in other):
                same[variant] = earlier
                break
        else:
            states[variant] = state
    return same


def compose(plain: nn.Module, depth: int, variant: str) -> nn.Module:
    exclude = list(paper_exclude(plain.lorita_zoo_name)) if hasattr(plain, "lorita_zoo_name") else []
    return lorita.compose(plain, depth=depth, exclude=exclude or None, **VARIANTS[variant])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(CASES), help="cases to run (default: all)")
    p.add_argument("--variants", nargs="+", choices=["plain", *VARIANTS],
                   help="train only these (default: all); twins of any variant are still found and named")
    p.add_argument("--json", help="write every run's figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    rows, same = [], {}
    wanted = set(args.variants or ["plain", *VARIANTS])
    for name in args.only or list(CASES):
        case = CASES[name]
        for seed in case["seeds"] if "plain" in wanted else ():
            rows.append(one_run(name, case, 1, "plain", seed))
            print(json.dumps(rows[-1]), flush=True)
        for depth in case["depths"]:
            same[f"{name} d{depth}"] = same_start(case, depth)
            for variant in case["variants"]:
                if variant in same[f"{name} d{depth}"] or variant not in wanted:
                    continue  # the same model as an earlier variant's, same seed: the same run
                for seed in case["seeds"]:
                    rows.append(one_run(name, case, depth, variant, seed))
                    print(json.dumps(rows[-1]), flush=True)
    print("variants that start exactly as an earlier one (not retrained):", json.dumps(same))
    print(table(rows, same))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"same_start": same, "runs": rows}, indent=1) + "\n")
    return 0


def table(rows: list[dict], same: dict) -> str:
    """Markdown: mean over seeds per (case, depth, variant)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["depth"], r["variant"]), []).append(r)
    lines = ["| model | depth | init (compose arguments: VARIANTS) | seeds | val acc % | test acc % | val loss | energy 0.95 keeps | 1-pt drop keeps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (case, depth, variant), rs in groups.items():
        mean = lambda k: sum(r[k] for r in rs if k in r) / len(rs) if all(k in r for r in rs) else math.nan  # noqa: E731
        twins = [v for v, earlier in same.get(f"{case} d{depth}", {}).items() if earlier == variant]
        label = variant + (f" (= {', '.join(twins)})" if twins else "")
        lines.append(f"| {case} | {depth} | {label} | {len(rs)} | {mean('val_acc'):.1f} | {mean('test_acc'):.1f} | "
                     f"{mean('val_loss'):.3f} | {100 * mean('energy95'):.1f}% | {100 * mean('drop1'):.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
