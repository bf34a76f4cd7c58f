import sys; sys.path.insert(0, "benchmarks")  # run from the repository root
import torch, lorita, copy
torch.set_num_threads(1)
from latency_unseen_cnn import unseen_cnn, cpu_clock
from lorita.latency import measure_latency, _Swap, latency_budget, _whole
from lorita.spectra import Spectra
m = unseen_cnn()
x = torch.randn(32, 3, 32, 32)
f = latency_budget(m, 0.5, x, timer=cpu_clock)
print(f.ranks, f.measured, f.rounds)
sp = Spectra(m, x)
print("spectra model is m:", sp.model is m)
layers = sp.scan.layers
real = lorita.compress(m, ranks=f.ranks).eval()
sw = _Swap(m, layers, f.ranks, False)
print(_whole({"dense": m, "cut": sw, "real": real}, (x,), cpu_clock, 7))
