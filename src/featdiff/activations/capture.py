"""Capturing a checkpoint's activations at a hook, batch by batch, and the outlier-norm rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.errors import FeatdiffError
from featdiff.models.hooks import stop_layer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def model_rows(
    name: str,
    model: HookedTransformer,
    batches,
    hook: str,
    first_seq: int = 0,
) -> Iterator[Float[Tensor, "rows d_in"]]:
    """The kept rows of ``model``'s activations at ``hook`` for each batch ``(ids, mask, keep)`` of
    sequences (float32, CPU); padding is fed as id 0 and masked; the forward pass stops after the hook's
    block. ``first_seq``: the index of the first batch's first sequence (for error messages)."""
    stop, dev = stop_layer(hook), model.cfg.device
    start = first_seq
    for ids, mask, keep in batches:
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                ids.masked_fill(~mask, 0).to(dev),
                names_filter=hook,
                stop_at_layer=stop,
                attention_mask=mask.long().to(dev),
                return_cache_object=False,
            )
        x = cache[hook]
        if x.shape[:2] != ids.shape:
            raise FeatdiffError(
                f"Hook {hook!r} gives activations of shape {tuple(x.shape)}, not (batch, pos, ...); "
                "pick a hook with one vector per token, e.g. featdiff.hook_name(layer)."
            )
        x = x.reshape(-1, x[0, 0].numel())[keep.reshape(-1).to(x.device)].float().cpu()
        if not torch.isfinite(x).all():
            raise FeatdiffError(
                f"Checkpoint {name!r} gives NaN or infinite activations at {hook!r} in the batch of sequences "
                f"starting at {start}; load it in float32 (load_model(..., dtype='float32')) or check its weights."
            )
        start += ids.shape[0]
        yield x


def outliers(
    norms: dict[str, Tensor], factor: float | None
) -> tuple[Tensor, dict[str, int], dict[str, float]]:
    """Rows whose norm exceeds ``factor`` x the median norm in any checkpoint; counts and medians by name."""
    outlier = torch.zeros_like(next(iter(norms.values())), dtype=torch.bool)
    by_checkpoint, medians = {}, {}
    for name, nrm in norms.items():
        medians[name] = float(nrm.median())
        bad = (
            nrm > factor * medians[name]
            if factor is not None and medians[name] > 0
            else torch.zeros_like(outlier)
        )
        by_checkpoint[name] = int(bad.sum())
        outlier |= bad
    return outlier, by_checkpoint, medians
