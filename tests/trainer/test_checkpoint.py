"""Checkpoints (trainer.checkpoint): a run stopped after epoch 2 of 4 and resumed equals the
uninterrupted run bit for bit; the optimiser's state round-trips; files are written atomically
and only the newest are kept; a checkpoint of another run is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.config import TrainConfig
from trainer import cli
from trainer.checkpoint import (
    CheckpointMismatch,
    CheckpointOptions,
    TrainState,
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from trainer.data import Dataset, load_dataset
from trainer.encoders import MF
from trainer.optim import RowAdam
from trainer.synthetic import write_dataset
from trainer.train import TrainingCancelled, TrainResult, fit


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt-data")
    write_dataset(out, n_users=120, n_items=80, seed=2)
    return out


@pytest.fixture(scope="module")
def ds(data_dir) -> Dataset:
    return load_dataset(data_dir)


def cancel_before(epoch: int):
    """A should_stop that says stop when polled before `epoch` (it is polled once per epoch)."""
    polls = iter(range(1, 100))
    return lambda: next(polls) >= epoch


def without_seconds(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def assert_same_run(a: TrainResult, b: TrainResult) -> None:
    assert torch.equal(torch.from_numpy(a.user_emb), torch.from_numpy(b.user_emb))
    assert torch.equal(torch.from_numpy(a.item_emb), torch.from_numpy(b.item_emb))
    assert without_seconds(a.history) == without_seconds(b.history)
    assert a.metrics == b.metrics
    assert (a.epochs_run, a.best_epoch, a.stopped_early) == (
        b.epochs_run,
        b.best_epoch,
        b.stopped_early,
    )


CASES = {
    # plain SGD on MF's sparse rows
    "mf-directspec+": ("directspec+", "mf", {}),
    # RowAdam: deferred per-row steps, flushed at each evaluation (every 3rd epoch: the
    # checkpoint after epoch 2 holds rows with pending deferred steps)
    "mf-bpr": ("bpr", "mf", {"eval_every": 3}),
    # dense SGD on LightGCN's table, two sub-batches per propagation
    "lightgcn-directspec+": ("directspec+", "lightgcn", {"sub_batches": 2, "n_layers": 2}),
    # fused dense Adam
    "lightgcn-bpr": ("bpr", "lightgcn", {"n_layers": 2}),
    # early stopping: the best embeddings and the patience counter live in the checkpoint
    "mf-directspec+-early-stop": (
        "directspec+",
        "mf",
        {"early_stop_patience": 3, "val_fraction": 0.2},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_run_stopped_after_epoch_2_of_4_and_resumed_equals_the_uninterrupted_run(
    case, ds, tmp_path
):
    objective, encoder, extra = CASES[case]
    options = {"epochs": 4, "eval_every": 1, "dim": 16, "batch_size": 64, "seed": 7} | extra
    cfg = TrainConfig.defaults(objective, encoder, device="cpu", **options)
    whole = fit(ds, cfg)

    directory = tmp_path / "ckpt"
    with pytest.raises(TrainingCancelled, match="before epoch 3"):
        fit(ds, cfg, checkpoint=CheckpointOptions(directory), should_stop=cancel_before(3))
    assert [e for e, _ in list_checkpoints(directory)] == [1, 2]

    seen: list[int] = []
    resumed = fit(
        ds,
        cfg,
        checkpoint=CheckpointOptions(directory, resume=True),
        progress=lambda info: seen.append(info["epoch"]),
    )
    assert resumed.resumed_from == 2
    assert seen == [3, 4]  # epochs 1-2 were not run again
    assert_same_run(resumed, whole)
    assert [e for e, _ in list_checkpoints(directory)] == [3, 4]  # the newest two


def test_resuming_without_restoring_the_generators_would_differ(ds, tmp_path, monkeypatch):
    """The comparison above can fail: a resume that leaves the sampler's generator at its seed
    draws other batches, and the embeddings differ."""
    import trainer.train as train_module

    cfg = TrainConfig.defaults("directspec+", "mf", device="cpu", epochs=4, dim=16, seed=7)
    whole = fit(ds, cfg)
    directory = tmp_path / "ckpt"
    with pytest.raises(TrainingCancelled):
        fit(ds, cfg, checkpoint=CheckpointOptions(directory), should_stop=cancel_before(3))
    monkeypatch.setattr(train_module, "_set_rng_states", lambda *args: None)
    resumed = fit(ds, cfg, checkpoint=CheckpointOptions(directory, resume=True))
    assert resumed.resumed_from == 2
    assert not np.array_equal(resumed.user_emb, whole.user_emb)


def test_resume_with_no_checkpoint_yet_is_the_plain_run(ds, tmp_path):
    cfg = TrainConfig.defaults("bpr", "mf", device="cpu", epochs=2, dim=8, seed=1)
    resumed = fit(ds, cfg, checkpoint=CheckpointOptions(tmp_path / "none", every=0, resume=True))
    assert resumed.resumed_from is None
    assert_same_run(resumed, fit(ds, cfg))
    assert not (tmp_path / "none").exists()  # every=0 writes nothing


def test_row_adam_state_round_trips_with_pending_rows_and_exact_dtypes(tmp_path):
    """RowAdam's state (int64 `last`, float64 `F`, the host step count `n`, a pending
    catch-up) survives torch.save/torch.load(weights_only) and load_state_dict: the next steps
    equal the uninterrupted optimiser's."""

    def make():
        torch.manual_seed(0)
        enc = MF(30, 20, 4, sparse=True, generator=torch.Generator().manual_seed(0))
        return enc, RowAdam(list(enc.parameters()), lr=0.05)

    def step(enc, opt, users, items):
        opt.bring_up_to_date(enc.user.weight, users)
        opt.bring_up_to_date(enc.item.weight, items)
        opt.zero_grad(set_to_none=True)
        (enc.user(users) * enc.item(items)).sum().sigmoid().backward()
        opt.step()

    batches = [
        (torch.tensor([0, 3, 5]), torch.tensor([1, 2, 2])),
        (torch.tensor([3, 7]), torch.tensor([4, 9])),
        (torch.tensor([0, 9, 11]), torch.tensor([2, 4, 5])),
        (torch.tensor([5, 12]), torch.tensor([1, 19])),
    ]
    enc_a, opt_a = make()
    for b in batches[:2]:
        step(enc_a, opt_a, *b)
    opt_a.bring_up_to_date(enc_a.item.weight, torch.tensor([4, 5]))  # left pending
    torch.save({"opt": opt_a.state_dict(), "enc": enc_a.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)

    enc_b, opt_b = make()
    enc_b.load_state_dict(saved["enc"])
    opt_b.load_state_dict(saved["opt"])
    for p_a, p_b in zip(enc_a.parameters(), enc_b.parameters(), strict=True):
        s_a, s_b = opt_a.state[p_a], opt_b.state[p_b]
        assert s_a.keys() == s_b.keys()
        for key in ("last", "F", "exp_avg", "step", "r_powers"):
            assert s_b[key].dtype == s_a[key].dtype
            assert torch.equal(s_b[key], s_a[key])
        assert s_b["n"] == s_a["n"] == 2
    assert opt_b.state[enc_b.item.weight]["pending"][0].dtype == torch.int64

    for enc, opt in ((enc_a, opt_a), (enc_b, opt_b)):
        for b in batches[2:]:
            step(enc, opt, *b)
        opt.flush()
    assert torch.equal(enc_a.user.weight, enc_b.user.weight)
    assert torch.equal(enc_a.item.weight, enc_b.item.weight)


def _state(epoch: int, **changes) -> TrainState:
    fields = {
        "epoch": epoch,
        "config": {"lr": 1.0, "epochs": 4},
        "dataset_fingerprint": "abc",
        "world_size": 1,
        "encoder": {"w": torch.arange(6.0).view(2, 3) * epoch},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": epoch},
        "rng": [{"sample": torch.Generator().manual_seed(epoch).get_state()}],
        "progress": {"history": [{"epoch": epoch, "loss": np.float64(0.5)}], "x": float("inf")},
    }
    return TrainState(**(fields | changes))


def test_checkpoints_are_written_whole_and_only_the_newest_two_are_kept(tmp_path):
    for epoch in (2, 4, 6):
        save_checkpoint(_state(epoch), tmp_path, keep=2)
    (tmp_path / ".epoch-000008.pt.123.tmp").write_bytes(b"half a file")  # a crash mid-write
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".epoch-000008.pt.123.tmp",
        "epoch-000004.pt",
        "epoch-000006.pt",
    ]
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-000006.pt"
    back = load_checkpoint(tmp_path / "epoch-000006.pt")
    assert back.epoch == 6
    assert torch.equal(back.encoder["w"], torch.arange(6.0).view(2, 3) * 6)
    assert torch.equal(back.rng[0]["sample"], torch.Generator().manual_seed(6).get_state())
    assert back.progress == {"history": [{"epoch": 6, "loss": 0.5}], "x": float("inf")}
    remove_checkpoints(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(ds, tmp_path):
    cfg = TrainConfig.defaults("directspec+", "mf", device="cpu", epochs=2, dim=8)
    directory = tmp_path / "ckpt"
    fit(ds, cfg, checkpoint=CheckpointOptions(directory))
    other_lr = cfg.model_copy(update={"lr": 99.0})
    with pytest.raises(CheckpointMismatch, match=r"config differs in lr \(180.0 -> 99.0\)"):
        fit(ds, other_lr, checkpoint=CheckpointOptions(directory, resume=True))
    other_data = Dataset(
        name=ds.name,
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train_users=ds.train_users[1:],
        train_items=ds.train_items[1:],
        test_users=ds.test_users,
        test_items=ds.test_items,
    )
    with pytest.raises(CheckpointMismatch, match="the dataset differs"):
        fit(other_data, cfg, checkpoint=CheckpointOptions(directory, resume=True))


def test_a_field_added_after_the_checkpoint_counts_as_its_default(ds, tmp_path):
    """A checkpoint written before TrainConfig gained a field (e.g. blend_weight) resumes when
    the run leaves that field at its default, and is refused when it does not."""
    cfg = TrainConfig.defaults("directspec+", "mf", device="cpu", epochs=2, dim=8)
    directory = tmp_path / "ckpt"
    fit(ds, cfg, checkpoint=CheckpointOptions(directory))
    path = latest_checkpoint(directory)
    assert path is not None
    state = load_checkpoint(path)
    older = {k: v for k, v in state.config.items() if k != "early_stop_min_delta"}
    check_compatible(replace(state, config=older), cfg.to_dict(), ds.fingerprint(), 1)
    changed = cfg.model_copy(update={"early_stop_min_delta": 0.01}).to_dict()
    with pytest.raises(CheckpointMismatch, match=r"early_stop_min_delta \(0.0 -> 0.01\)"):
        check_compatible(replace(state, config=older), changed, ds.fingerprint(), 1)


def test_cli_writes_checkpoints_and_resumes_to_the_uninterrupted_model(data_dir, tmp_path, capsys):
    """specrec-train --checkpoint-dir/--checkpoint-every/--resume: the 4-epoch run's epoch-4
    checkpoint is removed, and --resume from epoch 2 publishes the same model."""
    from contract.artifact import ModelRegistry

    ckpt = tmp_path / "ckpt"
    common = ["--data", str(data_dir), "--no-progress", "--epochs", "4", "--dim", "8"]
    common += ["--encoder", "mf", "--objective", "bpr", "--checkpoint-dir", str(ckpt)]
    assert cli.main([*common, "--models-dir", str(tmp_path / "a"), "--checkpoint-every", "2"]) == 0
    assert [e for e, _ in list_checkpoints(ckpt)] == [2, 4]
    (ckpt / "epoch-000004.pt").unlink()
    capsys.readouterr()
    assert cli.main([*common, "--models-dir", str(tmp_path / "b"), "--resume"]) == 0
    assert "resumed from the epoch-2 checkpoint" in capsys.readouterr().err
    a, b = ModelRegistry(tmp_path / "a").load(), ModelRegistry(tmp_path / "b").load()
    assert np.array_equal(a.arrays.user_emb, b.arrays.user_emb)
    assert np.array_equal(a.arrays.item_emb, b.arrays.item_emb)
    assert a.manifest.metrics == b.manifest.metrics

    assert cli.main([*common, "--resume", "--lr", "0.5", "--no-publish"]) == 2
    err = capsys.readouterr().err
    assert "specrec-train: error: cannot resume from the epoch-4 checkpoint: config differs" in err
    assert "lr (0.001 -> 0.5)" in err
    assert cli.main(["--data", str(data_dir), "--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
