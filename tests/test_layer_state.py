"""Layers whose behaviour lives outside their weight (a parametrization, an old-style weight norm or pruning
mask, forward hooks) are left plain with a reason: a factored or cut layer would silently drop it."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

import lorita
from lorita import LoritaError


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _spectral(model):
    parametrizations.spectral_norm(model[0])


def _weight_norm(model):
    parametrizations.weight_norm(model[0])


def _hook(model):
    model[0].register_forward_hook(lambda module, inputs, output: output * 0)


@pytest.mark.parametrize("change,why", [(_spectral, "parametrized"), (_weight_norm, "parametrized"),
                                        (_hook, "forward hooks")])
def test_such_a_layer_is_left_plain_with_a_reason(change, why):
    model = net()
    change(model)
    x = torch.randn(4, 6)
    with pytest.warns(lorita.LoritaWarning, match=why):
        composed = lorita.compose(model, 2, init="preserve")
    assert isinstance(composed[0], type(model[0])) and type(composed[2]).__name__ == "ComposedLinear"
    torch.testing.assert_close(composed(x), model(x))
    with pytest.warns(lorita.LoritaWarning, match=why):
        small = lorita.compress(model, ranks={"2": 3})
    torch.testing.assert_close(small[0](x), model[0](x))  # the constraint or hook still runs
    with pytest.raises(LoritaError, match=why):
        lorita.compress(model, ranks={"0": 3})  # named: refused with the reason


@pytest.mark.parametrize("how", ["weight_norm", "prune"])
def test_a_weight_computed_by_a_hook_is_refused_when_copied_and_left_plain_in_place(how):
    model = net()
    if how == "prune":
        prune.l1_unstructured(model[0], "weight", amount=0.5)
    else:
        with pytest.warns(FutureWarning):
            nn.utils.weight_norm(model[0])
    with pytest.raises(LoritaError, match=r"layer 0 computes its weight with a hook .* inplace=True skips the copy"):
        lorita.compose(model, 2)
    with pytest.raises(LoritaError, match="cannot copy the model"):
        lorita.compress(model, ranks={"2": 2})
    x = torch.randn(4, 6)
    before = model(x)
    with pytest.warns(lorita.LoritaWarning, match="weight is computed by a hook"):
        lorita.compress(model, ranks={"2": 3}, inplace=True)
    torch.testing.assert_close(model(x), before)  # layer 0 kept its mask or norm; layer 2 cut at full rank


class Tagged(nn.Linear):  # keeps Linear.forward, with an attribute of its own that its repr reads
    def __init__(self, n_in, n_out, tag="x"):
        super().__init__(n_in, n_out)
        self.tag = tag

    def extra_repr(self):
        return super().extra_repr() + f", tag={self.tag}"


class Calibrated(nn.Linear):  # keeps Linear.forward, with a buffer of its own
    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.register_buffer("calib", torch.ones(n_out))


def test_own_attributes_come_back_on_merge_and_own_tensors_keep_the_layer_plain(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(Tagged(4, 4), nn.ReLU(), Calibrated(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[4].role = "head"  # a plain layer's own attribute too
    with pytest.warns(lorita.LoritaWarning, match=r"2: Calibrated holds tensors or modules of its own \(calib\)"):
        composed = lorita.compose(model, 2, init="preserve")
    merged = lorita.merge(composed)
    assert type(merged[0]) is Tagged and merged[0].tag == "x" and "tag=x" in repr(merged) and merged[4].role == "head"
    assert set(merged.state_dict()) == set(model.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(merged(x), model(x))
    lorita.save(composed, tmp_path / "c.lorita")
    fresh = nn.Sequential(Tagged(4, 4, tag="y"), nn.ReLU(), Calibrated(4, 4), nn.ReLU(), nn.Linear(4, 2))
    again = lorita.merge(lorita.load(tmp_path / "c.lorita", model=fresh))  # the architecture's attributes
    assert again[0].tag == "y" and "tag=y" in repr(again)


def test_an_attribute_pointing_into_the_model_is_not_carried_to_the_merged_layer():
    model = net()
    model[0].partner, model[0].reset, model[0].tags = [model[2]], model[0].reset_parameters, {"role": ["q"]}
    merged = lorita.merge(lorita.compose(model, 2, init="preserve"))
    assert merged[0].tags == {"role": ["q"]}  # plain data comes back
    assert not hasattr(merged[0], "partner") and not hasattr(merged[0], "reset")  # the old layer's, kept alive


def test_a_lazy_layer_keeps_its_own_reason_and_an_old_style_spectral_norm_is_named():
    lazy = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.warns(lorita.LoritaWarning, match="lazy module not initialised yet: run one forward pass first"):
        lorita.compose(lazy, 2, inplace=True)
    model = net()
    nn.utils.spectral_norm(model[0])
    with pytest.warns(lorita.LoritaWarning, match=r"0: its weight is computed by a hook .*remove_spectral_norm"):
        lorita.compose(model, 2)


def test_two_ranks_for_one_shared_layer_are_refused():
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 2))
    for call in (lambda: lorita.compress(model, ranks={"0": 1, "2": 3}),
                 lambda: lorita.cut(model, lorita.cutspec.Ranks({"0": 2, "2": 4}))):
        with pytest.raises(LoritaError, match=r"one layer used in two places \(shared\): give it one rank"):
            call()
    assert lorita.compress(model, ranks={"0": 3, "2": 3})[0].rank == 3  # the same rank twice is one request


def test_a_model_that_is_itself_one_layer_is_refused_where_layers_inside_are_replaced(tmp_path):
    from lorita.composed import ComposedLinear
    from lorita.lowrank import truncate

    layer = nn.Linear(4, 4)
    for call, verb in [(lambda: lorita.compose(layer), "compose"), (lambda: lorita.compress(layer, energy=0.9),
                       "compress"), (lambda: lorita.spectrum(layer), "spectrum"),
                       (lambda: lorita.merge(ComposedLinear(4, 3, depth=2)), "merge"),
                       (lambda: lorita.quantize(layer), "quantize")]:
        with pytest.raises(LoritaError, match=rf"lorita.{verb} works on the layers inside a model, and the model "
                                              r"given is itself one \w+: wrap it \(nn.Sequential\(layer\)\)"):
            call()
    for one in (truncate(nn.Linear(4, 3), 2), ComposedLinear(4, 3, depth=2)):
        with pytest.raises(LoritaError, match="which load cannot rebuild on its own"):
            lorita.save(one, tmp_path / "m.lorita")
    assert not (tmp_path / "m.lorita").exists()
    lorita.save(layer, tmp_path / "m.lorita")  # a plain layer saves and loads as before
    torch.testing.assert_close(lorita.load(tmp_path / "m.lorita", model=nn.Linear(4, 4)).weight, layer.weight)


def test_training_a_model_of_another_dtype_or_returning_a_tuple_says_so():
    from types import SimpleNamespace

    from lorita.data import Split

    x, y = torch.randint(0, 255, (16, 1, 2, 2), dtype=torch.uint8), torch.randint(0, 2, (16,))
    data = SimpleNamespace(train=Split(x, y, [0.5], [0.4]), val=Split(x, y, [0.5], [0.4]))
    config = lorita.TrainConfig(epochs=1, batch_size=8, device="cpu")

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

        def forward(self, inputs):
            out = self.body(inputs)
            return out, out.detach()

    class Output:  # a transformers-style output: its .logits is taken
        def __init__(self, logits):
            self.logits = logits

    class Wrapped(Pair):
        def forward(self, inputs):
            return Output(self.body(inputs))

    for model, message in [(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double(),
                            r"training: the model's parameters are torch.float64 but the inputs are torch.float32"),
                           (nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten()).double(),
                            r"the model's parameters are torch.float64 but the inputs are torch.float32"),
                           (Pair(), r"training: the model returned a tuple, not a tensor of logits")]:
        with pytest.raises(LoritaError, match=message):
            lorita.train.train(model, data, config, progress=False)
    assert len(lorita.train.train(Wrapped(), data, config, progress=False).history) == 1


def test_load_onto_a_device_it_cannot_use_says_so_before_reading(tmp_path):
    path = tmp_path / "m.lorita"
    lorita.save(nn.Linear(3, 2), path)
    cases = [("bogus", "is not a torch device"), ("meta", "device 'meta' holds no values"),
             ("xpu", "device 'xpu' cannot be used here"), ("privateuseone", "device 'privateuseone' cannot be used")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "CUDA is not available here; load with device='cpu'"))
    for device, message in cases:
        with pytest.raises(LoritaError, match=message):
            lorita.load(path, model=nn.Linear(3, 2), device=device)
    assert lorita.load(path, model=nn.Linear(3, 2), device="cpu:0").weight.device == torch.device("cpu")
    assert lorita.TrainConfig(device="mps").device == "mps"  # a setting recorded to run elsewhere: read, not tried


def test_a_numpy_or_torch_scalar_for_a_number_gets_a_hint():
    np = pytest.importorskip("numpy")
    model = net()
    with pytest.raises(LoritaError, match=r"got np.int64\(2\) \(a numpy scalar: pass a Python number, value.item"):
        lorita.compress(model, ranks={"0": np.int64(2)})
    with pytest.raises(LoritaError, match=r"\(a torch scalar: pass a Python number, value.item\(\)\)"):
        lorita.compress(model, energy=torch.tensor(0.9))


def test_a_generator_of_names_is_refused_not_read_up():
    with pytest.raises(LoritaError, match=r"targets must be .* got a one-pass generator: pass list\(\.\.\.\) of it"):
        lorita.compose(net(), 2, targets=(name for name in ["0", "2"]))
    assert type(lorita.compose(net(), 2, targets=("0", "2"))[2]).__name__ == "ComposedLinear"
