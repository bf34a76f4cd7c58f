"""experiments/converged_choose.py: the grid's choices on seed 0, on validation data, ties to the base."""

import importlib.util
import json

import pytest


def _chooser():
    spec = importlib.util.spec_from_file_location("converged_choose", "experiments/converged_choose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setting(root, name, plain_val, ours, alternatives):
    seed = root / name / "seed0"
    (seed / "depth1").mkdir(parents=True)
    (seed / "depth1" / "results.json").write_text(json.dumps({"val_acc": plain_val}))
    columns = {"LoRITa N=2 + FT": {"lorita": True, "chosen": None if ours is None else {"params_kept": ours}}}
    columns.update({label: {"lorita": False, "chosen": None if kept is None else {"params_kept": kept}}
                    for label, kept in alternatives.items()})
    results = {"spec": {"pre_registered": "LoRITa N=2 + FT"},
               "runs": [{"seed": 0, "target_val_acc": 88.0, "columns": columns}]}
    (seed / "results.json").write_text(json.dumps(results))


def test_choices_follow_the_plan_and_ties_go_to_the_base(tmp_path):
    _setting(tmp_path, "base", 89.0, 0.10, {"small dense": 0.20, "Torch-Pruning + FT": 0.40})
    _setting(tmp_path, "g1", 89.0, 0.10, {"small dense": 0.20, "Torch-Pruning + FT": 0.40})  # a tie: the base
    _setting(tmp_path, "g2", 89.0, None, {"small dense": 0.20, "Torch-Pruning + FT": 0.40})  # missed: 100%
    _setting(tmp_path, "p1", 89.5, 0.10, {"small dense": 0.25, "Torch-Pruning + FT": 0.40})
    _setting(tmp_path, "p2", 88.5, 0.10, {"small dense": 0.15, "Torch-Pruning + FT": None})
    _setting(tmp_path, "taylor", 89.0, 0.10, {"small dense": 0.20, "Torch-Pruning + FT": 0.30})
    out = _chooser().choose(tmp_path)
    assert out["choices"] == {"target_plain": "p1", "alternatives": "p2", "torch_pruning_importance": "taylor",
                              "lorita": "base"}
    assert out["not_run"] == ["g3", "g4", "g5", "p3", "p4", "r1"]
    assert out["settings"]["g2"]["pre_registered_kept"] == 1.0
    assert out["settings"]["p2"]["torch_pruning_kept"] == 1.0 and out["settings"]["p2"]["best_alternative"] == "small dense"


def test_a_setting_of_both_sides_is_each_sides_candidate(tmp_path):
    _setting(tmp_path, "base", 89.0, 0.10, {"plain + SVD + FT": 0.20})
    _setting(tmp_path, "g1", 89.0, 0.09, {"plain + SVD + FT": 0.20})
    _setting(tmp_path, "p1", 89.0, 0.10, {"plain + SVD + FT": 0.18})
    _setting(tmp_path, "r1", 89.0, 0.08, {"plain + SVD + FT": 0.19})  # better for LoRITa, not the best for them
    choices = _chooser().choose(tmp_path)["choices"]
    assert (choices["lorita"], choices["alternatives"]) == ("r1", "p1")
    _setting(tmp_path, "r1b", 0, 0, {})  # not a setting of the plan: never read
    assert "r1b" not in _chooser().choose(tmp_path)["settings"]


def test_the_base_run_is_needed(tmp_path):
    with pytest.raises(SystemExit, match=r"no base run in .*: the grid compares against it"):
        _chooser().choose(tmp_path)


@pytest.mark.parametrize("name", ["fcn", "vgg_small"])
def test_the_choices_together_are_one_valid_setting_each_side_from_its_own_choice(name):
    from lorita.runs.experiment import load_spec
    path = f"experiments/converged/{name}.json"
    settings = json.loads(open(path).read())["settings"]
    choices = {"target_plain": "p3", "alternatives": "p2", "torch_pruning_importance": "taylor", "lorita": "g3"}
    together = _chooser().combined(choices, settings)
    assert together == {"plain_train": settings["p2"]["plain_train"], "target_train": settings["p3"]["plain_train"],
                        "prune_importance": "taylor", "init_scale": settings["g3"]["init_scale"]}
    spec = load_spec(path, **together)  # a valid experiment: the runner can run it as a setting
    assert spec.recipe.target_train == settings["p3"]["plain_train"] and spec.columns.prune_importance == "taylor"
    both = _chooser().combined({**choices, "alternatives": "r1", "lorita": "r1", "target_plain": "base"}, settings)
    assert both == {"plain_cut_rule": "loss", "prune_importance": "taylor", "lorita_cut_rule": "loss"}
    with pytest.raises(SystemExit, match="no setting 'g9'"):
        _chooser().combined({**choices, "lorita": "g9"}, settings)
    with pytest.raises(SystemExit, match="changes 'finetune_epochs', which counts for both sides"):
        _chooser().combined({**choices, "lorita": "g3"}, {**settings, "g3": {"finetune_epochs": 3}})


def test_the_command_writes_the_choices_and_names_only_the_configs_settings_not_run(tmp_path, monkeypatch, capsys):
    _setting(tmp_path, "base", 90.0, 0.5, {"small dense": 0.5})
    _setting(tmp_path, "g4", 90.0, 0.4, {"small dense": 0.5})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"settings": {"g4": {"lorita_finetune_epochs": 4}, "p1": {"plain_train": {}}}}))
    out = tmp_path / "grid.json"
    monkeypatch.setattr("sys.argv", ["converged_choose.py", str(tmp_path), "--json", str(out), "--config",
                                     str(config)])
    _chooser().main()
    written = json.loads(out.read_text())
    assert written["not_run"] == ["p1"] and "not run: p1" in capsys.readouterr().out  # g5, p2, ...: not this model's
    assert written["combined"] == {"lorita_finetune_epochs": 4} and written["choices"]["lorita"] == "g4"


@pytest.mark.parametrize("text", ["{", "[1]", '{"settings": []}'])
def test_a_config_that_is_not_a_studys_ends_with_a_message_not_a_traceback(tmp_path, monkeypatch, text):
    config = tmp_path / "config.json"  # read before the runs: there are none here
    config.write_text(text)
    monkeypatch.setattr("sys.argv", ["converged_choose.py", str(tmp_path), "--config", str(config)])
    with pytest.raises(SystemExit, match=r"config\.json"):
        _chooser().main()


def test_json_over_the_config_a_result_or_another_file_is_refused_before_any_work(tmp_path, monkeypatch):
    _setting(tmp_path, "base", 90.0, 0.5, {"small dense": 0.5})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"settings": {}}))
    result = tmp_path / "base" / "seed0" / "results.json"
    before = {path: path.read_bytes() for path in (config, result)}
    for path, message in ((config, "an input of this script"), (result, "an input of this script"),
                          (tmp_path.parent / "new" / "grid.json", "create it first")):
        monkeypatch.setattr("sys.argv", ["converged_choose.py", str(tmp_path), "--config", str(config), "--json",
                                         str(path)])
        with pytest.raises(SystemExit, match=message):
            _chooser().main()
    assert {path: path.read_bytes() for path in before} == before


@pytest.mark.parametrize("damage", ["results", "plain"])
def test_a_damaged_setting_ends_with_a_message_naming_it(tmp_path, damage):
    _setting(tmp_path, "base", 90.0, 0.5, {"small dense": 0.5})
    _setting(tmp_path, "g4", 90.0, 0.4, {"small dense": 0.5})
    path = tmp_path / "g4" / "seed0" / ("results.json" if damage == "results" else "depth1/results.json")
    path.write_text("[]" if damage == "results" else '{"val_acc": ')
    with pytest.raises(SystemExit, match=r"g4.*rerun setting 'g4', or move its folder away"):
        _chooser().choose(tmp_path)
