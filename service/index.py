"""Item indexes answering "top-k items by inner product, some rows excluded".

Backends share one interface, ``ItemIndex.search(queries, ks, banned)``:

- ``NumpyExactIndex``: one GEMM per chunk of queries into a reused scratch buffer, then
  ``argpartition``; exact. The CPU default for ``flat`` (bench/serve_exact.py).
- ``FaissIndex``: ``IndexFlatIP`` (exact), ``IndexIVFFlat`` or ``IndexHNSWFlat`` (inner product),
  on the GPU when faiss-gpu and a GPU are present (HNSW stays on the CPU). Excluded rows are
  handled by over-fetching k + |excluded| candidates (capped at n) and filtering, which is
  exact for ``IndexFlatIP``. Built at load from ``IndexSettings``, or (``FaissIndex.shipped``)
  the approximate index the artifact ships, chosen and built once at publish
  (contract/annindex.py), loaded as it is and searched with its recorded parameters.

``build_index`` picks one (``IndexSettings.index_kind``): ``auto`` the shipped index when the
artifact has one, else exact search; ``flat`` exact search; ``ivf`` / ``hnsw`` the shipped
index when it is of that kind (and built with the nlist / M / efConstruction the settings
name, if they name any), else one built at load.

Each index says where it came from (``source``: "artifact" or "built at load") and its
``recall`` (1.0 exact; the recall@20 measured at publish for a shipped index; None for an
approximate index built at load, which nothing measured). ``HAS_FAISS_GPU`` is decided once
here. faiss is optional (contract/faisslib.py): without it ``auto`` searches exactly with numpy
even when the artifact ships an index, and ``check_faiss`` refuses at startup the settings that
need it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from contract import faisslib
from contract.annindex import (
    build_hnsw,
    build_ivf,
    default_nlist,
    fetch_depth,
    load_index,
    search_parameters,
)
from contract.artifact import ArtifactInvalid
from contract.manifest import IndexInfo
from service.settings import IndexSettings
from service.topk import Ranked, filter_ranked, select_topk

log = logging.getLogger("specrec.service.index")

try:  # faiss-cpu has no GPU symbols; faiss-gpu without a visible GPU reports 0
    _faiss = faisslib.faiss
    HAS_FAISS_GPU = (
        _faiss is not None and hasattr(_faiss, "StandardGpuResources") and _faiss.get_num_gpus() > 0
    )
except Exception:  # pragma: no cover - broken CUDA driver
    HAS_FAISS_GPU = False

GPU_MAX_K = 2048  # largest k FAISS GPU indexes select per query
NO_GPU = (
    "SPECREC_USE_GPU=true but faiss has no GPU support here (faiss-cpu, or no visible GPU): on a "
    "CUDA machine pip uninstall -y faiss-cpu && pip install 'specrec[gpu]'"
)


class ItemIndex(Protocol):
    """Searches item rows; each result is sorted (score desc, row asc)."""

    kind: str
    backend: str
    ntotal: int
    exact: bool

    @property
    def source(self) -> str:
        """ "artifact" (shipped with the model) or "built at load"."""
        ...

    @property
    def recall(self) -> float | None:
        """Recall@20 against exact search: 1.0 for exact search, the publish-time measurement
        for a shipped index, None when not measured (an approximate index built at load)."""
        ...

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
    """OpenMP threads for FAISS calls made by the *calling* thread (the setting is per thread);
    nothing without faiss."""
    if faisslib.faiss is not None:
        faisslib.faiss.omp_set_num_threads(max(1, int(threads)))


class NumpyExactIndex:
    """Exact inner-product search with numpy. Thread-safe; scratch buffers are per thread."""

    kind, backend, exact = "flat", "numpy", True
    source, recall = "built at load", 1.0

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


@dataclass(frozen=True)
class ShippedIndex:
    """The approximate index an artifact ships (``item_index.npy``) and its manifest record."""

    info: IndexInfo
    data: np.ndarray  # (b,) uint8: faiss.serialize_index's bytes (a memory map)

    @classmethod
    def of(cls, info: IndexInfo | None, data: np.ndarray | None) -> ShippedIndex | None:
        """From a manifest's ``index`` and the artifact's ``item_index``; None when there is
        none (an older artifact, or exact search was chosen)."""
        if info is None or data is None or info.kind == "flat":
            return None
        return cls(info, data)

    def fits(self, config: IndexSettings) -> bool:
        """Whether ``config`` asks for this index: ``auto``, or its kind with no build
        parameter set (in the environment or explicitly) to another value."""
        if config.index_kind == "auto":
            return True
        if config.index_kind != self.info.kind:
            return False
        asked = config.model_fields_set
        p = self.info.params
        wanted = {
            "ivf_nlist": p.nlist,
            "hnsw_m": p.m,
            "hnsw_ef_construction": p.ef_construction,
        }
        return all(getattr(config, k) == v for k, v in wanted.items() if k in asked)


class FaissIndex:
    """A FAISS index over the items with per-call search parameters."""

    source = "built at load"
    recall: float | None = None

    def __init__(self, items: np.ndarray, config: IndexSettings) -> None:
        faiss = faisslib.require(f"the {config.index_kind} index (SPECREC_INDEX_KIND)")
        before = faiss.omp_get_max_threads()
        set_search_threads(os.cpu_count() or 1)  # building uses every core
        try:
            self._build(np.ascontiguousarray(items, dtype=np.float32), config)
        finally:
            set_search_threads(before)

    @classmethod
    def shipped(cls, shipped: ShippedIndex, dim: int, config: IndexSettings) -> FaissIndex:
        """The artifact's index, loaded as it is (nothing rebuilt), searched with its recorded
        nprobe / efSearch unless ``config`` sets ``ivf_nprobe`` / ``hnsw_ef_search``.
        Raises ArtifactInvalid when the bytes are not a faiss index of `dim` columns."""
        info = shipped.info
        faiss = faisslib.require("the artifact's item index")
        try:
            index = load_index(shipped.data)
        except ValueError as e:
            raise ArtifactInvalid(f"item_index: {e}") from e
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ArtifactInvalid(
                f"item_index: a {index.d}-column index (metric {index.metric_type}), expected "
                f"{dim} columns by inner product"
            )
        self = cls.__new__(cls)
        self.kind = info.kind
        self.ntotal = int(index.ntotal)
        self.scan_cells = self.ntotal * dim
        self.exact = False
        asked = config.model_fields_set
        self.nprobe = config.ivf_nprobe if "ivf_nprobe" in asked else (info.params.nprobe or 1)
        ef = info.params.ef_search or config.hnsw_ef_search
        self.ef_search = config.hnsw_ef_search if "hnsw_ef_search" in asked else ef
        self.nlist = int(index.nlist) if info.kind == "ivf" else 0
        self.source, self.recall = "artifact", info.recall
        self._place(index, config)
        return self

    def _build(self, items: np.ndarray, config: IndexSettings) -> None:
        faiss = faisslib.require(f"the {config.index_kind} index")
        n, d = items.shape
        self.kind: str = config.index_kind
        self.ntotal = int(n)
        self.scan_cells = int(n) * int(d)  # flat's; IVF and HNSW read less, on the thread too
        self.exact = config.index_kind == "flat"
        self.recall = 1.0 if self.exact else None
        self.nprobe = config.ivf_nprobe
        self.ef_search = config.hnsw_ef_search
        self.nlist = 0
        index: Any
        if config.index_kind == "flat":
            index = faiss.IndexFlatIP(d)
            index.add(items)
        elif config.index_kind == "ivf":
            self.nlist = default_nlist(n) if config.ivf_nlist is None else config.ivf_nlist
            self.nlist = max(1, min(self.nlist, n))
            index = build_ivf(items, self.nlist)  # the publisher's build (contract.annindex)
            index.nprobe = self.nprobe
        elif config.index_kind == "hnsw":
            index = build_hnsw(items, config.hnsw_m, config.hnsw_ef_construction)
            index.hnsw.efSearch = self.ef_search
        else:
            raise ValueError(f"index kind {config.index_kind!r}, expected flat, ivf or hnsw")
        self._place(index, config)

    def _place(self, index: Any, config: IndexSettings) -> None:
        """Keep `index` as ``self.index``, copied to the GPU when asked and possible."""
        self.on_gpu = False
        use_gpu = HAS_FAISS_GPU if config.use_gpu is None else config.use_gpu
        if use_gpu and not HAS_FAISS_GPU:
            raise RuntimeError(NO_GPU)
        if use_gpu and self.kind != "hnsw":
            faiss = faisslib.require("the GPU index")
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, 0, index)
            self.on_gpu = True
        elif use_gpu:
            log.info("HNSW has no FAISS GPU implementation; searching it on the CPU")
        self.index = index
        self.backend = "faiss-gpu" if self.on_gpu else "faiss"

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
        k_fetch = fetch_depth(ks, banned, self.ntotal)
        if self.on_gpu:  # FAISS GPU selects at most 2048 per query: a user with more seen
            k_fetch = min(k_fetch, GPU_MAX_K)  # items than 2048 - k may get fewer than k
        params = search_parameters(
            self.kind,
            k_fetch,
            nprobe=nprobe or self.nprobe,
            ef_search=ef_search or self.ef_search,
            nlist=self.nlist or 0,
        )
        if params is None:
            scores, rows = self.index.search(queries, k_fetch)
        else:
            scores, rows = self.index.search(queries, k_fetch, params=params)
        return [filter_ranked(rows[i], scores[i], ks[i], banned[i]) for i in range(len(queries))]


def check_faiss(config: IndexSettings) -> None:
    """Raise faisslib.FaissUnavailable when `config` asks for what only faiss does and faiss
    does not import here, or for the GPU where faiss has none: at startup, once, rather than as
    every model's load failure."""
    needs = (
        [f"SPECREC_INDEX_KIND={config.index_kind}"] if config.index_kind in ("ivf", "hnsw") else []
    )
    if config.exact_backend == "faiss":
        needs.append("SPECREC_EXACT_BACKEND=faiss")
    if config.use_gpu:
        needs.append("SPECREC_USE_GPU=true")
    if needs and faisslib.faiss is None:
        raise faisslib.FaissUnavailable(f"{', '.join(needs)} needs faiss. {faisslib.IMPORT_ERROR}")
    if config.use_gpu and not HAS_FAISS_GPU:
        raise faisslib.FaissUnavailable(NO_GPU)


def build_index(
    items: np.ndarray, config: IndexSettings, shipped: ShippedIndex | None = None
) -> ItemIndex:
    """The index the configuration asks for, of items (n, d): the `shipped` one when it fits
    (module docstring), else exact search (``auto``, ``flat``) or one built at load."""
    if shipped is not None and config.index_kind != "flat" and shipped.fits(config):
        if faisslib.faiss is not None:
            return FaissIndex.shipped(shipped, int(items.shape[1]), config)
        # the artifact's index is an optimisation: exact search answers at least as well
        log.warning(
            "not loading the artifact's %s index: %s", shipped.info.kind, faisslib.IMPORT_ERROR
        )
    if config.index_kind in ("auto", "flat"):
        config = config.model_copy(update={"index_kind": "flat"})
        backend = config.exact_backend
        if backend == "auto":
            gpu = HAS_FAISS_GPU if config.use_gpu is None else config.use_gpu
            backend = "faiss" if gpu else "numpy"
        if backend == "numpy":
            return NumpyExactIndex(items, config.search_buffer_mb)
    return FaissIndex(items, config)
