"""Data-parallel training (trainer.distributed) on CPU with gloo and 2 real torchrun ranks.

The exactness tests run ``specrec-train --nproc-per-node 2`` and compare the published
embeddings with a single-process computation of the same thing: both ranks' batches drawn with
their seeds, their gradients averaged, one step at the world-scaled lr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.artifact import ModelRegistry
from contract.config import TrainConfig
from trainer.data import load_dataset
from trainer.distributed import World, pack_rows, shard_rows, unpack_rows
from trainer.evaluate import evaluate
from trainer.objectives import BatchLoss
from trainer.optim import RowAdam, build_optimizer
from trainer.sampling import CSR, PairSampler, UserItemSampler
from trainer.synthetic import write_dataset
from trainer.train import build_encoder, groups, row_catch_up


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist-data")
    write_dataset(out, n_users=150, n_items=90, seed=5)
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def reference_run(data_dir: Path, cfg: TrainConfig, world: int) -> tuple[np.ndarray, np.ndarray]:
    """One process doing what `world` ranks do together: per step, every rank's batch (drawn
    from that rank's generator), gradients averaged, one optimiser step."""
    from trainer.distributed import rank_seed

    torch.manual_seed(cfg.seed)
    ds = load_dataset(data_dir)
    train = ds.train_matrix()
    cpu = torch.device("cpu")
    enc = build_encoder(cfg, train, cpu, torch.Generator().manual_seed(cfg.seed))
    opt = build_optimizer(cfg, enc, lr_scale=world)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    graph = CSR(train, cpu)
    gens = [torch.Generator().manual_seed(rank_seed(cfg.seed + 1, r)) for r in range(world)]
    if cfg.sampler == "user":
        samplers = [UserItemSampler(graph, cfg.batch_size, g, world_size=world) for g in gens]
    else:
        samplers = [
            PairSampler(
                graph, cfg.batch_size, g, negatives=cfg.objective == "bpr", world_size=world
            )
            for g in gens
        ]
    loss = BatchLoss(cfg, enc, graph, None)
    catch_up = row_catch_up(opt, enc)
    params = list(enc.parameters())
    for _ in range(cfg.epochs):
        per_rank = [groups(s.epoch(), cfg.sub_batches) for s in samplers]
        for step_groups in zip(*per_rank, strict=True):
            if catch_up is not None:
                catch_up(tuple(b for g in step_groups for b in g))
            grads: list[list[torch.Tensor]] = []
            for g in step_groups:
                opt.zero_grad(set_to_none=True)
                loss.summed(g).backward()
                grads.append([p.grad.clone() for p in params])
            for k, p in enumerate(params):
                total = grads[0][k]
                for other in grads[1:]:
                    total = total + other[k]
                p.grad = (total / world).coalesce() if total.is_sparse else total / world
            opt.step()
        sched.step()
        if isinstance(opt, RowAdam):
            opt.flush()
    with torch.no_grad():
        u, i = enc.final()
    return u.detach().numpy().copy(), i.detach().numpy().copy()


CASES = {
    # plain SGD on sparse rows: the rows of both ranks travel in one all_gather
    "mf-directspec+": ["--encoder", "mf", "--objective", "directspec+", "--lr", "150"],
    # sparse_adam: rows brought up to date per rank, the step on the union of both ranks' rows
    "mf-bpr": ["--encoder", "mf", "--objective", "bpr", "--batch-size", "128"],
    # dense gradients (all_reduce), one propagation shared by two sub-batches
    "lightgcn-directspec+": [
        "--encoder",
        "lightgcn",
        "--objective",
        "directspec+",
        "--sub-batches",
        "2",
        "--n-layers",
        "2",
    ],
}


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_match_one_process_averaging_both_ranks_gradients(case, data_dir, tmp_path):
    models = tmp_path / "models"
    # --no-refit: the published embeddings are the run on the split, which reference_run repeats
    args = [*CASES[case], "--epochs", "2", "--eval-every", "1", "--dim", "16", "--seed", "3"]
    args.append("--no-refit")
    proc = run_cli(
        "--data", str(data_dir), "--models-dir", str(models), "--nproc-per-node", "2", *args
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = ModelRegistry(models).load()
    cfg = TrainConfig.from_dict(loaded.manifest.config.to_dict())
    u_ref, i_ref = reference_run(data_dir, cfg, world=2)
    np.testing.assert_allclose(loaded.arrays.user_emb, u_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.arrays.item_emb, i_ref, rtol=1e-5, atol=1e-6)
    # the sharded evaluation equals one evaluation of every user
    ds = load_dataset(data_dir)
    whole = evaluate(
        torch.from_numpy(u_ref), torch.from_numpy(i_ref), ds.train_matrix(), ds.test_matrix()
    )
    metrics = loaded.manifest.metrics
    assert metrics["n_users"] == whole["n_users"] == 150
    for key in ("recall@20", "ndcg@20", "recall@10"):
        assert metrics[key] == pytest.approx(whole[key], abs=1e-5)
    dist_info = loaded.manifest.training.distributed
    assert dist_info == {"world_size": 2, "backend": "gloo", "devices": ["cpu", "cpu"]}
    assert "ranks               2" in proc.stdout or "ranks" in proc.stdout


def test_the_documented_multi_node_form_trains_one_model(data_dir, tmp_path):
    """docs/distributed.md's several-machines command, as two torchrun agents ("nodes") of
    one process each meeting at a c10d rendezvous on this machine: one model, world size 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "test",
        "-m",
        "trainer.cli",
        "--data",
        str(data_dir),
        "--epochs",
        "1",
        "--dim",
        "8",
        "--no-progress",
        "--models-dir",
        str(models),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [node.communicate(timeout=180)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0]
    assert sum("published" in out for out in outs) == 1  # global rank 0 only
    registry = ModelRegistry(models)
    assert len(registry.versions()) == 1
    manifest = registry.load().manifest
    assert manifest.training.distributed["world_size"] == 2
    assert manifest.trained_on.pairs == "all"  # both ranks refitted on every pair


def test_the_two_rank_run_differs_from_one_rank(data_dir, tmp_path):
    """The reference above is not trivially the one-process run: with 2 ranks the batches and
    the step count differ, so the embeddings do too (the exactness test can fail)."""
    cfg = TrainConfig.defaults("directspec+", "mf", epochs=1, dim=16, seed=3, lr=150.0)
    u2, _ = reference_run(data_dir, cfg, world=2)
    u1, _ = reference_run(data_dir, cfg, world=1)
    assert np.abs(u2 - u1).max() > 1e-3


def test_a_one_rank_run_is_the_plain_run(data_dir, tmp_path):
    models = tmp_path / "models"
    args = ["--epochs", "1", "--dim", "16", "--seed", "3", "--lr", "150", "--no-refit"]
    assert run_cli("--data", str(data_dir), "--models-dir", str(models), *args).returncode == 0
    loaded = ModelRegistry(models).load()
    cfg = TrainConfig.from_dict(loaded.manifest.config.to_dict())
    u_ref, _ = reference_run(data_dir, cfg, world=1)
    np.testing.assert_allclose(loaded.arrays.user_emb, u_ref, rtol=1e-5, atol=1e-6)
    assert loaded.manifest.training.distributed == {
        "world_size": 1,
        "backend": None,
        "devices": ["cpu"],
    }


def test_rows_travel_bit_exact_with_padding_dropped():
    rows_a = torch.tensor([0, 7, 2**31 - 1])
    vals_a = torch.tensor([[1.0, -2.0], [float("nan"), 3.5], [1e-30, 4.0]])
    rows_b = torch.tensor([5])
    vals_b = torch.tensor([[9.0, 8.0]])
    packed = pack_rows([rows_a, rows_b], [vals_a, vals_b], [4, 2], 2)
    assert packed.shape == (6, 4)
    other = pack_rows([rows_b, rows_a[:1]], [vals_b, vals_a[:1]], [4, 2], 2)
    gathered = torch.cat([packed, other])  # what all_gather concatenates from 2 ranks
    rows, vals = unpack_rows(gathered, 0)
    assert rows.tolist() == [0, 7, 2**31 - 1, 5]
    assert torch.equal(vals[[0, 2, 3]], torch.cat([vals_a[[0, 2]], vals_b]))
    assert torch.isnan(vals[1, 0]) and vals[1, 1] == 3.5
    rows, vals = unpack_rows(gathered, 1)
    assert rows.tolist() == [5, 0] and vals.tolist() == [[9.0, 8.0], [1.0, -2.0]]
    with pytest.raises(RuntimeError, match="over its bound"):
        pack_rows([rows_a], [vals_a], [2], 2)


def test_each_rank_evaluates_its_share_of_the_users(data_dir):
    test = load_dataset(data_dir).test_matrix()
    shards = [
        shard_rows(test, World(rank=r, size=3, local_rank=r, backend="gloo")) for r in range(3)
    ]
    counts = [np.diff(s.indptr) for s in shards]
    for r, c in enumerate(counts):
        rows = np.flatnonzero(c)
        assert (rows % 3 == r).all()
    assert (sum(shards) != test).nnz == 0  # together: every test pair once


def test_the_launch_option_is_taken_off_the_ranks_command_line():
    from trainer.launch import without_option

    argv = ["--data", "d", "--nproc-per-node", "2", "--lr", "3", "--nproc-per-node=4", "--x"]
    assert without_option(argv, "--nproc-per-node") == ["--data", "d", "--lr", "3", "--x"]
    assert without_option(["--nproc-per-nodes", "1"], "--nproc-per-node") == [
        "--nproc-per-nodes",
        "1",
    ]


def test_a_two_rank_run_resumes_with_two_ranks_only(data_dir, tmp_path, capsys):
    """Rank 0 writes the checkpoint with both ranks' generators; two ranks resumed from the
    epoch-2 checkpoint of a 4-epoch run publish the uninterrupted run's model; one process
    is refused (its batches would come from other generators)."""
    from trainer import cli
    from trainer.checkpoint import list_checkpoints, load_checkpoint

    ckpt = tmp_path / "ckpt"
    args = [*CASES["mf-bpr"], "--epochs", "4", "--eval-every", "2", "--dim", "8", "--seed", "3"]
    args += ["--data", str(data_dir), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2"]
    whole = run_cli(*args, "--models-dir", str(tmp_path / "a"), "--nproc-per-node", "2")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert [e for e, _ in list_checkpoints(ckpt)] == [2, 4]
    state = load_checkpoint(ckpt / "epoch-000002.pt")
    assert state.world_size == 2 and len(state.rng) == 2
    assert not torch.equal(state.rng[0]["sample"], state.rng[1]["sample"])

    (ckpt / "epoch-000004.pt").unlink()
    resumed = run_cli(
        *args, "--resume", "--models-dir", str(tmp_path / "b"), "--nproc-per-node", "2"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the epoch-2 checkpoint" in resumed.stderr
    a, b = ModelRegistry(tmp_path / "a").load(), ModelRegistry(tmp_path / "b").load()
    assert np.array_equal(a.arrays.user_emb, b.arrays.user_emb)
    assert np.array_equal(a.arrays.item_emb, b.arrays.item_emb)
    assert a.manifest.metrics == b.manifest.metrics
    history = [
        [{k: v for k, v in e.items() if k != "seconds"} for e in m.manifest.training.history]
        for m in (a, b)
    ]
    assert history[0] == history[1] and [e["epoch"] for e in history[0]] == [2, 4]
    assert (
        a.manifest.training.to_dict()["resumed_from"],
        b.manifest.training.to_dict()["resumed_from"],
    ) == (
        None,
        2,
    )

    capsys.readouterr()
    assert cli.main([*args, "--resume", "--no-publish", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "it was written by 2 rank(s), this run has 1" in err
