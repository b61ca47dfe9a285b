"""Serving the item index an artifact ships (contract/annindex.py), and the overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.annindex import build_hnsw, build_ivf, load_index, serialize_index
from contract.manifest import IndexInfo, IndexParams
from service.app import create_app
from service.settings import Settings
from tests.service.modelkit import ADMIN_TOKEN, Model, make_model, publish

K = 10
N_ITEMS, DIM, NLIST, NPROBE = 1200, 16, 40, 2


@pytest.fixture
def model() -> Model:
    # gaussian items: 2 of 40 IVF cells miss many true neighbours, so the shipped index's
    # answers are told apart from exact search's
    return make_model(n_users=25, n_items=N_ITEMS, dim=DIM, seed=7, max_seen=30)


def shipped(model: Model, kind: str) -> tuple[Any, IndexInfo]:
    items = model.arrays.item_emb
    if kind == "ivf":
        index = build_ivf(items, NLIST)
        index.nprobe = NPROBE
        params = IndexParams(nlist=NLIST, nprobe=NPROBE)
    else:
        index = build_hnsw(items, 4, 16)
        index.hnsw.efSearch = 16
        params = IndexParams(m=4, ef_construction=16, ef_search=16)
    info = IndexInfo(kind=kind, params=params, target=0.5, recall=0.61, reason="test")
    return index, info


def publish_with_index(root: Path, model: Model, kind: str = "ivf") -> Any:
    """Publish `model` with a shipped index of `kind`; return an independent copy of it."""
    index, info = shipped(model, kind)
    data = serialize_index(index)
    arrays = model.arrays.with_arrays(item_index=data)
    publish(root, Model(arrays, model.seen), extra={"index": info.to_dict()})
    return load_index(data)


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    # precompute_k 0: every answer is a search of the index under test
    return Settings(home=tmp_path, watch=False, admin_token=ADMIN_TOKEN, precompute_k=0, **kw)


def index_answer(index: Any, model: Model, user: int) -> list[str]:
    """The faiss index's own top-K for `user`, seen items dropped (the service over-fetches
    K + |seen| candidates the same way)."""
    seen = model.seen[user]
    _, rows = index.search(model.arrays.user_emb[user : user + 1], K + len(seen))
    return [f"i{r}" for r in rows[0] if r >= 0 and r not in seen][:K]


def exact_answer(model: Model, user: int) -> list[str]:
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    ranked = [r for r in np.argsort(-scores, kind="stable") if r not in model.seen[user]]
    return [f"i{r}" for r in ranked[:K]]


def answers(c: TestClient, model: Model) -> list[list[str]]:
    out = []
    for u in range(model.arrays.n_users):
        r = c.get(f"/recommend/u{u}?k={K}")
        assert r.status_code == 200, r.text
        out.append([it["item_id"] for it in r.json()["items"]])
    return out


def ready(c: TestClient) -> dict[str, Any]:
    r = c.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    return {k: body[k] for k in ("index_kind", "index_backend", "index_source", "index_recall")}


def test_auto_serves_the_shipped_index_as_it_answers(tmp_path: Path, model: Model) -> None:
    settings = settings_for(tmp_path)
    index = publish_with_index(settings.registry_root, model)
    index.nprobe = NPROBE
    with TestClient(create_app(settings)) as c:
        assert ready(c) == {
            "index_kind": "ivf",
            "index_backend": "faiss",
            "index_source": "artifact",
            "index_recall": 0.61,
        }
        got = answers(c, model)
        listed = c.get("/models").json()["versions"][0]["index"]
    want = [index_answer(index, model, u) for u in range(model.arrays.n_users)]
    assert got == want
    exact = [exact_answer(model, u) for u in range(model.arrays.n_users)]
    assert got != exact  # it is the approximate index answering, not exact search
    assert listed["kind"] == "ivf" and listed["params"] == {"nlist": NLIST, "nprobe": NPROBE}
    assert (listed["recall"], listed["target"], listed["reason"]) == (0.61, 0.5, "test")


def test_flat_ignores_the_shipped_index(tmp_path: Path, model: Model) -> None:
    settings = settings_for(tmp_path, index_kind="flat")
    publish_with_index(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        assert ready(c) == {
            "index_kind": "flat",
            "index_backend": "numpy",
            "index_source": "built at load",
            "index_recall": 1.0,
        }
        got = answers(c, model)
    assert got == [exact_answer(model, u) for u in range(model.arrays.n_users)]


def test_an_artifact_without_an_index_is_searched_exactly(tmp_path: Path, model: Model) -> None:
    settings = settings_for(tmp_path)
    publish(settings.registry_root, model)  # an older artifact: no manifest "index"
    with TestClient(create_app(settings)) as c:
        assert ready(c)["index_source"] == "built at load"
        assert ready(c)["index_kind"] == "flat"
        got = answers(c, model)
    assert got == [exact_answer(model, u) for u in range(model.arrays.n_users)]


def test_a_set_nprobe_overrides_the_recorded_one(tmp_path: Path, model: Model) -> None:
    # every cell visited: the shipped IVF index answers exactly
    settings = settings_for(tmp_path, index_kind="ivf", ivf_nprobe=NLIST)
    publish_with_index(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        assert ready(c)["index_source"] == "artifact"
        got = answers(c, model)
    assert got == [exact_answer(model, u) for u in range(model.arrays.n_users)]


def test_the_kind_asked_for_uses_the_shipped_index_only_when_it_matches(
    tmp_path: Path, model: Model
) -> None:
    settings = settings_for(tmp_path, index_kind="hnsw")
    index = publish_with_index(settings.registry_root, model, "hnsw")
    with TestClient(create_app(settings)) as c:
        assert ready(c) == {
            "index_kind": "hnsw",
            "index_backend": "faiss",
            "index_source": "artifact",
            "index_recall": 0.61,
        }
        got = answers(c, model)
    want = []
    for u in range(model.arrays.n_users):  # efSearch is raised to the candidates fetched
        index.hnsw.efSearch = max(16, K + len(model.seen[u]))
        want.append(index_answer(index, model, u))
    assert got == want
    # ivf asked, hnsw shipped: an IVF index built at load, nothing measured
    other = settings_for(tmp_path / "b", index_kind="ivf")
    publish_with_index(other.registry_root, model, "hnsw")
    with TestClient(create_app(other)) as c:
        assert ready(c) == {
            "index_kind": "ivf",
            "index_backend": "faiss",
            "index_source": "built at load",
            "index_recall": None,
        }
    # hnsw asked with another M than the shipped one's: built at load with that M
    rebuilt = settings_for(tmp_path / "c", index_kind="hnsw", hnsw_m=8)
    publish_with_index(rebuilt.registry_root, model, "hnsw")
    with TestClient(create_app(rebuilt)) as c:
        assert ready(c)["index_source"] == "built at load"
