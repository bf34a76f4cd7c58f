"""Training loop: config checks, learning, metrics.csv, atomic checkpoints, exact resume."""

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lorita.data import Split
from lorita.errors import LoritaError
from lorita.train import TrainConfig, TrainResult, evaluate, train
from lorita.train.distributed import is_main_process
from lorita.train.schedule import EpochSchedule


def blobs(n, seed, classes=3, size=4):
    """Separable synthetic images: class c is a bright square at position c, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randint(0, 60, (n, 1, size, size), generator=g)
    for c in range(classes):
        x[y == c, 0, c, :] += 180
    return Split(x.to(torch.uint8), y, [0.3], [0.3])


def tiny_data(n_train=96, n_val=48):
    return SimpleNamespace(train=blobs(n_train, 1), val=blobs(n_val, 2), test=blobs(n_val, 3), default_augment=False)


def tiny_mlp(bn=True):
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(16, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)]
    return nn.Sequential(*layers)


CFG = dict(epochs=3, batch_size=20, lr=0.1, device="cpu", eval_batch_size=32)


# ---------------------------------------------------------------- config

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"epochs": 99_999_999_999}, "epochs must be an integer from 1 to 100,000, got 99,999,999,999"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"optimizer": "adam"}, r"optimizer must be one of \('sgd', 'adamw'\)"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"lr": math.nan}, "lr must be a finite number"),
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
        ({"label_smoothing": 1}, "label_smoothing must be"),
        ({"plateau_factor": 1.0}, r"plateau_factor must be a number in \(0, 1\)"),
        ({"plateau_patience": -1}, "plateau_patience must be an integer >= 0"),
        ({"warmup_epochs": 5, "epochs": 5}, r"warmup_epochs \(5\) must be smaller than epochs \(5\)"),
        ({"augment": "yes"}, "augment must be True, False or None"),
        ({"device": "gpu7"}, "device 'gpu7' is not a torch device; use 'auto', 'cpu'"),
        ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(LoritaError, match=match):
        TrainConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(epochs=7, optimizer="adamw", lr=1, augment=True)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(LoritaError, match="unknown TrainConfig key.*epoch, lrr; allowed keys are"):
        TrainConfig.from_dict({"epoch": 3, "lrr": 0.1})


def test_schedules():
    cos = EpochSchedule(TrainConfig(epochs=5, lr=1.0, warmup_epochs=1))
    lrs = [cos.lr(e) for e in range(5)]
    assert lrs[0] == 1.0 and lrs[1] == 1.0 and lrs[2] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] > 0
    plateau = EpochSchedule(TrainConfig(epochs=10, lr=1.0, schedule="plateau", plateau_patience=0, plateau_factor=0.5))
    for e, loss in enumerate([1.0, 0.5, 0.6]):
        plateau.step(e, loss)
    assert plateau.lr(3) == 0.5  # one non-improving epoch with patience 0 halves it


# ---------------------------------------------------------------- training

def test_training_improves_val_accuracy_and_writes_metrics(tmp_path):
    data = tiny_data()
    net = tiny_mlp()
    acc_before, _ = evaluate(net, data.val)
    events = []
    result = train(net, data, TrainConfig(**CFG), out_dir=tmp_path, callbacks=[lambda ev, info: events.append(ev)])
    assert isinstance(result, TrainResult)
    assert result.best_val_acc >= 90.0 > acc_before
    assert events == ["train_start", "epoch_end", "epoch_end", "epoch_end", "train_end"]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.final_val_acc == result.history[-1]["val_acc"]
    assert result.seconds == pytest.approx(sum(r["seconds"] for r in result.history))
    # the best state is the best epoch's weights, on CPU, and evaluates to best_val_acc
    assert result.history[result.best_epoch - 1]["val_acc"] == result.best_val_acc
    net.load_state_dict(result.best_state)
    assert evaluate(net, data.val)[0] == result.best_val_acc

    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["val_acc"]) == result.final_val_acc
    assert float(rows[0]["lr"]) == 0.1  # cosine starts at lr


def test_checkpoint_loads_with_weights_only(tmp_path):
    net = tiny_mlp()
    train(net, tiny_data(), TrainConfig(**{**CFG, "epochs": 2, "optimizer": "adamw", "lr": 0.01}), out_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == "lorita.train.checkpoint" and ckpt["epoch"] == 2
    assert ckpt["config"]["optimizer"] == "adamw" and len(ckpt["history"]) == 2
    assert set(ckpt) >= {"model", "optimizer", "schedule", "best_epoch", "best_val_acc", "best_model"}
    for k, v in net.state_dict().items():
        assert torch.equal(ckpt["model"][k], v)


def test_fine_tuning_continues_from_trained_weights():
    data = tiny_data()
    net = tiny_mlp()
    first = train(net, data, TrainConfig(**CFG))
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    second = train(net, data, TrainConfig(**{**CFG, "epochs": 1, "lr": 1e-9}))
    # a vanishing learning rate leaves the trained weights (no re-initialisation)
    assert second.history[0]["val_acc"] >= first.final_val_acc - 5
    assert torch.allclose(net[1].weight, weights["1.weight"], atol=1e-6)


def test_bad_data_and_resume_without_folder():
    with pytest.raises(LoritaError, match=r"data must be a \(train, val\) pair of torch Datasets or DataLoaders"):
        train(tiny_mlp(), [1, 2], TrainConfig(**CFG))
    with pytest.raises(LoritaError, match="resume=True needs out_dir"):
        train(tiny_mlp(), tiny_data(), TrainConfig(**CFG), resume=True)


# ---------------------------------------------------------------- checkpoints and resume

def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")  # part of the file is written, then the disk "fails"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(tiny_mlp(), tiny_data(), TrainConfig(**CFG), out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.csv"]  # no temp file left
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1  # the previous checkpoint is intact


def test_resume_equals_uninterrupted_run(tmp_path):
    # BatchNorm (running stats), dropout (RNG) and momentum (optimizer state) all
    # have to be restored for bitwise equality; augment exercises the data RNG.
    data = tiny_data()
    cfg = TrainConfig(**{**CFG, "augment": True, "schedule": "plateau", "plateau_patience": 0})
    straight = tiny_mlp()
    full = train(straight, data, cfg, out_dir=tmp_path / "straight")

    def stop_after_two(event, info):
        if event == "epoch_end" and info["epoch"] == 2:
            info["stop"] = True

    resumed = tiny_mlp()
    part = train(resumed, data, cfg, out_dir=tmp_path / "resumed", callbacks=[stop_after_two])
    assert len(part.history) == 2
    torch.manual_seed(1234)  # the caller's RNG must not matter
    fresh = tiny_mlp()  # a new process would rebuild the model from scratch
    rest = train(fresh, data, cfg, out_dir=tmp_path / "resumed", resume=True)

    a, b = straight.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["val_loss"] for r in rest.history] == [r["val_loss"] for r in full.history]
    assert rest.best_epoch == full.best_epoch
    for k in a:
        assert torch.equal(rest.best_state[k], full.best_state[k]), k
    with open(tmp_path / "resumed" / "metrics.csv", newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_resume_can_extend_epochs_but_not_change_other_keys(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(**{**CFG, "epochs": 1, "schedule": "constant"})
    train(tiny_mlp(), data, cfg, out_dir=tmp_path)
    changed = TrainConfig(**{**CFG, "epochs": 2, "schedule": "constant", "lr": 0.2, "seed": 3})
    with pytest.raises(LoritaError, match=r"config differs in lr: checkpoint 0.1 vs now 0.2, seed: .*only epochs"):
        train(tiny_mlp(), data, changed, out_dir=tmp_path, resume=True)
    longer = train(tiny_mlp(), data, TrainConfig(**{**CFG, "epochs": 2, "schedule": "constant"}),
                   out_dir=tmp_path, resume=True)
    assert [r["epoch"] for r in longer.history] == [1, 2]
    with pytest.raises(LoritaError, match="already trained 2 epochs, more than epochs=1"):
        train(tiny_mlp(), data, cfg, out_dir=tmp_path, resume=True)
    with pytest.raises(LoritaError, match="no checkpoint at"):
        train(tiny_mlp(), data, cfg, out_dir=tmp_path / "empty", resume=True)


def test_evaluate_restores_mode_and_checks_output(capsys):
    data = tiny_data()
    net = tiny_mlp().train()
    acc, loss = evaluate(net, data.val, batch_size=7)
    assert net.training and 0 <= acc <= 100 and loss > 0
    assert (acc, loss) == pytest.approx(evaluate(net, data.val, batch_size=48), abs=1e-6)  # batch size only moves rounding
    with pytest.raises(LoritaError, match=r"logits of shape \(batch, classes\)"):
        evaluate(nn.Identity(), data.val)
    # progress bars are opt-in and go to stderr, never stdout
    train(net, data, TrainConfig(**{**CFG, "epochs": 1}), progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "epoch" in out.err


def test_the_writing_process_follows_the_world_size_not_rank_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")  # exported by some schedulers and containers, without torchrun
    assert is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: rank 1 of 2 writes nothing
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.delenv("RANK")
    with pytest.raises(LoritaError, match="WORLD_SIZE=2 is set but RANK is not"):
        is_main_process()


def test_resume_with_another_model_says_so_in_one_short_line(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(**{**CFG, "epochs": 1, "schedule": "constant"})
    train(tiny_mlp(), data, cfg, out_dir=tmp_path)
    with pytest.raises(LoritaError, match=r"the checkpoint checkpoint.pt of the run being resumed does not fit this "
                                          r"model \(.*Unexpected key.*\); resume with the run's own model") as refused:
        train(tiny_mlp(bn=False), data, TrainConfig(**{**CFG, "epochs": 2, "schedule": "constant"}), out_dir=tmp_path,
              resume=True)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 500


def test_a_config_changed_after_it_was_made_is_checked_again():
    cfg = TrainConfig(**CFG)
    cfg.epochs = 10**11
    with pytest.raises(LoritaError, match="epochs must be an integer from 1 to 100,000"):
        train(tiny_mlp(), tiny_data(), cfg)
