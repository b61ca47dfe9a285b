"""specrec-train end to end on a tiny dataset; bad input exits 2 with a one-line message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from contract.artifact import ModelRegistry
from contract.config import TrainConfig
from trainer.cli import config_from_args, main, parse_args
from trainer.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-data")
    write_dataset(out, n_users=100, n_items=60, seed=2)
    return out


def small_args(data_dir: Path, *extra: str) -> list[str]:
    return ["--data", str(data_dir), "--epochs", "2", "--dim", "8", "--no-progress", *extra]


def test_trains_and_publishes_a_loadable_artifact(data_dir, tmp_path, capsys):
    models = tmp_path / "models"
    rc = main(small_args(data_dir, "--models-dir", str(models), "--lr", "300", "--ks", "5", "20"))
    out = capsys.readouterr().out
    assert rc == 0
    loaded = ModelRegistry(models).load()
    assert loaded.arrays.user_emb.shape == (100, 8)
    assert loaded.arrays.item_emb.shape[1] == 8
    manifest = loaded.manifest
    cfg = manifest.config.to_dict()
    assert cfg["lr"] == 300.0 and cfg["ks"] == [5, 20]
    assert cfg["epochs"] == 2 and manifest.config.objective == "directspec+"
    # the printed table shows the published metrics
    printed = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("recall@"))
    assert float(printed["recall@20"]) == pytest.approx(manifest.metrics["recall@20"], abs=1e-4)
    assert "recall@5" in printed
    # refit by default: the published model saw every pair, the metrics are the split run's
    n_pairs = len(loaded.arrays.seen_indices)
    assert (
        manifest.to_dict()["trained_on"]["pairs"] == "all"
        and manifest.to_dict()["trained_on"]["n_pairs"] == n_pairs
    )
    evaluated = manifest.to_dict()["trained_on"]["evaluated_on"]
    assert evaluated["train_pairs"] + evaluated["test_pairs"] == n_pairs
    assert manifest.to_dict()["metrics"]["n_users"] == 100  # every user has held-out pairs
    assert f"published {loaded.version} to {models} (fitted on all {n_pairs} pairs)" in out


def test_no_refit_publishes_the_evaluation_run(data_dir, tmp_path, capsys):
    models = tmp_path / "models"
    rc = main(small_args(data_dir, "--models-dir", str(models), "--no-refit"))
    assert rc == 0
    loaded = ModelRegistry(models).load()
    trained_on = loaded.manifest.to_dict()["trained_on"]
    assert trained_on["pairs"] == "train"
    assert trained_on["n_pairs"] == trained_on["evaluated_on"]["train_pairs"]
    # seen is every known pair all the same
    assert len(loaded.arrays.seen_indices) == sum(trained_on["evaluated_on"].values())
    assert "(fitted on the train pairs)" in capsys.readouterr().out


def test_refit_without_publishing_exits_2(data_dir, tmp_path, capsys):
    rc = main(small_args(data_dir, "--no-publish", "--refit"))
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "specrec-train: error: --refit needs publishing (drop --no-publish)"
    )


def test_no_publish_writes_nothing(data_dir, tmp_path, capsys):
    models = tmp_path / "models"
    rc = main(small_args(data_dir, "--models-dir", str(models), "--no-publish"))
    assert rc == 0
    assert not models.exists()
    assert "recall@20" in capsys.readouterr().out


def test_objective_defaults_apply(data_dir, tmp_path, capsys):
    models = tmp_path / "models"
    rc = main(small_args(data_dir, "--models-dir", str(models), "--objective", "bpr"))
    assert rc == 0
    cfg = ModelRegistry(models).load().manifest.config.to_dict()
    assert (cfg["optimizer"], cfg["lr"], cfg["reg"]) == ("sparse_adam", 1e-3, 1e-4)


def test_missing_dataset_exits_2_with_message(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = main(["--data", str(missing), "--no-publish"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(missing) in err and "Traceback" not in err


def test_malformed_file_exits_2_naming_the_line(tmp_path, capsys):
    bad = tmp_path / "interactions.csv"
    bad.write_text("user_id,item_id\nu1,i1\nu2\n")
    rc = main(["--data", str(bad), "--no-publish"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "line 3" in err and "Traceback" not in err


def test_invalid_hyperparameter_exits_2(data_dir, capsys):
    rc = main(small_args(data_dir, "--lr", "-1", "--no-publish"))
    assert rc == 2
    assert "lr: -1.0, expected a finite number > 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--objective", "softmax"], "objective: 'softmax', expected one of"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["--shrink_norm", "0.1"], "unrecognized arguments: --shrink_norm"),  # kebab only
        (["--lr", "abc"], "lr: 'abc', expected a finite number > 0"),
        (["--epochs", "2.5"], "epochs: '2.5', expected an integer in [1, 100000]"),
        (["--ks", "0", "20"], "ks: 0, expected one or more integers in [1, 1000]"),
        (["--no-publish=yes"], "--no-publish"),
    ],
)
def test_bad_options_exit_2_with_one_line(data_dir, capsys, args, fragment):
    rc = main(small_args(data_dir, *args))
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err and err.startswith("specrec-train: error: "), err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_data_exits_2(capsys):
    assert main(["--lr", "1"]) == 2
    assert "required: --data" in capsys.readouterr().err


def run_help() -> str:
    """``python -m trainer.cli --help``, on lines long enough not to break a word at a hyphen."""
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "--help"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_lists_every_trainconfig_field_with_its_docstring():
    """The options are generated from TrainConfig: one per field, its docstring the help."""
    text = run_help()
    flat = " ".join(text.split())
    assert text.startswith("usage: specrec-train ")
    for name, info in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"^  {re.escape(flag)}\b", text, re.MULTILINE), flag
        doc = " ".join((info.description or "").split())
        assert doc and doc in flat, name
    assert "--adaptive-tau, --no-adaptive-tau" in text
    assert "Expected: an integer in [1, 4096]." in flat  # --dim's range, from its Field
    for option in ("--data", "--models-dir", "--keep", "--no-publish", "--no-activate"):
        assert f"  {option}" in text
    assert "--no-progress" in text and "--holdout" in text and "--split-seed" in text


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--shrink-norm", "0.02", "--lr-decay=1"], {"shrink_norm": 0.02, "lr_decay": 1.0}),
        (["--adaptive-tau", "--tau0", "2"], {"adaptive_tau": True, "tau0": 2.0}),
        (["--no-adaptive-tau"], {"adaptive_tau": False}),
        (["--ks", "5", "20"], {"ks": (5, 20)}),
        (["--ks", "5,20,50"], {"ks": (5, 20, 50)}),
        (["--tau0", "auto", "--device", "auto"], {"tau0": None, "device": None}),
        (["--objective", "bpr", "--early-stop-patience", "3"], {"optimizer": "sparse_adam"}),
        (["--preset", "gowalla-fast"], {"lr": 1000.0, "shrink_norm": 0.1, "tau": 4.0}),
        (["--preset", "gowalla-reference", "--lr", "150"], {"lr": 150.0, "alpha": 0.7}),
    ],
)
def test_options_parse_onto_the_objective_defaults(args, expect):
    opts = parse_args(["--data", "x", *args])
    cfg = config_from_args(opts)
    assert {k: getattr(cfg, k) for k in expect} == expect
    objective = opts.objective
    given = {k for k in opts.model_fields_set if k in TrainConfig.model_fields}
    untouched = set(TrainConfig.model_fields) - given - {"objective", "encoder"}
    ref = TrainConfig.defaults(objective, opts.encoder, preset=opts.preset)
    assert {k: getattr(cfg, k) for k in untouched} == {k: getattr(ref, k) for k in untouched}


def test_flags_of_the_run():
    opts = parse_args(["--data", "d", "--no-publish", "--no-activate", "--keep", "2"])
    assert (opts.no_publish, opts.no_activate, opts.no_progress, opts.keep) == (
        True,
        True,
        False,
        2,
    )
    assert opts.models_dir is None and str(opts.data) == "d"
    assert opts.refit is None  # auto: refit when publishing
    assert parse_args(["--data", "d", "--refit"]).refit is True
    assert parse_args(["--data", "d", "--no-refit"]).refit is False


def test_the_readme_example_parses():
    args = "--data ../shared/data/gowalla --lr 200 --alpha 0.7 --tau 4 --shrink-norm 0.02"
    cfg = config_from_args(parse_args([*args.split(), "--epochs", "300"]))
    assert (cfg.lr, cfg.alpha, cfg.tau, cfg.shrink_norm, cfg.epochs) == (200.0, 0.7, 4.0, 0.02, 300)
    assert cfg.lr_decay == TrainConfig.defaults().lr_decay


def test_no_environment_variable_sets_a_hyperparameter(monkeypatch):
    for name in ("lr", "LR", "epochs", "EPOCHS", "data", "SPECREC_LR", "dim"):
        monkeypatch.setenv(name, "7")
    opts = parse_args(["--data", "x"])
    assert opts.model_fields_set == {"data"}
    assert config_from_args(opts) == TrainConfig.defaults()


def test_default_registry_follows_the_same_variables_as_the_api(monkeypatch, tmp_path) -> None:
    from trainer.cli import default_models_dir

    monkeypatch.delenv("SPECREC_MODELS_DIR", raising=False)
    monkeypatch.setenv("SPECREC_HOME", str(tmp_path / "home"))
    assert default_models_dir() == tmp_path / "home" / "models"
    monkeypatch.setenv("SPECREC_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert default_models_dir() == tmp_path / "elsewhere"


def test_at_a_terminal_draws_a_progress_bar_and_publishes(data_dir, tmp_path):
    """The console script under a pseudo-terminal: stderr is a TTY, so the tqdm bar is drawn
    (the path that crashed when tqdm was not a declared dependency)."""
    models = tmp_path / "models"
    exe = Path(sys.executable).parent / "specrec-train"
    args = ["--data", str(data_dir), "--epochs", "3", "--dim", "8", "--models-dir", str(models)]
    child = pexpect.spawn(str(exe), args, encoding="utf-8", dimensions=(40, 160), timeout=120)
    out = child.read()  # until EOF
    child.close()
    assert child.exitstatus == 0, out
    assert re.search(r"\| *3/3 \[\d\d:\d\d<00:00", out), out
    assert ModelRegistry(models).current() is not None
