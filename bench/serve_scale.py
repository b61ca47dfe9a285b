"""10^6 users x 10^6 items on one machine: data, training, and the item index on trained vectors.

Stages, each resumable (its output under ``--work``, default /work/scale, is kept and skipped
next time; ``--force STAGE`` redoes one):

1. ``data``: ``trainer.synthetic_large`` (the default dataset's degree distribution and
   power-law popularity, drawn without scoring users x items) -> ``data/<tag>/train.txt``,
   ``test.txt`` (LightGCN format, seeded 20 % per-user holdout).
2. ``train``: MF-DirectSpec+ and MF-BPR (``TrainConfig.defaults``, ``--epochs`` each, default 3),
   each with ``fit()`` in a child process on the training pairs (OMP/MKL threads ``--threads``;
   fit's torch threads are ``--torch-threads``, 0 = fit's auto, one thread on CPU): seconds
   per epoch, the child's peak RSS, the normalised effective rank of [U; I], and Recall@20 on a
   seeded sample of ``--eval-users`` test users (full ranking over all items with their
   training items masked; all 10^6 users would be 10^12 scores) -> ``vectors/<objective>/``
   ``user.npy``, ``item.npy``, ``train.json``; a row per method in ``--train-out``.
3. ``index``: per set of trained vectors, in a child process with one BLAS/OpenMP thread:
   exact numpy search (the service's NumpyExactIndex), IVF (default nlist, ``--nprobe`` grid)
   and HNSW (M ``--hnsw-m``, efConstruction ``--hnsw-ef-construction``, ``--ef`` grid), each
   built as the service builds it (FAISS with every core; IVF for every set of vectors first,
   then HNSW, whose build takes many minutes at 10^6 items: ``--skip hnsw`` leaves it out).
   ``--queries`` seeded users query with their training items excluded; recall@20 of each
   approximate answer against the exact one; p50/p99 of the service's ``index.search`` per
   single query on one thread, after a few warm-up queries -> one row per index setting in
   ``--out``.

Every row records the command, the commit, the machine and the 1-minute load average before
and after (the machine is shared).

    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 nohup .venv/bin/python bench/serve_scale.py \\
        --users 1000000 --items 1000000 --epochs 3 > /work/scale/run.log 2>&1 &
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
from serve_common import recall, timed_search  # sibling script

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = {"directspec+": "MF-DirectSpec+", "bpr": "MF-BPR"}
STAGES = ("data", "train", "index")
INDEX_KINDS = ("ivf", "hnsw")  # each run also times exact search, the ground truth
K = 20


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to a temporary name, then rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def save_npy(path: Path, arr: np.ndarray) -> None:
    """np.save to a temporary name, then rename."""
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def sample_users(candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sorted sample of `size` rows of `candidates` (all of them when fewer)."""
    rng = np.random.default_rng(seed)
    if size >= len(candidates):
        return np.sort(candidates)
    return np.sort(rng.choice(candidates, size, replace=False))


# ---------------------------------------------------------------------------- child stages


def child_data(args: argparse.Namespace) -> dict[str, Any]:
    from trainer.synthetic_large import write_lightgcn

    if (args.data_dir / "test.txt").exists():
        return {"seconds": None, "peak_rss_mib": None, "note": f"kept {args.data_dir}"}
    t = time.perf_counter()
    write_lightgcn(args.data_dir, args.users, args.items, args.seed)
    return {"seconds": time.perf_counter() - t, "peak_rss_mib": peak_rss_mib()}


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """Popularity's Recall@20 on the users child_train evaluates (same seeded sample)."""
    import scipy.sparse as sp

    from trainer.data import load_dataset
    from trainer.evaluate import evaluate_popularity

    ds = load_dataset(args.data_dir)
    test = ds.test_matrix()
    rows = sample_users(np.flatnonzero(np.diff(test.indptr)), args.eval_users, args.seed)
    keep = np.zeros(ds.n_users, dtype=np.float32)
    keep[rows] = 1.0
    sampled = (sp.diags(keep) @ test).tocsr()  # test pairs of the sampled users only
    sampled.eliminate_zeros()
    metrics = evaluate_popularity(ds.train_matrix(), sampled, ks=(K,))
    return {
        "popularity_recall@20_sample": metrics[f"recall@{K}"],
        "eval_users": int(metrics["n_users"]),
    }


def child_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from contract.config import TrainConfig
    from trainer.data import Dataset, load_dataset
    from trainer.evaluate import evaluate
    from trainer.train import fit

    t = time.perf_counter()
    ds = load_dataset(args.data_dir)
    load_s = time.perf_counter() - t
    empty = np.empty(0, np.int64)
    train_only = Dataset(
        ds.name, ds.user_ids, ds.item_ids, ds.train_users, ds.train_items, empty, empty
    )
    cfg = TrainConfig.defaults(
        args.objective,
        "mf",
        preset=args.preset,
        epochs=args.epochs,
        eval_every=args.epochs,
        ks=(K,),
        num_threads=args.torch_threads,
        device="cpu",
    )
    epoch_s: list[float] = []

    def progress(info: dict[str, Any]) -> None:
        epoch_s.append(info["seconds"])
        print(
            f"[{args.objective}] epoch {info['epoch']} loss {info['loss']:.5f} "
            f"{info['seconds']:.1f}s",
            flush=True,
        )

    rss_loaded = peak_rss_mib()
    t = time.perf_counter()
    res = fit(train_only, cfg, progress=progress, progress_bar=False)
    fit_s = time.perf_counter() - t
    rss_fit = peak_rss_mib()
    out = args.work / "vectors" / args.objective
    out.mkdir(parents=True, exist_ok=True)
    save_npy(out / "user.npy", res.user_emb)
    save_npy(out / "item.npy", res.item_emb)

    # Recall@20 by full ranking on a seeded sample of the users with test items
    test = ds.test_matrix()
    rows = sample_users(np.flatnonzero(np.diff(test.indptr)), args.eval_users, args.seed)
    t = time.perf_counter()
    metrics = evaluate(
        torch.from_numpy(res.user_emb[rows]),
        torch.from_numpy(res.item_emb),
        ds.train_matrix()[rows],
        test[rows],
        ks=(K,),
        batch_users=256,
    )
    spec = res.spectrum["all"]["normalized"]
    return {
        "objective": args.objective,
        "method": OBJECTIVES[args.objective],
        "preset": args.preset,
        "config": cfg.to_dict(),
        "epochs": res.epochs_run,
        "seconds_per_epoch": epoch_s,
        "fit_seconds": fit_s,
        "load_seconds": load_s,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "train_pairs": ds.n_train,
        "test_pairs": ds.n_test,
        "peak_rss_mib_loaded": rss_loaded,
        "peak_rss_mib_fit": rss_fit,
        "recall@20_sample": metrics[f"recall@{K}"],
        "ndcg@20_sample": metrics[f"ndcg@{K}"],
        "eval_users": int(metrics["n_users"]),
        "eval_seconds": time.perf_counter() - t,
        "erank_normalized": spec["effective_rank"],
        "erank_ratio": spec["effective_rank"] / cfg.dim,
        "torch_threads": cfg.num_threads or 1,
    }


def child_index(args: argparse.Namespace) -> dict[str, Any]:
    from service.index import NumpyExactIndex, build_index, set_search_threads
    from service.settings import IndexSettings
    from trainer.readers import read_lightgcn_file

    vec = args.work / "vectors" / args.objective
    users_emb, items_emb = np.load(vec / "user.npy"), np.load(vec / "item.npy")
    tr_u, tr_i, _ = read_lightgcn_file(Path(args.data_dir) / "train.txt")
    order = np.argsort(tr_u, kind="stable")
    tr_u, tr_i = tr_u[order], tr_i[order]
    who = sample_users(np.arange(len(users_emb)), args.queries, args.seed + 1)
    bounds = np.searchsorted(tr_u, np.stack([who, who + 1]))
    banned = [np.unique(tr_i[a:b]) for a, b in bounds.T]
    queries = np.ascontiguousarray(users_emb[who], dtype=np.float32)
    del tr_u, tr_i, order

    results: list[dict[str, Any]] = []

    def add(
        label: str,
        kind: str,
        params: dict[str, Any],
        build_s: float,
        ms: np.ndarray,
        rec: float,
        extra: dict[str, Any],
    ) -> None:
        results.append(
            {
                "index": label,
                "index_kind": kind,
                "params": params,
                "recall@20": rec,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "build_s": build_s,
                **extra,
            }
        )
        print(
            f"[{args.objective}] {label}: recall@20 {rec:.4f} p50 {results[-1]['p50_ms']:.3f}"
            f" ms p99 {results[-1]['p99_ms']:.3f} ms build {build_s:.1f}s",
            flush=True,
        )

    set_search_threads(1)
    t = time.perf_counter()
    exact_index = NumpyExactIndex(items_emb)
    build = time.perf_counter() - t
    exact, ms = timed_search(exact_index, queries, banned, warmup=5)
    add("exact (numpy)", "flat", {}, build, ms, 1.0, {"build_threads": 1})
    del exact_index

    cpus = os.cpu_count() or 1
    sweeps = [
        ("ivf", IndexSettings(index_kind="ivf", use_gpu=False), "nprobe", args.nprobe),
        (
            "hnsw",
            IndexSettings(
                index_kind="hnsw",
                use_gpu=False,
                hnsw_m=args.hnsw_m,
                hnsw_ef_construction=args.hnsw_ef_construction,
            ),
            "ef_search",
            args.ef,
        ),
    ]
    for kind, settings, param, grid in sweeps:
        if kind != args.kind:
            continue
        t = time.perf_counter()
        index = build_index(items_emb, settings)  # every core, as the service builds it
        build = time.perf_counter() - t
        set_search_threads(1)
        for value in grid:
            approx, ms = timed_search(index, queries, banned, warmup=5, **{param: value})
            if kind == "ivf":
                nlist = getattr(index, "nlist", 0)
                label = f"IVF nlist={nlist}, nprobe={value}"
                params = {"nlist": nlist, "nprobe": value}
            else:
                label = f"HNSW M={args.hnsw_m}, efC={args.hnsw_ef_construction}, efSearch={value}"
                params = {
                    "M": args.hnsw_m,
                    "efConstruction": args.hnsw_ef_construction,
                    "efSearch": value,
                }
            add(label, kind, params, build, ms, recall(approx, exact), {"build_threads": cpus})
        del index
    return {"rows": results, "queries": len(who), "peak_rss_mib": peak_rss_mib()}


CHILDREN = {
    "data": child_data,
    "baseline": child_baseline,
    "train": child_train,
    "index": child_index,
}


# ---------------------------------------------------------------------------- the parent


def run_child(
    args: argparse.Namespace, stage: str, out: Path, provenance: dict[str, str], **extra: str
) -> dict[str, Any]:
    """Run `stage` in a child process (its own peak RSS); return and keep its JSON result,
    with `provenance` (the command and commit that measured it: a kept result keeps its own)."""
    if out.exists() and stage not in args.force:
        print(f"{stage} {extra}: kept {out}", flush=True)
        return json.loads(out.read_text())
    cmd = [sys.executable, __file__, *args.argv, "--child", stage]
    for key, value in extra.items():
        cmd += [f"--{key}", value]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if stage == "index":  # search timings on one thread; FAISS builds set their own
        env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=None, stderr=None)
    result = json.loads(out.with_suffix(".child.json").read_text())
    result |= provenance | {
        "wall_seconds": time.perf_counter() - t,
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    write_json(out, result)
    out.with_suffix(".child.json").unlink()
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/work/scale"))
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--preset", default=None, help="contract.config.PRESETS name (DirectSpec+)")
    ap.add_argument("--objectives", default="directspec+,bpr")
    ap.add_argument("--torch-threads", type=int, default=0, help="fit's num_threads (0 = auto)")
    ap.add_argument("--eval-users", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nprobe", default="8,16,32,64,128")
    ap.add_argument("--ef", default="32,64,128,256,512")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=80)
    ap.add_argument("--skip", default="", help="index kinds not to build, e.g. hnsw")
    ap.add_argument("--kind", default="ivf", choices=INDEX_KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--force", default="", help="stages to redo, e.g. index")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "serving_scale.json")
    ap.add_argument(
        "--train-out", type=Path, default=ROOT / "docs" / "results" / "training_scale.json"
    )
    ap.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--objective", choices=list(OBJECTIVES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = argv
    args.nprobe = [int(x) for x in args.nprobe.split(",")]
    args.ef = [int(x) for x in args.ef.split(",")]
    args.skip = set(filter(None, args.skip.split(",")))
    args.force = set(filter(None, args.force.split(",")))
    args.tag = f"{args.users}x{args.items}-s{args.seed}"
    args.data_dir = args.work / "data" / args.tag
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child is not None:
        result = CHILDREN[args.child](args)
        name = args.child if args.objective is None else f"{args.child}-{args.objective}"
        if args.child == "index" and args.kind != "ivf":
            name += f"-{args.kind}"
        write_json(args.work / "stages" / f"{name}.child.json", result)
        return 0

    sys.path.insert(0, str(ROOT / "bench"))
    from train_bench import git_commit, machine, record  # sibling script

    command = (
        "OMP_NUM_THREADS={} MKL_NUM_THREADS={} .venv/bin/python bench/serve_scale.py {}".format(
            os.environ.get("OMP_NUM_THREADS", "-"),
            os.environ.get("MKL_NUM_THREADS", "-"),
            shlex.join(argv),
        )
    )
    provenance = {"command": command, "commit": git_commit()}
    stages = args.work / "stages"
    stages_wanted = set(args.stages.split(","))
    if "data" in stages_wanted:
        data = run_child(args, "data", stages / "data.json", provenance)
    else:
        data = json.loads((stages / "data.json").read_text())
    common = {
        "dataset": f"synthetic_large {args.tag}",
        "users": args.users,
        "items": args.items,
        "machine": machine(),
    }
    objectives = [o for o in args.objectives.split(",") if o]
    trained: dict[str, dict[str, Any]] = {}
    if "train" in stages_wanted:
        baseline = run_child(args, "baseline", stages / "baseline.json", provenance)
    for objective in objectives:
        if "train" not in stages_wanted:
            continue
        res = run_child(
            args, "train", stages / f"train-{objective}.json", provenance, objective=objective
        )
        trained[objective] = res
        record(
            args.train_out,
            {
                "benchmark": "training_scale",
                **common,
                "data_seconds": data.get("seconds"),
                "data_peak_rss_mib": data.get("peak_rss_mib"),
                "interactions": res["train_pairs"] + res["test_pairs"],
                "vectors": objective,
                "popularity_recall@20_sample": baseline["popularity_recall@20_sample"],
                **provenance,
                **res,
                "users": res.get("n_users", args.users),
                "items": res.get("n_items", args.items),
            },
            key=("dataset", "vectors"),
        )
    # IVF on every set of vectors first, then the (much slower) HNSW builds
    kinds = [k for k in INDEX_KINDS if k not in args.skip and "index" in stages_wanted]
    for kind, objective in ((k, o) for k in kinds for o in objectives):
        train = trained.get(objective) or json.loads(
            (stages / f"train-{objective}.json").read_text()
        )
        name = f"index-{objective}" + ("" if kind == "ivf" else f"-{kind}")
        res = run_child(
            args, "index", stages / f"{name}.json", provenance, objective=objective, kind=kind
        )
        for row in res["rows"]:
            record(
                args.out,
                {
                    "benchmark": "serving_scale",
                    **common,
                    "users": train.get("n_users", args.users),
                    "items": train.get("n_items", args.items),
                    "interactions": train["train_pairs"] + train["test_pairs"],
                    "train_pairs": train["train_pairs"],
                    "vectors": objective,
                    "method": OBJECTIVES[objective],
                    "epochs": train["epochs"],
                    "erank_normalized": train["erank_normalized"],
                    **row,
                    "threads": 1,
                    "queries": res["queries"],
                    "command": res.get("command", provenance["command"]),
                    "commit": res.get("commit", provenance["commit"]),
                    "peak_rss_mib": res["peak_rss_mib"],
                    "loadavg_before": res["loadavg_before"],
                    "loadavg_after": res["loadavg_after"],
                },
                key=("dataset", "vectors", "index"),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
