"""Peak memory of compress / merge with and without ``inplace=True`` on a ~100M-parameter MLP.

Each measurement runs in a fresh subprocess (so one run's freed memory cannot hide
another's peak) and reads the kernel's own counters from ``/proc/self/status``:
``VmRSS`` (resident now) and ``VmHWM`` (the resident high-water mark). After the model is
built, the high-water mark is reset (``echo 5 > /proc/self/clear_refs``), so "peak" is
the most the process held while the one call ran; "extra" is that peak minus the
resident size just before the call (the model itself, torch, Python).

Usage (Linux):
    python benchmarks/memory.py                     # 6 x Linear(4096, 4096), float32: 100.7M params
    python benchmarks/memory.py --width 1024 --layers 4 --modes compress compress-inplace   # quick

Prints one line per mode and a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from procmem import reset_peak, status_mb  # noqa: E402 (benchmarks/procmem.py)

MODES = ("compress", "compress-inplace", "merge", "merge-inplace")




def child(mode: str, width: int, layers: int, rank: int) -> dict:
    import torch
    from torch import nn

    import lorita

    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*blocks[:-1])
    del blocks  # the model must hold the only references, or nothing can be freed
    params = sum(p.numel() for p in model.parameters())
    if mode.startswith("merge"):
        model = lorita.compose(model, depth=2)  # a copy: drop the plain model before measuring
        gc.collect()
    names = [str(i) for i in range(0, 2 * layers, 2)]
    gc.collect()
    model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    before = status_mb("VmRSS")
    exact_peak = reset_peak()
    start = time.perf_counter()
    if mode == "compress":
        result = lorita.compress(model, ranks={n: rank for n in names})
    elif mode == "compress-inplace":
        result = lorita.compress(model, ranks={n: rank for n in names}, inplace=True)
    elif mode == "merge":
        result = lorita.merge(model)
    else:
        result = lorita.merge(model, inplace=True)
    seconds = time.perf_counter() - start
    peak, after = status_mb("VmHWM"), status_mb("VmRSS")
    assert result is not None
    return {"mode": mode, "params": params, "model_mb": round(model_mb, 1), "rss_before_mb": round(before, 1),
            "peak_mb": round(peak, 1), "extra_mb": round(peak - before, 1), "rss_after_mb": round(after, 1),
            "seconds": round(seconds, 1), "peak_reset": exact_peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rank", type=int, default=256, help="rank every layer is cut to by compress")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.width, args.layers, args.rank)))
        return 0
    rows = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--child", mode, "--width", str(args.width), "--layers", str(args.layers),
               "--rank", str(args.rank)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\nMLP of {args.layers} x Linear({args.width}, {args.width}), float32, {rows[0]['params'] / 1e6:.1f}M params; "
          f"compress cuts every layer to rank {args.rank}; merge multiplies a depth-2 composed model back.")
    print("MB = 10^6 bytes. extra = peak during the call - resident just before it.")
    head = ("mode", "model MB", "RSS before", "peak", "extra", "RSS after", "seconds")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(v) for v in (r["mode"], r["model_mb"], r["rss_before_mb"], r["peak_mb"], r["extra_mb"],
                                           r["rss_after_mb"], r["seconds"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
