"""GET /similar/{item_id}: nearest items by inner product of item embeddings."""

# No `from __future__ import annotations`: FastAPI must see the closure values (settings)
# used in the parameter annotations.

from typing import Any

from fastapi import APIRouter, Request

from service.context import AppContext
from service.errors import UnknownItem, UnknownUser, error_responses
from service.jsonresp import FastJSONResponse
from service.routes._params import (
    openapi_path_id,
    openapi_query,
    path_id,
    query_id,
    query_id_set,
    query_int,
    query_params,
)
from service.routes.recommend import add_candidate_fields, candidate_params
from service.schemas import ID_SCHEMA, SimilarResponse
from service.settings import Settings


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["recommend"])
    max_k = settings.max_k

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
                openapi_query(
                    "k",
                    {"type": "integer", "minimum": 1, "maximum": max_k},
                    "Number of items",
                    settings.default_k,
                ),
                openapi_query(
                    "user_id",
                    ID_SCHEMA,
                    "Leave out this user's seen items (train and held-out pairs) and those "
                    "ingested since (404 `unknown_user` if neither is known)",
                ),
                *candidate_params(settings),
            ]
        },
    )
    async def similar(request: Request) -> FastJSONResponse:
        """The item itself is never returned."""
        item_id = path_id(request, "item_id")
        qp = query_params(request)
        k = query_int(qp, "k", settings.default_k, 1, max_k)
        user_id = query_id(qp, "user_id")
        include = query_id_set(qp, "include", settings.max_exclude)
        offset = query_int(qp, "offset", 0, 0, max_k - 1)
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
            search=ctx.batcher.search,
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
