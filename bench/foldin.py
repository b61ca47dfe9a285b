"""Fold-in quality: users held out of training, folded in from their training items.

Holds out a random `--holdout` share of the users (those with training and test items), trains
one model on all users ("trained": the held-out users' own trained vectors) and one without them,
folds the held-out users into the second from their training items with each rule of
service.foldin (the code the service runs), and reports the held-out users' Recall@20 / NDCG@20
on their test items (full ranking, training items masked, LightGCN recall convention) for:
trained, each fold-in rule, and popularity. Appends one row per method to --results (JSON) and
writes a markdown table to --out.

    .venv/bin/python bench/foldin.py --data ../shared/data/citeulike-directspec --epochs 100
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from contract.config import TrainConfig
from service.foldin import FoldIn, history_sums, rule_for
from trainer.data import Dataset, load_dataset
from trainer.evaluate import evaluate
from trainer.train import fit

ROOT = Path(__file__).resolve().parents[1]
RULES = ("cosine", "propagation")


def split_users(ds: Dataset, fraction: float, seed: int) -> np.ndarray:
    """Sorted rows of the held-out users: a `fraction` of the users with train and test pairs."""
    has_both = np.intersect1d(np.unique(ds.train_users), np.unique(ds.test_users))
    rng = np.random.default_rng(seed)
    n = max(1, round(fraction * len(has_both)))
    return np.sort(rng.choice(has_both, size=n, replace=False))


def without_users(ds: Dataset, held: np.ndarray) -> Dataset:
    """`ds` minus the held-out users (rows renumbered); every item kept."""
    keep = np.ones(ds.n_users, dtype=bool)
    keep[held] = False
    new_row = np.cumsum(keep) - 1
    tr, te = keep[ds.train_users], keep[ds.test_users]
    return Dataset.from_pairs(
        ds.name + "-minus-heldout",
        ds.user_ids[keep],
        ds.item_ids,
        (new_row[ds.train_users[tr]], ds.train_items[tr]),
        (new_row[ds.test_users[te]], ds.test_items[te]),
    )


def metrics_of(users: np.ndarray, items: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix):
    m = evaluate(torch.from_numpy(users), torch.from_numpy(items), train, test, ks=(20,))
    return {"recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"], "users": int(m["n_users"])}


@dataclass
class Trained:
    user_emb: np.ndarray
    item_emb: np.ndarray
    device: str


def trained(ds: Dataset, cfg: TrainConfig, cache: Path | None) -> tuple[Trained, float]:
    """fit(ds, cfg)'s embeddings and wall seconds, from `cache` when this exact dataset and
    config were trained before (so rules can be compared without retraining)."""
    key = hashlib.sha256(
        (ds.fingerprint() + json.dumps(cfg.to_dict(), sort_keys=True)).encode()
    ).hexdigest()[:16]
    path = cache / f"{ds.name}-{key}.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path)
        return Trained(z["user_emb"], z["item_emb"], str(z["device"])), float(z["seconds"])
    t0 = time.perf_counter()

    def progress(info: dict[str, Any]) -> None:
        if info["epoch"] % 10 == 0 or info["epoch"] == 1:
            print(
                f"{ds.name}: epoch {info['epoch']}/{info['epochs']} {info['seconds']:.2f} s",
                flush=True,
            )

    res = fit(ds, cfg, progress=progress, progress_bar=False)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path, user_emb=res.user_emb, item_emb=res.item_emb, device=res.device, seconds=seconds
        )
    return Trained(res.user_emb, res.item_emb, res.device), seconds


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/citeulike-directspec")
    p.add_argument("--encoder", default="mf", choices=["mf", "lightgcn"])
    p.add_argument("--objective", default="directspec+")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--name", help="dataset name in the results (default: the loader's)")
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    p.add_argument("--out", type=Path, default=ROOT / "bench/out/foldin.md")
    p.add_argument("--results", type=Path, default=ROOT / "docs/results/foldin.json")
    p.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "bench/out/foldin-cache",
        help="trained embeddings are kept here (none: --cache '')",
    )
    args = p.parse_args(argv)
    command = "python bench/foldin.py " + " ".join(argv if argv is not None else sys.argv[1:])

    overrides: dict[str, Any] = {}
    for kv in args.set:
        key, value = kv.split("=", 1)
        overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    cfg = TrainConfig.defaults(
        args.objective, args.encoder, epochs=args.epochs, eval_every=args.epochs, **overrides
    )
    ds = load_dataset(args.data)
    if args.name:
        ds = dataclasses.replace(ds, name=args.name)
    held = split_users(ds, args.holdout, args.seed)
    rest = without_users(ds, held)
    train_h, test_h = ds.train_matrix()[held], ds.test_matrix()[held]
    print(f"{ds.name}: {len(held)} of {ds.n_users} users held out", flush=True)

    full, t_full = trained(ds, cfg, args.cache)
    part, t_part = trained(rest, cfg, args.cache)
    print(f"trained: all users {t_full:.0f} s, without the held-out {t_part:.0f} s", flush=True)

    degrees = np.bincount(rest.train_items, minlength=rest.n_items)
    rows: list[tuple[str, dict[str, Any], float]] = []
    held_metrics = metrics_of(full.user_emb[held], full.item_emb, train_h, test_h)
    rows.append(("trained (all users in training)", held_metrics, 0.0))
    seen = rest.train_matrix().tocsr()
    seen.sort_indices()
    service_rule = rule_for(cfg.encoder)
    for rule in RULES:
        fold = FoldIn.fit(part.item_emb, part.user_emb, seen.indptr, seen.indices, rule)
        t0 = time.perf_counter()
        vecs = fold.vectors(train_h.indptr, train_h.indices)
        ms = (time.perf_counter() - t0) * 1e3 / len(held)
        mark = " (the service's rule)" if rule == service_rule else ""
        name = f"fold-in: {rule} sum + fitted map{mark}"
        rows.append((name, metrics_of(vecs, part.item_emb, train_h, test_h), ms))
        sums = history_sums(part.item_emb, fold.weights, train_h.indptr, train_h.indices)
        rows.append(
            (
                f"ablation: {rule} sum, no map",
                metrics_of(sums.astype(np.float32), part.item_emb, train_h, test_h),
                0.0,
            )
        )
    pop = degrees.astype(np.float32)[:, None]
    rows.append(
        ("popularity", metrics_of(np.ones((len(held), 1), np.float32), pop, train_h, test_h), 0.0)
    )

    trained_recall = rows[0][1]["recall@20"]
    machine = f"{os.cpu_count()} CPU, torch {torch.__version__}, {full.device}"
    lines = [
        f"Data `{ds.name}`: {len(held)} of {ds.n_users} users held out (seed {args.seed}); "
        f"{cfg.encoder}-{cfg.objective}, {cfg.epochs} epochs, d {cfg.dim}; training "
        f"{t_full:.0f} s (all users) and {t_part:.0f} s (without the held-out users); {machine}.",
        "",
        "| method | Recall@20 | NDCG@20 | of trained | fold-in ms/user |",
        "|---|---:|---:|---:|---:|",
    ]
    stamp = {"commit": commit(), "command": command, "machine": machine, "unix": time.time()}
    records = []
    for name, m, ms in rows:
        ratio = m["recall@20"] / trained_recall if trained_recall else float("nan")
        lines.append(
            f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {ratio:.2f} | {ms:.3f} |"
            if ms
            else f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {ratio:.2f} | - |"
        )
        records.append(
            {
                "benchmark": "foldin",
                "dataset": ds.name,
                "encoder": cfg.encoder,
                "objective": cfg.objective,
                "epochs": cfg.epochs,
                "config": cfg.to_dict(),
                "method": name,
                "heldout_users": len(held),
                "recall@20": m["recall@20"],
                "ndcg@20": m["ndcg@20"],
                "of_trained": ratio,
                "foldin_ms_per_user": ms or None,
                "device": full.device,
                "threads": torch.get_num_threads(),
                **stamp,
            }
        )
    lines += ["", f"Command: `{command}`", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write("\n".join(lines) + "\n")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.results.read_text()) if args.results.exists() else []
    args.results.write_text(json.dumps(old + records, indent=1) + "\n")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
