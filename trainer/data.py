"""Implicit-feedback datasets: loading, id maps and deterministic holdout splits (numpy + scipy).

Formats understood by :func:`load_dataset` (auto-detected):

* **LightGCN** directory with ``train.txt`` and ``test.txt``: one line per user,
  ``user item item ...``, whitespace separated, 0-based integer ids. A line holding only a user
  id declares that user (it gets a row) and adds no pairs; blank lines are ignored; a user on
  several lines gets the union of its items.
* **CSV pair** directory with ``train.csv`` and ``test.csv``: header ``user,item`` (either order),
  one interaction per row, 0-based integer ids (e.g. ``shared/data/citeulike-directspec``).
  A header-only ``test.csv`` means an empty test split.
* **Interactions table**: a ``.csv``/``.tsv`` file, or a directory holding ``interactions.csv``
  (or ``.tsv``), header ``user_id,item_id[,timestamp]`` (other columns are ignored), arbitrary
  string ids. Ids are mapped to contiguous rows **in order of first appearance** in the file,
  so ``user_0, user_1, ...`` written in that order get rows 0, 1, ... . A per-user holdout is
  cut deterministically (see :func:`dataset_from_table`).

For the integer formats ``user_ids``/``item_ids`` are ``str(row)`` and the number of rows is
``max id + 1`` over train and test (ids above ``2**31 - 1`` are refused). Test pairs are kept
as published, even where they also occur in train (CiteULike has 11 such pairs); evaluation
masks training items, so such a pair can never be a hit.

Pairs are deduplicated and stored sorted by (user row, item row). Malformed input raises
:class:`DataError` naming the file, the 1-based line number and the reason.

A Dataset remembers where its split came from (``Dataset.holdout``: None for a split that came
with the data, else the per-user holdout that was cut), so :func:`merge_ingested` can add
ingested interactions to it without moving a published test pair into training.

Parsing lives in :mod:`trainer.readers` (vectorised: Gowalla's 810k training pairs load in
about 0.3 s).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from trainer.readers import (
    DataError,
    file_error,
    read_interactions_table,
    read_lightgcn_file,
    read_pair_csv,
    table_in_dir,
)

__all__ = [
    "DEFAULT_HOLDOUT",
    "DataError",
    "Dataset",
    "Holdout",
    "dataset_from_table",
    "holdout_split",
    "load_dataset",
    "merge_ingested",
    "read_interactions_table",
]


@dataclass(frozen=True)
class Holdout:
    """A per-user holdout cut from an unsplit interactions table (see dataset_from_table)."""

    fraction: float
    """Share of each user's pairs that go to test (rounded; >= 1 and < all when c >= 2)."""
    seed: int
    """Seed of the random choice when the table has no timestamps."""


DEFAULT_HOLDOUT = Holdout(fraction=0.2, seed=0)
"""What :func:`load_dataset` cuts from an interactions table unless told otherwise, and what
:func:`merge_ingested` cuts from the ingested rows of users new to a dataset with its own split."""


# ----------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users × items implicit feedback split into train and test pairs.

    ``user_ids`` (m,) / ``item_ids`` (n,) str: external id of each row. Pair arrays are int64
    row indices of equal length (``train_users``/``train_items`` (nnz_train,),
    ``test_users``/``test_items`` (nnz_test,), test may be empty). Arrays are made read-only.
    ``holdout``: None when the split came with the data (LightGCN and CSV-pair directories, or
    built by hand), else the per-user holdout that :func:`dataset_from_table` cut.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    holdout: Holdout | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("name", "holdout"):
                continue
            arr = np.asarray(getattr(self, f.name))
            if f.name.endswith("_ids"):
                arr = arr.astype(str)
            else:
                arr = arr.astype(np.int64, copy=False)
            if arr.ndim != 1:
                raise ValueError(f"Dataset.{f.name}: expected a 1-D array, got shape {arr.shape}")
            view = arr.view()
            view.flags.writeable = False
            object.__setattr__(self, f.name, view)
        m, n = len(self.user_ids), len(self.item_ids)
        for split in ("train", "test"):
            users, items = getattr(self, f"{split}_users"), getattr(self, f"{split}_items")
            if len(users) != len(items):
                raise ValueError(f"Dataset: {split}_users and {split}_items differ in length")
            if len(users) and (users.min() < 0 or users.max() >= m):
                raise ValueError(f"Dataset: {split}_users outside [0, {m})")
            if len(items) and (items.min() < 0 or items.max() >= n):
                raise ValueError(f"Dataset: {split}_items outside [0, {n})")

    @classmethod
    def from_pairs(
        cls,
        name: str,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Dataset:
        """Build a Dataset from (users, items) row arrays; duplicates removed, pairs sorted."""
        n = len(item_ids)
        empty = (np.empty(0, np.int64), np.empty(0, np.int64))
        te = test if test is not None else empty
        tr_u, tr_i = _canonical_pairs(train[0], train[1], n)
        te_u, te_i = _canonical_pairs(te[0], te[1], n)
        return cls(name, np.asarray(user_ids), np.asarray(item_ids), tr_u, tr_i, te_u, te_i)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_train(self) -> int:
        return len(self.train_users)

    @property
    def n_test(self) -> int:
        return len(self.test_users)

    def _matrix(self, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        data = np.ones(len(users), dtype=np.float32)
        mat = sp.csr_matrix((data, (users, items)), shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        mat.data[:] = 1.0  # binary even if pairs were not deduplicated by the caller
        return mat

    def train_matrix(self) -> sp.csr_matrix:
        """Binary (m, n) float32 CSR of training interactions, column indices sorted."""
        return self._matrix(self.train_users, self.train_items)

    def test_matrix(self) -> sp.csr_matrix:
        """Binary (m, n) float32 CSR of test interactions, column indices sorted."""
        return self._matrix(self.test_users, self.test_items)

    def fingerprint(self) -> str:
        """sha256 hex of the id maps and the train and test pairs (not the name or holdout)."""
        h = hashlib.sha256(b"specrec-dataset-v1\0")
        for ids in (self.user_ids, self.item_ids):
            h.update(len(ids).to_bytes(8, "little"))
            h.update("\n".join(ids.tolist()).encode("utf-8"))
            h.update(b"\0")
        for arr in (self.train_users, self.train_items, self.test_users, self.test_items):
            h.update(len(arr).to_bytes(8, "little"))
            h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"train={self.n_train}, test={self.n_test})"
        )


def _canonical_pairs(
    users: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs sorted by user then item, as int64 arrays."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n = max(n_items, 1)
    keys = np.sort(users * n + items)  # sort + diff: much faster than np.unique's hash path
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    return keys // n, keys % n


# ----------------------------------------------------------------------------- id maps, splits


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map values to 0..u-1 in order of first appearance; returns (distinct values, codes)."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse.reshape(-1)]


def _holdout_mask(
    users: np.ndarray, n_users: int, fraction: float, sort_keys: tuple[np.ndarray, ...]
) -> np.ndarray:
    """Boolean mask (nnz,) of the pairs that go to the held-out side.

    Per user with c >= 2 pairs, ``clip(round(fraction * c), 1, c - 1)`` pairs go out (none
    when ``fraction == 0``): those that sort last by ``sort_keys`` (lexsort order, last key
    most significant after the user). Users with one pair keep it.
    """
    mask = np.zeros(len(users), dtype=bool)
    if fraction <= 0 or len(users) == 0:
        return mask
    counts = np.bincount(users, minlength=n_users)
    n_out = np.clip(np.floor(fraction * counts + 0.5), 1, np.maximum(counts - 1, 1))
    n_out = np.where(counts >= 2, n_out, 0).astype(np.int64)
    order = np.lexsort((*sort_keys, users))
    starts = np.cumsum(counts) - counts
    su = users[order]
    pos = np.arange(len(users)) - starts[su]  # position within the user's sorted pairs
    mask[order] = pos >= counts[su] - n_out[su]
    return mask


def _check_fraction(fraction: float, name: str) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")


def holdout_split(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Carve a validation split out of ``ds``'s training pairs (``ds.test`` is not used).

    Per user, a seeded random ``round(fraction * c)`` of its c training pairs (at least 1 when
    c >= 2, never all of them) become the returned Dataset's test pairs; the rest its train
    pairs. Same id maps; the name gets a ``:valid`` suffix. Deterministic in (ds, fraction, seed).
    """
    _check_fraction(fraction, "fraction")
    rng = np.random.default_rng(seed)
    key = rng.random(ds.n_train)
    out = _holdout_mask(ds.train_users, ds.n_users, fraction, (key,))
    return Dataset(
        name=f"{ds.name}:valid",
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train_users=ds.train_users[~out],
        train_items=ds.train_items[~out],
        test_users=ds.train_users[out],
        test_items=ds.train_items[out],
    )


def dataset_from_table(
    name: str,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    timestamps: np.ndarray | None,
    *,
    holdout: float = DEFAULT_HOLDOUT.fraction,
    seed: int = DEFAULT_HOLDOUT.seed,
) -> Dataset:
    """Turn raw table rows into a Dataset with a deterministic per-user holdout.

    Rows are mapped in order of first appearance; duplicate pairs keep their latest timestamp.
    With timestamps, each user's latest pairs go to test (ties: the later row in the file is
    later); without, a seeded random choice. See :func:`_holdout_mask` for the counts.
    """
    _check_fraction(holdout, "holdout")
    uniq_users, users = _first_appearance_codes(np.asarray(user_ids))
    uniq_items, items = _first_appearance_codes(np.asarray(item_ids))
    n = len(uniq_items)
    row = np.arange(len(users), dtype=np.int64)
    keys = users * n + items
    if timestamps is None:
        order = np.argsort(keys, kind="stable")
        keep = np.r_[True, keys[order][1:] != keys[order][:-1]]  # first occurrence
        kept = order[keep]
        rng = np.random.default_rng(seed)
        sort_keys: tuple[np.ndarray, ...] = (rng.random(len(kept)),)
    else:
        ts = np.asarray(timestamps, dtype=np.float64)
        order = np.lexsort((row, ts, keys))
        sk = keys[order]
        keep = np.r_[sk[1:] != sk[:-1], True]  # last occurrence = latest timestamp
        kept = order[keep]
        sort_keys = (row[kept], ts[kept])
    u, i = users[kept], items[kept]  # sorted by key = (user, item)
    test = _holdout_mask(u, len(uniq_users), holdout, sort_keys)
    return Dataset(
        name, uniq_users, uniq_items, u[~test], i[~test], u[test], i[test], Holdout(holdout, seed)
    )


# ----------------------------------------------------------------------------- ingested rows


def _rows_of(known: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``values`` (r,) str in the id map ``known`` (k,) str; unknown ids get new rows.

    Returns ``rows`` (r,) int64 and the new ids (u,) str: unknown values get rows
    k, k+1, ... in order of first appearance in ``values``.
    """
    rows = np.full(len(values), -1, dtype=np.int64)
    if len(known) and len(values):
        order = np.argsort(known, kind="stable")
        ordered = known[order]
        pos = np.minimum(np.searchsorted(ordered, values), len(known) - 1)
        hit = ordered[pos] == values
        rows[hit] = order[pos[hit]]
    new = rows < 0
    new_ids, codes = _first_appearance_codes(values[new])
    rows[new] = len(known) + codes
    return rows, new_ids.astype(str)


def merge_ingested(ds: Dataset, rows: Sequence[tuple[str, str, float | None]]) -> Dataset:
    """The training set of a retrain: ``ds`` plus ingested ``rows``, keeping ``ds``'s split.

    ``rows``: (user_id, item_id, timestamp) in ingestion order (``FeedbackStore`` rows; a None
    timestamp counts as 0, the oldest). Returns a new Dataset named like ``ds``; no rows
    returns ``ds`` itself. Shapes: ``user_ids`` (m + m_new,) and ``item_ids`` (n + n_new,), the
    old ids keeping their rows and ids new to ``ds`` appended in order of first appearance in
    ``rows``; pair arrays as in :class:`Dataset`.

    * ``ds`` with a split of its own (``ds.holdout is None``: LightGCN, CSV pair): its train
      and test pairs stay where they are. A row of a user ``ds`` knows becomes a training
      pair, unless it equals one of ``ds``'s test pairs: a held-out pair is dropped from the
      ingested rows rather than trained on (the published test split stays comparable, and
      evaluation never scores a pair the model was trained on). The rows of users new to
      ``ds`` are split per user as :func:`dataset_from_table` splits a table, with
      :data:`DEFAULT_HOLDOUT` (each user's latest ``round(0.2 c)`` pairs to test, at least one
      and never all when c >= 2; a single pair trains), so new users are evaluated too.
    * ``ds`` cut from a single interactions table (``ds.holdout`` set): ``ds``'s pairs (train
      then test, in stored order, timestamp 0) followed by ``rows`` are one table again, split
      by :func:`dataset_from_table` with ``ds.holdout``: id maps and split are exactly what
      :func:`load_dataset` gives for that table written to a file.
    """
    if len(rows) == 0:
        return ds
    users = np.asarray([r[0] for r in rows], dtype=str)
    items = np.asarray([r[1] for r in rows], dtype=str)
    ts = np.asarray([0.0 if r[2] is None else r[2] for r in rows], dtype=np.float64)
    if ds.holdout is not None:
        return dataset_from_table(
            ds.name,
            np.concatenate([ds.user_ids[ds.train_users], ds.user_ids[ds.test_users], users]),
            np.concatenate([ds.item_ids[ds.train_items], ds.item_ids[ds.test_items], items]),
            np.concatenate([np.zeros(ds.n_train + ds.n_test), ts]),
            holdout=ds.holdout.fraction,
            seed=ds.holdout.seed,
        )

    u_rows, new_users = _rows_of(ds.user_ids, users)
    i_rows, new_items = _rows_of(ds.item_ids, items)
    user_ids = np.concatenate([ds.user_ids, new_users])
    item_ids = np.concatenate([ds.item_ids, new_items])
    n = len(item_ids)
    known = u_rows < ds.n_users
    held_out = np.isin(u_rows * n + i_rows, ds.test_users * n + ds.test_items)
    to_train = known & ~held_out
    train_u = [ds.train_users, u_rows[to_train]]
    train_i = [ds.train_items, i_rows[to_train]]
    test_u, test_i = [ds.test_users], [ds.test_items]
    if not known.all():
        new = dataset_from_table(
            "new users",
            users[~known],
            items[~known],
            ts[~known],
            holdout=DEFAULT_HOLDOUT.fraction,
            seed=DEFAULT_HOLDOUT.seed,
        )
        sub_u, _ = _rows_of(user_ids, new.user_ids)  # every id is in the merged maps
        sub_i, _ = _rows_of(item_ids, new.item_ids)
        train_u.append(sub_u[new.train_users])
        train_i.append(sub_i[new.train_items])
        test_u.append(sub_u[new.test_users])
        test_i.append(sub_i[new.test_items])
    return Dataset.from_pairs(
        ds.name,
        user_ids,
        item_ids,
        (np.concatenate(train_u), np.concatenate(train_i)),
        (np.concatenate(test_u), np.concatenate(test_i)),
    )


# ----------------------------------------------------------------------------- entry point


def _integer_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], m: int
) -> Dataset:
    n = int(max(train[1].max(initial=-1), test[1].max(initial=-1))) + 1
    m = int(max(m, train[0].max(initial=-1), test[0].max(initial=-1))) + 1
    return Dataset.from_pairs(name, np.arange(m).astype(str), np.arange(n).astype(str), train, test)


def dataset_name(path: str | Path) -> str:
    """A dataset's name (``Dataset.name``): its directory's name, or a table file's stem. Its
    training defaults are looked up by it (contract.config.DATASET_DEFAULTS)."""
    path = Path(path)
    return path.resolve().name if path.is_dir() else path.stem


def load_dataset(
    path: str | Path,
    *,
    holdout: float = DEFAULT_HOLDOUT.fraction,
    seed: int = DEFAULT_HOLDOUT.seed,
) -> Dataset:
    """Load a dataset from ``path`` (format auto-detected, see the module docstring).

    ``holdout`` (fraction of each user's pairs moved to test) and ``seed`` apply only to
    interactions tables; LightGCN and CSV-pair directories come with their own split.
    """
    path = Path(path)
    _check_fraction(holdout, "holdout")
    if not path.exists():
        raise file_error(path, "no such file or directory")
    name = dataset_name(path)
    if path.is_dir():
        if (path / "train.txt").is_file() or (path / "test.txt").is_file():
            for f in ("train.txt", "test.txt"):
                if not (path / f).is_file():
                    raise file_error(
                        path / f, "missing (a LightGCN dataset needs train.txt and test.txt)"
                    )
            tr_u, tr_i, tr_max = read_lightgcn_file(path / "train.txt")
            if len(tr_u) == 0:
                raise file_error(
                    path / "train.txt", "no interactions (every line is a bare user id)"
                )
            te_u, te_i, te_max = read_lightgcn_file(path / "test.txt")
            return _integer_dataset(name, (tr_u, tr_i), (te_u, te_i), max(tr_max, te_max))
        if (path / "train.csv").is_file() or (path / "test.csv").is_file():
            for f in ("train.csv", "test.csv"):
                if not (path / f).is_file():
                    raise file_error(
                        path / f, "missing (a CSV-pair dataset needs train.csv and test.csv)"
                    )
            train = read_pair_csv(path / "train.csv")
            test = read_pair_csv(path / "test.csv", allow_empty=True)
            return _integer_dataset(name, train, test, -1)
        table = table_in_dir(path)
        if table is None:
            raise file_error(
                path,
                "no dataset found: expected train.txt+test.txt, train.csv+test.csv "
                "or interactions.csv",
            )
    else:
        if path.suffix.lower() not in (".csv", ".tsv"):
            raise file_error(
                path, "unsupported file type: expected a .csv or .tsv interactions table"
            )
        table = path
    users, items, ts = read_interactions_table(table)
    return dataset_from_table(name, users, items, ts, holdout=holdout, seed=seed)
