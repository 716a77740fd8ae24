"""Greedy generation with or without a feature edit, and the lab's exact-match check."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.analyses.interventions.edit_hooks import edit_features
from featdiff.core.config import check_int
from featdiff.errors import FeatdiffError


def prompt_groups(prompts: Any) -> list[tuple[list[int], Tensor]]:
    """Group prompts by length: [(row indices, tokens of that length)]."""
    if isinstance(prompts, Tensor):
        if prompts.ndim != 2 or prompts.dtype.is_floating_point:
            raise FeatdiffError(
                f"prompts must be token ids of shape (n_prompts, pos); got {tuple(prompts.shape)}."
            )
        return [(list(range(prompts.shape[0])), prompts)]
    rows = [torch.as_tensor(p) for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(rows):
        if p.ndim != 1:
            raise FeatdiffError(
                f"Each prompt must be a 1-D tensor of token ids; prompt {i} has shape {tuple(p.shape)}."
            )
        groups.setdefault(len(p), []).append(i)
    return [(idx, torch.stack([rows[i] for i in idx])) for idx in groups.values()]


def generate_greedy(
    model: Any,
    prompts: Int[Tensor, "n_prompts pos"] | Sequence[Int[Tensor, " pos"]],
    n_new_tokens: int,
    fwd_hooks: list[tuple[str, Callable]] | None = None,
    edit: FeatureEdit | Sequence[FeatureEdit] | None = None,
    batch_size: int = 64,
) -> Int[Tensor, "n_prompts n_new_tokens"]:
    """Greedy decoding of exactly ``n_new_tokens`` tokens, with hooks / an edit active on every step.

    Every step runs the whole sequence (no KV cache), so hooks see full sequences (as ``codes="joint"``
    needs); for the short fixed-length answers of the lab's tasks that costs little.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> generate_greedy(model, torch.tensor([[1, 2], [3, 4]]), 3).shape
    torch.Size([2, 3])
    """
    check_int("generate_greedy", "n_new_tokens", n_new_tokens)
    groups = prompt_groups(prompts)
    n = sum(len(idx) for idx, _ in groups)
    device = next(model.parameters()).device
    out = torch.zeros(n, n_new_tokens, dtype=torch.long)
    ctx = edit_features(model, edit) if edit is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx, model.hooks(fwd_hooks=list(fwd_hooks or [])):
        for idx, toks in groups:
            for start in range(0, len(idx), batch_size):
                seq = toks[start : start + batch_size].to(device)
                for step in range(n_new_tokens):
                    nxt = model(seq)[:, -1].argmax(-1)
                    out[idx[start : start + batch_size], step] = nxt.cpu()
                    seq = torch.cat([seq, nxt[:, None]], dim=1)
    return out


def exact_match(
    predictions: Int[Tensor, "n n_answer"], answers: Int[Tensor, "n n_answer"]
) -> Bool[Tensor, " n"]:
    """Whether every answer token was generated (the lab's exact-match criterion)."""
    return (predictions.to(answers.device) == answers).all(dim=-1)
