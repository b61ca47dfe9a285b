"""Prometheus metrics in a per-app registry, and the ASGI middleware that records requests.

Requests are labelled by route *template* (``/recommend/{user_id}``), never the raw path, so
label cardinality stays bounded; unmatched paths share the label ``<unmatched>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.serving import ServingModel

disable_created_metrics()  # no *_created series: they double the exposition for no use here

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServiceMetrics:
    """All metrics of one app instance (tests build many apps; no global registry)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, serving: Callable[[], ServingModel | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "specrec_http_request_duration_seconds",
            "Request latency by route template",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "specrec_http_requests",
            "Requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.fallbacks = Counter(
            "specrec_fallback", "Recommendations answered by a fallback", ["kind"], registry=r
        )
        self.answers = Counter(
            "specrec_recommend_answers",
            "Recommendation answers by source (precomputed list, search, include set, fold-in, "
            "fallback)",
            ["source"],
            registry=r,
        )
        self._answer_children: dict[str, Any] = {}
        self.model_info = Gauge(
            "specrec_model_info", "Serving model version (value 1)", ["version"], registry=r
        )
        self.model_age = Gauge(
            "specrec_model_age_seconds",
            "Seconds since the serving model was published",
            registry=r,
        )
        self.index_size = Gauge("specrec_index_items", "Items in the serving index", registry=r)
        self.erank = Gauge(
            "specrec_model_effective_rank",
            "Effective rank of the serving model's row-normalised embeddings",
            ["side"],
            registry=r,
        )
        self.swaps = Counter("specrec_model_swaps", "Model hot swaps", registry=r)
        self.load_failures = Counter(
            "specrec_model_load_failures", "Model versions refused as invalid", registry=r
        )

        def age() -> float:
            m = serving()
            return time.time() - m.created_unix if m is not None else float("nan")

        self.model_age.set_function(age)

    def count_answer(self, source: str, fallback: str | None, n: int = 1) -> None:
        """Count `n` recommendation answers from `source` (and `fallback`): label children
        are looked up once per label (``labels()`` takes a lock; this is the hot path)."""
        child = self._answer_children.get(source)
        if child is None:
            child = self._answer_children[source] = self.answers.labels(source)
        child.inc(n)
        if fallback is not None:
            self.fallbacks.labels(fallback).inc(n)

    def watch_searches(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Export the search thread's counters (called once by create_app)."""
        self.registry.register(_SearchCollector(counts))

    def on_swap(self, model: ServingModel) -> None:
        """ModelState listener: describe the new serving model."""
        self.model_info.clear()
        self.model_info.labels(model.version).set(1)
        self.index_size.set(model.index.ntotal)
        for side in ("users", "items"):
            self.erank.labels(side).set(
                model.spectrum.spectrum[side]["normalized"]["effective_rank"]
            )
        self.swaps.inc()

    def on_load_failure(self, version: str, reason: str) -> None:
        """ModelState failure listener."""
        self.load_failures.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SearchCollector(Collector):
    """Searches run by the batcher and queries in them (mean batch size = queries / searches)."""

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        searches, queries = self.counts()
        yield CounterMetricFamily(
            "specrec_search_calls", "Index searches run by the batcher", value=searches
        )
        yield CounterMetricFamily(
            "specrec_search_queries", "Queries answered by those searches", value=queries
        )


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            key = (scope["method"], template, status)
            children = self._children.get(key)
            if children is None:  # labels() is a locked dict lookup: do it once per series
                children = (
                    self.metrics.latency.labels(key[0], template),
                    self.metrics.requests.labels(key[0], template, str(status)),
                )
                self._children[key] = children
            children[0].observe(time.perf_counter() - start)
            children[1].inc()
