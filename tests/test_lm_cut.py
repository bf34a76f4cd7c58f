"""The whitened, non-uniform, whole-model-budget cut of a decoder LM, block by block (tiny random Llamas).

Exact properties: a budget of 1.0 leaves the function unchanged; the params kept are counted over the
whole model (tied embedding once) and stay within the budget; the narrow key/value projections of
grouped-query attention are priced at their own shape; embeddings and the tied head are untouched;
rounded ranks are multiples; the closed-form refit is the least-squares solution.
"""

import copy

import pytest
import torch

pytest.importorskip("transformers")

from lorita.errors import LoritaError  # noqa: E402
from lorita.lm.blocks import block_inputs, decoder_blocks, run_block  # noqa: E402
from lorita.lm.cut import budget_costs, count_params, lm_cut  # noqa: E402
from lorita.lm.width import prune_width  # noqa: E402
from lorita.lowrank import LowRankLinear  # noqa: E402
from lorita.whiten import refit_second, whitened_factors  # noqa: E402
from tiny_lm import HIDDEN, KV_HEADS, HEADS, tiny_llama  # noqa: E402

CALIBRATION = torch.randint(0, 261, (12, 24), generator=torch.Generator().manual_seed(1))
TEXT = torch.randint(0, 261, (3, 24), generator=torch.Generator().manual_seed(2))


def logits(model, ids=TEXT):
    with torch.no_grad():
        return model(ids).logits


def test_running_the_blocks_one_by_one_gives_the_model_output():
    model = tiny_llama()
    _, blocks = decoder_blocks(model)
    hidden = []
    for batch in block_inputs(model, TEXT.split(2)):
        h = batch.hidden
        for block in blocks:
            h = run_block(block, batch, h)
        hidden.append(model.lm_head(model.model.norm(h)))
    assert torch.allclose(torch.cat(hidden), logits(model), atol=1e-5)


@pytest.mark.parametrize("options", [dict(whiten=False), dict(update=False), dict(update=True)])
def test_a_full_budget_keeps_the_function(options):
    model = tiny_llama()
    before = logits(model)
    done = lm_cut(model, CALIBRATION, params=1.0, **options)
    assert done.kept == 1.0 and not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert torch.equal(logits(model), before)


@pytest.mark.parametrize("options", [dict(whiten=False), dict(update=False), dict(update=True, multiple=8)])
def test_the_whole_model_keeps_its_budget_and_its_embeddings(options):
    model = tiny_llama()
    embedding = model.model.embed_tokens.weight.detach().clone()
    total = count_params(model)
    assert total == sum(p.numel() for n, p in model.state_dict().items() if n != "lm_head.weight")  # tied: once
    done = lm_cut(model, CALIBRATION, params=0.8, **options)
    assert done.params_before == total and done.params_after == count_params(model)
    assert 0.7 < done.kept <= 0.8
    assert model.lm_head.weight is model.model.embed_tokens.weight and torch.equal(embedding, model.lm_head.weight)
    cut = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    assert cut and all(done.ranks[n] == r for n, r in cut.items())
    if options.get("multiple"):
        assert all(r % 8 == 0 for r in cut.values())
    assert not torch.equal(logits(model), logits(tiny_llama()))  # the cut changed the model


def test_grouped_query_projections_are_priced_at_their_own_shape():
    model = tiny_llama()
    kv_width = HIDDEN // HEADS * KV_HEADS
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if n.endswith(("k_proj", "q_proj"))}
    costs, fixed = budget_costs(model, shapes)
    k = costs["model.layers.0.self_attn.k_proj"]
    assert (k.out_features, k.in_features) == (kv_width, HIDDEN) and k.at_rank(4) == 4 * (kv_width + HIDDEN)
    assert fixed == count_params(model) - sum(m * n for m, n in shapes.values())


def test_a_budget_below_the_uncut_parts_says_what_can_be_reached():
    with pytest.raises(LoritaError, match=r"params=0.05 .*pass params >= "):
        lm_cut(tiny_llama(), CALIBRATION, params=0.05)


@pytest.mark.parametrize("calibration, message", [
    (torch.randn(4, 8), r"token ids shaped \(windows, tokens\).*torch.float32 shaped \(4, 8\)"),
    (torch.zeros(0, 8, dtype=torch.long), r"token ids shaped .*shaped \(0, 8\)"),  # (a raw reshape error)
    (torch.zeros(2, 8, dtype=torch.bool), r"token ids shaped .*torch.bool"),
    (torch.zeros(2, 8, dtype=torch.int16), r"token ids shaped .*torch.int16"),  # (an embedding takes int64, int32)
    ([[1, 2]], r"token ids shaped .*got list"),
    (torch.full((2, 8), 10_000), r"token id 10000, outside the model's embedding \(rows 0 to \d+\)"),  # (IndexError)
    (torch.full((2, 8), -1), r"token id -1, outside the model's embedding"),
])
def test_calibration_must_be_token_windows_the_model_has_rows_for(calibration, message):
    for cut in (lambda m, c: lm_cut(m, c, params=0.8), lambda m, c: prune_width(m, 0.8, calibration=c)):
        with pytest.raises(LoritaError, match=message):
            cut(tiny_llama(), calibration)


def test_the_refit_is_the_least_squares_second_factor():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, dtype=torch.float64, generator=g)
    x = torch.randn(300, 5, dtype=torch.float64, generator=g)  # the dense layer's inputs
    seen = x + 0.3 * torch.randn(300, 5, dtype=torch.float64, generator=g)  # what the cut model feeds it
    a, b = whitened_factors(w, x.T @ x, 3)
    z = seen @ a.T  # (N, r)
    refit = refit_second(w, x.T @ z, z.T @ z, eps=0)
    residual = x @ w.T - z @ refit.T
    assert torch.allclose(z.T @ residual, torch.zeros(3, 6, dtype=torch.float64), atol=1e-9)  # normal equations
    assert residual.norm() < (x @ w.T - z @ b.T).norm()


def test_the_refit_brings_the_cut_blocks_closer_to_the_dense_ones_on_their_calibration():
    dense = tiny_llama(layers=3)
    outputs = {}
    for update in (False, True):
        model = copy.deepcopy(dense)
        lm_cut(model, CALIBRATION, params=0.75, update=update)
        outputs[update] = logits(model, CALIBRATION)
    target = logits(dense, CALIBRATION)
    assert (outputs[True] - target).norm() < (outputs[False] - target).norm()


def test_calibration_forwards_keep_no_autograd_graph():
    model = tiny_llama()
    seen = []
    for block in model.model.layers:
        block.register_forward_hook(lambda m, args, out: seen.append(torch.is_grad_enabled()))
    lm_cut(model, CALIBRATION, params=0.8, update=True)
    assert seen and not any(seen)  # a graph kept across blocks would hold every block's activations
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("whiten", [False, True])
def test_a_cut_asked_for_progress_counts_every_block_of_both_passes(whiten, capsys):
    model = tiny_llama()
    _, blocks = decoder_blocks(model)
    quiet = tiny_llama()
    lm_cut(quiet, CALIBRATION, params=0.7, whiten=whiten)
    assert "block" not in capsys.readouterr().err  # no bar unasked
    lm_cut(model, CALIBRATION, params=0.7, whiten=whiten, progress=True)
    err = capsys.readouterr().err
    assert f"{2 * len(blocks)}/{2 * len(blocks)}" in err and "cut" in err
    assert torch.equal(logits(model), logits(quiet))  # the bar changes nothing it cuts


@pytest.mark.parametrize("whiten", [True, False])
def test_gpt2s_conv1d_layers_are_cut_as_the_linear_layers_they_are(whiten):
    """A GPT-2 and the same model with each Conv1D made an nn.Linear (same function) get the same ranks and the
    same cut function."""
    import transformers

    from lorita.conv1d import conv1d_as_linear, is_conv1d

    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=261, n_positions=32)
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    linear = copy.deepcopy(gpt2)
    convs = [name for name, m in linear.named_modules() if is_conv1d(m)]
    for name in convs:
        linear.set_submodule(name, conv1d_as_linear(linear.get_submodule(name)))
    torch.testing.assert_close(logits(linear), logits(gpt2))
    done, same = lm_cut(gpt2, CALIBRATION, params=0.8, whiten=whiten), lm_cut(linear, CALIBRATION, params=0.8,
                                                                               whiten=whiten)
    assert done.ranks == same.ranks and len(done.ranks) == len(convs) == 8 and done.kept <= 0.8
    assert done.params_after == same.params_after and any(isinstance(m, LowRankLinear) for m in gpt2.modules())
    torch.testing.assert_close(logits(gpt2), logits(linear), atol=1e-5, rtol=1e-4)


def test_a_model_whose_blocks_are_of_several_kinds_is_refused():
    model = tiny_llama()
    model.config.layer_types = ["full_attention", "sliding_attention"]  # Gemma 2/3, some Qwen configs
    with pytest.raises(LoritaError, match=r"blocks are of 2 kinds \(full_attention, sliding_attention"):
        block_inputs(model, [torch.zeros(1, 4, dtype=torch.long)])
    model.config.layer_types = ["full_attention"] * 2
    assert len(block_inputs(model, [torch.zeros(1, 4, dtype=torch.long)])) == 1


def test_a_model_already_cut_is_refused():
    model, windows = tiny_llama(), torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    lm_cut(model, windows, params=0.8)
    with pytest.raises(LoritaError, match=r"already cut \(thin pairs in its blocks, e\.g\. model\.layers\.0\."):
        lm_cut(model, windows, params=0.8)  # (its pairs' factors were cut again, nested, to 0.8 of the cut model)
