"""Liveness, readiness, Prometheus metrics and the embedding-spectrum health report."""

# No `from __future__ import annotations`: FastAPI must see the closure values in annotations.

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from service.context import AppContext
from service.errors import error_responses
from service.schemas import HealthResponse, ReadyResponse, SpectrumResponse
from service.settings import Settings
from service.spectrum_view import filter_spectrum, model_spectrum, spectrum_svg, thresholds

_HEALTHZ = b'{"status":"ok"}'


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["health"])
    healthy_min, collapsed_below = settings.healthy_erank_ratio, settings.collapsed_erank_ratio

    @router.get("/healthz", response_model=HealthResponse, summary="Process is alive")
    async def healthz() -> Response:
        """Always 200 while the process runs (also the HTTP-floor endpoint of the benchmarks)."""
        return Response(_HEALTHZ, media_type="application/json")

    @router.get(
        "/readyz",
        response_model=ReadyResponse,
        summary="A model is loaded and indexed",
        responses=error_responses(503),
    )
    async def readyz(request: Request) -> JSONResponse:
        """503 ``model_not_ready`` until the first model is loaded and its index built (or
        loaded from the artifact: ``index_source``)."""
        model = request.app.state.ctx.state.require()
        a = model.arrays
        return JSONResponse(
            {
                "status": "ready",
                "model_version": model.version,
                "index_backend": model.index.backend,
                "index_kind": model.index.kind,
                "index_source": model.index.source,
                "index_recall": model.index.recall,
                "n_users": a.n_users,
                "n_items": a.n_items,
            }
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        m = request.app.state.ctx.metrics
        return Response(m.render(), media_type=m.content_type)

    @router.get(
        "/health/spectrum",
        response_model=SpectrumResponse,
        summary="Embedding-spectrum health of the serving (and previous) model",
        responses={
            200: {"content": {"image/svg+xml": {}}, "description": "JSON, or SVG with format=svg"},
            **error_responses(422, 503),
        },
    )
    async def spectrum(
        request: Request,
        format: Annotated[
            Literal["json", "svg"],
            Query(description="`svg`: plot of σ_k/σ_1 (log scale), current vs previous"),
        ] = "json",
    ) -> Response:
        """Singular values, effective/stable rank, condition number and energy shares of the
        row-normalised user and item embeddings, with a verdict and its thresholds; for a
        spectral-filter model also the singular values of R̃ and the filter's response
        (``filter``; the embeddings are then its low-pass part)."""
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()
        prev = ctx.state.previous_spectrum
        if format == "svg":
            return Response(spectrum_svg(model.spectrum, prev), media_type="image/svg+xml")
        body = model_spectrum(model.spectrum, healthy_min, collapsed_below)
        body["thresholds"] = thresholds(healthy_min, collapsed_below)
        body["previous"] = model_spectrum(prev, healthy_min, collapsed_below) if prev else None
        body["filter"] = filter_spectrum(model)
        return JSONResponse(body)

    return router
