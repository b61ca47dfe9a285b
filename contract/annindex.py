"""The approximate item index: chosen and built once at publish, shipped in the artifact.

``choose_index(items, queries, target)`` decides how an embedding model's items are searched
by inner product, measured on held-out queries (user vectors of a seeded sample of users,
``sample_queries``; used for nothing else):

- a catalogue below ``SMALL_CATALOGUE`` items is searched exactly (``flat``), nothing built;
- else IVF-Flat (``default_nlist`` cells) and HNSW-Flat (M 32, efConstruction 80) are built,
  and the settings of each one's grid (IVF nprobe 1, 2, 4, ... nlist; HNSW efSearch 16 ...
  512) are measured in that order until one reaches the target (the later ones only cost
  more): recall@20 against the exact top 20, and single-query latency on one thread
  (p50 / p99), next to exact numpy search's p50 on the same queries;
- the fastest setting whose recall reaches the target wins, unless it is not faster than
  exact search or none reaches it: then ``flat``.

The choice (``contract.manifest.IndexInfo``: kind, parameters, recall, latencies, reason and
every setting measured) goes into the manifest; the chosen index into the artifact as
``item_index.npy`` (``serialize_index``: faiss's own format as uint8 bytes), which the
service loads with ``load_index`` instead of building it. numpy and faiss only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from contract.manifest import IndexCandidate, IndexInfo, IndexParams

#: Below this many items exact search costs tens of microseconds per query on one core
#: (a GEMV over n × d floats that streams from cache): no approximate index can pay for
#: its recall loss there, so nothing is built or measured.
SMALL_CATALOGUE = 20_000
TOP_K = 20
"""Recall is measured at this depth (the service's default k)."""
N_QUERIES = 1_000
"""Held-out queries sampled for the measurement."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
EF_SEARCH_GRID = (16, 32, 64, 128, 256, 512)


def default_nlist(n: int) -> int:
    """IVF cells for n items: about sqrt(n), and at least 39 training points per cell."""
    return max(1, min(int(round(math.sqrt(n))), n // 39))


def nprobe_grid(nlist: int) -> tuple[int, ...]:
    """IVF cells visited per query, tried in this order: 1, 2, 4, ... below nlist, then nlist."""
    grid = [1 << i for i in range(max(nlist, 1).bit_length()) if 1 << i < nlist]
    return (*grid, nlist)


def sample_queries(user_emb: np.ndarray, n: int = N_QUERIES, seed: int = 0) -> np.ndarray:
    """(min(n, m), d) float32: the vectors of n users drawn without replacement (seeded)."""
    m = user_emb.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(m, size=min(n, m), replace=False))
    return np.ascontiguousarray(user_emb[rows], dtype=np.float32)


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    """items (n, d), queries (q, d) -> (q, min(k, n)) int64: each query's top-k rows by inner
    product, best first (one GEMM per batch of queries)."""
    k = min(k, items.shape[0])
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        scores = queries[start : start + batch] @ items.T  # (b, n)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + batch] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """found (q, k) rows (-1: none), truth (q, k) rows -> mean share of truth found."""
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return float(hits / max(truth.size, 1))


def _latencies(search_one: Callable[[np.ndarray], Any], queries: np.ndarray) -> np.ndarray:
    """(q,) seconds of search_one on each query (1, d) by itself."""
    out = np.empty(len(queries))
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t0 = time.perf_counter()
        search_one(q)
        out[i] = time.perf_counter() - t0
    return out


def _ms(seconds: np.ndarray, pct: float) -> float:
    return float(np.percentile(seconds, pct) * 1e3)


def exact_latency(items: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """(q,) seconds of exact numpy search per query on one thread, as the service does it
    (service.index.NumpyExactIndex: q @ items.T on a (d, n) copy, then argpartition)."""
    items_t = np.ascontiguousarray(items.T)  # (d, n)
    k = min(k, items.shape[0])

    def one(q: np.ndarray) -> None:
        scores = (q @ items_t)[0]
        top = np.argpartition(-scores, k - 1)[:k]
        top[np.argsort(-scores[top], kind="stable")]

    with threadpool_limits(limits=1, user_api="blas"):
        return _latencies(one, queries)


@dataclass(frozen=True)
class IndexChoice:
    """``choose_index``'s result: what the manifest records, and the index to ship (None:
    flat, nothing to ship)."""

    info: IndexInfo
    index: Any | None  # faiss.Index


def build_ivf(items: np.ndarray, nlist: int) -> Any:
    """IndexIVFFlat (inner product) of items (n, d) with nlist cells, k-means on at most
    64 · nlist sampled items."""
    d = items.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = 64
    index.train(items)
    index.add(items)
    return index


def build_hnsw(items: np.ndarray, m: int, ef_construction: int) -> Any:
    """IndexHNSWFlat (inner product) of items (n, d)."""
    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(items)
    return index


def _measure(
    index: Any,
    kind: str,
    grid: Sequence[tuple[IndexParams, Callable[[], None]]],
    queries: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> list[IndexCandidate]:
    """Each setting of `grid` (its params and how to apply it to `index`) in order, until one
    reaches `target` (the later ones only cost more): recall and one-thread latency."""
    k = truth.shape[1]
    out = []
    for params, apply in grid:
        apply()
        _, found = index.search(queries, k)  # (q, k), -1 where fewer than k were found
        recall = recall_at_k(found, truth)
        seconds = _latencies(lambda q: index.search(q, k), queries)
        out.append(
            IndexCandidate(
                kind=kind,
                params=params,
                recall=recall,
                p50_ms=_ms(seconds, 50),
                p99_ms=_ms(seconds, 99),
            )
        )
        if recall >= target:
            break
    return out


def _ivf_grid(index: Any, nlist: int, nprobes: Sequence[int]) -> list[Any]:
    def setter(p: int) -> Callable[[], None]:
        return lambda: setattr(index, "nprobe", p)

    return [(IndexParams(nlist=nlist, nprobe=p), setter(p)) for p in nprobes if p <= nlist]


def _hnsw_grid(index: Any, m: int, ef_construction: int, efs: Sequence[int]) -> list[Any]:
    def setter(ef: int) -> Callable[[], None]:
        return lambda: setattr(index.hnsw, "efSearch", ef)

    return [
        (IndexParams(m=m, ef_construction=ef_construction, ef_search=ef), setter(ef)) for ef in efs
    ]


def choose_index(
    items: np.ndarray,
    queries: np.ndarray,
    target: float,
    *,
    small_catalogue: int = SMALL_CATALOGUE,
    k: int = TOP_K,
    nprobes: Sequence[int] | None = None,
    ef_searches: Sequence[int] = EF_SEARCH_GRID,
    hnsw_m: int = HNSW_M,
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
) -> IndexChoice:
    """The index for items (n, d) given held-out queries (q, d) and a recall target in (0, 1]
    (module docstring). `nprobes` default: ``nprobe_grid(nlist)``. Building uses every
    core; the timed searches run on one thread (faiss and BLAS)."""
    if not 0 < target <= 1:
        raise ValueError(f"recall target {target} outside (0, 1]")
    items = np.ascontiguousarray(items, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = items.shape[0]
    if n < small_catalogue:
        reason = f"{n} items < {small_catalogue}: exact search is cheaper than any index"
        return IndexChoice(IndexInfo(kind="flat", target=target, k=k, reason=reason), None)
    truth = exact_topk(items, queries, k)
    exact_p50 = _ms(exact_latency(items, queries, k), 50)
    nlist = default_nlist(n)
    t0 = time.perf_counter()
    ivf = build_ivf(items, nlist)
    ivf_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hnsw = build_hnsw(items, hnsw_m, hnsw_ef_construction)
    hnsw_s = time.perf_counter() - t0
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ivf_grid = _ivf_grid(ivf, nlist, nprobes or nprobe_grid(nlist))
        candidates = _measure(ivf, "ivf", ivf_grid, queries, truth, target)
        hnsw_grid = _hnsw_grid(hnsw, hnsw_m, hnsw_ef_construction, ef_searches)
        candidates += _measure(hnsw, "hnsw", hnsw_grid, queries, truth, target)
    finally:
        faiss.omp_set_num_threads(threads)
    common: dict[str, Any] = {
        "target": target,
        "k": k,
        "exact_p50_ms": exact_p50,
        "n_queries": len(queries),
        "candidates": candidates,
    }
    meeting = [c for c in candidates if c.recall >= target]
    if not meeting:
        best = max(candidates, key=lambda c: c.recall)
        reason = (
            f"no setting reached recall@{k} {target} (best {best.recall:.4f}, "
            f"{best.kind} {_describe(best.params)}): exact search"
        )
        return IndexChoice(IndexInfo(kind="flat", recall=1.0, reason=reason, **common), None)
    best = min(meeting, key=lambda c: c.p50_ms)
    if best.p50_ms >= exact_p50:
        reason = (
            f"the fastest setting reaching recall@{k} {target} ({best.kind} "
            f"{_describe(best.params)}, p50 {best.p50_ms:.3f} ms) is not faster than exact "
            f"search ({exact_p50:.3f} ms)"
        )
        return IndexChoice(IndexInfo(kind="flat", recall=1.0, reason=reason, **common), None)
    index, build_s = (ivf, ivf_s) if best.kind == "ivf" else (hnsw, hnsw_s)
    if best.kind == "ivf":
        index.nprobe = best.params.nprobe
    else:
        index.hnsw.efSearch = best.params.ef_search
    reason = (
        f"fastest setting reaching recall@{k} {target}: p50 {best.p50_ms:.3f} ms vs exact "
        f"{exact_p50:.3f} ms"
    )
    info = IndexInfo(
        kind=best.kind,
        params=best.params,
        recall=best.recall,
        p50_ms=best.p50_ms,
        p99_ms=best.p99_ms,
        build_s=build_s,
        reason=reason,
        **common,
    )
    return IndexChoice(info, index)


def _describe(params: IndexParams) -> str:
    return " ".join(f"{k} {v}" for k, v in params.to_dict().items())


def serialize_index(index: Any) -> np.ndarray:
    """A faiss index as its bytes (faiss's own format): (b,) uint8."""
    return np.asarray(faiss.serialize_index(index), dtype=np.uint8)


def load_index(data: np.ndarray) -> Any:
    """The faiss index `data` ((b,) uint8, e.g. the artifact's memory map) holds; a copy in
    this process's memory. Raises ValueError when the bytes are not a faiss index."""
    try:
        return faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    except RuntimeError as e:  # faiss reports a bad file as RuntimeError
        raise ValueError(f"not a faiss index: {str(e).splitlines()[0]}") from e
