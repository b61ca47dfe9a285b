"""GET /recommend?k=20 vs the /healthz floor at 1/8/32 connections (lookup and searched
answers, one uvicorn worker; then two workers with the memory of each), and POST /recommend
batches vs single calls, with wrk against uvicorn on 127.0.0.1.

    .venv/bin/python bench/serve_http.py [--seconds 10]

``--model spectral`` serves a spectral-filter model of the real Gowalla training matrix instead
(``TrainConfig.defaults("spectral")``: K 256, α 0.3, fitted by trainer.train.fit without the
test split's evaluation and published by publish_result with its per-user top-100 lists):

    .venv/bin/python bench/serve_http.py --model spectral --modes lookup,search --batches ""

``--model trained --vectors FILE.npz`` serves trained Gowalla vectors (``user_emb`` (29,858, 64)
and ``item_emb`` (40,981, 64) float32, e.g. a LightGCN-DirectSpec+ checkpoint's), published
as the trainer publishes an embedding model: per-user top-100 lists and the item index chosen
for ``SPECREC_INDEX_RECALL`` (contract/annindex.py), which ``search`` then uses; ``exact
search`` forces exact search (``SPECREC_INDEX_KIND=flat``) beside it:

    .venv/bin/python bench/serve_http.py --model trained --vectors gowalla-vectors.npz \
        --modes "search,exact search" --batches ""

Writes bench/out/serve_http[-spectral|-trained].md and appends rows (with "model": "embedding" or
"spectral") to docs/results/serving.json. Needs wrk (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from serve_common import (
    DATA,
    OUT,
    SERVER_PIDS,
    WRK_LUA_GET,
    WRK_LUA_POST,
    cpu_seconds,
    gowalla_like,
    machine,
    memory_mb,
    publish_once,
    search_counts,
    uvicorn_server,
    worker_pids,
    wrk,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "serving.json"

N_USERS = 29_858
GOWALLA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gowalla"
MODES = {
    "lookup": {},  # default: per-user top-100 lists (computed at load, or the artifact's)
    "search": {"SPECREC_PRECOMPUTE_K": "0"},  # every request searched (batched)
    # the same batched on the event loop (a Gowalla-size scan is above the default threshold)
    "search, event loop": {
        "SPECREC_PRECOMPUTE_K": "0",
        "SPECREC_INLINE_SEARCH_MAX_CELLS": "4194304",
    },
    "lookup, 2 workers": {"SPECREC_WORKERS": "2"},
    # the artifact's item index ignored: exact search (--model trained ships one)
    "exact search": {"SPECREC_PRECOMPUTE_K": "0", "SPECREC_INDEX_KIND": "flat"},
}
DEFAULT_MODES = ("lookup", "search", "lookup, 2 workers")


def publish_spectral_once(home: Path) -> str:
    """Publish the spectral filter of Gowalla's training matrix under home/models unless a
    model is already there (user ids are Gowalla's row numbers, "0".."29857")."""
    import numpy as np

    from contract.artifact import ModelRegistry
    from contract.config import TrainConfig
    from trainer.data import load_dataset
    from trainer.train import fit, publish_result

    registry = ModelRegistry(home / "models")
    if registry.current() is None:
        ds = load_dataset(GOWALLA)
        empty = np.empty(0, dtype=np.int64)  # no test split: no evaluation to wait for
        ds = dataclasses.replace(ds, test_users=empty, test_items=empty)
        cfg = TrainConfig.defaults("spectral")
        publish_result(fit(ds, cfg, progress_bar=False), ds, cfg, registry)
    return registry.current()


def publish_trained_once(home: Path, vectors: Path) -> str:
    """Publish trained Gowalla vectors (`vectors`: an .npz of user_emb, item_emb) under
    home/models unless a model is already there, with the trainer's per-user lists and item
    index (user ids are Gowalla's, "0".."29857"; seen: its train and test pairs)."""
    import numpy as np

    from contract.artifact import ModelArrays, ModelRegistry
    from contract.settings import DEFAULT_INDEX_RECALL
    from trainer.data import load_dataset
    from trainer.toplists import with_embedding_lists
    from trainer.train import with_item_index

    registry = ModelRegistry(home / "models")
    if registry.current() is None:
        ds = load_dataset(GOWALLA)
        emb = np.load(vectors)
        arrays = ModelArrays.build(
            emb["user_emb"],
            emb["item_emb"],
            ds.user_ids,
            ds.item_ids,
            (
                np.concatenate([ds.train_users, ds.test_users]),
                np.concatenate([ds.train_items, ds.test_items]),
            ),
        )
        arrays, info = with_item_index(with_embedding_lists(arrays), DEFAULT_INDEX_RECALL)
        print("item index:", info.kind, info.params, "recall", info.recall, flush=True)
        registry.publish(
            arrays, config={"bench": True, "vectors": vectors.name}, extra={"index": info.to_dict()}
        )
    return registry.current()


def parse_modes(text: str) -> list[str]:
    """Mode names from a comma-separated list whose names may hold ", " themselves."""
    names: list[str] = []
    for part in text.split(","):
        if part.startswith(" ") and names:
            names[-1] += "," + part
        else:
            names.append(part)
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; known: {'; '.join(MODES)}")
    return names


def timed(base: str, procs: list[int], c: int, seconds: float, script: str) -> dict:
    """One wrk run, with the server processes' CPU time per request in it (µs): what a
    request costs the server whatever else shares the machine."""
    cpu0 = cpu_seconds(procs)
    res = wrk(base + "/", c, seconds, script)
    res["cpu_us"] = (cpu_seconds(procs) - cpu0) / max(res["requests"], 1) * 1e6
    return res


def combine(runs: list[dict]) -> dict:
    """Several wrk runs of one cell: total requests / total time, median latencies, errors."""
    return {
        "rps": sum(r["rps"] for r in runs) / len(runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "cpu_us": statistics.median(r["cpu_us"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4.0, help="per wrk run")
    ap.add_argument("--reps", type=int, default=5, help="floor/recommend alternations per cell")
    ap.add_argument("--connections", default="1,8,32")
    ap.add_argument("--batches", default="1,10,100,1000")
    ap.add_argument("--model", choices=("embedding", "spectral", "trained"), default="embedding")
    ap.add_argument("--vectors", type=Path, default=None, help="--model trained: an .npz")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"some of {'; '.join(MODES)}")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    spectral = args.model == "spectral"
    home = DATA / {"embedding": "serve-gowalla"}.get(args.model, f"serve-gowalla-{args.model}")
    t0 = time.perf_counter()
    if args.model == "trained":
        if args.vectors is None:
            raise SystemExit("--model trained needs --vectors FILE.npz")
        version = publish_trained_once(home, args.vectors)
    elif spectral:
        version = publish_spectral_once(home)
    else:
        version = publish_once(home, gowalla_like)
    print(f"model {version} ready in {time.perf_counter() - t0:.1f}s")
    conns = [int(c) for c in args.connections.split(",")]
    header = machine()
    modes = {m: MODES[m] for m in parse_modes(args.modes)}
    rows, batch_rows, memory = [], [], {}
    user_path = "/recommend/user_%d?k=20" if args.model == "embedding" else "/recommend/%d?k=20"
    get = WRK_LUA_GET.format(n_users=N_USERS, path=user_path)
    # the floor's requests come from the same Lua generator (wrk's per-request Lua call is
    # part of what both sides pay); /healthz ignores the query
    floor_get = WRK_LUA_GET.format(n_users=N_USERS, path="/healthz?u=%d")
    for mode, env in modes.items():
        with uvicorn_server(home, **env) as base:
            wrk(base + "/", 8, 2, floor_get)  # warm-up
            wrk(base + "/", 8, 2, get)
            pid = SERVER_PIDS[base]  # after the warm-up: every worker has loaded the model
            procs = worker_pids(pid) if "SPECREC_WORKERS" in env else [pid]
            for c in conns:
                # floor and recommend alternate in short runs: the machine's load drifts
                floors, recs, batches = [], [], []
                for _ in range(args.reps):
                    floors.append(timed(base, procs, c, args.seconds, floor_get))
                    calls0, queries0 = search_counts(base)
                    recs.append(timed(base, procs, c, args.seconds, get))
                    calls1, queries1 = search_counts(base)
                    batches.append((queries1 - queries0) / max(calls1 - calls0, 1))
                floor, rec = combine(floors), combine(recs)
                rec["batch"] = sum(batches) / len(batches)
                rec["ratios"] = [r["rps"] / f["rps"] for f, r in zip(floors, recs, strict=True)]
                rows.append((mode, c, floor, rec))
                print(mode, c, floor, rec, flush=True)
            memory[mode] = [memory_mb(p) for p in procs]
            print(mode, "memory", memory[mode], flush=True)
            if mode == "search":
                for b in (int(x) for x in args.batches.split(",") if x):
                    script = WRK_LUA_POST.format(n_users=N_USERS, batch=b)
                    res = wrk(base + "/", 8, args.seconds, script)
                    batch_rows.append((b, res))
                    print("batch", b, res, flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    command = f".venv/bin/python bench/serve_http.py --seconds {args.seconds:g} --reps {args.reps}"
    if args.model != "embedding":
        command += f" --model {args.model} --modes '{args.modes}' --batches '{args.batches}'"
    if args.vectors is not None:
        command += f" --vectors {args.vectors.name}"
    load = os.getloadavg()
    records = [
        {
            "benchmark": "serve_http",
            "model": args.model,
            "mode": mode,
            "connections": c,
            "floor_rps": f["rps"],
            "recommend_rps": r["rps"],
            "ratio": r["rps"] / f["rps"],
            "ratio_per_run": r["ratios"],
            "recommend_p50_ms": r["p50_ms"],
            "recommend_p99_ms": r["p99_ms"],
            "floor_cpu_us": f["cpu_us"],
            "recommend_cpu_us": r["cpu_us"],
            "mean_search_batch": r["batch"],
            "errors": f["errors"] + r["errors"],
            "memory_mb": memory[mode],
            "machine": header,
            "loadavg_after": load,
            "command": command,
            "commit": commit,
            "unix": time.time(),
        }
        for mode, c, f, r in rows
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(old + records, indent=1) + "\n")
    single = {m: rec["rps"] for m, c, _, rec in rows if c == 8}
    index = json.loads((home / "models" / "versions" / version / "manifest.json").read_text())
    index_text = ""
    if index.get("index"):
        info = index["index"]
        index_text = (
            f"; item index shipped in the artifact: {info['kind']} {info.get('params')}, "
            f"recall@20 {info.get('recall')} measured at publish"
        )
    model_text = (
        f"vectors trained on Gowalla ({args.vectors.name if args.vectors else ''}: "
        f"29,858 users x 40,981 items, d = 64){index_text}"
        if args.model == "trained"
        else "spectral filter of Gowalla's training matrix (29,858 users x 40,981 items, 810k "
        "pairs; K 256, α 0.3), scored by FilterIndex (two sparse products and a low-pass "
        "GEMM per batch). `lookup`: default settings (the artifact's per-user top-100 lists, "
        "SPECREC_PRECOMPUTE_K=100)"
        if spectral
        else "random, 29,858 users x 40,981 items, d = 64, 810k seen pairs; exact search "
        "(flat, numpy backend). `lookup`: default settings (the artifact's per-user top-100 "
        "lists, as the trainer writes them, SPECREC_PRECOMPUTE_K=100)"
    )
    lines = [
        "### Serving throughput: GET /recommend/{user}?k=20 vs the HTTP floor (GET /healthz)",
        "",
        f"Model: {model_text}; `search`: SPECREC_PRECOMPUTE_K=0, every request "
        "searched, batched on the search thread (the scan is above "
        "SPECREC_INLINE_SEARCH_MAX_CELLS); `search, event loop`: the same batched on the event "
        "loop (SPECREC_INLINE_SEARCH_MAX_CELLS=4194304); `lookup, 2 workers`: "
        "SPECREC_WORKERS=2. "
        "uvicorn (1 worker unless said), loopback; wrk -t1, "
        f"{args.reps} alternations of {args.seconds:g} s floor / {args.seconds:g} s recommend per "
        "cell on the same server (req/s: means; latencies and the server's CPU time per request "
        "(/proc utime + stime over the run / requests): medians of the runs); the floor's "
        "requests come from the same wrk Lua generator. "
        f"{header}.",
        "",
        "| mode | connections | floor req/s | floor p50 / p99 ms | recommend req/s | "
        "recommend p50 / p99 ms | ratio to floor | server CPU µs per request, floor / "
        "recommend (ratio) | mean search batch | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, c, f, r in rows:
        lines.append(
            f"| {mode} | {c} | {f['rps']:.0f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{r['rps'] / f['rps']:.2f} | "
            f"{f['cpu_us']:.0f} / {r['cpu_us']:.0f} ({f['cpu_us'] / r['cpu_us']:.2f}) | "
            f"{r['batch']:.1f} | {f['errors'] + r['errors']} |"
        )
    lines += [
        "",
        "Memory after load (RSS / PSS, MB; PSS splits shared pages between the processes "
        "sharing them): "
        + "; ".join(
            f"{mode}: " + ", ".join(f"{m['rss_mb']:.0f} / {m['pss_mb']:.0f}" for m in mems)
            for mode, mems in memory.items()
        )
        + ".",
    ]
    lines += (
        []
        if not batch_rows
        else [
            "",
            "### Batch endpoint: POST /recommend users/s vs single GET calls (8 connections)",
            "",
            "POST /recommend always searches (one search for the whole batch).",
            "",
            "| users per request | req/s | users/s | p50 / p99 ms | vs GET (search) | "
            "vs GET (lookup) | errors |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
    )
    for b, r in batch_rows:
        ups = r["rps"] * b
        lines.append(
            f"| {b} | {r['rps']:.1f} | {ups:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{ups / single['search']:.2f}x | {ups / single.get('lookup', float('nan')):.2f}x | "
            f"{r['errors']} |"
        )
    lines += [
        "",
        f"Command: `{command}`",
        "",
    ]
    name = "serve_http.md" if args.model == "embedding" else f"serve_http-{args.model}.md"
    (OUT / name).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
