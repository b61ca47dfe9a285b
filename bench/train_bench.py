"""Train one method on one dataset, evaluate by full ranking, record a row in a results file.

The row ({dataset, method, label, encoder, objective, config, epochs, recall@20, ndcg@20,
erank_normalized, seconds_per_epoch, device, threads, command, commit, ...} plus the curve and
the normalised singular values) replaces the row with the same (dataset, method, label) in
``--out`` (default docs/results/training.json), or is appended; ``bench/report.py`` turns the
file into the tables and plots of docs/benchmarks.md.

    .venv/bin/python bench/train_bench.py --data ../shared/data/gowalla --method MF-BPR \\
        --label tuned --epochs 300 --eval-every 25 --set lr=0.005 reg=1e-5

Methods name an objective and encoder; ``--preset`` adds a named hyper-parameter set
(contract.config.PRESETS, e.g. the DirectSpec reference set for Gowalla), ``--set
field=value`` overrides any TrainConfig field (JSON values: numbers, true/false, null,
strings). The command, the commit and the load average before and after are recorded, as
the machine is shared.

``--resplit FRACTION`` pools a dataset's published train and test pairs and cuts a seeded
per-user holdout instead (``trainer.data.dataset_from_table``, ``--split-seed``, default 0),
recorded in the row's ``split``; ``--name`` names the dataset in the row. MovieLens 1M comes
only as published splits (``shared/data/ml-1m``, no ``ratings.dat``), so:

    .venv/bin/python bench/train_bench.py --data ../shared/data/ml-1m/nie-gcn --name ml-1m \\
        --resplit 0.2 --method Spectral

``--plateau N`` trains to a plateau: fit()'s early stopping (``early_stop_patience`` N) holds
out a seeded share ``val_fraction`` (0.1) of each user's training pairs
(``trainer.data.holdout_split``, seed ``seed``), trains on the rest, evaluates validation
Recall@20 every ``--eval-every`` epochs and stops once N evaluations in a row have not beaten
the best by more than ``--plateau-tolerance`` (``early_stop_min_delta``), or at ``--epochs``.
The row's ``recall@20``/``ndcg@20`` are then the test scores of the embeddings of the last
such improvement (the plateau epoch), fitted on the training pairs less the validation share
(no refit); its curve is the validation curve. ``--checkpoint-dir DIR --checkpoint-every N``
write fit()'s checkpoints (trainer.checkpoint) and ``--resume`` continues from the newest one:
a run cut off and resumed records the same row, timings aside (``wall.json`` beside the
checkpoints keeps the wall time so far: the row's ``wall_seconds`` and ``started`` are the whole
run's).

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/train_bench.py --data ../shared/data/gowalla \\
        --method LightGCN-DirectSpec+ --preset gowalla-reference --label plateau --epochs 400 \\
        --plateau 3 --eval-every 5 --checkpoint-dir /work/runs/lgcn-ds --checkpoint-every 5 \\
        --out /work/runs/lgcn-ds.json > /work/runs/lgcn-ds.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from citeulike_reference import cpu_name, progress_printer  # sibling script

from contract.config import PRESETS, TrainConfig
from contract.spectrum import singular_values
from trainer.checkpoint import CheckpointOptions, list_checkpoints
from trainer.data import Dataset, dataset_from_table, holdout_split, load_dataset
from trainer.device import pick_device
from trainer.distributed import close_world, init_world, launched_by_torchrun
from trainer.launch import run_torchrun, without_option
from trainer.train import ProgressFn, TrainResult, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METHODS: dict[str, tuple[str, str]] = {
    "MF-BPR": ("bpr", "mf"),
    "LightGCN-BPR": ("bpr", "lightgcn"),
    "MF-DirectAU": ("directau", "mf"),
    "MF-align": ("align", "mf"),
    "MF-DirectSpec": ("directspec", "mf"),
    "MF-DirectSpec+": ("directspec+", "mf"),
    "LightGCN-DirectSpec+": ("directspec+", "lightgcn"),
    # the training-free GF-CF filter (trainer/spectral.py): one truncated SVD, no epochs; the
    # encoder is not used
    "Spectral": ("spectral", "mf"),
    "Blend": ("blend", "mf"),
}


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["lr=0.005", "device=\"cpu\""] -> {"lr": 0.005, "device": "cpu"} (JSON, else string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected field=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> str:
    return f"{os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}"


def record(
    out: Path, row: dict[str, Any], key: tuple[str, ...] = ("dataset", "method", "label")
) -> None:
    """Replace the row of `out` with row's values of the `key` fields, or append it; the file
    is written to a temporary name and renamed (never half-written)."""
    rows: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    mine = tuple(row[k] for k in key)
    rows = [r for r in rows if tuple(r[k] for k in key) != mine] + [row]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(out)


def resplit(ds: Dataset, fraction: float, seed: int, name: str) -> Dataset:
    """ds's train and test pairs pooled, then a seeded per-user holdout of `fraction` cut
    (no timestamps: a seeded random choice per user, trainer.data.dataset_from_table)."""
    users = np.concatenate([ds.train_users, ds.test_users])
    items = np.concatenate([ds.train_items, ds.test_items])
    return dataset_from_table(
        name, ds.user_ids[users], ds.item_ids[items], None, holdout=fraction, seed=seed
    )


class RunClock:
    """The wall time and start of a run across resumes: after each checkpoint, ``wall.json``
    beside it maps the epoch to the run's wall seconds so far and its first start, so a resumed
    run's row counts the time before the cut too."""

    def __init__(self, checkpoint: CheckpointOptions, t0: float, started: str) -> None:
        self.path = Path(checkpoint.directory) / "wall.json"
        self.every, self.t0, self.started = checkpoint.every, t0, started
        self.marks: dict[str, dict[str, Any]] = {}
        self.before = 0.0  # wall seconds of the run before this process (resumed)
        if checkpoint.resume and self.path.exists():
            self.marks = json.loads(self.path.read_text())
            written = list_checkpoints(checkpoint.directory)  # fit resumes from the newest
            mark = self.marks.get(str(written[-1][0])) if written else None
            if mark is not None:
                self.before, self.started = mark["wall_seconds"], mark["started"]

    def wrap(self, progress: ProgressFn | None) -> ProgressFn:
        """`progress` (may be None) that also records the wall time after each checkpoint
        (fit writes the epoch's checkpoint before it calls progress)."""

        def call(info: dict[str, Any]) -> None:
            if info["epoch"] % self.every == 0:
                wall = self.before + time.perf_counter() - self.t0
                self.marks[str(info["epoch"])] = {"wall_seconds": wall, "started": self.started}
                tmp = self.path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(self.marks))
                tmp.replace(self.path)
            if progress is not None:
                progress(info)

        return call

    def resumed_wall(self, epoch: int, wall: float) -> dict[str, Any]:
        """The row's wall_seconds and started for a run resumed from `epoch`'s checkpoint:
        the whole run's when wall.json has that epoch, else this process's, said so."""
        mark = self.marks.get(str(epoch))
        if mark is None:
            return {"wall_note": f"wall_seconds: since the resume at epoch {epoch} only"}
        return {"wall_seconds": mark["wall_seconds"] + wall, "started": mark["started"]}


def plateau_summary(res: TrainResult, cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    """What a --plateau row's numbers mean: whether the validation metric levelled off before
    the epoch cap, at which epoch, and which model the test scores are of."""
    val_pairs = ds.n_train - holdout_split(ds, cfg.val_fraction, cfg.seed).n_train
    return {
        "reached": res.stopped_early,
        "plateau_epoch": res.best_epoch,
        "patience": cfg.early_stop_patience,
        "tolerance": cfg.early_stop_min_delta,
        "metric": cfg.early_stop_metric,
        "validation": (
            f"holdout_split(fraction {cfg.val_fraction:g}, seed {cfg.seed}) of the training "
            f"pairs: {val_pairs} pairs, trained on the other {ds.n_train - val_pairs}"
        ),
        "test_model": (
            f"the embeddings of epoch {res.best_epoch} (the last validation gain above the "
            "tolerance) fitted on the training pairs less the validation share; no refit"
        ),
    }


def dataset_fields(ds: Dataset, name: str, split: str) -> dict[str, Any]:
    """A training row's first fields: what it trained and evaluated on."""
    return {
        "benchmark": "training",
        "dataset": name,
        "split": split,
        "users": ds.n_users,
        "items": ds.n_items,
        "train_pairs": ds.n_train,
        "test_pairs": ds.n_test,
    }


def training_row(
    res: TrainResult,
    cfg: TrainConfig,
    ds: Dataset,
    *,
    method: str,
    label: str,
    preset: str | None,
    dataset: str,
    split: str,
    wall: float,
    load_before: float,
    started: str,
    command: str,
    processes: int = 1,
    backend: str | None = None,
) -> dict[str, Any]:
    """The results row of a finished fit(): scores, spectrum, timings, where and how it ran
    (the fields the module docstring lists); bench/gpu_check.py records its runs with it."""
    objective = cfg.objective
    sv = singular_values(np.vstack([res.user_emb, res.item_emb]), normalize_rows=True)
    spec = res.spectrum["all"]["normalized"]
    dim = cfg.spectral_k if objective == "spectral" else cfg.dim
    # the filter's evaluation splits its blocks over num_threads (default 2) threads (a
    # blend's DirectSpec+ part trains on 1)
    threads = cfg.num_threads or (
        2 if objective in ("spectral", "blend") else 1 if res.device == "cpu" else None
    )
    return {
        **dataset_fields(ds, dataset, split),
        "method": method,
        "label": label,
        "encoder": cfg.encoder,
        "objective": objective,
        "preset": preset,
        "epochs": res.epochs_run,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "resumed_from": res.resumed_from,
        "recall@20": res.metrics["recall@20"],
        "ndcg@20": res.metrics["ndcg@20"],
        "erank_normalized": spec["effective_rank"],
        "erank_ratio": spec["effective_rank"] / dim,
        "seconds_per_epoch": res.seconds_per_epoch,
        "wall_seconds": wall,
        "wall_seconds_this_process": wall,
        "device": res.device,
        "threads": threads,
        "processes": processes,
        "backend": backend,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "machine": machine(),
        "started": started,
        "command": command,
        "commit": git_commit(),
        "config": cfg.model_dump(mode="json"),
        "curve": [
            {
                "epoch": h["epoch"],
                "seconds": h["seconds"],
                "split": h["split"],
                "recall@20": h["metrics"]["recall@20"],
                "ndcg@20": h["metrics"]["ndcg@20"],
                "erank_normalized": h["spectrum"]["all"]["normalized"]["effective_rank"],
                **({"model": h["model"]} if "model" in h else {}),
            }
            for h in res.history
        ],
        "singular_values_normalized": [float(s) for s in sv / sv[0]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--label", default="default", help="names this variant in the tables")
    p.add_argument("--preset", choices=list(PRESETS), default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "training.json")
    p.add_argument("--name", default=None, help="the dataset's name in the row (default: dir)")
    p.add_argument(
        "--resplit",
        type=float,
        default=None,
        metavar="FRACTION",
        help="pool train+test and hold out this fraction of each user's pairs (seeded)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of --resplit's holdout")
    p.add_argument(
        "--processes", type=int, default=1, help="data-parallel ranks (torchrun; gloo on CPU)"
    )
    p.add_argument(
        "--plateau",
        type=int,
        default=None,
        metavar="N",
        help="train to a plateau: stop after N validation evaluations without a gain",
    )
    p.add_argument(
        "--plateau-tolerance",
        type=float,
        default=0.0005,
        metavar="DELTA",
        help="a gain counts only above this (absolute validation Recall@20; --plateau)",
    )
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="write checkpoints here")
    p.add_argument(
        "--checkpoint-every", type=int, default=1, metavar="N", help="epochs between checkpoints"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint (if any)"
    )
    args = p.parse_args(argv)
    if args.resume and args.checkpoint_dir is None:
        p.error("--resume needs --checkpoint-dir")
    if args.checkpoint_every < 1:
        p.error(f"--checkpoint-every {args.checkpoint_every}: expected >= 1")
    if args.plateau is not None and args.plateau < 1:
        p.error(f"--plateau {args.plateau}: expected >= 1")
    given = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["python", "bench/train_bench.py", *given])
    if args.processes > 1 and not launched_by_torchrun():
        return run_torchrun(args.processes, [__file__, *without_option(given, "--processes")])

    objective, encoder = METHODS[args.method]
    overrides = parse_sets(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.eval_every is not None:
        overrides["eval_every"] = args.eval_every
    if args.plateau is not None:
        overrides["early_stop_patience"] = args.plateau
        overrides["early_stop_min_delta"] = args.plateau_tolerance
    cfg = TrainConfig.defaults(objective, encoder, preset=args.preset, **overrides)
    world = init_world(pick_device(cfg.device))
    if world.parallel:  # a rank: the launch's option was taken off its command line
        command += f" --processes {world.size}"
    ds = load_dataset(args.data)
    name = args.name or args.data.resolve().name
    split = "published"
    if args.resplit is not None:
        ds = resplit(ds, args.resplit, args.split_seed, name)
        split = (
            f"{args.data.resolve().name} train+test pooled ({ds.n_train + ds.n_test} pairs), "
            f"per-user holdout {args.resplit:g} seed {args.split_seed}"
        )
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")

    printer = progress_printer(f"{args.method} {args.label}") if world.is_main else None
    checkpoint, clock = None, None
    if args.checkpoint_dir is not None:
        checkpoint = CheckpointOptions(args.checkpoint_dir, args.checkpoint_every, args.resume)
        if world.is_main:
            clock = RunClock(checkpoint, t0, started)
            printer = clock.wrap(printer)
    res = fit(ds, cfg, progress=printer, progress_bar=False, world=world, checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    close_world(world)
    if not world.is_main:
        return 0
    row = training_row(
        res,
        cfg,
        ds,
        method=args.method,
        label=args.label,
        preset=args.preset,
        dataset=name,
        split=split,
        wall=wall,
        load_before=load_before[0],
        started=started,
        command=command,
        processes=world.size,
        backend=world.backend,
    )
    if objective == "blend":  # DirectSpec+'s epochs, then the filter and the blend's evaluation
        row["blend_weight"] = res.extra["blend_weight"]
        row["blend_selection"] = res.extra["blend_selection"]
        row["seconds_filter_fit"] = res.extra["seconds_filter_fit"]
        row["seconds_eval"] = res.extra["seconds_eval"]
    if clock is not None and res.resumed_from is not None:
        row |= clock.resumed_wall(res.resumed_from, wall)
    if args.plateau is not None:
        row["plateau"] = plateau_summary(res, cfg, ds)
    if objective == "spectral":  # no epochs: fit (one SVD) and evaluation, timed apart
        row["seconds_fit"] = res.seconds_per_epoch
        row["seconds_eval"] = res.extra["seconds_eval"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record(args.out, row)
    print(
        f"{args.method} [{args.label}] {row['dataset']}: R@20 {row['recall@20']:.4f} "
        f"NDCG@20 {row['ndcg@20']:.4f} erank {row['erank_normalized']:.1f} "
        f"{row['seconds_per_epoch']:.2f} s/epoch, {res.epochs_run} epochs -> {args.out}"
    )
    if args.plateau is not None:
        reached = "reached" if res.stopped_early else "not reached by the epoch cap"
        print(f"plateau {reached}; test scores of epoch {res.best_epoch}'s embeddings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
