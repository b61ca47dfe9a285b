"""Benchmark (2): a synthetic 1M-item catalogue (d = 64): exact vs IVF vs HNSW, single-query
latency (p50/p99) and recall@20 of the approximate answer against the exact one.

    .venv/bin/python bench/serve_ann.py [--items 1000000] [--queries 500]

The catalogue is a Gaussian mixture (4,096 centres ~ N(0, I), items = centre + sigma N(0, I),
sigma = 0.5 by default); users are drawn the same way, so item and user embeddings share
cluster structure as trained ones do. sigma = 1 (half the variance is noise) is much harder for
IVF; pass --sigma to see it. Each
query excludes 30 random items (seen items), as /recommend does. Timings are of the service's
index.search (the call the search thread makes), one OpenMP thread. Writes bench/out/serve_ann.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the service sets it
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from serve_common import OUT, machine, recall, timed_search  # noqa: E402

from service.index import NumpyExactIndex, build_index, set_search_threads  # noqa: E402
from service.settings import IndexSettings  # noqa: E402


def mixture(n: int, centres: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    out = centres[rng.integers(0, len(centres), n)]
    out += sigma * rng.standard_normal(out.shape, dtype=np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--nprobe", default="8,16,32,64,128")
    ap.add_argument("--ef", default="32,64,128,256")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-ef-construction", type=int, default=40)
    ap.add_argument("--skip-hnsw", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4096, 64), dtype=np.float32)
    items = mixture(args.items, centres, args.sigma, rng)
    queries = mixture(args.queries, centres, args.sigma, rng)
    banned = [np.unique(rng.choice(args.items, 30, replace=False)) for _ in queries]

    rows_md = []
    t = time.perf_counter()
    exact_index = NumpyExactIndex(items)
    build_exact = time.perf_counter() - t
    set_search_threads(1)
    exact, ms = timed_search(exact_index, queries, banned)
    rows_md.append(("exact (numpy)", "-", build_exact, ms, 1.0))
    print(rows_md[-1][:3], np.median(ms), flush=True)

    configs = [("ivf", IndexSettings(index_kind="ivf", use_gpu=False))]
    if not args.skip_hnsw:
        configs.append(
            (
                "hnsw",
                IndexSettings(
                    index_kind="hnsw",
                    use_gpu=False,
                    hnsw_m=args.hnsw_m,
                    hnsw_ef_construction=args.hnsw_ef_construction,
                ),
            )
        )
    for kind, config in configs:
        t = time.perf_counter()
        index = build_index(items, config)  # builds with all cores, as the watcher does
        build = time.perf_counter() - t
        set_search_threads(1)
        print(f"{kind} built in {build:.1f}s", flush=True)
        sweep = args.nprobe if kind == "ivf" else args.ef
        for p in (int(x) for x in sweep.split(",")):
            params = {"nprobe": p} if kind == "ivf" else {"ef_search": p}
            approx, ms = timed_search(index, queries, banned, **params)
            label = (
                f"IVF nlist={index.nlist}, nprobe={p}"
                if kind == "ivf"
                else f"HNSW M={args.hnsw_m}, efC={args.hnsw_ef_construction}, efSearch={p}"
            )
            rows_md.append((label, kind, build, ms, recall(approx, exact)))
            print(label, f"p50 {np.median(ms):.3f} ms recall {rows_md[-1][4]:.3f}", flush=True)

    lines = [
        f"### {args.items:,} items, d = 64: exact vs approximate, k = 20, one thread",
        "",
        f"{machine()}. Gaussian mixture, sigma = {args.sigma}. "
        f"{args.queries} single queries, each excluding 30 items; recall@20 "
        "against the exact answer; build time with all cores.",
        "",
        "| index | build s | p50 ms | p99 ms | recall@20 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, _, build, ms, rec in rows_md:
        lines.append(
            f"| {label} | {build:.1f} | {np.percentile(ms, 50):.3f} | "
            f"{np.percentile(ms, 99):.3f} | {rec:.3f} |"
        )
    lines += [
        "",
        f"Command: `.venv/bin/python bench/serve_ann.py --items {args.items} --sigma {args.sigma}`",
        "",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_ann.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
