"""The trainer's device path against the CPU: the same batches through the same steps give the
same losses and embeddings, the device samplers draw real training pairs, and fit() on the
device reports the metrics of the embeddings it returns.

The device under test is CUDA (``SPECREC_TEST_DEVICE``, default "cuda"); without it these are
skipped. ``SPECREC_TEST_DEVICE=cpu`` runs them CPU against CPU, which checks the tests
themselves where no GPU is (bench/gpu_check.sh runs them on one).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from contract.config import TrainConfig
from trainer.data import Dataset, load_dataset
from trainer.evaluate import evaluate
from trainer.objectives import BatchLoss
from trainer.optim import build_optimizer
from trainer.sampling import CSR, PairSampler, UserItemSampler
from trainer.synthetic import write_dataset
from trainer.train import build_encoder, fit, groups, row_catch_up, train_step

DEVICE = os.environ.get("SPECREC_TEST_DEVICE", "cuda")


def _available(name: str) -> bool:
    return name == "cpu" or (name.startswith("cuda") and torch.cuda.is_available())


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _available(DEVICE), reason=f"needs {DEVICE} (SPECREC_TEST_DEVICE)"),
]

# (objective, encoder, overrides): every objective, both encoders, each optimiser kind
CASES = [
    ("directspec+", "mf", {}),
    ("directspec+", "mf", {"adaptive_tau": True}),
    ("directspec+", "lightgcn", {"sub_batches": 2}),
    ("directspec", "mf", {}),
    ("align", "mf", {}),
    ("bpr", "mf", {}),  # sparse_adam (RowAdam)
    ("bpr", "mf", {"optimizer": "adam"}),
    ("bpr", "lightgcn", {"sub_batches": 2}),
    ("directau", "mf", {}),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("cuda-data")
    write_dataset(out, n_users=150, n_items=90, seed=8)
    return load_dataset(out)


def _run_steps(
    cfg: TrainConfig, train: sp.csr_matrix, batches: list[tuple[torch.Tensor, ...]], device: str
) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Losses of fit()'s step on `batches` (drawn on the CPU) and the final embeddings (CPU)."""
    dev = torch.device(device)
    enc = build_encoder(cfg, train, dev, torch.Generator().manual_seed(0))
    opt = build_optimizer(cfg, enc)
    graph = CSR(train, dev)
    items = CSR(train.T.tocsr(), dev) if cfg.adaptive_tau else None
    loss_fn = BatchLoss(cfg, enc, graph, items)
    hook = row_catch_up(opt, enc)
    losses = []
    for group in groups([tuple(t.to(dev) for t in b) for b in batches], cfg.sub_batches):
        losses.append(float(train_step(loss_fn.summed, opt, group, hook)))
    if hasattr(opt, "flush"):
        opt.flush()
    with torch.no_grad():
        u, i = enc.final()
    return losses, u.detach().cpu(), i.detach().cpu()


@pytest.mark.parametrize(("objective", "encoder", "overrides"), CASES)
def test_training_steps_match_the_cpu(dataset, objective, encoder, overrides) -> None:
    cfg = TrainConfig.defaults(objective, encoder, dim=16, batch_size=64, **overrides)
    train = dataset.train_matrix()
    gen = torch.Generator().manual_seed(5)
    csr = CSR(train, torch.device("cpu"))
    if cfg.sampler == "user":
        sampler = UserItemSampler(csr, cfg.batch_size, gen)
    else:
        sampler = PairSampler(csr, cfg.batch_size, gen, negatives=objective == "bpr")
    batches = [b for _, b in zip(range(8), sampler.epoch(), strict=False)]
    assert len(batches) == 8

    cpu_losses, cpu_u, cpu_i = _run_steps(cfg, train, batches, "cpu")
    dev_losses, dev_u, dev_i = _run_steps(cfg, train, batches, DEVICE)
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=1e-4, atol=1e-5)
    # the steps moved the embeddings (a no-op step would match trivially)
    start = build_encoder(cfg, train, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        u0, _ = start.final()
    scale = float(cpu_u.abs().max())
    assert float((cpu_u - u0.detach()).abs().max()) > 1e-3 * scale
    np.testing.assert_allclose(dev_u.numpy(), cpu_u.numpy(), rtol=1e-3, atol=1e-4 * scale)
    np.testing.assert_allclose(dev_i.numpy(), cpu_i.numpy(), rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("negatives", [False, True])
def test_device_samplers_draw_training_pairs(dataset, negatives) -> None:
    train = dataset.train_matrix()
    dev = torch.device(DEVICE)
    gen = torch.Generator(device=dev).manual_seed(3)
    csr = CSR(train, dev)
    if negatives:
        sampler: UserItemSampler | PairSampler = PairSampler(csr, 32, gen, negatives=True)
    else:
        sampler = UserItemSampler(csr, 32, gen)
    dense = train.toarray() > 0
    n_batches = 0
    for batch in sampler.epoch():
        assert all(t.device.type == dev.type for t in batch)
        users, pos = batch[0].cpu().numpy(), batch[1].cpu().numpy()
        assert dense[users, pos].all()
        if negatives:
            assert not dense[users, batch[2].cpu().numpy()].any()
        n_batches += 1
    assert n_batches == sampler.steps_per_epoch


@pytest.mark.parametrize(("objective", "encoder"), [("directspec+", "mf"), ("bpr", "lightgcn")])
def test_fit_on_the_device_reports_its_embeddings_metrics(dataset, objective, encoder) -> None:
    cfg = TrainConfig.defaults(
        objective, encoder, dim=16, batch_size=64, epochs=3, eval_every=3, device=DEVICE
    )
    res = fit(dataset, cfg, progress_bar=False)
    assert torch.device(res.device).type == torch.device(DEVICE).type
    assert res.epochs_run == 3 and res.seconds_per_epoch > 0
    want = evaluate(
        torch.from_numpy(res.user_emb),
        torch.from_numpy(res.item_emb),
        dataset.train_matrix(),
        dataset.test_matrix(),
    )
    for key in ("recall@20", "ndcg@20"):
        assert res.metrics[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7)
    assert res.metrics["recall@20"] > 0
