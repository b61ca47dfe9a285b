"""docs/benchmarks.md is generated: bench/report.py renders the template with the result rows
that bench/train_bench.py records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402  (bench/ scripts are not a package)
import train_bench  # noqa: E402


def row(**kw):
    base = {
        "dataset": "gowalla",
        "method": "MF-BPR",
        "label": "tuned",
        "epochs": 300,
        "best_epoch": None,
        "recall@20": 0.15234,
        "ndcg@20": 0.12871,
        "erank_normalized": 61.04,
        "erank_ratio": 61.04 / 64,
        "seconds_per_epoch": 2.345,
        "threads": 1,
        "device": "cpu",
        "wall_seconds": 900.0,
        "loadavg_before": 1.0,
        "loadavg_after": 2.04,
        "machine": "2 CPUs (x), Python 3.11.7",
        "commit": "abc1234",
        "command": "python bench/train_bench.py --method MF-BPR",
        "curve": [{"epoch": 150, "seconds": 330.0, "recall@20": 0.14, "erank_normalized": 60.0}],
    }
    return base | kw


def test_committed_benchmarks_md_is_what_the_template_and_results_give():
    text = report.render(
        report.TEMPLATE.read_text(),
        report.load_rows(),
        report.load_rows(report.SPEED),
        report.load_rows(report.SCALING),
        report.load_rows(report.SERVING_SPECTRAL),
        report.load_workers(),
        report.load_rows(report.SERVING_SCALE),
        report.load_rows(report.TRAINING_SCALE),
        report.load_rows(report.PUBLISH_SCALE),
        report.load_rows(report.SERVING_GROWTH),
    )
    assert report.OUTPUT.read_text() == text, "run .venv/bin/python bench/report.py"


def test_directives_become_tables_of_the_selected_rows_in_method_order():
    rows = [
        row(method="MF-DirectSpec+", label="reference", **{"recall@20": 0.1779}),
        row(),
        row(label="check-adam"),
        row(label="ranks-2", processes=2),
        row(dataset="citeulike-directspec"),
    ]
    text = report.render(
        "intro\n<!-- training: dataset=gowalla exclude=check-*,ranks-* -->\nend", rows
    )
    lines = text.splitlines()
    assert lines[1] == "intro" and lines[-1] == "end"
    body = [ln for ln in lines if ln.startswith("| MF")]
    assert body == [
        "| MF-BPR | tuned | 300 | 0.1523 | 0.1287 | 61.0 | 0.95 | 2.35 | 1 x 1 | cpu | 15 min "
        "| 1.0 / 2.0 |",
        "| MF-DirectSpec+ | reference | 300 | 0.1779 | 0.1287 | 61.0 | 0.95 | 2.35 | 1 x 1 | cpu "
        "| 15 min | 1.0 / 2.0 |",
    ]
    ranks = report.render("<!-- training: dataset=gowalla labels=ranks-* -->", rows)
    assert "| MF-BPR | ranks-2 | 300 | 0.1523 | 0.1287 | 61.0 | 0.95 | 2.35 | 2 x 1 |" in ranks
    assert "- MF-BPR / tuned: `python bench/train_bench.py --method MF-BPR`" in lines
    curves = report.render("<!-- curves: dataset=gowalla labels=tuned -->", rows)
    assert "- MF-BPR / tuned: 150: 0.1400, 60.0, 5.5 min" in curves
    with pytest.raises(ValueError, match="dataset"):
        report.render("<!-- training: labels=x -->", rows)


def test_record_replaces_the_row_of_the_same_variant(tmp_path):
    out = tmp_path / "training.json"
    train_bench.record(out, row())
    train_bench.record(out, row(label="other"))
    train_bench.record(out, row(**{"recall@20": 0.2}))
    rows = json.loads(out.read_text())
    assert [(r["label"], r["recall@20"]) for r in rows] == [("other", 0.15234), ("tuned", 0.2)]
    assert not list(tmp_path.glob("*.tmp"))


def test_sets_parse_as_json_with_strings_as_they_are():
    assert train_bench.parse_sets(["lr=0.005", "adaptive_tau=true", "device=cpu", "tau0=null"]) == {
        "lr": 0.005,
        "adaptive_tau": True,
        "device": "cpu",
        "tau0": None,
    }
    with pytest.raises(SystemExit, match="field=value"):
        train_bench.parse_sets(["lr"])


def test_speed_directive_renders_the_dataset_rows():
    speed = [
        {
            "dataset": "gowalla",
            "case": "MF-BPR sparse_adam",
            "batch_size": 2048,
            "sub_batches": 1,
            "optimizer": "sparse_adam",
            "steps_per_epoch": 395,
            "steps_timed": 395,
            "threads": 1,
            "seconds_per_epoch": 3.771,
            "cpu_seconds_per_epoch": 3.766,
            "loadavg_before": 1.45,
            "loadavg_after": 1.58,
            "machine": "2 CPUs (x)",
            "torch": "2.13.0",
            "command": "python bench/speed.py",
            "commit": "abc",
        }
    ]
    text = report.render("<!-- speed: dataset=gowalla -->", [], speed)
    assert (
        "| MF-BPR sparse_adam | 2048 | 1 | sparse_adam | 395 | 1 | 3.77 | 3.77 | all | 1.4 / 1.6 |"
        in text
    )
    assert "(no rows recorded yet)" in report.render("<!-- speed: dataset=yelp -->", [], speed)


def test_every_image_the_page_shows_is_committed():
    import re

    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.OUTPUT.read_text())
    assert images, "the page shows the spectrum and Recall@20-vs-time plots"
    missing = [i for i in images if not (report.DOCS / i).is_file()]
    assert not missing, f"run .venv/bin/python bench/report.py --plots: {missing}"


def scaling_row(size, method, seconds, peak, data):
    return {
        "interactions": size,
        "train_pairs": size * 4 // 5,
        "users": size // 38,
        "items": size // 57,
        "method": method,
        "batch_size": 256,
        "sub_batches": 1,
        "optimizer": "sgd",
        "steps_timed": 400,
        "seconds_per_epoch": seconds,
        "peak_rss_mib": peak,
        "rss_after_data_mib": data,
        "loadavg_before": 0.5,
        "loadavg_after": 1.25,
        "machine": "m",
        "torch": "2.13.0",
        "commit": "abc",
        "command": "python bench/scaling.py",
    }


def test_scaling_rows_become_one_column_per_method_and_one_line_per_size():
    rows = [
        scaling_row(1_000_000, "LightGCN-DirectSpec+", 37.8, 578.0, 282.0),
        scaling_row(100_000, "MF-DirectSpec+", 0.431, 338.2, 248.0),
        scaling_row(1_000_000, "MF-DirectSpec+", 4.78, 426.0, 282.4),
    ]
    lines = report.render("<!-- scaling: dataset=synthetic -->", [], None, rows).splitlines()
    header = (
        "| interactions | train pairs | users x items | MF-DirectSpec+ | LightGCN-DirectSpec+ |"
    )
    assert lines.count(header) == 2  # seconds, then memory
    seconds = lines.index(header)
    assert lines[seconds + 2 : seconds + 4] == [
        "| 100,000 | 80,000 | 2,631 x 1,754 | 0.43 |  |",
        "| 1,000,000 | 800,000 | 26,315 x 17,543 | 4.78 | 37.80 |",
    ]
    memory = lines.index(header, seconds + 1)
    assert lines[memory + 3] == "| 1,000,000 | 800,000 | 26,315 x 17,543 | 426 (144) | 578 (296) |"
    assert any("Load average during the runs: 0.5–1.2" in ln for ln in lines)


def test_spectral_rows_show_the_filter_its_fit_and_no_curve():
    spectral = row(
        method="Spectral",
        label="default",
        objective="spectral",
        epochs=1,
        seconds_fit=41.25,
        config={"spectral_k": 256, "spectral_alpha": 0.3},
        split="nie-gcn train+test pooled (998539 pairs), per-user holdout 0.2 seed 0",
        **{"recall@20": 0.2672},
    )
    rows = [spectral, row()]
    text = report.render("<!-- training: dataset=gowalla -->", rows)
    body = [ln for ln in text.splitlines() if ln.startswith("| ")][1:]  # after the header
    assert body == [
        "| MF-BPR | tuned | 300 | 0.1523 | 0.1287 | 61.0 | 0.95 | 2.35 | 1 x 1 | cpu | 15 min "
        "| 1.0 / 2.0 |",
        "| Spectral filter (GF-CF) | default | none (K 256, α 0.3) | 0.2672 | 0.1287 | 61.0 "
        "| 0.95 | 41.2 (fit) | 1 x 1 | cpu | 15 min | 1.0 / 2.0 |",
    ]
    assert f"- Spectral / default: {spectral['split']}" in text.splitlines()
    curves = report.render("<!-- curves: dataset=gowalla -->", rows)
    assert "- MF-BPR / tuned: 150" in curves and "Spectral" not in curves


def test_resplit_pools_both_splits_and_holds_out_a_seeded_fifth_per_user():
    from trainer.data import Dataset

    users = np.repeat(np.arange(4), 10)
    items = np.tile(np.arange(10), 4)
    ds = Dataset.from_pairs(
        "x",
        np.arange(4).astype(str),
        np.arange(10).astype(str),
        (users[::2], items[::2]),
        (users[1::2], items[1::2]),
    )
    out = train_bench.resplit(ds, 0.2, 0, "ml")
    assert out.name == "ml" and out.n_train + out.n_test == 40
    assert np.bincount(out.test_users, minlength=4).tolist() == [2, 2, 2, 2]
    again = train_bench.resplit(ds, 0.2, 0, "ml")
    assert np.array_equal(out.test_items, again.test_items)

    def pairs(u: np.ndarray, i: np.ndarray) -> set[tuple[int, int]]:
        return set(zip(u.tolist(), i.tolist(), strict=True))

    ids = out.user_ids.astype(int), out.item_ids.astype(int)
    test = pairs(ids[0][out.test_users], ids[1][out.test_items])
    train = pairs(ids[0][out.train_users], ids[1][out.train_items])
    assert not test & train and test | train == pairs(users, items)


def serving_row(data, items, model, memory, p50, b64, k=64):
    parts = (
        {
            "norm": memory * 0.2,
            "norm_t": memory * 0.2,
            "lowpass_items": memory * 0.3,
            "lowpass_users": memory * 0.1,
            "top_lists": memory * 0.2,
        }
        if model == "spectral"
        else {"item_vectors": memory * 0.5, "user_vectors": memory * 0.5, "top_lists": 0.0}
    )
    return {
        "data": data,
        "items": items,
        "users": items * 3 // 4,
        "interactions": items * 20,
        "model": model,
        "k_lowpass": k if model == "spectral" else None,
        "dim": 64,
        "build_s": 2.0,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
        "batch8_ms_per_query": b64 * 2,
        "batch64_ms_per_query": b64,
        "memory_mb": memory,
        "memory_parts_mb": parts,
        "lists_build_s_est": items * 3 // 4 * b64 / 1e3 if model == "spectral" else None,
        "loadavg": [0.5, 0.4, 0.3],
        "machine": "m",
        "command": "python bench/serve_spectral.py",
        "commit": "abc",
    }


def test_serving_spectral_rows_render_with_fitted_growth():
    rows = [
        serving_row("synthetic", 1_000_000, "spectral", 2000.0, 40.0, 10.0),
        serving_row("synthetic", 100_000, "spectral", 200.0, 4.0, 1.0),
        serving_row("gowalla", 40_981, "spectral", 150.0, 3.0, 0.5, k=256),
        serving_row("synthetic", 100_000, "embedding", 100.0, 1.0, 0.2),
    ]
    lines = report.render("<!-- serving_spectral: dataset=* -->", [], None, None, rows).splitlines()
    table = [ln for ln in lines if ln.startswith("| ")][1:]  # after the header
    assert table[0] == (
        "| gowalla | 30,735 x 40,981 | 819,620 | spectral filter, K 256 | 2.0 | 3.00 / 6.00 "
        "| 1.00 / 0.50 | 150 (R̃+R̃ᵀ 60, low-pass 60, lists 30) | 0.5 |"
    )
    assert [ln.split(" | ")[3] for ln in table[1:]] == [
        "spectral filter, K 64",
        "embedding, d 64, exact",
        "spectral filter, K 64",
    ]
    assert table[2].endswith("| 100 (vectors 100, lists none) | 0.5 |")
    growth = next(ln for ln in lines if ln.startswith("- spectral filter, K 64"))
    assert "fitted on 2 points (100,000–1,000,000 items)" in growth
    assert "memory ∝ items^1.00 (extrapolated to 10M items: 20,000 MB)" in growth
    assert "single-query p50 ∝ items^1.00 (extrapolated to 10M items: 400.0 ms)" in growth
    assert not any(ln.startswith("- embedding") for ln in lines)  # one point: no fit
    assert not any(ln.startswith("- spectral filter, K 256") for ln in lines)  # Gowalla only
    only = report.render("<!-- serving_spectral: dataset=gowalla -->", [], None, None, rows)
    assert "| synthetic |" not in only
    assert report.loglog_slope([1.0, 10.0, 100.0], [3.0, 30.0, 300.0]) == pytest.approx(1.0)


def test_replica_memory_directive_renders_the_workers_rows():
    run = {
        "command": "python bench/replica_memory.py --workers 2",
        "machine": "2 CPUs",
        "rows": [
            {
                "code": "abc1234",
                "n_users": 29858,
                "n_items": 40981,
                "dim": 64,
                "workers": 2,
                "stored_lists": True,
                "rss_mb": [180.4, 181.6],
                "pss_mb": [120.2, 121.0],
                "pss_total_mb": 241.2,
                "load_s": 1.234,
            },
            {
                "code": "abc1234",
                "n_users": 10,
                "n_items": 20,
                "dim": 8,
                "workers": 3,
                "stored_lists": False,
                "rss_mb": [1.0, 1.0, 1.0],
                "pss_mb": [1.0, 1.0, 1.0],
                "pss_total_mb": 3.0,
                "load_s": 0.1,
            },
        ],
    }
    directive = "<!-- replica_memory: dataset=synthetic workers=2 -->"
    text = report.render(directive, [], replica_workers=run)
    body = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert body == [
        "| `abc1234` | 29,858 x 40,981, d 64 | the artifact's | 180 / 182 | 120 / 121 | 241 | 1.2 |"
    ]
    assert "Command: `python bench/replica_memory.py --workers 2`" in text
    assert "(no rows recorded yet)" in report.render(directive, [])


def scale_index_row(method: str, index: str, kind: str, rec: float, p50: float) -> dict:
    return {
        "dataset": "synthetic_large 1000x500-s0",
        "method": method,
        "index": index,
        "index_kind": kind,
        "recall@20": rec,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "build_s": 12.34,
        "build_threads": 2,
        "queries": 1000,
        "loadavg_before": 1.0,
        "loadavg_after": 2.0,
        "machine": "m",
        "command": "python bench/serve_scale.py",
        "commit": "abc",
    }


def test_serving_scale_directive_renders_training_and_index_rows():
    train = [
        {
            "dataset": "synthetic_large 1000x500-s0",
            "users": 1000,
            "items": 500,
            "interactions": 38_000,
            "method": "MF-DirectSpec+",
            "epochs": 2,
            "seconds_per_epoch": [401.2, 399.6],
            "peak_rss_mib_fit": 5123.4,
            "recall@20_sample": 0.12345,
            "popularity_recall@20_sample": 0.0512,
            "eval_users": 5000,
            "erank_normalized": 60.04,
            "config": {"dim": 64},
            "loadavg_before": 2.5,
            "loadavg_after": 3.0,
            "machine": "m",
            "command": "python bench/serve_scale.py",
            "commit": "abc",
        }
    ]
    index = [
        scale_index_row("MF-DirectSpec+", "exact (numpy)", "flat", 1.0, 10.0),
        scale_index_row("MF-DirectSpec+", "IVF nlist=22, nprobe=8", "ivf", 0.9, 0.5),
        scale_index_row("MF-DirectSpec+", "IVF nlist=22, nprobe=16", "ivf", 0.96, 0.9),
        scale_index_row("MF-DirectSpec+", "HNSW M=32, efC=80, efSearch=64", "hnsw", 0.97, 1.1),
        scale_index_row("MF-BPR", "IVF nlist=22, nprobe=8", "ivf", 0.5, 0.4),
    ]
    directive = "<!-- serving_scale: dataset=synthetic_large* -->"
    text = report.render(directive, [], serving_scale=index, training_scale=train)
    lines = text.splitlines()
    assert (
        "| 1,000 x 500, 38,000 interactions | MF-DirectSpec+ | 2 | 401 / 400 | 5,123 | "
        "0.1235 (5,000 users) | 0.0512 | 60.0 (64) | 2.5 / 3.0 |"
    ) in lines
    assert (
        "| MF-DirectSpec+ | IVF nlist=22, nprobe=16 | 12.3 (2) | 0.960 | 0.90 | 1.80 | 1.0 / 2.0 |"
        in lines
    )
    assert (
        "Fastest approximate setting with recall@20 >= 0.95 per set of vectors: MF-DirectSpec+: "
        "IVF nlist=22, nprobe=16 (recall@20 0.960, p50 0.90 ms); MF-BPR: no approximate setting "
        "reached recall@20 0.95."
    ) in lines
    assert sum(ln.startswith("| MF-") for ln in lines) == 5
    other = report.render("<!-- serving_scale: dataset=gowalla -->", [], serving_scale=index)
    assert "(no rows recorded yet)" in other


def publish_row(**kw) -> dict:
    base = {
        "objective": "directspec+",
        "users": 1_000_000,
        "items": 1_000_000,
        "seen": 37_974_275,
        "index": "ivf",
        "index_params": {"nlist": 1000, "nprobe": 64},
        "index_recall": 0.96665,
        "index_choice_s": 335.634,
        "publish_s": [9.287, 10.353],
        "spectrum_s": 68.47,
        "artifact_mib": 946.2,
        "index_mib": 252.02,
        "cold_start_s": 6.7577,
        "rss_ready_mib": 1370.57,
        "peak_rss_cold_mib": 1670.87,
        "rss_steady_mib": 1370.57,
        "swap_s": 6.2985,
        "peak_rss_swap_mib": 2943.02,
        "rss_after_swap_mib": 1687.32,
        "http": [
            {
                "connections": 8,
                "floor_rps": 3890.25,
                "recommend_rps": 2079.59,
                "ratio": 0.5346,
                "recommend_p50_ms": 1.98,
                "recommend_p99_ms": 21.92,
                "errors": 0,
            }
        ],
        "rss_ready_over_artifact": 1370.57 / 946.2,
        "peak_rss_swap_over_artifact": 2943.02 / 946.2,
        "threads": "uvicorn 1 worker; search on one thread",
        "machine": "2 CPUs (x86_64), Python 3.11.7, load average before the run 2.79",
        "loadavg_before": 3.577,
        "loadavg_after": 2.787,
        "command": "python bench/publish_scale.py --objective directspec+",
        "commit": "5196066",
    }
    return base | kw


def test_publish_scale_directive_renders_the_latest_run_and_its_http_rows():
    rows = [publish_row(cold_start_s=99.0, commit="old"), publish_row()]
    lines = report.render("<!-- publish_scale -->", [], publish_scale=rows).splitlines()
    for expected in (
        "| model | 1,000,000 users x 1,000,000 items, 37,974,275 seen pairs, directspec+ vectors |",
        "| index choice at publish | IVF nlist 1000, nprobe 64, recall@20 0.967: 335.6 s |",
        "| publish (first version, then the one swapped in) | 9.3 s, 10.4 s |",
        "| artifact (of which the item index) | 946 MiB (252 MiB) |",
        "| cold start: process start to /readyz 200 | 6.76 s |",
        "| RSS at ready (/ artifact) | 1,371 MiB (1.45x) |",
        "| peak RSS during the swap (/ artifact) | 2,943 MiB (3.11x) |",
        "| load average before / after | 3.6 / 2.8 |",
        "| 8 | 3,890 | 2,080 | 0.53 | 1.98 | 21.92 | 0 |",
    ):
        assert expected in lines
    assert not any("99.00 s" in ln for ln in lines)  # the earlier run is not shown
    # the machine string's load average was read after the run: the loadavg fields say it
    assert (
        "Machine: 2 CPUs (x86_64), Python 3.11.7. Commit: 5196066. "
        "Command: `python bench/publish_scale.py --objective directspec+`."
    ) in lines
    assert report.render("<!-- publish_scale -->", []).splitlines()[1:] == [
        "(no rows recorded yet)"
    ]


def test_publish_scale_shows_the_latest_run_of_each_set_of_vectors():
    rows = [
        publish_row(cold_start_s=11.0),
        publish_row(objective="bpr", cold_start_s=22.0),
        publish_row(cold_start_s=33.0),
    ]
    lines = report.render("<!-- publish_scale -->", [], publish_scale=rows).splitlines()
    assert [ln for ln in lines if ln.startswith("**")] == [
        "**directspec+ vectors**",
        "**bpr vectors**",
    ]
    cold = [ln for ln in lines if ln.startswith("| cold start")]
    assert cold == [
        "| cold start: process start to /readyz 200 | 33.00 s |",
        "| cold start: process start to /readyz 200 | 22.00 s |",
    ]


def growth_row(users: int, items: int, **kw) -> dict:
    """A serve_growth row whose costs are exact powers of the items: p50 ∝ items^0.5,
    exact p50 ∝ items, load ∝ items^1.5, RSS less imports (100 MiB) and artifact ∝ items."""
    base = {
        "vectors": "directspec+",
        "users": users,
        "items": items,
        "seen": users * items // 25_000,
        "index": "ivf",
        "index_params": {"nlist": 1000, "nprobe": 64},
        "recall@20": 0.96665,
        "p50_ms": 1e-3 * items**0.5,
        "p99_ms": 5e-3 * items**0.5,
        "exact_p50_ms": 1e-5 * items,
        "searches_per_s_one_thread": 1000 / (1e-3 * items**0.5),
        "build_s": 9.1015,
        "index_reused": False,
        "artifact_mib": 8e-4 * items,
        "load_s": 1e-8 * items**1.5,
        "rss_mib": 100.0 + 1e-3 * items,
        "peak_rss_mib": 150.0 + 1e-3 * items,
        "rss_before_load_mib": 100.0,
        "rss_over_artifact": (100.0 + 1e-3 * items) / (8e-4 * items),
        "rss_loaded_over_artifact": 1.25,
        "machine": "2 CPUs (x86_64), Python 3.11.7, load average before the run 2.21",
        "loadavg_before": 2.07,
        "loadavg_after": 3.41,
        "command": "python bench/serve_growth.py --objective directspec+",
        "commit": "18f9a53",
    }
    return base | kw


def test_serving_growth_renders_items_and_users_tables_and_the_extrapolated_row():
    rows = [
        growth_row(10_000, 10_000, p50_ms=50.0),  # measured again below: the last row counts
        growth_row(100_000, 1_000_000, index_reused=True),
        growth_row(1_000_000, 1_000_000, index_reused=True),
        growth_row(100_000, 100_000),
        growth_row(10_000, 10_000),
    ]
    lines = report.render("<!-- serving_growth -->", [], serving_growth=rows).splitlines()
    items_head = next(i for i, ln in enumerate(lines) if ln.startswith("| items | users |"))
    assert lines[items_head + 2 : items_head + 6] == [
        "| 10,000 | 10,000 | 4,000 | IVF nlist 1000, nprobe 64 | 0.967 | 0.10 / 0.50 | 0.10 "
        "| 10,000 | 9.10 | 0.01 | 110 (160) | 8 | 13.75 (1.25) |",
        "| 100,000 | 100,000 | 400,000 | IVF nlist 1000, nprobe 64 | 0.967 | 0.32 / 1.58 "
        "| 1.00 | 3,162 | 9.10 | 0.32 | 200 (250) | 80 | 2.50 (1.25) |",
        "| 1,000,000 | 1,000,000 | 40,000,000 | IVF nlist 1000, nprobe 64 * | 0.967 "
        "| 1.00 / 5.00 | 10.00 | 1,000 | 9.10 | 10.00 | 1,100 (1,150) | 800 | 1.38 (1.25) |",
        # 10^7: p50 1 x 10^0.5, exact 10 x 10, load 10 x 10^1.5, RSS 100 + 1000 x 10,
        # artifact 800 x 10
        "| 10⁷ (extrapolated) | 10⁷ |  |  |  | 3.16 / – | 100 |  |  | 316 | 10,100 | 8,000 "
        "| 1.26 (1.25) |",
    ]
    slopes = next(ln for ln in lines if ln.startswith("The 10⁷ row is extrapolated"))
    assert "over the 3 measured rows above" in slopes
    assert (
        "p50 ∝ items^0.50, exact p50 ∝ items^1.00, replica load ∝ items^1.50, "
        "RSS less imports ∝ items^1.00, artifact ∝ items^1.00."
    ) in slopes
    users_head = next(i for i, ln in enumerate(lines) if ln.startswith("| users | items |"))
    assert [ln.split(" | ")[:2] for ln in lines[users_head + 2 : users_head + 4]] == [
        ["| 100,000", "1,000,000"],
        ["| 1,000,000", "1,000,000"],
    ]
    assert lines[users_head + 4] == ""  # two rows at 10^6 items, no more
    assert any(ln.startswith("\\* the index and its choice") for ln in lines)
    assert "Load average during the rows: 2.1–3.4." in lines[-1]
    one = report.render("<!-- serving_growth -->", [], serving_growth=[growth_row(10, 10)])
    assert "extrapolated" not in one  # one size: no slope to fit
    assert report.render("<!-- serving_growth -->", []).splitlines()[1:] == [
        "(no rows recorded yet)"
    ]


def test_extrapolate_fits_the_log_log_slope_and_scales_the_largest_row():
    rows = [growth_row(n, n) for n in (10_000, 100_000, 1_000_000)]
    fit = report.extrapolate(rows, items=10_000_000)
    assert fit is not None and (fit.base_items, fit.fitted) == (1_000_000, 3)
    assert fit.slopes["p50_ms"] == pytest.approx(0.5)
    assert fit.slopes["rss_loaded_mib"] == pytest.approx(1.0)
    assert fit.values["load_s"] == pytest.approx(1e-8 * 1e7**1.5)
    assert fit.values["rss_mib"] == pytest.approx(100.0 + 1e-3 * 1e7)
    assert report.extrapolate(rows[:1]) is None
