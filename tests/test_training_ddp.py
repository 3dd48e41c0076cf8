"""Training under torchrun: gathered negatives, one artifact, and no process group without it.

The multi-process tests run 2 gloo ranks on CPU. A W-rank run with per-rank
batch B must train like one process with batch W*B: the same loss, and after
DDP's gradient average the same gradients on every rank.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from galleries import Digits

from dmu_migrate.artifact import load_artifact
from dmu_migrate.errors import InputError
from dmu_migrate.evaluation import evaluate
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training import distributed
from dmu_migrate.training.checkpoint import FILE, work_dir
from dmu_migrate.training.losses import (
    CosFaceLoss,
    ForwardAdaptationLoss,
    PairedAdapterLoss,
    SelectiveCompatibilityLoss,
    class_prototypes,
    discriminativeness,
)
from dmu_migrate.training.models import ResidualAdapter
from dmu_migrate.training.trainer import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

RANKS, PER_RANK, CLASSES, DIM = 2, 6, 3, 8
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build() -> tuple[dict[str, torch.nn.Module], dict[str, torch.Tensor]]:
    """Modules and a fixed global batch, the same in every process.

    float64, so that the comparison sees the method and not summation order.
    """
    torch.manual_seed(0)
    modules: dict[str, torch.nn.Module] = {
        "model": torch.nn.Linear(DIM, DIM),
        "classifier": CosFaceLoss(DIM, CLASSES, scale=10.0, margin=0.2),
        "adapter": ResidualAdapter(DIM, DIM, hidden=16),
    }
    for module in modules.values():
        module.double()
    n = RANKS * PER_RANK
    old = torch.randn(n, DIM, dtype=torch.float64)
    y = torch.arange(n) % CLASSES
    prototypes = class_prototypes(old, y, CLASSES)
    batch = {
        "x": torch.randn(n, DIM, dtype=torch.float64),
        "old": old,
        "y": y,
        "new": torch.randn(
            n, DIM, dtype=torch.float64
        ),  # a fixed new model's embeddings, for the adapter-only loss
        "prototypes": prototypes,
        # q differs per sample, so a weighted mean over one rank's rows alone would differ too.
        "q": discriminativeness(old, y, prototypes, scale=10.0),
    }
    return modules, batch


def all_terms(
    modules: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], idx: torch.Tensor
) -> torch.Tensor:
    """Every loss of the trainer and of adapter-only mode, on rows idx.

    detach=False, so the InfoNCE positives (the new model's embeddings) carry
    gradients back across ranks through the gather.
    """
    model, classifier, adapter = modules["model"], modules["classifier"], modules["adapter"]
    assert isinstance(classifier, CosFaceLoss)
    f = model(batch["x"][idx])
    y, q = batch["y"][idx], batch["q"][idx]
    evolved = adapter(batch["old"][idx])
    sbc = SelectiveCompatibilityLoss(scale=10.0, gamma=2.0)
    fa = ForwardAdaptationLoss(classifier, tau=0.1, beta=1.0, detach=False)
    paired = PairedAdapterLoss(tau=0.1, scale=10.0, beta=1.0)
    return (
        classifier(f, y)
        + sbc(f, y, batch["prototypes"], q)
        + fa(evolved, f, y, q)
        + paired(evolved, batch["new"][idx], q, y, batch["prototypes"])["loss"]
    )


def single_process(idx: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    modules, batch = build()
    loss = all_terms(modules, batch, idx)
    loss.backward()
    grads = {
        f"{k}.{n}": p.grad.clone()
        for k, m in modules.items()
        for n, p in m.named_parameters()
        if p.grad is not None
    }
    return float(loss.detach()), grads


def rank_worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=RANKS)
    try:
        modules, batch = build()

        def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": all_terms(modules, batch, idx)}

        parallel = distributed.data_parallel(step, modules, torch.device("cpu"))
        loss = parallel(torch.arange(rank * PER_RANK, (rank + 1) * PER_RANK))["loss"]
        loss.backward()
        grads = {
            f"{k}.{n}": p.grad.clone()
            for k, m in modules.items()
            for n, p in m.named_parameters()
            if p.grad is not None
        }
        torch.save({"loss": float(loss.detach()), "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.integration  # two spawned ranks
def test_two_ranks_with_gathered_negatives_equal_one_process_with_the_whole_batch(
    tmp_path: Path,
) -> None:
    mp.spawn(rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=RANKS)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(RANKS)]
    whole_loss, whole_grads = single_process(torch.arange(RANKS * PER_RANK))

    # DDP averages over ranks: the average of the ranks' losses is the whole batch's loss.
    assert np.mean([r["loss"] for r in ranks]) == pytest.approx(whole_loss, abs=TOL)
    for r in ranks:
        assert set(r["grads"]) == set(whole_grads)
        for key, grad in whole_grads.items():
            torch.testing.assert_close(r["grads"][key], grad, atol=TOL, rtol=0, msg=key)

    # The comparison can tell: each half alone (no gathered negatives, local
    # weight sums) gives another loss and other gradients.
    halves = [single_process(torch.arange(r * PER_RANK, (r + 1) * PER_RANK)) for r in range(RANKS)]
    assert abs(np.mean([loss for loss, _ in halves]) - whole_loss) > 100 * TOL
    local = sum(grads["model.weight"] for _, grads in halves) / RANKS
    assert (local - whole_grads["model.weight"]).abs().max() > 100 * TOL


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """Two CPU ranks on this machine, as a user would start them."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc_per_node", str(RANKS), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


# Dropout draws per rank: two ranks then train like one process only without it.
SMALL = [
    "--hidden",
    "32",
    "--adapter-hidden",
    "32",
    "--dropout",
    "0",
    "--device",
    "cpu",
    "--seed",
    "3",
]
# A high learning rate overshoots within a few epochs, so early stopping ends the run
# before --epochs (as in test_training): every rank must stop at rank 0's epoch.
RUN = [*SMALL, "--epochs", "12", "--lr", "0.02", "--val-fraction", "0.3", "--patience", "2"]


def small_config(**fields: Any) -> TrainConfig:
    """One process with the network and settings of SMALL, for comparing with torchrun."""
    base = {"hidden": 32, "adapter_hidden": 32, "dropout": 0.0, "device": "cpu", "seed": 3}
    return TrainConfig(**{**base, "val_fraction": 0.3, **fields})


@pytest.mark.integration  # torchrun
def test_torchrun_trains_on_two_ranks_and_rank_0_writes_one_artifact(
    tmp_path: Path, digits: Digits
) -> None:
    out = tmp_path / "adapters"
    done = torchrun(
        *("-m", "dmu_migrate", "train", str(digits.train_path), "--name", "ddp"),
        *("--out-dir", str(out), "--batch-size", "64", *RUN),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("artifact ") == 1, done.stdout  # rank 0 alone prints
    assert "x 2 processes" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["ddp"]  # no staging, no checkpoint left

    artifact = load_artifact(out / "ddp")
    training = artifact.manifest.training
    assert training["processes"] == 2 and training["config"]["batch_size"] == 64
    assert set(artifact.manifest.files) == {"adapter.onnx", "new_model.onnx", "backfill_score.onnx"}
    assert max(artifact.manifest.parity.values()) < 1e-4
    emb = OnnxModel(artifact.path / "new_model.onnx")(digits.x_te)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    report = evaluate(digits.eval_path, artifact)
    assert {"old->old", "new->old", "new->evolved", "new->new"} <= set(report.scores)

    # Per-rank batch 64 on 2 ranks is one process with batch 128, to rounding.
    config = small_config(epochs=12, batch_size=128, lr=0.02, patience=2)
    one = train_upgrade(digits.train_path, tmp_path / "one", "one", config)
    assert one.artifact.manifest.training["processes"] == 1
    # Both stop at the same epoch (early stopping, or the last one).
    assert len(training["log"]) == len(one.log)
    assert len([e for e in one.log if "stage" not in e]) <= config.epochs  # then psi's fit
    for got, want in zip(training["log"], one.log, strict=True):
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-4), key
    assert training["best_epoch"] == one.artifact.manifest.training["best_epoch"]


INTERRUPTED = """
import sys
from dmu_migrate.training.trainer import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

def stop_after_two(epoch, entry):
    if epoch == 2:
        raise SystemExit(9)

config = TrainConfig(epochs=4, batch_size=64, hidden=32, adapter_hidden=32, dropout=0.0, device="cpu",
                     seed=3, val_fraction=0.3, patience=0)
train_upgrade(sys.argv[1], sys.argv[2], "r", config, on_epoch=stop_after_two)
"""


@pytest.mark.integration  # torchrun
def test_torchrun_resumes_from_rank_0s_checkpoint(tmp_path: Path, digits: Digits) -> None:
    out = tmp_path / "adapters"
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    cut = torchrun(str(script), str(digits.train_path), str(out))
    assert cut.returncode != 0 and not (out / "r").exists()
    checkpoint = work_dir(out, "r") / FILE
    # A mark in the saved log shows that the resumed run continued from this file.
    state = torch.load(checkpoint, weights_only=True)
    state["log"][0]["loss"] = -1.0
    torch.save(state, checkpoint)

    # The batches depend on the number of ranks: one process may not continue this run.
    config = small_config(epochs=4, batch_size=64, patience=0)
    with pytest.raises(InputError, match="another configuration"):
        train_upgrade(digits.train_path, out, "r", config, resume=True)

    flags = [*SMALL, "--epochs", "4", "--batch-size", "64", "--val-fraction", "0.3"]
    resumed = torchrun(
        *("-m", "dmu_migrate", "train", str(digits.train_path), "--name", "r"),
        *("--out-dir", str(out), *flags, "--patience", "0", "--resume"),
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = load_artifact(out / "r").manifest.training["log"]
    whole = dataclasses.replace(config, batch_size=128)
    one = train_upgrade(digits.train_path, tmp_path / "one", "one", whole)
    assert len(log) == len(one.log) == 4 + 1 and log[0]["loss"] == -1.0  # 4 epochs, psi's fit
    for got, want in zip(log[1:], one.log[1:], strict=True):
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-4), key


# Every collective the trainer makes, then the threads left once the group is gone.
COLLECTIVES = """
import os, sys
from pathlib import Path
import torch
from dmu_migrate.training import distributed

def train():
    model = torch.nn.Linear(4, 4)
    step = distributed.data_parallel(
        lambda x: {"loss": distributed.gather(model(x)).sum()}, {"model": model}, torch.device("cpu")
    )
    step(torch.ones(2, 4))["loss"].backward()
    distributed.mean_over_ranks({"loss": 1.0})
    return distributed.from_main(lambda: "done")

with distributed.process_group(torch.device("cpu")):
    train()
names = sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))
Path(sys.argv[1], os.environ["RANK"]).write_text(" ".join(names))
"""


@pytest.mark.integration  # torchrun
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_the_process_group_and_its_threads_end_with_the_block(tmp_path: Path) -> None:
    # Worker threads of a group that outlives its block may release tensors while the
    # interpreter shuts down, which aborts the process at exit now and then.
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    done = torchrun(str(script), str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(RANKS):
        threads = (tmp_path / str(rank)).read_text().split()
        assert not [t for t in threads if "gloo" in t], threads


def test_plain_training_makes_no_process_group(
    tmp_path: Path, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plain run must not join a process group")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    config = TrainConfig(epochs=1, batch_size=128, hidden=32, adapter_hidden=32, device="cpu")
    report = train_upgrade(digits.train_path, tmp_path, "plain", config)
    assert not dist.is_initialized()
    assert report.artifact.manifest.training["processes"] == 1
    assert distributed.shard() == (0, 1)
