"""int8 after the cut: file size, CPU latency and accuracy of four variants of each model.

For each model: trained here with LoRITa (depth 2), merged (``dense fp32``), quantized
(``dense int8``: ``lorita.quantize(merged, "int8")``), cut (``low-rank fp32``: the strongest
cut within 1 point of validation accuracy, ``lorita.select_ranks(merged, "accuracy", ...)``)
and the cut quantized (``low-rank int8``). For each variant: the ``lorita.save`` file's
bytes, test accuracy (the GPT: per-character accuracy and perplexity on the test text),
and CPU latency at batch 1 and 32 (``lorita.latency.measure_latency``: the four variants
timed in turn, median of ``--repeats`` samples of at least 50 ms, ``--threads`` threads,
``torch.inference_mode``). Ratios between variants of one model are what to read: each
sample of each variant is taken under the same machine load.

Models: ``mlp`` (64-512-256-10) and ``cnn`` (two 3x3 convs, max-pool, two linears) on
scikit-learn's ``digits``, built here (the zoo does not hold them); the demo's ``fcn``
(width 512, 3 hidden layers) on Fashion-MNIST; the reduced ``vgg16`` (width 0.25,
Fashion-MNIST, 20000 training images, ``experiments/vgg16_cifar10.json --reduced``); the
zoo's ``gpt`` (reduced: dim 64, 2 blocks) on the fortunes text. Training is short
(``EPOCHS``): the point is what int8 does to a given model, not the model's best accuracy.

``--kernels`` instead times one Linear layer in every int8 form available here (lorita's
int8 layer, its dequantize-then-matmul form, PyTorch's dynamic quantization, torchao's
weight-only and dynamic int8 when torchao is installed) against float32.

    python benchmarks/quantize.py --out runs/quantize                 # about 10 minutes on 2 cores
    python benchmarks/quantize.py --out runs/quantize --models mlp cnn --rounds 5  # the bar: the unseen MLP, CNN
    python benchmarks/quantize.py --kernels                            # why lorita's own int8 layers

Output: ``results.json``, ``report.md`` (the table) and ``accuracy_vs_bytes.png`` in ``--out``;
trained models are kept there (``NAME-dense.lorita``) and reused by a later run (``--retrain``
trains again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import lorita
from lorita.atomic import atomic_write_text
from lorita.data import load_dataset
from lorita.latency import measure_latency
from lorita.models import create_model
from lorita.train import TrainConfig
from lorita.train.evaluate import evaluate

VARIANTS = ("dense fp32", "dense int8", "low-rank fp32", "low-rank int8")
MODELS = ("mlp", "cnn", "fcn", "vgg16", "gpt")
EPOCHS = {"mlp": 30, "cnn": 20, "fcn": 4, "vgg16": 3, "gpt": 8}
IMAGE_RECIPE = dict(batch_size=64, lr=0.05, weight_decay=5e-4, label_smoothing=0.1, schedule="cosine",
                    augment=False, device="cpu")
GPT_RECIPE = dict(batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.1, label_smoothing=0.0,
                  schedule="cosine", warmup_epochs=1, grad_clip=1.0, select_by="val_loss", device="cpu")
GPT_KWARGS = {"dim": 64, "depth": 2, "heads": 4, "context": 64}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))


def setup(name: str):
    """(builder, data, example batch, training recipe, compose init) of one model."""
    if name in ("mlp", "cnn"):
        data = load_dataset("digits", val_fraction=0.1, seed=0)
        # no normalisation layer after the composed layers: the paper's init stalls there, a balanced split trains
        return (mlp if name == "mlp" else cnn), data, data.val, dict(IMAGE_RECIPE), "balanced"
    if name in ("fcn", "vgg16"):
        data = load_dataset("fashion-mnist", val_fraction=0.1, seed=0)
        if name == "vgg16":
            t = data.train
            data.train = type(t)(t.images[:20000], t.labels[:20000], t.mean, t.std)  # as --reduced: max_train
        kwargs = {"width": 512, "hidden_layers": 3} if name == "fcn" else {"width_multiplier": 0.25}
        return (lambda: create_model(name, num_classes=10, in_channels=1, image_size=28, **kwargs)), data, \
            data.val, dict(IMAGE_RECIPE, batch_size=128), "default"
    from lorita.runs.config import DataSpec, ModelSpec

    recipe = TrainConfig(**GPT_RECIPE)
    data = DataSpec("fortunes", steps_per_epoch=100).load(model=ModelSpec("gpt", GPT_KWARGS), train=recipe)
    return (lambda: create_model("gpt", **data.model_inputs, **GPT_KWARGS)), data, data.val, dict(GPT_RECIPE), \
        "default"


def trained(name: str, out: Path, retrain: bool):
    """The merged LoRITa model (trained now, or read back from ``out``), its data and validation split."""
    build, data, val, recipe, init = setup(name)
    path = out / f"{name}-dense.lorita"
    if path.exists() and not retrain:
        return lorita.load(path, model=build).eval(), data, val, 0.0
    torch.manual_seed(0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")  # the GPT's tied head stays plain
        composed = lorita.compose(build(), depth=2, init=init)
    lorita.train.train(composed, data, TrainConfig(**recipe, epochs=EPOCHS[name], seed=0))
    merged = lorita.merge(composed).eval()
    lorita.save(merged, path)
    return merged, data, val, time.perf_counter() - start


def example(data, batch: int) -> torch.Tensor:
    x, _ = next(iter(data.test.batches(batch)))
    return x[:batch]


def variants(merged: nn.Module, val) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """The four variants; the cut is the strongest within 1 point of validation accuracy."""
    def val_acc(model):
        return evaluate(model, val)[0]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.(compress|quantize|select_ranks) left")
        ranks = lorita.select_ranks(merged, "accuracy", evaluate=val_acc, max_drop=1.0)
        cut = lorita.compress(merged, ranks=ranks).eval()
        return {"dense fp32": merged, "dense int8": lorita.quantize(merged, "int8").eval(),
                "low-rank fp32": cut, "low-rank int8": lorita.quantize(cut, "int8").eval()}, ranks


def measure(name: str, out: Path, args) -> dict:
    merged, data, val, train_s = trained(name, out, args.retrain)
    models, ranks = variants(merged, val)
    rows = {}
    for variant, model in models.items():
        path = out / f"{name}-{variant.replace(' ', '-')}.lorita"
        lorita.save(model, path)
        acc, loss = evaluate(model, data.test)
        rows[variant] = {"bytes": path.stat().st_size, "test_acc": acc, "test_loss": loss}
        if name == "gpt":
            rows[variant]["test_perplexity"] = math.exp(loss)
    for batch in (1, 32):
        rounds = [measure_latency(models, example(data, batch), repeats=args.repeats) for _ in range(args.rounds)]
        for variant in models:
            ms = [1e3 * times[variant] for times in rounds]
            rows[variant][f"latency_b{batch}_ms"] = statistics.median(ms)
            rows[variant][f"latency_b{batch}_rounds_ms"] = ms
    return {"model": name, "train_seconds": train_s, "ranks": ranks, "variants": rows}


def report(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; torch {results['torch']}, {results['threads']} thread(s), "
             f"{results['repeats']} timing repeats (median), {results.get('rounds', 1)} round(s) (median).", "",
             "| model | variant | file (KB) | vs low-rank fp32 | test acc (%) | ms at batch 1 | ms at batch 32 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in results["models"]:
        rows = entry["variants"]
        base = rows["low-rank fp32"]
        for variant in VARIANTS:
            r = rows[variant]
            acc = f"{r['test_acc']:.2f}" + (f" (ppl {r['test_perplexity']:.3f})" if "test_perplexity" in r else "")
            lines.append(f"| {entry['model']} | {variant} | {r['bytes'] / 1024:.1f} | {r['bytes'] / base['bytes']:.3f}x"
                         f" | {acc} | {r['latency_b1_ms']:.3f} | {r['latency_b32_ms']:.3f} |")
    lines += ["", "The bar (low-rank int8 against low-rank fp32: accuracy within 1 point, file at most 0.35x, "
              "batch-32 latency not worse):", ""]
    for entry in results["models"]:
        q, f = entry["variants"]["low-rank int8"], entry["variants"]["low-rank fp32"]
        ratios = [a / b for a, b in zip(q.get("latency_b32_rounds_ms", []), f.get("latency_b32_rounds_ms", []))]
        ratio = statistics.median(ratios) if ratios else q["latency_b32_ms"] / f["latency_b32_ms"]
        each = f" (the median of the paired rounds: {', '.join(f'{r:.3f}x' for r in ratios)})" if len(ratios) > 1 else ""
        lines.append(f"- {entry['model']}: accuracy {q['test_acc'] - f['test_acc']:+.2f} points, file "
                     f"{q['bytes'] / f['bytes']:.3f}x, batch-32 latency {ratio:.3f}x" + each)
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib  # the cli extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"dense fp32": "o", "dense int8": "s", "low-rank fp32": "^", "low-rank int8": "D"}
    for entry in results["models"]:
        rows = entry["variants"]
        xs = [rows[v]["bytes"] for v in VARIANTS]
        ys = [rows[v]["test_acc"] for v in VARIANTS]
        line, = ax.plot(xs, ys, ":", alpha=0.5)
        for v in VARIANTS:
            ax.scatter(rows[v]["bytes"], rows[v]["test_acc"], marker=markers[v], color=line.get_color(),
                       label=f"{entry['model']}" if v == "dense fp32" else None)
    for v, m in markers.items():
        ax.scatter([], [], marker=m, color="gray", label=v)
    ax.set_xscale("log")
    ax.set_xlabel("saved file (bytes, log scale)")
    ax.set_ylabel("test accuracy (%; gpt: per character)")
    ax.set_title("int8 after the cut: accuracy against bytes")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kernels(args) -> None:
    """One Linear layer, float32 against each int8 form available here (ratios to float32 are printed)."""
    from lorita.int8 import Int8Linear

    forms = {}
    try:
        import torchao.quantization as tq  # optional: only to compare
        forms["torchao weight-only"] = lambda lin: _quantized_(lin, tq.quantize_, tq.Int8WeightOnlyConfig())
        forms["torchao dynamic"] = lambda lin: _quantized_(lin, tq.quantize_,
                                                           tq.Int8DynamicActivationInt8WeightConfig())
    except ImportError:
        print("torchao not installed: its columns are left out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notes
        from torch.ao.quantization import quantize_dynamic
    forms["torch dynamic"] = lambda lin: quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    for n_in, n_out in ((64, 512), (512, 256), (256, 64), (1024, 1024)):
        torch.manual_seed(0)
        dense = nn.Linear(n_in, n_out).eval()
        q = Int8Linear.from_linear(dense)
        models = {"float32": dense, "lorita int8": q,
                  "dequantize + matmul": _Dequantized(q)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models.update({k: make(_copy(dense)) for k, make in forms.items()})
        for batch in (1, 32):
            t = measure_latency(models, torch.randn(batch, n_in), repeats=args.repeats)
            ratios = ", ".join(f"{k} {v / t['float32']:.2f}x" for k, v in t.items() if k != "float32")
            print(f"Linear({n_in}, {n_out}) batch {batch}: float32 {1e6 * t['float32']:.1f} us; {ratios}")


class _Dequantized(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return nn.functional.linear(x, self.layer.weight, self.layer.bias)


def _copy(module):
    import copy

    return copy.deepcopy(module)


def _quantized_(module, quantize_, config):
    quantize_(module, config)
    return module


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--out", default="runs/quantize")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=1,
                   help="time every variant this many times over (each a --repeats median); the medians are reported")
    p.add_argument("--retrain", action="store_true", help="train again even if the out folder holds the model")
    p.add_argument("--kernels", action="store_true", help="time one Linear in each int8 form instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.kernels:
        kernels(args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": f"{cpu_name()} ({os.cpu_count()} cores seen)",
               "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
               "command": "python benchmarks/quantize.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "models": []}
    for name in args.models:
        entry = measure(name, out, args)
        results["models"].append(entry)
        print(json.dumps({k: entry[k] for k in ("model", "variants")}), flush=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")  # after each model
        atomic_write_text(out / "report.md", report(results))
    plot(results, out / "accuracy_vs_bytes.png")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
