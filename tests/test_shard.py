"""FSDP2 sharding (TrainConfig(shard=True)) of composed models in the same training loop: 2 CPU processes on gloo."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"),
    pytest.mark.slow,  # two processes
]

SCRIPT = textwrap.dedent("""
    import json, sys, torch, lorita
    from types import SimpleNamespace
    from lorita.data import Split
    from lorita.train import TrainConfig, train
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (48,), generator=g)
    x = (torch.rand(48, 1, 4, 4, generator=g) * 255).to(torch.uint8)
    data = SimpleNamespace(train=Split(x, y, [0.5], [0.3]), val=Split(x, y, [0.5], [0.3]))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model = lorita.compose(net, depth=3)
    shard = sys.argv[1] == "shard"
    result = train(model, data, TrainConfig(epochs=2, batch_size=8, lr=0.1, device="cpu", shard=shard),
                   out_dir=sys.argv[2])
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        best = {k: v.tolist() for k, v in result.best_state.items()}
        print("RESULT " + json.dumps({"history": [r["val_loss"] for r in result.history], "keys": sorted(best)}))
""")


def _torchrun(tmp_path, mode: str) -> dict:
    import json
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), mode, str(tmp_path / mode)], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_sharded_training_matches_replicated_training(tmp_path):
    sharded = _torchrun(tmp_path, "shard")
    replicated = _torchrun(tmp_path, "ddp")
    assert sharded["keys"] == replicated["keys"]  # the gathered state: every factor, whole
    # same data, same global batches, same optimizer: the same losses up to float32 summation order
    for a, b in zip(sharded["history"], replicated["history"]):
        assert abs(a - b) < 1e-4
