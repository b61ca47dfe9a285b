"""From publish to serving at 10^6 users x 10^6 items: publish, load, index, swap, memory, HTTP.

Takes the trained vectors and the dataset of ``bench/serve_scale.py`` (``--work``, default
/work/scale: ``vectors/<objective>/user.npy``, ``item.npy`` and ``data/<tag>/``) and:

1. **publish**: the trainer's publish steps for an embedding model (``ModelArrays.build`` with
   every train and test pair seen, per-user lists (skipped above trainer.toplists.MAX_CELLS,
   as at this size), the item index chosen for ``SPECREC_INDEX_RECALL`` by
   ``trainer.train.with_item_index``, ``ModelRegistry.publish``): seconds of each step, the
   artifact's bytes per file and the manifest's index choice;
2. **cold start**: ``python -m service.main`` on that registry (one uvicorn worker, the model
   watcher on): seconds from the process start to ``/readyz`` 200, its RSS then, and RSS
   against the artifact's size (the arrays it serves, memory-mapped, plus the index it loads);
3. **swap**: the same arrays published again as a new version (a retrain's publish, index
   included); seconds from CURRENT switching to ``/readyz`` reporting the new version (the
   watcher's poll, load, index, swap), and the server's peak RSS meanwhile (sampled every
   50 ms from /proc);
4. **HTTP**: ``GET /recommend/{user}?k=20`` (every request searched: no lists at this size)
   against the ``/healthz`` floor at 1 and 8 connections with wrk, alternating.

Rows go to ``docs/results/publish_scale.json`` (``--out``; one per run; ``bench/report.py`` renders
it).

    .venv/bin/python bench/publish_scale.py --objective directspec+
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import WRK_LUA_GET, PeakRss, machine, rss_mib, uvicorn_server, wrk

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "publish_scale.json"


def publish_versions(
    registry: Any, arrays: Any, objective: str, index: dict[str, Any], out: dict[str, Any]
) -> None:
    """Two versions of `arrays` (the first served, the second swapped in later, as a
    retrain's), with the manifest's spectrum as fit() records it (the service would
    otherwise compute it at load) and the index choice; timings into `out`."""
    from contract.spectrum import embedding_spectrum

    t0 = time.perf_counter()
    spectrum = embedding_spectrum(np.asarray(arrays.user_emb), np.asarray(arrays.item_emb))
    out["spectrum_s"] = time.perf_counter() - t0
    out["versions"], out["publish_s"] = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        out["versions"].append(
            registry.publish(
                arrays,
                config={"objective": objective, "encoder": "mf", "bench": "publish_scale"},
                spectrum=spectrum,
                extra={"index": index},
                activate=False,
                keep=10,
            )
        )
        out["publish_s"].append(time.perf_counter() - t0)


def publish(work: Path, objective: str, home: Path, recall: float) -> dict[str, Any]:
    """Publish the trained vectors as the trainer publishes an embedding model; timings."""
    from contract.artifact import ModelArrays, ModelRegistry
    from trainer.data import load_dataset
    from trainer.toplists import with_embedding_lists
    from trainer.train import with_item_index

    data_dirs = sorted(p for p in (work / "data").iterdir() if p.is_dir())
    out: dict[str, Any] = {"dataset": data_dirs[-1].name}
    t0 = time.perf_counter()
    ds = load_dataset(data_dirs[-1])
    vec = work / "vectors" / objective
    user_emb = np.load(vec / "user.npy", mmap_mode="r")
    item_emb = np.load(vec / "item.npy", mmap_mode="r")
    out["load_data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arrays = ModelArrays.build(
        user_emb,
        item_emb,
        ds.user_ids,
        ds.item_ids,
        (
            np.concatenate([ds.train_users, ds.test_users]),
            np.concatenate([ds.train_items, ds.test_items]),
        ),
    )
    del ds
    out["arrays_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arrays = with_embedding_lists(arrays)
    out["lists_s"] = time.perf_counter() - t0
    out["lists"] = arrays.top_rows is not None
    t0 = time.perf_counter()
    arrays, info = with_item_index(arrays, recall)
    out["index_choice_s"] = time.perf_counter() - t0
    out["index"] = info.to_dict()
    registry = ModelRegistry(home / "models")
    publish_versions(registry, arrays, objective, out["index"], out)
    versions = out["versions"]
    vdir = home / "models" / "versions" / versions[0]
    out["artifact_mib"] = {
        p.name: p.stat().st_size / 2**20 for p in sorted(vdir.iterdir()) if p.is_file()
    }
    out["n_users"], out["n_items"], out["n_seen"] = (
        arrays.n_users,
        arrays.n_items,
        int(len(arrays.seen_indices)),
    )
    return out


def serve(home: Path, versions: list[str], seconds: float) -> dict[str, Any]:
    """Cold start on versions[0], a swap to versions[1], then wrk against the floor."""
    import httpx

    from contract.artifact import ModelRegistry

    registry = ModelRegistry(home / "models")
    registry.activate(versions[0])
    out: dict[str, Any] = {}
    started: dict[str, Any] = {}

    def sample(pid: int) -> None:
        started["pid"], started["peak"] = pid, PeakRss(pid)

    t0 = time.perf_counter()
    watch = {"SPECREC_WATCH": "true", "SPECREC_WATCH_INTERVAL_S": "0.5"}
    with uvicorn_server(home, on_start=sample, **watch) as base:
        out["cold_start_s"] = time.perf_counter() - t0
        pid = started["pid"]
        out["rss_ready_mib"] = rss_mib(pid)
        out["peak_rss_cold_mib"] = started["peak"].stop()
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        out["readyz"] = ready
        time.sleep(2)
        out["rss_steady_mib"] = rss_mib(pid)
        # ---- swap
        peak = PeakRss(pid)
        t0 = time.perf_counter()
        registry.activate(versions[1], verify=False)
        while True:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200 and r.json()["model_version"] == versions[1]:
                break
            time.sleep(0.05)
        out["swap_s"] = time.perf_counter() - t0
        time.sleep(3)  # the old model's references drop
        out["peak_rss_swap_mib"] = peak.stop()
        out["rss_after_swap_mib"] = rss_mib(pid)
        # ---- HTTP: searched answers against the floor
        n_users = ready["n_users"]
        get = WRK_LUA_GET.format(n_users=n_users, path="/recommend/%d?k=20")
        floor = WRK_LUA_GET.format(n_users=n_users, path="/healthz?u=%d")
        probe = httpx.get(f"{base}/recommend/0?k=20", timeout=10)
        if probe.status_code != 200:  # ids of the generated data are the row numbers
            raise RuntimeError(f"GET /recommend/0: {probe.status_code} {probe.text[:200]}")
        wrk(base + "/", 8, 2, get)  # warm-up
        out["http"] = []
        for c in (1, 8):
            floors, recs = [], []
            for _ in range(3):
                floors.append(wrk(base + "/", c, seconds, floor))
                recs.append(wrk(base + "/", c, seconds, get))
            f_rps = sum(r["rps"] for r in floors) / len(floors)
            r_rps = sum(r["rps"] for r in recs) / len(recs)
            out["http"].append(
                {
                    "connections": c,
                    "floor_rps": f_rps,
                    "recommend_rps": r_rps,
                    "ratio": r_rps / f_rps,
                    "recommend_p50_ms": float(np.median([r["p50_ms"] for r in recs])),
                    "recommend_p99_ms": float(np.median([r["p99_ms"] for r in recs])),
                    "errors": sum(r["errors"] for r in floors + recs),
                }
            )
            print(out["http"][-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/work/scale"))
    ap.add_argument("--objective", default="directspec+")
    ap.add_argument("--home", type=Path, default=None, help="default: WORK/publish-<objective>")
    ap.add_argument("--index-recall", type=float, default=0.95)
    ap.add_argument("--seconds", type=float, default=4.0, help="per wrk run")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file (rows appended)")
    args = ap.parse_args()
    home = args.home or args.work / f"publish-{args.objective}"
    load_before = os.getloadavg()[0]
    state = home / "publish.json"
    if state.exists():
        pub = json.loads(state.read_text())
        print("publish: kept", state, flush=True)
        if "spectrum_s" not in pub:  # published without the spectrum: publish again
            from contract.artifact import ModelRegistry

            registry = ModelRegistry(home / "models")
            arrays = registry.load(pub["versions"][0]).arrays
            publish_versions(registry, arrays, args.objective, pub["index"], pub)
            state.write_text(json.dumps(pub, indent=1))
    else:
        home.mkdir(parents=True, exist_ok=True)
        pub = publish(args.work, args.objective, home, args.index_recall)
        state.write_text(json.dumps(pub, indent=1))
    print(json.dumps({k: v for k, v in pub.items() if k != "index"}, indent=1), flush=True)
    served = serve(home, pub["versions"], args.seconds)
    print(json.dumps(served, indent=1), flush=True)
    index_mib = pub["artifact_mib"].get("item_index.npy", 0.0)
    arrays_mib = sum(pub["artifact_mib"].values())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    row = {
        "benchmark": "publish_scale",
        "objective": args.objective,
        "users": pub["n_users"],
        "items": pub["n_items"],
        "seen": pub["n_seen"],
        "index": pub["index"]["kind"],
        "index_params": pub["index"].get("params"),
        "index_recall": pub["index"].get("recall"),
        "index_choice_s": pub["index_choice_s"],
        "publish_s": pub["publish_s"],
        "spectrum_s": pub["spectrum_s"],
        "artifact_mib": arrays_mib,
        "index_mib": index_mib,
        **{k: v for k, v in served.items() if k != "readyz"},
        "rss_ready_over_artifact": served["rss_ready_mib"] / arrays_mib,
        "peak_rss_swap_over_artifact": served["peak_rss_swap_mib"] / arrays_mib,
        "threads": "uvicorn 1 worker; search on one thread",
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "command": "python bench/publish_scale.py " + shlex.join(sys.argv[1:]),
        "commit": commit,
        "unix": time.time(),
    }
    old = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*old, row], indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
