"""GET /recommend/{user_id} and POST /recommend (batch)."""

# No `from __future__ import annotations`: FastAPI must see the closure values (settings)
# used in the parameter annotations.

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.context import AppContext
from service.errors import UnknownUser, error_responses
from service.jsonresp import FastJSONResponse
from service.routes._params import (
    openapi_id_list,
    openapi_path_id,
    openapi_query,
    path_id,
    query_bool,
    query_choice,
    query_id_list,
    query_int,
)
from service.schemas import BatchRecommendResponse, Fallback, JsonId, RecommendResponse, json_int
from service.serving import ServingModel
from service.settings import Settings
from service.topk import Ranked

_NO_ROWS = np.empty(0, dtype=np.int64)


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["recommend"])
    max_k, default_k = settings.max_k, settings.default_k

    class BatchRecommendRequest(BaseModel):
        """Recommendations for many users with one index search."""

        model_config = ConfigDict(extra="forbid", strict=True)

        user_ids: Annotated[list[JsonId], Field(min_length=1, max_length=settings.max_batch_users)]
        """Users to answer, in order; unknown ones are reported per user (the batch succeeds)."""
        k: json_int(1, max_k) = default_k
        exclude_seen: bool = True
        """Drop each user's training items."""
        exclude: Annotated[list[JsonId], Field(max_length=settings.max_exclude)] = []
        """Item ids excluded for every user; unknown ids are ignored and listed back."""
        fallback: Fallback | None = None
        """``popular``: answer unknown users with the most popular items instead of an error."""

    def _rows_of_exclude(model: ServingModel, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        return model.item_rows_of(ids) if ids else (_NO_ROWS, [])

    def _fallback(ctx: AppContext, model: ServingModel, k: int, banned: np.ndarray) -> Ranked:
        ctx.metrics.fallbacks.labels("popular").inc()
        ctx.metrics.answers.labels("fallback").inc()
        return model.popular(k, banned)

    recommend_params = [
        openapi_query(
            "k", {"type": "integer", "minimum": 1, "maximum": max_k}, "Number of items", default_k
        ),
        openapi_query("exclude_seen", {"type": "boolean"}, "Drop the user's training items", True),
        openapi_id_list(
            "exclude",
            settings.max_exclude,
            "Item ids to drop. Unknown ids are ignored and listed in `unknown_exclude`.",
        ),
        openapi_query(
            "fallback",
            {"type": "string", "enum": ["popular"]},
            "`popular`: answer an unknown user with the most popular items",
        ),
    ]

    @router.get(
        "/recommend/{user_id}",
        response_model=RecommendResponse,
        summary="Top-k items for one user",
        responses=error_responses((404, "Unknown user (code unknown_user)"), 422, 503),
        openapi_extra={"parameters": [openapi_path_id("user_id"), *recommend_params]},
    )
    async def recommend(request: Request) -> FastJSONResponse:
        """Seen items are excluded by default; scores are inner products, best first.
        (Parameters are parsed by service.routes._params: this is the hot path.)"""
        user_id = path_id(request, "user_id")
        qp = request.query_params
        k = query_int(qp, "k", default_k, 1, max_k)
        exclude_seen = query_bool(qp, "exclude_seen", True)
        exclude = query_id_list(qp, "exclude", settings.max_exclude)
        fallback = query_choice(qp, "fallback", ("popular",))
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()  # the one read of the serving model for this request
        excl, unknown_excl = _rows_of_exclude(model, exclude)
        row = model.user_rows.get(user_id)
        used_fallback = None
        if row is None:
            if fallback != "popular":
                raise UnknownUser(
                    f"unknown user_id {user_id!r} (add fallback=popular for popular items)"
                )
            ranked, used_fallback = _fallback(ctx, model, k, excl), "popular"
        else:
            lists = model.top_lists
            found = lists.answer(row, k, excl) if lists is not None and exclude_seen else None
            if found is not None:
                ranked = found  # a lookup: no search, no thread hop
                ctx.metrics.answers.labels("precomputed").inc()
            else:
                banned = model.banned_rows(row, exclude_seen, excl)
                query = model.arrays.user_emb[row : row + 1]
                (ranked,) = await ctx.batcher.search(model.index, query, (k,), (banned,))
                ctx.metrics.answers.labels("search").inc()
        return FastJSONResponse(
            {
                "user_id": user_id,
                "model_version": model.version,
                "k": k,
                "items": model.items_json(ranked),
                "fallback": used_fallback,
                "exact": model.index.exact,
                "unknown_exclude": unknown_excl,
            }
        )

    @router.post(
        "/recommend",
        response_model=BatchRecommendResponse,
        summary="Top-k items for a batch of users (one index search)",
        responses=error_responses(400, 422, 503),
    )
    async def recommend_batch(request: Request, body: BatchRecommendRequest) -> FastJSONResponse:
        """Unknown users get ``error: {code: unknown_user}`` (or the popular fallback) in their
        own entry; the other users are answered normally."""
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()
        excl, unknown_excl = _rows_of_exclude(model, body.exclude)
        rows = [model.user_rows.get(u) for u in body.user_ids]
        known = [i for i, r in enumerate(rows) if r is not None]
        answers: dict[int, Ranked] = {}
        if known:
            user_rows = np.asarray([rows[i] for i in known], dtype=np.int64)
            banned = [model.banned_rows(rows[i], body.exclude_seen, excl) for i in known]
            found = await ctx.batcher.search(
                model.index, model.arrays.user_emb[user_rows], [body.k] * len(known), banned
            )
            answers = dict(zip(known, found, strict=True))
        results = []
        for i, user_id in enumerate(body.user_ids):
            entry: dict[str, Any] = {"user_id": user_id, "fallback": None, "error": None}
            if i in answers:
                entry["items"] = model.items_json(answers[i])
            elif body.fallback == "popular":
                entry["items"] = model.items_json(_fallback(ctx, model, body.k, excl))
                entry["fallback"] = "popular"
            else:
                entry["items"] = []
                entry["error"] = {"code": "unknown_user", "message": f"unknown user_id {user_id!r}"}
            results.append(entry)
        return FastJSONResponse(
            {
                "model_version": model.version,
                "k": body.k,
                "exact": model.index.exact,
                "results": results,
                "unknown_exclude": unknown_excl,
            }
        )

    return router
