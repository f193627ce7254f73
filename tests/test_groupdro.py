"""GroupDRO: a hand-computed trace, resume, DDP agreement and the Lightning wrapper."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_difficulty import IndexedDataset
from lightning_difficulty.functional.groupdro import group_sums, groupdro_adjustment, groupdro_step
from lightning_difficulty.groupdro import GroupDROLoss, GroupDROModule, group_balanced_sampler

# Trace: G = 3, eta = 0.5, group sizes N = [4, 1, 16], adjustment C = [0, 1, 2]
# -> C / sqrt(N) = [0, 1, 0.5].
TRACE_BATCHES = [
    # step 1: group 1 absent. L = [(1+3)/2, 0, (2+4)/2] = [2, 0, 3]; A = [2, 1, 3.5]
    ([1.0, 3.0, 2.0, 4.0], [0, 0, 2, 2]),
    # step 2: group 2 absent. L = [2.5, (0.5+1.5)/2, 0] = [2.5, 1, 0]; A = [2.5, 2, 0.5]
    ([0.5, 1.5, 2.5], [1, 1, 0]),
    # step 3: group 0 absent. L = [0, (3+5)/2, 1] = [0, 4, 1]; A = [0, 5, 1.5]
    ([3.0, 5.0, 1.0], [1, 1, 2]),
]
# q_1 = (1/3) exp(0.5 * [2, 1, 3.5]) normalised = [e^1, e^0.5, e^1.75] / 10.121606
#     = [0.268562, 0.162891, 0.568546]; loss_1 = q_1 . [2, 1, 3.5] = 2.689928
# q_2 = q_1 * exp(0.5 * [2.5, 2, 0.5]) normalised = [0.444214, 0.209832, 0.345954]; loss_2 = 1.703176
# q_3 = q_2 * exp(0.5 * [0, 5, 1.5]) normalised = [0.119001, 0.684801, 0.196199]; loss_3 = 3.718302
TRACE_Q = [[0.268562, 0.162891, 0.568546], [0.444214, 0.209832, 0.345954], [0.119001, 0.684801, 0.196199]]
TRACE_LOSS = [2.689928, 1.703176, 3.718302]
TRACE_KW: dict[str, Any] = {"num_groups": 3, "group_sizes": [4, 1, 16], "adjustment": [0.0, 1.0, 2.0], "eta": 0.5}


def test_hand_computed_trace_functional() -> None:
    q = torch.full((3,), 1 / 3, dtype=torch.float64)
    for (losses, groups), q_exp, loss_exp in zip(TRACE_BATCHES, TRACE_Q, TRACE_LOSS, strict=True):
        loss, q, group_losses, counts = groupdro_step(
            torch.tensor(losses, dtype=torch.float64), torch.tensor(groups), q, **TRACE_KW
        )
        assert q.tolist() == pytest.approx(q_exp, abs=1e-6)
        assert loss.item() == pytest.approx(loss_exp, abs=1e-6)
    # the last step's unadjusted group means and counts
    assert group_losses.tolist() == [0.0, 4.0, 1.0]
    assert counts.tolist() == [0.0, 2.0, 1.0]


def test_hand_computed_trace_module_and_gradient() -> None:
    crit = GroupDROLoss(3, group_sizes=[4, 1, 16], adjustment=[0.0, 1.0, 2.0], eta=0.5)
    for (losses, groups), q_exp, loss_exp in zip(TRACE_BATCHES, TRACE_Q, TRACE_LOSS, strict=True):
        x = torch.tensor(losses, requires_grad=True)
        loss = crit(x, torch.tensor(groups))
        loss.backward()
        assert crit.q.tolist() == pytest.approx(q_exp, abs=1e-6)
        assert loss.item() == pytest.approx(loss_exp, abs=1e-5)
        # d loss / d l_i = q_g / n_g for the sample's group g (the adjustment is a constant)
        counts = np.bincount(groups, minlength=3)
        expected = [q_exp[g] / counts[g] for g in groups]
        assert x.grad is not None
        assert x.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_no_adjustment_and_eval_mode() -> None:
    crit = GroupDROLoss(2)
    crit.eval()
    loss = crit(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]))
    assert crit.q.tolist() == [0.5, 0.5]  # eval: q unchanged
    assert loss.item() == pytest.approx(2.0)  # 0.5 * 1 + 0.5 * 3


def test_group_sums_and_adjustment() -> None:
    sums, counts = group_sums(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0, 2, 0]), num_groups=3)
    assert sums.tolist() == [5.0, 0.0, 2.0] and counts.tolist() == [2.0, 0.0, 1.0]
    assert groupdro_adjustment(2.0, num_groups=2, group_sizes=[4, 16]).tolist() == [1.0, 0.5]
    assert groupdro_adjustment(0.0, num_groups=2).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adjustment": 1.0}, "`group_sizes`"),
        ({"adjustment": -1.0, "group_sizes": [1, 1]}, "`adjustment` to be a non-negative"),
        ({"adjustment": 1.0, "group_sizes": [0, 1]}, "positive `group_sizes` entry"),
        ({"eta": -0.1}, "`eta` to be a non-negative finite number"),
    ],
)
def test_step_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        groupdro_step(torch.ones(2), torch.tensor([0, 1]), torch.full((2,), 0.5), num_groups=2, **kwargs)


def test_step_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match=r"\[0, num_groups=2\), but got ids in \[0, 2\] \(largest id seen: 2\)"):
        groupdro_step(torch.ones(2), torch.tensor([0, 2]), torch.full((2,), 0.5), num_groups=2)
    with pytest.raises(ValueError, match="integer group ids"):
        groupdro_step(torch.ones(2), torch.tensor([0.0, 1.0]), torch.full((2,), 0.5), num_groups=2)


def test_state_dict_round_trip_continues_identically() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(8, generator=gen) * 3, torch.randint(0, 3, (8,), generator=gen)) for _ in range(6)]
    kwargs: dict[str, Any] = {"group_sizes": [10, 5, 2], "adjustment": 0.5, "eta": 0.2}
    first = GroupDROLoss(3, **kwargs)
    for losses, groups in batches[:3]:
        first(losses, groups)
    state = first.state_dict()
    assert set(state) == {"q"}
    resumed = GroupDROLoss(3, **kwargs)
    resumed.load_state_dict(state)
    for losses, groups in batches[3:]:
        a, b = first(losses, groups), resumed(losses, groups)
        assert torch.equal(a, b)
        assert torch.equal(first.q, resumed.q)
    assert not torch.allclose(first.q, torch.full((3,), 1 / 3))


# ------------------------------------------------------------------------------------------------
# DDP: two gloo processes must keep the same q as one process on the concatenated batch.
# ------------------------------------------------------------------------------------------------

DDP_STEPS = 3


def _ddp_data() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(DDP_STEPS, 10, 4, generator=gen)
    y = torch.randint(0, 3, (DDP_STEPS, 10), generator=gen)
    # rank 0 gets rows 0..4, rank 1 rows 5..9; group 2 only ever appears on rank 1
    groups = torch.tensor([0, 1, 0, 1, 0, 2, 1, 2, 0, 1]).repeat(DDP_STEPS, 1)
    return x, y, groups


def _ddp_net() -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(4, 3)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y, groups = _ddp_data()
        net = _ddp_net()
        crit = GroupDROLoss(3, group_sizes=[30, 20, 10], adjustment=1.0, eta=0.3)
        rows = slice(rank * 5, (rank + 1) * 5)
        trace = []
        for t in range(DDP_STEPS):
            net.zero_grad()
            losses = F.cross_entropy(net(x[t, rows]), y[t, rows], reduction="none")
            loss = crit(losses, groups[t, rows])
            loss.backward()
            grad = net.weight.grad.clone()  # type: ignore[union-attr]
            dist.all_reduce(grad)
            grad /= world  # what DDP does to gradients
            trace.append({"q": crit.q.clone(), "loss": loss.detach().clone(), "grad": grad})
        torch.save(trace, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_keep_the_single_process_q(tmp_path: Path) -> None:
    # spawn, not fork: forking after torch started its OpenMP thread pool can deadlock the children
    method = "spawn"
    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method=method)
    traces = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    x, y, groups = _ddp_data()
    net = _ddp_net()
    q = torch.full((3,), 1 / 3)
    for t in range(DDP_STEPS):
        net.zero_grad()
        losses = F.cross_entropy(net(x[t]), y[t], reduction="none")
        loss, q, _, _ = groupdro_step(
            losses, groups[t], q, num_groups=3, group_sizes=[30, 20, 10], adjustment=1.0, eta=0.3
        )
        loss.backward()
        for trace in traces:
            assert torch.allclose(trace[t]["q"], q, atol=1e-6)
            assert torch.allclose(trace[t]["loss"], loss.detach(), atol=1e-6)
            assert torch.allclose(trace[t]["grad"], net.weight.grad, atol=1e-6)  # type: ignore[arg-type]
        assert torch.equal(traces[0][t]["q"], traces[1][t]["q"])


# ------------------------------------------------------------------------------------------------
# Lightning wrapper and sampler
# ------------------------------------------------------------------------------------------------


def _toy_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_module_q_matches_closed_form_with_frozen_model() -> None:
    # lr = 0: the model never changes, every full batch has the same group losses L, so after S
    # steps q = softmax(S * eta * L) -- computed here with numpy from the model's own outputs.
    x, y = _toy_data(24, seed=0)
    groups = np.array([0, 1, 2, 1] * 6)
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    module = GroupDROModule(net, groups, eta=0.2, optimizer="sgd", lr=0.0, momentum=0.0)
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=24, shuffle=True)
    trainer = L.Trainer(
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, loader)

    with torch.no_grad():
        logits = net(x).double().numpy()
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    per_sample = -log_p[np.arange(24), y.numpy()]
    L_g = np.array([per_sample[groups == g].mean() for g in range(3)])
    expected = np.exp(5 * 0.2 * L_g) / np.exp(5 * 0.2 * L_g).sum()
    np.testing.assert_allclose(module.dro.q.numpy(), expected, rtol=1e-5)
    metrics = trainer.callback_metrics
    for g in range(3):
        assert metrics[f"train/q_{g}"].item() == pytest.approx(expected[g], rel=1e-5)
        assert metrics[f"train/group_loss_{g}"].item() == pytest.approx(L_g[g], rel=1e-5)


def test_module_validation_worst_group_accuracy() -> None:
    x, y = _toy_data(40, seed=1)
    xv, yv = _toy_data(30, seed=2)
    val_groups = np.array([0] * 10 + [1] * 15 + [2] * 5)
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    module = GroupDROModule(net, np.arange(40) % 3, val_groups=val_groups, lr=0.05)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(
        module,
        DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=8, shuffle=True),
        DataLoader(IndexedDataset(TensorDataset(xv, yv)), batch_size=7),
    )
    with torch.no_grad():
        hits = (net(xv).argmax(1) == yv).numpy()
    per_group = [hits[val_groups == g].mean() for g in range(3)]
    metrics = trainer.callback_metrics
    assert metrics["val/acc"].item() == pytest.approx(hits.mean())
    assert metrics["val/worst_group_acc"].item() == pytest.approx(min(per_group))
    for g in range(3):
        assert metrics[f"val/acc_group_{g}"].item() == pytest.approx(per_group[g])


class _OwnOptimizer(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.123)


def test_configure_optimizers_delegates_and_batch_check() -> None:
    wrapped = GroupDROModule(_OwnOptimizer(), [0, 1])
    optimizer = wrapped.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.123
    plain = GroupDROModule(nn.Linear(2, 2), [0, 1], optimizer="adam", lr=0.5)
    assert isinstance(plain.configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ValueError, match="IndexedDataset"):
        plain.training_step((torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)), 0)
    with pytest.raises(ValueError, match="`num_groups` to be an integer >= 2"):
        GroupDROModule(nn.Linear(2, 2), [0, 1], num_groups=1)


def test_group_balanced_sampler() -> None:
    groups = np.array([0] * 30 + [1] * 10)
    sampler = group_balanced_sampler(groups, num_samples=40_000, generator=torch.Generator().manual_seed(0))
    weights = sampler.weights.tolist()
    assert weights[0] == pytest.approx(40 / 30) and weights[-1] == pytest.approx(40 / 10)
    drawn = np.array(list(sampler))
    share = (groups[drawn] == 1).mean()
    assert abs(share - 0.5) < 0.01  # ~ N(0.5, 0.0025): each group drawn half the time
    assert len(group_balanced_sampler(groups)) == 40
    with pytest.raises(ValueError, match="`groups` to be a non-empty 1-D integer array"):
        group_balanced_sampler([0.5, 1.0])


def test_trace_numbers_are_the_formula() -> None:
    # Guard against typos in the literal trace: recompute it with plain Python floats.
    q = [1 / 3] * 3
    term = [0.0, 1.0, 2.0 / math.sqrt(16)]
    for (losses, groups), q_exp, loss_exp in zip(TRACE_BATCHES, TRACE_Q, TRACE_LOSS, strict=True):
        means = []
        for g in range(3):
            members = [v for v, h in zip(losses, groups, strict=True) if h == g]
            means.append(sum(members) / max(len(members), 1))
        adjusted = [means[g] + term[g] for g in range(3)]
        raw = [q[g] * math.exp(0.5 * adjusted[g]) for g in range(3)]
        q = [r / sum(raw) for r in raw]
        assert q == pytest.approx(q_exp, abs=1e-6)
        assert sum(qg * a for qg, a in zip(q, adjusted, strict=True)) == pytest.approx(loss_exp, abs=1e-6)


def _fit_briefly(module: GroupDROModule, train_size: int, val_size: int | None = None) -> None:
    x, y = _toy_data(train_size, seed=3)
    val = None
    if val_size is not None:
        xv, yv = _toy_data(val_size, seed=4)
        val = DataLoader(IndexedDataset(TensorDataset(xv, yv)), batch_size=16)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=16), val)


@pytest.mark.parametrize("length", [60, 30])
def test_module_refuses_groups_of_another_length_before_the_first_step(length: int) -> None:
    # Issue 19: 60 group ids for 48 samples were accepted; 30 gave a bare IndexError at the first batch.
    module = GroupDROModule(nn.Linear(5, 3), np.arange(length) % 2)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(
        ValueError, match=rf"`train_groups` to hold one group id per training sample \(48,.*got {length}"
    ):
        _fit_briefly(module, 48)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))  # no step was taken


def test_module_refuses_val_groups_of_another_length() -> None:
    module = GroupDROModule(nn.Linear(5, 3), np.arange(48) % 2, val_groups=np.zeros(20, dtype=np.int64))
    with pytest.raises(ValueError, match=r"`val_groups` to hold one group id per validation sample \(24,.*got 20"):
        _fit_briefly(module, 48, val_size=24)


def test_module_checks_batch_indices_against_the_groups() -> None:
    # A dataset without a length cannot be checked up front: the first batch is.
    module = GroupDROModule(nn.Linear(5, 3), [0, 1, 0])
    batch = (torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), torch.tensor([1, 7]))
    with pytest.raises(ValueError, match=r"indices in \[1, 7\], but argument `train_groups` holds 3 group ids"):
        module.training_step(batch, 0)


def test_loss_refuses_group_ids_beyond_num_groups() -> None:
    # Issue 19: too few groups gave a bare IndexError from index_add.
    crit = GroupDROLoss(2)
    with pytest.raises(ValueError, match=r"num_groups=2\), but got ids in \[0, 3\] \(largest id seen: 3\)"):
        crit(torch.ones(3), torch.tensor([0, 1, 3]))
    assert crit.q.tolist() == [0.5, 0.5]  # refused before the update
