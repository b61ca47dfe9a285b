"""service.fresh and store.feedback.FeedbackWatcher: rows newer than a model, per user."""

from __future__ import annotations

import time
from pathlib import Path

from service.fresh import CHECK_INTERVAL_S, FreshInteractions
from store.feedback import FeedbackStore, FeedbackWatcher, Interaction


def test_the_watcher_notices_other_connections_commits(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    watcher, store = FeedbackWatcher(db), FeedbackStore(db)
    assert watcher.changed() is True  # first call
    assert watcher.changed() is False
    store.append([Interaction("u", "a"), Interaction("v", "b")])
    assert watcher.changed() is True and watcher.changed() is False
    assert watcher.rows_after(0) == [(1, "u", "a"), (2, "v", "b")]
    assert watcher.rows_after(1) == [(2, "v", "b")]


def test_fresh_rows_are_per_user_after_the_models_seq(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    store = FeedbackStore(db)
    store.append([Interaction("u", "a"), Interaction("u", "b"), Interaction("v", "a")])  # 1-3
    fresh = FreshInteractions(db)
    assert fresh.since(0) == {"u": ["a", "b"], "v": ["a"]}
    assert fresh.since(2) == {"v": ["a"]}  # a newer model trained on seq 1-2
    store.append([Interaction("u", "c"), Interaction("v", "a"), Interaction("w", "z")])
    time.sleep(2 * CHECK_INTERVAL_S)  # another writer's rows: seen at the next check
    assert fresh.since(2) == {"v": ["a"], "u": ["c"], "w": ["z"]}  # repeats once, in order
    store.append([Interaction("x", "y")])
    fresh.invalidate()  # this process's own write: seen at once
    assert fresh.since(2)["x"] == ["y"]
    assert fresh.since(7) == {}
