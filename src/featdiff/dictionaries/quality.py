"""A dictionary's own quality on held-out activations, the activation-only half of what sae-lens's evals and
SAEBench report: L0, the fraction of variance explained, and the shares of dead and dense latents. The
language-model half (the loss with the reconstruction spliced in) is featdiff.dictionaries.splice.

``quality_chunks`` streams the activations once and keeps, per contiguous token chunk, the sums these
numbers are made of (featdiff.dictionaries.stats's accumulators, the one implementation of variance
explained), so that featdiff.metrics.quality can resample the chunks for intervals. Definitions (those of
sae-lens's ``get_sparsity_and_variance_metrics`` and SAEBench's core eval):

- **L0**: the mean number of latents with a non-zero code per token.
- **FVE**: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens (sae-lens's
  ``explained_variance``; for a crosscoder, per checkpoint).
- **dead**: the share of latents that never fired on the tokens (the project's one definition of live:
  fired at least once; docs/design.md).
- **dense**: the share of latents that fired on more than ``DENSE_THRESHOLD`` of the tokens (SAEBench's
  ``freq_over_10_percent``).
"""

from __future__ import annotations

import numpy as np
import torch

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.stats import new_stats, stream_codes, update_stats
from featdiff.errors import FeatdiffError

# a latent firing on more than this share of the tokens is dense (SAEBench: freq_over_10_percent)
DENSE_THRESHOLD = 0.1


def _chunk_stats(dictionary, part, batch_size: int) -> dict:
    """featdiff.dictionaries.stats's accumulators over one chunk: rows of an SAE's activations, or an
    ActivationSet for a crosscoder (its shared codes, its reconstruction per checkpoint)."""
    if hasattr(dictionary, "stream_codes"):  # a crosscoder: paired rows of every checkpoint
        stats = new_stats(dictionary.d_sae, dictionary.d_in, dictionary.n_models)
        for xb, f in dictionary.stream_codes(part, batch_size):
            with torch.no_grad():
                update_stats(stats, xb, f.cpu(), dictionary.decode(f).cpu())
        return stats
    stats = new_stats(dictionary.W_dec.shape[0], dictionary.W_dec.shape[1])
    for xb, f in stream_codes(dictionary, part, batch_size, "quality_chunks"):
        with torch.no_grad():
            update_stats(stats, xb, f, dictionary.decode(f))
    return stats


def quality_chunks(dictionary, x, n_chunks: int, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Per contiguous token chunk of ``x`` (at most ``n_chunks`` of them), the sums behind L0, FVE and the
    dead and dense shares, in one streamed pass: ``n`` (tokens), ``fired`` (chunk x latent firing counts),
    ``err`` (squared reconstruction error), ``sum`` and ``sumsq`` (of ``x``). ``x``: an SAE's activations
    (a tensor or an ``ActivationColumn``); for a crosscoder, an ActivationSet holding its checkpoints (then
    ``err``, ``sum``, ``sumsq`` have a checkpoint axis after the chunk axis, in ``cc.names`` order).

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> c = quality_chunks(sae_from_dictionary(torch.eye(4), k=1), torch.eye(4).repeat(3, 1), n_chunks=3)
    >>> c["n"].tolist(), c["fired"].sum(0).tolist(), c["err"].tolist()
    ([4.0, 4.0, 4.0], [3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0])
    """
    n_tokens = x.n_tokens if isinstance(x, ActivationSet) else len(x)
    if n_tokens == 0:
        raise FeatdiffError("quality_chunks: the activations are empty (0 tokens); evaluate on held-out tokens.")
    if n_chunks < 1:
        raise FeatdiffError(f"quality_chunks needs n_chunks >= 1; got {n_chunks}.")
    bounds = np.linspace(0, n_tokens, min(n_chunks, n_tokens) + 1).astype(int)
    out: dict[str, list] = {"n": [], "fired": [], "err": [], "sum": [], "sumsq": []}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = x.subset(slice(int(a), int(b))) if isinstance(x, ActivationSet) else x[int(a) : int(b)]
        s = _chunk_stats(dictionary, part, batch_size)
        out["n"].append(float(s["n"]))
        out["fired"].append(s["fired"].numpy())
        out["err"].append(s["sse"].numpy())
        out["sum"].append(s["sum"].numpy())
        out["sumsq"].append(s["sumsq"].numpy())
    return {k: np.asarray(v, float) for k, v in out.items()}
