"""The process group under torchrun: launch and init, this process's rank, and the collectives the stages use
(gather, broadcast, barrier; ``run_everywhere`` runs a function on every rank and raises any rank's error on
all of them)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from featdiff.errors import FeatdiffError

BACKENDS = ("gloo", "nccl")


# ----------------------------------------------------------------------------------------- process group
def launched() -> bool:
    """True when this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment).

    Examples
    --------
    >>> import os
    >>> launched() == ("RANK" in os.environ and "WORLD_SIZE" in os.environ)
    True
    """
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group that ``torchrun`` set up (its environment: ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a no-op when it is joined already.

    ``backend`` defaults to "nccl" when CUDA is available (each rank then uses GPU ``LOCAL_RANK``), else
    "gloo". Returns whether a process group is active; without ``torchrun`` it returns False and the
    functions of this module run in the one process.

    Examples
    --------
    >>> import os
    >>> init() if "WORLD_SIZE" not in os.environ else False
    False
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if not launched():
        return False
    if not dist.is_available():
        raise FeatdiffError(
            "This torch build has no torch.distributed; install a torch with it to use torchrun."
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise FeatdiffError(
            f"The 'backend' parameter of init must be one of {list(BACKENDS)}; got {backend!r}."
        )
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise FeatdiffError("backend='nccl' needs CUDA GPUs; on CPUs use backend='gloo'.")
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return True


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0, which assembles the tables and writes the outputs."""
    return rank() == 0


def rank_device(device: str | torch.device | None = None) -> str | None:
    """The device this rank computes on: an unindexed "cuda" becomes this rank's GPU (``cuda:LOCAL_RANK``);
    ``None`` becomes it too under the NCCL backend (else stays ``None``, the CPU).

    Examples
    --------
    >>> rank_device("cpu"), rank_device(None) if not torch.cuda.is_available() else None
    ('cpu', None)
    """
    if device is None:
        if _active() and dist.get_backend() == "nccl":
            return f"cuda:{local_rank()}"
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{local_rank()}"
    return str(dev)


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous share of ``n`` items: sizes differ by at most one, ranks in order.

    Examples
    --------
    >>> [shard(10, r, 3) for r in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return slice(n * r // w, n * (r + 1) // w)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank (``[obj]`` without a process group)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if world_size() > 1:
        dist.barrier()


def run_everywhere(fn: Callable[[], Any], gather: bool = True) -> list[Any]:
    """Run ``fn`` on every rank and gather the results in rank order (with ``gather=False``, only this
    rank's, in a one-item list); an error on any rank is raised on every rank, so that no rank waits
    forever for one that failed. Warnings are shown by rank 0 only (the ranks would repeat them)."""
    error = None
    try:
        with warnings.catch_warnings():
            if not is_main():
                warnings.simplefilter("ignore")
            result: tuple[str, Any] = ("ok", fn())
    except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
        error = e
        result = ("error", (isinstance(e, FeatdiffError), f"{type(e).__name__}: {e}"))
    statuses = all_gather_objects(result if gather or error is not None else ("ok", None))
    if error is not None:
        raise error
    for r, (status, value) in enumerate(statuses):
        if status == "error":
            is_featdiff, message = value
            raise (FeatdiffError if is_featdiff else RuntimeError)(f"rank {r} failed: {message}")
    return [value for _, value in statuses] if gather else [result[1]]

