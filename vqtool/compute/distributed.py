"""Data-parallel training over processes started by ``torchrun``, with PyTorch's DistributedDataParallel.

``torchrun --nproc_per_node=N -m vqtool train ...`` starts N copies of the
command; each learns its rank from the environment torchrun sets (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). Backend: ``nccl`` when the ranks
train on GPUs, ``gloo`` on CPUs. Every rank loads the dataset; the ranks of a
node share its decoded pixels through the store (one decodes under a file
lock, the others wait, then read it: :mod:`vqtool.data.store`). Each takes its
shard of each epoch through ``DistributedSampler``
(``set_epoch`` reshuffles), and averages gradients with the others; losses and
accuracies are summed across ranks, so validation covers the whole val split.
Only rank 0 prints and writes the run folder. ``--batch-size`` is per process:
the global batch is ``world size × --batch-size`` (learning rates are not
rescaled automatically).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vqtool.errors import VQError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def local_device(device: torch.device) -> torch.device:
    """The GPU of this rank (one per process, by LOCAL_RANK), or the device itself."""
    if not is_distributed() or device.type != "cuda":
        return device
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_size > torch.cuda.device_count():
        raise VQError(f"torchrun started {local_size} processes on this node but it has "
                      f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node={torch.cuda.device_count()} "
                      f"or --device cpu", usage=True)
    return torch.device("cuda", local_rank)


def join(device: torch.device) -> None:
    """Join the process group (once per process) and share the CPU's cores among this node's ranks."""
    import torch.distributed as dist

    if not is_distributed() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # torchrun pins each process to one thread; the node's cores are shared out instead
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model under DistributedDataParallel (itself when not distributed)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(n: int, *, epoch: int, seed: int, shuffle: bool) -> torch.Tensor:
    """This rank's sample indices for an epoch: DistributedSampler's, all ranks equally many."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                                 drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def total(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (the tensor itself when not distributed)."""
    if not is_distributed():
        return values
    import torch.distributed as dist

    values = values.clone()
    dist.all_reduce(values)
    return values


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's tensor, concatenated in rank order, on every rank."""
    if not is_distributed():
        return tensor
    import torch.distributed as dist

    parts = [None] * world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def shared(value):
    """Rank 0's ``value`` on every rank (a run folder name made from the clock, for example)."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_run_dir(make) -> Path:
    """``make()`` (which creates the run folder) on rank 0 only; its path, or its error, on every rank."""
    if not is_distributed():
        return make()
    outcome = None
    if is_main():
        try:
            outcome = ("made", str(make()), False)
        except VQError as error:
            outcome = ("failed", str(error), error.usage)
    kind, text, usage = shared(outcome)
    if kind == "failed":
        raise VQError(text, usage=usage)
    return Path(text)
