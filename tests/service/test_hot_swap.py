"""Watcher, hot swap under load, refusal of corrupt/half-written artifacts, and the lifespan."""

from __future__ import annotations

import logging
import shutil
import threading
import time

import numpy as np
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from service.app import create_app
from tests.service.modelkit import Model, make_model, publish


def top_ids(model: Model, user: int, k: int) -> list[str]:
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    order = [r for r in np.argsort(-scores, kind="stable").tolist() if r not in model.seen[user]]
    return [f"i{r}" for r in order[:k]]


def wait_for_version(client: TestClient, version: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200 and r.json()["model_version"] == version:
            return
        time.sleep(0.02)
    raise AssertionError(f"still not serving {version}: {client.get('/readyz').json()}")


def test_hot_swap_under_concurrent_load_has_zero_failures(settings):
    m1, m2 = make_model(seed=1, n_items=400), make_model(seed=2, n_items=400)
    v1 = publish(settings.registry_root, m1)
    models = {v1: m1}
    stop = threading.Event()
    failures: list[str] = []
    seen_versions: list[list[str]] = [[] for _ in range(6)]

    with TestClient(create_app(settings)) as c:

        def hammer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                user = (worker * 7 + i) % 30
                i += 1
                r = c.get(f"/recommend/u{user}?k=10")
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                seen_versions[worker].append(body["model_version"])
                # the answer comes entirely from the version it names (no half-swapped model)
                model = models.get(body["model_version"])
                if model is None or [x["item_id"] for x in body["items"]] != top_ids(
                    model, user, 10
                ):
                    failures.append(f"inconsistent answer for u{user} from {body['model_version']}")

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        v2 = ModelRegistry(settings.registry_root).publish(m2.arrays, config={}, activate=False)
        models[v2] = m2
        ModelRegistry(settings.registry_root).activate(v2)
        wait_for_version(c, v2)
        time.sleep(0.3)  # keep hammering the new model for a while
        stop.set()
        for t in threads:
            t.join()

    assert failures == []
    for versions in seen_versions:
        assert versions and versions[-1] == v2
        switch = versions.index(v2)
        assert set(versions[:switch]) <= {v1} and set(versions[switch:]) == {v2}  # no flapping
    assert any(v1 in versions for versions in seen_versions)


def _flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_artifact_is_refused_once_and_the_old_model_keeps_serving(settings, caplog):
    registry = ModelRegistry(settings.registry_root)
    v1 = publish(settings.registry_root, make_model(seed=1))
    with TestClient(create_app(settings)) as c, caplog.at_level(logging.ERROR):
        bad = registry.publish(make_model(seed=2).arrays, config={}, activate=False)
        _flip_byte(registry.versions_dir / bad / "user_emb.npy")
        registry.activate(bad, verify=False)  # CURRENT now names a corrupt version
        state = c.app.state.ctx.state
        watcher = c.app.state.ctx.watcher
        deadline = time.monotonic() + 10
        while bad not in state.failed and time.monotonic() < deadline:
            time.sleep(0.02)
        polls = watcher.polls
        while watcher.polls < polls + 5:  # several more polls: not retried
            time.sleep(0.02)
        assert state.load_failures == 1
        assert "checksum mismatch for user_emb.npy" in state.failed[bad]
        refusals = [r for r in caplog.records if "refusing model" in r.getMessage()]
        assert len(refusals) == 1
        assert bad in refusals[0].getMessage() and f"still serving {v1}" in refusals[0].getMessage()
        assert c.get("/recommend/u0").json()["model_version"] == v1
        assert "specrec_model_load_failures_total 1.0" in c.get("/metrics").text
        # a good version published afterwards is picked up
        v3 = publish(settings.registry_root, make_model(seed=3))
        wait_for_version(c, v3)


def test_half_written_version_is_refused_then_served_once_complete(settings):
    registry = ModelRegistry(settings.registry_root)
    v1 = publish(settings.registry_root, make_model(seed=1))
    staged = registry.publish(make_model(seed=2).arrays, config={}, activate=False)
    # simulate a writer that bypassed the registry: CURRENT points at a directory still
    # being filled (no manifest yet, one array missing)
    full = registry.root / "staging"
    shutil.move(registry.versions_dir / staged, full)
    half = registry.versions_dir / "v-half"
    half.mkdir()
    shutil.copy(full / "user_emb.npy", half / "user_emb.npy")
    registry.activate("v-half", verify=False)
    with TestClient(create_app(settings)) as c:
        state = c.app.state.ctx.state
        assert c.get("/readyz").json()["model_version"] == v1  # startup skipped the half model
        assert "no manifest.json" in state.failed["v-half"]
        # the writer finishes: the directory changed, so it is tried again and served
        for f in full.iterdir():
            shutil.copy(f, half / f.name)
        wait_for_version(c, "v-half")  # the registry's name, whatever the manifest says
        polls = c.app.state.ctx.watcher.polls
        while c.app.state.ctx.watcher.polls < polls + 3:
            time.sleep(0.02)
        assert state.load_failures == 1
        assert c.app.state.ctx.metrics.swaps._value.get() == 2  # v1, then v-half; no reloads
        assert staged != "v-half"


def test_lifespan_loads_at_startup_and_stops_threads_at_shutdown(settings, published):
    app = create_app(settings)
    ctx = app.state.ctx
    assert ctx.state.serving is None and not ctx.watcher.running and not ctx.batcher.running
    with TestClient(app) as c:
        # loaded before the first request is accepted, no polling needed
        assert ctx.state.serving is not None and ctx.state.serving.version == published
        assert ctx.watcher.running and ctx.batcher.running
        assert c.get("/readyz").status_code == 200
    assert not ctx.watcher.running and not ctx.batcher.running
    assert ctx.state.serving is None


def test_watch_disabled_means_no_watcher_thread(settings, published):
    app = create_app(settings.model_copy(update={"watch": False}))
    with TestClient(app) as c:
        assert not app.state.ctx.watcher.running
        v2 = publish(settings.registry_root, make_model(seed=9))
        time.sleep(0.2)
        assert c.get("/readyz").json()["model_version"] == published != v2


def test_lifespan_hooks_run_after_the_model_loads_and_exit_before_release(settings, published):
    from contextlib import asynccontextmanager

    events = []

    @asynccontextmanager
    async def hook(app):
        events.append(("enter", app.state.ctx.state.serving.version))
        yield
        events.append(("exit", app.state.ctx.state.serving.version))

    with TestClient(create_app(settings, lifespan_hooks=[hook])):
        events.append(("serving", None))
    assert events == [("enter", published), ("serving", None), ("exit", published)]
