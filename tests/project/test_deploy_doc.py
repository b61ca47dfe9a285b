"""docs/deploy.md's memory table is the rendering of docs/results/replica_memory.json (written
together by bench/replica_memory.py), and its sizing rule stays within the measured rows."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import replica_memory  # noqa: E402  (bench/ scripts are not a package)


def _run() -> dict:
    return json.loads((ROOT / "docs" / "results" / "replica_memory.json").read_text())


def test_the_memory_table_is_the_recorded_run():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert replica_memory.render_doc(doc, _run()) == doc


def test_the_sizing_rule_predicts_each_measured_row_within_ten_percent():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    base, items, users = (
        float(x)
        for x in re.search(
            r"RSS ≈ \*\*(\d+) MB \+ ([\d.]+) x the item table \+ ([\d.]+) x the user table", doc
        ).groups()
    )
    lists_mb = float(re.search(r"has them: (\d+) MB at\s+Gowalla's size", doc).group(1))
    for r in _run()["rows"]:
        table = r["dim"] * 4 / 2**20
        predicted = base + items * r["n_items"] * table + users * r["n_users"] * table
        predicted += lists_mb if r["top_lists"] else 0.0
        assert abs(predicted - r["rss_mb"]) <= 0.1 * r["rss_mb"], (r, predicted)
