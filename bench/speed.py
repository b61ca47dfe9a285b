"""Seconds per epoch of the training step on a real dataset (default: CiteULike reference split).

Times full epochs of fit()'s own step (sampler -> BatchLoss -> optimiser) without evaluation:
MF-DirectSpec+ at several batch sizes and thread counts, with adaptive tau, the linear
variant, alignment only, BPR; and LightGCN-DirectSpec+ (timed on --gcn-steps steps and
scaled to an epoch, since one full propagation per step makes an epoch long on CPU).
Writes a markdown table to --out.

    PYTHONPATH=. .venv/bin/python bench/speed.py --out bench/out/speed.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from contract.config import TrainConfig
from trainer.data import load_dataset
from trainer.device import pick_device
from trainer.objectives import BatchLoss
from trainer.optim import build_optimizer
from trainer.sampling import CSR, PairSampler, UserItemSampler
from trainer.train import build_encoder, groups, row_catch_up, train_step

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "citeulike-directspec"


def time_epoch(ds, cfg: TrainConfig, max_steps: int | None = None) -> tuple[float, float, int, int]:
    """(wall s, CPU s of this process) for the timed steps scaled to one epoch, steps timed,
    steps per epoch. With one thread and a shared CPU, CPU seconds approximate the wall time
    on an idle machine."""
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.num_threads or (1 if cfg.encoder == "mf" else os.cpu_count() or 1))
    train = ds.train_matrix()
    enc = build_encoder(cfg, train, device, torch.Generator().manual_seed(0))
    opt = build_optimizer(cfg, enc)
    graph = CSR(train, device)
    items = CSR(train.T.tocsr(), device) if cfg.adaptive_tau else None
    gen = torch.Generator(device=device).manual_seed(1)
    if cfg.sampler == "user":
        sampler = UserItemSampler(graph, cfg.batch_size, gen)
    else:
        sampler = PairSampler(graph, cfg.batch_size, gen, negatives=cfg.objective == "bpr")
    loss_fn = BatchLoss(cfg, enc, graph, items)
    hook = row_catch_up(opt, enc)
    per_epoch = -(-sampler.steps_per_epoch // cfg.sub_batches)  # optimiser steps
    # warm-up: one short pass so that lazy initialisation is not timed
    for k, group in enumerate(groups(sampler.epoch(), cfg.sub_batches)):
        train_step(loss_fn.summed, opt, group, hook)
        if k == 2:
            break
    steps = per_epoch if max_steps is None else min(max_steps, per_epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    total = torch.zeros((), device=device)
    # includes drawing the epoch's samples
    for k, group in enumerate(groups(sampler.epoch(), cfg.sub_batches)):
        if k == steps:
            break
        total += train_step(loss_fn.summed, opt, group, hook)
    total.item()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = per_epoch / steps
    return wall * scale, cpu * scale, steps, per_epoch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--device", default=None)
    p.add_argument("--gcn-steps", type=int, default=40)
    p.add_argument("--out", type=Path, default=Path("bench/out/speed.md"))
    args = p.parse_args(argv)
    ds = load_dataset(args.data)
    dev = {"device": args.device}
    mf = "mf"
    cases = [
        ("MF-DirectSpec+", TrainConfig.defaults("directspec+", mf, num_threads=1, **dev), None),
        (
            "MF-DirectSpec+ 2 threads",
            TrainConfig.defaults("directspec+", mf, num_threads=2, **dev),
            None,
        ),
        (
            "MF-DirectSpec+ B=512",
            TrainConfig.defaults("directspec+", mf, batch_size=512, **dev),
            None,
        ),
        (
            "MF-DirectSpec+ B=1024",
            TrainConfig.defaults("directspec+", mf, batch_size=1024, **dev),
            None,
        ),
        (
            "MF-DirectSpec+ adaptive tau",
            TrainConfig.defaults("directspec+", mf, adaptive_tau=True, **dev),
            None,
        ),
        ("MF-DirectSpec (linear)", TrainConfig.defaults("directspec", mf, alpha=0.05, **dev), None),
        ("MF alignment only", TrainConfig.defaults("align", mf, **dev), None),
        ("MF-BPR (Adam, B=2048)", TrainConfig.defaults("bpr", mf, **dev), None),
        (
            "LightGCN-DirectSpec+",
            TrainConfig.defaults("directspec+", "lightgcn", **dev),
            args.gcn_steps,
        ),
    ]
    rows = []
    for label, cfg, max_steps in cases:
        wall, cpu, timed, per_epoch = time_epoch(ds, cfg, max_steps)
        note = "" if max_steps is None else f"{timed} of {per_epoch} steps timed, scaled"
        rows.append((label, cfg.batch_size, per_epoch, cfg.num_threads or 1, wall, cpu, note))
        print(f"{label}: {wall:.2f} s/epoch wall, {cpu:.2f} CPU s ({per_epoch} steps) {note}")
    load = os.getloadavg()
    command = " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "## Training speed (seconds per epoch)",
        "",
        f"Command: `python {command}`",
        "",
        f"Dataset `{ds.name}` ({ds.n_users} users, {ds.n_items} items, {ds.n_train} train pairs); "
        f"device {pick_device(args.device)}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(the CPU is shared; with 1 thread, CPU seconds approximate an idle machine's wall "
        "time). "
        "Reference implementation on a 2-core CPU: about 69 s/epoch (MF, B = 256).",
        "",
        "| run | B | steps/epoch | threads | s/epoch (wall) | CPU s/epoch | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {a} | {b} | {c} | {d} | {e:.2f} | {f:.2f} | {g} |" for a, b, c, d, e, f, g in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
