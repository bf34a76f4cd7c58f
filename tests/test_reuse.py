"""lorita.runs.reuse: an earlier training run is taken only when it is exactly the run asked for, and lorita's."""

import dataclasses

import torch

from lorita.runs.config import ComposeSpec, DataSpec, ModelSpec, RunConfig
from lorita.runs.folder import write_json
from lorita.runs.reuse import RUN_FILES, reusable, reused_run
from lorita.serialization import save
from lorita.train import TrainConfig

CONFIG = RunConfig(ModelSpec("fcn", {"width": 8}, {"num_classes": 10, "in_channels": 1, "image_size": 8}),
                   DataSpec("digits"), ComposeSpec(depth=2), TrainConfig(epochs=2, device="cpu"))


def _run(folder, config=CONFIG):
    folder.mkdir(parents=True)
    write_json(folder / "config.json", config.to_dict())
    write_json(folder / "results.json", {"command": "train"})
    write_json(folder / "spectrum.json", {"layers": {}})
    (folder / "model.lorita").write_bytes(b"")
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    return folder


def test_only_the_same_config_in_a_folder_of_lorita_s_own_is_reusable(tmp_path):
    run = _run(tmp_path / "depth2")
    assert reusable(run, CONFIG)
    other = dataclasses.replace(CONFIG, train=TrainConfig(epochs=2, device="cpu", weight_decay=0.01))
    assert not reusable(run, other)  # another recipe: trained anew
    (tmp_path / "link").symlink_to(run)
    assert not reusable(tmp_path / "link", CONFIG)  # never through a link
    (run / "notes.txt").write_text("mine")
    assert not reusable(run, CONFIG)  # something lorita did not write
    (run / "notes.txt").unlink()
    (run / "spectrum.json").unlink()
    assert not reusable(run, CONFIG)  # unfinished: a run file missing


def test_a_plain_training_is_the_same_run_whatever_its_factors_would_start_as(tmp_path):
    """At depth 1 nothing is composed: a training with another init, init scale, factor side or mode is the same
    run (its weights equal), so it is reused; at depth 2 it is not."""
    from lorita.runs.train import train_run
    from lorita.data.datasets import load_dataset
    plain = dataclasses.replace(CONFIG, compose=ComposeSpec(depth=1), train=TrainConfig(epochs=1, device="cpu"))
    scaled = dataclasses.replace(plain, compose=ComposeSpec(depth=1, init="default", init_scale=0.5,
                                                            factor_side="smaller", mode="fused"))
    data = load_dataset("digits")
    one, two = (train_run(tmp_path / name, config, data, progress=False).model.state_dict()
                for name, config in (("a", plain), ("b", scaled)))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert reusable(tmp_path / "a", scaled) and reusable(tmp_path / "b", plain)
    deep = dataclasses.replace(CONFIG, compose=dataclasses.replace(CONFIG.compose, init_scale=0.5))
    assert not reusable(_run(tmp_path / "depth2"), deep)  # a LoRITa training's factors start otherwise


def test_nothing_is_written_when_nothing_is_reused(tmp_path):
    _run(tmp_path / "earlier" / "depth2", dataclasses.replace(CONFIG, compose=ComposeSpec(depth=3)))
    out = tmp_path / "new" / "depth2"
    assert reused_run(tmp_path / "earlier", out, CONFIG) is None and not out.exists()


def test_a_run_of_the_same_config_is_found_under_another_name(tmp_path):
    # The base experiment's plain model (depth1) is exactly a later setting's target model (depth1-target).
    _run(tmp_path / "earlier" / "depth2", dataclasses.replace(CONFIG, compose=ComposeSpec(depth=3)))
    _run(tmp_path / "earlier" / "depth1")
    save(CONFIG.model.build(), tmp_path / "earlier" / "depth1" / "model.lorita")
    out = tmp_path / "new" / "depth1-target"
    run = reused_run(tmp_path / "earlier", out, CONFIG)
    assert run is not None and run.folder == out
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert (out / "config.json").read_bytes() == (tmp_path / "earlier" / "depth1" / "config.json").read_bytes()


def test_a_training_s_data_folder_is_compared_by_the_files_read_and_a_relative_one_never_matches(tmp_path,
                                                                                                  monkeypatch):
    """A data folder named another way (a link, '~') is the same run; trainings from before lorita recorded the
    folder whole hold it as given ("data"): where it was read from is not known, so they are trained again rather
    than risk taking a training of other data."""
    from test_data import make_idx_folder
    data = make_idx_folder(tmp_path / "data", gz=False)
    make_idx_folder(tmp_path / "elsewhere" / "data", gz=False)
    (tmp_path / "link").symlink_to(data)
    run = _run(tmp_path / "depth2", dataclasses.replace(CONFIG, dataset=DataSpec("mnist", str(tmp_path / "link"))))
    assert reusable(run, dataclasses.replace(CONFIG, dataset=DataSpec("mnist", str(data))))
    assert not reusable(run, dataclasses.replace(CONFIG, dataset=DataSpec("mnist", str(tmp_path / "elsewhere" /
                                                                                       "data"))))
    assert not reusable(run, dataclasses.replace(CONFIG, dataset=DataSpec("mnist", str(data), seed=1)))
    old = _run(tmp_path / "old" / "depth2", dataclasses.replace(CONFIG, dataset=DataSpec("mnist", "data")))
    monkeypatch.chdir(tmp_path)  # "data" names these very files from here, but nothing says it did then
    assert not reusable(old, dataclasses.replace(CONFIG, dataset=DataSpec("mnist", str(data))))
