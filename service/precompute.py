"""Per-user top-K lists, so that common requests skip the search.

A model is immutable, so each user's best K unseen items are fixed for its lifetime. A list
turns a recommendation with k <= K and seen items excluded (``GET /recommend/{user}``, and
each user of ``POST /recommend``) into an array lookup on the event loop, leaving the CPU to
the HTTP work (bench/serve_http.py measures both ways). ``ServingModel.recommend`` decides
when a list answers. Two sources, one interface (``UserLists``):

- ``TopLists``: the lists the trainer wrote into the artifact (``top_rows`` / ``top_scores``:
  every model the trainer publishes, an embedding model up to trainer.toplists.MAX_CELLS).
  They are memory maps of the artifact's files, shared by every process serving it.
- ``CachedLists``: for a model without them (older artifacts, very large ones), a user's list
  is the answer of a search to depth K on that user's first request, kept in a bounded LRU
  (``Settings.top_list_cache_users``). Nothing is computed for every user at load.

Answers are the same as the search path's: the lists are exact top-K lists with the same
exclusion and ordering, and a top-k is a prefix of the top-K (service.topk breaks ties at the
cut by row). With an approximate index (the artifact's, chosen at publish, or ``ivf`` /
``hnsw`` built at load) the artifact's lists still answer exactly within K, and only deeper
requests get the index's answer; a cached list is the index's own answer, and only an exact
index's short list proves it holds every unseen item (``exact``: an IVF search may return
fewer than K because its cells hold fewer). A list also answers requests with an extra
``exclude`` as long as k items survive the filter, or when the list already holds every unseen
item (then nothing else could qualify).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from contract.artifact import ModelArrays
from service.topk import Ranked


class UserLists(Protocol):
    """Per-user top-K lists of one model."""

    @property
    def k(self) -> int:
        """K: the length of every list."""
        ...

    def answer(self, user: int, k: int, exclude: np.ndarray) -> Ranked | None:
        """(rows, scores) of `user`'s top k items not in `exclude` (sorted unique rows), or
        None when no list proves the answer (then the caller searches)."""
        ...

    def fills(self, user: int, k: int, exclude: np.ndarray) -> bool:
        """Whether a search for this request should go to depth K and be handed to
        ``remember`` (a user without a list, no extra exclusions, k <= K)."""
        ...

    def remember(self, user: int, found: Ranked) -> None:
        """Keep `found`, the search to depth K of `user`'s unseen items, as their list."""
        ...


def _answer(
    rows: np.ndarray, scores: np.ndarray, complete: bool, k: int, exclude: np.ndarray
) -> Ranked | None:
    """The first k of a list (rows (L,), scores (L,)) not in `exclude`, or None when fewer
    than k survive and the list does not hold every unseen item."""
    if len(exclude):
        keep = ~np.isin(rows, exclude, assume_unique=True)
        rows, scores = rows[keep], scores[keep]
    if len(rows) < k and not complete:
        return None
    return rows[:k].astype(np.int64), scores[:k]


@dataclass(frozen=True)
class TopLists:
    """Lists of every user (the artifact's)."""

    rows: np.ndarray  # (m, K) int32, best first; -1 pads short lists
    scores: np.ndarray  # (m, K) float32
    lengths: np.ndarray  # (m,) int32: valid entries per user
    complete: np.ndarray  # (m,) bool: the list holds every unseen item of that user

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])

    def answer(self, user: int, k: int, exclude: np.ndarray) -> Ranked | None:
        if k > self.k:
            return None
        n = int(self.lengths[user])
        return _answer(self.rows[user, :n], self.scores[user, :n], self.complete[user], k, exclude)

    def fills(self, user: int, k: int, exclude: np.ndarray) -> bool:
        return False

    def remember(self, user: int, found: Ranked) -> None:
        return None


@dataclass(eq=False)
class CachedLists:
    """Lists of the users asked for most recently: at most `capacity`, each the answer of
    a search to depth `k` (the least recently used is dropped first). Thread-safe."""

    k: int
    capacity: int
    n_unseen: np.ndarray  # (m,) int64: items each user has not seen
    exact: bool  # the searches are exact: a list shorter than K holds every unseen item
    _lists: OrderedDict[int, Ranked] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size(self) -> int:
        """Lists held now (at most ``capacity``)."""
        return len(self._lists)

    def answer(self, user: int, k: int, exclude: np.ndarray) -> Ranked | None:
        if k > self.k:
            return None
        with self._lock:
            found = self._lists.get(user)
            if found is None:
                return None
            self._lists.move_to_end(user)
        complete = self.exact and len(found[0]) >= self.n_unseen[user]
        return _answer(found[0], found[1], complete, k, exclude)

    def fills(self, user: int, k: int, exclude: np.ndarray) -> bool:
        return k <= self.k and not len(exclude) and user not in self._lists

    def remember(self, user: int, found: Ranked) -> None:
        rows, scores = found
        entry = (rows[: self.k].astype(np.int64), scores[: self.k].astype(np.float32))
        with self._lock:
            self._lists[user] = entry
            self._lists.move_to_end(user)
            while len(self._lists) > self.capacity:
                self._lists.popitem(last=False)


def stored_lists(arrays: ModelArrays) -> TopLists | None:
    """The lists a model's artifact carries (``top_rows``/``top_scores``), or None when it
    has none. The (m, K) arrays stay as loaded (memory maps); only (m,) counts are made."""
    if arrays.top_rows is None or arrays.top_scores is None:
        return None
    rows = arrays.top_rows.astype(np.int32, copy=False)
    lengths = (rows >= 0).sum(axis=1).astype(np.int32)
    n_seen = np.diff(arrays.seen_indptr)
    complete = lengths >= (arrays.n_items - n_seen)
    return TopLists(rows, arrays.top_scores.astype(np.float32, copy=False), lengths, complete)


def user_lists(arrays: ModelArrays, k: int, cache_users: int, exact: bool) -> UserLists | None:
    """The lists that answer a model's lookups: the artifact's when it has them, else a
    cache of up to `cache_users` lists of length `k` filled by searches (`exact`: the index's
    searches are); None when `k` is 0 (lookups off) or there are neither."""
    if k <= 0:
        return None
    stored = stored_lists(arrays)
    if stored is not None:
        return stored
    if cache_users <= 0:
        return None
    n_unseen = arrays.n_items - np.diff(arrays.seen_indptr)
    return CachedLists(min(k, arrays.n_items), cache_users, n_unseen, exact)
