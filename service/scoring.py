"""How one model kind turns users, histories and items into queries, and queries into scores.

``ServingModel`` (service/serving.py) answers every request the same way for every kind: a
query per user (a trained user, a folded-in history, an item for ``/similar``), then either a
search through ``Scorer.index`` (batched by service/batcher.py) or a direct
scoring of the ``include`` rows. Two kinds:

- ``EmbeddingScorer``: a query is a vector (d,) float32; the index searches inner products
  with the item vectors; fold-in maps a history to a vector (service/foldin.py).
- ``FilterScorer``: the spectral filter (contract/spectral.py). A query is an item history,
  (h,) int64 item rows; the "index" (``FilterIndex``) scores every item with the filter (two
  sparse products and one (q, K) x (K, n) product for a batch of q) and keeps each query's
  top k. The filter is linear in the history, so a folded-in history is scored exactly like
  the same user trained: there is nothing to fit.
- ``BlendScorer``: DirectSpec+ and the filter (contract/blend.py). A query is a pair
  (history (h,) int64, vector (d,) float32); ``BlendIndex`` scores every item with both,
  standardises each row and sums them with the manifest's weight. Fold-in moves both parts:
  the history exactly, the vector by the embedding fold-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from contract.artifact import ModelArrays
from contract.blend import blend
from contract.spectral import SpectralFilter, histories_matrix
from service.foldin import FoldIn
from service.index import ItemIndex
from service.topk import Ranked, select_topk

Query = np.ndarray | tuple[np.ndarray, np.ndarray]
"""A vector (d,) float32 (embedding models), an item history (h,) int64 (filter models) or
both, (history, vector) (blends)."""


class Scorer(Protocol):
    @property
    def index(self) -> ItemIndex:
        """What searches this model's queries (the batcher hands it their batch)."""
        ...

    def user_query(self, row: int) -> Query:
        """The query of a trained user."""
        ...

    def fold_in(self, row: int | None, new_rows: np.ndarray) -> Query:
        """The query of a user with items the model was not trained on: a trained user
        (`row`) moved by `new_rows` (unique rows not seen in training), or the history
        `new_rows` alone (`row` None)."""
        ...

    def item_query(self, row: int) -> Query:
        """The query for items like item `row` (``/similar``)."""
        ...

    def stack(self, queries: Sequence[Query]) -> np.ndarray:
        """Queries in the form ``index.search`` takes."""
        ...

    def score_rows(self, query: Query, rows: np.ndarray) -> np.ndarray:
        """Scores (len(rows),) float32 of the item `rows` for one query."""
        ...


@dataclass(frozen=True, eq=False)
class EmbeddingScorer:
    """Inner products of user (or folded-in, or item) vectors with the item vectors."""

    arrays: ModelArrays
    index: ItemIndex
    foldin: FoldIn

    def user_query(self, row: int) -> np.ndarray:
        return self.arrays.user_emb[row]

    def fold_in(self, row: int | None, new_rows: np.ndarray) -> np.ndarray:
        if row is None:
            return self.foldin.vector(new_rows)
        return self.foldin.update(self.arrays.user_emb[row], new_rows)

    def item_query(self, row: int) -> np.ndarray:
        return self.arrays.item_emb[row]

    def stack(self, queries: Sequence[Query]) -> np.ndarray:
        return np.stack(queries).astype(np.float32, copy=False)

    def score_rows(self, query: Query, rows: np.ndarray) -> np.ndarray:
        return self.arrays.item_emb[rows] @ np.asarray(query, dtype=np.float32)


class ExactScoresIndex:
    """An ``ItemIndex`` that scores every item for each query (``scores``, defined by the
    subclass) and keeps each query's top k."""

    ntotal: int

    def scores(self, queries: Sequence[Query]) -> np.ndarray:
        """(q, n) float32 scores of q queries."""
        raise NotImplementedError

    def search(
        self,
        queries: np.ndarray,
        ks: Sequence[int],
        banned: Sequence[np.ndarray],
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Ranked]:
        scores = self.scores(list(queries))
        return [select_topk(scores[i], ks[i], banned[i]) for i in range(len(queries))]


def object_array(queries: Sequence[Query]) -> np.ndarray:
    """Queries that are not vectors (histories, pairs) as a 1-D object array: what
    ``ExactScoresIndex.search`` takes and the batcher concatenates."""
    out = np.empty(len(queries), dtype=object)
    for i, q in enumerate(queries):
        out[i] = q
    return out


class FilterIndex(ExactScoresIndex):
    """An ``ItemIndex`` whose queries are item histories: exact filter scores of every item.

    ``search(queries, ks, banned)`` takes queries as a 1-D object array of (h,) int64 row
    arrays (what the batcher concatenates); a batch of 8 or more is scored in one dense pass
    over R̃ (contract.spectral.DENSE_FROM_ROWS)."""

    kind, backend, exact = "filter", "scipy", True
    source, recall = "built at load", 1.0

    def __init__(self, filt: SpectralFilter) -> None:
        self.filter = filt
        self.ntotal = filt.n_items
        # the sparse products read R̃ twice, the low-pass GEMM its (n, K) factors
        self.scan_cells = 2 * filt.norm.nnz + filt.lowpass_out.size

    def scores(self, histories: Sequence[Query]) -> np.ndarray:
        """(q, n) float32 filter scores of q histories ((h,) int64 item rows)."""
        rows = [np.asarray(h) for h in histories]
        return self.filter.scores(histories_matrix(rows, self.ntotal))


@dataclass(frozen=True, eq=False)
class FilterScorer:
    """The spectral filter: queries are item histories (a trained user's is their training
    row of R̃, the matrix the filter was fitted on)."""

    filter: SpectralFilter
    index: FilterIndex

    @classmethod
    def of(cls, arrays: ModelArrays, alpha: float) -> FilterScorer:
        """From a spectral artifact's arrays (ModelArrays.kind == "spectral")."""
        filt = SpectralFilter.of_arrays(arrays, alpha)
        return cls(filt, FilterIndex(filt))

    def user_query(self, row: int) -> np.ndarray:
        norm = self.filter.norm
        return norm.indices[norm.indptr[row] : norm.indptr[row + 1]].astype(np.int64)

    def fold_in(self, row: int | None, new_rows: np.ndarray) -> np.ndarray:
        if row is None:
            return np.asarray(new_rows, dtype=np.int64)
        return np.union1d(self.user_query(row), new_rows)

    def item_query(self, row: int) -> np.ndarray:
        return np.asarray([row], dtype=np.int64)

    def stack(self, queries: Sequence[Query]) -> np.ndarray:
        return object_array(queries)

    def score_rows(self, query: Query, rows: np.ndarray) -> np.ndarray:
        assert isinstance(query, np.ndarray)
        return self.index.scores([query])[0][rows]


class BlendIndex(ExactScoresIndex):
    """An ``ItemIndex`` whose queries are (history, vector) pairs: exact blend scores of every
    item, z(filter) + weight · z(vector @ item_emb.T) (contract.blend)."""

    kind, backend, exact = "blend", "scipy", True
    source, recall = "built at load", 1.0

    def __init__(self, filter_index: FilterIndex, item_emb: np.ndarray, weight: float) -> None:
        if item_emb.shape[0] != filter_index.ntotal:
            raise ValueError(
                f"item_emb {item_emb.shape} does not match {filter_index.ntotal} items"
            )
        self.filter_index = filter_index
        self.item_emb = item_emb
        self.weight = float(weight)
        self.ntotal = filter_index.ntotal
        # the filter's reads and the embedding scan (service.batcher: where it is searched)
        self.scan_cells = filter_index.scan_cells + int(item_emb.size)

    def scores(self, queries: Sequence[Query]) -> np.ndarray:
        """(q, n) float32 blend scores of q (history, vector) queries."""
        pairs = cast(Sequence[tuple[np.ndarray, np.ndarray]], queries)
        vectors = np.stack([v for _, v in pairs]).astype(np.float32, copy=False)
        filtered = self.filter_index.scores([h for h, _ in pairs])
        return blend(filtered, vectors @ self.item_emb.T, self.weight)


@dataclass(frozen=True, eq=False)
class BlendScorer:
    """The blend: a trained user's query is (their training row of R̃, their vector)."""

    filter_part: FilterScorer
    embedding_part: EmbeddingScorer
    index: BlendIndex

    @classmethod
    def of(cls, arrays: ModelArrays, alpha: float, weight: float, foldin: FoldIn) -> BlendScorer:
        """From a blend artifact's arrays (ModelArrays.kind == "blend") and the fold-in of
        its embeddings."""
        filt = FilterScorer.of(arrays, alpha)
        index = BlendIndex(filt.index, arrays.item_emb, weight)
        return cls(filt, EmbeddingScorer(arrays, index, foldin), index)

    def user_query(self, row: int) -> Query:
        return (self.filter_part.user_query(row), self.embedding_part.user_query(row))

    def fold_in(self, row: int | None, new_rows: np.ndarray) -> Query:
        return (
            self.filter_part.fold_in(row, new_rows),
            self.embedding_part.fold_in(row, new_rows),
        )

    def item_query(self, row: int) -> Query:
        return (self.filter_part.item_query(row), self.embedding_part.item_query(row))

    def stack(self, queries: Sequence[Query]) -> np.ndarray:
        return object_array(queries)

    def score_rows(self, query: Query, rows: np.ndarray) -> np.ndarray:
        assert isinstance(query, tuple)
        return self.index.scores([query])[0][rows]
