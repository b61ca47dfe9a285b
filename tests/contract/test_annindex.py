"""The item index chosen at publish (contract/annindex.py) and its place in the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from contract import annindex
from contract.annindex import (
    choose_index,
    default_nlist,
    exact_topk,
    load_index,
    nprobe_grid,
    recall_at_k,
    sample_queries,
    serialize_index,
)
from contract.artifact import ArtifactInvalid, ModelArrays, ModelRegistry, read_model_dir
from contract.manifest import IndexInfo, IndexParams
from contract.settings import IndexBuildEnv


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """(n, d) float32 points around `clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return (centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))).astype(
        np.float32
    )


def test_grids_and_nlist_rule() -> None:
    assert nprobe_grid(1) == (1,)
    assert nprobe_grid(8) == (1, 2, 4, 8)
    assert nprobe_grid(40) == (1, 2, 4, 8, 16, 32, 40)
    assert default_nlist(1_000_000) == 1000 and default_nlist(1000) == 25


def test_exact_topk_and_recall_match_a_plain_numpy_ranking() -> None:
    rng = np.random.default_rng(1)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    got = exact_topk(items, queries, 20, batch=7)  # several batches
    want = np.argsort(-(queries.astype(np.float64) @ items.T.astype(np.float64)), axis=1)[:, :20]
    np.testing.assert_array_equal(got, want)
    half = got.copy()
    half[:, 10:] = -1  # half of each list missing
    assert recall_at_k(half, want) == pytest.approx(0.5)
    assert recall_at_k(got[:, ::-1], want) == 1.0  # order does not matter


def test_sample_queries_is_seeded_and_without_replacement() -> None:
    users = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    a, b = sample_queries(users, 20, seed=3), sample_queries(users, 20, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a[:, 0])) == 20
    assert sample_queries(users, 500).shape == (50, 3)  # at most every user


def test_a_small_catalogue_is_flat_without_building_anything(monkeypatch) -> None:
    items = clustered(500, 8, 5, 0)

    def no_build(*_: object) -> None:
        raise AssertionError("built an index for a small catalogue")

    monkeypatch.setattr(annindex, "build_ivf", no_build)
    monkeypatch.setattr(annindex, "build_hnsw", no_build)
    choice = choose_index(items, items[:10], 0.95)
    assert choice.index is None
    assert (choice.info.kind, choice.info.candidates, choice.info.n_queries) == ("flat", [], 0)
    assert choice.info.reason == "500 items < 20000: exact search is cheaper than any index"


@pytest.fixture(scope="module")
def approximate() -> tuple[np.ndarray, np.ndarray, annindex.IndexChoice]:
    """A clustered catalogue above a forced threshold, exact search made slow so that the
    fastest setting reaching the target must win (the recall, not the clock, decides)."""
    items, queries = clustered(3000, 16, 30, 2), clustered(200, 16, 30, 3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(annindex, "exact_latency", lambda _i, q, _k=20, _b=None: np.full(len(q), 1.0))
        choice = choose_index(items, queries, 0.9, small_catalogue=1000)
    return items, queries, choice


def test_the_chosen_index_recall_is_what_its_loaded_copy_answers(approximate) -> None:
    items, queries, choice = approximate
    info = choice.info
    assert info.kind in ("ivf", "hnsw") and choice.index is not None
    assert info.recall is not None and info.recall >= 0.9
    assert (info.exact_p50_ms, info.n_queries, info.target) == (1000.0, 200, 0.9)
    # recompute the recall from the shipped bytes' answers, with the recorded parameter
    loaded = load_index(serialize_index(choice.index))
    if info.kind == "ivf":
        assert info.params.nlist == default_nlist(3000) == loaded.nlist
        loaded.nprobe = info.params.nprobe
    else:
        assert (info.params.m, info.params.ef_construction) == (32, 80)
        loaded.hnsw.efSearch = info.params.ef_search
    _, found = loaded.search(queries, 20)
    truth = np.argsort(-(queries.astype(np.float64) @ items.T.astype(np.float64)), axis=1)[:, :20]
    hits = np.mean([len(set(f) & set(t)) / 20 for f, t in zip(found, truth, strict=True)])
    assert info.recall == pytest.approx(hits)
    # the winner is the fastest candidate reaching the target; each grid stops at its first
    meeting = [c for c in info.candidates if c.recall >= 0.9]
    assert info.p50_ms == min(c.p50_ms for c in meeting)
    for kind in ("ivf", "hnsw"):
        recalls = [c.recall for c in info.candidates if c.kind == kind]
        assert all(r < 0.9 for r in recalls[:-1])


def test_an_unreachable_target_is_flat_with_the_reason() -> None:
    rng = np.random.default_rng(4)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(100, 16)).astype(np.float32)
    choice = choose_index(
        items, queries, 1.0, small_catalogue=100, nprobes=(1,), ef_searches=(16,), hnsw_m=4
    )
    assert choice.index is None and choice.info.kind == "flat"
    assert [c.kind for c in choice.info.candidates] == ["ivf", "hnsw"]
    best = max(c.recall for c in choice.info.candidates)
    assert best < 1.0
    assert choice.info.reason.startswith(f"no setting reached recall@20 1.0 (best {best:.4f}")


def test_an_index_no_faster_than_exact_search_is_not_shipped(monkeypatch) -> None:
    items, queries = clustered(3000, 16, 30, 2), clustered(100, 16, 30, 3)
    monkeypatch.setattr(
        annindex, "exact_latency", lambda _i, q, _k=20, _b=None: np.full(len(q), 1e-12)
    )
    choice = choose_index(items, queries, 0.5, small_catalogue=1000)
    assert choice.index is None and choice.info.kind == "flat"
    assert "is not 2x faster than exact search (0.000 ms)" in choice.info.reason
    assert any(c.recall >= 0.5 for c in choice.info.candidates)


def test_the_target_must_be_in_0_1() -> None:
    with pytest.raises(ValueError, match="outside"):
        choose_index(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), 0.0)


def test_garbage_bytes_are_not_an_index() -> None:
    with pytest.raises(ValueError, match="not a faiss index"):
        load_index(np.frombuffer(b"not an index at all", dtype=np.uint8))


def test_recall_target_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("SPECREC_INDEX_RECALL", raising=False)
    assert IndexBuildEnv().index_recall == 0.95
    monkeypatch.setenv("SPECREC_INDEX_RECALL", "0.8")
    assert IndexBuildEnv().index_recall == 0.8
    monkeypatch.setenv("SPECREC_INDEX_RECALL", "1.5")
    with pytest.raises(ValueError, match="index_recall"):
        IndexBuildEnv()


# ---- the artifact ------------------------------------------------------------------------
def shipped_model(n: int = 400, d: int = 8) -> tuple[ModelArrays, IndexInfo, np.ndarray]:
    items = clustered(n, d, 8, 5)
    users = clustered(30, d, 8, 6)
    index = annindex.build_ivf(items, 10)
    index.nprobe = 3
    data = serialize_index(index)
    arrays = ModelArrays.build(
        users,
        items,
        [f"u{i}" for i in range(30)],
        [f"i{i}" for i in range(n)],
        (np.array([0, 1]), np.array([2, 3])),
    ).with_arrays(item_index=data)
    info = IndexInfo(
        kind="ivf", params=IndexParams(nlist=10, nprobe=3), target=0.9, recall=0.92, reason="x"
    )
    return arrays, info, data


def test_the_index_is_published_checksummed_and_loaded(tmp_path: Path) -> None:
    arrays, info, data = shipped_model()
    reg = ModelRegistry(tmp_path)
    version = reg.publish(arrays, config={}, extra={"index": info.to_dict()})
    vdir = tmp_path / "versions" / version
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert manifest["files"]["item_index.npy"]["bytes"] == (vdir / "item_index.npy").stat().st_size
    loaded = reg.load(version)
    assert loaded.manifest.index == info
    np.testing.assert_array_equal(loaded.arrays.item_index, data)
    index = load_index(loaded.arrays.item_index)
    assert isinstance(index, faiss.IndexIVFFlat) and (index.nlist, index.nprobe) == (10, 3)
    q = arrays.user_emb[:5]
    np.testing.assert_array_equal(index.search(q, 7)[1], annindex.load_index(data).search(q, 7)[1])


def test_a_corrupted_index_file_makes_the_version_invalid(tmp_path: Path) -> None:
    arrays, info, _ = shipped_model()
    reg = ModelRegistry(tmp_path)
    version = reg.publish(arrays, config={}, extra={"index": info.to_dict()})
    path = tmp_path / "versions" / version / "item_index.npy"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactInvalid, match="checksum mismatch for item_index.npy"):
        reg.load(version)


def test_manifest_and_index_file_must_agree(tmp_path: Path) -> None:
    arrays, info, _ = shipped_model()
    reg = ModelRegistry(tmp_path)
    # an index file without a manifest record is refused before anything is published
    with pytest.raises(ArtifactInvalid, match="manifest index kind None but an item_index.npy"):
        reg.publish(arrays, config={})
    assert reg.versions() == []
    flat = IndexInfo(kind="flat", target=0.9, reason="small")
    with pytest.raises(ArtifactInvalid, match="kind 'flat' but an item_index.npy"):
        reg.publish(arrays, config={}, extra={"index": flat.to_dict()})
    bare = arrays.with_arrays(item_index=None)
    with pytest.raises(ArtifactInvalid, match="kind 'ivf' without item_index.npy"):
        reg.publish(bare, config={}, extra={"index": info.to_dict()})
    version = reg.publish(bare, config={}, extra={"index": flat.to_dict()})  # flat: no file
    loaded = read_model_dir(tmp_path / "versions" / version)
    assert loaded.arrays.item_index is None and loaded.manifest.index == flat


def test_item_index_must_be_uint8(tmp_path: Path) -> None:
    arrays, info, data = shipped_model()
    with pytest.raises(ArtifactInvalid, match="item_index"):
        arrays.with_arrays(item_index=data.astype(np.int16)).validate()


def test_the_choice_is_measured_with_each_query_s_seen_items_excluded(monkeypatch) -> None:
    """With `banned` (each query's own best rows, as a trained user's seen items are), the
    truth leaves them out and every candidate is searched as the service searches: k + |b|
    fetched, b dropped. The recorded recall is what the loaded copy answers that way."""
    items, queries = clustered(3000, 16, 30, 2), clustered(100, 16, 30, 3)
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    banned = [np.sort(np.argsort(-row)[:15]) for row in scores]  # the 15 best of each query
    truth = exact_topk(items, queries, 20, banned=banned)
    for row, b, t in zip(scores, banned, truth, strict=True):
        masked = row.copy()
        masked[b] = -np.inf
        np.testing.assert_array_equal(t, np.argsort(-masked)[:20])
    monkeypatch.setattr(annindex, "exact_latency", lambda *_a, **_k: np.full(100, 1.0))
    choice = choose_index(items, queries, 0.9, banned, small_catalogue=1000)
    info = choice.info
    assert info.kind in ("ivf", "hnsw") and choice.index is not None
    loaded = load_index(serialize_index(choice.index))
    found = []
    for q, b in zip(queries, banned, strict=True):
        k_fetch = annindex.fetch_depth([20], [b], 3000)
        assert k_fetch == 35
        params = annindex.search_parameters(
            info.kind,
            k_fetch,
            nprobe=info.params.nprobe,
            ef_search=info.params.ef_search,
            nlist=info.params.nlist or 0,
        )
        _, rows = loaded.search(q[None, :], k_fetch, params=params)
        top = rows[0][annindex.kept(rows[0], 20, b)]
        assert not np.isin(top, b).any()
        found.append(top)
    hits = np.mean([len(set(f) & set(t)) / 20 for f, t in zip(found, truth, strict=True)])
    assert info.recall == pytest.approx(hits)
