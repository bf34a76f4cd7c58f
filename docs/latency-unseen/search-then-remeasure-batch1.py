"""At batch 1, request 0.7: the search's estimate against the compressed model re-measured, three times over, and
in each the stand-in (random-weight pairs) and the compressed model (SVD pairs) timed in one interleaved run
(15 samples each, CPU clock, one thread). Run from the repository root, under the lock."""
import copy
import sys

sys.path.insert(0, "benchmarks")
import torch

import lorita
import lorita.latency as latency_module
from latency_unseen_cnn import cpu_clock, unseen_cnn
from lorita.latency import _pair, latency_budget, measure_latency
from lorita.targets import replace_module, scan_layers

torch.set_num_threads(1)
model = unseen_cnn()
x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
for attempt in range(3):
    latency_module._CACHE.clear()
    found = latency_budget(model, 0.7, x, timer=cpu_clock)
    cut = {n: r for n, r in found.ranks.items() if found.layers[n]["cut"]}
    real = lorita.compress(model, ranks=found.ranks).eval()
    stand_in = copy.deepcopy(model)
    layers = scan_layers(stand_in).layers
    for name, rank in cut.items():
        replace_module(stand_in, layers[name], _pair(layers[name].module, rank, x))
    seconds = measure_latency({"dense": model, "stand_in": stand_in, "real": real}, x, repeats=15, timer=cpu_clock)
    print(f"ranks cut {cut}; search estimated {found.estimated:.3f} (looks "
          f"{[round(v, 3) for r in found.rounds for v in r['looks']]}); re-measured together: stand-in "
          f"{seconds['stand_in'] / seconds['dense']:.3f}, compressed {seconds['real'] / seconds['dense']:.3f} "
          f"(dense {1e3 * seconds['dense']:.2f} ms)", flush=True)
