"""Item indexes answering "top-k items by inner product, some rows excluded".

Backends share one interface, ``ItemIndex.search(queries, ks, banned)``:

- ``NumpyExactIndex``: one GEMM per chunk of queries into a reused scratch buffer, then
  ``argpartition``; exact. The CPU default for ``flat`` (bench/serve_exact.py).
- ``FaissIndex``: ``IndexFlatIP`` (exact), ``IndexIVFFlat`` or ``IndexHNSWFlat`` (inner product),
  on the GPU when faiss-gpu and a GPU are present. Excluded rows are handled by over-fetching
  k + |excluded| candidates (capped at n) and filtering, which is exact for ``IndexFlatIP``.

``HAS_FAISS_GPU`` is decided once here; nothing else imports faiss.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import faiss
import numpy as np

from service.settings import IndexSettings
from service.topk import Ranked, filter_ranked, select_topk

log = logging.getLogger("specrec.service.index")

try:  # faiss-cpu has no GPU symbols; faiss-gpu without a visible GPU reports 0
    HAS_FAISS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
except Exception:  # pragma: no cover - broken CUDA driver
    HAS_FAISS_GPU = False

GPU_MAX_K = 2048  # largest k FAISS GPU indexes select per query


class ItemIndex(Protocol):
    """Searches item rows; each result is sorted (score desc, row asc)."""

    kind: str
    backend: str
    ntotal: int
    exact: bool
    scan_cells: int
    """Numbers one query's exhaustive search reads (items × dimensions): what decides whether
    the batcher searches it on the event loop (service.batcher)."""

    def search(
        self,
        queries: np.ndarray,
        ks: Sequence[int],
        banned: Sequence[np.ndarray],
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Ranked]:
        """queries (q, d) float32, ks (q,), banned q arrays of unique rows -> q results."""
        ...


def set_search_threads(threads: int) -> None:
    """OpenMP threads for FAISS calls made by the *calling* thread (the setting is per thread)."""
    faiss.omp_set_num_threads(max(1, int(threads)))


class NumpyExactIndex:
    """Exact inner-product search with numpy. Thread-safe; scratch buffers are per thread."""

    kind, backend, exact = "flat", "numpy", True

    def __init__(self, items: np.ndarray, buffer_mb: int = 64) -> None:
        # (d, n) contiguous: q @ items_t streams the matrix once (BLAS gemv "N"), ~3x faster
        # than the dot-per-row gemv on the (n, d) layout (bench/serve_exact.py)
        self.items_t = np.ascontiguousarray(np.asarray(items, dtype=np.float32).T)
        self.ntotal = int(self.items_t.shape[1])
        self.scan_cells = int(self.items_t.size)
        self.chunk = max(1, (buffer_mb << 20) // (4 * max(self.ntotal, 1)))
        self._local = threading.local()

    def _buffer(self, rows: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < rows:
            buf = np.empty((min(max(rows, 8), self.chunk), self.ntotal), dtype=np.float32)
            self._local.buf = buf
        return buf

    def search(
        self,
        queries: np.ndarray,
        ks: Sequence[int],
        banned: Sequence[np.ndarray],
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Ranked]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out: list[Ranked] = []
        for start in range(0, len(queries), self.chunk):
            chunk = queries[start : start + self.chunk]
            buf = self._buffer(len(chunk))[: len(chunk)]  # (c, n) scratch
            np.matmul(chunk, self.items_t, out=buf)  # (c, d) @ (d, n) -> (c, n)
            for i in range(len(chunk)):
                out.append(select_topk(buf[i], ks[start + i], banned[start + i]))
        return out


class FaissIndex:
    """A FAISS index over the items with per-call search parameters."""

    def __init__(self, items: np.ndarray, config: IndexSettings) -> None:
        before = faiss.omp_get_max_threads()
        set_search_threads(os.cpu_count() or 1)  # building uses every core
        try:
            self._build(np.ascontiguousarray(items, dtype=np.float32), config)
        finally:
            set_search_threads(before)

    def _build(self, items: np.ndarray, config: IndexSettings) -> None:
        n, d = items.shape
        self.kind: str = config.index_kind
        self.ntotal = int(n)
        self.scan_cells = int(n) * int(d)  # flat's; IVF and HNSW read less, on the thread too
        self.exact = config.index_kind == "flat"
        self.nprobe = config.ivf_nprobe
        self.ef_search = config.hnsw_ef_search
        self.nlist = 0
        index: Any
        if config.index_kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif config.index_kind == "ivf":
            self.nlist = default_nlist(n) if config.ivf_nlist is None else config.ivf_nlist
            self.nlist = max(1, min(self.nlist, n))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = 64  # k-means on <= 64 * nlist sampled items
            index.train(items)
            index.nprobe = self.nprobe
        elif config.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            raise ValueError(f"index kind {config.index_kind!r}, expected flat, ivf or hnsw")
        index.add(items)
        self.on_gpu = False
        use_gpu = HAS_FAISS_GPU if config.use_gpu is None else config.use_gpu
        if use_gpu and not HAS_FAISS_GPU:
            raise RuntimeError(
                "use_gpu=True but faiss has no GPU support here: "
                "pip uninstall -y faiss-cpu && pip install '.[gpu]' on a CUDA machine"
            )
        if use_gpu and config.index_kind != "hnsw":
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, 0, index)
            self.on_gpu = True
        elif use_gpu:
            log.info("HNSW has no FAISS GPU implementation; searching it on the CPU")
        self.index = index
        self.backend = "faiss-gpu" if self.on_gpu else "faiss"

    def _params(self, k_fetch: int, nprobe: int | None, ef_search: int | None) -> Any:
        if self.kind == "ivf":
            # faiss's bundled stubs lag its runtime, which takes these keyword arguments
            return faiss.SearchParametersIVF(nprobe=min(nprobe or self.nprobe, self.nlist))  # type: ignore[call-arg]
        if self.kind == "hnsw":
            ef = max(ef_search or self.ef_search, k_fetch)
            return faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
        return None

    def search(
        self,
        queries: np.ndarray,
        ks: Sequence[int],
        banned: Sequence[np.ndarray],
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Ranked]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) == 0:
            return []
        k_fetch = min(self.ntotal, max(k + len(b) for k, b in zip(ks, banned, strict=True)))
        if self.on_gpu:  # FAISS GPU selects at most 2048 per query: a user with more seen
            k_fetch = min(k_fetch, GPU_MAX_K)  # items than 2048 - k may get fewer than k
        params = self._params(k_fetch, nprobe, ef_search)
        if params is None:
            scores, rows = self.index.search(queries, k_fetch)
        else:
            scores, rows = self.index.search(queries, k_fetch, params=params)
        return [filter_ranked(rows[i], scores[i], ks[i], banned[i]) for i in range(len(queries))]


def default_nlist(n: int) -> int:
    """IVF cells for n items: about sqrt(n), and at least 39 training points per cell."""
    return max(1, min(int(round(math.sqrt(n))), n // 39))


def build_index(items: np.ndarray, config: IndexSettings) -> ItemIndex:
    """The index the configuration asks for (see the module docstring for ``auto``)."""
    if config.index_kind == "flat":
        backend = config.exact_backend
        if backend == "auto":
            gpu = HAS_FAISS_GPU if config.use_gpu is None else config.use_gpu
            backend = "faiss" if gpu else "numpy"
        if backend == "numpy":
            return NumpyExactIndex(items, config.search_buffer_mb)
    return FaissIndex(items, config)
