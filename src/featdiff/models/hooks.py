"""Hook names (TransformerLens strings, verbatim), the layer a hook reads, and whether checkpoints can be
compared at a hook."""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

from featdiff.core.config import check_int
from featdiff.errors import FeatdiffError, check_choice

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# Hook sites hook_name builds, as TransformerLens names them.
_SITES = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
    "z": "blocks.{layer}.attn.hook_z",
}


def hook_name(layer: int, site: str = "resid_post") -> str:
    """The TransformerLens hook name of ``site`` in block ``layer``.

    Examples
    --------
    >>> hook_name(2)
    'blocks.2.hook_resid_post'
    >>> hook_name(0, "mlp_post")
    'blocks.0.mlp.hook_post'
    """
    check_int("hook_name", "layer", layer, minimum=0)
    check_choice("site", site, _SITES, where="hook_name")
    return _SITES[site].format(layer=layer)


def default_hook(model: HookedTransformer) -> str:
    """The hook featdiff uses when none is given: the middle layer's residual stream.

    Examples
    --------
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=4, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu"))
    >>> default_hook(model)
    'blocks.2.hook_resid_post'
    """
    return hook_name(model.cfg.n_layers // 2)


def hook_layer(hook: str) -> int | None:
    """The block a hook lives in (``blocks.{L}.…`` -> L), -1 for the embedding hooks, else None."""
    m = re.match(r"^blocks\.(\d+)\.", hook)
    if m:
        return int(m.group(1))
    if hook in ("hook_embed", "hook_pos_embed", "hook_tokens"):
        return -1
    return None


def stop_layer(hook: str) -> int | None:
    """The ``stop_at_layer`` that runs a model just far enough to compute ``hook`` (None: the whole model).

    Examples
    --------
    >>> stop_layer("blocks.1.hook_resid_post"), stop_layer("hook_embed"), stop_layer("ln_final.hook_normalized")
    (2, 0, None)
    """
    layer = hook_layer(hook)
    return None if layer is None else layer + 1


def _suggest_hooks(hook: str, valid: list[str], n: int = 6) -> list[str]:
    kind = hook.rsplit(".", 1)[-1]
    same_kind = [h for h in valid if h.rsplit(".", 1)[-1] == kind]
    if same_kind:
        return same_kind[:n]
    close = difflib.get_close_matches(hook, valid, n=n, cutoff=0.5)
    return close or [h for h in valid if h.endswith("hook_resid_post")][:n]


def _check_hook(model: HookedTransformer, hook: str, name: str = "the model") -> None:
    if not isinstance(hook, str):
        raise FeatdiffError(f"A hook must be a TransformerLens hook name (str); got {type(hook).__name__}.")
    if hook not in model.hook_dict:
        valid = list(model.hook_dict)
        raise FeatdiffError(
            f"Hook {hook!r} does not exist in {name} ({model.cfg.n_layers} layers). "
            f"Valid hooks of this kind: {_suggest_hooks(hook, valid)}; build one with "
            "featdiff.hook_name(layer, site)."
        )


def check_compatible(models: dict[str, HookedTransformer], hook: str) -> None:
    """Raise FeatdiffError unless all checkpoints share d_model and d_vocab and all have ``hook``.

    Examples
    --------
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=2, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu")
    >>> models = {"base": HookedTransformer(cfg), "rl": HookedTransformer(cfg)}
    >>> check_compatible(models, "blocks.1.hook_resid_post")  # silent when compatible
    >>> check_compatible(models, "blocks.5.hook_resid_post")
    Traceback (most recent call last):
    ...
    featdiff.errors.FeatdiffError: Hook 'blocks.5.hook_resid_post' does not exist in checkpoint 'base' ...
    """
    from transformer_lens import HookedTransformer  # deferred: transformer-lens ~12 s to import

    if not isinstance(models, dict) or not models:
        raise FeatdiffError("check_compatible needs a non-empty dict {checkpoint name: HookedTransformer}.")
    for name, model in models.items():
        if not isinstance(model, HookedTransformer):
            raise FeatdiffError(
                f"Checkpoint {name!r} is a {type(model).__name__}, not a HookedTransformer; "
                "load it first with featdiff.load_model."
            )
    for field in ("d_model", "d_vocab"):
        values = {name: getattr(m.cfg, field) for name, m in models.items()}
        if len(set(values.values())) > 1:
            raise FeatdiffError(
                f"The checkpoints disagree on {field}: {values}. Every checkpoint compared must be a "
                "version of the same model (same architecture and tokenizer)."
            )
    for name, model in models.items():
        _check_hook(model, hook, f"checkpoint {name!r}")
