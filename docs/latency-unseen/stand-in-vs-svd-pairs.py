import sys; sys.path.insert(0, "benchmarks")  # run from the repository root
import torch, lorita, copy
torch.set_num_threads(1)
from latency_unseen_cnn import unseen_cnn, cpu_clock
from lorita.latency import measure_latency, _Swap, _pair
from lorita.targets import scan_layers
m = unseen_cnn()
x = torch.randn(32, 3, 32, 32)
ranks = {'3': 16, '6': 24, '9': 32, '12': 32}
real = lorita.compress(m, ranks=ranks).eval()
rand = copy.deepcopy(m)
layers = scan_layers(rand).layers
for n, r in ranks.items():
    from lorita.targets import replace_module
    replace_module(rand, layers[n], _pair(layers[n].module, r, x))
rand.eval()
# real with random weights re-initialised in place
print(measure_latency({"dense": m, "real": real, "rand": rand}, x, repeats=7, timer=cpu_clock))
