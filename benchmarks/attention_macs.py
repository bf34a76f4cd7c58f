"""How much of a transformer's MACs are attention's own products (scores and mix), which no cut changes.

For each experiment config's model (full and reduced recipes), prints the MACs per example that
``lorita.profile`` counts, the part in attention's products (the rows of modules holding no
parameters of their own) and that part's share. lorita counts these products since 2026-12-07;
before, PyTorch's counter missed the CPU attention kernel, so a transformer's "FLOPs kept" left
them out. A figure f measured before converts as f * (1 - share) + share (the products are not cut).

Usage: python benchmarks/attention_macs.py [experiments/vit_cifar10.json experiments/gpt_fortunes.json]
"""

import argparse

import torch

import lorita
from lorita.models import create_model
from lorita.runs import load_spec

CONFIGS = ["experiments/vit_cifar10.json", "experiments/gpt_fortunes.json"]


def example_of(spec) -> tuple[torch.nn.Module, torch.Tensor]:
    """The spec's model (plain, as the experiment builds it) and one example input."""
    setup = spec.setup
    kwargs = dict(setup.model_kwargs)
    if setup.model == "gpt":
        model = create_model("gpt", vocab_size=256, **kwargs)  # a character vocabulary: fortunes has about 100
        return model, torch.zeros(1, kwargs.get("context", 64), dtype=torch.long)
    model = create_model(setup.model, num_classes=10, in_channels=3, image_size=32, **kwargs)
    return model, torch.zeros(1, 3, 32, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=CONFIGS)
    args = parser.parse_args()
    print(f"{'config':34s} {'recipe':8s} {'MACs/example':>14s} {'attention products':>19s} {'share':>6s}")
    for path in args.configs:
        for reduced in (False, True):
            model, x = example_of(load_spec(path, reduced=reduced))
            p = lorita.profile(model.eval(), x)
            products = sum(row.macs for row in p.layers if row.params == 0)
            print(f"{path:34s} {'reduced' if reduced else 'full':8s} {p.macs:14,d} {products:19,d} "
                  f"{products / p.macs:6.1%}")


if __name__ == "__main__":
    main()
