"""``collect_activations`` under torchrun: each rank collects its slice of the sequences; the slices are
gathered in rank order and the outlier rule applied to the whole set."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from featdiff.activations.activations import ActivationSet
from featdiff.activations.capture import outliers
from featdiff.activations.collect import collect_activations as _collect_activations
from featdiff.activations.tokens import prepare_tokens
from featdiff.distributed.ranks import init, is_main, rank_device, run_everywhere, shard, world_size
from featdiff.errors import FeatdiffError
from featdiff.models.load import load_model


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
    >>> acts = collect_activations({"base": HookedTransformer(cfg)}, tokens, "blocks.0.hook_resid_post",
    ...                            progress=False)
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
    ids, mask = prepare_tokens(tokens, loaded, attention_mask, pad_token_id)
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

    parts = [p for p in run_everywhere(mine) if p is not None]
    names = list(parts[0]["acts"])
    raw = {n: torch.cat([p["acts"][n] for p in parts]) for n in names}
    outlier, by_checkpoint, medians = outliers({n: x.norm(dim=1) for n, x in raw.items()}, outlier_factor)
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
        run_everywhere(
            lambda: acts.save(out_dir, shard_tokens=shard_tokens) if is_main() else None, gather=False
        )
    return acts

