"""Benchmark: dataset loading and full-ranking evaluation speed; prints a markdown table.

    .venv/bin/python bench/load_data.py [--data ../shared/data] [--repeat 3]

Times ``load_dataset`` on Gowalla, Yelp2018 and CiteULike (DirectSpec split) from the shared
data folder, the synthetic default (generate + write + load), and ``evaluate()`` /
``evaluate_popularity()`` on Gowalla-size random embeddings (29,858 x 40,981, d = 64) with
Gowalla's real train/test matrices when present (random ones of the same size otherwise).
Each row is the median of ``--repeat`` runs after the imports are warm: wall-clock seconds and
CPU seconds of this process (the latter is robust to other jobs sharing the cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import synthetic  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.evaluate import evaluate, evaluate_popularity  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> tuple[str, object]:
    """ "wall / cpu" median seconds over ``repeat`` calls, and the last result. CPU time (all
    threads of this process) shows the cost even when other jobs share the cores."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return f"{statistics.median(walls):.2f} / {statistics.median(cpus):.2f}", result


def gowalla_matrices(data: Path) -> tuple[sp.csr_matrix, sp.csr_matrix, str]:
    if (data / "gowalla").is_dir():
        ds = load_dataset(data / "gowalla")
        return ds.train_matrix(), ds.test_matrix(), "Gowalla train/test"
    rng = np.random.default_rng(0)
    m, n = 29_858, 40_981
    train = sp.random(m, n, density=810_128 / (m * n), random_state=rng, format="csr")
    test = sp.random(m, n, density=217_242 / (m * n), random_state=rng, format="csr")
    return train, test, "random train/test, Gowalla density"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-users", type=int, default=1024)
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, str]] = []
    for name in ("gowalla", "yelp2018", "citeulike-directspec"):
        folder = args.data / name
        if not folder.is_dir():
            rows.append((f"load_dataset {name}", "missing", str(folder)))
            continue
        secs, ds = timed(lambda folder=folder: load_dataset(folder), args.repeat)
        detail = (
            f"{ds.n_users:,} users, {ds.n_items:,} items, {ds.n_train:,} train, {ds.n_test:,} test"
        )
        rows.append((f"load_dataset {name}", secs, detail))

    with tempfile.TemporaryDirectory() as tmp:
        secs, path = timed(lambda: synthetic.write_dataset(Path(tmp), force=True), args.repeat)
        rows.append(("synthetic default: generate + write", secs, "3,000 x 2,000"))
        secs, ds = timed(lambda: load_dataset(path), args.repeat)
        rows.append(
            (
                "load_dataset synthetic default",
                secs,
                f"{ds.n_train + ds.n_test:,} rows, timestamp holdout",
            )
        )

    train, test, source = gowalla_matrices(args.data)
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(train.shape[0], 64, generator=gen)
    item_emb = torch.randn(train.shape[1], 64, generator=gen)
    secs, res = timed(
        lambda: evaluate(
            user_emb, item_emb, train, test, ks=(10, 20), batch_users=args.batch_users
        ),
        args.repeat,
    )
    rows.append(
        (
            f"evaluate() d=64, ks=(10,20), batch {args.batch_users}",
            secs,
            f"{res['n_users']:,} users x {train.shape[1]:,} items, {source}",
        )
    )
    secs, res = timed(lambda: evaluate_popularity(train, test, ks=(10, 20)), args.repeat)
    rows.append(("evaluate_popularity()", secs, f"Recall@20 {res['recall@20']:.4f} ({source})"))

    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(
        f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads),"
        f" numpy {np.__version__}; median of {args.repeat} runs; load average at the end"
        f" {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| step | wall / CPU seconds | what |")
    print("|---|---:|---|")
    for step, secs_text, detail in rows:
        print(f"| {step} | {secs_text} | {detail} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
