"""bench/implicit_bench.py's choices and clock, and how bench/report.py shows its rows; none of
this needs the `implicit` package (the bench extra), which `make test` does not install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import implicit_bench as ib  # noqa: E402  (bench/ scripts are not a package)
import report  # noqa: E402


def test_grid_points_are_every_combination_first_key_slowest():
    assert ib.grid_points({"factors": (64, 128), "lr": (0.1, 0.2, 0.4)}) == [
        {"factors": 64, "lr": 0.1},
        {"factors": 64, "lr": 0.2},
        {"factors": 64, "lr": 0.4},
        {"factors": 128, "lr": 0.1},
        {"factors": 128, "lr": 0.2},
        {"factors": 128, "lr": 0.4},
    ]
    assert len(ib.grid_points(ib.GRIDS["implicit-ALS"])) == 8


def point(recall, iterations, tag):
    return ib.Point({"tag": tag}, iterations, 1.0, recall, 0.0)


def test_choose_takes_the_best_recall_then_fewer_iterations_then_the_first():
    a, b, c, d = (
        point(0.20, 15, "a"),
        point(0.25, 15, "b"),
        point(0.25, 10, "c"),
        point(0.1, 5, "d"),
    )
    assert ib.choose([a, b, c, d]) is c  # 0.25 twice: 10 iterations beat 15
    e = point(0.25, 10, "e")
    assert ib.choose([a, c, e]) is c and ib.choose([a, e, c]) is e  # a full tie: the first
    assert ib.choose([d, a]) is a
    with pytest.raises(ValueError):
        ib.choose([])


def test_train_clock_counts_training_and_never_the_evaluations():
    # start 0; evaluation at 3 (until 10), at 12 (until 20), at 21
    ticks = iter([0.0, 3.0, 10.0, 12.0, 20.0, 21.0])
    clock = ib.TrainClock(now=lambda: next(ticks))
    assert clock.lap() == 3.0
    clock.resume()
    assert clock.lap() == 5.0  # 3 + (12 - 10)
    clock.resume()
    assert clock.lap() == 6.0  # 5 + (21 - 20)


def test_the_bench_names_the_extra_when_implicit_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)  # import implicit -> ImportError
    with pytest.raises(SystemExit) as exc:
        ib.main(["--data", str(ROOT / "missing")])
    assert "pip install -e '.[bench]'" in str(exc.value) and "implicit" in str(exc.value)
    with pytest.raises(SystemExit, match=r"\.\[bench\]"):
        ib.make_model("implicit-ALS", {"factors": 8}, 1, 0)


def implicit_row():
    return {
        "dataset": "gowalla",
        "method": "implicit-ALS",
        "label": "tuned on validation",
        "objective": "als",
        "seconds_fit": 12.4,
        "seconds_tuning": 600.0,
        "recall@20": 0.17,
        "curve": [
            {"epoch": 1, "seconds": 0.8, "split": "test", "recall@20": 0.05},
            {"epoch": 15, "seconds": 12.4, "split": "test", "recall@20": 0.17},
        ],
        "validation": {
            "holdout": "0.1 of each user's training pairs, seed 0",
            "chosen": {
                "params": {"factors": 128, "regularization": 1.0, "alpha": 80.0},
                "iterations": 15,
                "recall": 0.19321,
            },
            "grid": [
                {"params": {"factors": f, "regularization": 1.0, "alpha": 80.0}, "iterations": i}
                for f in (64, 128)
                for i in (10, 15)
            ],
        },
    }


def test_the_chosen_parameters_and_their_cost_are_spelled_out():
    assert report.chosen_line(implicit_row()) == (
        "factors 128, regularization 1, alpha 80, 15 iterations (validation Recall@20 0.1932; "
        "2 fits scored at 2 iteration counts on a holdout of 0.1 of each user's training pairs, "
        "seed 0, 10 min); test: 12 s of training"
    )


def test_recall_vs_time_draws_curves_and_the_filter_and_blend_as_points():
    spectral = {
        "method": "Spectral",
        "label": "default",
        "objective": "spectral",
        "seconds_fit": 30.0,
        "seconds_eval": 16.0,
        "recall@20": 0.1857,
    }
    blend = [
        {"dataset": "gowalla", "split": "validation", "role": "chosen on validation",
         "beta": 1.6, "seconds_stage_total": 300.0, "recall@20": 0.22},
        {"dataset": "gowalla", "split": "test", "role": "test of beta*=1.6 (chosen on validation)",
         "beta": 1.6, "seconds_stage_total": 481.0, "recall@20": 0.1915},
        {"dataset": "gowalla", "split": "test", "role": "reference: filter alone",
         "beta": 0.0, "seconds_stage_total": 481.0, "recall@20": 0.1857},
    ]  # fmt: skip
    series = report.time_series([implicit_row(), spectral], blend)
    assert [(s.seconds, s.recall, s.point) for s in series] == [
        ([0.8, 12.4], [0.05, 0.17], False),
        ([46.0], [0.1857], True),  # fit 30 s + evaluation 16 s
        ([481.0], [0.1915], True),  # the test stage of the β chosen on validation only
    ]
    assert series[0].label == "implicit-ALS (tuned on validation)"
    assert series[1].label == "Spectral filter (GF-CF) (default), fit + evaluation"
    assert "β 1.6 chosen on validation" in series[2].label


def test_grid_narrowing_replaces_only_the_keys_a_method_has():
    grid = ib.GRIDS["implicit-BPR"]
    narrowed = ib.narrowed(grid, ["learning_rate=0.1,0.2", "regularization=0.003", "alpha=5"])
    assert narrowed == {"factors": (128,), "learning_rate": (0.1, 0.2), "regularization": (0.003,)}
    assert ib.GRIDS["implicit-BPR"]["regularization"] == (0.003, 0.01)  # not modified
    with pytest.raises(SystemExit, match="key=value"):
        ib.narrowed(grid, ["learning_rate"])
