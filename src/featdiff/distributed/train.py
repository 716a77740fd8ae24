"""Training under torchrun: ``train_saes`` places the SAEs round-robin on the ranks, ``train_crosscoder`` is
data-parallel (``DataParallel``: a share of every batch per rank, the batch top-k over all ranks, all-reduced
gradients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.dictionaries.crosscoder.train import train_crosscoder as _train_crosscoder
from featdiff.dictionaries.sae import train_saes as _train_saes
from featdiff.distributed.ranks import (
    broadcast_object,
    init,
    is_main,
    rank,
    rank_device,
    run_everywhere,
    shard,
    world_size,
)
from featdiff.errors import FeatdiffError


# ----------------------------------------------------------------------------------------- SAEs
def _pack_sae(sae) -> dict:
    """An inference SAE as plain data (sae-lens SAEs do not pickle): its config, weights, featdiff_ fields."""
    return {
        "cfg": sae.cfg.to_dict(),
        "state": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
        "attrs": {k: v for k, v in vars(sae).items() if k.startswith("featdiff_")},
    }


def _unpack_sae(packed: dict):
    from sae_lens import SAE  # deferred: sae-lens ~10 s to import

    sae = SAE.from_dict({**packed["cfg"], "device": "cpu"})
    sae.load_state_dict(packed["state"])
    for k, v in packed["attrs"].items():
        setattr(sae, k, v)
    return sae.eval()


def plan_placement(keys: Iterable[str], world: int | None = None) -> dict[str, int]:
    """Which rank trains which SAE: round-robin in plan order (checkpoints first, then the extras).

    Examples
    --------
    >>> plan_placement(["base", "rl", "sft", "base replica 1"], world=2)
    {'base': 0, 'rl': 1, 'sft': 0, 'base replica 1': 1}
    """
    w = world_size() if world is None else world
    return {key: i % w for i, key in enumerate(keys)}


def train_saes(
    acts: ActivationSet,
    *args: Any,
    names: list[str] | None = None,
    extra: Mapping[str, tuple[str, int]] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> dict:
    """``featdiff.train_saes`` with the SAEs placed round-robin on the ranks (``plan_placement``); every
    rank returns all of them, each the SAE one process trains with the same arguments (an SAE depends only
    on its checkpoint, its seed and the data order, not on the SAEs trained beside it).

    Every rank needs the whole ``acts`` (``collect_activations`` here gives it to each).

    Examples
    --------
    >>> import torch
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    >>> saes = train_saes(acts, k=2, n_steps=5, batch_size=64, extra={"base_seed1": ("base", 1)},
    ...                   progress=False)
    >>> sorted(saes), saes["base_seed1"].cfg.d_sae
    (['base', 'base_seed1', 'rl'], 32)
    """
    init()
    device = rank_device(device)
    if world_size() == 1:
        return _train_saes(acts, *args, names=names, extra=extra, progress=progress, device=device, **kwargs)
    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(f"train_saes needs an ActivationSet; got {type(acts).__name__}.")
    names = acts.names if names is None else list(names)
    extra = dict(extra or {})
    clash = sorted(set(names) & set(extra))
    if clash:
        raise FeatdiffError(f"The extra SAE keys {clash} clash with checkpoint names; pick other keys.")
    placement = plan_placement([*names, *extra])
    mine = [key for key, r in placement.items() if r == rank()]

    def train_mine():
        if not mine:
            return {}
        trained = _train_saes(
            acts, *args,
            names=[k for k in mine if k in names],
            extra={k: extra[k] for k in mine if k in extra} or None,
            progress=progress and is_main(),
            device=device,
            **kwargs,
        )  # fmt: skip
        return {k: _pack_sae(s) for k, s in trained.items()}

    merged: dict = {}
    for part in run_everywhere(train_mine):
        merged.update(part)
    return {key: _unpack_sae(merged[key]) for key in placement}


# ----------------------------------------------------------------------------------------- crosscoder
class DataParallel:
    """What ``train_crosscoder(..., data_parallel=...)`` calls to make one training step span the ranks.

    Every rank draws the same batch (same seed), takes its ``share`` of the rows, and the step's three
    batch-wide quantities are exchanged: the batch top-k threshold (``batch_top_mask``, from every rank's
    own top scores), the latents that fired (``any``) and the gradients, each share's weighted by its rows
    (``reduce_gradients``), so that the update is the single-process update of the whole batch.
    """

    def __init__(self) -> None:
        self.batch_rows = 0
        self.local_rows = 0

    def share(self, x: Float[Tensor, "batch ..."]) -> Float[Tensor, "rows ..."]:
        """This rank's contiguous rows of the batch ``x`` (the same batch on every rank)."""
        self.batch_rows = x.shape[0]
        sl = shard(self.batch_rows)
        self.local_rows = sl.stop - sl.start
        return x[sl]

    def batch_top_mask(self, scores: Float[Tensor, "rows d_sae"], k: float) -> Tensor:
        """Mask of this share's scores among the ``k * batch_rows`` largest of the whole batch."""
        n_keep = min(int(k * self.batch_rows), self.batch_rows * scores.shape[1])
        flat = scores.detach().flatten()
        local = flat.topk(min(n_keep, flat.numel()), sorted=False).values
        padded = torch.full((n_keep,), -torch.inf, dtype=flat.dtype, device=flat.device)
        padded[: local.numel()] = local
        gathered = [torch.empty_like(padded) for _ in range(world_size())]
        dist.all_gather(gathered, padded)
        threshold = torch.cat(gathered).topk(n_keep, sorted=False).values.min()
        return scores >= threshold

    def min_kept(self, kept: Tensor) -> Tensor:
        """The smallest kept score over the whole batch (0 when nothing was kept, as in one process)."""
        local = kept.detach().min() if kept.numel() else torch.tensor(torch.inf, device=kept.device)
        value = local.reshape(1).to(torch.float32).clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value[0] if torch.isfinite(value[0]) else torch.tensor(0.0)

    def any(self, mask: Tensor) -> Tensor:
        """Element-wise OR of ``mask`` over the ranks."""
        value = mask.to(torch.float32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value > 0

    def reduce_gradients(self, params: Iterable[torch.nn.Parameter], loss: float) -> float:
        """Replace each gradient (of a mean over this share) by the gradient of the mean over the batch;
        return the batch's mean ``loss`` likewise."""
        params = [p for p in params if p.requires_grad]
        w = self.local_rows / self.batch_rows
        # a batch with fewer rows than ranks leaves this rank's share empty: its mean is NaN, its weight 0
        if self.local_rows == 0:
            loss = 0.0
            for p in params:
                p.grad = None
        flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
        buf = torch.cat([*flat, torch.tensor([loss], dtype=flat[0].dtype, device=flat[0].device)]) * w
        dist.all_reduce(buf)
        start = 0
        for p in params:
            p.grad = buf[start : start + p.numel()].view_as(p).clone()
            start += p.numel()
        return float(buf[-1])


def train_crosscoder(
    acts: ActivationSet, *args: Any, device: str | torch.device | None = None, **kwargs: Any
) -> Crosscoder:
    """``featdiff.train_crosscoder`` trained data-parallel over the ranks (see ``DataParallel``); the same
    arguments, and every rank returns the crosscoder (rank 0's weights), equal to the single-process one
    within floating-point summation order. Every rank needs the whole ``acts``.

    Examples
    --------
    >>> import torch
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    >>> train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False).names
    ['base', 'rl']
    """
    init()
    device = rank_device(device)
    if world_size() == 1:
        return _train_crosscoder(acts, *args, device=device, **kwargs)
    progress = kwargs.pop("progress", True) and is_main()
    dp = DataParallel()
    cc = run_everywhere(
        lambda: _train_crosscoder(acts, *args, device=device, progress=progress, data_parallel=dp, **kwargs),
        gather=False,
    )[0]
    state = broadcast_object({k: v.cpu() for k, v in cc.state_dict().items()})
    cc.load_state_dict(state)
    return cc

