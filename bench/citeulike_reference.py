"""Reproduce the DirectSpec reference result on CiteULike (MF, reference settings).

Runs MF-DirectSpec+ (300 epochs) and the alignment-only baseline (alpha = 0, 100 epochs) with
the reference hyper-parameters (d 64, B 256, SGD lr 180 x0.9995 per epoch, Xavier init,
alpha 1.0, tau 3.0, shrink_norm 0.03), full ranking with training items masked, Recall@20 in
the reference convention (hits / min(20, |T|)) and also the LightGCN one at the end. Writes a
markdown section (curve every --eval-every epochs, seconds per epoch, total time, machine) to
--out after every run, so an interrupted run still leaves its finished parts.

    nohup .venv/bin/python bench/citeulike_reference.py > bench/out/citeulike_reference.log 2>&1 &

Reference numbers (the authors' published results; docs/method.md, "Reference hyper-parameters
for real datasets"): Recall@20 0.278, NDCG@20 0.232 after 300 epochs; alignment-only 0.048,
effective rank 64 -> about 8 by epoch 100.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from contract.config import TrainConfig
from trainer.data import load_dataset
from trainer.evaluate import evaluate, evaluate_popularity
from trainer.train import fit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "citeulike-directspec"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def progress_printer(label: str) -> Callable[[dict], None]:
    """fit()'s progress callback printing one line per epoch (loss, seconds, last R@20)."""

    def progress(info: dict) -> None:
        m = info["metrics"]
        r = f" R@20 {m['recall@20']:.4f}" if m else ""
        print(
            f"[{label}] epoch {info['epoch']} loss {info['loss']:.6f} {info['seconds']:.2f}s{r}",
            flush=True,
        )

    return progress


def run(ds, cfg: TrainConfig, label: str) -> dict:
    t0 = time.perf_counter()
    res = fit(ds, cfg, progress=progress_printer(label), progress_bar=False)
    total = time.perf_counter() - t0
    lightgcn = evaluate(
        torch.from_numpy(res.user_emb),
        torch.from_numpy(res.item_emb),
        ds.train_matrix(),
        ds.test_matrix(),
        recall_convention="lightgcn",
    )
    return {"label": label, "cfg": cfg, "res": res, "total": total, "lightgcn": lightgcn}


def section(runs: list[dict], pop: dict, command: str) -> str:
    lines = [
        "## CiteULike reference reproduction (MF, reference settings)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU ({cpu_name()}), torch {torch.__version__}, fit on "
        f"{runs[0]['res'].device if runs else 'cpu'} with 1 torch thread (num_threads auto); "
        "the CPU was shared with other jobs while measuring, so seconds are upper bounds.",
        "",
        "Data: `shared/data/citeulike-directspec` (5,551 users, 16,980 items, 166,003 unique "
        "train pairs, the reference split). Full ranking, training items masked. Recall@20 "
        "in the reference convention hits/min(20, |T|) unless marked LightGCN (hits/|T|).",
        "",
        f"Popularity baseline: Recall@20 {pop['recall@20']:.4f}, NDCG@20 {pop['ndcg@20']:.4f}.",
        "",
    ]
    for r in runs:
        cfg, res = r["cfg"], r["res"]
        lines += [
            f"### {r['label']}",
            "",
            f"Config: objective {cfg.objective}, lr {cfg.lr} x{cfg.lr_decay}/epoch, alpha "
            f"{cfg.alpha}, tau {cfg.tau}, shrink_norm {cfg.shrink_norm}, d {cfg.dim}, "
            f"B {cfg.batch_size}, epochs {cfg.epochs}, seed {cfg.seed}, device {res.device}.",
            "",
            "| epoch | loss | Recall@20 | NDCG@20 | erank [U;I] normalised | erank [U;I] raw "
            "| train s (cum.) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for h in res.history:
            spec = h["spectrum"]["all"]
            lines.append(
                f"| {h['epoch']} | {h['loss']:.6f} | {h['metrics']['recall@20']:.4f} "
                f"| {h['metrics']['ndcg@20']:.4f} | {spec['normalized']['effective_rank']:.2f} "
                f"| {spec['raw']['effective_rank']:.2f} | {h['seconds']:.0f} |"
            )
        lg = r["lightgcn"]
        lines += [
            "",
            f"Final: Recall@20 {res.metrics['recall@20']:.4f} (reference convention), "
            f"{lg['recall@20']:.4f} (LightGCN convention); NDCG@20 {res.metrics['ndcg@20']:.4f}. "
            f"Training {res.seconds_per_epoch:.2f} s/epoch ({res.epochs_run} epochs, "
            f"{res.seconds_per_epoch * res.epochs_run / 60:.1f} min); wall time including "
            f"evaluations {r['total'] / 60:.1f} min.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=300, help="DirectSpec+ epochs")
    p.add_argument("--align-epochs", type=int, default=100, help="alignment-only epochs (0: skip)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--align-eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/out/citeulike_reference.md"))
    args = p.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    ds = load_dataset(args.data)
    pop = evaluate_popularity(ds.train_matrix(), ds.test_matrix(), recall_convention="reference")
    common = {"eval_every": args.eval_every, "recall_convention": "reference", "seed": args.seed}
    plan = [
        ("MF-DirectSpec+", TrainConfig.defaults("directspec+", "mf", epochs=args.epochs, **common))
    ]
    if args.align_epochs:
        plan.append(
            (
                "MF alignment only (alpha = 0)",
                TrainConfig.defaults(
                    "align",
                    "mf",
                    epochs=args.align_epochs,
                    **(common | {"eval_every": args.align_eval_every}),
                ),
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    for label, cfg in plan:
        runs.append(run(ds, cfg, label))
        args.out.write_text(section(runs, pop, command))
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
