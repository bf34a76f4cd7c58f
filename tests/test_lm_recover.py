"""Recovery after a cut (full factors or LoRA merged back), LoRITa's induce step, and MLP width pruning,
on tiny random Llamas: what trains, what stays frozen, what shape the model keeps."""

import copy

import pytest
import torch

pytest.importorskip("transformers")

from lorita.errors import LoritaError  # noqa: E402
from lorita.lm.cut import count_params, lm_cut  # noqa: E402
from lorita.lm.induce import block_linear_names, induce  # noqa: E402
from lorita.lm.perplexity import perplexity  # noqa: E402
from lorita.lm.recover import (FIT_STEPS, LEARNING_RATES, RecoveryRecipe, fitted_steps, lm_loss, recover,  # noqa: E402
                                recovery_recipe, thin_factors)
from lorita.lm.width import (activation_importance, channel_importance, global_widths, prune_width,  # noqa: E402
                              pruned_linears, set_mlp_widths)
from lorita.lowrank import LowRankLinear, truncate  # noqa: E402
from tiny_lm import tiny_llama  # noqa: E402

g = torch.Generator().manual_seed(3)
PATTERN = torch.randint(0, 40, (16,), generator=g)
TRAIN = PATTERN.repeat(40)  # a repeating text: learnable in a few steps
VAL = PATTERN.repeat(8)
RECIPE = RecoveryRecipe(steps=12, batch_size=4, context=32, lr=3e-3, eval_tokens=128)


def cut_model():
    model = tiny_llama()
    lm_cut(model, TRAIN[: 8 * 32].view(8, 32), params=0.7)
    return model


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_recovery_trains_only_the_thin_layers_and_keeps_the_ranks(mode):
    model = cut_model()
    ranks = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "layers" not in n or "norm" in n}
    before = perplexity(model, VAL, context=32).ppl
    lr = 3e-3 if mode == "full" else 1e-2
    done = recover(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "mode": mode, "lr": lr}))
    assert done.steps == 12 and done.tokens == 12 * 4 * 32 and done.val_after < done.val_before
    assert {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)} == ranks
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in frozen.items())
    assert all(type(f.weight) is torch.nn.Parameter for f in thin_factors(model))  # LoRA merged, none left
    assert all(p.requires_grad for p in model.parameters())  # the caller's flags are restored
    assert perplexity(model, VAL, context=32).ppl < before


def test_a_wall_clock_budget_fits_the_step_count_and_the_schedule_ends_at_zero():
    model = cut_model()
    roomy = recover(model, TRAIN, VAL, RecoveryRecipe(steps=100_000, batch_size=1, context=8, seconds=0.3,
                                                      eval_tokens=16))
    assert FIT_STEPS <= roomy.steps < 100_000 and roomy.tokens == roomy.steps * 8
    assert roomy.history[-1]["step"] == roomy.steps
    tight = recover(model, TRAIN, VAL, RecoveryRecipe(steps=50, batch_size=1, context=8, seconds=1e-9,
                                                      eval_tokens=16))
    assert tight.steps == FIT_STEPS and tight.history[-1]["step"] == FIT_STEPS
    assert fitted_steps(RecoveryRecipe(steps=50, seconds=100.0), elapsed=1.0, done=3) == 50  # never past steps
    assert fitted_steps(RecoveryRecipe(steps=50), elapsed=100.0, done=3) == 50  # no budget: every step


def test_recovery_needs_thin_layers():
    with pytest.raises(LoritaError, match="no thin layers"):
        recover(tiny_llama(), TRAIN, VAL, RECIPE)


def test_a_recipe_is_checked_when_made():
    with pytest.raises(LoritaError, match="mode must be one of"):
        RecoveryRecipe(mode="qlora")
    with pytest.raises(LoritaError, match="distill must be"):
        RecoveryRecipe(distill=2.0)


def test_distillation_needs_its_teacher_and_a_model_equal_to_it_has_nothing_to_learn():
    model = cut_model()
    with pytest.raises(LoritaError, match="needs the teacher model"):
        recover(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "distill": 0.5}))
    windows = TRAIN[: 4 * 33].view(4, 33)
    loss, nll = lm_loss(model, windows, teacher=copy.deepcopy(model), distill=1.0)
    loss.backward()  # the KL to an identical teacher is at its minimum: zero gradient
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) < 1e-6
    assert float(loss) > float(nll) - 10 and torch.isfinite(nll)


def test_distillation_brings_the_cut_model_closer_to_the_dense_one():
    dense = tiny_llama()
    model = copy.deepcopy(dense)
    lm_cut(model, TRAIN[: 8 * 32].view(8, 32), params=0.7)
    windows = VAL[: 3 * 33].view(3, 33)
    with torch.no_grad():
        before, _ = lm_loss(model, windows, teacher=dense, distill=1.0)
    recover(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "distill": 1.0}), teacher=dense)
    with torch.no_grad():
        after, _ = lm_loss(model, windows, teacher=dense, distill=1.0)
    assert after < before


def test_induce_keeps_the_architecture_and_trains_only_the_block_linears():
    model = tiny_llama()
    embedding = model.model.embed_tokens.weight.detach().clone()
    names = block_linear_names(model)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    induce(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "lr": 1e-2, "weight_decay": 1e-3,
                                                "optimizer": "sgd"}))
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in names)  # merged back
    assert any(not torch.equal(model.get_submodule(n).weight, w) for n, w in before.items())
    assert torch.equal(model.model.embed_tokens.weight, embedding)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_induce_gives_back_each_layer_trainable_or_frozen_as_the_user_left_it():
    model = tiny_llama()
    names = block_linear_names(model)
    model.get_submodule(names[0]).weight.requires_grad_(False)
    induce(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "steps": 2, "optimizer": "sgd"}))
    assert not model.get_submodule(names[0]).weight.requires_grad  # it came back trainable
    assert all(model.get_submodule(n).weight.requires_grad for n in names[1:])


def test_induce_leaves_a_layer_the_user_froze_untouched_and_refuses_when_every_one_is():
    model = tiny_llama()
    names = block_linear_names(model)
    model.get_submodule(names[0]).weight.requires_grad_(False)
    kept = model.get_submodule(names[0]).weight.detach().clone()
    induce(model, TRAIN, VAL, RecoveryRecipe(**{**RECIPE.__dict__, "lr": 1e-2, "weight_decay": 1e-3,
                                                "optimizer": "sgd"}))
    assert torch.equal(model.get_submodule(names[0]).weight, kept)  # frozen: not trained, not decayed
    assert type(model.get_submodule(names[0])) is torch.nn.Linear
    net = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.ModuleList([torch.nn.Linear(8, 8)]),
                              torch.nn.Linear(8, 20))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net[2](self.net[1][0](self.net[0](x)))

    ids, small = torch.arange(200) % 20, Net()
    net[1][0].bias.requires_grad_(False)  # its weight trains, its bias stays as the user froze it
    bias, weight = net[1][0].bias.detach().clone(), net[1][0].weight.detach().clone()
    induce(small, ids, ids, RecoveryRecipe(steps=4, context=8, lr=0.05, weight_decay=1e-2, optimizer="sgd"))
    assert torch.equal(net[1][0].bias, bias) and not torch.equal(net[1][0].weight, weight)
    assert not net[1][0].bias.requires_grad and net[1][0].weight.requires_grad
    model.requires_grad_(False)
    with pytest.raises(LoritaError, match="nothing to induce"):
        induce(model, TRAIN, VAL, RECIPE)
    assert not any(p.requires_grad for p in model.parameters())
    net[1][0] = torch.nn.Identity()  # no linear in the blocks at all: said as such, not as frozen
    with pytest.raises(LoritaError) as refused:
        induce(small, ids, ids, RECIPE)
    assert "frozen" not in str(refused.value)


def test_induce_refused_before_it_trains_leaves_every_parameter_as_it_was():
    model = tiny_llama()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    with pytest.raises(LoritaError, match="depth"):
        induce(model, TRAIN, VAL, RECIPE, depth=0)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable  # it left all of them frozen


def down_proj_inputs(model, mlp, windows) -> torch.Tensor:
    """The (tokens, channels) inputs ``mlp.down_proj`` sees when ``model`` runs on ``windows`` in one pass."""
    seen = []
    hook = mlp.down_proj.register_forward_pre_hook(lambda layer, inputs: seen.append(inputs[0].detach()))
    with torch.no_grad():
        model(windows)
    hook.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])


def test_width_pruning_keeps_the_most_important_channels():
    model = tiny_llama()
    mlp = model.model.layers[0].mlp
    importance = channel_importance(mlp)
    gate = mlp.gate_proj.weight.detach().clone()
    info = prune_width(model, 0.8)
    kept = importance.argsort(descending=True)[: info["mlp_width"]].sort().values
    assert torch.equal(model.model.layers[0].mlp.gate_proj.weight, gate[kept])
    assert info["kept"] <= 0.8 and info["params_after"] == count_params(model)
    assert info["mlp_width"] % 4 == 0 and model.config.intermediate_size == info["mlp_width"]
    assert model(TRAIN[None, :16]).logits.shape == (1, 16, 261)
    assert len(pruned_linears(model)) == 3 * 2


def test_width_pruning_with_calibration_ranks_channels_by_their_down_proj_input_energy():
    model = tiny_llama()
    windows = TRAIN[:32].reshape(2, 16)
    mlp = model.model.layers[1].mlp
    seen = down_proj_inputs(model, mlp, windows)
    expected = seen.pow(2).sum(0) * mlp.down_proj.weight.detach().pow(2).sum(0)
    scores = activation_importance(model, windows, batch_size=1)  # two passes of one window add up
    torch.testing.assert_close(scores[mlp], expected, rtol=1e-5, atol=1e-6)
    down = mlp.down_proj.weight.detach().clone()
    info = prune_width(model, 0.8, calibration=windows, update=False)
    kept = expected.argsort(descending=True)[: info["mlp_width"]].sort().values
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, down[:, kept])
    assert info["importance"] == "activations" and info["kept"] <= 0.8 and not info["refit"]


def test_the_width_refit_solves_the_damped_normal_equations_and_carries_the_output_better():
    model = tiny_llama()
    windows = TRAIN[:64].reshape(4, 16)
    mlp = model.model.layers[0].mlp
    h = down_proj_inputs(model, mlp, windows).double()
    down = mlp.down_proj.weight.detach().double().clone()
    plain = copy.deepcopy(model)
    scores = activation_importance(model, windows)[mlp]
    info = prune_width(model, 0.8, calibration=windows)
    prune_width(plain, 0.8, calibration=windows, update=False)
    order = scores.argsort(descending=True)[: info["mlp_width"]].sort().values
    gram = h.T @ h
    inner = gram[order][:, order]
    inner = inner + 0.01 * inner.diagonal().mean() * torch.eye(len(order), dtype=torch.float64)
    new = model.model.layers[0].mlp.down_proj.weight.detach().double()
    torch.testing.assert_close(new @ inner, down @ gram[:, order], rtol=1e-4, atol=1e-5)
    target = h @ down.T
    err_refit = (h[:, order] @ new.T - target).pow(2).sum()
    err_plain = (h[:, order] @ plain.model.layers[0].mlp.down_proj.weight.detach().double().T - target).pow(2).sum()
    assert info["refit"] and err_refit < err_plain


def test_global_width_allocation_ranks_over_all_blocks_and_stays_within_the_uniform_total():
    model = tiny_llama()
    with torch.no_grad():  # block 1's last 24 channels carry almost nothing: it gives up more than block 0
        model.model.layers[1].mlp.down_proj.weight[:, 40:] *= 0.01
    windows = TRAIN[:64].reshape(4, 16)
    scores = list(activation_importance(model, windows).values())
    gates = [layer.mlp.gate_proj.weight.detach().clone() for layer in model.model.layers]
    uniform = prune_width(copy.deepcopy(model), 0.9, calibration=windows)
    info = prune_width(model, 0.9, calibration=windows, allocation="global", update=False)
    widths = info["mlp_widths"]
    assert widths == global_widths(scores, uniform["mlp_width"] * len(widths)) and len(set(widths)) > 1
    assert sum(widths) <= uniform["mlp_width"] * len(widths) and all(w % 4 == 0 and w >= 4 for w in widths)
    assert info["kept"] <= 0.9 and info["params_after"] == count_params(model) and info["allocation"] == "global"
    assert model.config.intermediate_size == max(widths) and model.config.lorita_mlp_widths == widths
    for layer, score, gate, width in zip(model.model.layers, scores, gates, widths):  # each its own largest
        kept = score.argsort(descending=True)[:width].sort().values
        assert torch.equal(layer.mlp.gate_proj.weight, gate[kept])


def test_global_widths_never_add_up_to_more_than_asked_when_blocks_are_raised_to_the_minimum():
    peaked = [torch.tensor([1.0] + [0.0] * 15) for _ in range(3)] + [torch.ones(16)]
    widths = global_widths(peaked, 16)
    assert sum(widths) <= 16 and min(widths) == 4


def test_global_widths_hand_out_what_rounding_down_left_to_the_blocks_whose_next_channels_rank_highest():
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(32, generator=generator) ** power for power in (1, 3, 9)]
    for total in (20, 44, 60):
        widths = global_widths(scores, total)
        assert sum(widths) == total and all(w % 4 == 0 for w in widths)
    assert global_widths([torch.ones(16), torch.tensor([5.0] * 6 + [0.01] * 10)], 16) == [8, 8]


def test_width_pruning_refuses_calibration_that_is_not_windows_of_ids():
    with pytest.raises(LoritaError, match="calibration must be token ids shaped \\(windows, tokens\\)"):
        prune_width(tiny_llama(), 0.8, calibration=TRAIN[:16])


def test_width_pruning_refuses_an_unknown_allocation():
    with pytest.raises(LoritaError, match="allocation must be one of 'uniform', 'global'"):
        prune_width(tiny_llama(), 0.8, allocation="flap")


def test_width_pruning_refuses_a_budget_it_cannot_reach():
    with pytest.raises(LoritaError, match="leaves no MLP channel"):
        prune_width(copy.deepcopy(tiny_llama()), 0.2)


def test_a_recovery_recipe_takes_its_modes_learning_rate_and_refuses_an_unknown_mode():
    assert (recovery_recipe().mode, recovery_recipe().lr) == ("lora", LEARNING_RATES["lora"])
    assert recovery_recipe("full", steps=3).lr == LEARNING_RATES["full"] and recovery_recipe("full", steps=3).steps == 3
    with pytest.raises(LoritaError, match="mode must be one of 'full', 'lora', got 'qlora'"):
        recovery_recipe("qlora")


def test_recovery_asked_for_progress_counts_its_steps_and_trains_the_same(capsys):
    quiet, shown = cut_model(), cut_model()
    recover(quiet, TRAIN, VAL, RECIPE)
    assert "step" not in capsys.readouterr().err  # no bar unasked
    done = recover(shown, TRAIN, VAL, RECIPE, progress=True)
    err = capsys.readouterr().err
    assert f"{done.steps}/{done.steps}" in err and "recovery" in err
    assert all(torch.equal(a, b) for a, b in zip(quiet.state_dict().values(), shown.state_dict().values()))


def test_lora_recovery_repeats_exactly_for_one_seed_whatever_the_global_random_state():
    recipe = RecoveryRecipe(**{**RECIPE.__dict__, "mode": "lora", "lr": 1e-2, "seed": 5})
    results = []
    for global_seed in (0, 1):
        model = cut_model()
        torch.manual_seed(global_seed)  # the LoRA start used to come from here
        recover(model, TRAIN, VAL, recipe)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)


def test_a_recipe_whose_windows_would_take_gigabytes_is_refused_when_made():
    with pytest.raises(LoritaError, match=r"1,000,000 recovery steps of 4 windows of 256 tokens need 7.7 GiB of token "
                                          r"windows, more than the 2 GiB lorita draws: ask for fewer steps"):
        RecoveryRecipe(steps=10**6)
    assert RecoveryRecipe(steps=10**5).steps == 10**5  # 0.8 GiB: allowed


def test_calibration_windows_that_would_take_gigabytes_are_refused_when_asked_for():
    from lorita.lm.pipeline import LMCompression

    with pytest.raises(LoritaError, match=r"10,000,000 calibration windows \(--calibrate\) of 256 tokens are more"):
        LMCompression(params=0.8, windows=10**7, window=256)


def test_width_pruning_leaves_a_block_it_keeps_whole_as_it_was():
    windows = TRAIN[:64].reshape(4, 16)
    model, ids = tiny_llama(), TRAIN[:32].reshape(2, 16)
    with torch.no_grad():
        before = model(ids).logits
    info = prune_width(model, 1.0, calibration=windows)  # nothing to cut: no refit of a whole block either
    assert info["mlp_widths"] == [64, 64] and info["kept"] == 1.0
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # (the damped refit moved the logits by 0.64)
    model = tiny_llama()
    with torch.no_grad():  # block 1's last 24 channels carry almost nothing, block 0's all carry much
        model.model.layers[1].mlp.down_proj.weight[:, 40:] *= 0.001
        model.model.layers[0].mlp.down_proj.weight.mul_(10)
    whole = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    info = prune_width(model, 0.95, calibration=windows, allocation="global")
    assert info["mlp_widths"][0] == 64 and info["mlp_widths"][1] < 64
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, whole)
    for allocation in ("uniform", "global"):  # a width no multiple of 4 stays whole where nothing is cut
        odd = tiny_llama()
        set_mlp_widths(odd, [62, 62])
        assert prune_width(odd, 1.0, calibration=windows, allocation=allocation)["mlp_widths"] == [62, 62]


def test_width_pruning_keeps_frozen_layers_frozen_and_each_layers_mode():
    model = tiny_llama()
    model.requires_grad_(False)
    model.train()
    model.model.layers[1].mlp.eval()
    prune_width(model, 0.8, calibration=TRAIN[:64].reshape(4, 16))
    assert not any(p.requires_grad for p in model.parameters())  # (the narrowed layers came back trainable)
    assert model.model.layers[0].mlp.up_proj.training and not model.model.layers[1].mlp.up_proj.training


def test_width_pruning_ranks_channels_in_eval_mode():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_dropout=0.5)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    windows = TRAIN[:64].reshape(4, 16)
    first, second = (activation_importance(model, windows) for _ in range(2))  # (dropout made them differ)
    assert all(torch.equal(first[m], second[m]) for m in first) and model.training


def test_width_pruning_refuses_a_model_whose_blocks_have_several_widths():
    model = tiny_llama()
    set_mlp_widths(model, [40, 64])  # as a global allocation leaves it
    with pytest.raises(LoritaError, match=r"MLPs are of several widths \(\[40, 64\]: pruned before"):
        prune_width(model, 0.8)  # (block 0's width sized every block: [12, 12], 0.69 kept of the 0.8 asked)


def test_distillation_through_the_sliced_head_only_where_the_teacher_has_the_students_head():
    student, ids = tiny_llama(), TRAIN[:34].reshape(2, 17)
    teacher = copy.deepcopy(student)
    same, _ = lm_loss(student, ids, teacher=teacher, distill=1.0)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(1.5)  # tied: the teacher's embedding and head both change
        logits, target = student(ids[:, :-1]).logits, teacher(ids[:, :-1]).logits
    other, _ = lm_loss(student, ids, teacher=teacher, distill=1.0)
    expected = -(torch.softmax(target, -1) * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(other, expected, atol=1e-5, rtol=1e-5)  # (the student's head formed the target)
    assert not torch.isclose(same, other)


def test_width_pruning_refuses_a_model_whose_mlps_are_cut_to_low_rank():
    model = tiny_llama()
    model.model.layers[1].mlp.up_proj = truncate(model.model.layers[1].mlp.up_proj, 4)
    with pytest.raises(LoritaError, match=r"MLPs are cut to low rank \(thin pairs, e\.g\. model\.layers\.1\.mlp\.up"):
        prune_width(model, 0.8)  # (the plain MLPs were pruned, the config set to their width, the cut one not)
    model = tiny_llama()
    model.model.layers[0].self_attn.q_proj = truncate(model.model.layers[0].self_attn.q_proj, 4)
    info = prune_width(model, 0.8)  # a cut outside the MLPs is no obstacle
    assert info["mlp_widths"] == [36, 36] and info["kept"] <= 0.8 and info["params_after"] == count_params(model)
