"""/healthz, /readyz, /metrics and /health/spectrum (values, verdicts, SVG)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from contract.spectrum import embedding_spectrum
from service.app import create_app
from service.spectrum_view import verdict
from tests.service.modelkit import make_model, publish, with_top_lists


def collapsed_model(seed: int = 0, m: int = 120, n: int = 150, d: int = 32):
    """Every embedding ≈ ±(one direction) + 1e-3 noise: normalised erank ≈ 1 of 32."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d)
    u = np.outer(rng.standard_normal(m), v) + 1e-3 * rng.standard_normal((m, d))
    it = np.outer(rng.standard_normal(n), v) + 1e-3 * rng.standard_normal((n, d))
    return make_model(user_emb=u, item_emb=it, seed=seed)


def partial_model(seed: int = 0, m: int = 120, n: int = 150, d: int = 32):
    """10 strong directions out of 32: normalised erank ≈ 10, ratio ≈ 0.3."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(d) < 10, 1.0, 0.01)
    return make_model(
        user_emb=rng.standard_normal((m, d)) * scale,
        item_emb=rng.standard_normal((n, d)) * scale,
        seed=seed,
    )


def gaussian_model(seed: int = 0, m: int = 120, n: int = 150, d: int = 32):
    return make_model(n_users=m, n_items=n, dim=d, seed=seed)


def numpy_erank(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Singular values of the row-normalised matrix and exp(entropy of sv/sum), via np.svd."""
    x = x.astype(np.float64)
    sv = np.linalg.svd(x / np.linalg.norm(x, axis=1, keepdims=True), compute_uv=False)
    p = sv / sv.sum()
    p = p[p > 0]
    return sv, float(np.exp(-(p * np.log(p)).sum()))


def test_healthz_and_readyz_before_and_after_a_model_exists(settings):
    with TestClient(create_app(settings)) as c:
        assert (c.get("/healthz").status_code, c.get("/healthz").json()) == (200, {"status": "ok"})
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "model_not_ready"
        model = make_model()
        version = publish(settings.registry_root, model)
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/readyz").json() == {
            "status": "ready",
            "model_version": version,
            "index_backend": "numpy",
            "index_kind": "flat",
            "index_source": "built at load",
            "index_recall": 1.0,
            "n_users": 30,
            "n_items": 50,
        }


def test_spectrum_values_equal_trainer_spectrum_and_numpy_svd(settings):
    model = gaussian_model()
    version = publish(settings.registry_root, model)
    a = model.arrays
    with TestClient(create_app(settings)) as c:
        body = c.get("/health/spectrum").json()
    want = embedding_spectrum(a.user_emb, a.item_emb)
    assert body["model_version"] == version and body["previous"] is None
    for side, mat in (("users", a.user_emb), ("items", a.item_emb)):
        got, norm, raw = body[side], want[side]["normalized"], want[side]["raw"]
        assert got["basis"] == "row_normalized" and got["rows"] == len(mat) and got["dim"] == 32
        for key in (
            "effective_rank",
            "effective_rank_ratio",
            "stable_rank",
            "top1_energy",
            "top10_energy",
            "condition_number",
        ):
            assert got[key] == pytest.approx(norm[key], rel=1e-9), key
            assert got["raw"][key] == pytest.approx(raw[key], rel=1e-9), key
        np.testing.assert_allclose(got["singular_values"], norm["singular_values"], rtol=1e-9)
        np.testing.assert_allclose(
            got["singular_values_normalized"], norm["singular_values_normalized"], rtol=1e-9
        )
        np.testing.assert_allclose(got["raw"]["singular_values"], raw["singular_values"], rtol=1e-9)
        # and independently of contract.spectrum: numpy's SVD and the erank formula
        sv, erank = numpy_erank(mat)
        np.testing.assert_allclose(got["singular_values"], sv, rtol=1e-6)
        assert got["effective_rank"] == pytest.approx(erank, rel=1e-6)
        assert got["stable_rank"] == pytest.approx((sv**2).sum() / sv[0] ** 2, rel=1e-6)
        assert got["condition_number"] == pytest.approx(sv[0] / sv[-1], rel=1e-6)
        assert got["top1_energy"] == pytest.approx(sv[0] ** 2 / (sv**2).sum(), rel=1e-6)
    assert body["all"]["rows"] == 120 + 150
    assert body["thresholds"] == {
        "metric": "effective_rank_ratio of the row-normalised embeddings (erank / d), "
        "worse of users and items",
        "healthy_min": 0.5,
        "collapsed_below": 0.2,
    }


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (gaussian_model, "healthy"),
        (partial_model, "partial collapse"),
        (collapsed_model, "collapsed"),
    ],
)
def test_verdicts(settings, builder, expected):
    model = builder()
    publish(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        body = c.get("/health/spectrum").json()
    assert body["verdict"] == expected
    assert body["users"]["verdict"] == body["items"]["verdict"] == expected
    ratio = numpy_erank(model.arrays.item_emb)[1] / 32
    assert body["items"]["effective_rank_ratio"] == pytest.approx(ratio, rel=1e-6)
    if expected == "collapsed":
        assert body["items"]["effective_rank"] < 2.0  # rank-1 plus 1e-3 noise


def test_verdict_thresholds_are_inclusive_as_documented():
    assert verdict(0.5, 0.5, 0.2) == "healthy"
    assert verdict(0.4999, 0.5, 0.2) == "partial collapse"
    assert verdict(0.2, 0.5, 0.2) == "partial collapse"
    assert verdict(0.1999, 0.5, 0.2) == "collapsed"


def test_previous_model_is_reported_after_a_swap_and_at_startup(settings):
    v1 = publish(settings.registry_root, collapsed_model())
    with TestClient(create_app(settings)) as c:
        v2 = publish(settings.registry_root, gaussian_model(seed=3))
        deadline = time.monotonic() + 10
        while c.get("/readyz").json()["model_version"] != v2 and time.monotonic() < deadline:
            time.sleep(0.02)
        body = c.get("/health/spectrum").json()
        assert (body["model_version"], body["verdict"]) == (v2, "healthy")
        assert (body["previous"]["model_version"], body["previous"]["verdict"]) == (v1, "collapsed")
    with TestClient(create_app(settings)) as c:  # a fresh process finds v1 via CURRENT.previous
        body = c.get("/health/spectrum").json()
        assert (body["model_version"], body["previous"]["model_version"]) == (v2, v1)


def test_a_previous_model_with_its_spectrum_in_the_manifest_is_not_loaded(settings, monkeypatch):
    """At startup the previous model's spectrum comes from its manifest when the trainer wrote
    it whole: its arrays are neither read nor validated (at 10^6 x 10^6 that is ~1 GB of
    pages and, for an artifact without a spectrum, GBs of temporaries)."""
    old = collapsed_model()
    want = embedding_spectrum(old.arrays.user_emb, old.arrays.item_emb)
    v1 = publish(settings.registry_root, old, spectrum=want)
    v2 = publish(settings.registry_root, gaussian_model(seed=3))
    loads: list[str | None] = []
    real_load = ModelRegistry.load

    def counting_load(self, version=None, **kw):
        loads.append(version)
        return real_load(self, version, **kw)

    monkeypatch.setattr(ModelRegistry, "load", counting_load)
    with TestClient(create_app(settings)) as c:
        body = c.get("/health/spectrum").json()
    assert (body["model_version"], body["previous"]["model_version"]) == (v2, v1)
    assert body["previous"]["verdict"] == "collapsed"
    got = body["previous"]["users"]["effective_rank"]
    assert got == pytest.approx(want["users"]["normalized"]["effective_rank"], rel=1e-9)
    assert v1 not in loads and v2 in loads


def test_spectrum_svg_is_xml_with_current_and_previous_curves(settings):
    publish(settings.registry_root, collapsed_model())
    publish(settings.registry_root, gaussian_model(seed=3))
    with TestClient(create_app(settings)) as c:
        r = c.get("/health/spectrum?format=svg")
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/svg+xml"
        root = ET.fromstring(r.text)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
        assert len(lines) == 4  # users and items, current and previous
        points = [p.split(",") for p in lines[0].attrib["points"].split()]
        assert len(points) == 32  # one point per singular value
        # σ_1/σ_1 = 1 is at the top of the plot, the smaller values below it
        ys = [float(y) for _, y in points]
        assert ys[0] == min(ys)
        assert c.get("/health/spectrum?format=png").status_code == 422


def test_metrics_exposition(settings):
    model = gaussian_model()
    version = publish(settings.registry_root, with_top_lists(model, 100))  # as trained
    with TestClient(create_app(settings)) as c:
        c.get("/recommend/u0")
        c.get("/recommend/u1")
        c.get("/recommend/nobody")
        c.get("/no/such/route")
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    lines = set(text.splitlines())
    assert f'specrec_model_info{{version="{version}"}} 1.0' in lines
    assert "specrec_index_items 150.0" in lines
    assert (
        'specrec_http_requests_total{method="GET",route="/recommend/{user_id}",status="200"} 2.0'
        in lines
    )
    assert (
        'specrec_http_requests_total{method="GET",route="/recommend/{user_id}",status="404"} 1.0'
        in lines
    )
    assert 'specrec_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in lines
    assert (
        'specrec_http_request_duration_seconds_count{method="GET",route="/recommend/{user_id}"} 3.0'
        in lines
    )
    erank = numpy_erank(model.arrays.item_emb)[1]
    got = [ln for ln in lines if ln.startswith('specrec_model_effective_rank{side="items"}')]
    assert float(got[0].split()[-1]) == pytest.approx(erank, rel=1e-6)
    # u0 and u1 came from the precomputed lists: no search ran
    assert 'specrec_recommend_answers_total{source="precomputed"} 2.0' in lines
    assert "specrec_search_calls_total 0.0" in lines and "specrec_model_swaps_total 1.0" in lines
    assert not [ln for ln in lines if "_created" in ln]
    age = [ln for ln in lines if ln.startswith("specrec_model_age_seconds ")]
    assert 0 <= float(age[0].split()[-1]) < 600
