"""Recombined features: target decoder rows fitted by a few reference rows (orthogonal matching pursuit).

Written here because no dependency offers a batched OMP over decoder rows (scikit-learn's
OrthogonalMatchingPursuit fits one target at a time and is not a dependency).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.align import Alignment
from featdiff.metrics.reuse import REUSE_THRESHOLD, reuse

FIT_THRESHOLD = 0.9


@torch.no_grad()
def omp(
    targets: Float[Tensor, "n d_in"], atoms: Float[Tensor, "n_atoms d_in"], max_atoms: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy orthogonal matching pursuit of every target row on unit ``atoms``, batched.

    Returns (index (n, max_atoms), coefficients (n, max_atoms, max_atoms): the least-squares coefficients
    after step m in row m-1, cosine (n, max_atoms): cosine of each target with its m-atom fit).

    Examples
    --------
    >>> import torch
    >>> atoms = torch.eye(4)
    >>> idx, coef, cos = omp(torch.tensor([[3.0, 4.0, 0.0, 0.0]]), atoms, max_atoms=2)
    >>> idx.tolist(), cos.round(3).tolist()
    ([[1, 0]], [[0.8, 1.0]])
    """
    X = targets.double()
    A = atoms.double()
    n = len(X)
    idx = torch.zeros(n, max_atoms, dtype=torch.long)
    coefs = torch.zeros(n, max_atoms, max_atoms, dtype=torch.float64)
    cos = torch.zeros(n, max_atoms, dtype=torch.float64)
    residual = X.clone()
    xnorm = X.norm(dim=1).clamp_min(1e-12)
    for m in range(max_atoms):
        scores = (residual @ A.T).abs()
        if m:
            scores.scatter_(1, idx[:, :m], -1.0)  # never pick an atom twice
        idx[:, m] = scores.argmax(1)
        B = A[idx[:, : m + 1]]  # (n, m+1, d)
        c = torch.linalg.lstsq(B.transpose(1, 2), X.unsqueeze(2)).solution.squeeze(2)  # (n, m+1)
        fit = torch.einsum("nm,nmd->nd", c, B)
        residual = X - fit
        cos[:, m] = (fit * X).sum(1) / (fit.norm(dim=1).clamp_min(1e-12) * xnorm)
        coefs[:, m, : m + 1] = c
    return idx.numpy(), coefs.numpy(), cos.numpy()


def recombination(
    al: Alignment,
    fit_threshold: float = FIT_THRESHOLD,
    max_components: int = 3,
    min_components: int = 2,
    reuse_threshold: float = REUSE_THRESHOLD,
) -> pd.DataFrame:
    """One row per target feature: feature, recombined, n_components, fit_cosine, components.

    A live target feature that is not reused is recombined when at most ``max_components`` live reference
    rows fit its decoder row (OMP) with cosine >= ``fit_threshold`` and the fit needs at least
    ``min_components`` of them. ``components`` lists (reference feature, coefficient) pairs of that fit;
    ``fit_cosine`` is the cosine of the best fit with ``max_components`` rows.

    Examples
    --------
    >>> import torch
    >>> from featdiff.align import align
    >>> ref = torch.eye(4)
    >>> tgt = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 1.0]])
    >>> recombination(align(ref, tgt))[["feature", "recombined", "n_components"]].to_dict("list")
    {'feature': [0, 1], 'recombined': [False, True], 'n_components': [0, 3]}
    """
    reused = reuse(al, reuse_threshold)
    cand = np.flatnonzero(al.tgt_live & ~reused["reused"].to_numpy())
    live_ref = np.flatnonzero(al.ref_live)
    return fit_components(
        al.tgt_decoder, cand, al.ref_decoder, live_ref, fit_threshold, max_components, min_components
    )


def fit_components(
    tgt_decoder: Float[Tensor, "d_tgt d_in"],
    candidates: np.ndarray,
    ref_decoder: Float[Tensor, "d_ref d_in"],
    ref_features: np.ndarray,
    fit_threshold: float = FIT_THRESHOLD,
    max_components: int = 3,
    min_components: int = 2,
) -> pd.DataFrame:
    """The recombination table of the ``candidates`` rows of ``tgt_decoder``, fitted by OMP on the
    ``ref_features`` rows of ``ref_decoder`` (unit rows); other target rows are not recombined."""
    n = len(tgt_decoder)
    recombined = np.zeros(n, bool)
    n_comp = np.zeros(n, np.int64)
    fit_cos = np.full(n, np.nan)
    components: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    k = min(max_components, len(ref_features))
    if len(candidates) and k:
        idx, coefs, cos = omp(tgt_decoder[candidates], ref_decoder[ref_features], k)
        fit_cos[candidates] = cos[:, -1]
        good = cos >= fit_threshold
        first = np.where(good.any(1), good.argmax(1) + 1, 0)  # atoms needed to reach the threshold
        for row, j in enumerate(candidates):
            m = int(first[row])
            if m >= min_components:
                recombined[j] = True
                n_comp[j] = m
                components[j] = [
                    (int(ref_features[idx[row, i]]), float(coefs[row, m - 1, i])) for i in range(m)
                ]
    return pd.DataFrame(
        {
            "feature": np.arange(n, dtype=np.int64),
            "recombined": recombined,
            "n_components": n_comp,
            "fit_cosine": fit_cos,
            "components": components,
        }
    )
