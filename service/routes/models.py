"""GET /models (published versions) and POST /models/{version}/activate (admin rollback)."""

# No `from __future__ import annotations`: FastAPI must see the closure values in annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from contract.artifact import ArtifactInvalid
from service.auth import ADMIN_ERRORS, AdminDep, AuthFirstRoute
from service.context import AppContext
from service.errors import error_responses
from service.schemas import ActivateResponse, ModelsResponse
from service.settings import Settings

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["models"], route_class=AuthFirstRoute)

    @router.get("/models", response_model=ModelsResponse, summary="Published model versions")
    async def list_models(request: Request) -> dict[str, Any]:
        """Versions on disk (oldest first) with their metrics, and which one is current and
        which one this process serves."""
        ctx: AppContext = request.app.state.ctx
        pointer = ctx.registry.pointer()
        serving = ctx.state.serving
        serving_version = serving.version if serving else None
        versions = []
        for v in await run_in_threadpool(ctx.registry.versions):
            info: dict[str, Any] = {
                "version": v,
                "current": v == pointer["version"],
                "previous": v == pointer["previous"],
                "serving": v == serving_version,
                "refused": ctx.state.failed.get(v),
            }
            try:
                manifest = ctx.registry.manifest(v)
            except ArtifactInvalid as e:
                info["refused"] = info["refused"] or str(e)
            else:
                info.update(
                    created_at=manifest.created_at,
                    shape=manifest.shape.to_dict() if manifest.shape is not None else {},
                    metrics=manifest.metrics,
                    config=manifest.config.to_dict(),
                    effective_rank=manifest.spectrum.effective_rank(),
                    trained_on=(
                        manifest.trained_on.to_dict() if manifest.trained_on is not None else None
                    ),
                    model=manifest.model.to_dict(),
                    index=manifest.index.to_dict() if manifest.index is not None else None,
                )
            versions.append(info)
        return {
            "current": pointer["version"],
            "previous": pointer["previous"],
            "serving": serving_version,
            "versions": versions,
        }

    @router.post(
        "/models/{version}/activate",
        response_model=ActivateResponse,
        summary="Serve a published version (rollback); admin",
        dependencies=[AdminDep],
        responses=error_responses(
            *ADMIN_ERRORS,
            (404, "No such version (code unknown_version)"),
            (409, "The version's artifact is invalid (code artifact_invalid)"),
            (422, "Malformed version name (code validation_error)"),
        ),
    )
    async def activate(
        request: Request,
        version: Annotated[str, Path(pattern=VERSION_PATTERN)],
    ) -> dict[str, Any]:
        """Validate the version (checksums, shapes, finite values), build its index, point
        CURRENT at it and serve it. On failure the serving model is unchanged."""
        ctx: AppContext = request.app.state.ctx
        before = ctx.state.serving
        model = await run_in_threadpool(ctx.state.activate, version)
        return {
            "version": version,
            "serving": model.version,
            "previous": before.version if before else None,
        }

    return router
