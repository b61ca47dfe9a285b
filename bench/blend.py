"""Blend the spectral filter with MF-DirectSpec+, the blend weight β chosen on validation.

Per user, both score rows over all items are standardised (zero mean, unit deviation), then
S = z(filter) + β · z(DirectSpec+), the user's training items masked, full-ranking
Recall@20 / NDCG@20. β is chosen on a seeded 10 % per-user holdout of the training pairs
(trainer.data.holdout_split; both models fitted on the rest); then both models are refitted on
the full training pairs and the test split is scored once with that β. The filter alone
(β = 0) and DirectSpec+ alone are scored on test too, as references only. One row per
(epochs, split, scorer, β) goes to docs/results/blend.json. The product trains and serves the
same blend (objective "blend", trainer/blend.py, contract/blend.py); the presets
gowalla-blend (20 epochs) and gowalla-blend-fast (5) carry the β this script chose.

    OMP_NUM_THREADS=1 .venv/bin/python bench/blend.py --data ../shared/data/gowalla --epochs 20
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_bench import git_commit, machine, record  # sibling script

from contract.config import PRESETS, TrainConfig
from trainer.blend import WEIGHTS, blend_metrics
from trainer.data import Dataset, holdout_split, load_dataset
from trainer.spectral import fit_filter
from trainer.train import fit

ROOT = Path(__file__).resolve().parents[1]
DIRECTSPEC_ALONE = "directspec+"
"""The scorer name of DirectSpec+'s own scores (ranked like z(S_d) alone)."""


def scored(
    filt: Any,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    ds: Dataset,
    betas: list[float],
    info: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """{"blend β": metrics} of every β on ds's split (trainer.blend.blend_metrics, 2 threads
    for the filter), and DirectSpec+ alone ("directspec+": fit's own full-ranking metrics)."""

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} users", file=sys.stderr, flush=True)

    found = blend_metrics(
        filt,
        ds.train_matrix(),
        user_emb,
        item_emb,
        ds.test_matrix(),
        betas,
        ks=(20,),
        threads=2,
        progress=progress,
    )
    out = {f"blend {b:g}": m for b, m in found.items()}
    out[DIRECTSPEC_ALONE] = dict(info["directspec_fit_metrics"])
    return out


def fit_both(ds: Dataset, cfg: TrainConfig) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """DirectSpec+ (fit, `cfg`) and the filter (cfg's spectral_k / alpha / solver / seed) on
    ds's training pairs: (filter, user_emb, item_emb, {seconds and fit's own test metrics})."""
    t0 = time.perf_counter()
    res = fit(ds, cfg, progress_bar=False)
    t1 = time.perf_counter()
    train = ds.train_matrix()
    filt = fit_filter(train, cfg.spectral_k, cfg.spectral_alpha, cfg.seed, cfg.spectral_solver)
    t2 = time.perf_counter()
    info = {
        "seconds_directspec_fit": t1 - t0,
        "seconds_per_epoch": res.seconds_per_epoch,
        "directspec_fit_metrics": {
            k: res.metrics.get(k) for k in ("recall@20", "ndcg@20", "n_users")
        },
        "seconds_filter_fit": t2 - t1,
    }
    return filt, res.user_emb, res.item_emb, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--name", default=None, help="the dataset's name in the rows (default: dir)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--preset",
        choices=[*PRESETS, "none"],
        default="gowalla-fast",
        help="DirectSpec+'s hyper-parameters over its defaults; none: the defaults (CiteULike's)",
    )
    p.add_argument("--betas", type=float, nargs="+", default=list(WEIGHTS))
    p.add_argument("--fraction", type=float, default=0.1, help="validation share of each user")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "blend.json")
    args = p.parse_args(argv)
    command = shlex.join(["python", "bench/blend.py", *(argv or sys.argv[1:])])
    torch.set_num_threads(1)
    name = args.name or args.data.resolve().name
    cfg = TrainConfig.defaults(
        "directspec+",
        "mf",
        preset=None if args.preset == "none" else args.preset,
        epochs=args.epochs,
        eval_every=args.epochs,
    )
    full = load_dataset(args.data)
    valid = holdout_split(full, args.fraction, args.split_seed)

    def common(split: str, info: dict[str, Any], seconds_eval: float) -> dict[str, Any]:
        return {
            "benchmark": "blend",
            "dataset": name,
            "split": split,
            "holdout": f"{args.fraction:g} of each user's training pairs, seed {args.split_seed}"
            if split == "validation"
            else "published test split",
            "epochs": cfg.epochs,
            "preset": args.preset,
            "directspec_config": {"dim": cfg.dim, "lr": cfg.lr, "batch_size": cfg.batch_size},
            "filter_k": cfg.spectral_k,
            "filter_alpha": cfg.spectral_alpha,
            "filter_solver": cfg.spectral_solver,
            **info,
            "seconds_blend_eval": seconds_eval,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg": os.getloadavg()[0],
            "machine": machine(),
            "command": command,
            "commit": git_commit(),
        }

    def write(split: str, results: dict[str, dict[str, float]], base: dict[str, Any]) -> None:
        for scorer, m in results.items():
            beta = None if scorer == DIRECTSPEC_ALONE else float(scorer.split()[1])
            kind = (
                DIRECTSPEC_ALONE
                if beta is None
                else "filter"
                if beta == 0
                else "blend z(filter) + beta*z(directspec+)"
            )
            print(f"{split} {scorer}: recall@20 {m['recall@20']:.4f} ndcg@20 {m['ndcg@20']:.4f}")
            record(
                args.out,
                base | {"scorer": kind, "beta": beta, "role": roles.get(scorer, "grid")} | m,
                key=("dataset", "epochs", "split", "scorer", "beta"),
            )

    # 1. validation: fit on the holdout's training pairs, every β in one pass
    t0 = time.perf_counter()
    print(f"validation: {valid!r}", file=sys.stderr, flush=True)
    filt, ue, ie, info = fit_both(valid, cfg)
    t1 = time.perf_counter()
    res_v = scored(filt, ue, ie, valid, args.betas, info)
    secs_v = time.perf_counter() - t1
    roles: dict[str, str] = {DIRECTSPEC_ALONE: "reference"}
    best = max(args.betas, key=lambda b: res_v[f"blend {b:g}"]["recall@20"])
    roles[f"blend {best:g}"] = "chosen on validation"
    info["seconds_stage_total"] = time.perf_counter() - t0
    write("validation", res_v, common("validation", info, secs_v))
    print(f"beta* = {best:g}", flush=True)
    del filt, ue, ie

    # 2. test: refit on the full training pairs, score β* once (β = 0 and DirectSpec+ alone:
    # references, never used to choose anything)
    t0 = time.perf_counter()
    filt, ue, ie, info = fit_both(full, cfg)
    t1 = time.perf_counter()
    test_betas = sorted({0.0, best})
    res_t = scored(filt, ue, ie, full, test_betas, info)
    secs_t = time.perf_counter() - t1
    roles = {DIRECTSPEC_ALONE: "reference (not used to choose)"}
    roles[f"blend {best:g}"] = f"test of beta*={best:g} (chosen on validation)"
    if best != 0:
        roles["blend 0"] = "reference: filter alone (not used to choose)"
    info["seconds_stage_total"] = time.perf_counter() - t0
    info["beta_star"] = best
    write("test", res_t, common("test", info, secs_t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
