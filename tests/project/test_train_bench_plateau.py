"""bench/train_bench.py --plateau and checkpoints: the plateau row's test scores are those of
the last validation gain's embeddings (checked against numpy), and a run cut off after epoch 2
of 4 and resumed records the same row as the uninterrupted run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.config import TrainConfig
from trainer.data import Dataset, holdout_split, load_dataset
from trainer.synthetic import write_dataset
from trainer.train import fit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import train_bench  # noqa: E402  (bench/ scripts are not a package)

SMALL = ["--set", "dim=16", "batch_size=64", "seed=3"]
# differ between two runs of the same thing (clock, machine load, the command line)
TIMING = {
    "wall_seconds",
    "wall_seconds_this_process",
    "seconds_per_epoch",
    "started",
    "loadavg_before",
    "loadavg_after",
    "peak_rss_mib",
    "command",
    "resumed_from",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plateau-data")
    write_dataset(out, n_users=120, n_items=80, seed=4)
    return out


def rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


def numpy_recall_at_20(users: np.ndarray, items: np.ndarray, ds: Dataset) -> float:
    """Mean over users with test pairs of |top-20 (training items masked) & test| / |test|."""
    scores = users @ items.T
    scores[ds.train_users, ds.train_items] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    recalls = []
    for u in np.unique(ds.test_users):
        test = set(ds.test_items[ds.test_users == u].tolist())
        recalls.append(len(test & set(top[u].tolist())) / len(test))
    return float(np.mean(recalls))


def test_a_plateau_row_scores_the_last_gain_on_test(data_dir, tmp_path):
    out = tmp_path / "rows.json"
    args = ["--data", str(data_dir), "--method", "MF-BPR", "--label", "plateau"]
    # a tolerance above any gain: epoch 1 stays the best, 2 more evaluations end the run
    plateau = ["--epochs", "10", "--eval-every", "1", "--plateau", "2"]
    assert (
        train_bench.main([*args, *plateau, "--plateau-tolerance", "0.9", *SMALL, "--out", str(out)])
        == 0
    )
    [row] = rows(out)
    assert (row["epochs"], row["best_epoch"], row["stopped_early"]) == (3, 1, True)
    assert row["plateau"]["reached"] and row["plateau"]["plateau_epoch"] == 1
    assert row["plateau"]["tolerance"] == 0.9 and row["plateau"]["patience"] == 2
    assert [(p["epoch"], p["split"]) for p in row["curve"]] == [
        (e, "validation") for e in (1, 2, 3)
    ]
    assert row["config"]["early_stop_patience"] == 2 and row["config"]["val_fraction"] == 0.1

    ds = load_dataset(data_dir)
    held_out = ds.n_train - holdout_split(ds, 0.1, 3).n_train
    assert (
        f"{held_out} pairs, trained on the other {ds.n_train - held_out}"
        in (row["plateau"]["validation"])
    )
    # epoch 1's embeddings, fitted on the training pairs less the validation share
    cfg = TrainConfig.defaults(
        "bpr", "mf", epochs=1, eval_every=1, early_stop_patience=2, dim=16, batch_size=64, seed=3
    )
    first = fit(ds, cfg, progress_bar=False)
    want = numpy_recall_at_20(first.user_emb.astype(np.float64), first.item_emb, ds)
    assert row["recall@20"] == pytest.approx(want, abs=1e-6)
    assert row["curve"][0]["recall@20"] != pytest.approx(want)  # that one is validation


class CutOff(Exception):
    """Stands for the process being killed."""


def test_a_run_cut_off_after_epoch_2_and_resumed_records_the_uninterrupted_row(
    data_dir, tmp_path, monkeypatch
):
    args = [
        "--data",
        str(data_dir),
        "--method",
        "LightGCN-DirectSpec+",
        "--epochs",
        "4",
        "--eval-every",
        "1",
        "--plateau",
        "3",
        "--plateau-tolerance",
        "0",
        *SMALL,
        "n_layers=2",
        "sub_batches=2",
    ]
    whole_out = tmp_path / "whole.json"
    assert train_bench.main([*args, "--out", str(whole_out)]) == 0

    out, ckpt = tmp_path / "rows.json", tmp_path / "ckpt"
    resumable = [*args, "--out", str(out), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]
    real_printer = train_bench.progress_printer

    def cut_after_epoch_2(label):
        printer = real_printer(label)

        def progress(info):
            printer(info)
            if info["epoch"] == 2:  # the epoch-2 checkpoint is written before this is called
                raise CutOff

        return progress

    monkeypatch.setattr(train_bench, "progress_printer", cut_after_epoch_2)
    with pytest.raises(CutOff):
        train_bench.main(resumable)
    assert not out.exists()
    monkeypatch.setattr(train_bench, "progress_printer", real_printer)
    assert train_bench.main([*resumable, "--resume"]) == 0

    marks = json.loads((ckpt / "wall.json").read_text())
    assert set(marks) == {"1", "2", "3", "4"}
    [whole], [resumed] = rows(whole_out), rows(out)
    assert resumed["resumed_from"] == 2 and whole["resumed_from"] is None
    # the wall time and start of the whole run, the cut part included
    assert resumed["started"] == marks["1"]["started"] == marks["4"]["started"]
    assert resumed["wall_seconds"] == pytest.approx(
        marks["2"]["wall_seconds"] + resumed["wall_seconds_this_process"]
    )
    assert resumed["wall_seconds"] > resumed["wall_seconds_this_process"] > 0
    assert resumed["epochs"] == 4 and len(resumed["curve"]) == 4

    def same(row):
        kept = {k: v for k, v in row.items() if k not in TIMING}
        kept["curve"] = [{k: v for k, v in p.items() if k != "seconds"} for p in row["curve"]]
        return kept

    assert same(resumed) == same(whole)


def test_a_resume_without_the_wall_marks_says_its_wall_time_is_partial(
    data_dir, tmp_path, monkeypatch
):
    out, ckpt = tmp_path / "rows.json", tmp_path / "ckpt"
    args = ["--data", str(data_dir), "--method", "MF-BPR", "--epochs", "2", *SMALL]
    args += ["--out", str(out), "--checkpoint-dir", str(ckpt)]
    real_printer = train_bench.progress_printer

    def cut_after_epoch_1(label):
        def progress(info):
            raise CutOff

        return progress

    monkeypatch.setattr(train_bench, "progress_printer", cut_after_epoch_1)
    with pytest.raises(CutOff):
        train_bench.main(args)
    (ckpt / "wall.json").unlink()  # e.g. a checkpoint written by an older train_bench
    monkeypatch.setattr(train_bench, "progress_printer", real_printer)
    assert train_bench.main([*args, "--resume"]) == 0
    [row] = rows(out)
    assert row["resumed_from"] == 1
    assert row["wall_note"] == "wall_seconds: since the resume at epoch 1 only"
    assert row["wall_seconds"] == row["wall_seconds_this_process"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--resume"], "--resume needs --checkpoint-dir"),
        (["--plateau", "0"], "--plateau 0: expected >= 1"),
        (["--checkpoint-dir", "x", "--checkpoint-every", "0"], "--checkpoint-every 0"),
    ],
)
def test_bad_plateau_or_checkpoint_options_exit_2(data_dir, capsys, extra, fragment):
    with pytest.raises(SystemExit) as exc:
        train_bench.main(["--data", str(data_dir), "--method", "MF-BPR", *extra])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err
