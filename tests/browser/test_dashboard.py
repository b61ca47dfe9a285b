"""The operator's page (GET /) in headless Chromium against the real API and a real worker.

The tests share one server (tests/browser/conftest.py) and run in file order: the rollback test
switches the serving version back and forth, the retrain test publishes a new one, and the last
test takes the full-page screenshot (written to docs/dashboard.png with
SPECREC_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Guard, Server
from tests.service.modelkit import ADMIN_TOKEN

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "dashboard.png"
FINAL = ("succeeded", "failed", "rejected", "cancelled")


@pytest.fixture(autouse=True)
def _page_keeps_its_own_policy(guard: Guard) -> Iterator[None]:
    """The page itself never trips its Content-Security-Policy (nothing inline, nothing
    from elsewhere): a violation would mean a part of it silently does not work."""
    yield
    assert guard.csp_violations == [], guard.csp_violations


def _use_token(page: Any, expect: Any, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-state")).to_have_text("set for this tab")


def _api_message(server: Server, method: str, path: str, token: str | None) -> str:
    """The API's own error message for this admin call (what the page must show)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, server.base + path, headers=headers, json={}, timeout=10)
    assert r.status_code in (401, 403), r.text
    return r.json()["error"]["message"]


def test_page_shows_the_serving_model_its_effective_rank_and_the_spectrum_plot(
    page: Any, server: Server, expect: Any
) -> None:
    ready = server.get("/readyz").json()
    spectrum = server.get("/health/spectrum").json()
    response = page.goto("/")
    assert response.status == 200 and page.url == server.base + "/"
    expect(page.locator("#serving-version")).to_have_text(ready["model_version"])
    expect(page.locator("#serving-shape")).to_have_text(
        f"{ready['n_users']} × {ready['n_items']} × {spectrum['users']['dim']}"
    )
    expect(page.locator("#serving-age")).to_contain_text("ago")
    assert (ready["index_source"], ready["index_recall"]) == ("built at load", 1.0)  # exact
    expect(page.locator("#serving-index")).to_have_text(
        f"{ready['index_kind']} ({ready['index_backend']}, built at load, recall@20 1)"
    )
    expect(page.locator("#serving-metrics")).to_contain_text("recall@20 0.093")
    expect(page.locator("#serving-verdict")).to_have_text(f"spectrum: {spectrum['verdict']}")
    for side in ("users", "items"):
        cell = page.locator(f'#spectrum-table td[data-side="{side}"]')
        expect(cell).to_be_visible()
        assert float(cell.inner_text()) == pytest.approx(spectrum[side]["effective_rank"], rel=1e-3)
    # the plot: an SVG drawn from the JSON, current and previous model, one point per σ_k
    svg = page.locator("#spectrum-svg")
    expect(svg).to_be_visible()
    box = svg.bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] > 100
    current = svg.locator("polyline.series-current")
    previous = svg.locator("polyline.series-previous")
    expect(current).to_have_count(2)
    expect(previous).to_have_count(2)
    for i, side in enumerate(("users", "items")):
        points = current.nth(i).get_attribute("points").split()
        assert len(points) == len(spectrum[side]["singular_values_normalized"])
        prev_points = previous.nth(i).get_attribute("points").split()
        assert len(prev_points) == len(spectrum["previous"][side]["singular_values_normalized"])
    expect(svg).to_contain_text(f"previous {spectrum['previous']['model_version']}")
    # versions: both published models, with their metrics and verdicts
    for version in server.versions:
        expect(page.locator(f'#versions-table tr[data-version="{version}"]')).to_be_visible()
    older = page.locator(f'#versions-table tr[data-version="{server.versions[0]}"]')
    expect(older).to_contain_text("recall@20 0.081")
    expect(older.locator(".badge").first).to_have_text(re.compile("collapse"))
    # a version whose manifest has no spectrum gets no verdict (it read "partial collapse")
    verdict = "v => versionVerdict(v)"
    assert page.evaluate(verdict, {"shape": {"dim": 8}, "effective_rank": {}}) is None
    assert page.evaluate(verdict, {"shape": {}, "effective_rank": {"users": 7.0}}) is None
    thresholds = server.get("/health/spectrum").json()["thresholds"]
    low = thresholds["collapsed_below"] * 8 / 2
    got = page.evaluate(
        verdict, {"shape": {"dim": 8}, "effective_rank": {"users": 8, "items": low}}
    )
    assert got == "collapsed"
    expect(page.locator("#traffic-body")).to_contain_text("Recommendation answers by source")


def test_playground_returns_the_same_items_as_get_recommend(
    page: Any, server: Server, expect: Any
) -> None:
    expected = server.get("/recommend/u3?k=7").json()
    page.goto("/")
    page.fill("#play-user", "u3")
    page.fill("#play-k", "7")
    page.click("#play-form button[type=submit]")
    rows = page.locator("#play-table tbody tr")
    expect(rows).to_have_count(7)
    assert rows.locator("td.item").all_inner_texts() == [it["item_id"] for it in expected["items"]]
    scores = [float(s) for s in rows.locator("td:nth-child(3)").all_inner_texts()]
    assert scores == pytest.approx([it["score"] for it in expected["items"]], rel=1e-4)
    expect(page.locator("#play-version")).to_have_text(expected["model_version"])
    expect(page.locator("#play-origin")).to_contain_text("the user's embedding")
    expect(page.locator("#play-source")).to_contain_text("precomputed")  # k <= PRECOMPUTE_K
    # an unknown user: the API's message; with the fallback: the popular items
    message = server.get("/recommend/nobody-here").json()["error"]["message"]
    page.fill("#play-user", "nobody-here")
    page.click("#play-form button[type=submit]")
    expect(page.locator("#play-msg")).to_contain_text(message)
    expect(rows).to_have_count(0)
    popular = server.get("/recommend/nobody-here?k=7&fallback=popular").json()
    page.check("#play-fallback")
    page.click("#play-form button[type=submit]")
    expect(rows).to_have_count(7)
    assert rows.locator("td.item").all_inner_texts() == [it["item_id"] for it in popular["items"]]
    expect(page.locator("#play-origin")).to_contain_text("popular fallback")


def test_admin_actions_without_or_with_a_wrong_token_are_refused_with_the_apis_message(
    page: Any, server: Server, expect: Any
) -> None:
    jobs_before = server.get("/retrain").json()["jobs"]
    serving_before = server.get("/readyz").json()["model_version"]
    other = next(v for v in server.versions if v != serving_before)
    page.goto("/")
    expect(page.locator("#token-state")).to_contain_text("admin actions will be refused")
    activate = page.locator(f'#versions-table button.activate[data-version="{other}"]')
    for token, status in ((None, "401"), ("not-the-admin-token", "403")):
        if token:
            _use_token(page, expect, token)
        retrain_msg = _api_message(server, "POST", "/retrain", token)
        page.click("#retrain-start")
        expect(page.locator("#jobs-msg")).to_contain_text(f"retrain refused: {status}")
        expect(page.locator("#jobs-msg")).to_contain_text(retrain_msg)
        expect(page.locator("#jobs-msg")).to_have_attribute("role", "alert")
        activate_msg = _api_message(server, "POST", f"/models/{other}/activate", token)
        activate.click()
        expect(page.locator("#versions-msg")).to_contain_text(f"refused: {status}")
        expect(page.locator("#versions-msg")).to_contain_text(activate_msg)
    assert "missing or malformed" in _api_message(server, "POST", "/retrain", None)
    assert "wrong admin token" in _api_message(server, "POST", "/retrain", "x")
    # nothing happened, and the token lives in this tab's sessionStorage only
    assert server.get("/retrain").json()["jobs"] == jobs_before
    assert server.get("/readyz").json()["model_version"] == serving_before
    expect(page.locator("#serving-version")).to_have_text(serving_before)
    stored = page.evaluate("() => sessionStorage.getItem('specrec.admin_token')")
    assert stored == "not-the-admin-token"
    assert page.evaluate("() => [document.cookie, localStorage.length]") == ["", 0]
    assert page.context.cookies() == []
    assert "not-the-admin-token" not in page.url


def test_activate_rolls_back_and_forward_with_the_token(
    page: Any, server: Server, expect: Any
) -> None:
    older, newer = server.versions
    assert server.get("/readyz").json()["model_version"] == newer
    page.goto("/")
    _use_token(page, expect, ADMIN_TOKEN)
    for target, was in ((older, newer), (newer, older)):
        page.click(f'#versions-table button.activate[data-version="{target}"]')
        expect(page.locator("#versions-msg")).to_have_text(f"now serving {target} (was {was})")
        expect(page.locator("#serving-version")).to_have_text(target)
        expect(page.locator(f'#versions-table tr[data-version="{target}"]')).to_have_class(
            "serving-row"
        )
        expect(
            page.locator(f'#versions-table button.activate[data-version="{target}"]')
        ).to_be_disabled()
    assert server.get("/readyz").json()["model_version"] == newer


def test_cancel_is_refused_without_the_token_and_stops_the_job_with_it(
    page: Any, server: Server, expect: Any
) -> None:
    page.goto("/")
    _use_token(page, expect, ADMIN_TOKEN)
    page.fill("#retrain-epochs", "200")
    page.click("#retrain-start")
    expect(page.locator("#jobs-msg")).to_contain_text("queued job")
    row = page.locator("#jobs-table tbody tr").first
    expect(row).to_have_attribute("data-state", "running", timeout=60_000)
    job_id = row.get_attribute("data-job")
    # a second start while it runs: the API's 409, in the page
    page.click("#retrain-start")
    expect(page.locator("#jobs-msg")).to_contain_text(f"409 job_active: job {job_id} is already")
    page.click("#token-forget")
    expect(page.locator("#token-state")).to_contain_text("admin actions will be refused")
    message = _api_message(server, "POST", f"/retrain/{job_id}/cancel", None)
    row.locator("button.cancel").click()
    expect(page.locator("#jobs-msg")).to_contain_text(
        f"cancel refused: 401 unauthorized: {message}"
    )
    assert server.get(f"/retrain/{job_id}").json()["state"] == "running"
    _use_token(page, expect, ADMIN_TOKEN)
    row.locator("button.cancel").click()
    expect(page.locator("#jobs-msg")).to_contain_text(f"job {job_id[:8]}: ")
    expect(row).to_have_attribute("data-state", "cancelled", timeout=60_000)
    expect(row.locator("button.cancel")).to_have_count(0)
    assert server.get(f"/retrain/{job_id}").json()["state"] == "cancelled"
    assert server.get("/readyz").json()["model_version"] == server.versions[1]  # unchanged


def test_retrain_shows_the_job_and_its_progress_until_the_new_version_serves(
    page: Any, server: Server, expect: Any
) -> None:
    authorized: list[str] = []
    page.on(
        "request",
        lambda r: (
            authorized.append(f"{r.method} {r.url}") if "authorization" in r.headers else None
        ),
    )
    page.goto("/")
    _use_token(page, expect, ADMIN_TOKEN)
    page.select_option("#retrain-objective", "directspec+")
    page.select_option("#retrain-dataset", "default")
    page.fill("#retrain-epochs", "4")
    page.check("#retrain-force")
    started = time.monotonic()
    page.click("#retrain-start")
    expect(page.locator("#jobs-msg")).to_contain_text("queued job")
    row = page.locator("#jobs-table tbody tr").first
    expect(row).to_have_attribute("data-state", re.compile("queued|running"))
    job_id = row.get_attribute("data-job")
    assert job_id and re.fullmatch(r"[0-9a-f]{32}", job_id)
    row = page.locator(f'#jobs-table tr[data-job="{job_id}"]')
    seen: list[tuple[str, str]] = []  # (state, progress text) as the page showed them
    while time.monotonic() - started < 120:
        state = row.get_attribute("data-state") or ""
        progress = row.locator("td.progress").inner_text()
        if not seen or seen[-1] != (state, progress):
            seen.append((state, progress))
        if state in FINAL:
            break
        time.sleep(0.1)
    print("the page showed:", seen)
    assert seen[-1][0] == "succeeded", seen
    # the evaluation run ("training"), then the refit on every pair, each counting its epochs
    runs: dict[str, list[int]] = {"training": [], "refit on every pair": []}
    for state, text in seen:
        if state == "running" and (m := re.search(r"epoch (\d+) / 4", text)):
            stage = "refit on every pair" if "refit on every pair" in text else "training"
            runs[stage].append(int(m.group(1)))
    epochs = runs["training"]
    assert epochs and min(epochs) < 4, f"no live progress while the job ran: {seen}"
    assert epochs == sorted(epochs) and runs["refit on every pair"] == sorted(
        runs["refit on every pair"]
    ), seen
    job = server.get(f"/retrain/{job_id}").json()
    assert job["state"] == "succeeded" and job["params"]["epochs"] == 4
    new_version = job["model_version"]
    expect(row).to_contain_text(new_version)
    expect(row.locator("td").nth(6)).to_contain_text(
        "passed" if job["result"]["gate"]["passed"] else "forced"
    )
    expect(row.locator("td").nth(5)).to_contain_text("recall@")
    expect(row.locator("button.cancel")).to_have_count(0)
    # the watcher hot-swaps the new model in; the page follows without a reload
    expect(page.locator("#serving-version")).to_have_text(new_version, timeout=30_000)
    expect(page.locator("#serving-shape")).to_have_text(re.compile(r"^3,000 × 2,000 × \d+$"))
    expect(page.locator(f'#versions-table tr[data-version="{new_version}"]')).to_have_class(
        "serving-row"
    )
    assert server.get("/readyz").json()["model_version"] == new_version
    # the token went only to the admin call, in the Authorization header
    assert authorized == [f"POST {server.base}/retrain"], authorized


def test_full_page_screenshot(page: Any, server: Server, expect: Any, tmp_path: Path) -> None:
    """The picture in README.md: written to docs/ only with SPECREC_UPDATE_SCREENSHOT=1."""
    user = next(
        u for u in ("user_7", "u3") if server.get(f"/recommend/{u}?k=10").status_code == 200
    )
    page.goto("/")
    _use_token(page, expect, ADMIN_TOKEN)
    page.fill("#play-user", user)
    page.click("#play-form button[type=submit]")
    expect(page.locator("#play-table tbody tr")).to_have_count(10)
    expect(page.locator("#spectrum-svg polyline.series-current")).to_have_count(2)
    expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
    page.wait_for_timeout(300)  # let the progress bars' width transition finish
    out = SCREENSHOT if os.environ.get("SPECREC_UPDATE_SCREENSHOT") == "1" else tmp_path / "d.png"
    png = page.screenshot(path=str(out), full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
