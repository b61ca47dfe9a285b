"""Exact top-k backends by batch size on a Gowalla-size catalogue (41k items, d = 64), k = 20,
~27 excluded items per query, one thread: numpy (GEMM + sampled-threshold top-k) vs FAISS
IndexFlatIP (over-fetch + filter). Decides `exact_backend=auto`.

    .venv/bin/python bench/serve_exact.py [--reps 30]

Writes bench/out/serve_exact.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the service sets it
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from serve_common import OUT, gowalla_like, machine  # noqa: E402

from service.index import FaissIndex, NumpyExactIndex, set_search_threads  # noqa: E402
from service.settings import IndexSettings  # noqa: E402


def per_query_us(index, queries, banned, reps: int) -> float:
    ks = [20] * len(queries)
    index.search(queries, ks, banned)  # warm-up (scratch buffers)
    best = float("inf")
    for _ in range(3):  # best of 3 rounds: the machine is shared
        t = time.perf_counter()
        for _ in range(reps):
            index.search(queries, ks, banned)
        best = min(best, (time.perf_counter() - t) / reps / len(queries) * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    set_search_threads(1)
    a = gowalla_like()
    numpy_index = NumpyExactIndex(a.item_emb)
    faiss_index = FaissIndex(a.item_emb, IndexSettings(index_kind="flat", use_gpu=False))
    rng = np.random.default_rng(0)
    lines = [
        "### Exact search backends (41k items, d = 64, k = 20, one thread), µs per query",
        "",
        f"{machine()}. Best of 3 rounds of {args.reps} searches.",
        "",
        "| batch size | numpy | FAISS IndexFlatIP | numpy speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for b in (1, 8, 32, 128, 256):
        users = rng.choice(a.n_users, size=b, replace=False)
        queries = a.user_emb[users]
        banned = [a.seen(int(u)).astype(np.int64) for u in users]
        reps = max(3, args.reps * 8 // b)
        t_np = per_query_us(numpy_index, queries, banned, reps)
        t_fa = per_query_us(faiss_index, queries, banned, reps)
        lines.append(f"| {b} | {t_np:.0f} | {t_fa:.0f} | {t_fa / t_np:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", "Command: `.venv/bin/python bench/serve_exact.py`", ""]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_exact.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
