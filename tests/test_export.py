"""Deployment: compressed and merged models export to ONNX (run in ONNX Runtime) and torch.export.

Compressed layers are two standard layers each and merged models are the original
architecture, so both export like any torch.nn model.

Tolerances: ONNX Runtime runs the same float32 graph with its own kernels (different
summation order, fused conv + bias); outputs of a ResNet20 with O(1) logits agree to
~1e-6 absolute; 1e-4 leaves room for other CPUs' kernels. torch.export runs the same
ATen ops as eager, so its outputs are compared tightly.
"""

import functools

import pytest
import torch

import lorita
from lorita.models import create_model


def zoo(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, **kwargs).eval()


# Built once per session (the tests only read them); small sizes keep exports fast.
@functools.cache
def resnet20_compressed():
    return lorita.compress(zoo("resnet20", in_channels=3, image_size=16), energy=0.8).eval(), torch.randn(2, 3, 16, 16)


@functools.cache
def vit_merged():
    composed = lorita.compose(zoo("vit", in_channels=3, image_size=16, dim=32, depth=2, heads=2), depth=3)
    return lorita.merge(composed).eval(), torch.randn(2, 3, 16, 16)


@functools.cache
def fcn_composed_compressed():
    composed = lorita.compose(zoo("fcn", in_channels=1, image_size=28, width=64, hidden_layers=2), depth=2)
    return lorita.compress(composed, ratio=0.2).eval(), torch.randn(4, 1, 28, 28)


CASES = {"resnet20-compressed": resnet20_compressed, "vit-merged": vit_merged,
         "fcn-composed-compressed": fcn_composed_compressed}


def test_cases_are_not_trivial():
    model, _ = resnet20_compressed()
    assert any(isinstance(m, lorita.LowRankConv2d) for m in model.modules())
    model, _ = vit_merged()
    assert not any(isinstance(m, lorita.ComposedLinear) for m in model.modules())


# the TorchScript-based exporter (no onnxscript needed) says it is legacy; its constant folding notes are harmless
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_runtime_matches_pytorch(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model, x = CASES[case]()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):  # the batch size is free in the exported graph
        got = torch.from_numpy(session.run(None, {"x": batch.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(batch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_torch_export(case, tmp_path):
    model, x = CASES[case]()
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-6, rtol=1e-6)
    if case != "resnet20-compressed":
        return  # one save/load round trip is enough
    path = tmp_path / "m.pt2"
    torch.export.save(program, str(path))
    again = torch.export.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(again.module()(x), model(x), atol=1e-6, rtol=1e-6)
