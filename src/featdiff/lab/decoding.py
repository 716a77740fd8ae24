"""Batched fixed-length generation with a HookedTransformer (greedy or sampled), with a key-value cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def _kv_cache(model: HookedTransformer, batch: int):
    try:
        from transformer_lens.cache.key_value_cache import (
            TransformerLensKeyValueCache,  # deferred: transformer-lens ~12 s to import
        )
    except ImportError:  # older transformer-lens 3.x layout, or none: recompute the whole prefix
        try:
            from transformer_lens.past_key_value_caching import (  # type: ignore[no-redef]
                HookedTransformerKeyValueCache as TransformerLensKeyValueCache,
            )
        except ImportError:
            return None
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)


@torch.no_grad()
def generate(
    model: HookedTransformer,
    prompts: Int[Tensor, "batch prompt_len"],
    n_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> Int[Tensor, "batch n_tokens"]:
    """Generate exactly ``n_tokens`` tokens after equal-length prompts.

    ``temperature=0`` is greedy; otherwise tokens are sampled from softmax(logits / temperature) with
    ``generator`` (the same generator state gives the same samples).

    Examples
    --------
    >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
    >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=5, n_ctx=8,
    ...                               attn_only=True, seed=0)
    >>> out = generate(HookedTransformer(cfg), torch.zeros(3, 2, dtype=torch.long), n_tokens=4)
    >>> tuple(out.shape)
    (3, 4)
    """
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, prompts.shape[0], batch_size):
        outs.append(
            _generate_batch(model, prompts[start : start + batch_size], n_tokens, temperature, generator)
        )
    model.train(was_training)
    return torch.cat(outs, dim=0) if outs else prompts.new_zeros((0, n_tokens))


def _pick(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _generate_batch(model, prompts: Tensor, n_tokens: int, temperature: float, generator) -> Tensor:
    prompts = prompts.to(model.cfg.device)
    cache = _kv_cache(model, prompts.shape[0])
    out = []
    if cache is not None:
        logits = model(prompts, past_kv_cache=cache, attention_mask=torch.ones_like(prompts))[:, -1]
        for i in range(n_tokens):
            token = _pick(logits, temperature, generator)
            out.append(token)
            if i + 1 < n_tokens:
                logits = model(token, past_kv_cache=cache, attention_mask=torch.ones_like(token))[:, -1]
    else:
        seq = prompts
        for _ in range(n_tokens):
            token = _pick(model(seq)[:, -1], temperature, generator)
            out.append(token)
            seq = torch.cat([seq, token], dim=1)
    return torch.cat(out, dim=1).cpu()
