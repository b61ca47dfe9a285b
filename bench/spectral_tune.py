"""Choose the spectral filter's K and α on a validation split carved from the training pairs.

For each dataset: a seeded 10 % of every user's training pairs is held out (trainer.data.
holdout_split), the filter is fitted on the rest with the largest K of the grid, and every
(K, α) of the grid is scored on the held-out pairs (the linear part and the low-pass basis are
computed once per batch; K takes a prefix of the singular vectors). One row per (dataset, K, α)
goes to docs/results/spectral_tuning.json; the best validation Recall@20 is the default that
contract.config documents. The test split is not read.

    .venv/bin/python bench/spectral_tune.py --data ../shared/data/gowalla
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from train_bench import git_commit, machine, record  # sibling script

from contract.spectral import SpectralFilter, normalized_matrix
from trainer.data import holdout_split, load_dataset
from trainer.evaluate import _binary_csr, _ranking_metrics
from trainer.spectral import stable_topk, top_singular

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--ks", type=int, nargs="+", default=[128, 256, 384])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, 0.8])
    p.add_argument("--fraction", type=float, default=0.1, help="validation share of each user")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=["randomized", "arpack"], default="randomized")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "spectral_tuning.json")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ds = holdout_split(load_dataset(args.data), args.fraction, args.seed)
    train, valid = _binary_csr(ds.train_matrix()), _binary_csr(ds.test_matrix())
    norm = normalized_matrix(train)
    k_max = max(args.ks)
    vectors, values = top_singular(norm, k_max, args.seed, args.solver)
    base = SpectralFilter.build(norm, vectors, values, 1.0)  # alpha applied below
    fit_s = time.perf_counter() - t0
    print(f"{ds!r}: SVD of rank {k_max} in {fit_s:.1f}s", file=sys.stderr, flush=True)

    combos = [(k, a) for k in sorted(args.ks) for a in args.alphas]
    linear_only = SpectralFilter(
        base.norm, base.norm_t, base.lowpass_in[:, :0], base.lowpass_out[:, :0], values[:0], 0.0
    )
    cpu = torch.device("cpu")
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    totals = {c: {"recall@20": 0.0, "ndcg@20": 0.0, "n_users": 0} for c in combos}
    batch = 1024
    for start in range(0, len(users), batch):  # the linear part and the basis once a batch
        rows = users[start : start + batch]
        h = train[rows]
        lin, low = linear_only.scores(h), base.user_factors(h)
        seen_r, seen_c = h.nonzero()
        for k, a in combos:

            def rank_batch(
                local: np.ndarray,
                depth: int,
                k: int = k,
                a: float = a,
                lin: np.ndarray = lin,
                low: np.ndarray = low,
                seen: tuple[np.ndarray, np.ndarray] = (seen_r, seen_c),
            ) -> tuple[torch.Tensor, torch.Tensor]:
                scores = lin + a * (low[:, :k] @ base.lowpass_out[:, :k].T)
                scores[seen] = -np.inf
                top, top_scores = stable_topk(scores[local], depth)
                return torch.from_numpy(top), torch.from_numpy(top_scores > -np.inf)

            m = _ranking_metrics(rank_batch, valid[rows], [20], "lightgcn", len(rows), cpu)
            for key in ("recall@20", "ndcg@20"):
                totals[(k, a)][key] += m[key] * m["n_users"]
            totals[(k, a)]["n_users"] += m["n_users"]
        print(f"{start + len(rows)}/{len(users)} users", file=sys.stderr, flush=True)
    sums = {}
    for (k, a), t in totals.items():
        metrics = {key: t[key] / max(t["n_users"], 1) for key in ("recall@20", "ndcg@20")}
        metrics["n_users"] = t["n_users"]
        sums[(k, a)] = metrics
        print(f"K={k} alpha={a}: validation recall@20 {metrics['recall@20']:.4f}", flush=True)
        record(
            args.out,
            {
                "benchmark": "spectral_tuning",
                "dataset": Path(args.data).name,
                "spectral_k": k,
                "spectral_alpha": a,
                "solver": args.solver,
                "split": f"validation ({args.fraction:g} of each user's training pairs, "
                f"seed {args.seed})",
                "recall@20": metrics["recall@20"],
                "ndcg@20": metrics["ndcg@20"],
                "n_users": metrics["n_users"],
                "svd_seconds": fit_s,
                "wall_seconds": time.perf_counter() - t0,
                "loadavg": os.getloadavg()[0],
                "machine": machine(),
                "command": "python "
                + shlex.join(["bench/spectral_tune.py", *(argv or sys.argv[1:])]),
                "commit": git_commit(),
            },
            key=("dataset", "spectral_k", "spectral_alpha", "solver"),
        )
    best = max(sums, key=lambda c: sums[c]["recall@20"])
    print(
        f"best on validation: K={best[0]} alpha={best[1]} recall@20 {sums[best]['recall@20']:.4f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
