"""specrec-train end to end on a tiny dataset; bad input exits 2 with a one-line message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from contract.artifact import ModelRegistry
from trainer.cli import main
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
    assert manifest["config"]["lr"] == 300.0 and manifest["config"]["ks"] == [5, 20]
    assert manifest["config"]["epochs"] == 2 and manifest["config"]["objective"] == "directspec+"
    # the printed table shows the published metrics
    printed = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("recall@"))
    assert float(printed["recall@20"]) == pytest.approx(manifest["metrics"]["recall@20"], abs=1e-4)
    assert "recall@5" in printed
    assert f"published {loaded.version}" in out


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
    cfg = ModelRegistry(models).load().manifest["config"]
    assert (cfg["optimizer"], cfg["lr"], cfg["reg"]) == ("adam", 1e-3, 1e-4)


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


def test_unknown_choice_is_an_argparse_error(data_dir):
    with pytest.raises(SystemExit) as e:
        main(small_args(data_dir, "--objective", "softmax"))
    assert e.value.code == 2


def test_module_help_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "--shrink-norm" in proc.stdout and "--adaptive-tau" in proc.stdout


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
