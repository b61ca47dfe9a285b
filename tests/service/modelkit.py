"""Tiny numpy-only models for service tests (no trainer, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.artifact import ModelArrays, ModelRegistry

ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class Model:
    """A tiny model and the raw inputs it was built from (for independent checks)."""

    arrays: ModelArrays
    seen: list[set[int]]  # user row -> item rows seen in training

    @property
    def user_ids(self) -> list[str]:
        return self.arrays.user_ids.tolist()

    @property
    def item_ids(self) -> list[str]:
        return self.arrays.item_ids.tolist()


def make_model(
    n_users: int = 30,
    n_items: int = 50,
    dim: int = 8,
    seed: int = 0,
    max_seen: int = 8,
    user_emb: np.ndarray | None = None,
    item_emb: np.ndarray | None = None,
    popularity_boost: dict[int, int] | None = None,
) -> Model:
    """Gaussian embeddings (unless given); user u saw a random 0..max_seen items; ids u0.., i0..

    popularity_boost: {item_row: extra interactions} added from distinct users (for fallbacks).
    """
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_users, dim)) if user_emb is None else user_emb
    it = rng.standard_normal((n_items, dim)) if item_emb is None else item_emb
    n_users, n_items = len(u), len(it)
    seen = [
        set(rng.choice(n_items, size=rng.integers(0, max_seen + 1), replace=False).tolist())
        for _ in range(n_users)
    ]
    for item, extra in (popularity_boost or {}).items():
        for user in range(min(extra, n_users)):
            seen[user].add(item)
    pairs_u = np.asarray([uu for uu, s in enumerate(seen) for _ in s], dtype=np.int64)
    pairs_i = np.asarray([i for s in seen for i in sorted(s)], dtype=np.int64)
    arrays = ModelArrays.build(
        u.astype(np.float32),
        it.astype(np.float32),
        [f"u{i}" for i in range(n_users)],
        [f"i{i}" for i in range(n_items)],
        (pairs_u, pairs_i),
    )
    return Model(arrays, seen)


def with_top_lists(model: Model, length: int) -> Model:
    """`model` with the per-user top lists the trainer writes (numpy reference: each user's
    top-`length` unseen items by float64 inner product, ties by the lower row, -1 / -inf
    padding), as ``top_rows`` / ``top_scores``."""
    a = model.arrays
    length = min(length, a.n_items)
    rows = np.full((a.n_users, length), -1, dtype=np.int32)
    scores = np.full((a.n_users, length), -np.inf, dtype=np.float32)
    for u in range(a.n_users):
        s = a.item_emb.astype(np.float64) @ a.user_emb[u].astype(np.float64)
        ranked = [r for r in np.lexsort((np.arange(a.n_items), -s)) if r not in model.seen[u]]
        ranked = ranked[:length]
        rows[u, : len(ranked)] = ranked
        scores[u, : len(ranked)] = s[ranked]
    return Model(a.with_arrays(top_rows=rows, top_scores=scores), model.seen)


def publish(root: Path, model: Model, **kw) -> str:
    return ModelRegistry(root).publish(model.arrays, config={"test": True}, **kw)


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class SpectralModel:
    """A tiny spectral-filter model and its dense reference scores."""

    arrays: ModelArrays
    seen: list[set[int]]
    train: np.ndarray  # (m, n) float64 binary: the matrix the filter was fitted on
    alpha: float
    k: int

    def scores(self, history: list[int] | np.ndarray) -> np.ndarray:
        """Dense GF-CF scores (n,) float64 of one binary history (independent numpy)."""
        r = np.zeros(self.train.shape[1])
        r[np.asarray(history, dtype=np.int64)] = 1.0
        du, di = self.train.sum(1), self.train.sum(0)
        with np.errstate(divide="ignore"):
            su, si = np.where(du > 0, du**-0.5, 0.0), np.where(di > 0, di**-0.5, 0.0)
        rn = su[:, None] * self.train * si[None, :]
        _, _, vt = np.linalg.svd(rn)
        v = vt[: self.k].T
        return r @ rn.T @ rn + self.alpha * (r * si) @ v @ v.T @ np.diag(np.sqrt(di))

    def ranked(self, history, banned, k: int) -> list[str]:
        s = self.scores(history)
        order = [r for r in np.lexsort((np.arange(len(s)), -s)).tolist() if r not in set(banned)]
        return [f"i{r}" for r in order[:k]]


def make_spectral_model(
    n_users: int = 40,
    n_items: int = 30,
    k: int = 6,
    alpha: float = 0.3,
    seed: int = 0,
    held_out: float = 0.0,
) -> SpectralModel:
    """A GF-CF model of a random binary matrix (every user has >= 2 items), built the way the
    trainer publishes one: R̃, the low-pass part as embeddings, top lists of unseen items.
    `held_out`: share of pairs kept out of the filter's matrix but in the seen set."""
    from contract.spectral import SpectralFilter, normalized_matrix

    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.2
    for u in range(n_users):
        dense[u, rng.choice(n_items, 2, replace=False)] = True
    users, items = np.nonzero(dense)
    keep = rng.random(len(users)) >= held_out
    train = np.zeros((n_users, n_items))
    train[users[keep], items[keep]] = 1.0
    import scipy.sparse as sp

    norm = normalized_matrix(sp.csr_matrix(train))
    _, s, vt = np.linalg.svd(norm.toarray().astype(np.float64))
    filt = SpectralFilter.build(norm, vt[:k].T, s[:k], alpha)
    arrays = ModelArrays.build(
        filt.user_factors(sp.csr_matrix(train, dtype=np.float32)),
        filt.lowpass_out,
        [f"u{i}" for i in range(n_users)],
        [f"i{i}" for i in range(n_items)],
        (users, items),
    )
    seen = [set(np.flatnonzero(dense[u]).tolist()) for u in range(n_users)]
    model = SpectralModel(arrays, seen, train, alpha, k)
    length = min(10, n_items)
    top_rows = np.full((n_users, length), -1, dtype=np.int32)
    top_scores = np.full((n_users, length), -np.inf, dtype=np.float32)
    for u in range(n_users):
        hist = np.flatnonzero(train[u])
        ranked = [int(r[1:]) for r in model.ranked(hist, seen[u], length)]
        top_rows[u, : len(ranked)] = ranked
        top_scores[u, : len(ranked)] = model.scores(hist)[ranked]
    model.arrays = arrays.with_arrays(
        filter_indptr=norm.indptr.astype(np.int64),
        filter_indices=norm.indices.astype(np.int32),
        filter_data=norm.data.astype(np.float32),
        filter_singular_values=s[:k].astype(np.float32),
        top_rows=top_rows,
        top_scores=top_scores,
    )
    return model


def publish_spectral(root: Path, model: SpectralModel, **kw) -> str:
    info = {"kind": "spectral", "spectral_k": model.k, "spectral_alpha": model.alpha}
    extra = {"model": info | {"top_k": int(model.arrays.top_rows.shape[1])}}
    return ModelRegistry(root).publish(
        model.arrays, config={"objective": "spectral"}, extra=extra, **kw
    )


@dataclass
class BlendModel:
    """A tiny blend (the spectral model's filter and random embeddings) and its dense
    reference scores: z(GF-CF) + weight * z(u . V), z per row over all items."""

    spectral: SpectralModel
    user_emb: np.ndarray  # (m, d) float32
    item_emb: np.ndarray  # (n, d) float32
    weight: float
    arrays: ModelArrays

    @property
    def seen(self) -> list[set[int]]:
        return self.spectral.seen

    def history(self, user: int) -> np.ndarray:
        return np.flatnonzero(self.spectral.train[user])

    def scores(self, history, vector: np.ndarray) -> np.ndarray:
        """(n,) float64 reference blend scores of one (history, query vector)."""

        def z(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            sd = x.std()
            return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)

        emb = self.item_emb.astype(np.float64) @ np.asarray(vector, dtype=np.float64)
        return z(self.spectral.scores(history)) + self.weight * z(emb)

    def ranked(self, history, vector: np.ndarray, banned, k: int) -> list[str]:
        s = self.scores(history, vector)
        order = [r for r in np.lexsort((np.arange(len(s)), -s)).tolist() if r not in set(banned)]
        return [f"i{r}" for r in order[:k]]


def make_blend_model(weight: float = 1.3, dim: int = 8, seed: int = 0, **kw) -> BlendModel:
    """make_spectral_model's filter (kw) with random DirectSpec+-like embeddings, published
    the way the trainer publishes a blend: embeddings, filter, its low-pass factors apart,
    top lists by the blend's scores."""
    spectral = make_spectral_model(seed=seed, **kw)
    rng = np.random.default_rng(seed + 1)
    a = spectral.arrays
    users = rng.normal(size=(a.n_users, dim)).astype(np.float32)
    items = rng.normal(size=(a.n_items, dim)).astype(np.float32)
    model = BlendModel(spectral, users, items, weight, a)
    length = min(10, a.n_items)
    top_rows = np.full((a.n_users, length), -1, dtype=np.int32)
    top_scores = np.full((a.n_users, length), -np.inf, dtype=np.float32)
    for u in range(a.n_users):
        hist = model.history(u)
        ranked = [int(r[1:]) for r in model.ranked(hist, users[u], model.seen[u], length)]
        top_rows[u, : len(ranked)] = ranked
        top_scores[u, : len(ranked)] = model.scores(hist, users[u])[ranked]
    model.arrays = a.with_arrays(
        user_emb=users,
        item_emb=items,
        filter_lowpass=np.ascontiguousarray(a.item_emb),
        top_rows=top_rows,
        top_scores=top_scores,
    )
    return model


def publish_blend(root: Path, model: BlendModel, **kw) -> str:
    info = {
        "kind": "blend",
        "spectral_k": model.spectral.k,
        "spectral_alpha": model.spectral.alpha,
        "blend_weight": model.weight,
        "top_k": int(model.arrays.top_rows.shape[1]),
    }
    return ModelRegistry(root).publish(
        model.arrays, config={"objective": "blend"}, extra={"model": info}, **kw
    )
