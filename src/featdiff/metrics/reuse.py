"""Reuse and drift of matched features (docs/design.md: reused = matched with similarity >= 0.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from featdiff.alignment.matching import Alignment
from featdiff.dictionaries.stats import best_match

REUSE_THRESHOLD = 0.7
FREQ_EPS = 1e-6  # smoothing of the firing frequencies in freq_shift


def reuse(al: Alignment, threshold: float = REUSE_THRESHOLD) -> pd.DataFrame:
    """One row per target feature: feature, match, similarity, reused (bool: live and similarity >= threshold).

    Examples
    --------
    >>> import torch
    >>> from featdiff.alignment.matching import align
    >>> reuse(align(torch.eye(3), torch.eye(3))).reused.tolist()
    [True, True, True]
    """
    t = al.table()
    t["reused"] = t["live"] & (t["similarity"].fillna(-np.inf) >= threshold)
    return t[["feature", "match", "similarity", "reused"]]


def drift(
    al: Alignment,
    ref_frequency: Tensor | np.ndarray | None = None,
    tgt_frequency: Tensor | np.ndarray | None = None,
    threshold: float = REUSE_THRESHOLD,
    eps: float = FREQ_EPS,
) -> pd.DataFrame:
    """One row per target feature: feature, match, drift (1 - similarity, NaN unless reused), freq_shift.

    ``freq_shift`` = |log((f_j^T + eps) / (f_i^R + eps))| of the matched pair's firing frequencies on the
    same tokens (NaN without frequencies or for unmatched features).

    Examples
    --------
    >>> import torch
    >>> from featdiff.alignment.matching import align
    >>> W = torch.eye(2)
    >>> T = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    >>> drift(align(W, T), torch.tensor([.1, .1]), torch.tensor([.2, .1])).round(3).to_dict("list")
    {'feature': [0, 1], 'match': [0, 1], 'drift': [0.2, 0.0], 'freq_shift': [0.693, 0.0]}
    """
    t = reuse(al, threshold)
    t["drift"] = np.where(t["reused"], 1.0 - t["similarity"], np.nan)
    shift = np.full(len(t), np.nan)
    if ref_frequency is not None and tgt_frequency is not None:
        rf = torch.as_tensor(ref_frequency).double().numpy()
        tf = torch.as_tensor(tgt_frequency).double().numpy()
        ok = al.match >= 0
        shift[ok] = np.abs(np.log((tf[ok] + eps) / (rf[al.match[ok]] + eps)))
    t["freq_shift"] = shift
    return t[["feature", "match", "drift", "freq_shift"]]


def base_coverage(al: Alignment, threshold: float = REUSE_THRESHOLD) -> float:
    """Fraction of the reference's live features that are reused (matched at >= threshold) in the target.

    Examples
    --------
    >>> import torch
    >>> from featdiff.alignment.matching import align
    >>> base_coverage(align(torch.eye(4), torch.eye(4)[:3]))
    0.75
    """
    reused = reuse(al, threshold)
    matched_ref = set(reused.loc[reused.reused, "match"].tolist())
    live = np.flatnonzero(al.ref_live)
    return float(np.isin(live, list(matched_ref)).mean()) if len(live) else float("nan")


def split(
    al: Alignment, threshold: float = REUSE_THRESHOLD, exclude: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per target feature: feature, split (bool), split_of (reference feature, -1 if none),
    split_similarity (decoder cosine with it).

    A live target feature that is not reused (not matched one-to-one at >= ``threshold``) is a split of
    reference feature i when its decoder row has cosine >= ``threshold`` with i, and i is already matched
    one-to-one to another target feature that reuses it: the target holds two or more near-duplicates of
    one reference feature (feature splitting, absorption), of which only one can win the matching. The
    cosine is always that of decoder rows, whatever the alignment scored. ``exclude`` (bool per target
    feature) marks features that are never called split (e.g. recombined ones); the best such reference
    feature is taken.

    Examples
    --------
    >>> import torch
    >>> from featdiff.alignment.matching import align
    >>> tgt = torch.tensor([[1.0, 0.0, 0.0], [0.995, 0.0999, 0.0], [0.0, 0.0, 1.0]])
    >>> split(align(torch.eye(3), tgt)).round(3).to_dict("list")
    {'feature': [0, 1, 2], 'split': [False, True, False], 'split_of': [-1, 0, -1], 'split_similarity': [nan, 0.995, nan]}
    """
    reused = reuse(al, threshold)["reused"].to_numpy()
    n = al.d_tgt
    out_of = np.full(n, -1, dtype=np.int64)
    out_sim = np.full(n, np.nan)
    cand = al.tgt_live & ~reused
    if exclude is not None:
        cand &= ~np.asarray(exclude, dtype=bool)
    taken = np.zeros(al.d_ref, bool)  # reference features reused one-to-one by another target feature
    taken[al.match[reused]] = True
    cand_idx, ref_idx = np.flatnonzero(cand), np.flatnonzero(taken)
    if len(cand_idx) and len(ref_idx):
        sim_t, best_t = best_match(al.tgt_decoder[cand_idx], al.ref_decoder[ref_idx])
        sim, best = sim_t.double().numpy(), best_t.numpy()
        ok = sim >= threshold
        out_of[cand_idx[ok]] = ref_idx[best[ok]]
        out_sim[cand_idx[ok]] = sim[ok]
    return pd.DataFrame(
        {
            "feature": np.arange(n, dtype=np.int64),
            "split": out_of >= 0,
            "split_of": out_of,
            "split_similarity": out_sim,
        }
    )
