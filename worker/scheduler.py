"""Scheduled retraining (off by default): when idle, the worker queues a retrain by itself once
``retrain_after_interactions`` rows were ingested beyond those the serving model was trained on,
or the serving model is ``retrain_after_s`` old (the job records why)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from contract.artifact import ArtifactInvalid, ModelNotFound, ModelRegistry
from contract.jobspec import TRIGGER_KEY, job_params
from contract.manifest import Manifest
from store.feedback import FeedbackStore
from store.jobs import ACTIVE_STATES, Job, JobStore
from store.once import Once
from worker.settings import WorkerSettings

log = logging.getLogger("specrec.worker")


#: A triggered job that ended without publishing holds its trigger back for
#: max(retrain_after_s, RETRY_POLLS x poll_interval_s), doubled per consecutive such job ...
RETRY_POLLS = 60
#: ... up to this many seconds (or retrain_after_s, if longer).
RETRY_MAX_S = 86400.0
#: Jobs looked at (newest first) to find the triggered jobs that ended unpublished.
RETRY_HISTORY = 50


class RetrainScheduler:
    """Scheduled retraining: queues a retrain when enough new interactions arrived or the
    serving model is old enough (``retrain_after_interactions`` / ``retrain_after_s``, 0: off).

    New interactions are FeedbackStore rows with a seq above the serving model's manifest
    ``ingested.max_seq`` (0 for a model without it); seqs are AUTOINCREMENT in an append-only
    log, so their number is ``max_seq() - that``. The model's age is now minus its manifest's
    ``created_unix``; no model (or an unreadable manifest): no time trigger. The job is an API
    job with no body on the worker's dataset (``job_params``), with ``params["trigger"]``
    saying why. ``JobStore.enqueue`` refuses it while another job is queued or running.

    No tight loop on a job that keeps failing: after a triggered job ends without publishing
    (failed, rejected by the gate, cancelled), its trigger is held back for
    max(retrain_after_s, RETRY_POLLS x poll_interval_s), doubled for each consecutive
    unpublished triggered job (capped at max(RETRY_MAX_S, retrain_after_s)); a succeeded job
    ends the streak. Meanwhile the time trigger stays off and the interactions trigger counts
    only rows beyond those that job was triggered with (``trigger.max_seq``): another full
    threshold of new rows triggers at once. The streak is read from the job queue, so a
    restarted worker keeps it.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        store: JobStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self.feedback = Once(lambda: FeedbackStore(settings.feedback_db))  # built at first use
        self._next_check = float("-inf")

    @property
    def enabled(self) -> bool:
        s = self.settings
        return s.retrain_after_interactions > 0 or s.retrain_after_s > 0

    def maybe_enqueue(self) -> Job | None:
        """At most once per poll interval: queue a retrain if one is due; the new job or None."""
        now = self.clock()
        if not self.enabled or now < self._next_check:
            return None
        self._next_check = now + self.settings.poll_interval_s
        trigger = self.due(now)
        if trigger is None:
            return None
        params = job_params({"dataset": self.settings.dataset}, trigger)
        job, created = self.store.enqueue(params)
        if not created:
            log.debug("retrain due (%s) but job %s is %s", trigger, job.id, job.state)
            return None
        log.info("queued retrain job %s by itself: %s", job.id, trigger)
        return job

    def _serving(self) -> tuple[str | None, Manifest | None]:
        registry = ModelRegistry(self.settings.registry_root)
        version = registry.current()
        if version is None:
            return None, None
        try:
            return version, registry.manifest(version)
        except (ArtifactInvalid, ModelNotFound) as e:
            log.warning("scheduled retraining: serving model %s unreadable: %s", version, e)
            return version, None

    def due(self, now: float) -> dict[str, Any] | None:
        """The trigger of a retrain due at ``now`` (see the class), or None."""
        s = self.settings
        version, manifest = self._serving()
        trained_seq = manifest.trained_seq if manifest is not None else 0
        latest = self.feedback().max_seq()
        new_rows = latest - trained_seq
        created = manifest.created_unix if manifest is not None else None
        age = now - created if created is not None else None
        by_rows = 0 < s.retrain_after_interactions <= new_rows
        by_age = s.retrain_after_s > 0 and age is not None and age >= s.retrain_after_s
        if not (by_rows or by_age):
            return None
        held_seq = self._held_seq(now)
        if held_seq is not None:
            since = max(held_seq, trained_seq)
            by_rows = by_rows and latest - since >= s.retrain_after_interactions
            by_age = False
        common = {"max_seq": latest, "model_version": version}
        if by_rows:
            return {
                "kind": "interactions",
                "new_rows": new_rows,
                "threshold": s.retrain_after_interactions,
                **common,
            }
        if by_age:
            assert age is not None
            return {
                "kind": "schedule",
                "age_s": round(age, 3),
                "threshold_s": s.retrain_after_s,
                **common,
            }
        return None

    def retry_after_s(self, streak: int) -> float:
        """How long a trigger is held back after ``streak`` consecutive unpublished jobs."""
        s = self.settings
        base = max(s.retrain_after_s, RETRY_POLLS * s.poll_interval_s)
        return float(min(base * 2 ** (streak - 1), max(RETRY_MAX_S, s.retrain_after_s)))

    def _held_seq(self, now: float) -> int | None:
        """While a triggered job's unpublished end holds triggers back: the feedback seq it was
        triggered with; else None."""
        streak, last = 0, None
        for job in self.store.recent(RETRY_HISTORY):
            if job.state in ACTIVE_STATES:
                continue
            if job.state == "succeeded":
                break
            if isinstance(job.params.get(TRIGGER_KEY), dict):
                streak += 1
                last = last or job
        if last is None:
            return None
        ended = last.finished_at if last.finished_at is not None else last.created_at
        if now >= ended + self.retry_after_s(streak):
            return None
        return int(last.params[TRIGGER_KEY].get("max_seq") or 0)
