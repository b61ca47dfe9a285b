"""One servable model: validated arrays, id lookups, its item index and its spectrum.

Immutable once built; a request holds a reference for its whole lifetime, so a hot swap never
changes the model under a request that has started.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.artifact import LoadedModel, ModelArrays
from contract.spectrum import embedding_spectrum
from service.index import IndexConfig, ItemIndex, build_index
from service.precompute import TopLists, precompute
from service.topk import Ranked, order

_NO_ROWS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class SpectrumSnapshot:
    """Spectrum of one model version (contract.spectrum.embedding_spectrum output)."""

    version: str
    spectrum: dict[str, Any]
    rows: dict[str, int]  # {"users": m, "items": n, "all": m + n}

    @classmethod
    def of(cls, version: str, user_emb: np.ndarray, item_emb: np.ndarray) -> SpectrumSnapshot:
        m, n = len(user_emb), len(item_emb)
        rows = {"users": m, "items": n, "all": m + n}
        return cls(version, embedding_spectrum(user_emb, item_emb), rows)


@dataclass(frozen=True, eq=False)
class ServingModel:
    version: str
    manifest: dict[str, Any]
    arrays: ModelArrays
    index: ItemIndex
    user_rows: dict[str, int]
    item_rows: dict[str, int]
    item_id_list: list[str]  # row -> external id, as Python str (fast to serialise)
    popular_order: np.ndarray  # (n,) item rows by popularity desc, row asc
    spectrum: SpectrumSnapshot
    top_lists: TopLists | None  # per-user precomputed answers (service.precompute)
    created_unix: float
    loaded_unix: float
    build_seconds: float

    @classmethod
    def build(
        cls, loaded: LoadedModel, config: IndexConfig, version: str | None = None
    ) -> ServingModel:
        """Index the items and compute the spectrum (seconds for big catalogues: off the
        request path). `version`: the registry's name for it (default: the manifest's)."""
        t0 = time.perf_counter()
        version = version or loaded.version
        a = loaded.arrays
        index = build_index(a.item_emb, config)
        pop = a.item_popularity
        popular_order = np.lexsort((np.arange(a.n_items), -pop)).astype(np.int64)
        item_id_list = a.item_ids.tolist()
        spectrum = SpectrumSnapshot.of(version, a.user_emb, a.item_emb)
        top_lists = None
        if config.precompute_k > 0 and a.n_users * a.n_items <= config.precompute_max_cells:
            top_lists = precompute(index, a, config.precompute_k)
        created = loaded.manifest.get("created_unix")
        return cls(
            version=version,
            manifest=loaded.manifest,
            arrays=a,
            index=index,
            user_rows={u: i for i, u in enumerate(a.user_ids.tolist())},
            item_rows={it: i for i, it in enumerate(item_id_list)},
            item_id_list=item_id_list,
            popular_order=popular_order,
            spectrum=spectrum,
            top_lists=top_lists,
            created_unix=float(created) if isinstance(created, int | float) else time.time(),
            loaded_unix=time.time(),
            build_seconds=time.perf_counter() - t0,
        )

    # ---- lookups -------------------------------------------------------------------------
    def item_rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of known ids (unique, sorted) and the ids that are not in the catalogue."""
        rows, unknown = [], []
        for i in ids:
            r = self.item_rows.get(i)
            if r is None:
                unknown.append(i)
            else:
                rows.append(r)
        return (np.unique(np.asarray(rows, dtype=np.int64)) if rows else _NO_ROWS), unknown

    def banned_rows(
        self, user_row: int | None, exclude_seen: bool, exclude: np.ndarray
    ) -> np.ndarray:
        """Unique item rows a user must not get: training items (if asked) plus `exclude`."""
        seen = (
            self.arrays.seen(user_row).astype(np.int64)
            if exclude_seen and user_row is not None
            else _NO_ROWS
        )
        if len(exclude) == 0:
            return seen
        return np.union1d(seen, exclude) if len(seen) else exclude

    def popular(self, k: int, banned: np.ndarray) -> Ranked:
        """Top-k by training popularity (score = interaction count), banned rows skipped."""
        cand = self.popular_order[: k + len(banned)]
        if len(banned):
            cand = cand[~np.isin(cand, banned)]
        cand = cand[:k]
        return order(cand, self.arrays.item_popularity[cand].astype(np.float32))

    def items_json(self, ranked: Ranked) -> list[dict[str, Any]]:
        """[{"item_id", "score", "rank"}] for one ranked answer."""
        rows, scores = ranked
        ids = self.item_id_list
        return [  # scores stay np.float32: service.jsonresp writes their shortest form
            {"item_id": ids[r], "score": s, "rank": i}
            for i, (r, s) in enumerate(zip(rows.tolist(), scores, strict=True), 1)
        ]
