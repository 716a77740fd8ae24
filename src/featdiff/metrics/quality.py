"""A dictionary's own quality as numbers with intervals: L0, FVE, dead and dense shares from
featdiff.dictionaries.quality's token chunks, CE loss recovered and KL from featdiff.dictionaries.splice's
per-sequence sums, each resampled over its chunks as ``transfer_fve`` is (featdiff.metrics.uncertainty).

``quality_summary`` returns, for one dictionary, ``l0``, ``fve``, ``dead_share``, ``dense_share``,
``ce_recovered``, ``kl_div`` (and the CE means ``ce_clean``, ``ce_spliced``, ``ce_zero`` and the token
counts ``n_tokens``, ``n_lm_tokens``), with ``<name>_lo`` / ``<name>_hi`` at ``level`` for the sampled
ones: a percentile interval of ``n_bootstrap`` draws, each resampling the token chunks (for the LM numbers,
chunks of whole sequences) with replacement. ``dead_share`` has no interval: "never fired" is a minimum
over the tokens, and a resample of chunks can only miss firings (its draws would all lie at or above the
measured share).
"""

from __future__ import annotations

import numpy as np

from featdiff.dictionaries.quality import DENSE_THRESHOLD
from featdiff.metrics.uncertainty import INTERVAL_LEVEL, N_BOOTSTRAP, N_TOKEN_CHUNKS, _fve

QUALITY_COLUMNS = ("l0", "fve", "dead_share", "dense_share", "ce_recovered", "kl_div")
# the sampled ones: an interval beside each (dead_share has none, see the module docstring)
SAMPLED_QUALITY = ("l0", "fve", "dense_share", "ce_recovered", "kl_div")
LM_QUALITY = ("ce_recovered", "kl_div")


def sequence_chunks(sums: dict[str, np.ndarray], n_chunks: int = N_TOKEN_CHUNKS) -> dict[str, np.ndarray]:
    """Per-sequence sums (featdiff.dictionaries.splice.SPLICE_SUMS) added up over at most ``n_chunks``
    contiguous chunks of sequences.

    Examples
    --------
    >>> sequence_chunks({"kl": np.arange(6.0), "n_kl": np.ones(6)}, 3)["kl"].tolist()
    [1.0, 5.0, 9.0]
    """
    n = len(next(iter(sums.values())))
    bounds = np.linspace(0, n, min(n_chunks, n) + 1).astype(int)
    return {k: np.add.reduceat(np.asarray(v, float), bounds[:-1]) if n else np.zeros(0) for k, v in sums.items()}


def _ce_recovered(ce_clean, ce_spliced, ce_zero) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ce_zero - ce_spliced) / (ce_zero - ce_clean)


def _kl(kl, n) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return kl / n


def _draw_statistics(acts: dict | None, lm: dict | None, idx_a, idx_l, dense_threshold: float, model) -> dict:
    """Each statistic of the chunks picked by ``idx_a`` (activation chunks) and ``idx_l`` (sequence chunks),
    one value per row of the index arrays (the whole sets when they are ``slice(None)``)."""
    out = {}
    if acts is not None:
        n = acts["n"][idx_a]
        n_t = n.sum(-1)
        fired = acts["fired"][idx_a].sum(-2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["l0"] = fired.sum(-1) / n_t
            freq = fired / n_t[..., None]
        out["dense_share"] = (freq > dense_threshold).mean(-1)
        err, s, ss = acts["err"], acts["sum"], acts["sumsq"]
        if model is not None:  # a crosscoder: one checkpoint's reconstruction
            err, s, ss = err[:, model], s[:, model], ss[:, model]
        out["fve"] = _fve(n, err[idx_a], s[idx_a], ss[idx_a])
    if lm is not None:
        c = {k: v[idx_l].sum(-1) for k, v in lm.items()}
        out["ce_recovered"] = _ce_recovered(c["ce_clean"], c["ce_spliced"], c["ce_zero"])
        out["kl_div"] = _kl(c["kl"], c["n_kl"])
    return out


def quality_summary(
    acts: dict | None = None,
    lm: dict | None = None,
    dense_threshold: float = DENSE_THRESHOLD,
    level: float = INTERVAL_LEVEL,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    model: int | None = None,
) -> dict[str, float]:
    """One dictionary's quality numbers (module docstring) from ``acts`` (``quality_chunks``) and ``lm``
    (``sequence_chunks`` of ``splice_sequences``' sums); either may be None (its numbers are left out).
    ``model``: for a crosscoder's chunks, the index of the checkpoint whose reconstruction FVE reads.

    Examples
    --------
    >>> acts = {"n": np.full(4, 10.0), "fired": np.tile([[10.0, 2.0, 0.0]], (4, 1)), "err": np.ones(4),
    ...         "sum": np.zeros((4, 2)), "sumsq": np.full(4, 10.0)}
    >>> q = quality_summary(acts)
    >>> q["l0"], q["fve"], round(q["dead_share"], 3), round(q["dense_share"], 3), q["l0_lo"] <= q["l0"] <= q["l0_hi"]
    (1.2, 0.9, 0.333, 0.667, True)
    """
    out: dict[str, float] = {}
    point = _draw_statistics(acts, lm, slice(None), slice(None), dense_threshold, model)
    out.update({k: float(v) for k, v in point.items()})
    if acts is not None:
        fired = acts["fired"].sum(0)
        out["dead_share"] = float((fired == 0).mean()) if len(fired) else float("nan")
        out["n_tokens"] = float(acts["n"].sum())
    if lm is not None:
        c = {k: float(v.sum()) for k, v in lm.items()}
        for k in ("ce_clean", "ce_spliced", "ce_zero"):
            out[k] = c[k] / c["n_ce"] if c["n_ce"] else float("nan")
        out["n_lm_tokens"] = c["n_kl"]
    rng = np.random.default_rng(seed)
    idx_a = rng.integers(0, len(acts["n"]), (n_bootstrap, len(acts["n"]))) if acts is not None else None
    idx_l = None
    if lm is not None:
        n_l = len(lm["kl"])
        idx_l = rng.integers(0, n_l, (n_bootstrap, n_l)) if n_l else np.zeros((n_bootstrap, 0), int)
    draws: dict[str, list] = {}
    # in blocks: draws x chunks x latents at once can be large (2**24 numbers, 128 MB, at most)
    block = 64 if acts is None else max(1, min(64, (1 << 24) // max(1, acts["fired"].size)))
    for a in range(0, n_bootstrap, block):
        sa = None if idx_a is None else idx_a[a : a + block]
        sl = None if idx_l is None else idx_l[a : a + block]
        for k, v in _draw_statistics(acts, lm, sa, sl, dense_threshold, model).items():
            draws.setdefault(k, []).append(np.asarray(v, float))
    q = (1 - level) / 2
    for k, parts in draws.items():
        b = np.concatenate(parts)
        b = b[np.isfinite(b)]
        lo, hi = np.quantile(b, [q, 1 - q], method="inverted_cdf") if len(b) else (np.nan, np.nan)
        out[f"{k}_lo"], out[f"{k}_hi"] = float(lo), float(hi)
    return out
