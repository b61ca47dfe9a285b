"""One servable model: validated arrays, id lookups, its item index and its spectrum.

Immutable once built; a request holds a reference for its whole lifetime, so a hot swap never
changes the model under a request that has started.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np

from contract.artifact import ArtifactInvalid, LoadedModel, ModelArrays
from contract.manifest import Manifest
from contract.spectrum import embedding_spectrum
from service.foldin import FoldIn, rule_for
from service.index import ItemIndex, ShippedIndex, build_index
from service.precompute import UserLists, user_lists
from service.schemas import Fallback
from service.scoring import BlendScorer, EmbeddingScorer, FilterScorer, Query, Scorer
from service.settings import IndexSettings
from service.topk import Ranked, order

_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)

Source = Literal["precomputed", "search", "include", "fold-in", "fallback"]
"""What answered a recommendation: the user's top list (a lookup: the artifact's, or the cached
answer of an earlier search, service.precompute), an index search, a
direct scoring of the ``include`` rows (exact, no index), a vector folded in from an item
history (service.foldin; searched, or scored within ``include``), or a fallback for a user the
model does not know (``Answer.fallback`` says which)."""

Kind = Literal["model", "fold-in", "popular"]
"""What a response's ``source`` field says: the user's trained vector, a folded-in one, or the
popular fallback."""

_KIND: dict[Source, Kind] = {
    "precomputed": "model",
    "search": "model",
    "include": "model",
    "fold-in": "fold-in",
    "fallback": "popular",
}

Search = Callable[
    [ItemIndex, np.ndarray, Sequence[int], Sequence[np.ndarray]], Awaitable[list[Ranked]]
]
"""``(index, queries (q, d), ks, banned) -> q results``: how a model's searches run, e.g.
``SearchBatcher.search`` (the service: batched, on its thread or the event loop) or
``search_inline``."""

Searcher = Callable[[np.ndarray, Sequence[int], Sequence[np.ndarray]], Awaitable[list[Ranked]]]
"""``(queries (q, d), ks, banned) -> q results`` on one model's own index: a ``Search`` bound
to it when the model is built (``ServingModel.searcher``)."""


async def search_inline(
    index: ItemIndex, queries: np.ndarray, ks: Sequence[int], banned: Sequence[np.ndarray]
) -> list[Ranked]:
    """A ``Search`` on the calling thread (tests, scripts; the service uses its batcher)."""
    return index.search(queries, ks, banned)


@dataclass(frozen=True, slots=True)
class Answer:
    """One ranked answer: item rows and scores, best first, and what produced them."""

    rows: np.ndarray  # (<= k,) int64 item rows
    scores: np.ndarray  # (<= k,) float32: inner products, or interaction counts for "popular"
    source: Source | None  # None: the user (item) is not in the model and no fallback was asked
    fallback: Fallback | None = None  # the fallback that answered (source "fallback")
    short: str | None = None  # why fewer than k items came back (None: k items, or unanswered)

    @property
    def answered(self) -> bool:
        return self.source is not None

    @property
    def ranked(self) -> Ranked:
        return self.rows, self.scores

    @property
    def kind(self) -> Kind | None:
        """The response's ``source``: model, fold-in or popular (None: unanswered)."""
        return None if self.source is None else _KIND[self.source]


_UNANSWERED = Answer(_NO_ROWS, _NO_SCORES, None)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted unique union of two unique int64 row arrays (either may be empty)."""
    if len(b) == 0:
        return a
    if len(a) == 0:
        return b
    return np.union1d(a, b)


@dataclass(frozen=True, slots=True)
class Recommendations:
    """``ServingModel.recommend``'s result: one answer per requested user, in request order."""

    answers: list[Answer]
    unknown_exclude: list[str]  # ids of `exclude` not in the catalogue (ignored), in order
    unknown_include: list[str] = field(default_factory=list)  # the same for `include`
    unknown_history: list[str] = field(default_factory=list)  # the same for `history`


@dataclass(frozen=True)
class SpectrumSnapshot:
    """Spectrum of one model version (contract.spectrum.embedding_spectrum output)."""

    version: str
    spectrum: dict[str, Any]
    rows: dict[str, int]  # {"users": m, "items": n, "all": m + n}

    @classmethod
    def of(cls, loaded: LoadedModel, version: str | None = None) -> SpectrumSnapshot:
        """The spectrum the trainer computed once and wrote into the manifest; computed here
        only for an artifact published without one (or an older, incomplete one)."""
        a = loaded.arrays
        rows = {"users": a.n_users, "items": a.n_items, "all": a.n_users + a.n_items}
        if loaded.manifest.spectrum.is_full():
            return cls(version or loaded.version, loaded.manifest.spectrum.to_dict(), rows)
        return cls(version or loaded.version, embedding_spectrum(a.user_emb, a.item_emb), rows)

    @classmethod
    def stored(cls, manifest: Manifest, version: str) -> SpectrumSnapshot | None:
        """The manifest's spectrum when it and the shape are complete (no array needs
        reading), else None."""
        if not manifest.spectrum.is_full() or manifest.shape is None:
            return None
        m, n = manifest.shape.n_users, manifest.shape.n_items
        rows = {"users": m, "items": n, "all": m + n}
        return cls(version, manifest.spectrum.to_dict(), rows)


@dataclass(frozen=True, eq=False)
class ServingModel:
    version: str
    manifest: Manifest
    arrays: ModelArrays
    index: ItemIndex
    user_rows: dict[str, int]
    item_rows: dict[str, int]
    item_id_list: list[str]  # row -> external id, as Python str (fast to serialise)
    popular_order: np.ndarray  # (n,) item rows by popularity desc, row asc
    spectrum: SpectrumSnapshot
    searcher: Searcher  # the index's searches, through the Search it was built with
    top_lists: UserLists | None  # per-user top lists: stored or cached (service.precompute)
    scorer: Scorer  # queries and scores of this model's kind (service.scoring)
    trained_seq: int  # highest feedback seq the model was trained on (service.fresh)
    created_unix: float
    loaded_unix: float
    build_seconds: float

    @classmethod
    def build(
        cls,
        loaded: LoadedModel,
        config: IndexSettings,
        version: str | None = None,
        search: Search = search_inline,
    ) -> ServingModel:
        """Index the items (or load the index the artifact ships, service.index) and compute
        the spectrum (seconds for big catalogues: off the request path). `version`: the
        registry's name for it (default: the manifest's); `search`: how its index is searched
        (the service's batcher; default on the calling thread), bound to the index as
        ``searcher``."""
        t0 = time.perf_counter()
        version = version or loaded.version
        a = loaded.arrays
        pop = a.item_popularity
        popular_order = np.lexsort((np.arange(a.n_items), -pop)).astype(np.int64)
        item_id_list = a.item_ids.tolist()
        spectrum = SpectrumSnapshot.of(loaded, version)
        scorer: Scorer
        info = loaded.manifest.model
        if a.kind == "spectral":
            # the filter's lists come with the artifact (the trainer scored every user once)
            scorer = FilterScorer.of(a, info.spectral_alpha)
        elif a.kind == "blend":
            if info.blend_weight is None:
                raise ArtifactInvalid("a blend model's manifest has no model.blend_weight")
            rule = rule_for(loaded.manifest.config.encoder)
            foldin = FoldIn.fit(a.item_emb, a.user_emb, a.seen_indptr, a.seen_indices, rule)
            scorer = BlendScorer.of(a, info.spectral_alpha, info.blend_weight, foldin)
        else:
            # the artifact's approximate index when it ships one and config takes it
            shipped = ShippedIndex.of(loaded.manifest.index, a.item_index)
            index = build_index(a.item_emb, config, shipped)
            # the index is in memory now: unmap its file (its pages read while loading would
            # otherwise count in this process's RSS beside the index itself)
            a, shipped = a.with_arrays(item_index=None), None
            rule = rule_for(loaded.manifest.config.encoder)
            foldin = FoldIn.fit(a.item_emb, a.user_emb, a.seen_indptr, a.seen_indices, rule)
            scorer = EmbeddingScorer(a, index, foldin)  # fold-in: a history to a user vector
        # the artifact's lists (the trainer scored every user once), else a bounded cache
        top_lists = user_lists(
            a, config.precompute_k, config.top_list_cache_users, scorer.index.exact
        )
        created = loaded.manifest.created_unix
        return cls(
            version=version,
            manifest=loaded.manifest,
            arrays=a,
            index=scorer.index,
            user_rows={u: i for i, u in enumerate(a.user_ids.tolist())},
            item_rows={it: i for i, it in enumerate(item_id_list)},
            item_id_list=item_id_list,
            popular_order=popular_order,
            spectrum=spectrum,
            searcher=partial(search, scorer.index),
            top_lists=top_lists,
            scorer=scorer,
            trained_seq=loaded.manifest.trained_seq,
            created_unix=created if created is not None else time.time(),
            loaded_unix=time.time(),
            build_seconds=time.perf_counter() - t0,
        )

    # ---- answers -------------------------------------------------------------------------
    async def recommend(
        self,
        user_ids: Sequence[str],
        k: int,
        *,
        exclude: Sequence[str] = (),
        exclude_seen: bool = True,
        fallback: Fallback | None = None,
        include: Sequence[str] | None = None,
        offset: int = 0,
        max_depth: int | None = None,
        new_items: Mapping[str, Sequence[str]] | None = None,
    ) -> Recommendations:
        """Items ``offset + 1 .. offset + k`` of each user's ranking (one user: a sequence of
        one), the one place that decides what answers a recommendation. The ranking is to
        depth ``offset + k`` (capped at `max_depth`, e.g. the service's max_k), then the first
        `offset` items are dropped: page 2 of k = 20 is items 21-40 of k = 40, whatever
        answers it, because every source ranks by (score desc, row asc).

        The user's vector: the trained one; or, when `new_items` (item ids each user
        interacted with after the model was trained, service.fresh) holds catalogue items the
        model has not seen for that user, a fold-in (service.foldin): the trained vector moved
        by those items for a known user, the fold-in of those items for a user the model does
        not know (source ``fold-in``; the new items count as seen). Then:

        - `include` given (even empty): only those items are ranked, minus the user's seen
          items (`exclude_seen`) and `exclude`, scored directly (one GEMV over the include
          rows, exact even for an approximate index; source ``include``), never the lists or
          the index. Unknown include ids are ignored and listed in ``unknown_include``;
        - a known user's top list (``top_lists``: the artifact's, or one cached from an
          earlier search to depth K, service.precompute), when it provably holds the answer:
          depth within the list's K, seen items excluded (the lists hold unseen items only),
          and depth items left after `exclude`, or the list holds every unseen item. A top-k
          is a prefix of the top-K in the same order (service.topk), so the items are the
          search's (for an approximate index: its answer for K, which may differ from its
          answer for k);
        - else an index search through ``searcher``: one call for all users the lists cannot
          answer, excluding each user's seen items (`exclude_seen`) and `exclude`;
        - a user with neither a trained vector nor a new catalogue item gets
          ``fallback="popular"``'s most popular items not in `exclude` (within `include` when
          given), else an unanswered ``Answer`` (source None): the caller reports it.

        Fewer than k items is never an error: ``Answer.short`` says why (the include set or
        the catalogue has fewer rankable items, the offset is past them, or `max_depth`).

        `exclude`: item ids banned for every user; ids not in the catalogue are ignored and
        listed in ``unknown_exclude``. Like implicit's ``recommend(userid, user_items, N,
        filter_already_liked_items, filter_items, items)`` with external ids and async search.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if offset < 0:
            raise ValueError(f"offset must be at least 0, got {offset}")
        if fallback not in (None, "popular"):
            raise ValueError(f"unknown fallback {fallback!r}, expected 'popular' or None")
        depth = offset + k if max_depth is None else min(offset + k, max_depth)
        excl, unknown = self.item_rows_of(exclude) if exclude else (_NO_ROWS, [])
        incl, unknown_incl = (None, []) if include is None else self.item_rows_of(include)
        lists = self.top_lists if exclude_seen and incl is None else None
        fresh = new_items or {}
        answers: list[Answer] = []
        # (i, query, banned, source, the user row whose list the search fills or None)
        to_search: list[tuple[int, Query, np.ndarray, Source, int | None]] = []
        for i, user_id in enumerate(user_ids):
            row = self.user_rows.get(user_id)
            new = fresh.get(user_id)
            folded = self.fold_in_user(row, new) if new else None
            fill: int | None = None  # the user whose list this search fills
            if folded is not None:
                vec, seen = folded
                banned = _union(seen, excl) if exclude_seen else excl
                source: Source = "fold-in"
            elif row is not None:
                if incl is None and lists is not None:
                    found_list = lists.answer(row, depth, excl)
                    if found_list is not None:
                        answers.append(
                            self._page(found_list, k, offset, depth, None, "precomputed")
                        )
                        continue
                    if lists.fills(row, depth, excl):
                        fill = row
                vec = self.scorer.user_query(row)
                banned = self.banned_rows(row, exclude_seen, excl)
                source = "search"
            else:
                if fallback == "popular":
                    found = self.popular(depth, excl, incl)
                    answers.append(self._page(found, k, offset, depth, incl, "fallback"))
                else:
                    answers.append(_UNANSWERED)
                continue
            if incl is not None:
                found = self.score_rows(vec, incl, banned, depth)
                answers.append(
                    self._page(
                        found, k, offset, depth, incl, "include" if source == "search" else source
                    )
                )
                continue
            answers.append(_UNANSWERED)  # replaced below
            to_search.append((i, vec, banned, source, fill))
        if to_search:
            queries = self.scorer.stack([q for _, q, _, _, _ in to_search])
            found_all = await self.searcher(
                queries,
                [depth if fill is None or lists is None else lists.k for *_, fill in to_search],
                [b for _, _, b, _, _ in to_search],
            )
            for (i, _, _, source, fill), found in zip(to_search, found_all, strict=True):
                if fill is not None and lists is not None:  # to depth K: the user's list
                    lists.remember(fill, found)
                    found = found[0][:depth], found[1][:depth]
                answers[i] = self._page(found, k, offset, depth, None, source)
        return Recommendations(answers, unknown, unknown_incl)

    async def recommend_history(
        self, history: Sequence[str], k: int, **options: Any
    ) -> Recommendations:
        """``recommend`` for one anonymous user given by an item history (nothing stored),
        with the same keyword `options` (exclude, exclude_seen, fallback, include, offset,
        max_depth): the history's catalogue items are folded in (source ``fold-in``)
        and count as seen; ids not in the catalogue are ignored and listed in
        ``unknown_history``. A history without a catalogue item is answered like an unknown
        user (`fallback`, or unanswered)."""
        anonymous = "\x00history"  # not a valid id (contract.ids): never a real user
        recs = await self.recommend((anonymous,), k, new_items={anonymous: history}, **options)
        _, unknown_hist = self.item_rows_of(history)
        return Recommendations(
            recs.answers, recs.unknown_exclude, recs.unknown_include, unknown_hist
        )

    def fold_in_user(
        self, row: int | None, new_items: Sequence[str]
    ) -> tuple[Query, np.ndarray] | None:
        """(query, seen rows) of a user with items new to the model: a known user's trained
        query moved by them, an unknown user's fold-in (service.scoring: a vector for an
        embedding model, the history itself for a filter model). None when no new item is in
        the catalogue and unseen: the trained query stands."""
        rows, _ = self.item_rows_of(new_items)
        if row is None:
            return (self.scorer.fold_in(None, rows), rows) if len(rows) else None
        seen = self.arrays.seen(row).astype(np.int64)
        new = np.setdiff1d(rows, seen, assume_unique=True)
        if len(new) == 0:
            return None
        return self.scorer.fold_in(row, new), _union(seen, new)

    async def similar(
        self,
        item_id: str,
        k: int,
        *,
        include: Sequence[str] | None = None,
        offset: int = 0,
        user_id: str | None = None,
        user_new_items: Sequence[str] = (),
        max_depth: int | None = None,
    ) -> Answer:
        """Items ``offset + 1 .. offset + k`` nearest to `item_id` by inner product of item
        embeddings, never the item itself, nor `user_id`'s seen items when given; only
        the `include` items when given (scored directly, like ``recommend``; unknown ids are
        ignored: ``item_rows_of`` names them). `user_new_items`: that user's items ingested
        after the model was trained (service.fresh), left out too; a user with such items in
        the catalogue counts as known. Unanswered (source None) when the item, or the given
        user, is not known (the caller checks ``user_rows`` to say which).
        ``Answer.short`` says why fewer than k items came back."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if offset < 0:
            raise ValueError(f"offset must be at least 0, got {offset}")
        row = self.item_rows.get(item_id)
        user_row = self.user_rows.get(user_id) if user_id is not None else None
        new_rows = self.item_rows_of(user_new_items)[0] if user_new_items else _NO_ROWS
        if row is None or (user_id is not None and user_row is None and not len(new_rows)):
            return _UNANSWERED
        depth = offset + k if max_depth is None else min(offset + k, max_depth)
        banned = self.banned_rows(user_row, True, _union(np.asarray([row]), new_rows))
        query = self.scorer.item_query(row)
        if include is not None:
            incl, _ = self.item_rows_of(include)
            found = self.score_rows(query, incl, banned, depth)
            return self._page(found, k, offset, depth, incl, "include")
        (found,) = await self.searcher(self.scorer.stack([query]), (depth,), (banned,))
        return self._page(found, k, offset, depth, None, "search")

    @staticmethod
    def _page(
        found: Ranked,
        k: int,
        offset: int,
        depth: int,
        include: np.ndarray | None,
        source: Source,
    ) -> Answer:
        """The page ``[offset, offset + k)`` of a ranking to `depth`, and why it is short."""
        rows, scores = found[0][offset:], found[1][offset:]
        short = None
        if len(rows) < k:
            ranked = len(found[0])
            if ranked < depth:
                short = (
                    f"include has {ranked} rankable items"
                    if include is not None
                    else f"only {ranked} rankable items"
                ) + " after exclusions"
            else:
                short = f"ranking stops at depth {depth} (max_k)"
            if offset:
                short += f"; offset {offset} leaves {len(rows)}"
        return Answer(rows, scores, source, "popular" if source == "fallback" else None, short)

    def score_rows(self, query: Query, rows: np.ndarray, banned: np.ndarray, k: int) -> Ranked:
        """Top-k of `rows` (unique item rows) by the model's score for `query` (an inner
        product: one GEMV over those rows; a filter: its scores of those rows), banned rows
        left out, ordered like every search (score desc, row asc)."""
        if len(banned):
            rows = rows[~np.isin(rows, banned, assume_unique=True)]
        if len(rows) == 0:
            return _NO_ROWS, _NO_SCORES
        scores = self.scorer.score_rows(query, rows)
        ranked_rows, ranked_scores = order(rows, scores)
        return ranked_rows[:k], ranked_scores[:k]

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
        """Unique item rows a user must not get: seen items (if asked) plus `exclude`."""
        seen = (
            self.arrays.seen(user_row).astype(np.int64)
            if exclude_seen and user_row is not None
            else _NO_ROWS
        )
        return _union(seen, exclude)

    def popular(self, k: int, banned: np.ndarray, include: np.ndarray | None = None) -> Ranked:
        """Top-k by popularity (score = known interaction count), banned rows skipped;
        only `include` rows (unique) when given."""
        if include is not None:
            cand = (
                include[~np.isin(include, banned, assume_unique=True)] if len(banned) else include
            )
            pop = self.arrays.item_popularity[cand].astype(np.float32)
            ranked_rows, ranked_scores = order(cand, pop)
            return ranked_rows[:k], ranked_scores[:k]
        cand = self.popular_order[: k + len(banned)]
        if len(banned):
            cand = cand[~np.isin(cand, banned)]
        cand = cand[:k]
        return order(cand, self.arrays.item_popularity[cand].astype(np.float32))

    def items_json(self, ranked: Ranked, offset: int = 0) -> list[dict[str, Any]]:
        """[{"item_id", "score", "rank"}] for one ranked answer; ranks start at offset + 1."""
        rows, scores = ranked
        ids = self.item_id_list
        return [  # scores stay np.float32: service.jsonresp writes their shortest form
            {"item_id": ids[r], "score": s, "rank": i}
            for i, (r, s) in enumerate(zip(rows.tolist(), scores, strict=True), offset + 1)
        ]
