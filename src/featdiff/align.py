"""Aligning two feature dictionaries: which reference feature each target feature corresponds to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from featdiff.activations import ActivationSet
from featdiff.dictionaries.stats import encode, unit_decoder
from featdiff.errors import FeatdiffError, check_choice

METHODS = ("hungarian", "max")
ON = ("decoder", "activations")


def cosine_matrix(ref, tgt) -> Float[Tensor, "d_ref d_tgt"]:
    """Cosine between every reference and every target decoder row."""
    return unit_decoder(ref) @ unit_decoder(tgt).T


def correlation_matrix(
    ref_codes: Float[Tensor, "n d_ref"], tgt_codes: Float[Tensor, "n d_tgt"], batch_size: int = 65536
) -> Float[Tensor, "d_ref d_tgt"]:
    """Pearson correlation of every reference feature's codes with every target feature's, streamed."""
    if len(ref_codes) != len(tgt_codes):
        raise FeatdiffError(f"Codes must be paired by token; got {len(ref_codes)} and {len(tgt_codes)} rows.")
    n = len(ref_codes)
    xy = torch.zeros(ref_codes.shape[1], tgt_codes.shape[1], dtype=torch.float64)
    sx = torch.zeros(ref_codes.shape[1], dtype=torch.float64)
    sy = torch.zeros(tgt_codes.shape[1], dtype=torch.float64)
    sxx, syy = sx.clone(), sy.clone()
    for i in range(0, n, batch_size):
        a, b = ref_codes[i : i + batch_size].double(), tgt_codes[i : i + batch_size].double()
        xy += a.T @ b
        sx += a.sum(0)
        sy += b.sum(0)
        sxx += (a * a).sum(0)
        syy += (b * b).sum(0)
    cov = xy / n - torch.outer(sx / n, sy / n)
    var_x = (sxx / n - (sx / n) ** 2).clamp_min(0)
    var_y = (syy / n - (sy / n) ** 2).clamp_min(0)
    denom = torch.outer(var_x.sqrt(), var_y.sqrt())
    return torch.where(denom > 0, cov / denom.clamp_min(1e-30), torch.zeros_like(cov)).float()


@dataclass
class Alignment:
    """A one-to-one (Hungarian) or many-to-one (max) matching of target features to reference features.

    ``match[j]`` is the reference feature matched to target feature j (-1 if none: dead, or more target
    than reference features) and ``similarity[j]`` its score (cosine of decoder rows, or correlation of
    codes when ``on="activations"``); ``ref_live`` / ``tgt_live`` mark the features that were matched over.
    """

    reference: str
    target: str
    match: np.ndarray
    similarity: np.ndarray
    ref_live: np.ndarray
    tgt_live: np.ndarray
    method: str = "hungarian"
    on: str = "decoder"
    ref_decoder: Tensor | None = None
    tgt_decoder: Tensor | None = None

    @property
    def d_ref(self) -> int:
        return len(self.ref_live)

    @property
    def d_tgt(self) -> int:
        return len(self.tgt_live)

    def table(self) -> pd.DataFrame:
        """One row per target feature: feature, match, similarity, live."""
        return pd.DataFrame(
            {
                "feature": np.arange(self.d_tgt, dtype=np.int64),
                "match": self.match.astype(np.int64),
                "similarity": self.similarity.astype(np.float64),
                "live": self.tgt_live.astype(bool),
            }
        )



def _assign(sim: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows = target, columns = reference; returns (match, similarity) per target row."""
    n_t, n_r = sim.shape
    match = np.full(n_t, -1, dtype=np.int64)
    score = np.full(n_t, np.nan)
    if n_t == 0 or n_r == 0:
        return match, score
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment  # deferred: scipy ~1 s to import

        rows, cols = linear_sum_assignment(sim, maximize=True)
        match[rows] = cols
        score[rows] = sim[rows, cols]
    else:
        match[:] = sim.argmax(1)
        score[:] = sim[np.arange(n_t), match]
    return match, score


def align(
    reference,
    target,
    *,
    method: str = "hungarian",
    on: str = "decoder",
    activations: ActivationSet | None = None,
    reference_name: str = "base",
    target_name: str = "target",
    ref_live: Bool[Tensor, " d_ref"] | np.ndarray | None = None,
    tgt_live: Bool[Tensor, " d_tgt"] | np.ndarray | None = None,
    codes: tuple[Tensor, Tensor] | None = None,
) -> Alignment:
    """Match target features to reference features (one-to-one by default, maximising the total similarity).

    ``on="decoder"`` scores pairs by the cosine of their decoder rows; ``on="activations"`` by the Pearson
    correlation of their codes on the same tokens (needs ``activations`` holding ``reference_name`` and
    ``target_name``). When activations are given, features that never fire on them are dead and are left
    out of the matching (``match`` -1).

    Examples
    --------
    >>> import torch
    >>> W = torch.eye(4)
    >>> al = align(W, W[[2, 0, 3, 1]])
    >>> al.match.tolist(), al.similarity.round(3).tolist()
    ([2, 0, 3, 1], [1.0, 1.0, 1.0, 1.0])
    """
    check_choice("method", method, METHODS, "align")
    check_choice("on", on, ON, "align")
    ref_dec, tgt_dec = unit_decoder(reference), unit_decoder(target)
    if ref_dec.shape[1] != tgt_dec.shape[1]:
        raise FeatdiffError(
            f"Reference {reference_name!r} and target {target_name!r} dictionaries have different d_in "
            f"({ref_dec.shape[1]} vs {tgt_dec.shape[1]}); align dictionaries trained at the same hook."
        )
    ref_codes = tgt_codes = None
    if activations is not None:
        for n in (reference_name, target_name):
            if n not in activations:
                raise FeatdiffError(
                    f"align needs activations of {n!r}; the ActivationSet has {activations.names}."
                )
        if activations.d_model != ref_dec.shape[1]:
            raise FeatdiffError(
                f"Activations have d_model={activations.d_model} but the dictionaries have d_in={ref_dec.shape[1]}."
            )
        if codes is not None:
            ref_codes, tgt_codes = codes
        elif on == "activations" or ref_live is None or tgt_live is None:
            ref_codes = encode(reference, activations[reference_name])
            tgt_codes = encode(target, activations[target_name])
        if ref_live is None:
            ref_live = (ref_codes > 0).any(0)
        if tgt_live is None:
            tgt_live = (tgt_codes > 0).any(0)
    elif on == "activations":
        raise FeatdiffError("align(on='activations') needs activations=ActivationSet with both checkpoints.")
    ref_live = np.ones(len(ref_dec), bool) if ref_live is None else np.asarray(ref_live, dtype=bool)
    tgt_live = np.ones(len(tgt_dec), bool) if tgt_live is None else np.asarray(tgt_live, dtype=bool)
    r_idx, t_idx = np.flatnonzero(ref_live), np.flatnonzero(tgt_live)
    if on == "decoder":
        sim = (tgt_dec[t_idx] @ ref_dec[r_idx].T).numpy()
    else:
        sim = correlation_matrix(tgt_codes[:, t_idx], ref_codes[:, r_idx]).numpy()
    m, s = _assign(sim.astype(np.float64), method)
    match = np.full(len(tgt_dec), -1, dtype=np.int64)
    similarity = np.full(len(tgt_dec), np.nan)
    ok = m >= 0
    match[t_idx[ok]] = r_idx[m[ok]]
    similarity[t_idx[ok]] = s[ok]
    return Alignment(
        reference=reference_name,
        target=target_name,
        match=match,
        similarity=similarity,
        ref_live=ref_live,
        tgt_live=tgt_live,
        method=method,
        on=on,
        ref_decoder=ref_dec,
        tgt_decoder=tgt_dec,
    )


def mmcs(reference, target) -> float:
    """Mean max cosine similarity: the mean over target features of the best cosine to any reference row.

    Examples
    --------
    >>> import torch
    >>> round(mmcs(torch.eye(3), torch.eye(3)), 6)
    1.0
    """
    return float(cosine_matrix(reference, target).max(0).values.mean())


@torch.no_grad()
def svcca(
    x: Float[Tensor, "n d_x"], y: Float[Tensor, "n d_y"], keep: float = 0.99, max_dims: int | None = None
) -> float:
    """SVCCA similarity (Raghu et al. 2017) of two paired sets of vectors: the mean canonical correlation
    of their top singular directions (those keeping a fraction ``keep`` of the variance).

    Invariant to invertible linear maps of either side: 1.0 for ``y = x @ R``, near 0 for independent
    data. Used here on two checkpoints' activations at the same tokens.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    >>> round(svcca(x, x @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1))), 4)
    1.0
    """
    if len(x) != len(y):
        raise FeatdiffError(f"svcca needs paired rows; got {len(x)} and {len(y)}.")
    if not 0 < keep <= 1:
        raise FeatdiffError(f"svcca's keep must be in (0, 1]; got {keep}.")

    def reduce(a: Tensor) -> Tensor:
        a = a.double() - a.double().mean(0)
        u, s, _ = torch.linalg.svd(a, full_matrices=False)
        var = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-30)
        k = int((var < keep).sum()) + 1
        k = min(k, max_dims or k, len(s))
        return u[:, :k] * s[:k]

    a, b = reduce(x), reduce(y)
    # CCA of the reduced sets: the singular values of Q_a^T Q_b for orthonormal bases Q_a, Q_b
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    rho = torch.linalg.svdvals(qa.T @ qb).clamp(0, 1)
    return float(rho.mean())
