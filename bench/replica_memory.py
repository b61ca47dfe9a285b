"""Memory of one API replica against the catalogue size: RSS / PSS of `python -m service.main`
after it loaded and indexed a random model (exact flat index), with the default per-user top-100
lists and without them (SPECREC_PRECOMPUTE_K=0), and the seconds until /readyz.

    .venv/bin/python bench/replica_memory.py

Writes docs/results/replica_memory.json and renders its table into docs/deploy.md (between the
replica-memory markers; tests/project/test_deploy_doc.py checks that the two agree).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import httpx
from serve_common import SERVER_PIDS, gowalla_like, machine, memory_mb, publish_once, uvicorn_server

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "replica_memory.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"(<!-- replica-memory:start -->\n).*?(\n<!-- replica-memory:end -->)", re.S)
MAX_CELLS = Settings.model_fields["precompute_max_cells"].default

#: (users, items): Gowalla's shape, then 10x the items, then 10x both
SIZES = [(29_858, 40_981), (29_858, 409_810), (298_580, 409_810)]


def measure(n_users: int, n_items: int, dim: int, precompute_k: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        publish_once(
            home,
            lambda: gowalla_like(n_users=n_users, n_items=n_items, dim=dim, n_seen=27 * n_users),
        )
        t0 = time.monotonic()
        with uvicorn_server(home, SPECREC_PRECOMPUTE_K=str(precompute_k)) as base:
            ready_s = time.monotonic() - t0
            for user in range(200):  # the answer path touched too
                httpx.get(f"{base}/recommend/user_{user * 7919 % n_users}?k=20").raise_for_status()
            mem = memory_mb(SERVER_PIDS[base])
    return {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "precompute_k": precompute_k,
        # SPECREC_PRECOMPUTE_MAX_CELLS: larger catalogues are always searched
        "top_lists": precompute_k > 0 and n_users * n_items <= MAX_CELLS,
        "embeddings_mb": round((n_users + n_items) * dim * 4 / 2**20, 1),
        "rss_mb": round(mem["rss_mb"], 1),
        "pss_mb": round(mem["pss_mb"], 1),
        "ready_s": round(ready_s, 1),
    }


def render_table(run: dict) -> str:
    """The Markdown table of one run's rows."""
    lines = [
        "| users | items | top-100 lists | embeddings MB | RSS MB | PSS MB | ready after s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in run["rows"]:
        if r["top_lists"]:
            lists = "yes"
        else:
            lists = "no (k = 0)" if r["precompute_k"] == 0 else "no (too large)"
        lines.append(
            f"| {r['n_users']:,} | {r['n_items']:,} | {lists} | {r['embeddings_mb']} | "
            f"{r['rss_mb']} | {r['pss_mb']} | {r['ready_s']} |"
        )
    return "\n".join(lines)


def render_doc(doc: str, run: dict) -> str:
    """`doc` with its replica-memory block replaced by the table of `run`."""
    if not BLOCK.search(doc):
        raise ValueError("docs/deploy.md has no replica-memory block")
    return BLOCK.sub(lambda m: m.group(1) + render_table(run) + m.group(2), doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    rows = []
    load, where = os.getloadavg()[0], machine()
    for n_users, n_items in SIZES:
        lists = n_users * n_items <= MAX_CELLS
        for k in (100, 0) if lists else (100,):  # without lists the two are one case
            row = measure(n_users, n_items, args.dim, k)
            print(json.dumps(row), flush=True)
            rows.append(row)
    run = {
        "command": "python bench/replica_memory.py",
        "machine": where,
        "load_before": round(load, 2),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(run, indent=1) + "\n")
    DEPLOY_DOC.write_text(render_doc(DEPLOY_DOC.read_text(), run))


if __name__ == "__main__":
    main()
