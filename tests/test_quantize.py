"""int8 after the cut: ``lorita.quantize`` on plain, compressed and transformers models; save/load; export.

Tolerances: symmetric per-channel int8 rounds each weight by at most half its row's
scale (``max|row| / 254``), which the first test checks exactly. Model outputs are then
compared with a bound derived from that: for a layer ``y = W x``, the error is at most
``sum_j |x_j| * scale_i / 2`` per output; the small models here (weights ~U(-1/sqrt(n),
1/sqrt(n)), inputs ~N(0, 1)) stay below 0.05, far below their O(0.5) outputs, and the
tests also check that the result differs from the float model (so they cannot pass with
float layers). Round trips through files load identical tensors and compare exactly.
"""

import warnings

import pytest
import torch
from torch import nn

import lorita
from lorita.errors import LoritaError, LoritaWarning
from lorita.int8 import LARGE, Int8Conv2d, Int8Linear, quantize_weight
from lorita.quantize import Int8Config, quantize

CLOSE = 0.05  # see the module docstring
EXACT = dict(atol=0, rtol=0)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4),
                         nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1, padding_mode="reflect"), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()


def int8_layers(model):
    return [m for m in model.modules() if isinstance(m, (Int8Linear, Int8Conv2d))]


def max_diff(a, b, x):
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_rounding_error_is_at_most_half_a_step(granularity):
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3) * torch.logspace(-3, 1, 8).view(8, 1, 1, 1)  # channels of very different sizes
    q, s = quantize_weight(w, granularity)
    assert q.dtype == torch.int8 and q.shape == w.shape and s.shape == ((8,) if granularity == "channel" else (1,))
    assert q.abs().max() <= 127
    error = (q.float() * s.view(-1, 1, 1, 1) - w).abs().flatten(1).amax(1)
    assert torch.all(error <= s / 2 * (1 + 1e-6))
    if granularity == "channel":
        assert torch.equal(q.flatten(1).abs().amax(1), torch.full((8,), 127, dtype=torch.int8))  # range used


def test_all_zero_channel_gets_unit_scale():
    q, s = quantize_weight(torch.zeros(2, 4))
    assert torch.equal(q, torch.zeros(2, 4, dtype=torch.int8)) and torch.equal(s, torch.ones(2))


@pytest.mark.parametrize("build, x", [(mlp, torch.randn(4, 64)), (cnn, torch.randn(2, 1, 8, 8))])
def test_quantize_replaces_every_layer_and_stays_close(build, x):
    model = build()
    q = quantize(model, "int8")
    plain = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(int8_layers(q)) == len(plain) > 0
    assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in q.modules())
    diff = max_diff(q, model, x)
    assert 0 < diff < CLOSE
    assert all(isinstance(m, (nn.Linear, nn.Conv2d)) for m in plain)  # the argument is untouched


def test_profile_counts_int8_weights_as_params_and_their_macs():
    for build, x in ((mlp, torch.randn(2, 64)), (cnn, torch.randn(2, 1, 8, 8))):
        small = lorita.compress(build(), ratio=0.5) if build is mlp else build()
        float_profile, int8_profile = lorita.profile(small, x), lorita.profile(quantize(small), x)
        assert (int8_profile.params, int8_profile.macs) == (float_profile.params, float_profile.macs)
        assert [(p.name, p.params, p.macs) for p in int8_profile.layers] == \
            [(p.name, p.params, p.macs) for p in float_profile.layers]


def test_compressed_pairs_are_quantized_inside_and_keep_their_shape():
    dense = mlp()
    small = lorita.compress(dense, ratio=0.25)
    q = quantize(small)
    pairs = [m for m in q.modules() if isinstance(m, lorita.LowRankLinear)]
    assert len(pairs) == 3 and all(isinstance(layer, Int8Linear) for p in pairs for layer in p)
    assert [p.rank for p in pairs] == [m.rank for m in small.modules() if isinstance(m, lorita.LowRankLinear)]
    # the second layer's column scales are folded into the first: r scales per pair, not r + out
    assert all(p[0].scale.shape == (p.rank,) and p[1].scale.tolist() == [1.0] for p in pairs)
    x = torch.randn(4, 64)
    assert 0 < max_diff(q, small, x) < CLOSE
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compress left")  # the grouped conv stays dense
        cut = lorita.compress(cnn(), ratio=0.5)
    conv = quantize(cut)
    pairs = [m for m in conv.modules() if isinstance(m, lorita.LowRankConv2d)]
    assert pairs and all(isinstance(p[0], Int8Conv2d) and p[1].scale.tolist() == [1.0] for p in pairs)
    assert 0 < max_diff(conv, cut, torch.randn(2, 1, 8, 8)) < CLOSE


def test_small_layer_keeps_its_dequantized_weight_until_a_buffer_changes():
    layer = Int8Linear.from_linear(nn.Linear(32, 8))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), **EXACT)
        other = Int8Linear.from_linear(nn.Linear(32, 8))
        layer.load_state_dict(other.state_dict())  # written in place: the kept weight must follow
        torch.testing.assert_close(layer(x), other(x), **EXACT)
    copy = __import__("copy").deepcopy(layer)
    assert "_lorita_kept" not in copy.__dict__ and torch.equal(copy(x), layer(x))
    with torch.no_grad():
        layer.qweight.mul_(-1)  # by hand, in place: kept until clear_cache()
        layer.clear_cache()
        torch.testing.assert_close(layer(x) - layer.bias, -(other(x) - other.bias), atol=1e-6, rtol=1e-6)
    x.requires_grad_(True)
    layer(x).sum().backward()  # the kept weight is a constant of the matmul: inputs still get gradients
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        expected = layer(x.detach()).double()
        layer.double()  # .to() and friends drop what was kept: the float64 weight is formed anew
        torch.testing.assert_close(layer(x.detach().double()), expected, atol=1e-6, rtol=1e-6)  # float32 vs 64 sums


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the traced size check, as in any export
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_small_layers_second_call_takes_the_kept_path_and_gives_the_first_calls_output(padding_mode):
    torch.manual_seed(0)
    conv = Int8Conv2d.from_conv(nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode))
    linear = Int8Linear.from_linear(nn.Linear(32, 8))
    x, v = torch.randn(2, 3, 6, 6), torch.randn(4, 32)
    with torch.no_grad():
        padded = nn.functional.pad(x, conv._reversed_padding_repeated_twice, mode=padding_mode) \
            if padding_mode != "zeros" else x
        expected = nn.functional.conv2d(padded, conv.weight, conv.bias, conv.stride,
                                        0 if padding_mode != "zeros" else conv.padding)
        for _ in range(2):  # the first call forms the kept weight, the second one reads it
            torch.testing.assert_close(conv(x), expected, **EXACT)
            torch.testing.assert_close(linear(v), nn.functional.linear(v, linear.weight, linear.bias), **EXACT)
        assert "_lorita_kept" in conv.__dict__ and "_lorita_kept" in linear.__dict__
        linear.bias = nn.Parameter(torch.ones(8))  # a new bias, assigned: the kept pair is dropped with it
        assert "_lorita_kept" not in linear.__dict__
        torch.testing.assert_close(linear(v), nn.functional.linear(v, linear.weight, torch.ones(8)), **EXACT)
        traced = torch.jit.trace(linear, v)  # tracing never takes the kept weight: the graph dequantizes
        assert "aten::mul" in str(traced.graph) and torch.equal(traced(v), linear(v))


def test_large_linear_multiplies_in_int8_close_to_the_dequantized_weight():
    torch.manual_seed(0)
    dense = nn.Linear(512, 256)
    layer = Int8Linear.from_linear(dense)
    assert layer.qweight.numel() >= LARGE
    x = torch.randn(3, 4, 512)
    with torch.no_grad():
        fast = layer(x)
        exact = nn.functional.linear(x, layer.weight, layer.bias)
        # the input is quantized per tensor to 7 bits (step ~ range/127 ~ 0.06 here); summed over 512 inputs
        # of weights ~U(-1/sqrt(512), 1/sqrt(512)) the error stays well below 0.05 (outputs are O(0.5))
        assert 0 < (fast - exact).abs().max() < 0.05
        layer.load_state_dict(Int8Linear.from_linear(nn.Linear(512, 256)).state_dict())
        assert (layer(x) - fast).abs().max() > 0.1  # the packed weight was rebuilt
        layer.bias = nn.Parameter(torch.full((256,), 10.0))  # read at each call, as assigned
        assert (layer(x) - nn.functional.linear(x, layer.weight) - 10).abs().max() < 0.05
    assert lorita.profile(layer, x).macs == lorita.profile(dense, x).macs  # the FLOP counter sees the matmul


def test_large_linear_takes_the_float_path_where_the_int8_matmul_would_fail_or_lose_a_gradient():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(512, 256))
    x = torch.randn(3, 512)
    exact = lambda v: nn.functional.linear(v, layer.weight, layer.bias)  # noqa: E731
    with torch.no_grad():
        assert (layer(x) - exact(x)).abs().max() > 0  # the int8 matmul
        torch.testing.assert_close(layer(x[0]), exact(x[0]), **EXACT)  # unbatched: the float path (it crashed)
        bad = x.clone()
        bad[0, 0], bad[1, 0] = float("inf"), float("nan")
        torch.testing.assert_close(layer(bad)[2], exact(bad)[2], **EXACT)  # the other rows unharmed (were nan)
        for values in ((float("inf"),), (float("inf"), float("-inf")), (float("-inf"),)):  # a sum of inf or nan
            bad = x.clone()
            bad[0, :len(values)] = torch.tensor(values)
            torch.testing.assert_close(layer(bad)[2], exact(bad)[2], **EXACT)
        huge = x.clone()
        huge[0, :2] = 3e38  # finite, its sum overflows: the float path, exact
        torch.testing.assert_close(layer(huge), exact(huge), **EXACT)
        torch.testing.assert_close(layer(x.to_sparse()), exact(x.to_sparse()), **EXACT)  # sparse: the float path
    out = layer(x)  # gradients on, raw data (no grad on the input): the int8 matmul, and the bias gets its gradient
    assert (out - exact(x)).abs().max() > 0
    out.sum().backward()
    torch.testing.assert_close(layer.bias.grad, torch.full((256,), 3.0), **EXACT)
    small = Int8Linear.from_linear(nn.Linear(16, 4))
    with torch.inference_mode():
        small(torch.randn(2, 16))  # keeps its float weight, made outside inference mode
    v = torch.randn(2, 16, requires_grad=True)
    small(v).sum().backward()  # saving the kept weight for backward failed after an inference-mode call
    assert v.grad is not None


def test_layers_it_cannot_quantize_are_named_in_one_warning_and_left_in_float():
    torch.manual_seed(0)
    composed = lorita.compose(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), depth=2, targets=["0"])
    model = nn.Sequential(composed, nn.Conv1d(4, 4, 1))
    with pytest.warns(LoritaWarning, match=r"lorita\.quantize left 2 layer\(s\) plain: 0\.0: composed layer: "
                                           r"merge it first.*1: Conv1d"):
        q = quantize(model)
    assert isinstance(q[0][0], lorita.ComposedLinear) and isinstance(q[0][2], Int8Linear)
    assert isinstance(q[1], nn.Conv1d)


def test_a_model_with_nothing_to_quantize_is_returned_in_float_with_a_warning():
    model = nn.Sequential(nn.Conv1d(2, 2, 3), nn.ReLU())
    with pytest.warns(LoritaWarning, match="Sequential has no Linear or Conv2d layer it can quantize.*Conv1d"):
        q = quantize(model)
    assert q is not model and isinstance(q[0], nn.Conv1d)


def test_tied_weights_stay_float():
    emb = nn.Embedding(10, 8)
    head = nn.Linear(8, 10, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, nn.Linear(8, 8), head)
    with pytest.warns(LoritaWarning, match="2: weight tied"):
        q = quantize(model)
    assert isinstance(q[1], Int8Linear) and isinstance(q[2], nn.Linear) and q[2].weight is q[0].weight


def test_targets_exclude_config_and_errors():
    model = mlp()
    assert [type(m).__name__ for m in quantize(model, targets=["2"])][::2] == ["Linear", "Int8Linear", "Linear"]
    assert isinstance(quantize(model, exclude=["4"])[4], nn.Linear)
    coarse = quantize(model, Int8Config(granularity="tensor"))
    assert coarse[0].scale.shape == (1,) and coarse[0].granularity == "tensor"
    assert quantize(model, inplace=True) is model and isinstance(model[0], Int8Linear)
    with pytest.raises(LoritaError, match="unknown quantization 'int4'; use one of 'int8'"):
        quantize(mlp(), "int4")
    with pytest.raises(LoritaError, match="granularity must be one of"):
        Int8Config(granularity="row")
    with pytest.raises(LoritaError, match="unknown module name 'fc'.*Layers that can be quantized: 0, 2, 4"):
        quantize(mlp(), targets=["fc"])
    with pytest.raises(LoritaError, match="quantize needs an nn.Module"):
        quantize("model")
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(LoritaError, match="meta device"):
        quantize(meta)


def test_a_pairs_name_selects_both_its_layers_and_a_bare_index_never_every_pairs_half():
    small = lorita.compress(mlp(), ratio=0.25)  # pairs 0, 2 and 4, each of layers .0 and .1
    kinds = lambda q: {f"{i}.{j}": type(q[i][j]).__name__ for i in (0, 2, 4) for j in (0, 1)}  # noqa: E731
    int8 = lambda *names: {k: "Int8Linear" if k in names else "Linear" for k in kinds(small)}  # noqa: E731
    assert kinds(quantize(small, targets=["0"])) == int8("0.0", "0.1")  # was every pair's first half
    assert kinds(quantize(small, targets=["2"])) == int8("2.0", "2.1")  # was refused
    assert kinds(quantize(small, exclude=["0"])) == int8("2.0", "2.1", "4.0", "4.1")
    assert kinds(quantize(small, targets=["2.1"])) == int8("2.1")  # one half, named with its pair
    assert kinds(quantize(small, targets="4")) == int8("4.0", "4.1")  # a regex naming the pair
    with pytest.raises(LoritaError, match="module '1' is not a Linear or Conv2d layer"):  # the ReLU, not the .1s
        quantize(small, targets=["1"])
    named = lorita.compress(nn.ModuleDict({"fc1": nn.Linear(32, 32), "fc2": nn.Linear(32, 32)}), ratio=0.25)
    for selector in ("targets", "exclude"):  # "0" names no module but pairs' halves: said so, with what to name
        with pytest.raises(LoritaError, match=r"'0' alone names no layer here: .* a pair for both its layers "
                                              r"\(fc1, fc2\) or one layer of one \(fc1.0, fc2.0\)"):
            quantize(named, **{selector: ["0"]})


@pytest.mark.parametrize("damage,message", [
    (lambda t: t["0.scale"].fill_(float("nan")), "int8 scales that are not all finite and non-negative"),
    (lambda t: t["0.scale"].fill_(float("inf")), "int8 scales that are not all finite and non-negative"),
    (lambda t: t["0.scale"].neg_(), "int8 scales that are not all finite and non-negative"),
    (lambda t: t["0.qweight"].fill_(-128), "int8 weights of -128"),
])
def test_int8_values_quantize_never_makes_are_refused_on_save_and_called_damage_on_load(tmp_path, damage, message):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    arch = lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))  # noqa: E731
    lorita.save(quantize(arch()), tmp_path / "good.lorita")
    with safe_open(tmp_path / "good.lorita", "pt") as f:
        metadata = f.metadata()
    tensors = load_file(tmp_path / "good.lorita")
    damage(tensors)
    save_file(tensors, tmp_path / "bad.lorita", metadata=metadata)
    with pytest.raises(LoritaError, match="bad.lorita: the file is damaged: layer '0' has " + message):
        lorita.load(tmp_path / "bad.lorita", model=arch)
    q = quantize(arch())
    q[0].load_state_dict({k.removeprefix("0."): v for k, v in tensors.items() if k.startswith("0.")})
    with pytest.raises(LoritaError, match="layer '0' has " + message):
        lorita.save(q, tmp_path / "refused.lorita")
    assert not (tmp_path / "refused.lorita").exists()


def test_a_float16_rows_tiny_step_does_not_underflow_to_a_zero_scale(tmp_path):
    torch.manual_seed(0)
    layer = nn.Linear(8, 4).half()
    with torch.no_grad():
        layer.weight[1] = torch.full((8,), 2e-6)  # 2e-6 / 127 is below float16's range: the step was stored as 0
    q = quantize(nn.Sequential(layer))
    assert bool((q[0].scale > 0).all()) and q[0].scale.dtype == torch.float16
    error = (q[0].weight.float() - layer.weight.float()).abs()
    assert float(error[1].max()) <= torch.finfo(torch.float16).tiny  # the tiny row: within one float16 step
    amax = layer.weight.float().abs().amax(dim=1, keepdim=True)
    rows = [0, 2, 3]  # within half a step, plus float16's rounding of the dequantized product
    assert bool((error[rows] <= (amax / 127 / 2 + amax * 2**-10)[rows]).all())
    lorita.save(q, tmp_path / "half.lorita")  # refused before: a zero scale
    q[0].scale[1] = 0.0  # as a float16 file saved before may hold it: dequantizes to zeros, loads
    lorita.save(q, tmp_path / "zero.lorita")
    assert lorita.load(tmp_path / "zero.lorita", model=lambda: nn.Sequential(nn.Linear(8, 4).half()))[0].scale[1] == 0


def test_a_pairs_first_bias_is_scaled_with_the_folded_weight():
    torch.manual_seed(0)
    pair = lorita.compress(nn.Sequential(nn.Linear(32, 32)), ratio=0.25)
    pair[0][0].bias = nn.Parameter(torch.randn(8))  # a hand-built pair: lorita's own have no first bias
    x = torch.randn(3, 32)
    with torch.no_grad():
        assert (quantize(pair)(x) - pair(x)).abs().max() < CLOSE  # the unscaled bias was off by ~150x


def test_save_load_round_trip_keeps_int8_layers_and_shrinks_the_file(tmp_path):
    small = lorita.compress(mlp(), ratio=0.25)
    q = quantize(small)
    lorita.save(small, tmp_path / "float.lorita")
    lorita.save(q, tmp_path / "int8.lorita")
    again = lorita.load(tmp_path / "int8.lorita", model=mlp).eval()
    assert [type(m) for m in again.modules()] == [type(m) for m in q.modules()]
    assert again[0][0].qweight.dtype == torch.int8
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(again(x), q(x))
    ratio = (tmp_path / "int8.lorita").stat().st_size / (tmp_path / "float.lorita").stat().st_size
    assert ratio < 0.4  # weights 1 byte instead of 4, plus scales, biases and the description


def test_zoo_cnn_round_trip_without_model_argument(tmp_path):
    from lorita.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1, image_size=8).eval()
    q = quantize(lorita.compress(model, ratio=0.5))
    lorita.save(q, tmp_path / "r.lorita")
    again = lorita.load(tmp_path / "r.lorita").eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again(x), q(x))


def test_load_refuses_int8_layers_in_the_wrong_place_or_of_the_wrong_dtype(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    path = tmp_path / "q.lorita"
    lorita.save(quantize(mlp()), path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    desc = json.loads(meta["lorita"])
    moved = {**desc, "layers": {"1": {"type": "int8_linear", "aliases": ["1"]}}}
    save_file(tensors, str(tmp_path / "moved.lorita"), metadata={"lorita": json.dumps(moved)})
    with pytest.raises(LoritaError, match="describes layer '1' as int8_linear, but the architecture has ReLU"):
        lorita.load(tmp_path / "moved.lorita", model=mlp)
    floats = {k: (v.float() if k.endswith("qweight") else v) for k, v in tensors.items()}
    save_file(floats, str(tmp_path / "float.lorita"), metadata=meta)
    with pytest.raises(LoritaError, match=r"0\.qweight: file dtype F32 vs model int8"):
        lorita.load(tmp_path / "float.lorita", model=mlp)
    odd = {**desc, "layers": {**desc["layers"], "0": {**desc["layers"]["0"], "granularity": "row"}}}
    save_file(tensors, str(tmp_path / "odd.lorita"), metadata={"lorita": json.dumps(odd)})
    with pytest.raises(LoritaError, match="granularity of layer '0' must be one of"):
        lorita.load(tmp_path / "odd.lorita", model=mlp)


# the TorchScript-based exporter says it is legacy; its constant folding notes are harmless
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
def test_int8_model_exports_to_onnx_with_int8_weights(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = nn.Sequential(lorita.compress(cnn(), ratio=0.5), nn.ReLU(), nn.Linear(10, 512), nn.ReLU(),
                          nn.Linear(512, 256))  # with a Linear large enough for the int8 matmul in eager mode
    q = quantize(model).eval()
    assert q[-1].qweight.numel() >= LARGE
    x = torch.randn(2, 1, 8, 8)
    path = tmp_path / "q.onnx"
    torch.onnx.export(q, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
                      do_constant_folding=False)  # folding would store the dequantized float weights
    graph = onnx.load(str(path)).graph
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)  # stored as int8
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    dequantized = q(x.clone().requires_grad_(True)).detach()  # under autograd: the form the exporter saw
    torch.testing.assert_close(got, dequantized, atol=1e-4, rtol=1e-4)  # ONNX Runtime's float kernels
    with torch.no_grad():
        assert (got - q(x)).abs().max() < CLOSE  # eager: the large Linear quantized its input too


def test_transformers_conv1d_layers_quantize_and_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.quantize left")  # the tied lm_head
        q = quantize(model)
    assert isinstance(q.transformer.h[0].attn.c_attn, Int8Linear) and isinstance(q.lm_head, nn.Linear)
    x = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        assert 0 < (q(x).logits - model(x).logits).abs().max() < CLOSE
    lorita.save(q, tmp_path / "g.lorita")
    again = lorita.load(tmp_path / "g.lorita", model=lambda: transformers.GPT2LMHeadModel(config)).eval()
    with torch.no_grad():
        assert torch.equal(again(x).logits, q(x).logits)


# the TorchScript-based exporter says it is legacy; its constant folding notes are harmless
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
def test_onnx_runtime_dynamic_quantization_of_the_exported_cut(tmp_path):
    """The other export route: the float cut exported, then quantized by ONNX Runtime's own tool (int8 compute
    in ONNX Runtime). Its activations are quantized too, so outputs are compared at the int8 tolerance."""
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    small = lorita.compress(mlp(), ratio=0.25).eval()
    x = torch.randn(8, 64)
    torch.onnx.export(small, (x,), str(tmp_path / "f.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    assert (tmp_path / "q.onnx").stat().st_size < 0.5 * (tmp_path / "f.onnx").stat().st_size
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    with torch.no_grad():
        assert 0 < (got - small(x)).abs().max() < CLOSE


def test_compress_command_int8_writes_an_int8_run_that_evaluates(tmp_path, capsys):
    import json

    from lorita.cli import main

    run, cut = tmp_path / "d2", tmp_path / "cut"
    assert main(["train", "--model", "fcn", "--model-arg", "width=16", "--model-arg", "hidden_layers=2",
                 "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--no-progress", "--depth", "2",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["compress", str(run), "--energy", "0.9", "--int8", "--no-progress", "--out", str(cut)]) == 0
    size = round((cut / "model.lorita").stat().st_size / 1024)
    assert f"{cut / 'model.lorita'}: {size:,} KiB (int8 weights)" in capsys.readouterr().out
    results = json.loads((cut / "results.json").read_text())
    assert results["cut"] == {"kind": "energy", "energy": 0.9, "calibrate": 0, "multiple": 1, "int8": True}
    assert abs(results["after_int8"]["test_acc"] - results["after_cut"]["test_acc"]) <= 5  # 359 test digits
    model = lorita.load(cut / "model.lorita")
    assert int8_layers(model) and not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    capsys.readouterr()
    assert main(["evaluate", str(cut), "--write"]) == 0
    evaluation = json.loads((cut / "evaluation.json").read_text())
    assert evaluation["test_acc"] == pytest.approx(results["after_int8"]["test_acc"])  # the int8 model was saved
