"""Hooks that apply a FeatureEdit inside one model's forward pass (``edit_features``), and the other
checkpoints' activations a crosscoder's joint codes need."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.errors import FeatdiffError
from featdiff.models.hooks import stop_layer


def check_model_hook(model: Any, hook: str) -> None:
    if hook not in getattr(model, "hook_dict", {}):
        valid = [h for h in getattr(model, "hook_dict", {}) if h.endswith("hook_resid_post")]
        raise FeatdiffError(
            f"Hook {hook!r} does not exist in the model; valid residual hooks: {valid[:8]}. "
            "Build one with featdiff.hook_name(layer, site)."
        )


def other_activations(
    edit: FeatureEdit, tokens: Int[Tensor, "batch pos"]
) -> dict[str, Float[Tensor, "batch pos d_in"]]:
    """The other checkpoints' activations at the edit's hook on ``tokens`` (run up to the hook's layer)."""
    out = {}
    stop = stop_layer(edit.hook)
    memo = _OTHERS_MEMO.get("active")
    for name, other in (edit.others or {}).items():
        if name == edit.model_name or name not in edit.dictionary.names:
            continue
        check_model_hook(other, edit.hook)
        key = None
        if memo is not None:
            key = (id(other), edit.hook, tuple(tokens.shape), tokens.detach().cpu().numpy().tobytes())
            if key in memo:
                out[name] = memo[key]
                continue
        with torch.no_grad():
            _, cache = other.run_with_cache(tokens, names_filter=edit.hook, stop_at_layer=stop)
        out[name] = cache[edit.hook]
        if memo is not None:
            if len(memo) >= _OTHERS_MEMO_SIZE:
                memo.clear()
            memo[key] = out[name]
    return out


# The other checkpoints run unedited: within one evaluate_intervention call the edit and its random
# controls feed them the same token sequences again and again (controls seldom change a generated token),
# so their activations are remembered by token content for the duration of that call only.
_OTHERS_MEMO: dict[str, dict] = {}
_OTHERS_MEMO_SIZE = 512


@contextlib.contextmanager
def remember_others() -> Iterator[None]:
    outer = _OTHERS_MEMO.get("active")
    _OTHERS_MEMO["active"] = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _OTHERS_MEMO.pop("active", None)


def _edit_hook_fn(edit: FeatureEdit, state: dict) -> Callable:
    def hook_fn(h: Tensor, hook: Any) -> Tensor:
        others = None
        if edit.needs_others and not edit.is_identity:
            tokens = state.get("tokens")
            if tokens is None or tuple(tokens.shape) != tuple(h.shape[:2]):
                raise FeatdiffError(
                    f"codes='joint' needs the token ids of the whole sequence at {edit.hook_point}; got "
                    f"activations of shape {tuple(h.shape)} and tokens "
                    f"{None if tokens is None else tuple(tokens.shape)}. Use edit_features(...) or "
                    "generate_greedy(...), which run without a KV cache."
                )
            others = other_activations(edit, tokens)
        return edit.apply(h, others)

    return hook_fn


def hooks(model: Any, edit: FeatureEdit) -> list[tuple[str, Callable]]:
    """``fwd_hooks`` for ``model.run_with_hooks`` / ``model.hooks`` that apply ``edit``.

    ``codes="joint"`` needs the token ids: use ``edit_features`` (or a model with ``use_hook_tokens``).

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> fwd = hooks(model, FeatureEdit(sae, [0], hook="blocks.0.hook_resid_post"))
    >>> model.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=fwd).shape
    torch.Size([1, 3, 7])
    """
    check_model_hook(model, edit.hook)
    state: dict = {}
    out = []
    if edit.needs_others:
        if "hook_tokens" not in model.hook_dict:
            raise FeatdiffError(
                "codes='joint' needs the token ids; use `with edit_features(model, edit):` instead of hooks(), "
                "or codes='single'."
            )

        def capture(tokens: Tensor, hook: Any) -> Tensor:
            state["tokens"] = tokens
            return tokens

        out.append(("hook_tokens", capture))
    out.append((edit.hook, _edit_hook_fn(edit, state)))
    return out


@contextlib.contextmanager
def edit_features(model: Any, edit: FeatureEdit | Sequence[FeatureEdit]) -> Iterator[Any]:
    """Apply one edit (or several, in order) to every forward pass of ``model`` inside the block.

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> tokens = torch.tensor([[1, 2, 3]])
    >>> with edit_features(model, FeatureEdit(sae, [], hook="blocks.0.hook_resid_post")):
    ...     edited = model(tokens)
    >>> bool(torch.equal(edited, model(tokens)))
    True
    """
    edits = [edit] if isinstance(edit, FeatureEdit) else list(edit)
    for e in edits:
        if not isinstance(e, FeatureEdit):
            raise FeatdiffError(f"edit_features takes FeatureEdit objects; got {type(e).__name__}.")
        check_model_hook(model, e.hook)
    state: dict = {}
    handle = None
    if any(e.needs_others for e in edits):

        def capture(module: Any, args: tuple) -> None:
            state["tokens"] = args[0] if args else None

        handle = model.embed.register_forward_pre_hook(capture)
    try:
        with model.hooks(fwd_hooks=[(e.hook, _edit_hook_fn(e, state)) for e in edits]):
            yield model
    finally:
        if handle is not None:
            handle.remove()
