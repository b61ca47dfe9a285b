"""The spectral filter's serving cost against the catalogue size, next to the embedding
model's exact search on the same catalogue: latency of ``FilterIndex.search`` (one thread;
single queries and batches of 8 and 64, k = 20, each user's seen items banned) and the memory
of the arrays a serving process holds.

Catalogues: the real Gowalla training matrix (``--gowalla``) and synthetic ones of growing
item counts shaped like it (``serve_common.gowalla_shaped``: users and interactions scale
with the items at Gowalla's ratios, per-user degrees resampled from Gowalla's, item
popularity Gowalla's by rank quantile). Each case runs in a fresh process; its rows replace
those of the same (data, items, model, k_lowpass) in ``docs/results/serving_spectral.json``,
which ``bench/report.py`` renders into docs/benchmarks.md with a log-log slope per model.

- spectral: ``trainer.spectral.fit_filter`` (``build_s`` is the fit: R̃ and one truncated
  SVD, on one BLAS thread), searched by ``service.scoring.FilterIndex``. Queries are the
  histories of sampled users (their training rows). Memory: R̃ and R̃ᵀ CSR as the filter
  holds them, the low-pass factors (α D_I^-1/2 V̄ and D_I^1/2 V̄, n x K, and the artifact's
  user factors, m x K, float32) and the per-user top-100 lists the artifact carries
  (m x 100 int32 rows + float32 scores).
- embedding: random d = 64 vectors (a model's training does not change the cost) searched by
  ``service.index.NumpyExactIndex`` (``build_s`` is the index's build). Memory: the item
  vectors, the index's (d, n) copy, the user vectors, and the top-100 lists where the trainer
  writes them into the artifact (users x items <= trainer.toplists.MAX_CELLS).

Both keep the seen-items CSR too (not counted: the same for both). The lists' sizes follow
from their shapes; computing a filter model's lists costs one batched scoring per user, which
``lists_build_s_est`` estimates from the batch-of-64 time (an extrapolation, not measured).

    .venv/bin/python bench/serve_spectral.py --gowalla --sizes 40000 100000 300000 1000000 \\
        --k 64 --gowalla-k 256
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the service sets it
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from serve_common import gowalla_shaped  # noqa: E402
from train_bench import git_commit, machine, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "serving_spectral.json"
GOWALLA = ROOT.parent / "shared" / "data" / "gowalla"
KEY = ("data", "items", "model", "k_lowpass")
LIST_LENGTH = 100  # the artifact's lists (trainer.spectral.TOP_LIST_LENGTH), the service's default
DIM = 64


def mb(*arrays: np.ndarray) -> float:
    return sum(a.nbytes for a in arrays) / 1e6


def csr_mb(m: sp.csr_matrix) -> float:
    return mb(m.data, m.indices, m.indptr)


def lists_mb(users: int, items: int) -> float:
    """TopLists of `users` x min(100, items): int32 rows, float32 scores, lengths, flags."""
    return users * (min(LIST_LENGTH, items) * 8 + 5) / 1e6


def timings(search, queries: list, banned: list, budget_s: float) -> dict[str, float]:
    """p50/p99 of single searches and the per-query time of batches of 8 and 64 (median over
    batches), each part stopped after `budget_s` seconds (at least 20 single queries, 3
    batches)."""
    search(queries[:1], banned[:1])  # warm-up
    single: list[float] = []
    t_end = time.perf_counter() + budget_s
    for q, b in zip(queries, banned, strict=True):
        t = time.perf_counter()
        search([q], [b])
        single.append((time.perf_counter() - t) * 1e3)
        if len(single) >= 20 and time.perf_counter() > t_end:
            break
    out = {
        "p50_ms": float(np.percentile(single, 50)),
        "p99_ms": float(np.percentile(single, 99)),
        "single_queries": len(single),
    }
    for size in (8, 64):
        per_query: list[float] = []
        t_end = time.perf_counter() + budget_s
        for start in range(0, len(queries) - size + 1, size):
            t = time.perf_counter()
            search(queries[start : start + size], banned[start : start + size])
            per_query.append((time.perf_counter() - t) * 1e3 / size)
            if len(per_query) >= 3 and time.perf_counter() > t_end:
                break
        out[f"batch{size}_ms_per_query"] = float(np.median(per_query))
        out[f"batch{size}_batches"] = len(per_query)
    return out


def sample_users(train: sp.csr_matrix, count: int, seed: int) -> np.ndarray:
    """`count` distinct users with at least one training item (seeded)."""
    have = np.flatnonzero(np.diff(train.indptr) > 0)
    return np.random.default_rng(seed).choice(have, size=min(count, len(have)), replace=False)


def measure_spectral(
    train: sp.csr_matrix, k: int, alpha: float, users: np.ndarray, budget_s: float
) -> dict[str, Any]:
    from service.scoring import FilterIndex
    from trainer.spectral import fit_filter

    t0 = time.perf_counter()
    filt = fit_filter(train, k, alpha)
    build = time.perf_counter() - t0
    index = FilterIndex(filt)
    hist = [train.indices[train.indptr[u] : train.indptr[u + 1]].astype(np.int64) for u in users]

    def search(qs: list, bans: list) -> None:
        q = np.empty(len(qs), dtype=object)  # what FilterScorer.stack hands the index
        for i, h in enumerate(qs):
            q[i] = h
        index.search(q, [20] * len(qs), bans)

    m, n = filt.n_users, filt.n_items
    parts = {
        "norm": csr_mb(filt.norm),
        "norm_t": csr_mb(filt.norm_t),
        "lowpass_items": mb(filt.lowpass_in, filt.lowpass_out),
        "lowpass_users": m * filt.rank * 4 / 1e6,  # the artifact's user factors (m, K) f32
        "top_lists": lists_mb(m, n),
    }
    row = {"model": "spectral", "k_lowpass": filt.rank, "alpha": alpha, "build_s": build}
    return row | timings(search, hist, hist, budget_s) | memory(parts)


def measure_embedding(train: sp.csr_matrix, users: np.ndarray, budget_s: float) -> dict[str, Any]:
    from service.index import NumpyExactIndex
    from trainer.toplists import MAX_CELLS

    m, n = train.shape
    rng = np.random.default_rng(1)
    scale = np.float32(1 / np.sqrt(DIM))  # a float32 scalar: float32 vectors, as served
    item_emb = rng.standard_normal((n, DIM), dtype=np.float32) * scale
    user_emb = rng.standard_normal((m, DIM), dtype=np.float32) * scale
    t0 = time.perf_counter()
    index = NumpyExactIndex(item_emb)
    build = time.perf_counter() - t0
    banned = [train.indices[train.indptr[u] : train.indptr[u + 1]].astype(np.int64) for u in users]
    queries = [user_emb[u] for u in users]

    def search(qs: list, bans: list) -> None:
        index.search(np.stack(qs), [20] * len(qs), bans)

    lists = m * n <= MAX_CELLS  # the artifact carries them, else none (cached as asked)
    parts = {
        "item_vectors": mb(item_emb, index.items_t),
        "user_vectors": mb(user_emb),
        "top_lists": lists_mb(m, n) if lists else 0.0,
    }
    row = {"model": "embedding", "k_lowpass": None, "dim": DIM, "build_s": build}
    return row | timings(search, queries, banned, budget_s) | memory(parts)


def memory(parts: dict[str, float]) -> dict[str, Any]:
    return {"memory_mb": sum(parts.values()), "memory_parts_mb": parts}


def catalogue(data: str, items: int, seed: int) -> sp.csr_matrix:
    """The binary training matrix (m, n) of a case: Gowalla's, or synthetic of `items`."""
    from trainer.data import load_dataset

    gowalla = load_dataset(GOWALLA).train_matrix()
    if data == "gowalla":
        return gowalla
    return gowalla_shaped(gowalla, items, seed)


def one_case(args: argparse.Namespace) -> None:
    """Measure one (data, items, k) in this process; print its rows as JSON lines."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    train = catalogue(args.data, args.items, args.seed)
    generated = time.perf_counter() - t0
    users = sample_users(train, args.queries, args.seed)
    common = {
        "benchmark": "serve_spectral",
        "data": args.data,
        "items": int(train.shape[1]),
        "users": int(train.shape[0]),
        "interactions": int(train.nnz),
        "generate_s": generated,
        "threads": 1,
    }
    models = [m for m in args.models.split(",") if m]
    for model in models:
        if model == "spectral":
            row = measure_spectral(train, args.k, args.alpha, users, args.budget)
            # every user's list is one scoring: users x the batched per-query time
            row["lists_build_s_est"] = common["users"] * row["batch64_ms_per_query"] / 1e3
        else:
            row = measure_embedding(train, users, args.budget)
        after = os.getloadavg()
        print("ROW " + json.dumps(common | row | {"loadavg": load, "loadavg_after": after}))
        load = after


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[], help="synthetic item counts")
    p.add_argument("--gowalla", action="store_true", help="also the real Gowalla matrix")
    p.add_argument("--k", type=int, default=64, help="low-pass K of the synthetic cases")
    p.add_argument("--gowalla-k", type=int, default=256, help="low-pass K on Gowalla")
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--models", default="spectral,embedding")
    p.add_argument("--queries", type=int, default=400, help="users sampled as queries")
    p.add_argument("--budget", type=float, default=10.0, help="seconds per timing part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    # one case in this process (the driver's child)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", default="synthetic", help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one_case(args)
        return 0
    given = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["python", "bench/serve_spectral.py", *given])
    cases = [("gowalla", 0, args.gowalla_k)] if args.gowalla else []
    cases += [("synthetic", n, args.k) for n in args.sizes]
    failed = 0
    for data, items, k in cases:
        child = [sys.executable, __file__, "--one", "--data", data, "--items", str(items)]
        child += ["--k", str(k), "--alpha", str(args.alpha), "--models", args.models]
        child += ["--queries", str(args.queries), "--budget", str(args.budget)]
        child += ["--seed", str(args.seed)]
        print(f"{data} {items or ''} K {k} ...", flush=True)
        try:
            done = subprocess.run(
                child, capture_output=True, text=True, timeout=args.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"  timed out after {args.timeout:.0f} s", flush=True)
            failed += 1
            continue
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            failed += 1
            continue
        for line in done.stdout.splitlines():
            if not line.startswith("ROW "):
                continue
            row = json.loads(line[4:])
            row |= {"machine": machine(), "command": command, "commit": git_commit()}
            record(args.out, row, KEY)
            print(
                f"  {row['model']}: {row['users']:,} x {row['items']:,}, "
                f"{row['interactions']:,} pairs, build {row['build_s']:.1f} s, "
                f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms, batch8 "
                f"{row['batch8_ms_per_query']:.2f} batch64 {row['batch64_ms_per_query']:.2f} "
                f"ms/query, {row['memory_mb']:.0f} MB, load {row['loadavg'][0]:.1f}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
