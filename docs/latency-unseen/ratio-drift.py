# Does the cut/dense time ratio of one fixed allocation stay put on this machine? The unseen CNN at batch 32, one
# thread, CPU clock: the dense model and one cut (random-weight stand-in pairs swapped in by the search's own
# machinery, and the real SVD cut) timed in turn, 7 rounds per window (lorita.latency.relative_latency: the median of
# within-round ratios), windows back to back for about --minutes. Prints each window's dense time and both ratios.
# Run from the repository root: python docs/latency-unseen/ratio-drift.py [--minutes 2.5]
import argparse, statistics, sys, time
import torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import lorita
import lorita.latency as L
from lorita.spectra import Spectra
from latency_unseen_cnn import unseen_cnn, cpu_clock

parser = argparse.ArgumentParser()
parser.add_argument("--minutes", type=float, default=2.5)
args = parser.parse_args()
model = unseen_cnn()
x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
ranks = {"0": 16, "3": 2, "6": 128, "9": 16, "12": 48, "17": 10}  # one 0.5 search's choice (measured 0.497 there)
real = lorita.compress(model, ranks=ranks).eval()
stand_in = L._Swap(model, Spectra(model, x).scan.layers, ranks, False)
print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, CPU clock, batch 32; allocation {ranks}")
print("window  start s  dense ms (median)  stand-in / dense  real / dense")
start, window, rows = time.monotonic(), 0, []
while time.monotonic() - start < 60 * args.minutes:
    t0 = time.monotonic() - start
    samples = L._samples({"dense": model, "stand-in": stand_in, "real": real}, (x,), cpu_clock, 7)
    ratios = L._paired(samples, "dense")
    dense_ms = 1e3 * statistics.median(samples["dense"])
    rows.append((dense_ms, ratios["stand-in"], ratios["real"]))
    print(f"{window:6d}  {t0:7.0f}  {dense_ms:17.1f}  {ratios['stand-in']:16.3f}  {ratios['real']:12.3f}", flush=True)
    window += 1
stand, realr = [r[1] for r in rows], [r[2] for r in rows]
print(f"stand-in / dense: {min(stand):.3f} to {max(stand):.3f}; real / dense: {min(realr):.3f} to {max(realr):.3f}; "
      f"dense {min(r[0] for r in rows):.1f} to {max(r[0] for r in rows):.1f} ms over {window} windows")
if len(rows) > 2:
    print(f"correlation of dense ms with the real ratio: {statistics.correlation([r[0] for r in rows], realr):+.2f}")
