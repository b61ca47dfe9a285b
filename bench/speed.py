"""Seconds per epoch of the training step on a real dataset (default: CiteULike reference split).

Times epochs of fit()'s own step (sampler -> row catch-up -> BatchLoss -> optimiser) without
evaluation, for each case of ``cases()``: MF-DirectSpec+ variants, BPR with dense Adam and
with sparse_adam, DirectAU, and LightGCN with and without sub_batches (LightGCN timed on a
few steps scaled to an epoch, plus the epoch's one draw of samples, timed on its own). Each
case replaces its (dataset, case) row in --out (docs/results/speed.json), which
bench/report.py renders.

    .venv/bin/python bench/speed.py --data ../shared/data/gowalla
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from train_bench import git_commit, machine, record  # sibling script

from contract.config import TrainConfig
from trainer.data import load_dataset
from trainer.device import pick_device
from trainer.objectives import BatchLoss
from trainer.optim import build_optimizer
from trainer.sampling import CSR, PairSampler, UserItemSampler
from trainer.train import build_encoder, groups, row_catch_up, train_step

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "citeulike-directspec"


def time_epoch(ds, cfg: TrainConfig, max_steps: int | None = None) -> tuple[float, float, int, int]:
    """(wall s, CPU s of this process) of one epoch, steps timed, steps per epoch: drawing the
    epoch's samples (once per epoch) plus the timed steps scaled to the epoch's steps. With one
    thread and a shared CPU, CPU seconds approximate the wall time on an idle machine."""
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.num_threads or 1)
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

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    batches = sampler.epoch()
    first = next(batches)  # the generator draws the whole epoch's samples here
    sync()
    draw_wall, draw_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    total = torch.zeros((), device=device)
    for k, group in enumerate(groups(itertools.chain([first], batches), cfg.sub_batches)):
        if k == steps:
            break
        total += train_step(loss_fn.summed, opt, group, hook)
    total.item()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = per_epoch / steps
    return draw_wall + wall * scale, draw_cpu + cpu * scale, steps, per_epoch


def cases(device: str | None, gcn_steps: int) -> list[tuple[str, TrainConfig, int | None]]:
    """(label, config, optimiser steps to time or None for a full epoch) of each case."""
    dev = {"device": device}

    def c(objective: str, encoder: str = "mf", **kw: Any) -> TrainConfig:
        return TrainConfig.defaults(objective, encoder, **(dev | kw))

    gcn = gcn_steps
    return [
        ("MF-DirectSpec+", c("directspec+", num_threads=1), None),
        ("MF-DirectSpec+ 2 threads", c("directspec+", num_threads=2), None),
        ("MF-DirectSpec+ B=512", c("directspec+", batch_size=512, num_threads=1), None),
        ("MF-DirectSpec+ adaptive tau", c("directspec+", adaptive_tau=True, num_threads=1), None),
        ("MF-DirectSpec (linear)", c("directspec", num_threads=1), None),
        ("MF alignment only", c("align", num_threads=1), None),
        ("MF-BPR dense Adam", c("bpr", optimizer="adam", num_threads=1), None),
        ("MF-BPR sparse_adam", c("bpr", num_threads=1), None),
        ("MF-BPR sparse_adam 2 threads", c("bpr", num_threads=2), None),
        ("MF-DirectAU sparse_adam", c("directau", num_threads=1), None),
        (
            "LightGCN-DirectSpec+ sub_batches 1",
            c("directspec+", "lightgcn", sub_batches=1, num_threads=1),
            gcn,
        ),
        (
            "LightGCN-DirectSpec+ sub_batches 16",
            c("directspec+", "lightgcn", num_threads=1),
            gcn // 4,
        ),
        (
            "LightGCN-DirectSpec+ sub_batches 16, 2 threads",
            c("directspec+", "lightgcn", num_threads=2),
            gcn // 4,
        ),
        # LightGCN-BPR's default is 4 batches per step at lr 4e-3; these are LightGCN's own
        (
            "LightGCN-BPR sub_batches 1",
            c("bpr", "lightgcn", sub_batches=1, lr=1e-3, num_threads=1),
            gcn,
        ),
        (
            "LightGCN-BPR sub_batches 1, 2 threads",
            c("bpr", "lightgcn", sub_batches=1, lr=1e-3, num_threads=2),
            gcn,
        ),
        (  # the default LightGCN-BPR recipe (TrainConfig.defaults), on one thread
            "LightGCN-BPR sub_batches 4",
            c("bpr", "lightgcn", sub_batches=4, lr=0.004, num_threads=1),
            gcn // 2,
        ),
        (
            "LightGCN-BPR sub_batches 4, 2 threads",
            c("bpr", "lightgcn", sub_batches=4, lr=0.004, num_threads=2),
            gcn // 2,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--device", default=None)
    p.add_argument("--gcn-steps", type=int, default=12, help="LightGCN steps timed (S = 1)")
    p.add_argument("--only", nargs="*", default=None, help="labels of the cases to run")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "speed.json")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["python", "bench/speed.py", *given])
    ds = load_dataset(args.data)
    dataset = args.data.resolve().name
    for label, cfg, max_steps in cases(args.device, args.gcn_steps):
        if args.only is not None and label not in args.only:
            continue
        load = os.getloadavg()[0]
        wall, cpu, timed, per_epoch = time_epoch(ds, cfg, max_steps)
        threads = cfg.num_threads
        print(f"{label}: {wall:.2f} s/epoch wall, {cpu:.2f} CPU s ({per_epoch} steps)", flush=True)
        row = {
            "benchmark": "speed",
            "dataset": dataset,
            "case": label,
            "batch_size": cfg.batch_size,
            "sub_batches": cfg.sub_batches,
            "optimizer": cfg.optimizer,
            "steps_per_epoch": per_epoch,
            "steps_timed": timed,
            "threads": threads,
            "device": str(pick_device(args.device)),
            "seconds_per_epoch": wall,
            "cpu_seconds_per_epoch": cpu,
            "loadavg_before": round(load, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
            "machine": machine(),
            "torch": torch.__version__,
            "command": command,
            "commit": git_commit(),
        }
        record(args.out, row, key=("dataset", "case"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
