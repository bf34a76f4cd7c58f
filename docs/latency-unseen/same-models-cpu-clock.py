# The same dense, stand-in and real cut models (the 3-layer allocation a 0.7 search found at batch 32) timed in turn
# five times on the CPU clock, 0.5 s each: how far one whole-model fraction moves between measurements on this machine.
# Run from the repository root: python docs/latency-unseen/same-models-cpu-clock.py
import sys, time, torch, copy
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import lorita
from lorita.lowrank import LowRankConv2d
from latency_unseen_cnn import unseen_cnn, cpu_clock
model = unseen_cnn()
x = torch.randn(32, 3, 32, 32)
ranks = {'3': 32, '6': 136, '9': 16}
real = lorita.compress(model, ranks=ranks).eval()
stand = copy.deepcopy(model)
for n in ranks:
    stand[int(n)] = LowRankConv2d(model[int(n)], ranks[n]).eval()
for rep in range(5):
    d, s, r = (cpu_clock(m, x, min_seconds=0.5) for m in (model, stand, real))
    print(f"dense {d*1e3:.1f} ms  stand-in {s/d:.3f}  real {r/d:.3f}", flush=True)
# Per layer, on the inputs the dense model gives each cut layer: the stand-in pair against the real pair.
with torch.inference_mode():
    inputs, h = {}, x
    for index, layer in enumerate(model):
        inputs[index] = h
        h = layer(h)
for name in ranks:
    i = int(name)
    s, r = (cpu_clock(m[i], inputs[i], min_seconds=0.5) for m in (stand, real))
    print(f"layer {name} (rank {ranks[name]}): stand-in {s * 1e3:.2f} ms, real {r * 1e3:.2f} ms", flush=True)
