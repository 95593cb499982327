"""Gradient averaging and sharding under ``torch.distributed`` (Ray Train workers or torchrun):
rank 0 writes, every rank averages gradients per optimizer step.
"""

from __future__ import annotations

from typing import Any

import torch

from geoxai.errors import InvalidInputError

__all__ = [
    "is_main_process",
    "shard",
]


def shard(items: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s share of a sequence: ``items[rank::world_size]``, truncated so every rank
    gets the same count (collectives must match). Raises when a rank would get nothing."""
    n = len(items) // world_size * world_size
    if world_size > 1 and n == 0:
        raise InvalidInputError(
            f"{len(items)} batches cannot be shared by {world_size} workers; use fewer workers "
            "or a smaller batch_size."
        )
    return items[rank:n:world_size]


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist  # lazy: torch (~1 s import) only on this path

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 of a ``torch.distributed`` group, or without one: the process that
    writes files (bundles, configs) after :func:`fit`."""
    return rank_and_world()[0] == 0


def _flat_allreduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    import torch.distributed as dist  # lazy: torch (~1 s import) only on this path

    if not tensors or world == 1:
        return
    flat = torch.cat([t.detach().reshape(-1).float().cpu() for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[i : i + n].reshape(t.shape).to(t.dtype))
        i += n


def grad_average_hook(world: int):
    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        _flat_allreduce_mean(grads, world)

    return hook


def broadcast_state(model: torch.nn.Module) -> None:
    import torch.distributed as dist  # lazy: torch (~1 s import) only on this path

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            buf = t.detach().cpu().clone()
            dist.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))


def average_buffers(model: torch.nn.Module, world: int) -> None:
    with torch.no_grad():
        _flat_allreduce_mean([b for b in model.buffers() if b.is_floating_point()], world)


def average_metrics(rec: dict[str, float], world: int) -> dict[str, float]:
    if world == 1 or not rec:
        return rec
    keys = sorted(rec)
    t = torch.tensor([float(rec[k]) for k in keys], dtype=torch.float64)
    _flat_allreduce_mean([t], world)
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}
