"""lorita.runs.budgets: each seed's ratio, start-up gap and plain-model gain at every budget it ran, read from the
runs as recorded."""

import pytest

from lorita.errors import LoritaError
from lorita.report.converged import budgets_markdown
from lorita.runs.budgets import budget_steps, seed_at_budget, seeds_across_budgets
from lorita.runs.paired import seed_ratio


def _run(seed: int, kept: float | None, plain: float, factored: float, gain: float | None = 0.3,
         depth: int = 2) -> dict:
    return {"seed": seed, "target_val_acc": plain - 1.0,
            "plateau": None if gain is None else {"plateau": gain < 0.1, "gain": gain},
            "depths": {"1": {"uncompressed": {"val_acc": plain}}, str(depth): {"uncompressed": {"val_acc": factored}}},
            "columns": {"L": {"lorita": True, "chosen": None if kept is None else {"params_kept": kept}},
                        "A": {"lorita": False, "chosen": {"params_kept": 0.08}},
                        "B": {"lorita": False, "chosen": {"params_kept": 0.05}}}}


def test_one_seed_at_one_budget_is_the_paired_ratio_the_gap_and_the_gain():
    run = _run(0, 0.06, 91.25, 90.5, gain=0.48)
    got = seed_at_budget(run, "L")
    assert got["ratio"] == seed_ratio(run, "L")["ratio"] == pytest.approx(0.06 / 0.05)
    assert got["gap"] == pytest.approx(0.75) and got["plain_gain"] == 0.48
    assert seed_at_budget(_run(0, None, 91.0, 91.5, gain=None), "L") == {"ratio": None, "gap": -0.5,
                                                                        "plain_gain": None, "plain_val": 91.0}
    assert seed_at_budget(_run(0, 0.1, 91.0, 88.0, depth=3), "L", depth=3)["gap"] == pytest.approx(3.0)


def test_seeds_across_budgets_keep_each_seed_s_budgets_and_only_those():
    rows = seeds_across_budgets({24: [_run(1, 0.1, 91.0, 90.0), _run(0, 0.05, 91.0, 90.6)],
                                 12: [_run(0, None, 90.0, 88.0)]}, "L")
    assert [r["seed"] for r in rows] == [0, 1]
    assert sorted(rows[0]["at"]) == [12, 24] and sorted(rows[1]["at"]) == [24]
    assert rows[0]["at"][12]["ratio"] is None and rows[0]["at"][24]["ratio"] == pytest.approx(1.0)
    assert rows[0]["at"][24]["gap"] == pytest.approx(0.4)
    lines = budgets_markdown(rows, "L").splitlines()
    assert lines[0].startswith("Each seed across budgets: ratio, L's params kept at the target")
    assert lines[2] == ("| seed | 12 epochs: ratio | 12 epochs: gap | 12 epochs: plain gain | 24 epochs: ratio "
                        "| 24 epochs: gap | 24 epochs: plain gain |")
    assert lines[4] == "| 0 | missed | 2.00 | +0.30 | 1.000 | 0.40 | +0.30 |"
    assert lines[5] == "| 1 | - | - | - | 2.000 | 1.00 | +0.30 |"


def test_what_cannot_be_read_is_refused_with_what_to_pass():
    with pytest.raises(LoritaError, match="no budgets given"):
        seeds_across_budgets({}, "L")
    with pytest.raises(LoritaError, match="seed 0 appears twice at 12 epochs"):
        seeds_across_budgets({12: [_run(0, 0.1, 91.0, 90.0), _run(0, 0.1, 91.0, 90.0)]}, "L")
    with pytest.raises(LoritaError, match=r"no uncut depth-2 model in the run \(its depths: \['1', '3'\]\)"):
        seed_at_budget(_run(0, 0.1, 91.0, 90.0, depth=3), "L")
    with pytest.raises(LoritaError, match="no column 'M'"):
        seed_at_budget(_run(0, 0.1, 91.0, 90.0), "M")


def test_budget_steps_pair_each_seed_with_itself_from_one_budget_to_the_next():
    rows = seeds_across_budgets({12: [_run(0, 0.1, 90.0, 89.0), _run(1, 0.1, 90.5, 90.0), _run(2, 0.1, 91.0, 90.0)],
                                 24: [_run(0, 0.1, 90.5, 89.75), _run(1, 0.1, 90.5, 89.75)],
                                 48: [_run(2, 0.1, 92.0, 91.0)]}, "L")
    steps = budget_steps(rows)
    assert [(s["from"], s["to"], s["seeds"]) for s in steps] == [(12, 24, [0, 1])]  # no seed ran both 24 and 48
    plain, gap = steps[0]["plain"], steps[0]["gap"]
    assert plain["differences"] == pytest.approx([0.5, 0.0]) and plain["mean"] == pytest.approx(0.25)
    assert gap["differences"] == pytest.approx([-0.25, 0.25]) and gap["mean"] == pytest.approx(0.0)
    half = 12.706 * 0.5 / 2 ** 0.5 / 2 ** 0.5  # t(0.975, 1) x sd / sqrt(n): sd of [0.5, 0] is 0.5 / sqrt(2)
    assert plain["ci"] == pytest.approx([0.25 - half, 0.25 + half], abs=1e-3)
    one = budget_steps(seeds_across_budgets({12: [_run(0, 0.1, 90.0, 89.0)], 24: [_run(0, 0.1, 90.2, 89.0)]}, "L"))
    assert one[0]["plain"]["mean"] == pytest.approx(0.2) and one[0]["plain"]["ci"] is None  # one seed: no interval
    lines = budgets_markdown(rows, "L", steps).splitlines()
    assert lines[-1] == ("- From 12 to 24 epochs (2 seeds): the plain model's best validation accuracy +0.25 "
                         f"[{0.25 - half:+.2f}, {0.25 + half:+.2f}] points, the gap before any cut +0.00 "
                         f"[{-12.706 * 0.25:+.2f}, {12.706 * 0.25:+.2f}] (mean, paired t 95% interval over the seeds "
                         "run at both).")
    assert budgets_markdown(rows, "L").splitlines()[-1].startswith("| 2 |")  # no steps given: the table alone
    assert "paired t 90% interval" in budgets_markdown(rows, "L", budget_steps(rows, level=0.9)).splitlines()[-1]


def test_a_budget_one_seed_ran_is_stepped_over_not_made_the_end_of_every_step():
    """Five seeds at 15 and 60 epochs, one at 30: the step from 15 goes to 60 over every seed (it was split into two
    one-seed steps through 30), and 30's own step says it has no interval."""
    rows = seeds_across_budgets({15: [_run(s, 0.1, 90.0, 89.0) for s in range(3)], 30: [_run(0, 0.1, 90.3, 89.5)],
                                 60: [_run(s, 0.1, 90.5 + s / 10, 89.75) for s in range(3)]}, "L")
    steps = budget_steps(rows)
    assert [(s["from"], s["to"], s["seeds"]) for s in steps] == [(15, 60, [0, 1, 2]), (30, 60, [0])]
    assert steps[0]["plain"]["mean"] == pytest.approx(0.6) and steps[0]["plain"]["ci"] is not None
    assert budgets_markdown(rows, "L", steps).splitlines()[-1] == (
        "- From 30 to 60 epochs (1 seed): the plain model's best validation accuracy +0.20 points, the gap before "
        "any cut -0.05 (one seed: no interval).")
