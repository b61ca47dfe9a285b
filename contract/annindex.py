"""The approximate item index: chosen and built once at publish, shipped in the artifact.

``choose_index(items, queries, target, banned)`` decides how an embedding model's items are
searched by inner product, measured on held-out queries (user vectors of a seeded sample of
users, ``sample_users``; used for nothing else) searched as the service searches them: each
query's seen items (`banned`) excluded, by over-fetching k + |seen| candidates and dropping
the seen ones (``fetch_depth``, ``search_parameters``: the service's FaissIndex uses both).
A trained user's seen items are among its best-scored, so exclusions are what make an
approximate search of a trained model slower than the same search of random queries
(HNSW's candidate list grows to k + |seen|):

- a catalogue below ``SMALL_CATALOGUE`` items is searched exactly (``flat``), nothing built;
- else IVF-Flat (``default_nlist`` cells) and HNSW-Flat (M 32, efConstruction 80) are built,
  and the settings of each one's grid (IVF nprobe 1, 2, 4, ... nlist; HNSW efSearch 16 ...
  512) are measured in that order until one reaches the target (the later ones only cost
  more): recall@20 against the exact top 20, and single-query latency on one thread
  (p50 / p99), next to exact numpy search's p50 on the same queries;
- the fastest setting whose recall reaches the target wins, unless it is not
  ``MIN_SPEEDUP`` times faster than exact search or none reaches it: then ``flat``.

The choice (``contract.manifest.IndexInfo``: kind, parameters, recall, latencies, reason and
every setting measured) goes into the manifest; the chosen index into the artifact as
``item_index.npy`` (``serialize_index``: faiss's own format as uint8 bytes), which the
service loads with ``load_index`` instead of building it. numpy and faiss only; without faiss
(contract/faisslib.py: an optional dependency) the choice is ``flat``, saying why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from contract import faisslib
from contract.manifest import IndexCandidate, IndexInfo, IndexParams

#: Below this many items exact search costs tens of microseconds per query on one core
#: (a GEMV over n × d floats that streams from cache): no approximate index can pay for
#: its recall loss there, so nothing is built or measured.
SMALL_CATALOGUE = 20_000
MIN_SPEEDUP = 2.0
"""An approximate index is shipped only when its p50 is at least this many times below exact
search's: a smaller gain does not pay for the answers it gets wrong, and is within the noise
of timing on a shared machine (Gowalla's 41k items, trained vectors, seen items excluded:
IVF nprobe 64 reached 0.97 at 0.28 ms vs exact 0.34 ms)."""
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


def sample_users(m: int, n: int = N_QUERIES, seed: int = 0) -> np.ndarray:
    """(min(n, m),) int64: n of m user rows drawn without replacement (seeded), sorted."""
    return np.sort(np.random.default_rng(seed).choice(m, size=min(n, m), replace=False))


def user_queries(user_emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(r, d) float32 contiguous: the vectors of user `rows` (r,), as queries."""
    return np.ascontiguousarray(user_emb[rows], dtype=np.float32)


def sample_queries(user_emb: np.ndarray, n: int = N_QUERIES, seed: int = 0) -> np.ndarray:
    """(min(n, m), d) float32: the vectors of the users ``sample_users`` draws."""
    return user_queries(user_emb, sample_users(user_emb.shape[0], n, seed))


def fetch_depth(ks: Sequence[int], banned: Sequence[np.ndarray], n: int) -> int:
    """Candidates to fetch for a batch of queries so that each keeps its k after its banned
    rows are dropped: max(k + |banned|), at most n."""
    return min(n, max(k + len(b) for k, b in zip(ks, banned, strict=True)))


def search_parameters(
    kind: str, k_fetch: int, *, nprobe: int | None, ef_search: int | None, nlist: int = 0
) -> Any:
    """faiss SearchParameters of one search of `kind` fetching `k_fetch`: IVF's nprobe (at most
    nlist when known), HNSW's efSearch raised to k_fetch; None for exact (flat)."""
    if kind not in ("ivf", "hnsw"):
        return None
    faiss = faisslib.require(f"{kind} search")
    if kind == "ivf":
        probe = nprobe or 1
        # faiss's bundled stubs lag its runtime, which takes these keyword arguments
        return faiss.SearchParametersIVF(nprobe=min(probe, nlist) if nlist else probe)
    return faiss.SearchParametersHNSW(efSearch=max(ef_search or 16, k_fetch))


def kept(rows: np.ndarray, k: int, banned: np.ndarray) -> np.ndarray:
    """Positions of the first k of an index's answer rows (k_fetch,) left after padding (-1)
    and `banned` rows are dropped (service.topk.filter_ranked keeps the same)."""
    keep = rows >= 0
    if len(banned):
        keep &= ~np.isin(rows, banned)
    return np.flatnonzero(keep)[:k]


def exact_topk(
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    batch: int = 256,
    banned: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """items (n, d), queries (q, d) -> (q, min(k, n)) int64: each query's top-k rows by inner
    product, best first, its `banned` rows left out (one GEMM per batch of queries; a query
    with fewer than k rows left is padded with banned ones, last)."""
    k = min(k, items.shape[0])
    batch = max(1, min(batch, (1 << 26) // max(items.shape[0], 1)))  # <= 256 MB of scores
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        scores = queries[start : start + batch] @ items.T  # (b, n)
        if banned is not None:
            for i, b in enumerate(banned[start : start + batch]):
                scores[i, b] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + batch] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """found (q, k) rows (-1: none), truth (q, k) rows -> mean share of truth found."""
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return float(hits / max(truth.size, 1))


def _ms(seconds: np.ndarray, pct: float) -> float:
    return float(np.percentile(seconds, pct) * 1e3)


def exact_latency(
    items: np.ndarray,
    queries: np.ndarray,
    k: int = TOP_K,
    banned: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """(q,) seconds of exact numpy search per query on one thread, as the service does it
    (service.index.NumpyExactIndex: q @ items.T on a (d, n) copy, banned rows out, then
    argpartition)."""
    items_t = np.ascontiguousarray(items.T)  # (d, n)
    k = min(k, items.shape[0])
    out = np.empty(len(queries))
    with threadpool_limits(limits=1, user_api="blas"):
        for i in range(len(queries)):
            t0 = time.perf_counter()
            scores = (queries[i : i + 1] @ items_t)[0]
            if banned is not None:
                scores[banned[i]] = -np.inf
            top = np.argpartition(-scores, k - 1)[:k]
            top[np.argsort(-scores[top], kind="stable")]
            out[i] = time.perf_counter() - t0
    return out


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
    faiss = faisslib.require("an IVF index")
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = 64
    index.train(items)
    index.add(items)
    return index


def build_hnsw(items: np.ndarray, m: int, ef_construction: int) -> Any:
    """IndexHNSWFlat (inner product) of items (n, d)."""
    faiss = faisslib.require("an HNSW index")
    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(items)
    return index


def _measure(
    index: Any,
    kind: str,
    grid: Sequence[IndexParams],
    queries: np.ndarray,
    banned: Sequence[np.ndarray],
    truth: np.ndarray,
    target: float,
) -> list[IndexCandidate]:
    """Each setting of `grid` in order, until one reaches `target` (the later ones only cost
    more): recall and one-thread latency of single-query searches as the service makes them
    (k + |banned| fetched, banned rows dropped)."""
    k, n = truth.shape[1], int(index.ntotal)
    out = []
    for params in grid:
        found = np.full(truth.shape, -1, dtype=np.int64)
        seconds = np.empty(len(queries))
        for i in range(len(queries)):
            t0 = time.perf_counter()
            k_fetch = fetch_depth([k], [banned[i]], n)
            sp = search_parameters(
                kind,
                k_fetch,
                nprobe=params.nprobe,
                ef_search=params.ef_search,
                nlist=params.nlist or 0,
            )
            _, rows = index.search(queries[i : i + 1], k_fetch, params=sp)
            top = rows[0][kept(rows[0], k, banned[i])]
            seconds[i] = time.perf_counter() - t0
            found[i, : len(top)] = top
        recall = recall_at_k(found, truth)
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


def _ivf_grid(nlist: int, nprobes: Sequence[int]) -> list[IndexParams]:
    return [IndexParams(nlist=nlist, nprobe=p) for p in nprobes if p <= nlist]


def _hnsw_grid(m: int, ef_construction: int, efs: Sequence[int]) -> list[IndexParams]:
    return [IndexParams(m=m, ef_construction=ef_construction, ef_search=ef) for ef in efs]


def choose_index(
    items: np.ndarray,
    queries: np.ndarray,
    target: float,
    banned: Sequence[np.ndarray] | None = None,
    *,
    small_catalogue: int = SMALL_CATALOGUE,
    k: int = TOP_K,
    nprobes: Sequence[int] | None = None,
    ef_searches: Sequence[int] = EF_SEARCH_GRID,
    hnsw_m: int = HNSW_M,
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    min_speedup: float = MIN_SPEEDUP,
) -> IndexChoice:
    """The index for items (n, d) given held-out queries (q, d), the rows each query excludes
    (`banned`, q arrays; None: none) and a recall target in (0, 1] (module docstring).
    `nprobes` default: ``nprobe_grid(nlist)``. Building uses every core; the timed searches
    run on one thread (faiss and BLAS)."""
    if not 0 < target <= 1:
        raise ValueError(f"recall target {target} outside (0, 1]")
    items = np.ascontiguousarray(items, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = items.shape[0]
    if n < small_catalogue:
        reason = f"{n} items < {small_catalogue}: exact search is cheaper than any index"
        return IndexChoice(IndexInfo(kind="flat", target=target, k=k, reason=reason), None)
    faiss = faisslib.faiss
    if faiss is None:
        reason = f"exact search: no index can be built here ({faisslib.IMPORT_ERROR})"
        return IndexChoice(IndexInfo(kind="flat", target=target, k=k, reason=reason), None)
    if banned is None:
        banned = [np.empty(0, dtype=np.int64)] * len(queries)
    banned = [np.asarray(b, dtype=np.int64) for b in banned]
    truth = exact_topk(items, queries, k, banned=banned)
    exact_p50 = _ms(exact_latency(items, queries, k, banned), 50)
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
        ivf_grid = _ivf_grid(nlist, nprobes or nprobe_grid(nlist))
        candidates = _measure(ivf, "ivf", ivf_grid, queries, banned, truth, target)
        hnsw_grid = _hnsw_grid(hnsw_m, hnsw_ef_construction, ef_searches)
        candidates += _measure(hnsw, "hnsw", hnsw_grid, queries, banned, truth, target)
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
    if best.p50_ms * min_speedup > exact_p50:
        reason = (
            f"the fastest setting reaching recall@{k} {target} ({best.kind} "
            f"{_describe(best.params)}, p50 {best.p50_ms:.3f} ms) is not {min_speedup:g}x "
            f"faster than exact search ({exact_p50:.3f} ms)"
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
    faiss = faisslib.require("serialising an index")
    return np.asarray(faiss.serialize_index(index), dtype=np.uint8)


def load_index(data: np.ndarray) -> Any:
    """The faiss index `data` ((b,) uint8, e.g. the artifact's memory map) holds; a copy in
    this process's memory. Raises ValueError when the bytes are not a faiss index,
    faisslib.FaissUnavailable when faiss does not import here."""
    faiss = faisslib.require("loading the artifact's item index")
    try:
        return faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    except RuntimeError as e:  # faiss reports a bad file as RuntimeError
        raise ValueError(f"not a faiss index: {str(e).splitlines()[0]}") from e
