"""POST /retrain (admin), GET /retrain, GET /retrain/{job_id}, POST /retrain/{job_id}/cancel.

The API only queues: the training worker (`specrec-worker`, the compose `trainer` service)
claims jobs from the SQLite queue, trains, applies the quality gate and publishes; the model
watcher then hot-swaps to the new version.
"""

# No `from __future__ import annotations`: FastAPI must see the closure values in annotations.

import pathlib
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from contract.config import ConfigError, Encoder, Objective, TrainConfig, field_type
from contract.jobspec import TRAIN_CONFIG_KEY, TRIGGER_KEY, job_params
from service.auth import ADMIN_ERRORS, AdminDep, AuthFirstRoute
from service.errors import STORE_UNAVAILABLE, InvalidRequest, ServiceError, error_responses
from service.hyperparameters import REQUEST_RULES, Hyperparameters
from service.schemas import json_int
from service.settings import Settings
from store.jobs import Job, JobState, JobStore
from store.once import Once

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class UnknownJob(ServiceError):
    status_code, code = 404, "unknown_job"


_UNKNOWN_JOB = (404, "No such job (code unknown_job)")


class RetrainRequest(BaseModel):
    """What to train; every field is optional (the product default trains DirectSpec+ MF)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
        json_schema_extra={"allOf": REQUEST_RULES},
    )

    encoder: Encoder | None = None
    """TrainConfig.encoder (default mf)."""
    objective: Objective | Literal["auto"] | None = None
    """TrainConfig.objective (default directspec+); picks the tuned defaults that the other
    fields override. ``spectral``: the training-free filter (no epochs). ``blend``: DirectSpec+
    and the filter, their standardised scores summed with ``hyperparameters.blend_weight``
    (chosen on a validation split when absent). ``auto``: DirectSpec+ and the spectral filter
    are fitted on a validation split carved from the training pairs and the best of them and
    their blend on validation Recall@20 is trained and published; the job's
    ``result.selection`` (and the manifest's) shows every score and why."""
    epochs: field_type("epochs") | None = None  # type: ignore[valid-type]  # TrainConfig's
    """TrainConfig.epochs (``hyperparameters.epochs`` wins)."""
    dataset: Annotated[str, Field(pattern=DATASET_PATTERN)] | None = None
    """A dataset directory under ``$SPECREC_HOME/data`` (default: the configured one); the
    OpenAPI document lists those that exist (``document_datasets``), any other is a 422."""
    hyperparameters: Hyperparameters = Hyperparameters()
    """TrainConfig overrides, validated (with the rest of the config) before queueing."""
    force: bool = False
    """Publish even if the quality gate fails (the job still reports the gate's numbers)."""
    processes: json_int(1, 64) | None = None  # type: ignore[valid-type]  # an int in range
    """Data-parallel training processes (torchrun ranks, gloo on CPU / NCCL on GPUs) for this
    job; default: the worker's ``SPECREC_TRAIN_PROCESSES`` (1). ``spectral`` and ``blend``
    jobs train in one process whatever is asked."""
    refit: bool | None = None
    """After the evaluation run on the split (whose metrics the gate and the manifest keep),
    fit the same config on every known pair, train and test, and publish that model (twice
    the training time); false publishes the evaluation run. Default: the worker's
    ``SPECREC_REFIT`` (true)."""


class AttemptView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    number: int
    worker_id: str
    started_at: str | None
    ended_at: str | None
    resumed_from: int | None
    """The checkpoint epoch this run continued from (null: it started at epoch 1)."""
    error: str | None
    """Why it ended (null while it runs, or when it finished the job)."""


class JobView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    job_id: str
    state: JobState
    status_url: str
    params: dict[str, Any]
    """The request as queued (RetrainRequest, nulls left out)."""
    trigger: dict[str, Any] | None = None
    """Why the worker queued this job by itself (scheduled retraining): ``{"kind":
    "interactions", "new_rows", "threshold", "max_seq", "model_version"}`` or ``{"kind":
    "schedule", "age_s", "threshold_s", "max_seq", "model_version"}``; null for a job queued
    through POST /retrain."""
    train_config: TrainConfig | None
    """The TrainConfig derived from the request when it was queued, which the worker trains
    with (plus its device); null for a job queued without one."""
    progress: dict[str, Any] | None
    """Latest progress from the worker: stage, epoch, epochs, loss, metrics."""
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    cancel_requested: bool
    model_version: str | None
    """The published version (succeeded jobs)."""
    result: dict[str, Any] | None
    """Metrics and quality-gate numbers once training ended."""
    error: str | None
    attempts: list[AttemptView] = []
    """Each run of the job, oldest first: a job whose training process or worker died is
    queued again and resumes from its last checkpoint, up to max_attempts runs in all."""
    max_attempts: int = 1
    """Runs the job may take (1 + the worker's SPECREC_JOB_RETRIES when it claimed it)."""


class JobAccepted(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    job_id: str
    status_url: str
    state: str
    train_config: TrainConfig
    """The TrainConfig derived from the request, stored with the job: the worker trains with
    it (plus its device)."""


class JobList(BaseModel):
    jobs: list[JobView]


def dataset_names(data_root: pathlib.Path) -> list[str]:
    """The datasets a request may name: directories under ``data_root`` (sorted)."""
    try:
        names = sorted(p.name for p in data_root.iterdir() if p.is_dir())
    except OSError:  # no data root yet
        return []
    return [n for n in names if re.fullmatch(DATASET_PATTERN, n)]


def document_datasets(doc: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``doc`` (an OpenAPI document) with RetrainRequest.dataset naming exactly ``names``.

    Datasets are directories on the server, so the names the schema accepts change with them.
    """
    prop = doc["components"]["schemas"]["RetrainRequest"]["properties"]["dataset"]
    name = {"type": "string", "pattern": DATASET_PATTERN, "enum": names}
    prop["anyOf"] = [name, {"type": "null"}] if names else [{"type": "null"}]
    return doc


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _stored_config(params: dict[str, Any]) -> TrainConfig | None:
    """``params["train_config"]`` (see contract.jobspec), None if absent or no longer valid."""
    stored = params.get(TRAIN_CONFIG_KEY)
    try:
        return TrainConfig.from_dict(stored) if isinstance(stored, dict) else None
    except ConfigError:
        return None


def _view(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "state": job.state,
        "status_url": f"/retrain/{job.id}",
        "params": {k: v for k, v in job.params.items() if k not in (TRAIN_CONFIG_KEY, TRIGGER_KEY)},
        "trigger": job.params.get(TRIGGER_KEY),
        "train_config": _stored_config(job.params),
        "progress": job.progress,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "cancel_requested": job.cancel_requested,
        "model_version": (job.result or {}).get("model_version"),
        "result": job.result,
        "error": job.error,
        "attempts": [
            {
                "number": a.number,
                "worker_id": a.worker_id,
                "started_at": _iso(a.started_at),
                "ended_at": _iso(a.ended_at),
                "resumed_from": a.resumed_from,
                "error": a.error,
            }
            for a in job.attempts
        ],
        "max_attempts": job.max_attempts,
    }


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["retrain"], route_class=AuthFirstRoute)

    # built at the first request that needs it (the store may be down at start), then reused
    store = Once(
        lambda: JobStore(settings.jobs_db, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    )

    @router.post(
        "/retrain",
        status_code=202,
        response_model=JobAccepted,
        dependencies=[AdminDep],
        summary="Queue a retraining job (admin)",
        responses=error_responses(
            *ADMIN_ERRORS,
            STORE_UNAVAILABLE,
            400,
            (409, "A job is already queued or running (code job_active, details.job_id)"),
            (422, "Invalid body, unknown dataset or config (code validation_error)"),
        ),
    )
    async def retrain(
        body: Annotated[RetrainRequest | None, Body()] = None,
    ) -> Any:
        """202 with the job id; 409 (code ``job_active``, ``details.job_id``) while another
        job is queued or running, so a double click never trains twice."""
        req = body or RetrainRequest()
        params = req.model_dump(exclude_none=True)
        if req.dataset is not None and not (settings.data_root / req.dataset).is_dir():
            raise InvalidRequest(
                f"body.dataset: no dataset {req.dataset!r}; known: "  # names only, no server path
                f"{', '.join(dataset_names(settings.data_root)) or 'none'}",
                [{"loc": ["body", "dataset"], "msg": "unknown dataset", "type": "value_error"}],
            )
        try:
            params = job_params(params, default_dataset=settings.dataset)  # the worker reads it
        except (ConfigError, TypeError) as e:
            raise InvalidRequest(
                f"body: {e}", [{"loc": ["body"], "msg": str(e), "type": "value_error"}]
            ) from e
        cfg = TrainConfig.from_dict(params[TRAIN_CONFIG_KEY])
        job, created = await run_in_threadpool(store().enqueue, params)
        if not created:
            return JSONResponse(
                {
                    "error": {
                        "code": "job_active",
                        "message": f"job {job.id} is already {job.state}; wait for it or "
                        f"cancel it (POST /retrain/{job.id}/cancel)",
                        "details": {
                            "job_id": job.id,
                            "state": job.state,
                            "status_url": f"/retrain/{job.id}",
                        },
                    }
                },
                status_code=409,
            )
        return {
            "job_id": job.id,
            "status_url": f"/retrain/{job.id}",
            "state": job.state,
            "train_config": cfg,
        }

    @router.get(
        "/retrain",
        response_model=JobList,
        summary="Recent retraining jobs",
        responses=error_responses(422, STORE_UNAVAILABLE),
    )
    async def list_jobs(
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        """Newest first."""
        jobs = await run_in_threadpool(store().recent, limit)
        return {"jobs": [_view(j) for j in jobs]}

    @router.get(
        "/retrain/{job_id}",
        response_model=JobView,
        summary="One retraining job",
        responses=error_responses(_UNKNOWN_JOB, 422, STORE_UNAVAILABLE),
    )
    async def get_job(
        job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)],
    ) -> dict[str, Any]:
        job = await run_in_threadpool(store().get, job_id)
        if job is None:
            raise UnknownJob(f"no retraining job {job_id!r}")
        return _view(job)

    @router.post(
        "/retrain/{job_id}/cancel",
        response_model=JobView,
        dependencies=[AdminDep],
        summary="Cancel a queued or running job (admin)",
        responses=error_responses(*ADMIN_ERRORS, _UNKNOWN_JOB, 422, STORE_UNAVAILABLE),
    )
    async def cancel_job(
        request: Request,
        job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)],
    ) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one stops at its next epoch."""
        job = await run_in_threadpool(store().cancel, job_id)
        if job is None:
            raise UnknownJob(f"no retraining job {job_id!r}")
        return _view(job)

    return router
