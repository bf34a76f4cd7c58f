"""lorita.probe's one forward pass on an example input leaves the model as it found it and reads what really runs:
no inference tensor cached in the model, a forward that takes gradients itself, compiled submodules, ``train()``
overrides that act on a mode change, and forwards wrapped on the instance (accelerate's hooks do that)."""

import functools

import pytest
import torch
from torch import nn

import lorita
from lorita.targets import skipped_layers


class LazyTable(nn.Module):
    """Builds a table in its first forward and keeps it (as rotary-embedding caches do)."""

    def __init__(self):
        super().__init__()
        self.fc, self.table = nn.Linear(4, 4), None

    def forward(self, x):
        if self.table is None:
            self.table = torch.linspace(0.5, 1.5, 4)
        return self.fc(x) * self.table


class Forces(nn.Module):
    """Returns the gradient of an energy with respect to its input: its forward takes a gradient itself."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return -torch.autograd.grad(self.fc(torch.tanh(x)).sum(), x, create_graph=self.training)[0]


class MergesOnEval(nn.Linear):
    """loralib's pattern: a side path merged into the weight by ``eval()`` and taken out again by ``train()``."""

    def __init__(self):
        super().__init__(4, 4)
        self.side, self.merged = nn.Parameter(torch.full((4, 4), 0.1)), False

    def train(self, mode=True):
        super().train(mode)
        with torch.no_grad():
            if mode and self.merged:
                self.weight -= self.side
            elif not mode and not self.merged:
                self.weight += self.side
        self.merged = not mode
        return self

    def forward(self, x):
        return super().forward(x) + (0 if self.merged else x @ self.side.T)


def test_a_table_the_model_caches_during_the_probe_still_trains():
    torch.manual_seed(0)
    model, x = LazyTable(), torch.randn(2, 4)
    composed = lorita.compose(model, depth=2, init="preserve", example_input=x)
    assert not model.table.is_inference()  # (it was, and backward through it failed)
    model(x).sum().backward()
    composed(x).sum().backward()
    assert model.fc.weight.grad is not None


def test_a_forward_that_takes_gradients_itself_can_be_probed():
    torch.manual_seed(0)
    model, x = Forces(), torch.randn(5, 3)
    composed = lorita.compose(model, depth=2, init="preserve", example_input=x)  # (refused: "failed on example_input")
    torch.testing.assert_close(composed(x), model(x), atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch.compiler.set_stance: torch 2.6 and later")
def test_compiled_submodules_are_probed_eagerly():
    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.fc = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(nn.functional.linear(x, self.proj.weight, self.proj.bias))

    model = nn.Sequential(torch.compile(Reads()), nn.Linear(4, 2))
    found = skipped_layers(model, example_input=torch.randn(2, 4))  # (a RecursionError inside dynamo)
    assert list(found) == ["0._orig_mod.proj"]
    assert type(model[0]._orig_mod.proj) is nn.Linear and type(model[0]._orig_mod.fc) is nn.Linear


def test_a_train_override_is_undone_through_itself():
    torch.manual_seed(0)
    model, x = nn.Sequential(MergesOnEval(), nn.ReLU(), nn.Linear(4, 2)).train(), torch.randn(3, 4)
    before = model(x).detach()
    skipped_layers(model, example_input=x)
    assert model[0].training and not model[0].merged  # (it stayed merged, its side path without a gradient)
    torch.testing.assert_close(model(x), before)
    frozen = nn.Sequential(MergesOnEval(), nn.Linear(4, 2))
    frozen[0].eval()  # a merged child of a training model
    skipped_layers(frozen, example_input=x)
    assert frozen.training and not frozen[0].training and frozen[0].merged


def test_a_shared_module_keeps_its_flag_when_a_later_parent_overrides_train():
    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def train(self, mode=True):  # as every transformers PreTrainedModel overrides it
            return super().train(mode)

        def forward(self, x):
            return self.inner(x)

    norm = nn.BatchNorm1d(4)
    net = nn.Sequential(norm, Wrap(norm), nn.Linear(4, 2)).train()
    norm.eval()  # a frozen norm inside a training model, listed first and held again by Wrap
    skipped_layers(net, example_input=torch.randn(3, 4))
    assert net.training and net[1].training and not norm.training  # (Wrap's train(True) set it training again)


def test_the_fused_encoder_path_is_seen_as_reading_its_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)).eval()
    found = skipped_layers(model, example_input=torch.randn(2, 5, 8))  # the probe adds no hook that unfuses it
    assert {"0.linear1", "0.linear2"} <= set(found)


def test_a_forward_wrapped_on_the_instance_counts_as_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    for layer in (model[0], model[2]):  # as accelerate's add_hook_to_module does
        layer.forward = functools.partial(lambda inner, x: inner(x), layer.forward)
    assert skipped_layers(model, example_input=torch.randn(2, 4)) == {}  # (both were "read by the parent")
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks
