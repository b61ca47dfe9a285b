"""Artifact format: atomic publish, full validation on load, pointer switching, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import (
    ArtifactInvalid,
    ModelArrays,
    ModelNotFound,
    ModelRegistry,
    read_model_dir,
)


def make_arrays(seed: int = 0, m: int = 6, n: int = 9, d: int = 4) -> ModelArrays:
    rng = np.random.default_rng(seed)
    users = np.array([0, 0, 1, 3, 0, 5, 5])
    items = np.array([2, 1, 8, 0, 2, 3, 4])  # (0, 2) twice: duplicates are dropped
    return ModelArrays.build(
        rng.normal(size=(m, d)),
        rng.normal(size=(n, d)),
        [f"user_{i}" for i in range(m)],
        [f"item_{i}" for i in range(n)],
        (users, items),
    )


def test_build_makes_sorted_deduplicated_csr() -> None:
    a = make_arrays()
    assert a.seen(0).tolist() == [1, 2]
    assert a.seen(1).tolist() == [8]
    assert a.seen(2).tolist() == []
    assert a.seen(5).tolist() == [3, 4]
    assert a.item_popularity.tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 1]
    assert a.user_emb.dtype == np.float32 and a.user_ids.dtype.kind == "U"


def test_publish_then_load_roundtrip(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.current() is None
    with pytest.raises(ModelNotFound):
        reg.load()
    a = make_arrays()
    v = reg.publish(a, config={"objective": "directspec+"}, metrics={"recall@20": 0.5})
    loaded = reg.load()
    assert loaded.version == v == reg.current()
    np.testing.assert_array_equal(loaded.arrays.item_emb, a.item_emb)
    np.testing.assert_array_equal(loaded.arrays.seen_indices, a.seen_indices)
    assert loaded.manifest.config.to_dict() == {"objective": "directspec+"}
    assert loaded.manifest.shape.to_dict() == {"n_users": 6, "n_items": 9, "dim": 4, "n_seen": 6}
    assert not list((tmp_path / "versions").glob(".tmp-*"))


def test_pointer_tracks_previous_and_activate(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(make_arrays(1), config={})
    v2 = reg.publish(make_arrays(2), config={})
    assert reg.pointer() == {"version": v2, "previous": v1}
    reg.activate(v1)
    assert reg.pointer() == {"version": v1, "previous": v2}
    with pytest.raises(ModelNotFound):
        reg.activate("v-does-not-exist")
    with pytest.raises(ModelNotFound):
        reg.activate("../escape")


def test_prune_keeps_newest_and_protects_current(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    versions = [reg.publish(make_arrays(i), config={}, keep=100) for i in range(5)]
    reg.activate(versions[0])
    removed = reg.prune(keep=2)
    assert removed == versions[1:3]
    assert reg.versions() == [versions[0], versions[3], versions[4]]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: (d / "item_emb.npy").write_bytes(b"garbage"), "checksum mismatch"),
        (lambda d: (d / "user_ids.npy").unlink(), "missing user_ids.npy"),
        (lambda d: (d / "manifest.json").write_text("{"), "not valid JSON"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
    ],
)
def test_corrupt_artifact_is_refused(tmp_path: Path, corrupt, message: str) -> None:
    reg = ModelRegistry(tmp_path)
    v = reg.publish(make_arrays(), config={})
    corrupt(tmp_path / "versions" / v)
    with pytest.raises(ArtifactInvalid, match=message):
        reg.load(v)


def test_manifest_shape_and_values_are_checked(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v = reg.publish(make_arrays(), config={})
    mpath = tmp_path / "versions" / v / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shape"]["n_items"] = 10
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactInvalid, match="does not match"):
        read_model_dir(mpath.parent)
    manifest["format_version"] = 99
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactInvalid, match="format_version 99"):
        read_model_dir(mpath.parent)


def test_non_finite_or_inconsistent_arrays_are_never_published(tmp_path: Path) -> None:
    a = make_arrays()
    bad = ModelArrays(**{**a.__dict__, "item_emb": np.full_like(a.item_emb, np.nan)})
    with pytest.raises(ArtifactInvalid, match="NaN or inf"):
        ModelRegistry(tmp_path).publish(bad, config={})
    short = ModelArrays(**{**a.__dict__, "item_ids": a.item_ids[:-1]})
    with pytest.raises(ArtifactInvalid, match="item_ids: length 8, expected 9"):
        ModelRegistry(tmp_path).publish(short, config={})
    dup = ModelArrays(**{**a.__dict__, "user_ids": np.array(["u"] * 6)})
    with pytest.raises(ArtifactInvalid, match="duplicates"):
        ModelRegistry(tmp_path).publish(dup, config={})
    assert ModelRegistry(tmp_path).versions() == []
    assert not list((tmp_path / "versions").glob(".tmp-*"))


def test_half_written_directory_is_invisible(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v = reg.publish(make_arrays(), config={})
    (tmp_path / "versions" / ".tmp-v2-abc").mkdir()
    (tmp_path / "versions" / ".tmp-v2-abc" / "user_emb.npy").write_bytes(b"partial")
    assert reg.versions() == [v]
    assert reg.load().version == v


def test_trained_on_round_trips_through_the_manifest(tmp_path) -> None:
    from contract.manifest import TrainedOn, parse_manifest

    rec = TrainedOn.counted("all", 120, 7, 100, 20)
    assert rec.to_dict() == {
        "pairs": "all",
        "n_pairs": 120,
        "epochs": 7,
        "evaluated_on": {"train_pairs": 100, "test_pairs": 20},
    }
    reg = ModelRegistry(tmp_path)
    a = ModelArrays.build(
        np.ones((2, 2)), np.ones((3, 2)), ["u0", "u1"], ["i0", "i1", "i2"], ([0], [1])
    )
    reg.publish(a, config={}, extra={"trained_on": rec.to_dict()})
    assert reg.load().manifest.trained_on == rec
    # an older manifest has none; a malformed one is refused, naming the field
    assert parse_manifest({}).trained_on is None
    with pytest.raises(ValueError, match="trained_on.pairs"):
        parse_manifest({"trained_on": {"pairs": "some", "n_pairs": 1, "epochs": 1}})
