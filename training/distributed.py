"""Several processes (``torchrun``): setup, gathering representations, summing gradients.

Every process computes the *global* loss: representations of all processes are gathered, the
local slice keeping its autograd graph. The loss is then identical on every process and each
process's backward pass yields the gradient through its own slice; summing those gradients over
processes gives exactly the gradient of the global loss (in-batch negatives from every process,
labels pointing at each query's own positive in the gathered layout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: str) -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenate every process's ``x`` (same shape everywhere) in rank order; the local slice
    keeps its gradient, the others are constants."""
    if not d.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[d.rank] = x
    return torch.cat(parts)


def sum_gradients(model: torch.nn.Module, d: Dist) -> None:
    if not d.enabled:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()

