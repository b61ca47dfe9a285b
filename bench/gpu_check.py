"""The GPU measurements of issue #11 in one process, each part under its own time budget.

Parts, in order (``--only`` picks some):

- ``env``: torch, CUDA, the device, faiss and whether it has GPU support.
- ``evaluation``: full-ranking Recall/NDCG@20 of Gowalla-shaped embeddings (the dataset's
  users and items, d 64, seeded) on the device, median of 3 after a warm-up, against the
  same evaluation on the CPU (time and metrics; target <= 2 s).
- ``train``: MF-DirectSpec+ and LightGCN-DirectSpec+ (preset gowalla-reference) and
  LightGCN-BPR (its defaults) on the device. Each is first timed on a few steps
  (bench/speed.py's ``time_epoch``), then trained by fit() for as many epochs as its budget
  holds (at most 300), evaluating every ``eval_every``; each run's row, in
  bench/train_bench.py's format (``device: cuda``), goes to ``training_gpu.json``.
  Targets: MF-DirectSpec+ <= 1 s/epoch, LightGCN-DirectSpec+ <= 5 s/epoch.
- ``profile``: for each case over its target (all with ``--profile always``), torch.profiler
  over a few steps: kernel launches and host syncs per step, time in sparse ops, and the top
  ops by device time (``profile_<case>.txt``).
- ``index``: exact top-20 over ``--items`` x 64 vectors (a seeded Gaussian mixture, rows
  normalised), each query's 30 seen items excluded: the service's CPU exact search
  (``NumpyExactIndex``) and faiss's CPU ``IndexFlatIP`` against faiss-gpu's (``FaissIndex``,
  ``use_gpu``: flat, and IVF with its recall against exact), single queries and batches of
  256, latency and queries/s; torch's matmul + topk on the device as a reference that is not
  the service's path. Without faiss-gpu its rows say why.

Everything measured goes to ``--out``/gpu_check.json (rewritten after each part, so a run cut
off keeps what it had) and is printed. bench/gpu_check.sh runs this on the lent GPU machine;
``--device cpu --scale 0.05 --items 20000`` runs every part here (tests/project/
test_gpu_check.py does, on a small dataset).

    python bench/gpu_check.py --data bench/.data/gowalla --device cuda --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from citeulike_reference import cpu_name, progress_printer  # sibling scripts
from serve_common import recall, timed_search
from speed import time_epoch
from train_bench import git_commit, record, training_row

from contract.config import TrainConfig
from trainer.data import Dataset, load_dataset
from trainer.evaluate import evaluate
from trainer.train import fit

# (case, objective, encoder, preset, target s/epoch or None, train budget s, eval_every)
CASES: list[tuple[str, str, str, str | None, float | None, float, int]] = [
    ("MF-DirectSpec+", "directspec+", "mf", "gowalla-reference", 1.0, 110.0, 25),
    ("LightGCN-DirectSpec+", "directspec+", "lightgcn", "gowalla-reference", 5.0, 80.0, 5),
    ("LightGCN-BPR", "bpr", "lightgcn", None, None, 30.0, 1_000_000),
]
EVAL_TARGET_S = 2.0
MAX_EPOCHS = 300
SEEN_PER_QUERY = 30


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


# --- parts -------------------------------------------------------------------------------


def part_env(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    import faiss

    dev = torch.device(args.device)
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(dev),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        out |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    return out


def _gowalla_shaped(ds: Dataset, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded unit-norm user and item vectors for ds's users and items, (m, d) and (n, d)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(ds.n_users, dim, generator=gen), dim=1)
    i = torch.nn.functional.normalize(torch.randn(ds.n_items, dim, generator=gen), dim=1)
    return u, i


def part_evaluation(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    ds, dev = state["ds"], torch.device(args.device)
    train, test = ds.train_matrix(), ds.test_matrix()
    u, i = _gowalla_shaped(ds)
    ud, idev = u.to(dev), i.to(dev)
    warm, _ = timed(lambda: evaluate(ud, idev, train, test), dev)
    times, got = [], {}
    for _ in range(3):
        t, got = timed(lambda: evaluate(ud, idev, train, test), dev)
        times.append(t)
    cpu_s, want = timed(lambda: evaluate(u, i, train, test), torch.device("cpu"))
    diff = max(abs(got[k] - want[k]) for k in ("recall@20", "ndcg@20"))
    seconds = float(np.median(times))
    state["eval_seconds"] = seconds
    return {
        "users": ds.n_users,
        "items": ds.n_items,
        "test_users": got["n_users"],
        "seconds": seconds,
        "seconds_runs": times,
        "seconds_first": warm,
        "cpu_seconds": cpu_s,
        "cpu_threads": torch.get_num_threads(),
        "target_seconds": EVAL_TARGET_S,
        "met": seconds <= EVAL_TARGET_S,
        "recall@20": got["recall@20"],
        "ndcg@20": got["ndcg@20"],
        "max_abs_diff_vs_cpu": diff,
        "matches_cpu": diff <= 1e-5,
    }


def epochs_in_budget(budget: float, per_epoch: float, eval_s: float, every: int) -> int:
    """Epochs (at most MAX_EPOCHS, a multiple of `every` when it fits one) whose training and
    evaluations fit `budget` seconds, at least 1."""
    per = per_epoch + eval_s / max(every, 1)
    n = min(MAX_EPOCHS, math.floor(budget / max(per, 1e-9) + 1e-9))  # 110 / 1.1 is 99.99..
    if n >= every:
        n -= n % every
    return max(1, n)


def quiet_printer(case: str, every: int) -> Callable[[dict[str, Any]], None]:
    """fit()'s progress line for the evaluated epochs only (hundreds of epochs, one log)."""
    line = progress_printer(case)

    def progress(info: dict[str, Any]) -> None:
        if info["epoch"] % every == 0 or info["epoch"] == info["epochs"]:
            line(info)

    return progress


def part_train(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    ds, out = state["ds"], {}
    eval_s = state.get("eval_seconds", 1.0) + 0.5  # + the spectrum and the copies per eval
    for case, objective, encoder, preset, target, budget, every in CASES:
        if args.cases and case not in args.cases:
            continue
        budget *= args.scale
        base = TrainConfig.defaults(objective, encoder, preset=preset, device=args.device)
        gcn = encoder == "lightgcn"
        t0 = time.perf_counter()
        probe, _, steps, per_epoch = time_epoch(ds, base, max_steps=8 if gcn else 60)
        probe_s = time.perf_counter() - t0
        epochs = epochs_in_budget(budget - probe_s, probe, eval_s, every)
        cfg = base.model_copy(update={"epochs": epochs, "eval_every": min(every, epochs)})
        load = os.getloadavg()[0]
        started = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        res = fit(ds, cfg, progress=quiet_printer(case, cfg.eval_every), progress_bar=False)
        wall = time.perf_counter() - t0
        row = training_row(
            res,
            cfg,
            ds,
            method=case,
            label="gpu",
            preset=preset,
            dataset=state["dataset"],
            split="published",
            wall=wall,
            load_before=load,
            started=started,
            command=state["command"],
        )
        row["gpu"] = state["env"].get("gpu")
        record(args.out / "training_gpu.json", row)
        state.setdefault("per_epoch", {})[case] = res.seconds_per_epoch
        out[case] = {
            "device": res.device,
            "probe_seconds_per_epoch": probe,
            "probe_steps": steps,
            "steps_per_epoch": per_epoch,
            "epochs": res.epochs_run,
            "budget_seconds": budget,
            "seconds_per_epoch": res.seconds_per_epoch,
            "target_seconds_per_epoch": target,
            "met": None if target is None else res.seconds_per_epoch <= target,
            "recall@20": res.metrics["recall@20"],
            "ndcg@20": res.metrics["ndcg@20"],
            "curve": [(h["epoch"], h["metrics"]["recall@20"]) for h in res.history],
            "wall_seconds": wall,
        }
        print(
            f"{case}: {res.seconds_per_epoch:.3f} s/epoch, {res.epochs_run} epochs, "
            f"R@20 {res.metrics['recall@20']:.4f}",
            flush=True,
        )
    return out


def profile_steps(ds: Dataset, cfg: TrainConfig, steps: int) -> tuple[Any, int]:
    """torch.profiler over `steps` optimiser steps of fit()'s training step (after 3 warm-up
    steps): the profile and the number of steps in it."""
    from torch.profiler import ProfilerActivity, profile

    from trainer.objectives import BatchLoss
    from trainer.optim import build_optimizer
    from trainer.sampling import CSR, PairSampler, UserItemSampler
    from trainer.train import build_encoder, groups, row_catch_up, train_step

    dev = torch.device(cfg.device)
    train = ds.train_matrix()
    enc = build_encoder(cfg, train, dev, torch.Generator().manual_seed(0))
    opt = build_optimizer(cfg, enc)
    graph = CSR(train, dev)
    gen = torch.Generator(device=dev).manual_seed(1)
    if cfg.sampler == "user":
        sampler: Any = UserItemSampler(graph, cfg.batch_size, gen)
    else:
        sampler = PairSampler(graph, cfg.batch_size, gen, negatives=cfg.objective == "bpr")
    loss_fn, hook = BatchLoss(cfg, enc, graph, None), row_catch_up(opt, enc)

    def endless() -> Any:  # a small dataset's epoch can be shorter than warm-up + steps
        while True:
            yield from groups(sampler.epoch(), cfg.sub_batches)

    batches = endless()
    for _, group in zip(range(3), batches, strict=False):
        train_step(loss_fn.summed, opt, group, hook)
    sync(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    done = 0
    with profile(activities=activities) as prof:
        for _, group in zip(range(steps), batches, strict=False):
            train_step(loss_fn.summed, opt, group, hook)
            done += 1
        sync(dev)
    return prof, done


SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::_local_scalar_dense")


def profile_summary(prof: Any, steps: int, on_cuda: bool) -> dict[str, Any]:
    """Kernel launches and host syncs per step, the time in sparse propagation (per step and
    as a share of all ops' self time), and the top ops by self device (CPU: self CPU) time."""
    events = prof.key_averages()

    def self_time(e: Any) -> float:  # microseconds
        return float(e.self_device_time_total if on_cuda else e.self_cpu_time_total)

    def inclusive(e: Any) -> float:
        return float(e.device_time_total if on_cuda else e.cpu_time_total)

    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    syncs = sum(e.count for e in events if e.key in SYNC_EVENTS)
    total = sum(self_time(e) for e in events) or 1.0
    # LightGCN's propagation: torch.sparse.mm, forward and backward (trainer/encoders.py)
    sparse = sum(inclusive(e) for e in events if e.key == "aten::_sparse_mm")
    top = sorted(events, key=self_time, reverse=True)[:12]
    return {
        "steps": steps,
        "kernel_launches_per_step": launches / max(steps, 1),
        "host_syncs_per_step": syncs / max(steps, 1),
        "sparse_ms_per_step": sparse / 1e3 / max(steps, 1),
        "sparse_share": min(1.0, sparse / total),
        "top": [{"op": e.key, "self_ms": self_time(e) / 1e3, "calls": e.count} for e in top],
    }


def part_profile(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    ds, out = state["ds"], {}
    per_epoch = state.get("per_epoch", {})
    on_cuda = torch.device(args.device).type == "cuda"
    for case, objective, encoder, preset, target, _, _ in CASES:
        if args.cases and case not in args.cases:
            continue
        missed = target is not None and per_epoch.get(case, math.inf) > target
        if not (missed or args.profile == "always"):
            continue
        cfg = TrainConfig.defaults(objective, encoder, preset=preset, device=args.device)
        prof, steps = profile_steps(ds, cfg, 4 if encoder == "lightgcn" else 20)
        sort = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
        name = "profile_" + case.replace("+", "plus").replace("-", "_") + ".txt"
        (args.out / name).write_text(prof.key_averages().table(sort_by=sort, row_limit=25))
        out[case] = profile_summary(prof, steps, on_cuda) | {"table": name}
    return out


def _mixture(n: int, d: int, seed: int) -> np.ndarray:
    """n seeded unit rows around 64 random centres, (n, d) float32 (built in chunks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 262_144):
        hi = min(n, lo + 262_144)
        x = centres[rng.integers(0, 64, hi - lo)] + rng.standard_normal((hi - lo, d), np.float32)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latency_fields(single_ms: np.ndarray, batch_ms: list[float]) -> dict[str, Any]:
    """A row's timings: single queries' p50/p99 (ms) and queries/s, batches of 256's median
    (ms) and queries/s (None without batches)."""
    bms = float(np.median(batch_ms)) if batch_ms else None
    return {
        "single_p50_ms": float(np.percentile(single_ms, 50)),
        "single_p99_ms": float(np.percentile(single_ms, 99)),
        "single_qps": float(len(single_ms) / (single_ms.sum() / 1e3)),
        "singles": len(single_ms),
        "batch256_ms": bms,
        "batch256_qps": 256 / (bms / 1e3) if bms else None,
        "batches": len(batch_ms),
    }


def _search_rows(
    label: str,
    index: Any,
    queries: np.ndarray,
    banned: list[np.ndarray],
    singles: int,
    batches: int,
    exact: list[np.ndarray] | None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Single-query latency on `singles` queries (after 3 untimed) and batches of 256
    (``latency_fields``), and recall@20 of the single answers against `exact`."""
    rows, ms = timed_search(index, queries[:singles], banned[:singles], warmup=3)
    batch_ms = []
    for k in range(batches):
        lo = (k * 256) % max(len(queries) - 256, 1)
        t = time.perf_counter()
        index.search(queries[lo : lo + 256], [20] * 256, banned[lo : lo + 256])
        batch_ms.append((time.perf_counter() - t) * 1e3)
    row = {"index": label, **latency_fields(ms, batch_ms)}
    if exact is not None:
        row["recall@20"] = recall(rows, exact[: len(rows)])
    print(f"  {label}: {row}", flush=True)
    return row, rows


def _torch_topk_rows(items: np.ndarray, queries: np.ndarray, singles: int, device: str) -> dict:
    """matmul + topk on the device (no exclusion): the GPU's exact-scan reference."""
    dev = torch.device(device)
    it, qs = torch.from_numpy(items).to(dev), torch.from_numpy(queries).to(dev)
    for _ in range(3):
        torch.topk(qs[:1] @ it.T, 20)
    sync(dev)
    times = []
    for k in range(singles):
        t, _ = timed(lambda k=k: torch.topk(qs[k : k + 1] @ it.T, 20).indices.cpu(), dev)
        times.append(t * 1e3)
    batch_ms = [
        timed(lambda: torch.topk(qs[:256] @ it.T, 20).indices.cpu(), dev)[0] * 1e3
        for _ in range(10)
    ]
    return {
        "index": f"torch matmul+topk on {device} (reference, not the service's path)",
        **latency_fields(np.asarray(times), batch_ms),
    }


def part_index(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from service import index as index_module
    from service.index import FaissIndex, NumpyExactIndex
    from service.settings import IndexSettings

    n, d = args.items, 64
    t0 = time.perf_counter()
    items = _mixture(n, d, seed=1)
    queries = _mixture(2048, d, seed=2)
    rng = np.random.default_rng(3)
    banned = [np.sort(rng.choice(n, SEEN_PER_QUERY, replace=False)) for _ in queries]
    out: dict[str, Any] = {"items": n, "dim": d, "seen_per_query": SEEN_PER_QUERY, "rows": []}
    out["data_seconds"] = time.perf_counter() - t0
    singles = max(20, int(200 * args.scale))
    cpu_singles = max(20, int(50 * args.scale))
    exact = NumpyExactIndex(items)
    row, truth = _search_rows("numpy exact (CPU)", exact, queries, banned, singles, 3, None)
    out["rows"].append(row)
    flat_cpu = FaissIndex(items, IndexSettings(index_kind="flat", use_gpu=False))
    row, _ = _search_rows(
        "faiss IndexFlatIP (CPU)", flat_cpu, queries, banned, cpu_singles, 3, truth
    )
    out["rows"].append(row)
    if index_module.HAS_FAISS_GPU:
        for kind, nprobe in (("flat", None), ("ivf", 16), ("ivf", 64)):
            t0 = time.perf_counter()
            settings = IndexSettings(index_kind=kind, use_gpu=True, ivf_nprobe=nprobe or 32)
            gpu = FaissIndex(items, settings)
            built = time.perf_counter() - t0
            label = f"faiss-gpu {kind}" + (f" nlist {gpu.nlist} nprobe {nprobe}" if nprobe else "")
            row, _ = _search_rows(label, gpu, queries, banned, singles, 20, truth)
            out["rows"].append(row | {"build_seconds": built, "on_gpu": gpu.on_gpu})
    else:
        out["faiss_gpu"] = (
            "not measured: faiss here has no GPU support (faiss-gpu-cu12 needs the CUDA 12 "
            "runtime and cuBLAS wheels, which are not on this machine)"
        )
    out["rows"].append(_torch_topk_rows(items, queries, singles, args.device))
    return out


# the index part before training: it does not need its results, and a run cut off by its
# time limit loses the last parts
PARTS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]]] = {
    "env": part_env,
    "evaluation": part_evaluation,
    "index": part_index,
    "train": part_train,
    "profile": part_profile,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="dataset directory (Gowalla)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, required=True, help="folder for the results")
    p.add_argument("--only", nargs="*", choices=list(PARTS), default=None)
    p.add_argument("--cases", nargs="*", default=None, help="training cases (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every time budget")
    p.add_argument("--items", type=int, default=1_000_000, help="index part: item count")
    p.add_argument("--profile", choices=["missed", "always"], default="missed")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ds = load_dataset(args.data)
    state: dict[str, Any] = {
        "ds": ds,
        "dataset": args.data.resolve().name,
        "command": shlex.join(["python", "bench/gpu_check.py", *given]),
        "env": {},
    }
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "dataset": state["dataset"],
        "command": state["command"],
        "commit": git_commit(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": round(os.getloadavg()[0], 2),
        "parts": {},
    }
    failed = 0
    for name, part in PARTS.items():
        if name != "env" and args.only is not None and name not in args.only:
            continue
        print(f"== {name} ==", flush=True)
        t0 = time.perf_counter()
        try:
            result = part(args, state) | {"status": "ok"}
        except Exception as e:  # one part's failure is reported and the others still run
            traceback.print_exc()
            result, failed = {"status": "failed", "error": f"{type(e).__name__}: {e}"}, failed + 1
        result["part_seconds"] = time.perf_counter() - t0
        if name == "env":
            state["env"] = result
        report["parts"][name] = result
        report["wall_seconds"] = time.perf_counter() - t_start
        if torch.device(args.device).type == "cuda":
            report["gpu_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        tmp = args.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
        tmp.replace(args.out / "gpu_check.json")
        print(json.dumps({name: result}, default=str), flush=True)
    print(
        f"gpu_check: {len(report['parts'])} parts, {failed} failed, "
        f"{report['wall_seconds']:.0f} s -> {args.out}",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
