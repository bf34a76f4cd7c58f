# The latency search's own looks at its choice, against the same choice timed again right after the search, in the
# same process, by the same machinery (random-weight stand-in pairs swapped in) and as the real SVD cut.
# The unseen CNN at batch 32, one thread, CPU clock, latency=0.5; --runs searches in turn. Per run it prints the
# search's looks, the median dense and cut times per call during the search's measurements of the whole model,
# and after it: 7 rounds of dense, stand-in and real cut in turn (lorita.latency.relative_latency's paired ratio).
# Run from the repository root: python docs/latency-unseen/search-then-time-again.py [--runs 3]
import argparse, statistics, sys
import torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import lorita
import lorita.latency as L
from lorita.lowrank import LOWRANK_TYPES
from lorita.spectra import Spectra
from latency_unseen_cnn import unseen_cnn, cpu_clock

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()
model = unseen_cnn()
x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, CPU clock, batch 32, latency=0.5")
for run in range(args.runs):
    during = {"dense": [], "cut": []}

    def recording(module, inp):
        seconds = cpu_clock(module, inp)
        if any(True for _ in module.children()) and not isinstance(module, LOWRANK_TYPES):  # a whole model
            cut = any(isinstance(m, LOWRANK_TYPES) for m in module.modules())
            during["cut" if cut else "dense"].append(seconds)
        return seconds

    found = L.latency_budget(model, 0.5, x, timer=recording)
    kept = min(found.rounds, key=lambda r: abs(r["measured"] - found.measured))  # the try the search returned
    chosen = [round(v, 3) for v in kept["looks"]]
    real = lorita.compress(model, ranks=found.ranks).eval()
    stand_in = L._Swap(model, Spectra(model, x).scan.layers, found.ranks, False)
    after = L._samples({"dense": model, "stand-in": stand_in, "real": real}, (x,), cpu_clock, 7)
    ratios = L._paired(after, "dense")
    ms = lambda v: 1e3 * statistics.median(v)
    print(f"run {run}: ranks {found.ranks}")
    print(f"  during the search: looks at the choice {chosen}; whole-model samples: dense {ms(during['dense']):.1f} "
          f"ms, cut models {ms(during['cut']):.1f} ms (medians)")
    print(f"  right after: dense {ms(after['dense']):.1f} ms, stand-in {ms(after['stand-in']):.1f} ms "
          f"({ratios['stand-in']:.3f}), real cut {ms(after['real']):.1f} ms ({ratios['real']:.3f})", flush=True)
