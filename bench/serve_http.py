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
    rows, batch_rows = [], []
    with uvicorn_server(home) as base:
        get = WRK_LUA_GET.format(n_users=N_USERS, path="/recommend/user_%d?k=20")
        wrk(base + "/healthz", 8, 2)  # warm-up
        wrk(base + "/", 8, 2, get)
        for c in conns:
            floor = wrk(base + "/healthz", c, args.seconds)
            rec = wrk(base + "/", c, args.seconds, get)
            rows.append((c, floor, rec))
            print(c, floor, rec, flush=True)
        for b in (int(x) for x in args.batches.split(",")):
            res = wrk(base + "/", 8, args.seconds, WRK_LUA_POST.format(n_users=N_USERS, batch=b))
            batch_rows.append((b, res))
            print("batch", b, res, flush=True)
    single_ups = next((rec["rps"] for c, _, rec in rows if c == 8), float("nan"))
    lines = [
        "### Serving throughput: GET /recommend/{user}?k=20 vs the HTTP floor (GET /healthz)",
        "",
        f"Model: random, 29,858 users x 40,981 items, d = 64, 810k seen pairs; exact search "
        f"(flat, numpy backend). uvicorn, 1 worker, loopback; wrk -t1, {args.seconds:.0f} s per "
        f"cell. {header}.",
        "",
        "| connections | floor req/s | floor p50 / p99 ms | recommend req/s | "
        "recommend p50 / p99 ms | ratio to floor | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, f, r in rows:
        lines.append(
            f"| {c} | {f['rps']:.0f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['rps'] / f['rps']:.2f} | "
            f"{f['errors'] + r['errors']} |"
        )
    lines += [
        "",
        "### Batch endpoint: POST /recommend users/s vs single GET calls (8 connections)",
        "",
        "| users per request | req/s | users/s | p50 / p99 ms | vs single GET users/s | errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b, r in batch_rows:
        lines.append(
            f"| {b} | {r['rps']:.1f} | {r['rps'] * b:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
            f"| {r['rps'] * b / single_ups:.2f}x | {r['errors']} |"
        )
    lines += [
        "",
        "Command: `.venv/bin/python bench/serve_http.py " + f"--seconds {args.seconds:g}`",
        "",
    ]
    (OUT / "serve_http.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
