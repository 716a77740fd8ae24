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

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet, _outliers, _prepare_tokens
from featdiff.activations.activations import collect_activations as _collect_activations
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.dictionaries.crosscoder.model import train_crosscoder as _train_crosscoder
from featdiff.dictionaries.sae import train_saes as _train_saes
from featdiff.errors import FeatdiffError
from featdiff.models.models import load_model

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


def _run_everywhere(fn: Callable[[], Any], gather: bool = True) -> list[Any]:
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


# ----------------------------------------------------------------------------------------- collection
def collect_activations(
    models: Mapping[str, object],
    tokens,
    hook: str | None = None,
    batch_size: int = 32,
    drop_bos: bool = True,
    outlier_factor: float | None = 10.0,
    out_dir: str | os.PathLike | None = None,
    shard_tokens: int = 65536,
    progress: bool = True,
    device: str | None = None,
    attention_mask=None,
    pad_token_id: int | None = None,
) -> ActivationSet:
    """``featdiff.collect_activations`` with the sequences shared across ranks (same arguments, same
    result on every rank as one process would collect).

    Each rank runs every checkpoint on its contiguous slice of the sequences (``shard``), without the
    outlier rule; the slices are gathered in rank order and the outlier rule (``outlier_factor`` times the
    median norm of the whole set) is applied once, so rows, ``token_ids``, ``sequence_ids`` and ``meta``
    are the single-process ones. With ``out_dir`` rank 0 writes the set there (``ActivationSet.save``).

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=20, act_fn="relu", seed=0)
    >>> tokens = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    >>> acts = collect_activations({"base": HookedTransformer(cfg)}, tokens, "blocks.0.hook_resid_post", progress=False)
    >>> acts.n_tokens, acts.sequence_ids.tolist()[:6]
    (20, [0, 0, 0, 0, 0, 1])
    """
    init()
    device = rank_device(device)
    kwargs = dict(hook=hook, batch_size=batch_size, drop_bos=drop_bos, device=device)
    if world_size() == 1:
        return _collect_activations(
            models, tokens, outlier_factor=outlier_factor, out_dir=out_dir, shard_tokens=shard_tokens,
            progress=progress, attention_mask=attention_mask, pad_token_id=pad_token_id, **kwargs,
        )  # fmt: skip
    if outlier_factor is not None and not outlier_factor > 1:
        raise FeatdiffError(
            f"outlier_factor must be > 1 (a multiple of the median norm) or None to keep all; got {outlier_factor}."
        )
    loaded = {str(n): load_model(spec, device=device) for n, spec in models.items()}
    ids, mask = _prepare_tokens(tokens, loaded, attention_mask, pad_token_id)
    sl = shard(ids.shape[0])

    def mine():
        if sl.stop == sl.start:
            return None
        part = _collect_activations(
            loaded, ids[sl], attention_mask=mask[sl], outlier_factor=None, progress=progress and is_main(),
            **kwargs,
        )  # fmt: skip
        return {
            "acts": dict(part.acts),
            "token_ids": part.token_ids,
            "sequence_ids": part.sequence_ids + sl.start,
            "meta": part.meta,
            "hook": part.hook,
        }

    parts = [p for p in _run_everywhere(mine) if p is not None]
    names = list(parts[0]["acts"])
    raw = {n: torch.cat([p["acts"][n] for p in parts]) for n in names}
    outlier, by_checkpoint, medians = _outliers({n: x.norm(dim=1) for n, x in raw.items()}, outlier_factor)
    kept = ~outlier
    if not kept.any():
        raise FeatdiffError("Every token was dropped as an outlier; raise outlier_factor or pass None.")
    meta = dict(parts[0]["meta"])
    for key in ("n_dropped_pad", "n_dropped_first", "n_dropped_bos"):
        meta[key] = sum(int(p["meta"][key]) for p in parts)
    meta.update(
        n_sequences=int(ids.shape[0]),
        n_dropped_pad=int((~mask).sum()),  # slices with no kept token at all count their padding too
        n_dropped_outlier=int(outlier.sum()),
        n_outlier_by_checkpoint=by_checkpoint,
        median_norm=medians,
        outlier_factor=outlier_factor,
    )
    acts = ActivationSet(
        {n: x[kept] for n, x in raw.items()},
        hook=parts[0]["hook"],
        token_ids=torch.cat([p["token_ids"] for p in parts])[kept],
        meta=meta,
        sequence_ids=torch.cat([p["sequence_ids"] for p in parts])[kept],
    )
    if out_dir is not None:
        _run_everywhere(
            lambda: acts.save(out_dir, shard_tokens=shard_tokens) if is_main() else None, gather=False
        )
    return acts


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
    >>> saes = train_saes(acts, k=2, n_steps=5, batch_size=64, extra={"base_seed1": ("base", 1)}, progress=False)
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
    for part in _run_everywhere(train_mine):
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
    cc = _run_everywhere(
        lambda: _train_crosscoder(acts, *args, device=device, progress=progress, data_parallel=dp, **kwargs),
        gather=False,
    )[0]
    state = broadcast_object({k: v.cpu() for k, v in cc.state_dict().items()})
    cc.load_state_dict(state)
    return cc
