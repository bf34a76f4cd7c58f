"""Naming and loading a pretrained language model: packaged name, .gguf file, Hugging Face folder.

A tiny random Llama written as GGUF (float32, llama.cpp's q/k row order) must load back to the
same function exactly: transformers reads float32 tensors unchanged and undoes the permutation,
so logits compare with zero tolerance.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from lorita.errors import LoritaError  # noqa: E402
from lorita.lm import sources  # noqa: E402
from lorita.lm.sources import load_pretrained, resolve_source, source_from_dict  # noqa: E402
from tiny_lm import hf_folder, tiny_llama, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    model = tiny_llama()
    return model, write_gguf(model, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_gguf_file_loads_the_model_it_was_written_from(gguf_file):
    original, path = gguf_file
    source = resolve_source(str(path))
    assert (source.kind, source.gguf_file) == ("gguf", "tiny.gguf")
    model, tokenizer = load_pretrained(source)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.num_key_value_heads == 2 and model.lm_head.weight is model.model.embed_tokens.weight
    ids = tokenizer("hello there", return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == "hello there"
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)


def test_hf_folder_loads_and_a_recorded_source_resolves_again(gguf_file, tmp_path):
    original, path = gguf_file
    model, tokenizer = load_pretrained(path)
    folder = hf_folder(model, tokenizer, tmp_path / "hf")
    source = resolve_source(folder)
    assert source.kind == "folder" and source_from_dict(json.loads(json.dumps(source.to_dict()))) == source
    again, _ = load_pretrained(source)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, original(ids).logits)


def test_a_folder_asking_for_its_own_code_is_refused_without_running_it(gguf_file, tmp_path):
    model, tokenizer = load_pretrained(gguf_file[1])
    folder = hf_folder(model, tokenizer, tmp_path / "hostile")
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import LlamaForCausalLM"
                                    "\nclass Evil(LlamaForCausalLM):\n    pass\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        loaded, _ = load_pretrained(folder)
        assert type(loaded).__name__ == "LlamaForCausalLM"  # the library's own class, not the folder's
    except LoritaError as err:
        assert "could not load" in str(err)
    assert not marker.exists()


def _edited(gguf_file, folder, **changes):
    model, tokenizer = load_pretrained(gguf_file[1])
    folder = hf_folder(model, tokenizer, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def test_a_folder_naming_an_attention_kernel_on_the_hub_loads_with_built_in_attention(gguf_file, tmp_path):
    """transformers would fetch such a kernel from the Hub and load its native code; lorita's own choice wins."""
    folder = _edited(gguf_file, tmp_path / "kernel", attn_implementation="kernels-community/flash-attn2")
    model, _ = load_pretrained(folder)
    assert model.config._attn_implementation == "sdpa"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_file[0](ids).logits)


def test_an_architecture_without_sdpa_gets_transformers_plain_attention():
    from transformers import AutoModelForCausalLM, GPTNeoConfig
    config = GPTNeoConfig(vocab_size=32, hidden_size=16, num_layers=2, num_heads=2, max_position_embeddings=32,
                          attention_types=[[["global", "local"], 1]], bos_token_id=0, eos_token_id=0)
    model = sources.with_built_in_attention(lambda attention: AutoModelForCausalLM.from_config(
        config, attn_implementation=attention))
    assert type(model).__name__ == "GPTNeoForCausalLM" and model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="not this"):  # any other error is not taken for a missing sdpa
        sources.with_built_in_attention(lambda attention: (_ for _ in ()).throw(ValueError("not this")))


def test_a_config_asking_for_more_than_its_weights_is_refused_before_it_is_built(gguf_file, tmp_path):
    folder = _edited(gguf_file, tmp_path / "bomb", intermediate_size=500_000)
    with pytest.raises(LoritaError, match=r"its config.json describes a model of \d+ MiB, far more than its weight "
                                          r"files \(\d+ bytes\) can hold"):
        load_pretrained(folder)
    folder = _edited(gguf_file, tmp_path / "more-layers", num_hidden_layers=3)  # within the allowance: built, refused
    with pytest.raises(LoritaError, match=r"its weight files lack \d+ of the weights its config.json describes "
                                          r"\(e.g. \['model.layers.2"):
        load_pretrained(folder)


def test_weights_of_other_shapes_than_the_config_describes_are_named_before_loading(gguf_file, tmp_path, capfd):
    """transformers stops on them with a printed table and "look at the above report"."""
    folder = _edited(gguf_file, tmp_path / "wider", intermediate_size=80)
    with pytest.raises(LoritaError, match=r"could not load .*: 6 of its weights do not have the shapes its config.json "
                                          r"describes \(model.layers.0.mlp.down_proj.weight is \(32, 64\) in "
                                          r"model.safetensors, \(32, 80\) in the model; .*its config.json is not"):
        load_pretrained(folder)
    assert "MISMATCH" not in capfd.readouterr().out


def test_a_config_describing_fewer_layers_than_its_weights_is_refused(gguf_file, tmp_path):
    """Such a model would load and run with the files' other layers silently unused."""
    folder = _edited(gguf_file, tmp_path / "fewer-layers", num_hidden_layers=1)
    with pytest.raises(LoritaError, match=r"its weight files hold \d+ weights the model its config.json describes "
                                          r"does not use \(e.g. \['model.layers.1"):
        load_pretrained(folder)


def test_a_model_that_is_not_a_causal_lm_is_named_as_such(gguf_file, tmp_path):
    """A classifier would load as a causal LM whose head its files lack, and be called an incomplete folder."""
    folder = _edited(gguf_file, tmp_path / "classifier", architectures=["LlamaForSequenceClassification"])
    with pytest.raises(LoritaError, match=r"it is a LlamaForSequenceClassification, not a causal language model.*"
                                          r"lorita.compress\(model"):
        load_pretrained(folder)
    base = _edited(gguf_file, tmp_path / "base", architectures=["LlamaModel"])  # a base model's name: it loads
    assert type(load_pretrained(base)[0]).__name__ == "LlamaForCausalLM"


def test_a_folder_without_tokenizer_files_is_named_as_such(gguf_file, tmp_path):
    """For Llama transformers fails there; for GPT-2 it makes an empty tokenizer, which turns every text into no
    tokens (a tiny GPT-2 folder needs no GGUF file)."""
    folder = _edited(gguf_file, tmp_path / "no-tokenizer")
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            path.unlink()
    with pytest.raises(LoritaError, match=r"could not load the tokenizer of .*tokenizer.save_pretrained\(folder"):
        load_pretrained(folder)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(LoritaError, match=r"it holds no tokenizer \(transformers found a vocabulary of 1 token"):
        load_pretrained(tmp_path / "gpt2")


def test_a_damaged_weight_file_is_named_not_a_traceback(gguf_file, tmp_path):
    folder = _edited(gguf_file, tmp_path / "garbage")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(LoritaError, match=r"could not load Hugging Face folder .*: SafetensorError"):
        load_pretrained(folder)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "a file must be a .gguf model"),
    (lambda p: (p / "m.gguf").write_bytes(b"gguf") and p, "no config.json; it holds m.gguf: pass that file"),
])
def test_what_is_not_a_model_is_named(tmp_path, make, message):
    with pytest.raises(LoritaError, match=message):
        resolve_source(make(tmp_path))


def test_a_packaged_model_without_its_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sources.PACKAGED, "ghost-1m", sources.Packaged(
        "lorita_no_such_package", "ghost.gguf", "pip install ghost-llm", "MIT", "a test entry"))
    with pytest.raises(LoritaError, match=r"needs the Python package 'lorita_no_such_package'.*pip install ghost-llm"):
        resolve_source("ghost-1m")


def test_a_missing_extra_is_named(monkeypatch):
    real = sources.importlib.util.find_spec
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(LoritaError, match=r"need gguf: pip install -e '\.\[lm\]' in lorita's clone"):
        sources.require("transformers", "gguf")


def test_a_model_folder_whose_config_cannot_be_read_is_named_as_one(tmp_path, capsys):
    from lorita.cli import main
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert main(["compress", str(tmp_path), "--params", "0.8", "--out", str(tmp_path.parent / "cut")]) == 2
    err = capsys.readouterr().err
    assert "It looks like a Hugging Face model folder, but" in err and "nested too deeply to read" in err


def test_a_gguf_file_whose_metadata_asks_for_far_more_than_it_holds_is_refused_before_it_is_built(gguf_file,
                                                                                                     tmp_path):
    model = gguf_file[0]
    huge = write_gguf(model, tmp_path / "ffn.gguf", ffn=10**8)  # 100 KB describing gigabytes
    with pytest.raises(LoritaError, match=r"its metadata describes a model of \d+ MiB, far more than its weight files"):
        load_pretrained(huge)
    deep = write_gguf(model, tmp_path / "deep.gguf", blocks=10**7)
    with pytest.raises(LoritaError, match=r"asks for 10000000 layers, more than the 1000 lorita builds"):
        load_pretrained(deep)


def test_a_folder_asking_for_millions_of_layers_is_refused_before_any_shell_is_built(gguf_file, tmp_path):
    folder = _edited(gguf_file, tmp_path / "deep", num_hidden_layers=10**7)
    with pytest.raises(LoritaError, match=r"asks for 10000000 layers, more than the 1000 lorita builds"):
        load_pretrained(folder)


def test_a_folder_with_pickled_weights_only_is_refused_unread(gguf_file, tmp_path):
    folder = _edited(gguf_file, tmp_path / "pickled")
    model = load_pretrained(folder)[0]
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(LoritaError, match=r"holds no .safetensors weights \(pytorch_model.bin are pickles, which "
                                          r"lorita does not read\)"):
        load_pretrained(folder)


def test_a_gguf_file_reached_through_a_link_of_another_name_loads_and_resolves_again(gguf_file, tmp_path):
    import shutil

    (tmp_path / "blobs").mkdir()
    (tmp_path / "snapshots").mkdir()
    shutil.copy(gguf_file[1], tmp_path / "blobs" / "0123456789abcdef")  # as the Hugging Face cache keeps files
    (tmp_path / "snapshots" / "mymodel.gguf").symlink_to(tmp_path / "blobs" / "0123456789abcdef")
    source = resolve_source(tmp_path / "snapshots" / "mymodel.gguf")
    assert source.gguf_file == "mymodel.gguf" and source_from_dict(json.loads(json.dumps(source.to_dict()))) == source
    model, _ = load_pretrained(source)
    ids = torch.arange(8).view(1, 8)
    torch.testing.assert_close(model(ids).logits, gguf_file[0](ids).logits, atol=0, rtol=0)


def test_a_text_holding_a_token_past_the_embedding_is_refused_naming_it(gguf_file, tmp_path):
    from lorita.lm.pipeline import perplexity_of_text

    model, tokenizer = load_pretrained(gguf_file[1])  # its tokenizer adds <|endoftext|> at id 261, past 261 rows
    (tmp_path / "t.txt").write_text("hello there <|endoftext|> and more words")
    with pytest.raises(LoritaError, match=r"holds token '<\|endoftext\|>' \(id 261\), past the 261 rows"):
        perplexity_of_text(model, tokenizer, tmp_path / "t.txt", context=8)


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(gguf_file, tmp_path):
    tokenizer = load_pretrained(gguf_file[1])[1]
    config = transformers.LlamaConfig(**{**gguf_file[0].config.to_dict(), "vocab_size": 200})
    small = transformers.LlamaForCausalLM(config)
    folder = hf_folder(small, tokenizer, tmp_path / "small-vocab")
    with pytest.raises(LoritaError, match=r"its tokenizer has 261 tokens but the model's embedding has 200 rows"):
        load_pretrained(folder)


def test_a_custom_model_type_is_refused_without_transformers_advice_to_trust_its_code(gguf_file, tmp_path):
    folder = _edited(gguf_file, tmp_path / "custom", model_type="my-own-llama",
                     auto_map={"AutoConfig": "conf.MyConfig", "AutoModelForCausalLM": "model.Mine"})
    with pytest.raises(LoritaError, match=r"its config names code of its own .*which lorita never runs") as err:
        load_pretrained(folder)
    assert "trust_remote_code" not in str(err.value)


def test_a_recorded_source_that_is_gone_is_named_as_the_recorded_one(tmp_path):
    with pytest.raises(LoritaError, match=r"the recorded source model .*gone.gguf is not there any more"):
        source_from_dict({"kind": "gguf", "folder": str(tmp_path), "gguf_file": "gone.gguf", "text": "x"})


@pytest.mark.parametrize("weight_map", [{"a": "/dev/zero"}, {"a": "../elsewhere.safetensors"},
                                        {"a": "gone.safetensors"}, [], None])
def test_a_shard_index_naming_files_outside_or_missing_is_refused_before_anything_is_read(gguf_file, tmp_path,
                                                                                           weight_map):
    from lorita.lm.sources import source_files

    folder = _edited(gguf_file, tmp_path / "sharded")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for call in (lambda: load_pretrained(folder), lambda: source_files(resolve_source(folder))):
        with pytest.raises(LoritaError, match=r"its weight_map must name the safetensors files beside it"):
            call()


def _short_gpt2(gguf_file, tmp_path, positions=16):
    """A GPT-2 folder whose position table has ``positions`` rows (fewer than every default window), with the tiny
    Llama's tokenizer."""
    tokenizer = load_pretrained(gguf_file[1])[1]
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=262, n_positions=positions)
    torch.manual_seed(0)
    return hf_folder(transformers.GPT2LMHeadModel(config).eval(), tokenizer, tmp_path / "gpt2-short")


def test_a_model_with_fewer_positions_than_the_default_windows_is_cut_in_windows_it_can_read(gguf_file, tmp_path):
    """GPT-2's table of positions ends at n_positions: windows past it were an IndexError inside transformers."""
    from lorita.lm.perplexity import perplexity
    from lorita.lm.pipeline import LMCompression, compare_on_text, compress_pretrained, perplexity_of_text
    from lorita.lm.recover import RecoveryRecipe

    folder, texts = _short_gpt2(gguf_file, tmp_path), tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        (texts / f"{i:02}.txt").write_text(f"Document {i} says hello there, and then some more words. " * 3)
    how = LMCompression(params=0.9, windows=2, eval_tokens=64, texts=(str(texts),),
                        recovery=RecoveryRecipe(steps=1, batch_size=1, eval_tokens=32))
    assert (how.context, how.window, how.recovery.context) == (512, 256, 256)
    done = compress_pretrained(folder, how)
    assert done.results["compression"]["context"] == done.results["compression"]["window"] == 16
    assert done.results["compression"]["recovery"]["context"] == 16 and done.results["calibration_tokens"] == 32
    model, tokenizer = load_pretrained(folder)
    ids = tokenizer("hello there, " * 30, return_tensors="pt")["input_ids"][0]
    (tmp_path / "t.txt").write_text("hello there, " * 30)
    scored = perplexity_of_text(model, tokenizer, tmp_path / "t.txt")
    assert scored == perplexity(model, ids, context=16).to_dict()
    assert compare_on_text(model, model, tokenizer, tmp_path / "t.txt")["ppl"] == scored["ppl"]


def test_recovery_windows_longer_than_the_model_reads_are_refused(gguf_file, tmp_path):
    from lorita.lm.perplexity import perplexity
    from lorita.lm.recover import RecoveryRecipe, train_lm

    model = load_pretrained(_short_gpt2(gguf_file, tmp_path))[0]
    ids = torch.arange(200) % 50
    assert perplexity(model, ids) == perplexity(model, ids, context=16)  # the default: the model's positions
    with pytest.raises(LoritaError, match=r"context=17 is more tokens than the model reads at once \(16"):
        perplexity(model, ids, context=17)
    with pytest.raises(LoritaError, match=r"context must be an integer"):
        perplexity(model, ids, context="600")
    with pytest.raises(LoritaError, match=r"the recovery recipe's context=32 is more tokens than the model reads "
                                          r"at once \(16, its config's positions\): pass the recovery recipe's "
                                          r"context=16"):
        train_lm(model, ids, ids, RecoveryRecipe(steps=1, context=32))


def test_a_budget_that_cuts_nothing_says_so(gguf_file, tmp_path, caplog):
    from lorita.lm.pipeline import LMCompression, compress_pretrained

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        (texts / f"{i:02}.txt").write_text(f"Document {i} says hello there, and then some more words. " * 3)
    how = LMCompression(params=1.0, windows=2, window=32, eval_tokens=64, texts=(str(texts),))  # LoRA recovery
    with caplog.at_level("WARNING", logger="lorita.lm.pipeline"):
        done = compress_pretrained(gguf_file[1], how)
    assert done.results["params"]["kept"] == 1.0 and done.results["after_recovery"] is None
    assert done.how.recovery is None and done.results["compression"]["recovery"] is None
    assert "params=1 keeps the whole model: no layer is below its break-even rank, so nothing was cut and no " \
        "recovery runs" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lorita.lm.pipeline"):  # width: no channel pruned, nothing refitted
        done = compress_pretrained(gguf_file[1], LMCompression(params=1.0, method="width", windows=2, window=32,
                                                               eval_tokens=64, texts=(str(texts),)))
    assert "params=1 keeps the whole model: no MLP channel was pruned, so nothing was cut and no recovery runs" \
        in caplog.text
    assert done.results["refit"] is False and done.results["after_recovery"] is None
    assert done.results["after_cut"] == done.results["dense"]


def test_buffers_older_checkpoints_stored_are_not_weights_the_model_lacks(gguf_file, tmp_path):
    """GPT-2 files converted from old checkpoints hold each block's causal mask (attn.bias, attn.masked_bias)."""
    from safetensors.torch import load_file, save_file

    folder = _short_gpt2(gguf_file, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    tensors["transformer.h.0.attn.bias"] = torch.ones(1, 1, 16, 16, dtype=torch.bool).tril()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    assert type(load_pretrained(folder)[0]).__name__ == "GPT2LMHeadModel"
