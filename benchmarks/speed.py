"""How fast LoRITa trains, how fast its compressed models run, what compression costs.

Five parts (``--parts``, all by default):

* ``train``: one training step (forward + backward + SGD step with momentum and weight
  decay) of FCN (1x28x28), VGG16, ResNet20 and the small ViT (3x32x32), plain against
  depth 2 and 3 in the ``sequential``, ``fused`` and ``auto`` modes. Targets: ``auto``
  within 1.1x of the faster pure mode; depth-3 ``auto`` at most 1.3x plain on VGG16,
  ResNet20 and ViT.
* ``auto``: per composed layer of those models, forward + backward in each mode on the
  input the layer really gets, against the mode ``auto`` picks (is the cost model right?).
* ``infer``: latency of VGG16 and ResNet20 cut to about a third of their MACs
  (``choose_ranks(..., Budget(flops=0.33))`` on weights given a decaying, trained-like
  spectrum), eval mode, ``torch.inference_mode``, batch 1 and 64, with and without
  ``lorita.latency.keep_faster``; speed-up next to the MACs reduction (target: at least
  0.7 of it).
* ``latency``: the latency budget (``lorita.latency.latency_budget``) on VGG16, ResNet20
  and the ViT at batch 1 and 64, NCHW and channels_last, for each request in
  ``--latency-requests``: the predicted fraction, the fraction the search measured, and the
  compressed model (real SVD weights) timed again against the dense one. Target: the last
  within 10% of the request. Wall clock (the budget is a wall-clock one): run it on an idle
  machine.
* ``compress``: seconds for ``spectrum`` and ``compress`` on VGG16, and for the budget and
  accuracy strategies (accuracy with a cheap fake evaluation; its calls are counted).
* ``llm``: ``compress(energy=0.9, inplace=True)`` of a LLaMA-style model of about 1.1B
  parameters (``benchmarks/scale.py``'s shape, random fp32) on ``--device``: seconds and
  peak memory. Minutes on a GPU; on 2 CPU cores use ``benchmarks/scale.py`` instead.
* ``memory``: peak memory of one training step, composed against plain, each in a fresh
  subprocess (``VmHWM`` from ``/proc/self/status`` after resetting it; on CUDA
  ``torch.cuda.max_memory_allocated``).

Every comparison is a ratio measured in the same run: the configurations of one table are
run in turn, round-robin, and the median of the repeats is kept. Two clocks are printed:
``wall`` (``time.perf_counter``, CUDA synchronised around it) and ``cpu``
(``time.process_time``: with one thread, the time the work actually ran on a core, which
other jobs sharing the machine barely disturb). ``--clock`` says which one the ratios and
targets use.

    python benchmarks/speed.py                          # everything, full sizes (12 min on 2 idle cores, 1 thread)
    python benchmarks/speed.py --quick                  # small sizes, few repeats (a few minutes)
    python benchmarks/speed.py --parts train --models resnet20 vit --repeats 7 --threads 2
    python benchmarks/speed.py --parts latency --threads 2 --json latency.json    # the latency-budget check (CPU)
    python benchmarks/speed.py --device cuda --json gpu.json   # the GPU plan: about 6-8 minutes on one H100-class GPU

``--device cuda`` without ``--parts`` runs the GPU plan, sized for 10 minutes: training-step
ratios (batch 128), inference speed-up at batch 1, 64 and 256 in float32 and bfloat16, and
the 1.1B compress time. Prints Markdown tables; ``--json PATH`` also writes every number.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import lorita
from lorita.composed import COMPOSED_TYPES
from lorita.cutspec import Budget, Latency
from lorita.errors import LoritaError
from lorita.latency import keep_faster, latency_budget, measure_latency
from lorita.models import create_model, paper_exclude
from lorita.targets import scan_layers
from procmem import status_mb  # noqa: E402 (benchmarks/procmem.py)

PARTS = ("train", "auto", "infer", "latency", "compress", "memory", "llm")
CPU_PARTS = ("train", "auto", "infer", "compress", "memory")  # the default on CPU (latency and llm: on request)
GPU_PARTS = ("train", "infer", "llm")  # the default with --device cuda: the 10-minute GPU plan
TRAIN_MODELS = ("fcn", "vgg16", "resnet20", "vit")
INFER_MODELS = ("vgg16", "resnet20", "vit")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("sequential", "fused", "auto")


# ----------------------------------------------------------------------------
# set-up


def shape_of(name: str) -> tuple[int, int, int]:
    return (1, 28, 28) if name == "fcn" else (3, 32, 32)


def build(name: str, args) -> nn.Module:
    """The zoo model; VGG16 at ``--vgg-width``."""
    c, h, _ = shape_of(name)
    kwargs = {"width_multiplier": args.vgg_width} if name == "vgg16" else {}
    return create_model(name, 10, c, h, **kwargs)


def composed(model: nn.Module, name: str, depth: int, mode: str) -> nn.Module:
    """Depth-``depth`` LoRITa model in ``mode``, leaving plain what the paper leaves plain (ViT embed/head)."""
    if depth == 1:
        return copy.deepcopy(model)
    return lorita.compose(model, depth=depth, mode=mode, exclude=paper_exclude(name) or None)


def configs() -> list[tuple[str, int, str]]:
    return [("plain", 1, "-")] + [(f"d{d}-{m}", d, m) for d in (2, 3) for m in MODES]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, number: int = 1) -> tuple[float, float]:
    """(wall, cpu) seconds per call of ``fn``, averaged over ``number`` calls."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - wall) / number, (time.process_time() - cpu) / number


def pick(sample: tuple[float, float], clock: str) -> float:
    return sample[0] if clock == "wall" else sample[1]


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def machine(args) -> dict:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(args.device), "python": platform.python_version(), "load_start": os.getloadavg()}
    if args.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(args.device)
    return info


# ----------------------------------------------------------------------------
# train


def train_part(args, out: dict) -> None:
    print(f"\n## Training step (forward + backward + SGD step), clock for ratios: {args.clock}\n")
    rows, results = [], {}
    for name in args.models:
        torch.manual_seed(0)
        base = build(name, args)
        x = torch.randn(args.batch, *shape_of(name), device=args.device)
        y = torch.randint(0, 10, (args.batch,), device=args.device)
        runs = {}
        for label, depth, mode in configs():
            model = composed(base, name, depth, mode).to(args.device).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            runs[label] = step
        samples = {label: [] for label in runs}
        for step in runs.values():  # warm-up: allocator, momentum buffers, kernel choice
            step()
        for _ in range(args.repeats):
            for label, step in runs.items():
                samples[label].append(timed(step, args.device))
        med = {label: medians(s) for label, s in samples.items()}
        plain = med["plain"]
        res = {"wall_s": {k: v[0] for k, v in med.items()}, "cpu_s": {k: v[1] for k, v in med.items()}}
        for label, (wall, cpu) in med.items():
            rows.append([name, label, f"{wall * 1e3:.1f}", f"{wall / plain[0]:.2f}", f"{cpu * 1e3:.1f}",
                         f"{cpu / plain[1]:.2f}"])
        for depth in (2, 3):
            t = {m: pick(med[f"d{depth}-{m}"], args.clock) for m in MODES}
            res[f"d{depth}_auto_vs_best"] = t["auto"] / min(t["sequential"], t["fused"])
        res["d3_auto_vs_plain"] = pick(med["d3-auto"], args.clock) / pick(plain, args.clock)
        results[name] = res
        del runs
    print(table(["model", "config", "wall ms", "wall / plain", "cpu ms", "cpu / plain"], rows))
    print(f"\nbatch {args.batch}; median of {args.repeats} interleaved steps after one warm-up step each")
    print("\nTargets (ratios on the", args.clock, "clock):\n")
    trows = []
    for name, res in results.items():
        for depth in (2, 3):
            r = res[f"d{depth}_auto_vs_best"]
            trows.append([name, f"d{depth} auto / faster pure mode", f"{r:.2f}", "<= 1.10", verdict(r <= 1.10)])
        if name != "fcn":
            r = res["d3_auto_vs_plain"]
            trows.append([name, "d3 auto / plain", f"{r:.2f}", "<= 1.30", verdict(r <= 1.30)])
    print(table(["model", "ratio", "measured", "target", ""], trows))
    out["train"] = {"batch": args.batch, "repeats": args.repeats, "models": results}


# ----------------------------------------------------------------------------
# auto: per-layer check of the cost model


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen = {}
    handles = [m.register_forward_pre_hook(lambda m, i, n=n: seen.setdefault(n, i[0].detach()))
               for n, m in model.named_modules() if isinstance(m, COMPOSED_TYPES)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def auto_part(args, out: dict) -> None:
    print("\n## auto's pick per composed layer (forward + backward of the layer alone, depth 3)\n")
    rows, summary = [], []
    for name in args.models:
        torch.manual_seed(0)
        model = composed(build(name, args), name, 3, "auto").to(args.device).train()
        x = torch.randn(args.batch, *shape_of(name), device=args.device)
        inputs = layer_inputs(model, x)
        layers = dict(model.named_modules())
        total = {"sequential": 0.0, "fused": 0.0, "auto": 0.0, "best": 0.0}
        right = 0
        for lname, inp in inputs.items():
            layer = layers[lname]
            inp = inp.clone().requires_grad_(True)
            grad = None

            def run(mode, layer=layer, inp=inp):
                nonlocal grad
                layer.mode = mode
                y = layer(inp)
                if grad is None:
                    grad = torch.randn_like(y)
                y.backward(grad)
                for p in layer.parameters():
                    p.grad = None
                inp.grad = None

            for mode in ("sequential", "fused"):
                run(mode)  # warm-up
            samples = {"sequential": [], "fused": []}
            for _ in range(args.layer_repeats):
                for mode in samples:
                    samples[mode].append(timed(lambda mode=mode: run(mode), args.device))
            t = {m: pick(medians(s), args.clock) for m, s in samples.items()}
            layer.mode = "auto"
            if hasattr(layer, "_output_positions"):  # conv: batch x output positions
                b_eff = layer._output_positions(inp)
            else:  # linear: rows of the input
                b_eff = inp.numel() // inp.shape[-1]
            seq_cost, fused_cost = layer.costs(b_eff)
            chose = "fused" if layer.use_fused(b_eff) else "sequential"
            faster = min(t, key=t.get)
            right += chose == faster
            total["sequential"] += t["sequential"]
            total["fused"] += t["fused"]
            total["auto"] += t[chose]
            total["best"] += t[faster]
            rows.append([name, lname, b_eff, f"{seq_cost / fused_cost:.2f}", f"{t['sequential'] * 1e3:.2f}",
                         f"{t['fused'] * 1e3:.2f}", chose, "yes" if chose == faster else
                         f"no ({t[chose] / t[faster]:.2f}x)"])
        summary.append([name, f"{right}/{len(inputs)}", f"{total['auto'] / total['best']:.3f}",
                        f"{total['sequential'] / total['best']:.2f}", f"{total['fused'] / total['best']:.2f}"])
    print(table(["model", "layer", "B_eff", "model seq/fused", "seq ms", "fused ms", "auto picks", "faster?"], rows))
    print(f"\nmedian of {args.layer_repeats}; clock: {args.clock}\n")
    print(table(["model", "auto picked the faster", "auto / oracle", "all-seq / oracle", "all-fused / oracle"],
                summary))
    out["auto"] = {"rows": rows, "summary": summary}


# ----------------------------------------------------------------------------
# infer


@torch.no_grad()
def trained_like(model: nn.Module, power: float = 1.0) -> nn.Module:
    """Give every layer the spectrum ``sigma_1 * j^-power`` (its own singular vectors): random init
    has flat spectra, trained layers decay. Latency depends only on the ranks this leads to."""
    for layer in scan_layers(model).layers.values():
        w = layer.module.weight
        u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1).double(), full_matrices=False)
        decay = s[0] * torch.arange(1, s.numel() + 1, dtype=s.dtype).pow(-power)
        w.copy_(((u * decay) @ vh).reshape(w.shape).to(w.dtype))
    return model


def infer_part(args, out: dict) -> None:
    print(f"\n## Inference latency, cut to about {args.flops:.2f} of the MACs (eval, inference_mode)\n")
    cpu_clock = args.clock == "cpu"

    def cpu_timer(module, x):  # keep_faster on the same clock as the table
        with torch.inference_mode():
            module(x)
            calls, start = 0, time.process_time()
            while time.process_time() - start < 0.004:
                module(x)
                calls += 1
        return (time.process_time() - start) / calls

    rows, results = [], []
    for name in args.infer_models:
        torch.manual_seed(0)
        dense32 = trained_like(build(name, args)).eval()
        one = torch.randn(1, *shape_of(name))
        ranks = lorita.choose_ranks(dense32, Budget(flops=args.flops), example_input=one).ranks
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            dense = copy.deepcopy(dense32).to(dtype)
            for fmt in args.memory_formats:
                layout = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                for batch in args.infer_batches:
                    x = torch.randn(batch, *shape_of(name), dtype=dtype).to(args.device, memory_format=layout)
                    base = dense.to(args.device, memory_format=layout)
                    start = time.perf_counter()
                    fast = keep_faster(base, ranks, x, timer=cpu_timer if cpu_clock else None,
                                       cache_file=args.latency_cache)
                    aware_s = time.perf_counter() - start
                    models = {"dense": base,
                              "cut": lorita.compress(base, ranks=ranks).to(memory_format=layout).eval(),
                              "cut, latency-aware": lorita.compress(base, ranks=fast).to(memory_format=layout).eval()}
                    macs = {k: lorita.profile(m, x).macs for k, m in models.items()}
                    with torch.inference_mode():
                        one_call = timed(lambda: models["dense"](x), args.device)[0]
                        number = max(1, int(0.05 / max(one_call, 1e-6)))  # samples of about 50 ms
                        samples = {k: [] for k in models}
                        for m in models.values():
                            m(x)
                        for _ in range(args.infer_repeats):
                            for k, m in models.items():
                                samples[k].append(timed(lambda m=m: m(x), args.device, number))
                    med = {k: pick(medians(s), args.clock) for k, s in samples.items()}
                    kept = sum(fast[k] != ranks[k] for k in ranks)
                    for k in models:
                        speedup = med["dense"] / med[k]
                        reduction = macs["dense"] / macs[k]
                        eff = speedup / reduction
                        note = f"{kept} layer(s) kept dense, {aware_s:.1f} s to time" if k == "cut, latency-aware" \
                            else ""
                        rows.append([name, dtype_name, fmt, batch, k, f"{med[k] * 1e3:.2f}",
                                     f"{macs[k] / macs['dense']:.3f}", f"{reduction:.2f}x", f"{speedup:.2f}x",
                                     f"{eff:.2f}" if k != "dense" else "",
                                     (verdict(eff >= 0.7) if k != "dense" else ""),
                                     note])
                        results.append({"model": name, "dtype": dtype_name, "format": fmt, "batch": batch,
                                        "variant": k, "seconds": med[k], "macs": macs[k], "speedup": speedup,
                                        "macs_reduction": reduction})
    print(table(["model", "dtype", "layout", "batch", "variant", f"{args.clock} ms", "MACs kept", "MACs reduction",
                 "speed-up", "speed-up / MACs red.", ">= 0.7", "note"], rows))
    print(f"\nmedian of {args.infer_repeats} interleaved samples (each ~50 ms of calls); clock: {args.clock}")
    out["infer"] = results


# ----------------------------------------------------------------------------
# latency budget


def latency_part(args, out: dict) -> None:
    print("\n## Latency budget: the measured latency against the request (wall clock)\n")
    rows, results = [], []
    for name in args.latency_models:
        torch.manual_seed(0)
        dense = trained_like(build(name, args)).eval().to(args.device)
        for fmt in args.memory_formats:
            layout = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            base = dense.to(memory_format=layout)
            for batch in args.infer_batches:
                x = torch.randn(batch, *shape_of(name), device=args.device).contiguous(memory_format=layout)
                for request in args.latency_requests:
                    start = time.perf_counter()
                    try:
                        how = Latency(request, layout=fmt if fmt == "channels_last" else "contiguous")
                        found = latency_budget(base, how, x, cache_file=args.latency_cache)
                    except LoritaError as err:
                        fastest = re.search(r"measured ([0-9.]+)", str(err))
                        rows.append([name, fmt, batch, f"{request:.2f}", "unreachable", "", "", "", "", "", "",
                                     f"fastest cut measured {fastest.group(1) if fastest else '?'}"])
                        results.append({"model": name, "format": fmt, "batch": batch, "request": request,
                                        "error": str(err)})
                        continue
                    search_s = time.perf_counter() - start
                    small = lorita.compress(base, ranks=found.ranks).to(memory_format=layout).eval()
                    check = measure_latency({"dense": base, "cut": small}, x, repeats=args.infer_repeats)
                    ratio = check["cut"] / check["dense"]
                    macs = lorita.profile(small, x).macs / lorita.profile(base, x).macs
                    within = abs(ratio / request - 1) <= 0.1
                    rows.append([name, fmt, batch, f"{request:.2f}", f"{found.predicted:.3f}",
                                 f"{found.estimated:.3f}", f"{ratio:.3f}", f"{ratio / request:.2f}", verdict(within),
                                 f"{macs:.3f}", f"{len(found.kept_dense)}/{len(found.ranks)}",
                                 f"{len(found.rounds)} round(s), {search_s:.0f} s, "
                                 f"dense {check['dense'] * 1e3:.2f} ms"])
                    results.append({"model": name, "format": fmt, "batch": batch, "request": request,
                                    "predicted": found.predicted, "searched": found.measured,
                                    "estimated": found.estimated, "measured": ratio,
                                    "macs_kept": macs, "kept_dense": found.kept_dense, "rounds": found.rounds,
                                    "search_s": search_s, "dense_s": check["dense"], "cut_s": check["cut"],
                                    "layers": found.layers})
    print(table(["model", "layout", "batch", "asked", "predicted", "estimated (search)", "measured (compressed)",
                 "measured / asked", "within 10%", "MACs kept", "layers dense", "note"], rows))
    print("\nfractions of the dense model's wall time in the same layout; 'measured (compressed)': the model "
          f"compressed with the chosen ranks (SVD weights), {args.infer_repeats} interleaved samples of >= 50 ms "
          "each, median")
    out["latency"] = results


# ----------------------------------------------------------------------------
# llm: the 1.1B compress time


def llm_part(args, out: dict) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from scale import SHAPE, build as build_llama  # noqa: E402

    print(f"\n## compress(energy=0.9, inplace=True) of a LLaMA-style model, {args.llm_layers} decoder layers "
          f"(random fp32, {args.device})\n")
    start = time.perf_counter()
    model = build_llama(args.llm_layers, SHAPE).to(args.device)
    built_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    sync(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    small = lorita.compress(model, energy=0.9, inplace=True)
    sync(args.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"layers": args.llm_layers, "params": params, "build_s": built_s, "wall_s": wall, "cpu_s": cpu,
           "cut": sum(isinstance(m, lorita.LowRankLinear) for m in small.modules()),
           "params_after": sum(p.numel() for p in small.parameters())}
    if args.device.type == "cuda":
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(args.device) / 1e6
        row["model_mb"] = params * 4 / 1e6
    print(table(list(row), [[f"{v:.1f}" if isinstance(v, float) else v for v in row.values()]]))
    out["llm"] = row


# ----------------------------------------------------------------------------
# compress


def compress_part(args, out: dict) -> None:
    print("\n## Compression cost (VGG16" + (f", width x{args.vgg_width}" if args.vgg_width != 1 else "") + ")\n")
    torch.manual_seed(0)
    dense = trained_like(build("vgg16", args)).eval()
    one = torch.randn(1, 3, 32, 32)
    probe = torch.randn(args.eval_batch, 3, 32, 32)
    with torch.no_grad():
        reference = dense(probe)
    calls = {"n": 0}

    def fake_evaluate(model):  # 100 x (1 - relative error of the logits): falls as the cut deepens
        calls["n"] += 1
        model.eval()
        with torch.no_grad():
            error = (model(probe) - reference).norm() / reference.norm()
        return 100.0 * (1.0 - error.item())

    composed3 = lorita.compose(dense, depth=3, init="preserve")
    rows = []

    def row(what, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        rows.append([what, f"{time.perf_counter() - wall:.2f}", f"{time.process_time() - cpu:.2f}"])
        return result

    row("spectrum (SVD of every layer)", lambda: lorita.spectrum(dense))
    row("compress, energy=0.9", lambda: lorita.compress(dense, energy=0.9))
    row("merge (depth-3 composed model)", lambda: lorita.merge(composed3))
    row("compress depth-3 composed, energy=0.9 (merge + SVD)", lambda: lorita.compress(composed3, energy=0.9))
    row(f"choose_ranks Budget(flops={args.flops})", lambda: lorita.choose_ranks(dense, Budget(flops=args.flops),
                                                                                 example_input=one))
    found = row(f"search_accuracy, max_drop=1, fake evaluate on {args.eval_batch} images",
                lambda: lorita.search_accuracy(dense, fake_evaluate, max_drop=1.0))
    rows[-1][0] += f" ({calls['n']} evaluations)"
    kept = lorita.profile(found.model, one).macs / lorita.profile(dense, one).macs
    print(table(["step", "wall s", "cpu s"], rows))
    print(f"\nevaluate = 100 x (1 - relative error of the logits against the dense model's) on {args.eval_batch} "
          "random images: a stand-in with the cost of a forward pass that makes the search take its usual steps "
          f"(random weights have no accuracy to keep); the chosen cut kept {kept:.2f} of the MACs")
    out["compress"] = {"rows": rows, "evaluations": calls["n"]}


# ----------------------------------------------------------------------------
# memory



def memory_child(spec: dict) -> dict:
    """One training step's peak memory, in this (fresh) process."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    args = argparse.Namespace(vgg_width=spec["vgg_width"])
    torch.manual_seed(0)
    model = composed(build(spec["model"], args), spec["model"], spec["depth"], spec["mode"]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    x = torch.randn(spec["batch"], *shape_of(spec["model"]), device=device)
    y = torch.randint(0, 10, (spec["batch"],), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # momentum buffers exist from here on, as in a real run
    opt.zero_grad(set_to_none=True)
    params_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device) / 1e6
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return {"params_mb": params_mb, "before_mb": before, "peak_mb": torch.cuda.max_memory_allocated(device) / 1e6,
                "exact": True}
    before = status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        exact = True
    except OSError:
        exact = False  # peak then includes the warm-up step
    step()
    return {"params_mb": params_mb, "before_mb": before, "peak_mb": status_mb("VmHWM"), "exact": exact}


def memory_part(args, out: dict) -> None:
    print("\n## Peak memory of one training step (fresh subprocess per row)\n")
    rows, results = [], []
    for name in args.models:
        plain_extra = None
        for label, depth, mode in configs():
            spec = {"model": name, "depth": depth, "mode": mode, "batch": args.batch, "threads": args.threads,
                    "device": str(args.device), "vgg_width": args.vgg_width}
            # glibc keeps freed large blocks for reuse (its mmap threshold grows up to 32 MB), which
            # would hide a step's peak behind the warm-up step's: a fixed threshold returns them.
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                rows.append([name, label, "failed: " + proc.stderr.strip().splitlines()[-1], "", "", ""])
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            extra = r["peak_mb"] - r["before_mb"]
            plain_extra = extra if depth == 1 else plain_extra
            rows.append([name, label, f"{r['params_mb']:.1f}", f"{r['before_mb']:.0f}", f"{r['peak_mb']:.0f}",
                         f"{extra:.0f}", f"{extra / plain_extra:.2f}" if plain_extra else ""])
            results.append({"model": name, "config": label, **r})
    unit = "GPU MB allocated" if args.device.type == "cuda" else "MB resident (VmRSS / VmHWM)"
    print(table(["model", "config", "params MB", "before step", "peak in step", "step extra", "extra / plain"], rows))
    print(f"\n{unit}, MB = 10^6 bytes. 'before': torch, the model and its momentum buffers, after a warm-up step "
          f"(gradients freed by zero_grad); 'step extra' = peak - before: activations, gradients, temporaries. "
          f"batch {args.batch}")
    out["memory"] = results


# ----------------------------------------------------------------------------


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                   help=f"default: {' '.join(CPU_PARTS)} on CPU, {' '.join(GPU_PARTS)} with --device cuda")
    p.add_argument("--models", nargs="+", choices=TRAIN_MODELS, default=None, help="for train, auto, memory")
    p.add_argument("--infer-models", nargs="+", choices=INFER_MODELS, default=["vgg16", "resnet20"])
    p.add_argument("--quick", action="store_true", help="batch 32, VGG16 at width x0.25, 2 repeats")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128; 32 with --quick)")
    p.add_argument("--vgg-width", type=float, default=None, help="VGG16 width multiplier (default 1; 0.25 quick)")
    p.add_argument("--repeats", type=int, default=None, help="training steps timed per config (default 5; 2 quick)")
    p.add_argument("--layer-repeats", type=int, default=None, help="per-layer repeats for --parts auto (default 5)")
    p.add_argument("--infer-repeats", type=int, default=None, help="latency samples per model (default 15)")
    p.add_argument("--infer-batches", nargs="+", type=int, default=None, help="default 1 64 (1 64 256 on CUDA)")
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=None,
                   help="inference dtypes (default fp32; fp32 bf16 on CUDA)")
    p.add_argument("--latency-models", nargs="+", choices=INFER_MODELS, default=list(INFER_MODELS))
    p.add_argument("--latency-requests", nargs="+", type=float, default=[0.5, 0.7],
                   help="latency budgets to check, fractions of the dense model's time")
    p.add_argument("--llm-layers", type=int, default=22, help="decoder layers of the llm part's model (22: 1.1B)")
    p.add_argument("--memory-formats", nargs="+", choices=("nchw", "channels_last"), default=["nchw", "channels_last"])
    p.add_argument("--flops", type=float, default=0.33, help="MACs fraction kept by the budget cut")
    p.add_argument("--eval-batch", type=int, default=256, help="images the fake evaluate of the accuracy search uses")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="clock for ratios and targets: cpu (process time) by default on CPU, wall on CUDA")
    p.add_argument("--latency-cache", default=None, help="JSON file to keep keep_faster's per-shape timings in")
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.models = args.models or list(TRAIN_MODELS)
    args.batch = args.batch or (32 if quick else 128)
    args.vgg_width = args.vgg_width or (0.25 if quick else 1.0)
    args.repeats = args.repeats or (2 if quick else 5)
    args.layer_repeats = args.layer_repeats or (2 if quick else 5)
    args.infer_repeats = args.infer_repeats or (5 if quick else 15)
    args.device = torch.device(args.device)
    gpu = args.device.type == "cuda"
    args.parts = args.parts or list(GPU_PARTS if gpu else CPU_PARTS)
    args.infer_batches = args.infer_batches or ([1, 64, 256] if gpu else [1, 64])
    args.dtypes = args.dtypes or (["fp32", "bf16"] if gpu else ["fp32"])
    if args.device.type == "cuda" and args.clock == "cpu":
        p.error("--clock cpu measures the host process, not the GPU: use --clock wall with --device cuda")
    args.clock = args.clock or ("wall" if args.device.type == "cuda" else "cpu")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    torch.set_num_threads(args.threads)
    info = machine(args)
    print("# lorita speed benchmark\n")
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print("command: python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    out = {"machine": info, "argv": sys.argv[1:]}
    started = time.perf_counter()
    for part in args.parts:
        {"train": train_part, "auto": auto_part, "infer": infer_part, "latency": latency_part,
         "compress": compress_part, "memory": memory_part, "llm": llm_part}[part](args, out)
        sys.stdout.flush()
    info["load_end"] = os.getloadavg()
    print(f"\nload average at start {info['load_start']}, at end {info['load_end']}; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
