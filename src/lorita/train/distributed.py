"""DistributedDataParallel plumbing for the training loop.

Launch any script that calls :func:`lorita.train.train` with
``torchrun --nproc_per_node=K script.py``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
``train`` then

- initialises the default process group (NCCL on CUDA, Gloo on CPU) unless
  the caller already did, and destroys it at the end only if it created it;
- puts rank ``r`` on ``cuda:LOCAL_RANK`` (device "auto" or "cuda");
- wraps the model in ``DistributedDataParallel`` and gives each rank its
  ``torch.tensor_split`` chunk of every global batch;
- scales each rank's summed loss by ``K / global_batch`` before backward, so
  that DDP's gradient *average* over ranks equals the single-process mean
  over the global batch even when the chunks differ in size by one (the
  global batch need not be divisible by K);
- evaluates the full validation split on every rank with the unwrapped
  model (identical weights, so identical numbers to a single process, and
  every rank can track the best epoch without communication);
- lets only rank 0 write files, log per-epoch lines and show progress.

BatchNorm statistics are per rank (per chunk), as in any DDP run without
SyncBatchNorm, so a model with BatchNorm trains slightly differently under
DDP than in one process; models without it match to float32 rounding.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lorita.checks import check_device
from lorita.composed import COMPOSED_TYPES
from lorita.errors import LoritaError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size, its device, and
    whether :func:`setup` created the process group (then :func:`teardown`
    destroys it).

    Example:
        >>> DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), created_group=False).is_main
        True
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise LoritaError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from err


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """Turn a config's device string into a ``torch.device``.

    "auto" means ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; a bare
    "cuda" also gets the local rank as index.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(request)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LoritaError(f"device {request!r} was asked for but CUDA is not available; use device 'auto' or "
                              "'cpu' (--device auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    elif device.type != "cpu":  # mps, xla, ...: usable only where this torch build supports it
        check_device(request, "trained on it", auto=True, here=True)
    return device


def is_main_process() -> bool:
    """Whether this process is the one that writes files: rank 0 of the group ``setup`` joins or creates.

    The same rule as ``setup``: without ``WORLD_SIZE > 1`` (torchrun) the process runs alone and
    is rank 0, whatever ``RANK`` a scheduler or container may export.

    Example:
        >>> is_main_process()   # not under torchrun
        True
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    world_size = _env_int("WORLD_SIZE")
    if world_size is None or world_size <= 1:
        return True
    rank = _env_int("RANK")
    if rank is None:
        raise LoritaError(f"WORLD_SIZE={world_size} is set but RANK is not; launch with torchrun")
    return rank == 0


def world_size() -> int:
    """How many processes share the training: the group's size under torchrun, else 1.

    Example:
        >>> world_size()   # not under torchrun
        1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    size = _env_int("WORLD_SIZE")
    return size if size is not None and size > 1 else 1


def setup(device_request: str) -> DistContext:
    """Join (or create) the process group when launched by torchrun; else a one-process context.

    Example:
        >>> ctx = setup("cpu")   # not under torchrun
        >>> ctx.world_size, ctx.created_group
        (1, False)
    """
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK")
        local_rank = rank if local_rank is None else local_rank
        return DistContext(rank, world_size, local_rank, resolve_device(device_request, local_rank), False)
    world_size = _env_int("WORLD_SIZE")
    if world_size is None or world_size <= 1:
        return DistContext(0, 1, 0, resolve_device(device_request, 0), False)
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local_rank is None:
        raise LoritaError(f"WORLD_SIZE={world_size} is set but RANK or LOCAL_RANK is not; launch with torchrun")
    if not dist.is_available():
        raise LoritaError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run in one process")
    device = resolve_device(device_request, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _init_group(backend, rank, world_size)
    logger.debug("rank %d/%d joined a %s process group on %s", rank, world_size, backend, device)
    return DistContext(rank, world_size, local_rank, device, True)


_groups_created = 0  # same count on every rank: all ranks call train() in lockstep


def _init_group(backend: str, rank: int, world_size: int) -> None:
    """``init_process_group`` on the env:// store, under a key prefix new to this process.

    A plain second ``init_process_group`` after ``destroy_process_group`` (a
    script that trains, then fine-tunes) reuses the first group's store keys
    and can hang with ranks out of step; a fresh prefix per group avoids it.
    """
    global _groups_created
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
    store = dist.PrefixStore(f"lorita.train/{_groups_created}", store)
    _groups_created += 1
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it.

    Example:
        >>> teardown(setup("cpu"))   # nothing to do in one process
    """
    if ctx.created_group and dist.is_initialized():
        # Free the DDP wrapper (its Reducer holds Gloo work objects and sits in
        # reference cycles) while the group is alive: left to interpreter exit
        # it intermittently aborts the process ("terminate called without an
        # active exception", torch 2.13 CPU/Gloo) after all work is done.
        gc.collect()
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, shard: bool = False) -> nn.Module:
    """The model in ``DistributedDataParallel`` under DDP, else the model itself.

    ``shard=True`` (several processes only): PyTorch's FSDP2 ``fully_shard`` instead, in place:
    each composed layer and each other leaf module holding parameters becomes one shard
    unit, then the root; parameters (factors like any other), gradients and optimizer state
    are split over the ranks and gathered per unit for its forward and backward. Use
    :func:`full_state` to read the whole state dict (every rank must call it).

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> wrap(net, setup("cpu")) is net
        True
    """
    if not ctx.distributed:
        return model
    if shard:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        units = [m for m in model.modules() if m is not model and (
            isinstance(m, COMPOSED_TYPES) or (not list(m.children()) and any(True for _ in m.parameters(recurse=False)))
            and not any(isinstance(p, COMPOSED_TYPES) for p in _ancestors(model, m)))]
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _ancestors(root: nn.Module, target: nn.Module) -> list[nn.Module]:
    """The modules on the path from ``root`` down to ``target`` (exclusive)."""
    for name, module in root.named_modules():
        if module is target:
            parts = name.split(".")
            return [root.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]
    return []


def full_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """A CPU copy of the whole state dict: gathered from the shards (a collective: every rank calls it)
    when ``sharded``, else copied.

    Example:
        >>> sorted(full_state(torch.nn.Linear(2, 2), False))
        ['bias', 'weight']
    """
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op in one process) and return it.

    Example:
        >>> all_reduce_sum(torch.ones(2), setup("cpu")).tolist()
        [1.0, 1.0]
    """
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is True on at least one rank (so all ranks stop together).

    Example:
        >>> any_rank(False, setup("cpu"))
        False
    """
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
