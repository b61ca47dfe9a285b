"""Benchmark (1) and (3): GET /recommend?k=20 vs the /healthz floor at 1/8/32 connections, and
POST /recommend batches vs single calls, with wrk against uvicorn on 127.0.0.1.

    .venv/bin/python bench/serve_http.py [--seconds 10]

Writes bench/out/serve_http.md. Needs wrk (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import time

from serve_common import (
    DATA,
    OUT,
    WRK_LUA_GET,
    WRK_LUA_POST,
    gowalla_like,
    machine,
    publish_once,
    search_counts,
    uvicorn_server,
    wrk,
)

N_USERS = 29_858


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    ap.add_argument("--connections", default="1,8,32")
    ap.add_argument("--batches", default="1,10,100,1000")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    home = DATA / "serve-gowalla"
    t0 = time.perf_counter()
    version = publish_once(home, gowalla_like)
    print(f"model {version} ready in {time.perf_counter() - t0:.1f}s")
    conns = [int(c) for c in args.connections.split(",")]
    header = machine()
    modes = {
        "lookup": {},  # default: per-user top-100 lists computed at load
        "search": {"SPECREC_PRECOMPUTE_K": "0"},  # every request searched (batched GEMM)
    }
    rows, batch_rows = [], []
    get = WRK_LUA_GET.format(n_users=N_USERS, path="/recommend/user_%d?k=20")
    for mode, env in modes.items():
        with uvicorn_server(home, **env) as base:
            wrk(base + "/healthz", 8, 2)  # warm-up
            wrk(base + "/", 8, 2, get)
            for c in conns:
                floor = wrk(base + "/healthz", c, args.seconds)
                calls0, queries0 = search_counts(base)
                rec = wrk(base + "/", c, args.seconds, get)
                calls1, queries1 = search_counts(base)
                rec["batch"] = (queries1 - queries0) / max(calls1 - calls0, 1)
                rows.append((mode, c, floor, rec))
                print(mode, c, floor, rec, flush=True)
            if mode == "search":
                for b in (int(x) for x in args.batches.split(",")):
                    script = WRK_LUA_POST.format(n_users=N_USERS, batch=b)
                    res = wrk(base + "/", 8, args.seconds, script)
                    batch_rows.append((b, res))
                    print("batch", b, res, flush=True)
    single = {m: rec["rps"] for m, c, _, rec in rows if c == 8}
    lines = [
        "### Serving throughput: GET /recommend/{user}?k=20 vs the HTTP floor (GET /healthz)",
        "",
        "Model: random, 29,858 users x 40,981 items, d = 64, 810k seen pairs; exact search "
        "(flat, numpy backend). `lookup`: default settings (per-user top-100 lists computed "
        "at load, SPECREC_PRECOMPUTE_K=100); `search`: SPECREC_PRECOMPUTE_K=0, every request "
        f"searched on the batching search thread. uvicorn, 1 worker, loopback; wrk -t1, "
        f"{args.seconds:.0f} s per cell, floor and recommend alternate on the same server. "
        f"{header}.",
        "",
        "| mode | connections | floor req/s | floor p50 / p99 ms | recommend req/s | "
        "recommend p50 / p99 ms | ratio to floor | mean search batch | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, c, f, r in rows:
        lines.append(
            f"| {mode} | {c} | {f['rps']:.0f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{r['rps'] / f['rps']:.2f} | "
            f"{r['batch']:.1f} | {f['errors'] + r['errors']} |"
        )
    lines += [
        "",
        "### Batch endpoint: POST /recommend users/s vs single GET calls (8 connections)",
        "",
        "POST /recommend always searches (one search for the whole batch).",
        "",
        "| users per request | req/s | users/s | p50 / p99 ms | vs GET (search) | "
        "vs GET (lookup) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, r in batch_rows:
        ups = r["rps"] * b
        lines.append(
            f"| {b} | {r['rps']:.1f} | {ups:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{ups / single['search']:.2f}x | {ups / single['lookup']:.2f}x | {r['errors']} |"
        )
    lines += [
        "",
        f"Command: `.venv/bin/python bench/serve_http.py --seconds {args.seconds:g}`",
        "",
    ]
    (OUT / "serve_http.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
