"""Many processes through torch.distributed: run featdiff under ``torchrun`` (gloo on CPUs, NCCL on GPUs).

Launch any script (or ``python -m featdiff compare ...``) with ``torchrun --nproc_per_node N``; every rank
runs the same code and the stage functions here split the work:

- ``collect_activations``: each rank runs the checkpoints on its contiguous slice of the sequences; the
  slices are gathered (in rank order, so rows come in the single-process order) and the outlier rule is
  applied to the whole set, so every rank ends with the set one process would have collected.
- ``train_saes``: the SAEs (one per checkpoint and each ``extra`` replica) are placed round-robin on the
  ranks, each trained on the full data exactly as one process trains it, then gathered to every rank.
- ``train_crosscoder``: data-parallel. Each rank takes its share of every batch; the batch top-k is taken
  over the whole batch (the ranks exchange their top scores), which latents fired is all-reduced, and the
  gradients are all-reduced (weighted by each share's rows), so a step is the single-process step.

``featdiff.compare_checkpoints(..., distributed=True)`` uses them; rank 0 returns the ``Comparison``,
the other ranks ``None``. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything runs in
the one process, as the plain functions do. See docs/distributed.md.
"""

from featdiff.distributed.collect import collect_activations
from featdiff.distributed.ranks import (
    BACKENDS,
    all_gather_objects,
    barrier,
    broadcast_object,
    init,
    is_main,
    launched,
    local_rank,
    rank,
    rank_device,
    run_everywhere,
    shard,
    world_size,
)
from featdiff.distributed.train import DataParallel, plan_placement, train_crosscoder, train_saes

__all__ = [
    "BACKENDS",
    "DataParallel",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "collect_activations",
    "init",
    "is_main",
    "launched",
    "local_rank",
    "plan_placement",
    "rank",
    "rank_device",
    "run_everywhere",
    "shard",
    "train_crosscoder",
    "train_saes",
    "world_size",
]
