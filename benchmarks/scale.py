"""What compression costs at LLM scale: wall time and peak memory of lorita's steps on a LLaMA-style model.

The model is transformers' ``LlamaForCausalLM`` built from a config (random weights, nothing
downloaded): hidden 2048, MLP 5632, 32 heads with 4 key/value heads, vocab 32000, untied
head, float32 (TinyLlama-1.1B's shape), at several depths (``--layers``, default 2, 6 and
22 decoder layers: 0.22B, 0.40B and 1.10B parameters). Each step runs in a fresh process;
memory is the kernel's resident set (``VmRSS``) and its high-water mark (``VmHWM``, reset
just before the step), CPU time is the process's. Steps (``--steps``):

* ``spectrum``: ``lorita.spectrum(model)``, the singular values of every layer;
* ``compress``: ``lorita.compress(model, energy=E, inplace=True)`` (``--energy``, 0.9);
* ``compose``: ``lorita.compose(model, depth=2, init="preserve", factor_side=S)``
  (``--factor-side``, default ``smaller``: with ``input``, the 256 x 2048 key/value
  projections and the 2048 x 5632 down projection get 2048 x 2048 and 5632 x 5632 factors,
  and the depth-2 model is about 2.2 times the plain one);
* ``compose_inplace``: the same with ``inplace=True`` (no copy of the model);
* ``merge``: ``lorita.merge(composed, inplace=True)`` of that composed model (the compose
  is not timed here);
* ``sweep``: ``lorita.sweep.sweep`` at ``--points`` global thresholds, each cut evaluated
  by one forward pass on 16 tokens (a stand-in for a validation loss: its cost, not its value);
* ``latency``: the ``--latency`` path of ``lorita compress`` on the model: ranks from a latency
  budget (``lorita.latency.latency_budget(model, L, tokens)``, what ``choose_ranks(model,
  Latency(L))`` runs; ``--latency``, default 0.8, on 16 tokens at batch 1: each layer timed at a
  grid of ranks, the cut model timed against the dense one), then ``lorita.compress(model,
  ranks=..., inplace=True)``; the note gives the measured fraction and the allocation rounds.

``--exclude-head`` leaves ``lm_head`` plain in spectrum and compress (``exclude="lm_head"``;
the sweep always cuts every layer). The table gives, per size and step, seconds (wall and CPU), peak RSS, the peak as a
multiple of the model's own bytes, and the extra memory (peak minus RSS before the step);
the log-log plot (``--plot``) shows time and peak against parameters, with the fitted
growth exponent of each step.

    python benchmarks/scale.py --tiny                    # seconds: hidden 256, checks the script
    python benchmarks/scale.py --steps spectrum compress --json scale.json --plot docs/scale/scale.png
    python benchmarks/scale.py --device cuda --layers 22 --steps compress    # the GPU figure
    python benchmarks/scale.py --hidden 1024 --mlp 2816 --heads 16 --vocab 16000 --layers 2 --threads 1  # a check

Threads: ``--threads`` (default 2). Prints Markdown; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from procmem import reset_peak, status_mb  # noqa: E402 (benchmarks/procmem.py)

STEPS = ("spectrum", "compress", "compose", "compose_inplace", "merge", "sweep", "latency")
SHAPE = {"hidden": 2048, "mlp": 5632, "heads": 32, "kv_heads": 4, "vocab": 32000}
TINY = {"hidden": 256, "mlp": 704, "heads": 4, "kv_heads": 2, "vocab": 4000}




def build(layers: int, shape: dict, seed: int = 0):
    """LlamaForCausalLM from a config: random float32 weights, untied head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape["hidden"], intermediate_size=shape["mlp"], num_hidden_layers=layers,
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         vocab_size=shape["vocab"], tie_word_embeddings=False, max_position_embeddings=256)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float().eval()


def child(spec: dict) -> dict:
    """One step on one size, in this (fresh) process."""
    import gc

    import torch

    import lorita

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model = build(spec["layers"], spec["shape"]).to(device)
    params = sum(p.numel() for p in model.parameters())
    model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    exclude = "lm_head" if spec["exclude_head"] else None
    step = spec["step"]
    tokens = torch.randint(0, spec["shape"]["vocab"], (1, 16), device=device)
    composed = None
    if step == "merge":
        composed = lorita.compose(model, depth=2, init="preserve", factor_side=spec["factor_side"])
        del model
        model = None
    gc.collect()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    before = status_mb("VmRSS")
    exact = reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device) / 1e6
    wall, cpu = time.perf_counter(), time.process_time()
    info = {}
    if step == "spectrum":
        spectra = lorita.spectrum(model if exclude is None else _without_head(model))
        info["layers_scanned"] = len(spectra)
    elif step == "compress":
        small = lorita.compress(model, energy=spec["energy"], inplace=True, exclude=exclude)
        info["cut"] = sum(isinstance(m, lorita.LowRankLinear) for m in small.modules())
        info["params_after"] = sum(p.numel() for p in small.parameters())
    elif step in ("compose", "compose_inplace"):
        composed = lorita.compose(model, depth=2, init="preserve", factor_side=spec["factor_side"],
                                  inplace=step == "compose_inplace")
        info["params_after"] = sum(p.numel() for p in composed.parameters())
    elif step == "merge":
        merged = lorita.merge(composed, inplace=True)
        info["params_after"] = sum(p.numel() for p in merged.parameters())
    elif step == "sweep":
        from lorita.sweep import sweep

        @torch.inference_mode()
        def forward_cost(m):  # one forward on 16 tokens: the cost of an evaluation, not a real accuracy
            m(tokens)
            return 0.0

        points = sweep(model, tokens, forward_cost, None, points=spec["points"])  # every layer: no exclude=
        info["cuts"] = len(points)
    elif step == "latency":
        # what choose_ranks(model, Latency(L), example_input=tokens) runs, in a spelling trees from before
        # lorita.cutspec also take, so one script measures both
        from lorita.latency import latency_budget

        found = latency_budget(model, spec["latency"], tokens)
        info.update(measured=round(found.measured, 3), rounds=len(found.rounds))
        small = lorita.compress(model, ranks=found.ranks, inplace=True)
        info["cut"] = sum(isinstance(m, lorita.LowRankLinear) for m in small.modules())
        info["params_after"] = sum(p.numel() for p in small.parameters())
    sync()
    out = {**spec, "params": params, "model_mb": round(model_mb, 1), "wall_s": round(time.perf_counter() - wall, 2),
           "cpu_s": round(time.process_time() - cpu, 2), "rss_before_mb": round(before, 1),
           "peak_mb": round(status_mb("VmHWM"), 1), "peak_reset": exact, **info}
    if device.type == "cuda":
        out["gpu_before_mb"] = round(gpu_before, 1)
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 1e6, 1)
    return out


def _without_head(model):
    """The model with lm_head hidden from lorita's scan (spectrum takes no exclude=)."""
    import torch

    class Headless(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner.model

    return Headless(model)


def fit(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x: the growth exponent."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def plot(rows: list[dict], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate((("wall_s", "wall seconds"), ("peak_mb", "peak RSS (MB)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for step in STEPS:
            pts = sorted((r["params"], r[key]) for r in rows if r["step"] == step and "error" not in r)
            if not pts:
                continue
            slope = fit([p[0] for p in pts], [p[1] for p in pts])
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o",
                      label=f"{step}" + (f" (slope {slope:.2f})" if slope is not None else ""))
        if key == "peak_mb":
            sizes = sorted({r["params"] for r in rows})
            mb = {r["params"]: r["model_mb"] for r in rows}
            ax.loglog(sizes, [1.5 * mb[s] for s in sizes], "k--", linewidth=0.8, label="1.5 x model")
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("lorita at LLM scale (LLaMA-style, random fp32)", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, bbox_inches="tight")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=None, help="decoder layers per size (default 2 6 22)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=["spectrum", "compress", "compose", "merge"])
    p.add_argument("--energy", type=float, default=0.9)
    p.add_argument("--latency", type=float, default=0.8, help="latency: the budget, a fraction of the dense time")
    p.add_argument("--factor-side", choices=("input", "smaller"), default="smaller")
    p.add_argument("--points", type=int, default=4, help="sweep: global thresholds cut and evaluated")
    p.add_argument("--exclude-head", action="store_true", help="leave lm_head plain in spectrum and compress")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="hidden 256, MLP 704, vocab 4000, layers 1 2 4: seconds")
    for key in SHAPE:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"override the model's {key}")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="write the log-log plot (PNG) here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    shape = dict(TINY if args.tiny else SHAPE)
    shape.update({k: getattr(args, k) for k in SHAPE if getattr(args, k) is not None})
    layers = args.layers or ([1, 2, 4] if args.tiny else [2, 6, 22])
    print("# lorita at LLM scale\n")
    print(f"LLaMA-style: hidden {shape['hidden']}, MLP {shape['mlp']}, {shape['heads']} heads / {shape['kv_heads']} "
          f"kv heads, vocab {shape['vocab']}, untied head, random float32; threads {args.threads}; device "
          f"{args.device}; torch in a fresh process per row; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()}")
    print("command: python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]) + "\n")
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               MALLOC_MMAP_THRESHOLD_="65536")  # freed large blocks go back to the kernel: RSS means what is held
    started = time.perf_counter()
    for n in layers:
        for step in args.steps:
            spec = {"layers": n, "shape": shape, "step": step, "energy": args.energy, "threads": args.threads,
                    "device": args.device, "factor_side": args.factor_side, "points": args.points,
                    "latency": args.latency,
                    "exclude_head": args.exclude_head}
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                row = {**spec, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "shape"}), file=sys.stderr, flush=True)
    head = ["layers", "params (M)", "model MB", "step", "wall s", "cpu s", "RSS before MB", "peak RSS MB",
            "peak / model", "extra MB", "note"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            print(f"| {r['layers']} | | | {r['step']} | failed: {r['error']} |")
            continue
        note = ", ".join(f"{k} {r[k]}" for k in ("cut", "params_after", "cuts", "measured", "rounds") if k in r)
        if "gpu_peak_mb" in r:
            note += f", GPU peak {r['gpu_peak_mb']:.0f} MB"
        print("| " + " | ".join(str(c) for c in [
            r["layers"], f"{r['params'] / 1e6:.1f}", f"{r['model_mb']:.0f}", r["step"], f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}", f"{r['rss_before_mb']:.0f}", f"{r['peak_mb']:.0f}",
            f"{r['peak_mb'] / r['model_mb']:.2f}", f"{r['peak_mb'] - r['rss_before_mb']:.0f}", note]) + " |")
    print("\nGrowth with model size (slope of log y on log params):\n")
    print("| step | wall s | peak RSS |\n|---|---|---|")
    for step in args.steps:
        ok = [r for r in rows if r["step"] == step and "error" not in r]
        t = fit([r["params"] for r in ok], [r["wall_s"] for r in ok])
        m = fit([r["params"] for r in ok], [r["peak_mb"] for r in ok])
        print(f"| {step} | {t:.2f} | {m:.2f} |" if t is not None and m is not None else f"| {step} | | |")
    print(f"\nMB = 10^6 bytes; peak = VmHWM of the process during the step (torch, transformers and the model "
          f"included); extra = peak - RSS just before the step. {time.perf_counter() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
