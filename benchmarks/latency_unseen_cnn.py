"""Does the latency budget land where asked on a CNN it was never tuned on, at batch 1 and 32?

A 5-conv CNN (not in lorita's zoo: widths 64-128-256-256-512, strides 1-2-2-1-2, 3x32x32
inputs, random weights), ``lorita.latency.latency_budget(model, F, x)`` at each batch size,
several times from a cold timing cache. For each try it prints the fraction the search
measured for its random-weight stand-in (and the estimate it chose on, which weighs in
every try) and an independent re-measurement of the real cut
(``lorita.compress`` with those ranks, SVD weights) against the dense model
(``relative_latency``: models timed in turn, 15 rounds, the median of the ratio within each round), then the
median over the tries. The request
is met when the fraction lies in ``[F * 0.9, F]``.

``--clock cpu`` times with the process's CPU clock (``time.process_time``) instead of the
wall clock, the search and the re-measurement alike: with ``--threads 1`` that is the time
the work actually ran on a core, which other jobs on a shared machine barely disturb (with
two threads on two shared cores, one busy core stalls every parallel op and the wall-clock
fractions move by tens of percent between tries).

Run under the machine-wide lock (timings):
    flock /work/locks/heavy python benchmarks/latency_unseen_cnn.py --latency 0.5 --batches 1 32 --tries 3
    flock /work/locks/heavy python benchmarks/latency_unseen_cnn.py --latency 0.5 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import lorita
import lorita.latency as latency_module
from lorita.latency import latency_budget, relative_latency


def unseen_cnn() -> nn.Module:
    torch.manual_seed(0)
    widths, strides = (64, 128, 256, 256, 512), (1, 2, 2, 1, 2)
    layers, c_in = [], 3
    for width, stride in zip(widths, strides):
        layers += [nn.Conv2d(c_in, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10)).eval()


def cpu_clock(module: nn.Module, x: torch.Tensor, *, min_seconds: float = 0.05) -> float:
    """CPU seconds of this process per call of ``module(x)`` (inference mode, one warm-up call), over
    calls lasting at least ``min_seconds`` of CPU time: ``lorita.latency.time_module`` on the CPU clock."""
    with torch.inference_mode():
        module(x)
        calls, start = 0, time.process_time()
        while time.process_time() - start < min_seconds:
            module(x)
            calls += 1
    return (time.process_time() - start) / calls


def one_try(model: nn.Module, latency: float, x: torch.Tensor, timer=None) -> dict:
    latency_module._CACHE.clear()  # a cold cache: every layer timed again in this try
    start = time.perf_counter()
    found = latency_budget(model, latency, x, timer=timer)
    search_s = time.perf_counter() - start
    small = lorita.compress(model, ranks=found.ranks).eval()
    dense, cut = model, small
    if found.layout == "channels_last":
        dense, cut = model.to(memory_format=torch.channels_last), small.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fraction = relative_latency({"dense": dense, "cut": cut}, x, reference="dense", repeats=15, timer=timer)["cut"]
    model.to(memory_format=torch.contiguous_format)
    return {"search": found.measured, "estimated": found.estimated, "looks": sum(len(r["looks"]) for r in found.rounds),
            "real": fraction, "rounds": len(found.rounds),
            "dense_ms": 1e3 * found.dense_s, "layout": found.layout, "search_s": search_s,
            "cut_layers": sum(1 for info in found.layers.values() if info["cut"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own count)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: lorita's own timer; cpu: the process's CPU time (use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = cpu_clock if args.clock == "cpu" else None
    model = unseen_cnn()
    low = args.latency * 0.9
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; request latency={args.latency:g}, "
          f"accepted [{low:.3f}, {args.latency:.3f}]", flush=True)
    print("batch  try  layout          rounds  looks  cut layers  search measured  search estimated  real cut / dense  "
          "dense ms  search s")
    for batch in args.batches:
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        reals = []
        for k in range(args.tries):
            try:
                r = one_try(model, args.latency, x, timer)
            except lorita.LoritaError as err:  # unreachable here: say so, go on
                print(f"{batch:5d}  {k + 1:3d}  {err}")
                continue
            reals.append(r["real"])
            print(f"{batch:5d}  {k + 1:3d}  {r['layout']:14s}  {r['rounds']:6d}  {r['looks']:5d}  {r['cut_layers']:10d}  "
                  f"{r['search']:15.3f}  {r['estimated']:16.3f}  {r['real']:16.3f}  {r['dense_ms']:8.2f}  "
                  f"{r['search_s']:8.1f}", flush=True)
        if not reals:
            continue
        median = statistics.median(reals)
        verdict = "within" if low <= median <= args.latency else "OUTSIDE"
        met = sum(low <= real <= args.latency for real in reals)
        print(f"batch {batch}: median real fraction {median:.3f} over {args.tries} tries ({verdict} the request); "
              f"{met} of {args.tries} tries within it", flush=True)


if __name__ == "__main__":
    main()
