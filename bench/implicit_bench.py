"""implicit's ALS and BPR beside specrec's methods: hyper-parameters chosen on validation.

For each method, every point of its grid (GRIDS) is fitted on the training pairs less a seeded
10 % per-user holdout (``trainer.data.holdout_split``, seed 0) and scored on that holdout at
each of its checkpoint iterations; the (parameters, iterations) with the best validation
Recall@20 is refitted on the full training pairs, and the test split is scored at the
checkpoints up to the chosen iterations (the curve; nothing is chosen on it) with the
project's full ranking (``trainer.evaluate.evaluate``: training items masked, Recall@20 in
the LightGCN convention). One row per method goes to ``--out`` (default
docs/results/training.json, bench/train_bench.py's format) with the chosen parameters, the
validation grid and the curve; ``bench/report.py`` puts it in docs/benchmarks.md.

One thread throughout (implicit's OpenMP ``num_threads=1``, BLAS and torch limited to 1);
the curve's seconds are training only (its evaluations excluded). ``--grid`` narrows a
method's grid (``--grid learning_rate=0.1,0.2 regularization=0.003``: values of the keys it
names, for every method run that has them) and ``--checkpoints 100,200`` its validation
checkpoints, where CPU time is short. Needs the bench extra:

    pip install -e '.[bench]'
    .venv/bin/python bench/implicit_bench.py --data ../shared/data/gowalla
    .venv/bin/python bench/implicit_bench.py --data ../shared/data/ml-1m/nie-gcn --name ml-1m \\
        --resplit 0.2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from train_bench import dataset_fields, git_commit, machine, record, resplit  # sibling script

from contract.spectrum import embedding_spectrum
from trainer.data import Dataset, holdout_split, load_dataset
from trainer.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = (0.1, 0)
"""(fraction, seed) of the per-user holdout carved from the training pairs for tuning."""
GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    # alpha: confidence of an observed pair (implicit multiplies the binary matrix by it)
    "implicit-ALS": {"factors": (64, 128), "regularization": (1.0, 10.0), "alpha": (20.0, 80.0)},
    # 64 factors trailed 128 at every (lr, reg) of a first CiteULike grid: the budget (2 shared
    # cores) goes to the learning rate and the regularisation
    "implicit-BPR": {
        "factors": (128,),
        "learning_rate": (0.1, 0.2),
        "regularization": (0.003, 0.01),
    },
}
#: iteration counts at which a validation fit is scored (the last is the fit's length)
CHECKPOINTS: dict[str, tuple[int, ...]] = {
    "implicit-ALS": (10, 15),
    "implicit-BPR": (100, 200, 300),
}
#: iteration counts at which the refit is scored on test (up to the chosen iterations)
CURVE: dict[str, tuple[int, ...]] = {
    "implicit-ALS": (1, 2, 5, 10, 15),
    "implicit-BPR": (10, 25, 50, 100, 200, 300),
}
MISSING = (
    "bench/implicit_bench.py needs the `implicit` package (the bench extra): "
    "pip install -e '.[bench]'"
)


@dataclass(frozen=True)
class Point:
    """One scored checkpoint of one fit: its parameters, iterations, training seconds so far
    (evaluations excluded) and metrics."""

    params: dict[str, Any]
    iterations: int
    seconds: float
    recall: float
    ndcg: float


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def choose(points: Sequence[Point]) -> Point:
    """The point of highest Recall@20; ties go to fewer iterations, then to the earlier point."""
    if not points:
        raise ValueError("choose: no points")
    return min(enumerate(points), key=lambda ip: (-ip[1].recall, ip[1].iterations, ip[0]))[1]


class TrainClock:
    """Training seconds of a fit whose callback also evaluates: `lap()` at the start of each
    evaluation adds the time since the last `resume()` (or start) and returns the total;
    `resume()` after it restarts the clock, so evaluation time is never counted."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self._since = now()
        self.total = 0.0

    def lap(self) -> float:
        self.total += self._now() - self._since
        return self.total

    def resume(self) -> None:
        self._since = self._now()


def make_model(method: str, params: Mapping[str, Any], iterations: int, seed: int) -> Any:
    """An implicit CPU model of `method` with one OpenMP thread."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as exc:
        raise SystemExit(f"{MISSING} ({exc})") from None
    cls = AlternatingLeastSquares if method == "implicit-ALS" else BayesianPersonalizedRanking
    return cls(**params, iterations=iterations, num_threads=1, random_state=seed)


def factors(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(users (m, d'), items (n, d')) whose dot products are the model's scores (implicit's BPR
    carries the item bias as a last column against a user column of ones)."""
    return np.ascontiguousarray(model.user_factors), np.ascontiguousarray(model.item_factors)


def metrics(model: Any, train: sp.csr_matrix, test: sp.csr_matrix) -> dict[str, float]:
    users, items = factors(model)
    return evaluate(torch.from_numpy(users), torch.from_numpy(items), train, test, ks=(20,))


def fit_scored(
    method: str,
    params: dict[str, Any],
    ds: Dataset,
    checkpoints: Sequence[int],
    seed: int,
    on_point: Callable[[Point, Any], None] | None = None,
) -> list[Point]:
    """Fit `method` on ds's train pairs for max(checkpoints) iterations, scoring ds's test
    pairs at each checkpoint (evaluation time excluded from the points' seconds)."""
    train, test = ds.train_matrix(), ds.test_matrix()
    model = make_model(method, params, max(checkpoints), seed)
    points: list[Point] = []

    def callback(iteration: int, *_progress: Any) -> None:  # ALS: time, loss; BPR: 3 values
        if iteration + 1 not in checkpoints:
            return
        seconds = clock.lap()
        m = metrics(model, train, test)
        point = Point(params, iteration + 1, seconds, m["recall@20"], m["ndcg@20"])
        points.append(point)
        if on_point is not None:
            on_point(point, model)
        print(f"  {method} {params} it {point.iterations}: R@20 {point.recall:.4f} "
              f"({seconds:.1f} s)", flush=True)  # fmt: skip
        clock.resume()

    clock = TrainClock()
    model.fit(train, show_progress=False, callback=callback)
    return points


def narrowed(grid: Mapping[str, tuple[Any, ...]], items: Sequence[str]) -> dict[str, tuple]:
    """`grid` with the keys that `items` ("key=v1,v2" each, JSON numbers) name replaced."""
    out = dict(grid)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise SystemExit(f"--grid {item!r}: expected key=value[,value...]")
        if key in out:
            out[key] = tuple(json.loads(v) for v in raw.split(","))
    return out


def run(
    method: str, ds: Dataset, seed: int, grid_spec: dict[str, tuple], checkpoints: Sequence[int]
) -> dict[str, Any]:
    """Tune on validation, refit on train, score test: the row's method-specific fields."""
    t0 = time.perf_counter()
    valid = holdout_split(ds, *VALIDATION)
    from implicit.recommender_base import ModelFitError

    grid: list[Point] = []
    diverged: list[dict[str, Any]] = []
    for params in grid_points(grid_spec):
        try:
            grid += fit_scored(method, params, valid, checkpoints, seed)
        except ModelFitError as exc:  # NaN factors: too large a step; the rest of the grid runs
            print(f"  {method} {params}: {exc}", flush=True)
            diverged.append(params)
    best = choose(grid)
    seconds_tuning = time.perf_counter() - t0
    print(f"{method}: chosen {best.params}, {best.iterations} iterations", flush=True)

    curve: list[dict[str, Any]] = []
    final: dict[str, Any] = {}

    def on_point(p: Point, model: Any) -> None:
        spec = embedding_spectrum(*factors(model))["all"]["normalized"]
        curve.append(
            {
                "epoch": p.iterations,
                "seconds": p.seconds,
                "split": "test",
                "recall@20": p.recall,
                "ndcg@20": p.ndcg,
                "erank_normalized": spec["effective_rank"],
            }
        )
        final.update(spec=spec, dim=factors(model)[0].shape[1])

    t1 = time.perf_counter()
    steps = [c for c in CURVE[method] if c < best.iterations] + [best.iterations]
    fit_scored(method, best.params, ds, steps, seed, on_point)
    wall = time.perf_counter() - t1
    last = curve[-1]
    spec = final["spec"]
    return {
        "epochs": best.iterations,
        "best_epoch": None,
        "recall@20": last["recall@20"],
        "ndcg@20": last["ndcg@20"],
        "erank_normalized": spec["effective_rank"],
        "erank_ratio": spec["effective_rank"] / final["dim"],
        "seconds_per_epoch": last["seconds"] / best.iterations,
        "seconds_fit": last["seconds"],
        "wall_seconds": wall,
        "seconds_tuning": seconds_tuning,
        "config": {**best.params, "iterations": best.iterations, "num_threads": 1, "seed": seed},
        "validation": {
            "holdout": f"{VALIDATION[0]:g} of each user's training pairs, seed {VALIDATION[1]}",
            "searched": {k: list(v) for k, v in grid_spec.items()},
            "checkpoints": list(checkpoints),
            "chosen": asdict(best),
            "grid": [asdict(p) for p in grid],
            "diverged": diverged,
        },
        "curve": curve,
        "singular_values_normalized": spec["singular_values_normalized"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--methods", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    p.add_argument("--label", default="tuned on validation")
    p.add_argument("--name", default=None, help="the dataset's name in the row (default: dir)")
    p.add_argument("--resplit", type=float, default=None, metavar="FRACTION")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="implicit's random_state")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "training.json")
    p.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2")
    p.add_argument("--checkpoints", default=None, help="validation iterations, e.g. 100,200")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    try:
        import implicit
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise SystemExit(f"{MISSING} ({exc})") from None
    torch.set_num_threads(1)

    ds = load_dataset(args.data)
    name = args.name or args.data.resolve().name
    split = "published"
    if args.resplit is not None:
        ds = resplit(ds, args.resplit, args.split_seed, name)
        split = (
            f"{args.data.resolve().name} train+test pooled ({ds.n_train + ds.n_test} pairs), "
            f"per-user holdout {args.resplit:g} seed {args.split_seed}"
        )
    for method in args.methods:
        load_before = os.getloadavg()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with threadpool_limits(1):
            checkpoints = (
                tuple(int(c) for c in args.checkpoints.split(","))
                if args.checkpoints
                else CHECKPOINTS[method]
            )
            fields = run(method, ds, args.seed, narrowed(GRIDS[method], args.grid), checkpoints)
        row = {
            **dataset_fields(ds, name, split),
            "method": method,
            "label": args.label,
            "encoder": "mf",
            "objective": method.removeprefix("implicit-").lower(),
            "preset": None,
            "library": f"implicit {implicit.__version__}",
            **fields,
            "device": "cpu",
            "threads": 1,
            "processes": 1,
            "backend": None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loadavg_before": round(load_before[0], 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
            "machine": machine(),
            "started": started,
            "command": shlex.join(["python", "bench/implicit_bench.py", *given]),
            "commit": git_commit(),
        }
        record(args.out, row)
        print(
            f"{method} {name}: R@20 {row['recall@20']:.4f} NDCG@20 {row['ndcg@20']:.4f} "
            f"{row['seconds_fit']:.1f} s fit ({row['epochs']} it), tuning "
            f"{row['seconds_tuning']:.0f} s -> {args.out}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
