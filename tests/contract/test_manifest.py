"""The manifest as a typed model: what the trainer writes reads back field by field, keys it
does not name survive (older and newer artifacts load), and ``trained_seq`` has one rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ArtifactInvalid, ModelRegistry
from contract.manifest import Manifest, parse_manifest
from contract.spectrum import embedding_spectrum
from tests.contract.test_artifact import make_arrays


def test_a_published_manifest_reads_back_typed_and_unchanged(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    a = make_arrays()
    spectrum = embedding_spectrum(a.user_emb, a.item_emb)
    config = {"objective": "directspec+", "encoder": "lightgcn", "lr": 180.0, "ks": [5, 20]}
    version = reg.publish(
        a,
        config=config,
        metrics={"recall@20": 0.25, "n_users": 6},
        spectrum=spectrum,
        dataset_fingerprint="fp",
        extra={"dataset": "tiny", "ingested": {"rows": 3, "max_seq": 17}},
    )
    on_disk = json.loads((tmp_path / "versions" / version / "manifest.json").read_text())
    m = reg.load().manifest
    assert m == reg.manifest(version)
    assert (m.version, m.dataset, m.dataset_fingerprint) == (version, "tiny", "fp")
    assert m.created_unix == on_disk["created_unix"] and m.created_at == on_disk["created_at"]
    assert (m.shape.n_users, m.shape.n_items, m.shape.dim, m.shape.n_seen) == (6, 9, 4, 6)
    assert (m.config.objective, m.config.encoder) == ("directspec+", "lightgcn")
    assert m.config.to_dict() == config  # the fields it does not name are kept
    assert m.metrics == {"recall@20": 0.25, "n_users": 6}
    assert isinstance(m.metrics["n_users"], int)  # not turned into 6.0 on /models
    assert m.spectrum.is_full()
    assert (
        m.spectrum.all.normalized.effective_rank == spectrum["all"]["normalized"]["effective_rank"]
    )
    assert m.spectrum.effective_rank() == {
        side: spectrum[side]["normalized"]["effective_rank"] for side in ("users", "items")
    }
    assert m.trained_seq == 17 and m.ingested.rows == 3
    assert set(m.files) == set(on_disk["files"])
    assert m.files["user_emb.npy"].sha256 == on_disk["files"]["user_emb.npy"]["sha256"]
    # the typed model is the on-disk JSON, key for key (condition numbers may be inf)
    assert json.dumps(m.to_dict(), sort_keys=True) == json.dumps(on_disk, sort_keys=True)


def test_keys_it_does_not_name_are_kept_and_older_artifacts_load(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    version = reg.publish(make_arrays(), config={"objective": "bpr"})
    path = tmp_path / "versions" / version / "manifest.json"
    raw = json.loads(path.read_text())
    # an older artifact: no spectrum, metrics, training, ingested or created_unix; a newer
    # one: keys this code does not know, at the top and inside parts
    for key in ("spectrum", "metrics", "created_unix", "dataset_fingerprint"):
        raw.pop(key)
    raw["model_kind"] = "future"
    raw["shape"]["n_future"] = 2
    raw["config"]["future_knob"] = [1, 2]
    path.write_text(json.dumps(raw))
    m = reg.load().manifest
    assert m.model_extra == {"model_kind": "future"}
    assert m.shape.to_dict()["n_future"] == 2 and m.config.to_dict()["future_knob"] == [1, 2]
    assert m.created_unix is None and m.metrics == {} and m.training is None
    assert not m.spectrum.is_full() and m.spectrum.effective_rank() == {}
    assert m.trained_seq == 0


@pytest.mark.parametrize(
    ("ingested", "seq"),
    [
        ({"rows": 9, "max_seq": 41}, 41),
        ({"max_seq": 0}, 0),
        ({"rows": 2}, 0),
        ({"max_seq": True}, 0),  # a bool is no seq
        ({"max_seq": "41"}, 0),
        ({"max_seq": 41.0}, 0),
        ({"max_seq": -1}, 0),
        ({"max_seq": None}, 0),
        (None, 0),
    ],
)
def test_trained_seq_has_one_rule(ingested: object, seq: int) -> None:
    data = {} if ingested is None else {"ingested": ingested}
    assert parse_manifest(data).trained_seq == seq


def test_a_partial_spectrum_is_not_full_but_its_ranks_are_read() -> None:
    m = parse_manifest({"spectrum": {"users": {"normalized": {"effective_rank": 3.5}}}})
    assert not m.spectrum.is_full()
    assert m.spectrum.effective_rank() == {"users": 3.5}
    assert Manifest().spectrum.effective_rank() == {}


def test_a_malformed_manifest_is_an_invalid_artifact(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    version = reg.publish(make_arrays(), config={})
    path = tmp_path / "versions" / version / "manifest.json"
    raw = json.loads(path.read_text())
    raw["shape"]["dim"] = "four"
    raw["metrics"] = {"recall@20": "high"}
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactInvalid, match=r"shape\.dim.*metrics\.recall@20") as e:
        reg.load()
    assert version in str(e.value)
    with pytest.raises(ArtifactInvalid, match="unreadable manifest: invalid manifest: shape.dim"):
        reg.manifest(version)
    with pytest.raises(ValueError, match="manifest: Input should be a valid dictionary"):
        parse_manifest([1, 2])


def test_an_infinite_condition_number_round_trips(tmp_path: Path) -> None:
    """A rank-deficient embedding has condition number inf; written as JSON Infinity."""
    reg = ModelRegistry(tmp_path)
    a = make_arrays()
    user_emb = np.zeros_like(a.user_emb)
    user_emb[:, 0] = 1.0
    spectrum = embedding_spectrum(user_emb, a.item_emb)
    reg.publish(a, config={}, spectrum=spectrum)
    m = reg.load().manifest
    assert math.isinf(m.spectrum.users.raw.condition_number)
