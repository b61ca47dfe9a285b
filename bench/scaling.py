"""How training cost grows with the data: seconds per epoch and peak memory of MF and LightGCN
training on synthetic data of 0.1M to 10M interactions.

Each (size, method) runs in a fresh process, so that its peak resident memory (``ru_maxrss``)
is its own: the process builds the dataset, records its resident memory, times a number of
fit()'s own training steps (bench/speed.py's ``time_epoch``: sampler, row catch-up, loss,
optimiser; no evaluation), scales them to an epoch, and reports the peak. Rows go to
``docs/results/scaling.json``; ``bench/report.py`` renders the table and, with ``--plots``,
docs/img/scaling.png.

The data: trainer.synthetic's per-user degree distribution (log-normal, median 30, 10-150
items) with a power-law item popularity (exponent 0.9), items drawn independently per user
(trainer.synthetic's cluster structure costs users x items work to draw, too slow at 10M),
users = interactions / 38, items = 2/3 of the users, as in the embedded default; 20% of the
pairs held out as test, as a real split would be.

    .venv/bin/python bench/scaling.py                       # every size and method
    .venv/bin/python bench/scaling.py --sizes 100000 1000000 --methods MF-DirectSpec+
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)
#: method -> (objective, encoder, overrides, optimiser steps timed)
METHODS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "MF-DirectSpec+": ("directspec+", "mf", {}, 400),
    "MF-BPR": ("bpr", "mf", {}, 150),
    "LightGCN-DirectSpec+": ("directspec+", "lightgcn", {}, 3),
    "LightGCN-BPR": ("bpr", "lightgcn", {}, 4),
}


def synthetic_pairs(n_interactions: int, seed: int = 0) -> Any:
    """A Dataset of about `n_interactions` pairs (see the module docstring)."""
    from trainer.data import Dataset

    rng = np.random.default_rng(seed)
    n_users = max(10, n_interactions // 38)
    n_items = max(10, n_users * 2 // 3)
    counts = np.exp(rng.normal(np.log(30), 0.7, size=n_users))
    counts = np.clip(np.rint(counts), 10, min(150, n_items)).astype(np.int64)
    weight = (rng.permutation(n_items) + 1.0) ** -0.9
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    items = rng.choice(n_items, size=len(users), p=weight / weight.sum())
    test = rng.random(len(users)) < 0.2
    return Dataset.from_pairs(
        f"scaling-{n_interactions}",
        np.array([str(u) for u in range(n_users)]),
        np.array([str(i) for i in range(n_items)]),
        (users[~test], items[~test]),
        (users[test], items[test]),
    )


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(size: int, method: str) -> dict[str, Any]:
    """One case, in this process: the row without the run's metadata."""
    import torch
    from speed import time_epoch  # sibling script

    from contract.config import TrainConfig

    objective, encoder, overrides, steps = METHODS[method]
    t0 = time.perf_counter()
    ds = synthetic_pairs(size)
    built = time.perf_counter() - t0
    rss_data = _rss_mib()
    cfg = TrainConfig.defaults(objective, encoder, num_threads=1, **overrides)
    wall, cpu, timed, per_epoch = time_epoch(ds, cfg, steps)
    return {
        "interactions": size,
        "train_pairs": ds.n_train,
        "users": ds.n_users,
        "items": ds.n_items,
        "method": method,
        "batch_size": cfg.batch_size,
        "sub_batches": cfg.sub_batches,
        "optimizer": cfg.optimizer,
        "steps_per_epoch": per_epoch,
        "steps_timed": timed,
        "seconds_per_epoch": wall,
        "cpu_seconds_per_epoch": cpu,
        "rss_after_data_mib": rss_data,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_seconds": built,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "scaling.json")
    p.add_argument("--case", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:  # the child: one case, its row as JSON on stdout
        print(json.dumps(measure(int(args.case[0]), args.case[1])))
        return 0

    from train_bench import git_commit, machine, record  # sibling script

    given = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["python", "bench/scaling.py", *given])
    for size in args.sizes:
        for method in args.methods:
            load = os.getloadavg()[0]
            proc = subprocess.run(
                [sys.executable, __file__, "--case", str(size), method],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if proc.returncode != 0:
                print(f"{method} @ {size}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row |= {
                "benchmark": "scaling",
                "threads": 1,
                "device": "cpu",
                "loadavg_before": round(load, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
                "machine": machine(),
                "command": command,
                "commit": git_commit(),
            }
            print(
                f"{method} @ {size:,}: {row['seconds_per_epoch']:.2f} s/epoch, peak "
                f"{row['peak_rss_mib']:.0f} MiB (data {row['rss_after_data_mib']:.0f})",
                flush=True,
            )
            record(args.out, row, key=("interactions", "method"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
