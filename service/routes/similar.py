"""GET /similar/{item_id}: nearest items by inner product of item embeddings."""

# No `from __future__ import annotations`: FastAPI must see the closure values (settings)
# used in the parameter annotations.

from typing import Any

from fastapi import APIRouter, Request

from service.context import AppContext
from service.errors import UnknownItem, UnknownUser, error_responses
from service.jsonresp import FastJSONResponse
from service.routes._params import hot_params, openapi_path_id, path_id, query_params
from service.routes.recommend import add_candidate_fields
from service.schemas import SimilarResponse
from service.settings import Settings


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["recommend"])
    max_k = settings.max_k
    p = hot_params(settings)  # the parameters GET /recommend shares are defined once

    @router.get(
        "/similar/{item_id}",
        response_model=SimilarResponse,
        summary="Items nearest to an item",
        responses=error_responses(
            (404, "Unknown item (code unknown_item) or user (code unknown_user)"), 422, 503
        ),
        openapi_extra={
            "parameters": [
                openapi_path_id("item_id"),
                p.k.openapi(),
                p.user_id.openapi(),
                p.include.openapi(),
                p.offset.openapi(),
            ]
        },
    )
    async def similar(request: Request) -> FastJSONResponse:
        """The item itself is never returned."""
        item_id = path_id(request, "item_id")
        qp = query_params(request)
        k = p.k.parse(qp)
        user_id = p.user_id.parse(qp)
        include = p.include.parse(qp)
        offset = p.offset.parse(qp)
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()
        fresh = ctx.new_items(model.trained_seq) if user_id is not None else None
        answer = await model.similar(
            item_id,
            k,
            include=include,
            offset=offset,
            user_id=user_id,
            user_new_items=(fresh.get(user_id, ()) if user_id and fresh else ()),
            max_depth=max_k,
        )
        if not answer.answered:
            if item_id not in model.item_rows:
                raise UnknownItem(f"unknown item_id {item_id!r}")
            raise UnknownUser(f"unknown user_id {user_id!r}")
        body: dict[str, Any] = {
            "item_id": item_id,
            "model_version": model.version,
            "k": k,
            "exact": model.index.exact,
            "items": model.items_json(answer.ranked, offset),
        }
        unknown = model.item_rows_of(include)[1] if include else []
        add_candidate_fields(body, answer.short, include, unknown)
        return FastJSONResponse(body)

    return router
