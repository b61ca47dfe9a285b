"""Interactions ingested after the serving model was trained, per user, kept current.

The serving model's manifest says up to which feedback ``seq`` it was trained
(``Manifest.trained_seq``: ``ingested.max_seq``; 0 for a model trained without the store).
Rows beyond it are what the model has not seen: ``FreshInteractions.since(seq)`` returns them
by user (item ids, first occurrence order, no repeats), for ServingModel.recommend to fold in.
Each call costs one ``PRAGMA data_version`` (store.feedback.FeedbackWatcher) and reads the
store only when something was committed, by this process or another API worker; the view is
rebuilt when the model's seq changes (a new model), which happens on the model watcher's
thread first (``prime``) so requests rarely pay for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from store.feedback import FeedbackWatcher

log = logging.getLogger("specrec.service")

_EMPTY: Mapping[str, Sequence[str]] = {}

CHECK_INTERVAL_S = 0.001
"""The store is asked for news at most this often: other API workers' rows are seen within
about 1 ms of their commit; this process's own (``invalidate``) at once. (One check costs ~3
us, a tenth of a lookup answer's work on the hot path.)"""


#: seconds between attempts to reach the store again after it failed
RETRY_S = 5.0


class FreshInteractions:
    """Per-user item ids ingested after a given seq, following the store as it grows.

    The store being unreachable (PostgreSQL down) never fails an answer: the view stays what
    it was (empty if it never loaded), a warning is logged, and the store is tried again
    every RETRY_S seconds; the view is rebuilt from scratch once it answers.
    """

    def __init__(self, feedback_db: Path | str) -> None:
        self._target = feedback_db
        self._watcher: FeedbackWatcher | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._after: int | None = None  # the seq the view starts after
        self._last = 0  # highest seq read so far
        self._by_user: dict[str, list[str]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._next_check = 0.0  # time.monotonic() after which the store is asked again

    def since(self, seq: int) -> Mapping[str, Sequence[str]]:
        """{user_id: item ids} of the rows with seq > `seq` (read-only view; empty when none)."""
        if seq == self._after and time.monotonic() < self._next_check:
            return self._by_user or _EMPTY  # the hot path: no lock, no query
        with self._lock:
            try:
                if self._watcher is None:
                    self._reopen(seq)
                elif seq != self._after:
                    self._rebuild(seq)
                elif self._watcher.changed():
                    self._extend()
            except Exception as e:  # the store failed: answer from the view as it is
                self._lost(e)
            self._next_check = time.monotonic() + CHECK_INTERVAL_S
            return (self._by_user if seq == self._after else None) or _EMPTY

    def invalidate(self) -> None:
        """Ask the store at the next call (after this process appended rows)."""
        self._next_check = 0.0

    def prime(self, seq: int) -> None:
        """Build the view for `seq` now (the model watcher's thread, after a swap)."""
        self.since(seq)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()

    def _reopen(self, seq: int) -> None:
        if time.monotonic() < self._retry_at:
            return
        self._watcher = FeedbackWatcher(self._target)
        self._after = None  # whatever was read before the loss is rebuilt
        self._rebuild(seq)
        if self._retry_at:
            log.warning("the interaction store answers again: fold-in follows it")
            self._retry_at = 0.0

    def _lost(self, error: Exception) -> None:
        if self._retry_at == 0.0:
            log.warning(
                "the interaction store failed (%s): answers fold in what was read so far", error
            )
        self._retry_at = time.monotonic() + RETRY_S
        if self._watcher is not None:
            try:
                self._watcher.close()
            except Exception:  # already broken
                pass
        self._watcher = None

    def _rebuild(self, seq: int) -> None:
        assert self._watcher is not None
        self._watcher.changed()  # reset: rows committed from here on are seen by _extend
        self._after, self._last = seq, seq
        self._by_user, self._seen = {}, set()
        self._extend()

    def _extend(self) -> None:
        assert self._watcher is not None
        for seq, user, item in self._watcher.rows_after(self._last):
            self._last = seq
            if (user, item) not in self._seen:
                self._seen.add((user, item))
                self._by_user.setdefault(user, []).append(item)
