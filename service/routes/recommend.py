"""GET /recommend/{user_id} and POST /recommend (batch)."""

# No `from __future__ import annotations`: FastAPI must see the closure values (settings)
# used in the parameter annotations.

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.context import AppContext
from service.errors import UnknownUser, error_responses
from service.jsonresp import FastJSONResponse
from service.metrics import ServiceMetrics
from service.routes._params import hot_params, hot_route, openapi_path_id, path_id, query_params
from service.schemas import BatchRecommendResponse, Fallback, JsonId, RecommendResponse
from service.serving import Answer
from service.settings import Settings


def count_answers(metrics: ServiceMetrics, answers: Sequence[Answer]) -> None:
    """The one place recommendation answers are counted: by source (precomputed, search,
    fallback) and by fallback kind. Unanswered users (unknown, no fallback) are not answers."""
    if len(answers) == 1:  # GET /recommend: no Counter
        (a,) = answers
        if a.source is not None:
            metrics.count_answer(a.source, a.fallback)
        return
    for (source, fallback), n in Counter((a.source, a.fallback) for a in answers).items():
        if source is not None:
            metrics.count_answer(source, fallback, n)


def add_candidate_fields(
    body: dict[str, Any], short: str | None, include: list[str] | None, unknown: list[str]
) -> None:
    """``short`` (only for a short answer) and ``unknown_include`` (only when ``include`` was
    given): responses without the new parameters keep their fields."""
    if short is not None:
        body["short"] = short
    if include is not None:
        body["unknown_include"] = unknown


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["recommend"])
    max_k = settings.max_k
    p = hot_params(settings)  # k, offset, exclude_seen, exclude, include, fallback: one table

    class BatchRecommendRequest(BaseModel):
        """Recommendations for many users with one index search (``user_ids``), or for one
        anonymous user folded in from an item history (``history``): exactly one of them."""

        model_config = ConfigDict(
            extra="forbid",
            strict=True,
            json_schema_extra={"oneOf": [{"required": ["user_ids"]}, {"required": ["history"]}]},
        )

        # None marks an absent field; it is never validated, so `null` stays a 422
        user_ids: Annotated[
            list[JsonId], Field(min_length=1, max_length=settings.max_batch_users)
        ] = None  # type: ignore[assignment]
        """Users to answer, in order; unknown ones are reported per user (the batch succeeds)."""
        history: Annotated[list[JsonId], Field(max_length=settings.max_exclude)] = None  # type: ignore[assignment]
        """Instead of ``user_ids``: the item ids of one anonymous user, answered by folding
        them in (``source: fold-in``; nothing is stored). They count as seen; ids not in the
        catalogue are ignored and listed in ``unknown_history``."""
        k: p.k.body_type() = p.k.default  # type: ignore[valid-type]  # an Annotated int
        exclude_seen: bool = True
        """Drop each user's seen items (the model's train and held-out pairs, and items ingested
        since, which are folded in)."""
        exclude: Annotated[list[JsonId], Field(max_length=settings.max_exclude)] = []
        """Item ids excluded for every user; unknown ids are ignored and listed back."""
        fallback: Fallback | None = None
        """``popular``: answer unknown users with the most popular items instead of an error."""
        include: Annotated[list[JsonId], Field(max_length=settings.max_exclude)] | None = None
        """Rank only these item ids (seen and excluded items still left out); unknown ids are
        ignored and listed back in ``unknown_include``. An empty list ranks nothing."""
        offset: p.offset.body_type() = p.offset.default  # type: ignore[valid-type]  # an int
        """Items skipped before the k returned (pagination): ranks continue at offset + 1.
        The ranking stops at depth max_k: beyond it the answer is short (``short`` says so)."""

        @model_validator(mode="before")
        @classmethod
        def _exactly_one(cls, data: Any) -> Any:
            if isinstance(data, dict) and ("user_ids" in data) == ("history" in data):
                raise ValueError("give exactly one of user_ids and history")
            return data

    recommend_params = [
        p.k.openapi(),
        p.exclude_seen.openapi(),
        p.exclude.openapi(),
        p.fallback.openapi(),
        p.include.openapi(),
        p.offset.openapi(),
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
        qp = query_params(request)
        k = p.k.parse(qp)
        exclude_seen = p.exclude_seen.parse(qp)
        exclude = p.exclude.parse(qp)
        fallback = p.fallback.parse(qp)
        include = p.include.parse(qp)
        offset = p.offset.parse(qp)
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()  # the one read of the serving model for this request
        recs = await model.recommend(
            (user_id,),
            k,
            exclude=exclude,
            exclude_seen=exclude_seen,
            fallback=fallback,
            include=include,
            offset=offset,
            max_depth=max_k,
            new_items=ctx.new_items(model.trained_seq),
        )
        (answer,) = recs.answers
        if not answer.answered:
            raise UnknownUser(
                f"unknown user_id {user_id!r} (add fallback=popular for popular items)"
            )
        count_answers(ctx.metrics, recs.answers)
        body: dict[str, Any] = {
            "user_id": user_id,
            "model_version": model.version,
            "k": k,
            "items": model.items_json(answer.ranked, offset),
            "source": answer.kind,
            "fallback": answer.fallback,
            "exact": model.index.exact,
            "unknown_exclude": recs.unknown_exclude,
        }
        add_candidate_fields(body, answer.short, include, recs.unknown_include)
        return FastJSONResponse(body)

    # The hot path skips FastAPI's per-request machinery (dependency solving, its request
    # wrapper): the same handler as a plain Starlette route, matched first; the APIRoute above
    # stays for the OpenAPI document. Measured through the whole ASGI app, no network: see
    # docs/benchmarks.md, "Serving at the HTTP floor".
    router.routes.insert(0, hot_route(router.routes[-1], recommend))

    @router.post(
        "/recommend",
        response_model=BatchRecommendResponse,
        summary="Top-k items for a batch of users (one index search)",
        responses=error_responses(400, 422, 503),
    )
    async def recommend_batch(request: Request, body: BatchRecommendRequest) -> FastJSONResponse:
        """Unknown users get ``error: {code: unknown_user}`` (or the popular fallback) in their
        own entry; the other users are answered normally. With ``history`` instead of
        ``user_ids``: one anonymous user folded in from those items (``user_id`` null)."""
        ctx: AppContext = request.app.state.ctx
        model = ctx.state.require()
        options: dict[str, Any] = {
            "exclude": body.exclude,
            "exclude_seen": body.exclude_seen,
            "fallback": body.fallback,
            "include": body.include,
            "offset": body.offset,
            "max_depth": max_k,
        }
        if body.history is not None:
            recs = await model.recommend_history(body.history, body.k, **options)
            user_ids: list[str | None] = [None]
        else:
            recs = await model.recommend(
                body.user_ids, body.k, new_items=ctx.new_items(model.trained_seq), **options
            )
            user_ids = list(body.user_ids)
        count_answers(ctx.metrics, recs.answers)
        results = []
        for user_id, answer in zip(user_ids, recs.answers, strict=True):
            entry: dict[str, Any] = {
                "user_id": user_id,
                "items": model.items_json(answer.ranked, body.offset),
                "source": answer.kind,
                "fallback": answer.fallback,
                "error": None,
            }
            if answer.short is not None:
                entry["short"] = answer.short
            if not answer.answered:
                entry["error"] = (
                    {"code": "unknown_user", "message": f"unknown user_id {user_id!r}"}
                    if user_id is not None
                    else {
                        "code": "unknown_history",
                        "message": "no item of the history is in the catalogue "
                        "(add fallback=popular for popular items)",
                    }
                )
            results.append(entry)
        out: dict[str, Any] = {
            "model_version": model.version,
            "k": body.k,
            "exact": model.index.exact,
            "results": results,
            "unknown_exclude": recs.unknown_exclude,
        }
        if body.include is not None:
            out["unknown_include"] = recs.unknown_include
        if body.history is not None:
            out["unknown_history"] = recs.unknown_history
        return FastJSONResponse(out)

    return router
