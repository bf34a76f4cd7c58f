"""What splitting PyTorch's attention costs, and what a cut of the split model then gains, in CPU time.

A PyTorch ``nn.TransformerEncoder`` (``--layers`` layers of width ``--width``, 4 heads, MLP 4x, batch first) runs
as it is (``nn.MultiheadAttention``, PyTorch's fused inference path and, with a padding mask, its nested tensors),
split (``lorita.split_attention``: the same function from four ``nn.Linear`` per attention, no fused path), and
split then cut to ``--params`` of its layers' parameters (``lorita.cut`` with ``Budget(params=)``), in eval mode
under ``torch.no_grad``, on a batch of ``--batch`` sequences of ``--tokens`` tokens, with and without a padding
mask (the last quarter of each sequence padded). Times are medians of ``--repeats`` runs, the variants interleaved,
so the ratios come from one run on one machine.

Usage: python benchmarks/split_attention.py [--threads 1]
"""

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import lorita
from lorita.cutspec import Budget


def encoder(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(width, 4, 4 * width, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, layers).eval()


def median_ms(model: nn.Module, x: torch.Tensor, mask, repeats: int) -> float:
    times = []
    with torch.no_grad():
        model(x, src_key_padding_mask=mask)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, src_key_padding_mask=mask)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--params", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")  # PyTorch's own, at each call
    dense = encoder(args.width, args.layers)
    split = lorita.split_attention(dense)
    cut, _ = lorita.cut(split, Budget(params=args.params))
    x = torch.randn(args.batch, args.tokens, args.width)
    padding = torch.zeros(args.batch, args.tokens, dtype=torch.bool)
    padding[:, -args.tokens // 4:] = True
    variants = {"nn.MultiheadAttention": dense, "split": split, f"split, cut to {args.params:g}": cut}
    print(f"torch {torch.__version__}, {args.threads} thread(s); encoder {args.layers} x {args.width}, batch "
          f"{args.batch} x {args.tokens} tokens; params: {lorita.profile(dense, x).params:,} as it is, "
          f"{lorita.profile(cut, x).params:,} cut")
    for mask in (None, padding):
        runs = {name: [] for name in variants}
        for _ in range(3):  # interleaved rounds: drift on a shared machine falls on every variant
            for name, model in variants.items():
                runs[name].append(median_ms(model, x, mask, args.repeats))
        base = statistics.median(runs["nn.MultiheadAttention"])
        print(f"\n{'with' if mask is not None else 'without'} a padding mask")
        for name, values in runs.items():
            ms = statistics.median(values)
            print(f"  {name:28s} {ms:8.2f} ms   {ms / base:5.2f} x nn.MultiheadAttention's time")


if __name__ == "__main__":
    main()
