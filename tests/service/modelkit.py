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


def publish(root: Path, model: Model, **kw) -> str:
    return ModelRegistry(root).publish(model.arrays, config={"test": True}, **kw)


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
