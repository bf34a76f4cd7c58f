"""LoRITa inside transformers' Trainer: ``lorita.hf.LoritaCallback`` on a tiny GPT-2 (CPU, seconds).

The callback composes the model before the optimizer exists, the optimizer decays the
factors, checkpoints and the final model are written merged (the plain GPT-2 loads them
with no missing or unexpected keys, and its outputs are the merged composed model's:
compared exactly, since both hold the same float32 tensors), and a run resumed from a
checkpoint is composed again from the merged weights (their product equals the
checkpoint's weights up to float32 rounding of the balanced split: 1e-5), for GPT-2's Conv1D,
a Llama's nn.Linear and a Conv2d alike.
"""

import os
import pickle
import sys
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

transformers = pytest.importorskip("transformers")

import lorita  # noqa: E402
from lorita.composed import COMPOSED_TYPES  # noqa: E402
from lorita.errors import LoritaError, LoritaWarning  # noqa: E402

EXACT = dict(atol=0, rtol=0)


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return config, transformers.GPT2LMHeadModel(config)


def data(n=12):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (n, 16), generator=g)]


def args(out, steps=3, weight_decay=0.1):
    return transformers.TrainingArguments(
        output_dir=str(out), use_cpu=True, report_to=[], disable_tqdm=True, max_steps=steps,
        per_device_train_batch_size=4, save_steps=3, learning_rate=1e-2, weight_decay=weight_decay, seed=0)


def trainer(model, out, callback=None, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")  # GPT-2's tied lm_head stays plain
        return transformers.Trainer(model=model, args=args(out, **kw), train_dataset=data(),
                                    callbacks=[callback or lorita.hf.LoritaCallback(depth=2)])


def test_three_steps_leave_merged_checkpoint_and_final_model_the_plain_class_loads(tmp_path):
    config, model = tiny_gpt2()
    run = trainer(model, tmp_path)
    assert isinstance(model.transformer.h[0].attn.c_attn, lorita.ComposedLinear)  # composed at init, in place
    run.train()
    run.save_model(str(tmp_path / "final"))
    x = torch.randint(0, 64, (2, 8))
    merged = lorita.merge(run.model).eval()
    with torch.no_grad():
        expected = merged(x).logits
    plain_keys = set(transformers.GPT2LMHeadModel(config).state_dict()) - {"lm_head.weight"}  # tied: stored once
    for folder in (tmp_path / "checkpoint-3", tmp_path / "final"):
        loaded, info = transformers.GPT2LMHeadModel.from_pretrained(str(folder), output_loading_info=True)
        assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
        assert info["mismatched_keys"] == set() and info["error_msgs"] == []
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            assert set(f.keys()) == plain_keys
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x).logits, expected, **EXACT)
    with torch.no_grad():
        assert not torch.equal(transformers.GPT2LMHeadModel(config).eval()(x).logits, expected)  # it trained


def test_the_optimizer_decays_every_factor(tmp_path):
    _, model = tiny_gpt2()
    run = trainer(model, tmp_path, steps=1)
    run.train()
    factors = [p for n, p in run.model.named_parameters() if ".factors." in n]
    assert len(factors) == 2 * 4 * 2  # 2 blocks x 4 Conv1D (c_attn, attn c_proj, c_fc, mlp c_proj) x depth 2
    decayed = {id(p) for g in run.optimizer.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert all(id(p) in decayed for p in factors)


def test_resume_composes_again_from_the_merged_checkpoint(tmp_path):
    _, model = tiny_gpt2()
    trainer(model, tmp_path).train()
    checkpoint = tmp_path / "checkpoint-3"
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        saved = f.get_tensor("transformer.h.0.mlp.c_fc.weight")
    _, fresh = tiny_gpt2()
    callback = lorita.hf.LoritaCallback(depth=2)
    resumed = trainer(fresh, tmp_path, callback=callback, steps=5)
    seen = []

    class Watch(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
            layer = model.transformer.h[0].mlp.c_fc
            seen.append((state.global_step, lorita.merge(model).transformer.h[0].mlp.c_fc.weight.detach().clone(),
                         isinstance(layer, lorita.ComposedLinear)))
            state_of = getattr(optimizer, "optimizer", optimizer).state
            # the factors' moments belonged to the previous split: dropped; the rest resumes
            assert not any(p in state_of for p in layer.parameters() if p is not layer.bias)
            assert model.transformer.wte.weight in state_of and layer.bias in state_of

    resumed.add_callback(Watch())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    step, weight, composed = seen[0]
    assert step == 3 and composed
    torch.testing.assert_close(weight, saved, atol=1e-5, rtol=1e-5)  # preserve: the product is the checkpoint's
    assert resumed.state.global_step == 5 and callback.recomposed == []  # factor moments dropped, then forgotten
    assert any(isinstance(m, COMPOSED_TYPES) for m in resumed.model.modules())


def test_clear_errors_and_warnings(tmp_path):
    _, model = tiny_gpt2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(LoritaError, match="was given an optimizer built over the plain ones"):
        transformers.Trainer(model=model, args=args(tmp_path), train_dataset=data(), optimizers=(optimizer, None),
                             callbacks=[lorita.hf.LoritaCallback()])
    _, model = tiny_gpt2()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        composed = lorita.compose(model, depth=2)
    with pytest.raises(LoritaError, match="already composed"):
        transformers.Trainer(model=composed, args=args(tmp_path), callbacks=[lorita.hf.LoritaCallback()])
    _, model = tiny_gpt2()
    with pytest.warns(LoritaWarning, match="weight_decay is 0"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        run = transformers.Trainer(model=model, args=args(tmp_path, weight_decay=0.0),
                                   callbacks=[lorita.hf.LoritaCallback()])
    with pytest.raises(LoritaError, match=r"save lorita\.merge\(model\) instead"):
        lorita.save(run.model, tmp_path / "m.lorita")
    lorita.save(lorita.merge(run.model), tmp_path / "m.lorita")
    assert os.path.getsize(tmp_path / "m.lorita") > 0
    diverged = run.model.state_dict()  # merged weights, as a checkpoint holds them
    key = next(k for k in diverged if k.endswith("c_attn.weight"))
    diverged[key] = torch.full_like(diverged[key], float("nan"))
    with pytest.raises(LoritaError, match=f"layer '{key.removesuffix('.weight')}' has NaN in its weight.*earlier "
                                          "checkpoint"):  # was an SVD's convergence error
        run.model.load_state_dict(diverged)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        built = transformers.Trainer(model_init=lambda: tiny_gpt2()[1], args=args(tmp_path), train_dataset=data(),
                                     callbacks=[lorita.hf.LoritaCallback()])
        with pytest.raises(LoritaError, match="compose inside model_init instead .* and leave out LoritaCallback"):
            built.train()  # the Trainer builds a new, plain model in train()
    for depth in (1, 10**6):  # refused when made (a huge one was refused only inside Trainer(...))
        with pytest.raises(LoritaError, match="depth must be an integer from 2 to 64"):
            lorita.hf.LoritaCallback(depth=depth)
    with pytest.raises(LoritaError, match="init must be one of"):
        lorita.hf.LoritaCallback(init="zeros")
    with pytest.raises(LoritaError, match='init_scale scales .* not init="preserve"'):  # the callback's default init
        lorita.hf.LoritaCallback(init_scale=0.5)


def tiny_llama():
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


class ConvNet(nn.Module):
    """A plain nn.Module the Trainer trains: a Conv2d and a Linear, the loss in its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, pixel_values, labels=None):
        logits = self.head(torch.relu(self.conv(pixel_values)).flatten(1))
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def images(n=12):
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": x, "labels": int(y)}
            for x, y in zip(torch.randn(n, 2, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g))]


class MergedAtStart(transformers.TrainerCallback):
    """Records the merged weights of the model as train() begins (after a resume has loaded the checkpoint)."""

    def __init__(self):
        self.weights = {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.weights = {k: v.detach().clone() for k, v in lorita.merge(model).state_dict().items()}


@pytest.mark.parametrize("make, rows, composed", [(tiny_llama, data, lorita.ComposedLinear),
                                                  (ConvNet, images, lorita.ComposedConv2d)])
def test_resume_of_linear_and_conv2d_layers_gives_every_checkpoint_weight_back(tmp_path, make, rows, composed):
    for steps in (3, 5):  # the first run writes checkpoint-3, the second resumes from it
        torch.manual_seed(steps)  # the resumed run starts from other weights: only the checkpoint can give them
        model, seen = make(), MergedAtStart()
        run = transformers.Trainer(model=model, args=args(tmp_path, steps=steps), train_dataset=rows(),
                                   callbacks=[lorita.hf.LoritaCallback(depth=2), seen])
        assert any(isinstance(m, composed) for m in model.modules())
        run.train(resume_from_checkpoint=None if steps == 3 else str(tmp_path / "checkpoint-3"))
    saved = load_file(str(tmp_path / "checkpoint-3" / "model.safetensors"))
    assert set(saved) == set(seen.weights)
    for key, weight in saved.items():  # every weight, so a transposed or reshaped load of any layer fails here
        torch.testing.assert_close(seen.weights[key], weight, atol=1e-5, rtol=1e-5)
    assert run.state.global_step == 5


def test_load_best_model_at_end_and_a_second_train_keep_the_model_composed(tmp_path):
    _, model = tiny_gpt2()
    callback = lorita.hf.LoritaCallback(depth=2)
    settings = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True, max_steps=4,
                    per_device_train_batch_size=4, save_steps=2, eval_strategy="steps", eval_steps=2,
                    load_best_model_at_end=True, metric_for_best_model="loss", learning_rate=5e-2,
                    weight_decay=0.1, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        run = transformers.Trainer(model=model, args=transformers.TrainingArguments(**settings),
                                   train_dataset=data(), eval_dataset=data(4), callbacks=[callback])
    run.train()
    best = load_file(os.path.join(run.state.best_model_checkpoint, "model.safetensors"))
    merged = lorita.merge(run.model).state_dict()
    for key, weight in best.items():
        torch.testing.assert_close(merged[key], weight, atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, COMPOSED_TYPES) for m in run.model.modules())
    assert callback.recomposed  # split again from the best checkpoint: their moments go at the next train()
    run.train()  # again, over the same factors (and the best checkpoint loaded again at its end)
    assert run.state.global_step == 4 and any(isinstance(m, COMPOSED_TYPES) for m in run.model.modules())
    pickle.loads(pickle.dumps(run.model))  # torch.save(model) pickles it: no local function in its hooks


class Poison(transformers.TrainerCallback):
    """Sets one factor of GPT-2's first MLP to NaN at the end of step ``step``: a run that diverged."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == self.step:
            with torch.no_grad():
                model.transformer.h[0].mlp.c_fc.factors[0].fill_(float("nan"))


def test_a_diverged_run_stops_before_it_writes_a_checkpoint(tmp_path):
    _, model = tiny_gpt2()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        run = transformers.Trainer(model=model, args=args(tmp_path, steps=4), train_dataset=data(),
                                   callbacks=[lorita.hf.LoritaCallback(depth=2), Poison(2)])
    with pytest.raises(LoritaError, match=r"diverged before the checkpoint of step 3, which is not written: layer "
                                          r"'transformer\.h\.0\.[a-z_.]+' has NaN in its (factors|bias)"):
        run.train()
    assert not (tmp_path / "checkpoint-3").exists()  # (it held a config and no weights, which resume then picked)


def test_frozen_layers_stay_plain_and_init_scale_reaches_compose(tmp_path):
    model = tiny_llama()
    for p in model.model.layers[0].self_attn.parameters():
        p.requires_grad_(False)
    with pytest.warns(LoritaWarning, match=r"left 4 frozen layer\(s\) plain.*self_attn\.q_proj"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="4 composed layer.* start with a product")  # init_scale 0.5: so
        transformers.Trainer(model=model, args=args(tmp_path), train_dataset=data(),
                             callbacks=[lorita.hf.LoritaCallback(depth=2, init="default", init_scale=0.5)])
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert all(type(getattr(attention, n)) is nn.Linear for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert not attention.q_proj.weight.requires_grad
    assert isinstance(mlp.up_proj, lorita.ComposedLinear) and isinstance(model.lm_head, lorita.ComposedLinear)
    original = tiny_llama().model.layers[0].mlp.up_proj.weight  # the same seed: the weights it started from
    with torch.no_grad():
        ratio = float(torch.linalg.matrix_norm(mlp.up_proj.weight) / torch.linalg.matrix_norm(original))
    assert ratio == pytest.approx(0.5, rel=1e-4)
    model = tiny_llama().requires_grad_(False)
    with pytest.raises(LoritaError, match="every layer LoritaCallback would compose is frozen"):
        transformers.Trainer(model=model, args=args(tmp_path), callbacks=[lorita.hf.LoritaCallback(depth=2)])


def test_a_callback_added_after_the_trainer_is_built_is_refused(tmp_path):
    _, model = tiny_gpt2()
    run = transformers.Trainer(model=model, args=args(tmp_path), train_dataset=data())
    run.add_callback(lorita.hf.LoritaCallback(depth=2))
    with pytest.raises(LoritaError, match=r"must be given to Trainer\(\.\.\., callbacks=\[LoritaCallback"):
        run.train()


def test_without_transformers_the_callback_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "lorita.hf_trainer", raising=False)
    with pytest.raises(LoritaError, match=r"needs transformers .*pip install transformers"):
        lorita.hf.LoritaCallback  # noqa: B018
    with pytest.raises(LoritaError, match=r"needs transformers"):  # an AttributeError would be a bare ImportError
        from lorita.hf import LoritaCallback  # noqa: F401


def test_a_diverged_run_under_save_strategy_best_writes_no_checkpoint(tmp_path):
    _, model = tiny_gpt2()
    settings = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True, max_steps=3,
                    per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.1, seed=0,
                    eval_strategy="steps", eval_steps=2, save_strategy="best", metric_for_best_model="const")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.compose left")
        run = transformers.Trainer(model=model, args=transformers.TrainingArguments(**settings), train_dataset=data(),
                                   eval_dataset=data(4), compute_metrics=lambda p: {"const": 1.0},
                                   callbacks=[lorita.hf.LoritaCallback(depth=2), Poison(1)])
    with pytest.raises(LoritaError, match="diverged before the checkpoint of step 2, which is not written"):
        run.train()  # the Trainer decides to save after evaluating: the check runs at the evaluation
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())


class Branchy(nn.Module):
    """Reads qkv's weight only in a branch it does not take (timm's BEiT pattern): reading the source leaves qkv
    plain, a forward pass on an example input composes it."""

    def __init__(self):
        super().__init__()
        self.fused, self.qkv, self.mid, self.out = False, nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, pixel_values, labels=None):
        x = pixel_values
        h = nn.functional.linear(x, self.qkv.weight, self.qkv.bias) if self.fused else self.qkv(x)
        logits = self.out(self.mid(h))
        return logits if labels is None else {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_with_a_frozen_layer_the_example_input_still_decides_which_layers_are_read(tmp_path):
    model = Branchy()
    model.mid.requires_grad_(False)
    with pytest.warns(LoritaWarning, match=r"left 1 frozen layer\(s\) plain.*: mid"):
        transformers.Trainer(model=model, args=args(tmp_path), train_dataset=None,
                             callbacks=[lorita.hf.LoritaCallback(depth=2, example_input=torch.randn(3, 8))])
    assert isinstance(model.qkv, lorita.ComposedLinear)  # (left plain: the source reading took it for read)
    assert type(model.mid) is nn.Linear and isinstance(model.out, lorita.ComposedLinear)


def test_an_example_input_of_named_arguments_decides_which_layers_are_read(tmp_path):
    model = Branchy()  # a batch as the Trainer passes it: keyword arguments, labels first
    batch = {"labels": torch.zeros(3, dtype=torch.long), "pixel_values": torch.randn(3, 8)}
    transformers.Trainer(model=model, args=args(tmp_path), train_dataset=None,
                         callbacks=[lorita.hf.LoritaCallback(depth=2, example_input=batch)])
    assert all(isinstance(layer, lorita.ComposedLinear) for layer in (model.qkv, model.mid, model.out))
