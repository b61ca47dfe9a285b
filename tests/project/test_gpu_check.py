"""bench/gpu_check.py, the GPU check's measurements, run here on the CPU at a small scale: every
part runs and records what it measured, the training rows are bench/train_bench.py's, and the
epoch budget is the hand-worked one. (On the lent GPU machine bench/gpu_check.sh runs it.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from trainer.data import load_dataset
from trainer.evaluate import evaluate
from trainer.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402  (bench/ scripts are not a package)


@pytest.mark.parametrize(
    ("budget", "per_epoch", "eval_s", "every", "want"),
    [
        (110.0, 1.0, 2.5, 25, 100),  # 110 / (1 + 2.5 / 25) = 100, a multiple of 25
        (120.0, 1.0, 2.5, 25, 100),  # 109 epochs fit, cut to 100 (evaluated last)
        (10.0, 2.0, 0.0, 25, 5),  # fewer than one eval_every: all 5
        (1e6, 1.0, 0.0, 25, 300),  # capped at 300
        (0.5, 1.0, 0.0, 5, 1),  # at least one
    ],
)
def test_epochs_in_budget(budget, per_epoch, eval_s, every, want) -> None:
    assert gpu_check.epochs_in_budget(budget, per_epoch, eval_s, every) == want


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, int]:
    data = tmp_path_factory.mktemp("gpu-check-data")
    write_dataset(data, n_users=200, n_items=150, seed=2)
    out = tmp_path_factory.mktemp("gpu-check-out")
    argv = ["--data", str(data), "--device", "cpu", "--out", str(out), "--scale", "0.02"]
    threads = torch.get_num_threads()  # bench/speed.py's time_epoch sets one thread
    try:
        code = gpu_check.main([*argv, "--items", "5000", "--profile", "always"])
    finally:
        torch.set_num_threads(threads)
    return data, out, code


def test_every_part_runs_and_records(run) -> None:
    data, out, code = run
    assert code == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["parts"]) == ["env", "evaluation", "index", "train", "profile"]
    assert {p["status"] for p in report["parts"].values()} == {"ok"}
    assert report["parts"]["env"]["device"] == "cpu"

    ev = report["parts"]["evaluation"]
    ds = load_dataset(data)
    u, i = gpu_check._gowalla_shaped(ds)
    want = evaluate(u, i, ds.train_matrix(), ds.test_matrix())
    assert ev["recall@20"] == pytest.approx(want["recall@20"], rel=1e-6)
    assert ev["matches_cpu"] and ev["seconds"] > 0 and len(ev["seconds_runs"]) == 3

    index = report["parts"]["index"]
    rows = {r["index"]: r for r in index["rows"]}
    assert index["items"] == 5000
    assert rows["faiss IndexFlatIP (CPU)"]["recall@20"] == 1.0  # exact against exact
    for r in rows.values():
        assert 0 < r["single_p50_ms"] <= r["single_p99_ms"] and r["batch256_qps"] > 0
    assert "not measured" in index["faiss_gpu"]  # no faiss-gpu here: said, not skipped
    assert any(name.startswith("torch matmul+topk on cpu") for name in rows)


def test_training_rows_are_train_bench_rows(run) -> None:
    _, out, _ = run
    report = json.loads((out / "gpu_check.json").read_text())
    rows = {r["method"]: r for r in json.loads((out / "training_gpu.json").read_text())}
    assert set(rows) == {"MF-DirectSpec+", "LightGCN-DirectSpec+", "LightGCN-BPR"}
    for case, row in rows.items():
        part = report["parts"]["train"][case]
        assert row["device"] == "cpu" and row["label"] == "gpu"
        assert row["epochs"] == part["epochs"] >= 1
        assert row["recall@20"] == part["recall@20"] == row["curve"][-1]["recall@20"]
        assert row["config"]["epochs"] == row["epochs"]
        assert row["seconds_per_epoch"] == pytest.approx(part["seconds_per_epoch"])
    assert rows["MF-DirectSpec+"]["config"]["lr"] == 200.0  # preset gowalla-reference


def test_profile_counts_the_profiled_steps(run) -> None:
    _, out, _ = run
    prof = json.loads((out / "gpu_check.json").read_text())["parts"]["profile"]
    mf = prof["MF-DirectSpec+"]
    assert mf["steps"] == 20 and prof["LightGCN-DirectSpec+"]["steps"] == 4
    assert mf["top"] and all(t["self_ms"] >= 0 for t in mf["top"])
    assert mf["sparse_share"] == 0  # MF propagates nothing
    gcn = prof["LightGCN-DirectSpec+"]
    assert 0 < gcn["sparse_share"] <= 1 and gcn["sparse_ms_per_step"] > 0
    table = (out / mf["table"]).read_text()
    assert mf["top"][0]["op"] in table


def test_report_renders_the_check(run) -> None:
    import report as report_module  # bench/report.py

    _, out, _ = run
    got = json.loads((out / "gpu_check.json").read_text())
    text = report_module.render("## GPU\n<!-- gpu_check -->\n", [], gpu_check=got)
    ev = got["parts"]["evaluation"]
    assert f"| {ev['seconds']:.2f} | {ev['seconds_first']:.2f} |" in text
    mf = got["parts"]["train"]["MF-DirectSpec+"]
    assert f"| MF-DirectSpec+ | {mf['seconds_per_epoch']:.3f} | 1.0 | " in text
    for row in got["parts"]["index"]["rows"]:
        assert f"| {row['index']} | {row['single_p50_ms']:.2f} |" in text
    assert "faiss-gpu: not measured" in text
    assert "| profiled | steps |" in text and "| MF-DirectSpec+ | 20 |" in text
    empty = report_module.render("<!-- gpu_check -->\n", [], gpu_check=None)
    assert "Not measured yet" in empty
