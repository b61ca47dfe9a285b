"""The application factory: ``create_app(settings)`` builds one independent service instance.

Extension points (used by the retrain issue):

- ``routers``: extra ``APIRouter`` objects, or callables ``settings -> APIRouter``, mounted after
  the built-in ones. Protect admin routes with ``dependencies=[service.auth.AdminDep]`` on an
  ``APIRouter(route_class=service.auth.AuthFirstRoute)`` (the token is checked before the body).
- ``lifespan_hooks``: callables ``app -> async context manager`` entered after the model is
  loaded and exited before it is released (e.g. open a job queue, start a worker).
- ``app.state.ctx`` (``service.context.AppContext``): settings, registry, model state, batcher,
  metrics; ``service.deps.CtxDep`` injects it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from contract.artifact import ModelRegistry
from service.batcher import SearchBatcher
from service.body_limit import BodyLimitMiddleware
from service.context import AppContext
from service.errors import error_responses, install_error_handlers
from service.fresh import FreshInteractions
from service.index import HAS_FAISS_GPU, check_faiss
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.routes import (
    dashboard,
    docs,
    health,
    interactions,
    models,
    recommend,
    retrain,
    similar,
)
from service.settings import Settings
from service.state import ModelState, ModelWatcher

log = logging.getLogger("specrec.service")

RouterSpec = APIRouter | Callable[[Settings], APIRouter]
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]

BUILTIN_ROUTERS: tuple[Callable[[Settings], APIRouter], ...] = (
    recommend.build_router,
    similar.build_router,
    models.build_router,
    health.build_router,
    retrain.build_router,
    interactions.build_router,
)


def build_context(settings: Settings) -> AppContext:
    registry = ModelRegistry(settings.registry_root)
    batcher = SearchBatcher(
        settings.max_batch_queries, settings.faiss_threads, settings.inline_search_max_cells
    )
    state = ModelState(registry, settings, batcher.search)  # each model searches through it
    metrics = ServiceMetrics(lambda: state.serving)
    state.listeners.append(metrics.on_swap)
    state.failure_listeners.append(metrics.on_load_failure)
    metrics.watch_searches(lambda: (batcher.batches, batcher.queries))
    fresh = FreshInteractions(settings.feedback_db) if settings.fold_in else None
    if fresh is not None:  # build the new model's view off the event loop, right after a swap
        state.listeners.append(lambda model: fresh.prime(model.trained_seq))
    return AppContext(
        settings=settings,
        registry=registry,
        state=state,
        watcher=ModelWatcher(state, settings.watch_interval_s),
        batcher=batcher,
        metrics=metrics,
        fresh=fresh,
    )


def create_app(
    settings: Settings | None = None,
    *,
    routers: Sequence[RouterSpec] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> FastAPI:
    """A new app with its own registry view, model state, search thread and metrics."""
    settings = settings if settings is not None else Settings()
    check_faiss(settings)  # a setting that needs faiss where it does not import: say so now
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.batcher.start()
        log.info(
            "specrec service: registry %s, index %s (faiss GPU: %s)",
            ctx.registry.root,
            settings.index_kind,
            HAS_FAISS_GPU,
        )
        try:
            await run_in_threadpool(ctx.state.sync)  # serve at once if a model exists
            if ctx.state.serving is None:
                log.warning("no servable model in %s yet; /readyz answers 503", ctx.registry.root)
            if settings.watch:
                ctx.watcher.start()
            async with AsyncExitStack() as stack:
                for hook in lifespan_hooks:
                    await stack.enter_async_context(hook(app))
                yield
        finally:
            ctx.watcher.stop()
            ctx.batcher.stop()
            ctx.state.release()

    app = FastAPI(
        title="specrec",
        summary="Recommendations from DirectSpec embeddings, FAISS top-k, spectrum health.",
        version="0.1.0",
        lifespan=lifespan,
        responses=error_responses(413),  # BodyLimitMiddleware guards every route
        docs_url=None,  # /docs and /redoc with local assets: service.routes.docs
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)  # outermost: counts the 413s
    built = [s if isinstance(s, APIRouter) else s(settings) for s in (*BUILTIN_ROUTERS, *routers)]
    for router in built:
        app.include_router(router)
    docs.install(app)  # /docs, /redoc and their JS/CSS, served offline
    dashboard.install(app)  # GET /: the operator's page; /static
    install_error_handlers(app, [*app.routes, *(r for router in built for r in router.routes)])
    cached_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's (cached) document, with the datasets a retrain may name now."""
        return retrain.document_datasets(
            cached_openapi(), retrain.dataset_names(settings.data_root)
        )

    app.openapi = openapi  # type: ignore[method-assign]
    return app
