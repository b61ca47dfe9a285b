"""Where a request's time goes without the network: GET /healthz vs GET /recommend/{user}?k=20
called straight through the whole ASGI app (every middleware, routing, the handler, JSON),
Gowalla-size random model, lookup (precomputed lists) and searched answers (on the search thread,
and forced onto the event loop), interleaved rounds, medians of wall and CPU time. The HTTP
parsing and socket writes that wrk's numbers add are the same for both routes, so this isolates
the application's share of the HTTP floor.

    .venv/bin/python bench/serve_asgi.py [--rounds 7] [--requests 2000]

Writes bench/out/serve_asgi.md and appends rows to docs/results/serving.json.
"""

from __future__ import annotations

import os

os.environ.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from contextlib import AsyncExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from serve_common import DATA, OUT, gowalla_like, machine, publish_once  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

N_USERS = 29_858
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "serving.json"


async def call(app: Any, path: str, query: bytes) -> int:
    """One request through the ASGI app; returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(home: Path, configs: dict[str, dict[str, Any]], rounds: int, n: int) -> dict:
    """Median µs per request (wall, and the process's CPU) of /healthz and /recommend for each
    app configuration, the configurations' rounds interleaved (the machine's load drifts)."""
    apps = {
        label: create_app(Settings(home=home, watch=False, **kw)) for label, kw in configs.items()
    }
    times: dict[str, dict[str, list[float]]] = {
        label: {
            f"{route}_{clock}": []
            for route in ("healthz", "recommend")
            for clock in ("us", "cpu_us")
        }
        for label in apps
    }
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        for _ in range(rounds):
            for label, app in apps.items():
                # searched answers cost ~10x a lookup: a quarter as many keeps rounds short
                count = n if configs[label].get("precompute_k", 100) else n // 4
                for route in ("healthz", "recommend"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    for i in range(count):
                        if route == "healthz":
                            status = await call(app, "/healthz", b"")
                        else:
                            path = f"/recommend/user_{i * 7919 % N_USERS}"
                            status = await call(app, path, b"k=20")
                        assert status == 200, status
                    times[label][f"{route}_us"].append((time.perf_counter() - t0) / count * 1e6)
                    times[label][f"{route}_cpu_us"].append((time.process_time() - c0) / count * 1e6)
    return {label: {k: statistics.median(v) for k, v in t.items()} for label, t in times.items()}


CONFIGS = {
    "lookup (SPECREC_PRECOMPUTE_K=100)": {"precompute_k": 100},
    "search (SPECREC_PRECOMPUTE_K=0)": {"precompute_k": 0},
    "search on the event loop (and SPECREC_INLINE_SEARCH_MAX_CELLS=4194304)": {
        "precompute_k": 0,
        "inline_search_max_cells": 4_194_304,
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=2000, help="per round and route")
    args = ap.parse_args()
    home = DATA / "serve-gowalla"
    publish_once(home, gowalla_like)
    command = (
        f".venv/bin/python bench/serve_asgi.py --rounds {args.rounds} --requests {args.requests}"
    )
    header = machine()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "### One request through the ASGI app, no network: /healthz vs /recommend",
        "",
        f"Gowalla-size random model (29,858 x 40,981, d 64); median of {args.rounds} "
        f"interleaved rounds of {args.requests} sequential requests per route (a quarter as many "
        "searched), the three apps' rounds interleaved too; CPU: the process's CPU time per "
        f"request (the search thread's included); {header}.",
        "",
        "| answers | /healthz µs | /recommend µs | ratio (healthz / recommend) | "
        "CPU µs, healthz / recommend (ratio) |",
        "|---|---:|---:|---:|---:|",
    ]
    records = []
    for label, m in asyncio.run(measure(home, CONFIGS, args.rounds, args.requests)).items():
        ratio = m["healthz_us"] / m["recommend_us"]
        cpu_ratio = m["healthz_cpu_us"] / m["recommend_cpu_us"]
        lines.append(
            f"| {label} | {m['healthz_us']:.1f} | {m['recommend_us']:.1f} | {ratio:.2f} | "
            f"{m['healthz_cpu_us']:.1f} / {m['recommend_cpu_us']:.1f} ({cpu_ratio:.2f}) |"
        )
        records.append(
            {
                "benchmark": "serve_asgi",
                "mode": label,
                "healthz_us": m["healthz_us"],
                "recommend_us": m["recommend_us"],
                "ratio": ratio,
                "healthz_cpu_us": m["healthz_cpu_us"],
                "recommend_cpu_us": m["recommend_cpu_us"],
                "cpu_ratio": cpu_ratio,
                "machine": header,
                "loadavg_after": os.getloadavg(),
                "command": command,
                "commit": commit,
                "unix": time.time(),
            }
        )
        print(lines[-1], flush=True)
    lines += ["", f"Command: `{command}`", ""]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_asgi.md").write_text("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(old + records, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
