"""GET /similar/{item_id}: nearest items by inner product of item embeddings."""

# No `from __future__ import annotations`: FastAPI must see the closure values (settings)
# used in the parameter annotations.

from fastapi import APIRouter, Request

from service.context import AppContext
from service.errors import UnknownItem, error_responses
from service.jsonresp import FastJSONResponse
from service.routes._params import openapi_path_id, openapi_query, path_id, query_int
from service.schemas import SimilarResponse
from service.settings import Settings


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["recommend"])

    @router.get(
        "/similar/{item_id}",
        response_model=SimilarResponse,
        summary="Items nearest to an item",
        responses=error_responses((404, "Unknown item (code unknown_item)"), 422, 503),
        openapi_extra={
            "parameters": [
                openapi_path_id("item_id"),
                openapi_query(
                    "k",
                    {"type": "integer", "minimum": 1, "maximum": settings.max_k},
                    "Number of items",
                    settings.default_k,
                ),
            ]
        },
    )
    async def similar(request: Request) -> FastJSONResponse:
        """The item itself is never returned."""
        item_id = path_id(request, "item_id")
        k = query_int(request.query_params, "k", settings.default_k, 1, settings.max_k)
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()
        answer = await model.similar(item_id, k, search=ctx.batcher.search)
        if not answer.answered:
            raise UnknownItem(f"unknown item_id {item_id!r}")
        return FastJSONResponse(
            {
                "item_id": item_id,
                "model_version": model.version,
                "k": k,
                "exact": model.index.exact,
                "items": model.items_json(answer.ranked),
            }
        )

    return router
