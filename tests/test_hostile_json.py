"""Every JSON lorita reads (model descriptions, run files, the run-folder mark, experiment configs,
``--model-arg`` and ``--set`` values) fails the same clear way on text Python's parser chokes on:
an integer past the 4300-digit limit, nesting too deep to parse, bytes that are not UTF-8, and
NaN / Infinity / 1e400 where a number must be finite. Never a raw ValueError or RecursionError.
"""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lorita
from lorita import LoritaError
from lorita.cli import main
from lorita.jsonio import parse, parse_value
from lorita.models import create_model
from lorita.runs import load_spec
from lorita.runs.folder import is_marked, staging_path

TINY = ["--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset", "digits",
        "--epochs", "1", "--batch-size", "256", "--no-progress"]
LONG = "1" * 5000  # past Python's int-digit limit
# text that json.loads refuses with something other than JSONDecodeError, or accepts as a non-finite float
BAD_VALUES = {"long integer": LONG, "deep nesting": "[" * 100000 + "]" * 100000, "NaN": "NaN",
              "Infinity": "-Infinity", "overflowing float": "1e400"}
MESSAGE = r"is not valid JSON \((an integer with more than 4300 digits|nested too deeply|\S+ is not a finite number)"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("json") / "run"
    assert main(["train", *TINY, "--depth", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def cli_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_the_one_reader_names_what_python_cannot_read(case):
    with pytest.raises(LoritaError, match=rf"^where.json {MESSAGE}.*; fix it$"):
        parse('{"version": %s}' % BAD_VALUES[case], "where.json", fix="fix it")
    with pytest.raises(LoritaError, match=r"^where.json is not UTF-8 text"):
        parse(b'{"a": "\xff"}', "where.json")


def test_nan_is_read_only_where_lorita_writes_it():
    assert parse('{"val_loss": NaN}', "results.json", allow_nan=True)["val_loss"] != 0
    with pytest.raises(LoritaError, match="NaN is not a finite number"):
        parse('{"val_loss": NaN}', "spec.json")


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_model_description_past_the_parser(case, tmp_path):
    model = create_model("fcn", width=8, hidden_layers=1)
    path = tmp_path / "m.lorita"
    lorita.save(model, path)
    tensors = load_file(str(path))
    text = json.dumps(lorita.serialization.describe(model)).replace('"version": 1', f'"version": {BAD_VALUES[case]}')
    save_file(tensors, str(path), metadata={"lorita": text})
    with pytest.raises(LoritaError, match=rf"m.lorita: the lorita description {MESSAGE}"):
        lorita.load(path)


def test_run_files_past_the_parser(run, tmp_path, capsys):
    config = (run / "config.json").read_text()
    (run / "config.json").write_text(config.replace('"seed": 0', f'"seed": {LONG}', 1))
    assert "config.json is not valid JSON (an integer with more than 4300 digits" in cli_error(
        ["evaluate", str(run)], capsys)
    assert "config.json is not valid JSON" in cli_error(
        ["compress", str(run), "--energy", "0.9", "--no-progress", "--out", str(tmp_path / "cut")], capsys)
    assert not (tmp_path / "cut").exists() and not staging_path(tmp_path / "cut").exists()
    assert "config.json is not valid JSON" in cli_error(["train", "--from", str(run), "--epochs", "1",
                                                         "--no-progress", "--out", str(tmp_path / "cont")], capsys)
    assert not is_marked(run)  # an unreadable mark is no mark: --overwrite refuses, deletes nothing
    before = sorted(p.name for p in run.iterdir())
    assert "not a lorita run folder" in cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_model_file_in_a_run_past_the_parser(run, capsys):
    path = run / "model.lorita"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        text = f.metadata()["lorita"].replace('"version": 1', f'"version": {LONG}')
    save_file(tensors, str(path), metadata={"lorita": text})
    assert "the lorita description is not valid JSON (an integer with more than 4300 digits" in cli_error(
        ["evaluate", str(run)], capsys)


def test_report_inputs_past_the_parser(run, tmp_path, capsys):
    results = (run / "results.json").read_text()
    (run / "results.json").write_text(results.replace('"depth": 2', f'"depth": {LONG}', 1))
    err = cli_error(["report", str(run), "--out", str(tmp_path / "rep")], capsys)
    assert "results.json is not valid JSON (an integer with more than 4300 digits" in err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_an_experiment_config_past_the_parser(case, tmp_path):
    path = tmp_path / "exp.json"
    path.write_text('{"common": {"model": "fcn", "seeds": [%s]}, "full": {"dataset": "digits"}}' % BAD_VALUES[case])
    with pytest.raises(LoritaError, match=rf"exp.json {MESSAGE}"):
        load_spec(path)


def test_command_line_values_past_the_parser(tmp_path, capsys):
    assert parse_value("relu", "act") == "relu" and parse_value("[1,", "x") == "[1,"  # not JSON: the text itself
    out = tmp_path / "x"
    err = cli_error(["train", *TINY, "--model-arg", f"width={'9' * 5000}", "--out", str(out)], capsys)
    assert "width is not valid JSON (an integer with more than 4300 digits" in err
    assert "nested too deeply" in cli_error(["train", *TINY, "--model-arg", "width=" + "[" * 100000,
                                             "--out", str(out)], capsys)
    assert "NaN is not a finite number" in cli_error(["train", *TINY, "--model-arg", "width=NaN", "--out", str(out)],
                                                     capsys)
    err = cli_error(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--set",
                     f"train.lr={'9' * 5000}", "--out", str(out)], capsys)
    assert "train.lr is not valid JSON (an integer with more than 4300 digits" in err
    assert not out.exists() and not staging_path(out).exists()


def test_a_latency_cache_past_the_parser_is_ignored(tmp_path, caplog):
    from lorita.latency import _load

    path = tmp_path / "cache.json"
    path.write_text('{"seconds": {"a": %s, "b": 0.5, "c": "x", "d": NaN}}' % LONG)
    assert _load(path) == {}  # unreadable: ignored with a warning, measured afresh
    path.write_text('{"seconds": {"b": 0.5, "c": "x", "d": -1}}')
    assert _load(path) == {"b": 0.5}
    assert torch.isfinite(torch.tensor(list(_load(path).values()))).all()


def test_a_json_file_that_is_huge_or_not_a_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import os

    from lorita import jsonio
    sparse = tmp_path / "results.json"
    with open(sparse, "wb") as handle:  # gigabytes on paper, nothing on disk: refused by its size, not read
        handle.truncate(3 << 30)
    with pytest.raises(LoritaError, match=r"results.json is 3221225472 bytes, more than the 256 MiB"):
        jsonio.read(sparse)
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # no writer: reading would wait forever
    with pytest.raises(LoritaError, match=r"config.json is not a regular file"):
        jsonio.read(fifo)
    monkeypatch.setattr(jsonio, "MAX_FILE_BYTES", 4)
    (tmp_path / "small.json").write_text("[1, 2]")
    with pytest.raises(LoritaError, match="more than the 0 MiB"):
        jsonio.read(tmp_path / "small.json")


def test_an_experiment_config_with_a_field_outside_its_sections_or_bad_settings_is_refused(tmp_path):
    from lorita.runs import load_spec

    base = {"common": {"model": "fcn", "dataset": "digits"}, "full": {}, "paper": "a note"}
    path = tmp_path / "config.json"
    for extra, message in (({"depths": [1, 2]}, r"\['depths'\] at the top level is not read: an experiment's fields "
                                                r"go in its 'common', 'full' or 'reduced' section"),
                           ({"settings": {"g1": 3}}, "'settings' must map a setting's name to an object"),
                           ({"format": "lorita.run", "command": "train"}, "is a run folder's config.json")):
        path.write_text(json.dumps({**base, **extra}))
        with pytest.raises(LoritaError, match=message):
            load_spec(path)
    path.write_text(json.dumps({**base, "settings": {"g1": {"depths": [1, 3]}}, "description": "mine",
                                "$schema": "x"}))
    assert load_spec(path).recipe.depths  # notes of the user's own and the known keys are left alone


def test_a_key_written_twice_is_refused_wherever_json_is_read(tmp_path, capsys):
    for text, key in [('{"a": 1, "a": 2}', "a"), ('{"x": {"lr": 0.1, "b": 1, "lr": 0.2}}', "lr")]:
        for allow_nan in (False, True):  # lorita's own result files too
            with pytest.raises(LoritaError, match=rf'^f.json is not valid JSON \(the key "{key}" is written twice'):
                parse(text, "f.json", allow_nan=allow_nan)
    assert parse('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}', "f.json")["b"][1] == {"a": 3}  # nesting is not repeat
    path = tmp_path / "exp.json"
    path.write_text('{"common": {"model": "fcn", "model": "cnn"}, "full": {"dataset": "digits"}}')
    with pytest.raises(LoritaError, match=r'exp.json is not valid JSON \(the key "model" is written twice'):
        load_spec(path)
    out = tmp_path / "x"
    err = cli_error(["train", *TINY, "--model-arg", 'hidden_layers={"a": 1, "a": 2}', "--out", str(out)], capsys)
    assert 'the key "a" is written twice' in err and not out.exists()
