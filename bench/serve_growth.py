"""How serving cost grows with the catalogue and with the users, on trained vectors.

Sub-models of ``bench/serve_scale.py``'s trained 10^6 x 10^6 model (``--work``, default
/work/scale: ``vectors/<objective>/`` and ``data/<tag>/``): a seeded random ``n`` of its items
and ``m`` of its users, their vectors as trained, the pairs between them as the seen items.
For each (m, n):

- the publish-time item index choice (``trainer.train.with_item_index`` at
  ``--index-recall``): kind, parameters, recall@20, single-query p50 / p99 on one thread
  (each user's seen items excluded, as served), exact search's p50, build seconds;
- the model published, then loaded in a fresh child process as a replica loads it
  (``ModelRegistry.load`` + ``ServingModel.build``): seconds, and the child's RSS after the
  load against the artifact's size (whole, and less the RSS the child had after its imports,
  ~100 MB of interpreter and libraries);
- searches per second on one thread: 1000 / p50 ms of the served index.

Items grow 4·10^4 -> 10^6 with as many users; users grow 10^5 -> 10^6 at 10^6 items (the
1M x 1M point is the same). 10^7 items is extrapolated from the measured log-log slopes and
said so. Rows go to ``docs/results/serving_growth.json``; ``bench/report.py`` renders them.

    .venv/bin/python bench/serve_growth.py --objective directspec+
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "serving_growth.json"
ITEMS = (40_000, 100_000, 300_000, 1_000_000)
USERS_AT_1M = (100_000, 300_000)

CHILD = """
import json, sys, time
from contract.artifact import ModelRegistry
from service.serving import ServingModel
from service.settings import IndexSettings
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss()
t0 = time.perf_counter()
loaded = ModelRegistry(sys.argv[1]).load()
model = ServingModel.build(loaded, IndexSettings())
seconds = time.perf_counter() - t0
del loaded  # as the service drops it: the shipped index's file is then unmapped
rss = hwm = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) / 1024
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) / 1024
print(json.dumps({"load_s": seconds, "rss_mib": rss, "peak_rss_mib": hwm,
                  "rss_before_load_mib": before,
                  "index": model.index.kind, "source": model.index.source}))
"""


def sub_model(
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    m: int,
    n: int,
    seed: int = 0,
) -> Any:
    """ModelArrays of m seeded random users and n items of the full model, with the pairs
    between them as the seen items (ids: the full model's rows)."""
    from contract.artifact import ModelArrays

    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(user_emb.shape[0], size=m, replace=False))
    items = np.sort(rng.choice(item_emb.shape[0], size=n, replace=False))
    user_pos = np.full(user_emb.shape[0], -1, dtype=np.int64)
    user_pos[users] = np.arange(m)
    item_pos = np.full(item_emb.shape[0], -1, dtype=np.int64)
    item_pos[items] = np.arange(n)
    u, i = user_pos[pairs[0]], item_pos[pairs[1]]
    keep = (u >= 0) & (i >= 0)
    return ModelArrays.build(
        np.asarray(user_emb[users]),
        np.asarray(item_emb[items]),
        [str(x) for x in users],
        [str(x) for x in items],
        (u[keep], i[keep]),
    )


def measure(arrays: Any, recall: float, objective: str, reuse: Any | None = None) -> dict[str, Any]:
    """`reuse`: a LoadedModel over the same items (all of them, in order) whose index and
    choice are taken instead of choosing again (the 10^6-item HNSW build takes minutes)."""
    from contract.artifact import ModelRegistry
    from contract.manifest import IndexInfo
    from contract.spectrum import embedding_spectrum
    from trainer.train import with_item_index

    t0 = time.perf_counter()
    if reuse is not None and reuse.manifest.index is not None:
        info: IndexInfo = reuse.manifest.index
        arrays = arrays.with_arrays(item_index=reuse.arrays.item_index)
    else:
        arrays, info = with_item_index(arrays, recall)
    choice_s = time.perf_counter() - t0
    spectrum = embedding_spectrum(np.asarray(arrays.user_emb), np.asarray(arrays.item_emb))
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        registry = ModelRegistry(Path(tmp))
        registry.publish(  # as the trainer publishes: with the spectrum fit computed
            arrays,
            config={"objective": objective, "encoder": "mf", "bench": "serve_growth"},
            spectrum=spectrum,
            extra={"index": info.to_dict()},
        )
        vdir = next((Path(tmp) / "versions").iterdir())
        artifact_mib = sum(p.stat().st_size for p in vdir.iterdir()) / 2**20
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, tmp], capture_output=True, text=True, env=env, cwd=ROOT
        )
        if child.returncode != 0:
            raise RuntimeError(child.stderr[-2000:])
        loaded = json.loads(child.stdout.strip().splitlines()[-1])
    p50 = info.p50_ms if info.kind != "flat" else info.exact_p50_ms
    return {
        "users": arrays.n_users,
        "items": arrays.n_items,
        "seen": int(len(arrays.seen_indices)),
        "index": info.kind,
        "index_params": info.params.to_dict(),
        "recall@20": info.recall,
        "p50_ms": p50,
        "p99_ms": info.p99_ms,
        "exact_p50_ms": info.exact_p50_ms,
        "searches_per_s_one_thread": 1000.0 / p50 if p50 else None,
        "build_s": info.build_s,
        "index_choice_s": choice_s,
        "index_reused": reuse is not None,
        "reason": info.reason,
        "artifact_mib": artifact_mib,
        **loaded,
        "rss_over_artifact": loaded["rss_mib"] / artifact_mib,
        "rss_loaded_over_artifact": (loaded["rss_mib"] - loaded["rss_before_load_mib"])
        / artifact_mib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/work/scale"))
    ap.add_argument("--objective", default="directspec+")
    ap.add_argument("--index-recall", type=float, default=0.95)
    ap.add_argument("--items", default=",".join(map(str, ITEMS)))
    ap.add_argument("--users-at-max", default=",".join(map(str, USERS_AT_1M)))
    ap.add_argument(
        "--index-from",
        type=Path,
        default=None,
        help="a published version dir of the full model (bench/publish_scale.py's): its "
        "item index and choice serve every row with all the items",
    )
    args = ap.parse_args()
    from trainer.data import load_dataset

    data_dir = sorted(p for p in (args.work / "data").iterdir() if p.is_dir())[-1]
    ds = load_dataset(data_dir)
    pairs = (
        np.concatenate([ds.train_users, ds.test_users]),
        np.concatenate([ds.train_items, ds.test_items]),
    )
    del ds
    vec = args.work / "vectors" / args.objective
    user_emb = np.load(vec / "user.npy", mmap_mode="r")
    item_emb = np.load(vec / "item.npy", mmap_mode="r")
    sizes = [(n, n) for n in map(int, args.items.split(",")) if n <= item_emb.shape[0]]
    top = max(n for n, _ in sizes)
    sizes += [(m, top) for m in map(int, args.users_at_max.split(",")) if m]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    reuse = None
    if args.index_from is not None:
        from contract.artifact import read_model_dir

        reuse = read_model_dir(args.index_from)
    rows = []
    for m, n in sizes:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        arrays = sub_model(user_emb, item_emb, pairs, min(m, user_emb.shape[0]), n)
        row = {
            "benchmark": "serve_growth",
            "vectors": args.objective,
            **measure(
                arrays,
                args.index_recall,
                args.objective,
                reuse if n == item_emb.shape[0] else None,
            ),
            "threads": 1,
            "seconds": time.perf_counter() - t0,
            "machine": machine(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg()[0],
            "command": "python bench/serve_growth.py " + shlex.join(sys.argv[1:]),
            "commit": commit,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps([*old, row], indent=1) + "\n")


if __name__ == "__main__":
    main()
