"""Memory of one API replica against the catalogue size: RSS / PSS of `python -m service.main`
after it loaded and indexed a random model (exact flat index), with the per-user top-100 lists
the trainer writes into the artifact (up to trainer.toplists.MAX_CELLS) and without using them
(SPECREC_PRECOMPUTE_K=0), and the seconds until /readyz.

    .venv/bin/python bench/replica_memory.py

Writes docs/results/replica_memory.json and renders its table into docs/deploy.md (between the
replica-memory markers; tests/project/test_deploy_doc.py checks that the two agree).

``--workers 2`` measures instead what two uvicorn workers (``SPECREC_WORKERS=2``) serving one
Gowalla-size model hold, each worker's RSS and PSS (``/proc/<pid>/smaps_rollup``: PSS splits
the pages the workers share), and the seconds one process takes to load and build the model
(``ModelRegistry.load`` + ``ServingModel.build``, in a fresh process), for this tree and for
the tree of ``--before`` (a commit, exported with ``git archive``):

    .venv/bin/python bench/replica_memory.py --workers 2 --before f19e3ca

Its rows go under "workers" in the same file; bench/report.py renders them into
docs/benchmarks.md ("Several workers").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from serve_common import (
    SERVER_PIDS,
    gowalla_like,
    machine,
    memory_mb,
    publish_once,
    uvicorn_server,
    worker_pids,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "replica_memory.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"(<!-- replica-memory:start -->\n).*?(\n<!-- replica-memory:end -->)", re.S)
MAX_CELLS = 4_000_000_000  # trainer.toplists.MAX_CELLS (not imported: torch)

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
        # the artifact's lists, written up to MAX_CELLS (larger: cached per user as asked)
        "top_lists": precompute_k > 0 and n_users * n_items <= MAX_CELLS,
        "embeddings_mb": round((n_users + n_items) * dim * 4 / 2**20, 1),
        "rss_mb": round(mem["rss_mb"], 1),
        "pss_mb": round(mem["pss_mb"], 1),
        "ready_s": round(ready_s, 1),
    }


LOAD_SCRIPT = """
import sys, time
t0 = time.perf_counter()
from contract.artifact import ModelRegistry
from service.serving import ServingModel
from service.settings import Settings
t1 = time.perf_counter()
loaded = ModelRegistry(sys.argv[1] + "/models").load()
model = ServingModel.build(loaded, Settings(home=sys.argv[1]))
t2 = time.perf_counter()
print(t2 - t1)
"""


@contextmanager
def source_tree(commit: str | None) -> Iterator[Path]:
    """This tree (None), or `commit`'s exported into a temporary directory."""
    if commit is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", commit], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def settle(pids: list[int], quiet_mb: float = 1.0, every_s: float = 2.0) -> None:
    """Wait until no process in `pids` grows by `quiet_mb` in `every_s` (each has loaded)."""
    before = [memory_mb(p)["rss_mb"] for p in pids]
    while True:
        time.sleep(every_s)
        now = [memory_mb(p)["rss_mb"] for p in pids]
        if all(abs(a - b) < quiet_mb for a, b in zip(before, now, strict=True)):
            return
        before = now


def measure_workers(
    n_users: int, n_items: int, dim: int, workers: int, code: Path, stored_lists: bool
) -> dict:
    """`workers` uvicorn workers of the tree `code` serving one random model (with the
    trainer's top lists in its artifact when `stored_lists`): per-worker RSS / PSS after 400
    requests, and one process's load + build seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)

        publish_once(
            home,
            lambda: gowalla_like(n_users=n_users, n_items=n_items, dim=dim, n_seen=27 * n_users),
            lists=stored_lists,
        )
        load = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, str(home)],
            cwd=code,
            env={**os.environ, "PYTHONPATH": str(code)},
            capture_output=True,
            text=True,
            check=True,
        )
        t0 = time.monotonic()
        with uvicorn_server(home, code, SPECREC_WORKERS=str(workers)) as base:
            first_ready_s = time.monotonic() - t0
            pids = worker_pids(SERVER_PIDS[base])
            settle(pids)
            for user in range(400):  # new connections: both workers answer some
                url = f"{base}/recommend/user_{user * 7919 % n_users}?k=20"
                httpx.get(url, timeout=30).raise_for_status()
            mem = [memory_mb(p) for p in pids]
    return {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "workers": len(pids),
        "stored_lists": stored_lists,
        "rss_mb": [round(m["rss_mb"], 1) for m in mem],
        "pss_mb": [round(m["pss_mb"], 1) for m in mem],
        "pss_total_mb": round(sum(m["pss_mb"] for m in mem), 1),
        "load_s": round(float(load.stdout.strip().splitlines()[-1]), 2),
        "first_ready_s": round(first_ready_s, 1),
    }


def workers_run(dim: int, workers: int, before: str | None) -> dict:
    """Gowalla's size served by `workers` workers: the `before` commit (its artifacts had no
    embedding lists), then this tree with the trainer's lists and without them."""
    n_users, n_items = SIZES[0]
    rows = []
    cases = [(before, False)] if before else []
    cases += [(None, True), (None, False)]
    for commit, lists in cases:
        with source_tree(commit) as code:
            row = measure_workers(n_users, n_items, dim, workers, code, lists)
        row["code"] = commit or current_commit()
        row["before"] = commit is not None  # that code computed every user's list at load
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {
        "command": f"python bench/replica_memory.py --workers {workers}"
        + (f" --before {before}" if before else ""),
        "machine": machine(),
        "rows": rows,
    }


def current_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


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
    parser.add_argument("--workers", type=int, default=0, help="measure N workers instead")
    parser.add_argument("--before", help="with --workers: also this commit's tree")
    args = parser.parse_args()
    if args.workers:
        recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        recorded["workers"] = workers_run(args.dim, args.workers, args.before)
        RESULTS.write_text(json.dumps(recorded, indent=1) + "\n")
        return
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
    if RESULTS.exists():  # the --workers run stays
        run |= {k: v for k, v in json.loads(RESULTS.read_text()).items() if k == "workers"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(run, indent=1) + "\n")
    DEPLOY_DOC.write_text(render_doc(DEPLOY_DOC.read_text(), run))


if __name__ == "__main__":
    main()
