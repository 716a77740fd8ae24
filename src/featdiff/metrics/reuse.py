"""Reuse and drift of matched features (DESIGN.md: reused = matched with similarity >= 0.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from featdiff.align import Alignment

REUSE_THRESHOLD = 0.7


def reuse(al: Alignment, threshold: float = REUSE_THRESHOLD) -> pd.DataFrame:
    """One row per target feature: feature, match, similarity, reused (bool: live and similarity >= threshold).

    Examples
    --------
    >>> import torch
    >>> from featdiff.align import align
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
    eps: float = 1e-6,
) -> pd.DataFrame:
    """One row per target feature: feature, match, drift (1 - similarity, NaN unless reused), freq_shift.

    ``freq_shift`` = |log((f_j^T + eps) / (f_i^R + eps))| of the matched pair's firing frequencies on the
    same tokens (NaN without frequencies or for unmatched features).

    Examples
    --------
    >>> import torch
    >>> from featdiff.align import align
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
    >>> from featdiff.align import align
    >>> base_coverage(align(torch.eye(4), torch.eye(4)[:3]))
    0.75
    """
    reused = reuse(al, threshold)
    matched_ref = set(reused.loc[reused.reused, "match"].tolist())
    live = np.flatnonzero(al.ref_live)
    return float(np.isin(live, list(matched_ref)).mean()) if len(live) else float("nan")
