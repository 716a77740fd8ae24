"""Base features the reference dictionary lacks, seen through a target's dictionary.

A target latent that fires on the reference checkpoint's activations as it does on the target's (the
Pearson correlation of its activations on the paired tokens is at least ``PRESENT_CORRELATION``) encodes a
direction the reference's activations hold. If the reference dictionary has no match for it (status
novel or recombined), the reference SAE did not learn that feature of its own activations. Between two
reference SAEs of different seeds this happens to a share ``1 - q`` of the features (q the noise floor,
``reuse_floor``); a target whose base-present latents are missed much more often than that sees base
features that every reference SAE lacks: the reference is narrower than the features in the data (or its
``k`` too small for them). Then recombinations of the missing features cannot be fitted and read as novel.

``featdiff.comparison.diagnostics`` warns from these counts; docs/metrics.md ("What earlier rounds fixed,
and the narrow-reference check") has the measurements.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.dictionaries.stats import encode, stream_codes

PRESENT_CORRELATION = 0.5


@torch.no_grad()
def paired_correlation(
    sae, x_target: Float[Tensor, "n_tokens d_in"], x_reference: Float[Tensor, "n_tokens d_in"]
) -> Float[np.ndarray, " d_sae"]:
    """Per latent of ``sae``: the Pearson correlation between its activations on ``x_target`` and on the
    paired tokens of ``x_reference`` (NaN for a latent that never fires on ``x_target``, 0 where it never
    fires on ``x_reference``).

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    >>> sae = sae_from_dictionary(torch.eye(2), k=1)
    >>> paired_correlation(sae, x, x).round(2).tolist(), paired_correlation(sae, x, x[:, [1, 0]]).round(2).tolist()
    ([1.0, 1.0], [-0.76, -0.76])
    """
    # streamed in paired token chunks (x may be an on-disk column), the chunks' centred sums merged exactly
    # (Chan et al.): no n_tokens x d_sae codes held
    n = 0
    mean_a = mean_b = m2a = m2b = cab = None
    chunks_t = stream_codes(sae, x_target, 4096, "paired_correlation")
    chunks_r = stream_codes(sae, x_reference, 4096, "paired_correlation")
    for (_, fa), (_, fb) in zip(chunks_t, chunks_r, strict=True):
        a, b = fa.double().cpu(), fb.double().cpu()
        m = len(a)
        ma, mb = a.mean(0), b.mean(0)
        a, b = a - ma, b - mb
        if mean_a is None:
            n, mean_a, mean_b = m, ma, mb
            m2a, m2b, cab = a.pow(2).sum(0), b.pow(2).sum(0), (a * b).sum(0)
            continue
        da, db, w = ma - mean_a, mb - mean_b, n * m / (n + m)
        m2a = m2a + a.pow(2).sum(0) + da * da * w
        m2b = m2b + b.pow(2).sum(0) + db * db * w
        cab = cab + (a * b).sum(0) + da * db * w
        mean_a, mean_b, n = mean_a + da * m / (n + m), mean_b + db * m / (n + m), n + m
    sa, sb = m2a.sqrt(), m2b.sqrt()
    corr = cab / (sa * sb).clamp_min(1e-12)
    corr = torch.where(sb > 1e-9, corr, torch.zeros_like(corr))
    corr = torch.where(sa > 1e-9, corr, torch.full_like(corr, float("nan")))
    return corr.numpy()


def reference_misses(
    sae,
    x_target: Float[Tensor, "n_tokens d_in"],
    x_reference: Float[Tensor, "n_tokens d_in"],
    status: dict[int, str],
    reference_sae=None,
    threshold: float = PRESENT_CORRELATION,
) -> dict:
    """Counts of the target's live latents present in the reference's activations (``n_present``:
    paired correlation >= ``threshold``) and of those the reference dictionary has no match for
    (``n_missed``: status novel or recombined). ``status`` maps the target's latent index to its status
    (dead latents are left out). With ``reference_sae``, ``missed_unexplained`` is the median over the
    missed latents of the share of the reference activations' energy along the latent's decoder direction
    (on the tokens where it fires on them) that the reference SAE leaves unreconstructed: near 0 when the
    reference holds the feature in another form (a drifted or split variant), well above it when the
    reference lacks it."""
    corr = paired_correlation(sae, x_target, x_reference)
    missed = []
    n_present = 0
    for j, s in status.items():
        if s in ("dead", "faint") or not (0 <= j < len(corr)) or not corr[j] >= threshold:
            continue
        n_present += 1
        if s in ("novel", "recombined"):
            missed.append(j)
    out = {"n_present": n_present, "n_missed": len(missed), "threshold": threshold}
    if reference_sae is not None and missed:
        out["missed_unexplained"] = _median_unexplained(sae, reference_sae, x_reference, missed)
    return out


@torch.no_grad()
def _median_unexplained(sae, reference_sae, x, latents: list[int]) -> float:
    d = sae.W_dec.detach().float().cpu()[latents]
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    count = torch.zeros(len(latents), dtype=torch.long)
    total = torch.zeros(len(latents), dtype=torch.float64)
    unexplained = torch.zeros(len(latents), dtype=torch.float64)
    # streamed (x may be an on-disk column): per chunk, the energy along each latent's direction on the
    # tokens where it fires, of the rows and of the reference SAE's residual
    for xb, f in stream_codes(reference_sae, x, 4096, "coverage"):
        rows = xb.float().cpu()
        resid = rows - reference_sae.decode(f).float().cpu()
        on = encode(sae, rows)[:, latents] > 0
        count += on.sum(0)
        total += ((rows @ d.T).pow(2) * on).sum(0).double()
        unexplained += ((resid @ d.T).pow(2) * on).sum(0).double()
    shares = [
        float(unexplained[i] / total[i].clamp_min(1e-12)) for i in range(len(latents)) if int(count[i]) >= 5
    ]
    return float(np.median(shares)) if shares else float("nan")
