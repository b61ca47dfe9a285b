"""Shared pieces of the serving benchmarks: a Gowalla-size random model, a uvicorn process,
wrk runs, single-query index timings and their recall. Only loopback traffic; everything is
written under bench/.data and bench/out (both git-ignored)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / ".data"
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

from contract.artifact import ModelArrays, ModelRegistry  # noqa: E402


def gowalla_like(
    n_users: int = 29_858,
    n_items: int = 40_981,
    dim: int = 64,
    n_seen: int = 810_128,
    seed: int = 0,
) -> ModelArrays:
    """Random model with Gowalla's shape: Gaussian embeddings, Zipf-ish item popularity,
    ~27 training items per user (Gowalla: 29,858 users, 40,981 items, 810,128 train pairs)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_seen)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=n_seen, p=pop / pop.sum())
    return ModelArrays.build(
        rng.standard_normal((n_users, dim), dtype=np.float32) / np.sqrt(dim),
        rng.standard_normal((n_items, dim), dtype=np.float32) / np.sqrt(dim),
        [f"user_{i}" for i in range(n_users)],
        [f"item_{i}" for i in range(n_items)],
        (users, items),
    )


def gowalla_shaped(template: sp.csr_matrix, n_items: int, seed: int = 0) -> sp.csr_matrix:
    """A binary (m, n_items) float32 CSR shaped like `template` (Gowalla's training matrix):
    m = n_items x the template's users per item; each user's degree drawn from the template's
    per-user degrees; items drawn with the template's popularity at the same rank quantile
    (its sorted item degrees, interpolated to n_items ranks, items in random order); duplicate
    draws merged (a user's degree can come out slightly lower)."""
    rng = np.random.default_rng(seed)
    m0, n0 = template.shape
    n_users = max(1, round(n_items * m0 / n0))
    user_deg = np.diff(template.indptr)
    deg = np.minimum(rng.choice(user_deg[user_deg > 0], size=n_users), n_items)
    pop = np.sort(np.bincount(template.indices, minlength=n0))[::-1].astype(np.float64)
    ranks = (np.arange(n_items) + 0.5) * (n0 / n_items)
    weight = np.interp(ranks, np.arange(n0) + 0.5, pop) + 1e-3  # every item drawable
    weight = weight[rng.permutation(n_items)]
    users = np.repeat(np.arange(n_users, dtype=np.int64), deg)
    cdf = np.cumsum(weight)
    items = np.searchsorted(cdf, rng.random(len(users)) * cdf[-1], side="right")
    mat = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, np.minimum(items, n_items - 1))),
        shape=(n_users, n_items),
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def publish_once(home: Path, build, lists: bool = True) -> str:
    """Publish `build()` under home/models unless a model is already there; with each user's
    top-100 list as the trainer publishes an embedding model (`lists`, up to
    trainer.toplists.MAX_CELLS; False: an artifact without them, as older ones)."""
    registry = ModelRegistry(home / "models")
    if registry.current() is None:
        arrays = build()
        if lists and arrays.kind == "embedding":
            from trainer.toplists import with_embedding_lists  # torch: only when publishing

            arrays = with_embedding_lists(arrays)
        registry.publish(arrays, config={"bench": True})
    return registry.current()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_server(
    home: Path,
    code: Path = REPO,
    on_start: Callable[[int], None] | None = None,
    **env_extra: str,
) -> Iterator[str]:
    """`python -m service.main` on a free loopback port; yields the base URL once /readyz is 200
    (and, with SPECREC_WORKERS=N, once N workers run). The server's pid is SERVER_PIDS[base].
    `code`: the source tree it runs (default this one; e.g. an older commit's, to compare);
    `on_start(pid)` runs right after the process starts (e.g. to sample its memory)."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECREC_")}
    env.update(SPECREC_HOME=str(home), PORT=str(port), HOST="127.0.0.1", SPECREC_WATCH="false")
    env.update(SPECREC_LOG_LEVEL="warning", **env_extra)
    env.pop("ADMIN_TOKEN", None)
    env["PYTHONPATH"] = str(code)
    proc = subprocess.Popen([sys.executable, "-m", "service.main"], cwd=code, env=env)
    base = f"http://127.0.0.1:{port}"
    SERVER_PIDS[base] = proc.pid
    if on_start is not None:
        on_start(proc.pid)
    want_workers = int(env.get("SPECREC_WORKERS", "1"))
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1).status_code == 200
                if ready and (want_workers == 1 or len(worker_pids(proc.pid)) >= want_workers):
                    time.sleep(1.0 if want_workers > 1 else 0.0)  # the last one's model
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 300 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


SERVER_PIDS: dict[str, int] = {}


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes under supervisor `pid` (Linux /proc; not its resource
    tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in path.read_text().split() if path.exists() else ():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(child))
    return sorted(found)


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` (MiB) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples a process's RSS every `period` seconds in a thread; ``peak`` so far (MiB)."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid, self.period, self.peak = pid, period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return
            time.sleep(self.period)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and PSS (shared pages split between the processes sharing them) in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key.lower() + "_mb"] = int(rest.split()[0]) / 1024
    return out


WRK_LUA_GET = """
local n = {n_users}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("{path}", (counter * 7919) % n))
end
"""

WRK_LUA_POST = """
local n = {n_users}
local b = {batch}
local counter = 0
request = function()
  local ids = {{}}
  for i = 1, b do
    counter = counter + 1
    ids[i] = string.format('"user_%d"', (counter * 7919) % n)
  end
  local body = '{{"k": 20, "user_ids": [' .. table.concat(ids, ",") .. ']}}'
  return wrk.format("POST", "/recommend", {{["Content-Type"] = "application/json"}}, body)
end
"""


def wrk(url: str, connections: int, seconds: float, script: str | None = None) -> dict:
    """One wrk run (1 thread); returns requests/s, p50/p99 latency in ms, errors."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "10s"]
    if script is not None:
        OUT.mkdir(parents=True, exist_ok=True)  # git-ignored: absent in a fresh clone
        path = OUT / f".wrk-{os.getpid()}.lua"
        path.write_text(script)
        cmd += ["-s", str(path)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"no {label} in wrk output:\n{out}")
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": errors,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` (all their threads) have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15), in ticks
    return total / os.sysconf("SC_CLK_TCK")


def search_counts(base: str) -> tuple[float, float]:
    """(searches, queries) from the server's /metrics: their ratio is the mean batch size."""
    import httpx

    values = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(("specrec_search_calls_total ", "specrec_search_queries_total ")):
            name, value = line.split()
            values[name] = float(value)
    return values["specrec_search_calls_total"], values["specrec_search_queries_total"]


def machine() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"load average before the run {load[0]:.2f}"
    )


def timed_search(
    index: Any, queries: np.ndarray, banned: list[np.ndarray], warmup: int = 0, **params: Any
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each query alone through ``index.search`` (k = 20), after `warmup` untimed ones: its
    rows and times (ms, (q,))."""
    for q, b in zip(queries[:warmup], banned[:warmup], strict=True):
        index.search(q[None, :], [20], [b], **params)
    rows, times = [], []
    for q, b in zip(queries, banned, strict=True):
        t = time.perf_counter()
        ((r, _),) = index.search(q[None, :], [20], [b], **params)
        times.append(time.perf_counter() - t)
        rows.append(r)
    return rows, np.asarray(times) * 1e3


def recall(approx: list[np.ndarray], exact: list[np.ndarray]) -> float:
    """Share of the exact top-20 rows that the approximate answers hold."""
    hit = sum(len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True))
    return hit / sum(len(e) for e in exact)
