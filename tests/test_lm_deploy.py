"""A cut language model saved, reloaded with transformers' own class, densified, generating, timed."""

import json
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import lorita  # noqa: E402
from lorita.errors import LoritaError  # noqa: E402
from lorita.int8 import Int8Linear  # noqa: E402
from lorita.lm.cut import count_params, lm_cut  # noqa: E402
from lorita.lm.deploy import densified, generate, load_lm, save_lm, speed  # noqa: E402
from lorita.lm.sources import load_pretrained  # noqa: E402
from lorita.lm.width import prune_width  # noqa: E402
from lorita.lowrank import LowRankLinear  # noqa: E402
from tiny_lm import tiny_llama, write_gguf  # noqa: E402

IDS = torch.randint(0, 261, (2, 20), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    path = write_gguf(tiny_llama(), tmp_path_factory.mktemp("src") / "tiny.gguf")
    model, tokenizer = load_pretrained(path)
    lm_cut(model, IDS, params=0.75)
    return model, tokenizer


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def test_a_cut_model_reloads_exactly_with_its_tokenizer(cut, tmp_path):
    model, tokenizer = cut
    save_lm(model, tokenizer, tmp_path)
    again, words = load_lm(tmp_path)
    assert type(again) is type(model) and again.lm_head.weight is again.model.embed_tokens.weight
    assert {n: m.rank for n, m in again.named_modules() if isinstance(m, LowRankLinear)} == \
        {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    assert count_params(again) == count_params(model)
    assert torch.equal(logits(again), logits(model))
    assert words("hello")["input_ids"] == tokenizer("hello")["input_ids"]


def test_a_model_pruned_to_different_widths_per_block_reloads_exactly(tmp_path):
    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    model, tokenizer = load_pretrained(path)
    with torch.no_grad():  # block 1's last 24 channels carry almost nothing: the global ranking narrows it more
        model.model.layers[1].mlp.down_proj.weight[:, 40:] *= 0.01
    widths = prune_width(model, 0.9, calibration=IDS, allocation="global")["mlp_widths"]
    assert len(set(widths)) > 1
    (tmp_path / "run").mkdir()
    save_lm(model, tokenizer, tmp_path / "run")
    again, _ = load_lm(tmp_path / "run")
    assert [layer.mlp.up_proj.out_features for layer in again.model.layers] == widths
    assert torch.equal(logits(again), logits(model))


def test_a_config_with_widths_that_do_not_fit_the_model_is_refused(tmp_path):
    model, tokenizer = load_pretrained(write_gguf(tiny_llama(), tmp_path / "tiny.gguf"))
    prune_width(model, 0.8, calibration=IDS)
    (tmp_path / "run").mkdir()
    save_lm(model, tokenizer, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "lorita_mlp_widths": [8, 9999]}))
    with pytest.raises(LoritaError, match="MLP widths must be 2 integers, each between 1 and its block's width"):
        load_lm(tmp_path / "run")


def test_a_cut_model_in_int8_reloads_exactly_with_its_tied_head_in_float(cut, tmp_path):
    model, tokenizer = cut
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.quantize left")  # the head tied to the embedding
        small = lorita.quantize(model, "int8").eval()
    int8 = {n for n, m in small.named_modules() if isinstance(m, Int8Linear)}
    assert len(int8) == sum(isinstance(m, torch.nn.Linear) for m in model.modules()) - 1  # all but lm_head
    assert small.lm_head.weight is small.model.embed_tokens.weight
    save_lm(small, tokenizer, tmp_path)
    again, _ = load_lm(tmp_path, tokenizer=False)
    assert {n for n, m in again.named_modules() if isinstance(m, Int8Linear)} == int8
    assert again.lm_head.weight is again.model.embed_tokens.weight
    assert torch.equal(logits(again), logits(small))
    assert (logits(small) - logits(model)).abs().max() < 0.05 * logits(model).abs().max()


def test_a_folder_naming_its_own_code_is_not_trusted(cut, tmp_path):
    model, tokenizer = cut
    save_lm(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "evil-custom"}))
    with pytest.raises(LoritaError, match="does not know model_type 'evil-custom'"):
        load_lm(tmp_path)


def test_a_config_asking_for_more_than_the_saved_weights_is_refused_before_it_is_built(cut, tmp_path, monkeypatch):
    from lorita.lm import deploy
    model, tokenizer = cut
    save_lm(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "vocab_size": 4_000_000,
                                                      "attn_implementation": "kernels-community/flash-attn2"}))
    with monkeypatch.context() as patch:  # checked on the meta device: the real build (load) is never reached
        patch.setattr(deploy, "load", lambda *a, **k: pytest.fail("built before the sizes were checked"))
        with pytest.raises(LoritaError, match=r"the weights do not fit the architecture \(.*\(4000000, "):
            load_lm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "attn_implementation": "kernels-community/x"}))
    again, _ = load_lm(tmp_path)
    assert again.config._attn_implementation == "sdpa"  # never a kernel from the Hub
    assert torch.equal(logits(again), logits(model))


def test_the_densified_copy_computes_the_same_and_saves_with_transformers(cut, tmp_path):
    model, tokenizer = cut
    dense = densified(model)
    assert not any(isinstance(m, LowRankLinear) for m in dense.modules())
    assert torch.allclose(logits(dense), logits(model), atol=1e-5)
    dense.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert torch.equal(logits(again), logits(dense))


def test_the_cut_model_generates_and_is_timed(cut):
    model, tokenizer = cut
    text = generate(model, tokenizer, "hello", new_tokens=5)
    assert isinstance(text, str)
    timing = speed(model, IDS[0], new_tokens=4, repeats=1)
    assert timing.prefill > 0 and timing.decode > 0 and timing.prompt_tokens == 20


@pytest.mark.slow  # tokenizes the whole packaged text (fortunes, Python docs): about 30 s
@pytest.mark.skipif(not Path("/usr/share/games/fortunes").is_dir(), reason="Debian package fortunes not installed")
def test_compress_pretrained_cuts_recovers_and_measures_on_the_same_windows(tmp_path):
    from lorita.lm.pipeline import LMCompression, compare_on_text, compress_pretrained, perplexity_of_text
    from lorita.lm.recover import RecoveryRecipe

    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    how = LMCompression(params=0.8, windows=4, window=32, eval_tokens=256, context=64,
                        recovery=RecoveryRecipe(steps=2, context=32, eval_tokens=64, distill=0.5))
    done = compress_pretrained(path, how)
    results = done.results
    assert results["params"]["kept"] <= 0.8 and results["calibration_tokens"] == 128
    assert set(results["dense"]) == set(results["after_cut"]) == set(results["after_recovery"])
    assert all(results["dense"][k]["tokens"] == results["after_recovery"][k]["tokens"] for k in results["dense"])
    assert results["source"]["kind"] == "gguf" and json.dumps(results)
    assert results["recovery"]["steps"] == 2 and results["compression"]["recovery"]["distill"] == 0.5
    text = tmp_path / "unseen.txt"
    text.write_text("Some English text the model has never seen. " * 20)
    scored = perplexity_of_text(done.model, done.tokenizer, text, context=64)
    assert scored["tokens"] > 100 and scored["ppl"] > 1
    dense, _ = load_pretrained(path)
    both = compare_on_text(done.model, dense, done.tokenizer, text, context=64)
    assert both["ppl"] == scored["ppl"] and both["tokens"] == scored["tokens"] and both["dense_ppl"] != both["ppl"]


def test_a_damaged_config_or_tokenizer_of_a_saved_model_is_named(cut, tmp_path):
    model, tokenizer = cut
    save_lm(model, tokenizer, tmp_path)
    config = (tmp_path / "config.json").read_bytes()
    (tmp_path / "config.json").write_bytes(b"\xff\xfe" + config)
    with pytest.raises(LoritaError, match=r"config.json is not UTF-8 text .*save_lm"):
        load_lm(tmp_path)
    (tmp_path / "config.json").write_bytes(config)
    (tmp_path / "tokenizer.json").write_text("[1, 2]")
    with pytest.raises(LoritaError, match=r"its tokenizer cannot be read"):
        load_lm(tmp_path)
    assert load_lm(tmp_path, tokenizer=False)[1] is None


def test_a_saved_config_holding_infinity_reloads(cut, tmp_path):
    """transformers' own configs can hold Infinity (e.g. Mamba2's time_step_limit), which save_lm writes as is."""
    model, tokenizer = cut
    save_lm(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "time_step_limit": [0.0, float("inf")]}))
    again, _ = load_lm(tmp_path)
    assert torch.equal(logits(again), logits(model))
