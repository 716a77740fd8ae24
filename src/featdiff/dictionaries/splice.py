"""The language-model half of a dictionary's quality: the next-token loss with the dictionary's
reconstruction spliced in at the hook, against the clean model and against zero-ablation (sae-lens's
``get_downstream_reconstruction_metrics`` / ``get_recons_loss``; SAEBench's "loss recovered").

Per sequence, three forward passes of the same model: **clean**; **spliced**, the activation at the hook
replaced by the dictionary's reconstruction; **zero**, the activation replaced by zeros. The positions
replaced are those featdiff's SAEs are trained and scored on (``collect_activations``' kept positions: real,
not padding, and with ``drop_bos`` not a sequence's first; a position whose activation norm exceeds
``max_norm`` is kept clean, as collect_activations drops outlier-norm tokens); zero-ablation replaces the
same positions. Sums per sequence, over the replaced positions:

- ``ce_clean`` / ``ce_spliced`` / ``ce_zero``: the cross-entropy of the next token, at each replaced
  position t whose next position t + 1 is real (``n_ce`` of them);
- ``kl``: KL(clean || spliced) of the next-token distributions, summed over the vocabulary, at each
  replaced position (``n_kl``).

featdiff.metrics.quality turns the sums into CE loss recovered, (CE_zero - CE_spliced) / (CE_zero -
CE_clean), and the mean KL, with intervals over chunks of sequences. Where sae-lens differs: it replaces
every position not in ``ignore_tokens`` and zero-ablates every position (ignored ones too); here both
replace exactly the positions the dictionary was trained on, so a decoder of zeros recovers 0 exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from featdiff.activations.tokens import kept_positions
from featdiff.errors import FeatdiffError
from featdiff.models.hooks import stop_layer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# float32 logits held at once by one forward pass (batch x positions x vocabulary): 2**25 is 128 MB
LOGIT_BUDGET = 1 << 25
SPLICE_SUMS = ("ce_clean", "ce_spliced", "ce_zero", "n_ce", "kl", "n_kl")

Replacement = Callable[[Tensor], Tensor] | Tensor


def sae_replacement(sae) -> Callable[[Tensor], Tensor]:
    """``rows -> sae.decode(sae.encode(rows))`` on the SAE's device and dtype, back in the rows' own."""

    def run(rows: Tensor) -> Tensor:
        p = next(iter(sae.parameters()), None)
        dev, dt = (p.device, p.dtype) if p is not None else (rows.device, rows.dtype)
        return sae.decode(sae.encode(rows.to(dev, dt))).to(rows.device, rows.dtype)

    return run


@torch.no_grad()
def hook_activations(
    model: HookedTransformer, ids: Int[Tensor, "batch seq"], mask: Bool[Tensor, "batch seq"], hook: str
) -> Float[Tensor, "batch seq d_in"]:
    """The activations at ``hook`` (the forward pass stops after its block), as collect_activations reads
    them: padding fed as id 0 and masked."""
    dev = model.cfg.device
    _, cache = model.run_with_cache(
        ids.masked_fill(~mask, 0).to(dev), names_filter=hook, stop_at_layer=stop_layer(hook),
        attention_mask=mask.long().to(dev), return_cache_object=False,
    )  # fmt: skip
    return cache[hook].reshape(*ids.shape, -1)


def splice_positions(
    x: Float[Tensor, "batch seq d_in"], mask: Bool[Tensor, "batch seq"], drop_bos: bool, max_norm: float | None
) -> Bool[Tensor, "batch seq"]:
    """The positions replaced: collect_activations' kept positions, less those with a norm above ``max_norm``.

    Examples
    --------
    >>> x = torch.ones(1, 4, 2); x[0, 2] = 100.0
    >>> splice_positions(x, torch.ones(1, 4, dtype=torch.bool), True, 10.0).tolist()
    [[False, True, False, True]]
    """
    keep = kept_positions(mask.cpu(), drop_bos)
    if max_norm is not None:
        keep &= x.float().norm(dim=-1).cpu() <= max_norm
    return keep


def _logits(model, ids, mask, hook, splice, replace=None) -> Tensor:
    """Log-probabilities of a forward pass; ``replace``: the rows at ``splice``, or a function of them."""
    dev = model.cfg.device
    where = splice.to(dev)

    def edit(act, hook):  # noqa: ARG001 (TransformerLens passes the hook point)
        shape = act.shape
        flat = act.reshape(*where.shape, -1)
        rows = flat[where]
        new = replace if isinstance(replace, Tensor) else replace(rows)
        if new.shape != rows.shape:
            raise FeatdiffError(
                f"The reconstruction at {hook.name} has shape {tuple(new.shape)}, not that of the {tuple(rows.shape)} "
                "activations it replaces; splice a dictionary trained at this hook."
            )
        out = flat.clone()
        out[where] = new.to(out.device, out.dtype)
        return out.reshape(shape)

    hooks = [] if replace is None else [(hook, edit)]
    logits = model.run_with_hooks(
        ids.masked_fill(~mask, 0).to(dev), fwd_hooks=hooks, attention_mask=mask.long().to(dev), return_type="logits"
    )
    return torch.log_softmax(logits.float(), dim=-1)


def _next_token_ce(logp: Tensor, ids: Tensor, ce_pos: Tensor) -> Tensor:
    """Per sequence, the summed cross-entropy of the next token at ``ce_pos`` (batch, seq - 1)."""
    target = ids[:, 1:].to(logp.device)
    nll = -logp[:, :-1].gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (nll * ce_pos.to(nll.device)).sum(1).double().cpu()


@torch.no_grad()
def splice_batch(
    model: HookedTransformer,
    ids: Int[Tensor, "batch seq"],
    mask: Bool[Tensor, "batch seq"],
    hook: str,
    splice: Bool[Tensor, "batch seq"],
    replacements: Mapping[str, Replacement],
) -> dict[str, dict[str, np.ndarray]]:
    """Per replacement (a function of the replaced rows, or the rows themselves in ``splice`` order), the
    per-sequence sums ``SPLICE_SUMS`` of one batch (module docstring); one clean and one zero-ablated pass
    serve them all."""
    ids, mask, splice = ids.cpu(), mask.cpu().bool(), splice.cpu().bool()
    ce_pos = splice[:, :-1] & mask[:, 1:]
    n_ce = ce_pos.sum(1).double().numpy()
    n_kl = splice.sum(1).double().numpy()
    clean = _logits(model, ids, mask, hook, splice)
    ce_clean = _next_token_ce(clean, ids, ce_pos).numpy()
    zero = _logits(model, ids, mask, hook, splice, lambda rows: torch.zeros_like(rows))
    ce_zero = _next_token_ce(zero, ids, ce_pos).numpy()
    del zero
    out = {}
    for name, replace in replacements.items():
        spliced = _logits(model, ids, mask, hook, splice, replace)
        kl = (clean.exp() * (clean - spliced)).sum(-1)  # KL(clean || spliced) per position
        out[name] = {
            "ce_clean": ce_clean,
            "ce_spliced": _next_token_ce(spliced, ids, ce_pos).numpy(),
            "ce_zero": ce_zero,
            "n_ce": n_ce,
            "kl": (kl * splice.to(kl.device)).sum(1).double().cpu().numpy(),
            "n_kl": n_kl,
        }
    return out


def rows_per_pass(model: HookedTransformer, seq_len: int) -> int:
    """Sequences per forward pass that keep one pass's float32 logits under ``LOGIT_BUDGET``."""
    return max(1, LOGIT_BUDGET // max(1, seq_len * int(model.cfg.d_vocab)))


@torch.no_grad()
def splice_sequences(
    model: HookedTransformer,
    dictionaries: Mapping[str, object],
    ids: Int[Tensor, "n_seq seq"],
    mask: Bool[Tensor, "n_seq seq"],
    hook: str,
    drop_bos: bool = True,
    max_norm: float | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per dictionary of ``dictionaries`` ({key: SAE}, each trained on ``model``'s activations at ``hook``),
    the per-sequence sums ``SPLICE_SUMS`` of ``ids`` (module docstring), arrays of length ``n_seq``.

    Examples
    --------
    >>> from transformer_lens import HookedTransformer
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> model = HookedTransformer(dict(n_layers=1, d_model=8, n_ctx=6, d_head=4, d_vocab=11, act_fn="relu", seed=0))
    >>> zero = sae_from_dictionary(torch.zeros(4, 8), W_enc=torch.zeros(8, 4), k=1)
    >>> ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    >>> s = splice_sequences(model, {"zero": zero}, ids, torch.ones_like(ids, dtype=torch.bool), "blocks.0.hook_resid_post")
    >>> s["zero"]["n_ce"].tolist(), bool((s["zero"]["ce_spliced"] == s["zero"]["ce_zero"]).all())
    ([4.0, 4.0, 4.0], True)
    """
    if ids.shape != mask.shape or ids.ndim != 2:
        raise FeatdiffError(f"splice_sequences needs ids and mask of one shape (n_seq, seq); got {tuple(ids.shape)}, {tuple(mask.shape)}.")
    fns = {k: sae_replacement(d) for k, d in dictionaries.items()}
    parts: dict[str, list[dict]] = {k: [] for k in fns}
    step = rows_per_pass(model, ids.shape[1])
    for a in range(0, len(ids), step):
        b_ids, b_mask = ids[a : a + step], mask[a : a + step].bool()
        x = hook_activations(model, b_ids, b_mask, hook)
        splice = splice_positions(x, b_mask, drop_bos, max_norm)
        for k, sums in splice_batch(model, b_ids, b_mask, hook, splice, fns).items():
            parts[k].append(sums)
    return {k: {s: np.concatenate([p[s] for p in v]) for s in SPLICE_SUMS} for k, v in parts.items()}


@torch.no_grad()
def splice_crosscoder(
    cc,
    models: Mapping[str, HookedTransformer],
    ids: Int[Tensor, "n_seq seq"],
    mask: Bool[Tensor, "n_seq seq"],
    hook: str,
    drop_bos: bool = True,
    max_norms: Mapping[str, float | None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per checkpoint of a crosscoder, the per-sequence sums ``SPLICE_SUMS`` with its reconstruction spliced
    into that checkpoint's model: the codes are shared, so each batch is first run to the hook through every
    checkpoint (``models`` holds ``cc.names``), encoded together and decoded per checkpoint. A position is
    replaced when it is kept in every checkpoint (collect_activations drops a token that is an outlier in any)."""
    missing = [n for n in cc.names if n not in models]
    if missing:
        raise FeatdiffError(f"splice_crosscoder needs the models of every crosscoder checkpoint; missing {missing}.")
    max_norms = dict(max_norms or {})
    p = next(iter(cc.parameters()))
    parts: dict[str, list[dict]] = {n: [] for n in cc.names}
    step = min(rows_per_pass(models[n], ids.shape[1]) for n in cc.names)
    for a in range(0, len(ids), step):
        b_ids, b_mask = ids[a : a + step], mask[a : a + step].bool()
        xs = {n: hook_activations(models[n], b_ids, b_mask, hook) for n in cc.names}
        splice = kept_positions(b_mask.cpu(), drop_bos)
        for n in cc.names:
            splice &= splice_positions(xs[n], b_mask, drop_bos, max_norms.get(n))
        rows = torch.stack([xs[n].reshape(-1, xs[n].shape[-1])[splice.reshape(-1).to(xs[n].device)] for n in cc.names], 1)
        x_hat = cc.decode(cc.encode(rows.to(p.device, p.dtype)))
        for m, n in enumerate(cc.names):
            sums = splice_batch(models[n], b_ids, b_mask, hook, splice, {n: x_hat[:, m]})
            parts[n].append(sums[n])
    return {n: {s: np.concatenate([p_[s] for p_ in v]) for s in SPLICE_SUMS} for n, v in parts.items()}
