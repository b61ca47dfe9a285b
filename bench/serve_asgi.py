"""Where a request's time goes without the network: GET /healthz vs GET /recommend/{user}?k=20
called straight through the whole ASGI app (every middleware, routing, the handler, JSON),
Gowalla-size random model, lookup (precomputed lists) and searched answers, interleaved rounds,
medians. The HTTP parsing and socket writes that wrk's numbers add are the same for both
routes, so this isolates the application's share of the HTTP floor.

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


async def measure(home: Path, precompute_k: int, rounds: int, n: int) -> dict[str, float]:
    app = create_app(Settings(home=home, precompute_k=precompute_k, watch=False))
    times: dict[str, list[float]] = {"healthz": [], "recommend": []}
    async with app.router.lifespan_context(app):
        for _ in range(rounds):
            for route in times:
                t0 = time.perf_counter()
                for i in range(n):
                    if route == "healthz":
                        status = await call(app, "/healthz", b"")
                    else:
                        status = await call(app, f"/recommend/user_{i * 7919 % N_USERS}", b"k=20")
                    assert status == 200, status
                times[route].append((time.perf_counter() - t0) / n * 1e6)
    return {route: statistics.median(v) for route, v in times.items()}


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
        f"interleaved rounds of {args.requests} sequential requests per route; {header}.",
        "",
        "| answers | /healthz µs | /recommend µs | ratio (healthz / recommend) |",
        "|---|---:|---:|---:|",
    ]
    records = []
    for label, k in (
        ("lookup (SPECREC_PRECOMPUTE_K=100)", 100),
        ("search (SPECREC_PRECOMPUTE_K=0)", 0),
    ):
        m = asyncio.run(measure(home, k, args.rounds, args.requests if k else args.requests // 4))
        ratio = m["healthz"] / m["recommend"]
        lines.append(f"| {label} | {m['healthz']:.1f} | {m['recommend']:.1f} | {ratio:.2f} |")
        records.append(
            {
                "benchmark": "serve_asgi",
                "mode": label,
                "healthz_us": m["healthz"],
                "recommend_us": m["recommend"],
                "ratio": ratio,
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
