"""Synthetic implicit feedback at scale (10^6 users x 10^6 items in minutes, bounded memory).

The same planted model as :mod:`trainer.synthetic` (30 latent clusters, Dirichlet(0.05) user
interests, popularity ``rank ** -0.9``, log-normal degrees with median 30 clipped to [10, 150],
affinity 12), sampled without scoring the users x items matrix: user u draws items from

    p(j | u) ∝ w_j * (1 + affinity * C * interest_u[c_j])
             = W * (w_j / W) + sum_c affinity * C * interest_u[c] * W_c * (w_j / W_c) [c_j = c],

a mixture of "popularity" (all items by weight, mass W = sum w) and one component per cluster
(its items by weight, mass W_c), so a draw picks a component by its mass and then an item
within it by ``searchsorted`` on cumulative weights. Drawing with replacement and keeping
each user's first ``n_u`` distinct items is exactly sampling without replacement from
p(. | u), which the default generator does with an exponential race over all n items (the
same distribution, different random stream, so different bytes: the default dataset is left
to :mod:`trainer.synthetic`). Work and memory are O(interactions), in chunks of users.

The holdout: each user's test items are a seeded random choice of ``max(1, round(0.2 n_u))``
of its items (there are no timestamps). :func:`write_lightgcn` writes ``train.txt`` and
``test.txt`` in the LightGCN format :func:`trainer.data.load_dataset` reads (integer ids =
rows); 10^6 x 10^6 (38 M interactions, 0.28 GB of text) generates and writes in about 90 s
on one core at 2.9 GB peak RSS.

    python -m trainer.synthetic_large --out /work/scale/data/1m --users 1000000 --items 1000000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.artifact import write_file_atomic
from trainer.synthetic import check_sizes, draw_counts, draw_items

_CHUNK_USERS = 50_000  # users drawn at once (~3 M draws, ~100 MB of temporaries)


@dataclass(frozen=True)
class LargeSynthetic:
    """Pairs sorted by user (each user's items in draw order) and the planted truth.

    users, items: (nnz,) int64 rows; item_cluster: (n,) int64; item_weight: (n,) float64;
    counts: (m,) int64 items per user.
    """

    users: np.ndarray
    items: np.ndarray
    item_cluster: np.ndarray
    item_weight: np.ndarray
    counts: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.counts)

    @property
    def n_items(self) -> int:
        return len(self.item_cluster)


def _components(
    item_cluster: np.ndarray, item_weight: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items of each mixture component and their offset cumulative weights.

    Returns ``comp_items`` (2n,) int64: all items, then the items of cluster 0, 1, ...;
    ``comp_cum`` (2n,) float64: within component k the normalised cumulative weight plus k,
    so ``searchsorted(comp_cum, k + u, "right")`` for u in [0, 1) draws from component k;
    ``mass`` (1 + C,) float64: W, then W_c per cluster.
    """
    n = len(item_cluster)
    order = np.argsort(item_cluster, kind="stable")
    sizes = np.bincount(item_cluster, minlength=n_clusters)
    comp_items = np.concatenate([np.arange(n, dtype=np.int64), order.astype(np.int64)])
    comp_of = np.concatenate([np.zeros(n, np.int64), 1 + item_cluster[order]])  # (2n,)
    w = item_weight[comp_items]
    cum = np.cumsum(w)
    starts = np.r_[0, n + np.cumsum(np.r_[0, sizes[:-1]])]  # first index of each component
    ends = np.r_[n, n + np.cumsum(sizes)]
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)  # (1 + C,)
    mass = np.where(ends > starts, cum[np.maximum(ends - 1, 0)] - before, 0.0)
    within = (cum - before[comp_of]) / np.where(mass > 0, mass, 1.0)[comp_of]
    within[ends[mass > 0] - 1] = 1.0  # exact 1 at each end despite rounding
    return comp_items, within + comp_of, mass


def _draw_distinct(
    rng: np.random.Generator,
    mix: np.ndarray,
    counts: np.ndarray,
    comp_items: np.ndarray,
    comp_cum: np.ndarray,
    n_items: int,
) -> list[np.ndarray]:
    """Each user's first ``counts[u]`` distinct items, drawn from its mixture ``mix[u]``.

    mix: (b, 1 + C) float64 component masses per user; counts: (b,) int64 (<= support size).
    Returns b arrays of items in draw order.
    """
    b = len(counts)
    out: list[np.ndarray] = [np.empty(0, np.int64)] * b
    todo = np.arange(b)
    factor = 1.5
    while len(todo):
        need = counts[todo]
        n_draw = np.ceil(need * factor).astype(np.int64) + 8
        who = np.repeat(np.arange(len(todo)), n_draw)  # (D,) position in todo
        cum = np.cumsum(mix[todo], axis=1)
        cum = cum / cum[:, -1:]  # (t, 1 + C) rows ending at exactly 1
        cum[:, -1] = 1.0
        flat = (cum + np.arange(len(todo))[:, None]).ravel()
        pick = np.searchsorted(flat, who + rng.random(len(who)), side="right")
        comp = pick - who * cum.shape[1]  # (D,) component index
        pos = np.searchsorted(comp_cum, comp + rng.random(len(who)), side="right")
        items = comp_items[np.minimum(pos, len(comp_items) - 1)]
        # first occurrence of each (user, item), back in draw order
        _, first = np.unique(who * n_items + items, return_index=True)
        first.sort()
        owner = who[first]
        start = np.searchsorted(owner, np.arange(len(todo)))
        rank = np.arange(len(first)) - start[owner]
        keep = rank < need[owner]
        kept_owner, kept_items = owner[keep], items[first[keep]]
        got = np.bincount(kept_owner, minlength=len(todo))
        bounds = np.r_[0, np.cumsum(got)]
        done = got >= need
        for t in np.flatnonzero(done):
            out[todo[t]] = kept_items[bounds[t] : bounds[t + 1]]
        todo = todo[~done]  # too many repeats: draw these users again, more each time
        factor *= 2
    return out


def generate_large(
    n_users: int,
    n_items: int,
    seed: int = 0,
    *,
    n_clusters: int = 30,
    affinity: float = 12.0,
    interest_concentration: float = 0.05,
    popularity_exponent: float = 0.9,
    median_items: int = 30,
    min_items: int = 10,
    max_items: int = 150,
) -> LargeSynthetic:
    """Draw the interactions described in the module docstring; deterministic in all args."""
    min_items, max_items = check_sizes(n_users, n_items, n_clusters, min_items, max_items)
    rng = np.random.default_rng(seed)
    item_cluster, item_weight = draw_items(rng, n_items, n_clusters, popularity_exponent)
    counts = draw_counts(rng, n_users, median_items, min_items, max_items)
    comp_items, comp_cum, mass = _components(item_cluster, item_weight, n_clusters)

    picked: list[np.ndarray] = []
    for start in range(0, n_users, _CHUNK_USERS):
        b = min(_CHUNK_USERS, n_users - start)
        interest = rng.dirichlet(np.full(n_clusters, interest_concentration), size=b)  # (b, C)
        mix = np.empty((b, 1 + n_clusters))
        mix[:, 0] = mass[0]
        mix[:, 1:] = affinity * n_clusters * interest * mass[1:]
        picked += _draw_distinct(rng, mix, counts[start : start + b], comp_items, comp_cum, n_items)
    items = np.concatenate(picked).astype(np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    return LargeSynthetic(users, items, item_cluster, item_weight, counts)


def holdout(
    data: LargeSynthetic, fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Seeded per-user holdout: ``max(1, round(fraction * n_u))`` random items of each user
    with at least 2 go to test. Returns ``(train_users, train_items), (test_users,
    test_items)``, each sorted by user (int64)."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(data.users)), data.users))  # users' items shuffled
    first = np.r_[0, np.cumsum(data.counts)[:-1]]
    rank = np.arange(len(order)) - np.repeat(first, data.counts)
    n_test = np.where(data.counts >= 2, np.maximum(1, np.rint(fraction * data.counts)), 0)
    test = rank < np.repeat(n_test.astype(np.int64), data.counts)
    u, i = data.users[order], data.items[order]
    return (u[~test], i[~test]), (u[test], i[test])


def _lightgcn_lines(users: np.ndarray, items: np.ndarray, n_users: int) -> Iterator[str]:
    """``user item item ...`` lines for every user row (a bare id for a user without items),
    in blocks of users (the text of one block at a time)."""
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    for start in range(0, n_users, _CHUNK_USERS):
        stop = min(start + _CHUNK_USERS, n_users)
        words = items[bounds[start] : bounds[stop]].astype(str)
        first = bounds[start]
        yield "".join(
            " ".join([str(u), *words[bounds[u] - first : bounds[u + 1] - first]]) + "\n"
            for u in range(start, stop)
        )


def _write_lines(path: Path, blocks: Iterable[str]) -> None:
    """`blocks` written to `path` atomically and durably (UTF-8)."""
    write_file_atomic(path, lambda f: f.writelines(b.encode("utf-8") for b in blocks))


def write_lightgcn(
    out_dir: str | Path, n_users: int, n_items: int, seed: int = 0, fraction: float = 0.2
) -> Path:
    """Generate, cut the holdout and write ``out_dir/train.txt`` and ``test.txt`` (each
    atomically; test.txt last, so a directory with both holds a whole dataset)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = generate_large(n_users, n_items, seed)
    (tr_u, tr_i), (te_u, te_i) = holdout(data, fraction, seed)
    del data
    _write_lines(out_dir / "train.txt", _lightgcn_lines(tr_u, tr_i, n_users))
    _write_lines(out_dir / "test.txt", _lightgcn_lines(te_u, te_i, n_users))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.synthetic_large``: write a large synthetic dataset (LightGCN)."""
    parser = argparse.ArgumentParser(prog="python -m trainer.synthetic_large", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="dataset directory")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        write_lightgcn(args.out, args.users, args.items, args.seed)
    except (ValueError, OSError) as e:
        print(f"synthetic_large: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.users} users, {args.items} items, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
