"""Data-parallel training under ``torchrun``: one process per device, one model replica each.

Without torchrun every helper here is the identity (no process group, rank 0
of 1), so single-process training runs exactly the code it always did.

Under torchrun each rank trains on its own slice of every global batch, and
DistributedDataParallel averages the gradients. Two things make a W-rank run
with per-rank batch B match one process with batch W*B:

- terms that compare a sample with the other samples of the batch (InfoNCE)
  read every rank's embeddings through ``gather``, whose backward returns the
  gradients to the rank that owns them;
- weighted means divide by the weight sum of the whole global batch
  (``weighted_mean``), scaled so that DDP's average over ranks is the global loss.

Decisions that need one answer (validation, early stopping, what to write)
are taken by rank 0 and broadcast with ``from_main``, so that every rank
takes the same number of steps and reaches the same collectives.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: imported while one
# exists, this package (as of torch 2.13) keeps a reference to the default
# group, so destroy_process_group cannot free it. The group's worker threads
# then outlive the interpreter and may abort the process at exit ("terminate
# called without an active exception") while they release the last
# collective's tensors.
import torch.distributed.nn.functional as dist_fn
from torch import nn

T = TypeVar("T")


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    # Before the group exists (or after it is gone) the launcher's RANK still
    # tells the command line whether this process is the one that prints.
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this rank's own GPU; one process per GPU is torchrun's contract."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Joins the torchrun job for the duration of the block; a no-op in a plain process.

    A group the caller already made is used as it is and left for the caller to end.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    device = local_device(device)
    if device.type == "cuda":
        # NCCL and broadcast_object_list use the current device: it must be ours.
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of x, in rank order, with gradients flowing back to their owner."""
    if not active():
        return x
    # Its suggested successor is a private API; this one keeps the gradients right.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "torch.distributed.nn.functional.all_gather", FutureWarning
        )
        return torch.cat(dist_fn.all_gather(x))


def shard() -> tuple[int, int]:
    """(this rank, number of ranks) of the running job; (0, 1) in a plain process."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w) over the global batch, as this rank's share times the world size.

    DDP averages gradients over ranks, so each rank's loss is scaled such that
    the average of the ranks' losses is the weighted mean of the global batch.
    The weights are constants (old-feature quality), so their sum needs no gradient.
    """
    total = weights.sum()
    if not active():
        return (weights * values).sum() / total.clamp_min(1e-12)
    total = total.detach().clone()
    dist.all_reduce(total)
    return dist.get_world_size() * (weights * values).sum() / total.clamp_min(1e-12)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The ranks' average of each logged number: the whole global batch's loss."""
    if not active():
        return values
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    )
    packed = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {
        key: float(v) / dist.get_world_size()
        for key, v in zip(values, packed.tolist(), strict=True)
    }


def from_main(fn: Callable[[], T]) -> T:
    """fn() run on rank 0 only; every rank returns its result or raises its error.

    Broadcasting the error too means a failure on rank 0 (a bad checkpoint, a
    failed export) ends every rank with the same message instead of leaving
    the others waiting at the next collective.
    """
    if not active():
        return fn()
    payload: list[Any] = [None]
    if is_main():
        try:
            payload = [(True, fn())]
        except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
            payload = [(False, exc)]
    dist.broadcast_object_list(payload, src=0)
    ok, value = payload[0]
    if not ok:
        raise value
    result: T = value
    return result


class _Step(nn.Module):
    """A training step as one module, so that DDP sees every trainable parameter it uses."""

    def __init__(self, modules: dict[str, nn.Module], step: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.step = step

    def forward(self, idx: torch.Tensor) -> Any:
        return self.step(idx)


def data_parallel(
    step: Callable[[torch.Tensor], T], modules: dict[str, nn.Module], device: torch.device
) -> Callable[[torch.Tensor], T]:
    """``step`` run through DistributedDataParallel, which averages gradients over ranks."""
    if not active():
        return step
    device_ids = [device.index] if device.type == "cuda" else None
    wrapped = nn.parallel.DistributedDataParallel(_Step(modules, step), device_ids=device_ids)
    return lambda idx: wrapped(idx)
