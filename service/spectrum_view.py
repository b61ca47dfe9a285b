"""Spectrum health: verdicts on the embedding spectrum and an SVG plot (no plotting library).

The verdict uses the effective rank of the row-normalised embeddings divided by the dimension
(``effective_rank_ratio``), users and items separately, and reports the worse one:

- ``healthy``          ratio >= healthy_min (default 0.5: at least half the space is used)
- ``collapsed``        ratio <  collapsed_below (default 0.2; an alignment-only model reaches
                       erank ≈ 8 of 64 = 0.125, complete collapse is 1/d)
- ``partial collapse`` in between (the "incomplete collapse" of BPR/softmax losses)

A random Gaussian table has ratio ≈ 0.9 or more; see docs/method.md#spectrum-and-effective-rank.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape

from service.schemas import Verdict
from service.scoring import BlendScorer, FilterScorer
from service.serving import ServingModel, SpectrumSnapshot

_ORDER: dict[str, int] = {"healthy": 0, "partial collapse": 1, "collapsed": 2}


def verdict(ratio: float, healthy_min: float, collapsed_below: float) -> Verdict:
    """Classify one effective-rank ratio (erank / d, in (0, 1])."""
    if ratio >= healthy_min:
        return "healthy"
    if ratio < collapsed_below:
        return "collapsed"
    return "partial collapse"


def _stats(stats: dict[str, Any]) -> dict[str, Any]:
    out = dict(stats)
    cond = out.get("condition_number")
    if cond is not None and not math.isfinite(cond):
        out["condition_number"] = None  # JSON has no infinity
    return out


def _side(side: dict[str, Any], rows: int, healthy_min: float, collapsed_below: float) -> dict:
    norm = side["normalized"]
    return {
        **_stats(norm),
        "basis": "row_normalized",
        "rows": rows,
        "raw": _stats(side["raw"]),
        "verdict": verdict(norm["effective_rank_ratio"], healthy_min, collapsed_below),
    }


def model_spectrum(
    snap: SpectrumSnapshot, healthy_min: float, collapsed_below: float
) -> dict[str, Any]:
    """The ModelSpectrum body (see service.schemas) for one snapshot."""
    sides = {
        name: _side(snap.spectrum[name], snap.rows[name], healthy_min, collapsed_below)
        for name in ("users", "items", "all")
    }
    worst = max((sides["users"]["verdict"], sides["items"]["verdict"]), key=_ORDER.__getitem__)
    return {"model_version": snap.version, "verdict": worst, **sides}


def filter_spectrum(model: ServingModel) -> dict[str, Any] | None:
    """/health/spectrum's ``filter`` part: R̃'s kept singular values and the filter's
    response, with a blend's weight (None for an embedding model)."""
    scorer, weight = model.scorer, None
    if isinstance(scorer, BlendScorer):
        weight = scorer.index.weight
        scorer = scorer.filter_part
    if not isinstance(scorer, FilterScorer):
        return None
    resp = scorer.filter.response()
    return {
        "kind": "spectral",
        "alpha": scorer.filter.alpha,
        "blend_weight": weight,
        "singular_values": resp["singular_values"],
        "response": {"linear": resp["linear"], "total": resp["total"]},
    }


def thresholds(healthy_min: float, collapsed_below: float) -> dict[str, Any]:
    return {
        "metric": "effective_rank_ratio of the row-normalised embeddings (erank / d), "
        "worse of users and items",
        "healthy_min": healthy_min,
        "collapsed_below": collapsed_below,
    }


# ---- SVG ---------------------------------------------------------------------------------
_W, _H = 420, 300  # one panel, px
_ML, _MR, _MT, _MB = 56, 12, 34, 40  # margins
_FLOOR = 1e-6  # log-scale floor for zero singular values


def _polyline(values: list[float], decades: int, style: str) -> str:
    d = len(values)
    pw, ph = _W - _ML - _MR, _H - _MT - _MB
    pts = []
    for i, v in enumerate(values):
        x = _ML + (pw * i / (d - 1) if d > 1 else pw / 2)
        y = _MT + ph * min(-math.log10(max(v, _FLOOR)) / decades, 1.0)
        pts.append(f"{x:.1f},{y:.1f}")
    return f'<polyline fill="none" {style} points="{" ".join(pts)}"/>'


def _panel(title: str, series: list[tuple[str, list[float], str]], x0: int) -> str:
    lows = [min(v) for _, v, _ in series if v]
    decades = max(1, math.ceil(-math.log10(max(min(lows, default=1.0), _FLOOR))))
    pw, ph = _W - _ML - _MR, _H - _MT - _MB
    d = max((len(v) for _, v, _ in series), default=1)
    parts = [f'<g transform="translate({x0},0)">']
    parts.append(f'<text x="{_ML + pw / 2}" y="20" text-anchor="middle">{escape(title)}</text>')
    parts.append(
        f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
    )
    for e in range(decades + 1):  # one grid line per decade
        y = _MT + ph * e / decades
        parts.append(
            f'<line x1="{_ML}" y1="{y:.1f}" x2="{_ML + pw}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{_ML - 6}" y="{y + 4:.1f}" text-anchor="end">1e-{e}</text>'
        )
    parts.append(
        f'<text x="{_ML}" y="{_H - 22}" text-anchor="middle">1</text>'
        f'<text x="{_ML + pw}" y="{_H - 22}" text-anchor="middle">{d}</text>'
        f'<text x="{_ML + pw / 2}" y="{_H - 6}" text-anchor="middle">index k</text>'
    )
    for _, values, style in series:
        if values:
            parts.append(_polyline(values, decades, style))
    parts.append("</g>")
    return "".join(parts)


def spectrum_svg(current: SpectrumSnapshot, previous: SpectrumSnapshot | None) -> str:
    """Two panels (users, items): σ_k/σ_1 of the row-normalised embeddings, log y axis."""
    series_style = {
        "current": 'stroke="#1f77b4" stroke-width="2"',
        "previous": 'stroke="#888" stroke-width="1.5" stroke-dasharray="5,4"',
    }
    panels = []
    for i, side in enumerate(("users", "items")):
        series = [
            (
                f"current {current.version}",
                current.spectrum[side]["normalized"]["singular_values_normalized"],
                series_style["current"],
            )
        ]
        if previous is not None:
            series.append(
                (
                    f"previous {previous.version}",
                    previous.spectrum[side]["normalized"]["singular_values_normalized"],
                    series_style["previous"],
                )
            )
        panels.append(_panel(f"{side}: normalised singular values", series, i * _W))
    legend = [
        f'<line x1="{_ML}" y1="{_H + 14}" x2="{_ML + 30}" y2="{_H + 14}" '
        f"{series_style['current']}/>"
        f'<text x="{_ML + 36}" y="{_H + 18}">current {escape(current.version)}</text>'
    ]
    if previous is not None:
        legend.append(
            f'<line x1="{_ML + 330}" y1="{_H + 14}" x2="{_ML + 360}" y2="{_H + 14}" '
            f"{series_style['previous']}/>"
            f'<text x="{_ML + 366}" y="{_H + 18}">previous {escape(previous.version)}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * _W}" height="{_H + 28}" '
        f'viewBox="0 0 {2 * _W} {_H + 28}" font-family="sans-serif" font-size="12">'
        f"<title>Embedding spectrum</title>"
        f'<rect width="100%" height="100%" fill="white"/>'
        + "".join(panels)
        + "".join(legend)
        + "</svg>"
    )
