"""LoRITa inside transformers' Trainer: ``lorita.hf.LoritaCallback`` on a tiny GPT-2 (CPU, seconds).

The callback composes the model before the optimizer exists, the optimizer decays the
factors, checkpoints and the final model are written merged (the plain GPT-2 loads them
with no missing or unexpected keys, and its outputs are the merged composed model's:
compared exactly, since both hold the same float32 tensors), and a run resumed from a
checkpoint is composed again from the merged weights (their product equals the
checkpoint's weights up to float32 rounding of the balanced split: 1e-5).
"""

import os
import warnings

import pytest
import torch
from safetensors import safe_open

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
