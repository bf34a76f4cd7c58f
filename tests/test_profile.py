"""profile counts equal the formulas; FLOPs = 2 x MACs; per-layer rows add up."""

import pytest
import torch
from torch import nn

import lorita
from lorita.profile import ROOT_ROW, UNKNOWN_NOTE


def test_counts_equal_formulas():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 5 * 5, 10))
    p = lorita.profile(net, torch.randn(4, 3, 5, 5))
    conv_macs = 4 * 25 * (3 * 9 * 8)  # batch x positions x (C_in k k C_out)
    lin_macs = 4 * 200 * 10
    assert p.macs == conv_macs + lin_macs and p.flops == 2 * p.macs
    assert p.params == sum(x.numel() for x in net.parameters())
    rows = {row.name: row for row in p.layers}
    assert rows["0"].macs == conv_macs and rows["4"].macs == lin_macs
    assert rows["1"].params == 16 and rows["1"].macs == 0
    assert sum(r.params for r in p.layers) == p.params
    assert p.batch_size == 4


def test_composed_and_compressed_rows():
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    composed = lorita.compose(net, depth=3, mode="sequential")
    p = lorita.profile(composed, torch.randn(2, 16))
    assert [r.type for r in p.layers] == ["ComposedLinear", "ComposedLinear"]
    assert p.layers[0].macs == 2 * 3 * 16 * 16  # three 16x16 factors applied one after another
    small = lorita.compress(net, ranks={"0": 2})
    q = lorita.profile(small, torch.randn(2, 16))
    assert q.layers[0].type == "LowRankLinear" and q.layers[0].macs == 2 * 2 * 32
    text = str(q)
    assert "LowRankLinear" in text and "FLOPs (= 2 x MACs)" in text and "total" in text
    assert q.to_dict()["units"]["flops"].startswith("floating-point operations = 2 x MACs")


def test_parameter_fed_into_a_layer_is_counted():
    # transformers' DeBERTa-v2 slices a parameter and feeds it to a layer; PyTorch's FLOP counter
    # asserted on that under no_grad. profile runs with parameters not requiring grad (restored after).
    class ParamInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(4, 8)
            self.proj = nn.Linear(8, 8)

        def forward(self, x):
            return x @ self.proj(self.table.weight[:3]).T  # (B, 3)

    model = ParamInput()
    p = lorita.profile(model, torch.randn(2, 8))
    assert p.macs == 3 * 8 * 8 + 2 * 8 * 3
    assert all(q.requires_grad for q in model.parameters())


def test_container_reports_the_macs_it_computes_itself():
    class Mixer(nn.Module):  # own parameter and own matmul, plus a child layer
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.randn(6, 6))
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc(x) @ self.scale

    p = lorita.profile(nn.Sequential(Mixer()), torch.randn(2, 6))
    rows = {row.name: row for row in p.layers}
    assert rows["0"].macs == 2 * 6 * 6 and rows["0"].params == 36  # its own matmul, its own parameter
    assert rows["0.fc"].macs == 2 * 6 * 6
    assert sum(r.macs for r in p.layers) == p.macs
    alone = lorita.profile(Mixer(), torch.randn(2, 6))  # the model's own forward computes: a row of its own
    rows = {row.name: row for row in alone.layers}
    assert set(rows) == {ROOT_ROW, "fc"} and rows[ROOT_ROW].type == "Mixer"
    assert rows[ROOT_ROW].macs == 2 * 6 * 6 and rows[ROOT_ROW].params == 36 and rows["fc"].params == 42
    assert sum(r.macs for r in alone.layers) == alone.macs and sum(r.params for r in alone.layers) == alone.params
    assert [row.name for row in lorita.profile(nn.Linear(3, 2), torch.randn(1, 3)).layers] == []  # one layer


def test_a_transformer_encoder_layer_is_counted_layer_by_layer():
    import lorita

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    x = torch.randn(2, 5, 8)
    tokens = 2 * 5
    # in_proj 8->24, out_proj 8->8, linear1 8->16, linear2 16->8 per token; attention scores and mix 2 x 5 x 5 x 8
    expected = tokens * (8 * 24 + 8 * 8 + 8 * 16 + 16 * 8) + 2 * (2 * 5 * 5 * 8)
    assert lorita.profile(layer, x).macs == expected  # was 0: the fused eval fast path hid every layer
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_attention_products_are_counted_in_their_own_row_and_rows_add_up():
    import lorita
    from lorita.models import create_model

    torch.manual_seed(0)
    model = create_model("vit", num_classes=10, in_channels=3, image_size=32, patch_size=4, dim=64, depth=1,
                         heads=4).eval()
    p = lorita.profile(model, torch.randn(2, 3, 32, 32))
    batch, tokens, dim = 2, 64, 64  # 8 x 8 patches of 4 x 4 pixels
    attention = next(row for row in p.layers if row.name == "blocks.0.attn")
    assert attention.macs == batch * 2 * tokens * tokens * dim  # scores and mix: T x T x dim each, per image
    assert sum(row.macs for row in p.layers) == p.macs and sum(row.params for row in p.layers) == p.params


class _Block(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x) @ torch.ones(4, 4)  # 16 MACs per row of its own


@pytest.mark.parametrize("make", ["encoder", "shared", "gpt2"])
def test_container_rows_are_never_negative_and_list_only_what_ran(make):
    import lorita

    torch.manual_seed(0)
    if make == "encoder":  # an nn.ModuleList of layers: the list itself never runs
        layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        model, x = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval(), torch.randn(2, 5, 8)
    elif make == "shared":  # one Linear inside two blocks
        lin = torch.nn.Linear(4, 4)
        model, x = torch.nn.Sequential(_Block(lin), _Block(lin)), torch.randn(3, 4)
    else:  # with its head, tied to the token embedding: the tied tensor counts in one row
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
        model, x = transformers.GPT2LMHeadModel(config).eval(), torch.zeros(1, 8, dtype=torch.long)
        assert sum(row.params for row in lorita.profile(model, x).layers) == lorita.profile(model, x).params
    p = lorita.profile(model, x)
    assert all(row.macs >= 0 for row in p.layers) and not any(row.type == "ModuleList" for row in p.layers)
    if make == "shared":
        assert next(row for row in p.layers if row.name == "0.lin").macs == 2 * 3 * 16  # both calls, under one name
    else:
        assert sum(row.macs for row in p.layers) == p.macs


def test_tied_and_shared_tensors_count_once_and_the_root_keeps_its_own_products():
    class TiedRoot(nn.Module):  # its own parameter is its child's weight
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)
            self.w = self.fc.weight

        def forward(self, x):
            return self.fc(x) @ self.w

    class Twice(nn.Module):  # one child under two names, and a product of its own
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = self.a
            self.w = nn.Parameter(torch.randn(6, 6))

        def forward(self, x):
            return self.b(self.a(x @ self.w))

    x = torch.randn(2, 6)
    for model in (TiedRoot(), nn.Sequential(TiedRoot()), Twice()):
        p = lorita.profile(model, x)
        assert sum(r.params for r in p.layers) == p.params and sum(r.macs for r in p.layers) == p.macs, p.table()
    rows = {r.name: r for r in lorita.profile(Twice(), x).layers}
    assert rows[ROOT_ROW].macs == 2 * 36 and rows[ROOT_ROW].params == 36 and rows["a"].macs == 2 * 2 * 36
    class Box(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) @ torch.ones(6, 6)

    class Big(nn.Module):  # one Linear both its child and its child's child: whose call is whose is not known
        def __init__(self):
            super().__init__()
            shared = nn.Linear(6, 6)
            self.box, self.direct, self.w = Box(shared), shared, nn.Parameter(torch.randn(6, 6))

        def forward(self, x):
            return self.direct(self.box(x @ self.w))

    p = lorita.profile(Big(), x)
    rows = {r.name: r for r in p.layers}
    assert rows["box.inner"].macs == 2 * 2 * 36
    assert rows[ROOT_ROW].macs == rows["box"].macs == 0 and rows[ROOT_ROW].note == rows["box"].note == UNKNOWN_NOTE
    assert f"{ROOT_ROW} +" in p.table() and f"+ {UNKNOWN_NOTE}" in p.table()
    class Act(nn.Module):  # one activation in two blocks: it computes no products, so nothing is unknown
        def __init__(self, act):
            super().__init__()
            self.fc, self.act = nn.Linear(6, 6), act

        def forward(self, x):
            return self.act(self.fc(x)) @ torch.ones(6, 6)

    relu = nn.ReLU()
    p = lorita.profile(nn.Sequential(Act(relu), Act(relu)), x)
    assert not any(r.note for r in p.layers) and sum(r.macs for r in p.layers) == p.macs
    composed = lorita.compose(nn.Sequential(nn.Linear(16, 16)), depth=2)[0]
    assert lorita.profile(composed, torch.randn(1, 16)).layers == []  # one layer: no rows, only the totals
