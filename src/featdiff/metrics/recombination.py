"""Recombined features: target decoder rows fitted by a few reference rows (an exhaustive search over the
best-correlated reference rows, ``subset_fit``; greedy orthogonal matching pursuit, ``omp``, is kept as the
fast reference).

Written here because no dependency offers a batched sparse fit over decoder rows (scikit-learn's
OrthogonalMatchingPursuit fits one target at a time, greedily, and is not a dependency).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.alignment.matching import Alignment
from featdiff.dictionaries.stats import best_match, unit_decoder
from featdiff.metrics.reuse import REUSE_THRESHOLD, reuse

FIT_THRESHOLD = 0.9
RECOMBINATION_MARGIN = 0.15
MAX_COMPONENTS = 3
MIN_COMPONENTS = 2
MIN_COEFFICIENT = 0.2
N_CANDIDATES = 24


@torch.no_grad()
def omp(
    targets: Float[Tensor, "n d_in"], atoms: Float[Tensor, "n_atoms d_in"], max_atoms: int = 3, chunk: int = 1024
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
    n = len(targets)
    idx = torch.zeros(n, max_atoms, dtype=torch.long)
    coefs = torch.zeros(n, max_atoms, max_atoms, dtype=torch.float64)
    cos = torch.zeros(n, max_atoms, dtype=torch.float64)
    A = atoms.double()
    A32 = atoms.float()
    # in chunks of targets: the (n, n_atoms) score matrix is never held whole, and it is float32 (it only
    # ranks atoms); the fits themselves are float64 least squares on at most max_atoms rows
    for lo in range(0, n, chunk):
        X = targets[lo : lo + chunk].double()
        sl = slice(lo, lo + len(X))
        residual = X.clone()
        xnorm = X.norm(dim=1).clamp_min(1e-12)
        for m in range(max_atoms):
            scores = (residual.float() @ A32.T).abs()
            if m:
                scores.scatter_(1, idx[sl, :m], -1.0)  # never pick an atom twice
            idx[sl, m] = scores.argmax(1)
            B = A[idx[sl, : m + 1]]  # (c, m+1, d)
            c = torch.linalg.lstsq(B.transpose(1, 2), X.unsqueeze(2)).solution.squeeze(2)  # (c, m+1)
            fit = torch.einsum("nm,nmd->nd", c, B)
            residual = X - fit
            cos[sl, m] = (fit * X).sum(1) / (fit.norm(dim=1).clamp_min(1e-12) * xnorm)
            coefs[sl, m, : m + 1] = c
    return idx.numpy(), coefs.numpy(), cos.numpy()


@torch.no_grad()
def subset_fit(
    targets: Float[Tensor, "n d_in"],
    atoms: Float[Tensor, "n_atoms d_in"],
    max_atoms: int = 3,
    n_candidates: int = N_CANDIDATES,
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best least-squares fit of every target row by m = 1 .. ``max_atoms`` rows of unit ``atoms``,
    searched exhaustively over the ``n_candidates`` atoms most correlated with the target (and never worse
    than greedy ``omp``), batched.

    Greedy OMP misses a combination whose first pick is a wrong atom (in an overcomplete dictionary the
    atom most correlated with a 3-atom combination is often none of the three); every subset of the top
    candidates is scored here instead, through the Gram matrix: the fit cosine of subset S is
    sqrt(c_S^T G_S^-1 c_S) / ||x|| with c = atoms @ x and G = atoms @ atoms^T.

    Returns (index (n, max_atoms, max_atoms): the atoms of the best m-atom fit in row m-1, -1 padded;
    coefficients (n, max_atoms, max_atoms) in the same layout; cosine (n, max_atoms): cosine of each target
    with its best m-atom fit, NaN where there are fewer than m atoms).

    Examples
    --------
    >>> import torch
    >>> atoms = torch.eye(4)
    >>> idx, coef, cos = subset_fit(torch.tensor([[3.0, 4.0, 0.0, 0.0]]), atoms, max_atoms=2)
    >>> idx[0, 1].tolist(), coef[0, 1].round(3).tolist(), cos.round(3).tolist()
    ([1, 0], [4.0, 3.0], [[0.8, 1.0]])
    """
    X, A = targets.double(), atoms.double()
    n, n_atoms = len(X), len(A)
    L = min(n_candidates, n_atoms)
    idx = np.full((n, max_atoms, max_atoms), -1, dtype=np.int64)
    coefs = np.zeros((n, max_atoms, max_atoms))
    cos = np.full((n, max_atoms), np.nan)
    sizes = range(1, min(max_atoms, L) + 1)
    subsets = {m: torch.tensor(list(itertools.combinations(range(L), m)), dtype=torch.long) for m in sizes}
    A32 = atoms.float()
    for lo in range(0, n, chunk):
        Xc = X[lo : lo + chunk]
        xnorm = Xc.norm(dim=1).clamp_min(1e-12)
        top = (Xc.float() @ A32.T).abs().topk(L, dim=1).indices  # (c, L): float32 only ranks the rows
        At = A[top]  # (c, L, d)
        C = torch.einsum("cld,cd->cl", At, Xc)
        G = torch.einsum("cld,ckd->clk", At, At)
        rows = torch.arange(len(Xc))
        for m, S in subsets.items():
            cS = C[:, S]  # (c, s, m)
            GS = G[:, S[:, :, None], S[:, None, :]]  # (c, s, m, m)
            GS = GS + 1e-10 * torch.eye(m, dtype=GS.dtype)
            coef = torch.linalg.solve(GS, cS.unsqueeze(-1)).squeeze(-1)
            cosv = (coef * cS).sum(-1).clamp_min(0).sqrt() / xnorm[:, None]
            best = cosv.argmax(1)
            chosen = S[best]  # (c, m)
            c_best = coef[rows, best]  # (c, m)
            order = c_best.abs().argsort(dim=1, descending=True)  # largest coefficient first
            idx[lo : lo + len(Xc), m - 1, :m] = top.gather(1, chosen.gather(1, order)).numpy()
            coefs[lo : lo + len(Xc), m - 1, :m] = c_best.gather(1, order).numpy()
            cos[lo : lo + len(Xc), m - 1] = cosv[rows, best].clamp_max(1.0).numpy()
    # greedy pursuit may pick a component outside the top candidates: keep its fit where it is better
    g_idx, g_coef, g_cos = omp(targets, atoms, min(max_atoms, n_atoms))
    for m in sizes:
        better = g_cos[:, m - 1] > cos[:, m - 1] + 1e-9
        idx[better, m - 1, :m] = g_idx[better, :m]
        coefs[better, m - 1, :m] = g_coef[better, m - 1, :m]
        cos[better, m - 1] = g_cos[better, m - 1]
    return idx, coefs, cos


def recombination(
    al: Alignment,
    fit_threshold: float = FIT_THRESHOLD,
    max_components: int = MAX_COMPONENTS,
    min_components: int = MIN_COMPONENTS,
    reuse_threshold: float = REUSE_THRESHOLD,
    margin: float = RECOMBINATION_MARGIN,
    min_coefficient: float = MIN_COEFFICIENT,
    extra_reference: Float[Tensor, "n_extra d_in"] | None = None,
    n_candidates: int = N_CANDIDATES,
) -> pd.DataFrame:
    """One row per target feature: feature, recombined, n_components, fit_cosine, components.

    A live target feature that is not reused is recombined when a few live reference rows (between
    ``min_components`` and ``max_components``) fit its decoder row with cosine >= ``fit_threshold``, each
    with a coefficient of at least ``min_coefficient`` (of the unit target row), and that fit beats the
    single best reference row by at least ``margin`` in cosine. The components may be reference features that
    the target also keeps (a kept-component recombination) or ones it dropped. ``components`` lists
    (reference feature, coefficient) pairs of the fit with the fewest rows that qualifies, largest
    coefficient first; ``fit_cosine`` is the cosine of the best fit with ``max_components`` rows. Fits are
    searched exhaustively over the ``n_candidates`` reference rows most correlated with the target
    (``subset_fit``).

    ``extra_reference`` (e.g. the live rows of the reference's replicas, SAEs of the same checkpoint with
    other seeds): those of its rows that no live reference row reuses (cosine < ``reuse_threshold``) join
    the rows a fit may use, since a component the reference SAE happens not to have learned (a rare
    feature) is often in a replica. A component from those rows is named by its id past the reference's
    width: ``d_ref + i`` for the i-th such row.

    Examples
    --------
    >>> import torch
    >>> from featdiff.alignment.matching import align
    >>> ref = torch.eye(4)
    >>> tgt = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 1.0]])
    >>> recombination(align(ref, tgt))[["feature", "recombined", "n_components"]].to_dict("list")
    {'feature': [0, 1], 'recombined': [False, True], 'n_components': [0, 3]}
    """
    reused = reuse(al, reuse_threshold)
    cand = np.flatnonzero(al.tgt_live & ~reused["reused"].to_numpy())
    live_ref = np.flatnonzero(al.ref_live)
    ref_decoder = al.ref_decoder
    if extra_reference is not None and len(extra_reference) and len(live_ref):
        extra = unit_decoder(extra_reference)
        extra = extra[extra_rows_kept(extra_reference, ref_decoder[torch.as_tensor(live_ref)], reuse_threshold)]
        ref_decoder = torch.cat([ref_decoder, extra.to(ref_decoder.dtype)])
        live_ref = np.concatenate([live_ref, al.d_ref + np.arange(len(extra))])
    return fit_components(
        al.tgt_decoder,
        cand,
        ref_decoder,
        live_ref,
        fit_threshold,
        max_components,
        min_components,
        margin=margin,
        min_coefficient=min_coefficient,
        max_component_cosine=reuse_threshold,
        n_candidates=n_candidates,
    )


def extra_rows_kept(
    extra_reference: Float[Tensor, "n_extra d_in"], ref_rows: Float[Tensor, "n_ref d_in"], reuse_threshold: float
) -> Tensor:
    """Which ``extra_reference`` rows ``recombination`` may fit with (a bool mask): those the reference lacks,
    no row of ``ref_rows`` (the live reference rows) reusing them (cosine < ``reuse_threshold``); a
    replica's copy of a feature the reference has would let near-equivalent rows fit each other's residuals.
    The i-th kept row is component ``d_ref + i``.

    Examples
    --------
    >>> extra_rows_kept(torch.eye(3)[[0, 2]], torch.eye(3)[:2], 0.7).tolist()
    [False, True]
    """
    return best_match(unit_decoder(extra_reference), ref_rows)[0] < reuse_threshold


def fit_components(
    tgt_decoder: Float[Tensor, "d_tgt d_in"],
    candidates: np.ndarray,
    ref_decoder: Float[Tensor, "d_ref d_in"],
    ref_features: np.ndarray,
    fit_threshold: float = FIT_THRESHOLD,
    max_components: int = MAX_COMPONENTS,
    min_components: int = MIN_COMPONENTS,
    margin: float = RECOMBINATION_MARGIN,
    min_coefficient: float = MIN_COEFFICIENT,
    max_component_cosine: float = REUSE_THRESHOLD,
    n_candidates: int = N_CANDIDATES,
) -> pd.DataFrame:
    """The recombination table of the ``candidates`` rows of ``tgt_decoder``, fitted on the
    ``ref_features`` rows of ``ref_decoder`` (unit rows) as ``recombination`` describes; other target rows
    are not recombined. A fit whose components include two near-duplicates (cosine >= ``max_component_cosine``
    to each other: one feature twice, e.g. a reference row and a replica's copy of it) does not count: their
    opposed coefficients fit a small residual, not a combination of features."""
    n = len(tgt_decoder)
    recombined = np.zeros(n, bool)
    n_comp = np.zeros(n, np.int64)
    fit_cos = np.full(n, np.nan)
    components: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    k = min(max_components, len(ref_features))
    if len(candidates) and k:
        idx, coefs, cos = subset_fit(tgt_decoder[candidates], ref_decoder[ref_features], k, n_candidates)
        fit_cos[candidates] = cos[:, -1]
        tnorm = tgt_decoder[candidates].double().norm(dim=1).clamp_min(1e-12).numpy()
        for row, j in enumerate(candidates):
            for m in range(min_components, k + 1):
                c = coefs[row, m - 1, :m] / tnorm[row]
                if (
                    cos[row, m - 1] >= fit_threshold
                    and cos[row, m - 1] - cos[row, 0] >= margin
                    and np.abs(c).min() >= min_coefficient
                    and _distinct(ref_decoder, ref_features[idx[row, m - 1, :m]], max_component_cosine)
                ):
                    recombined[j] = True
                    n_comp[j] = m
                    components[j] = [
                        (int(ref_features[idx[row, m - 1, i]]), float(coefs[row, m - 1, i])) for i in range(m)
                    ]
                    break
    return pd.DataFrame(
        {
            "feature": np.arange(n, dtype=np.int64),
            "recombined": recombined,
            "n_components": n_comp,
            "fit_cosine": fit_cos,
            "components": components,
        }
    )


def _distinct(decoder: Tensor, rows: np.ndarray, max_cosine: float) -> bool:
    """Are the unit ``decoder`` rows ``rows`` pairwise below ``max_cosine`` in |cosine|?"""
    D = decoder[torch.as_tensor(rows)].double()
    G = (D @ D.T).abs() - torch.eye(len(rows), dtype=torch.float64) * 2
    return bool(G.max() < max_cosine)


ABSORBED_THRESHOLD = 0.15
ABSORBED_MIN_TOKENS = 20
OWN_FEATURE_RATE = 0.5


def absorbed_recombination(
    counts: dict[str, Tensor],
    rows: np.ndarray,
    carriers: np.ndarray,
    carrier_match: np.ndarray,
    own: np.ndarray,
    tgt_decoder: Float[Tensor, "d_tgt d_in"],
    reference_decoder: Float[Tensor, "n_rows d_in"],
    threshold: float = ABSORBED_THRESHOLD,
    max_components: int = MAX_COMPONENTS,
    min_components: int = MIN_COMPONENTS,
    min_tokens: int = ABSORBED_MIN_TOKENS,
    own_rate: float = OWN_FEATURE_RATE,
    max_shift_cosine: float = REUSE_THRESHOLD,
    fit_threshold: float = FIT_THRESHOLD,
    margin: float = RECOMBINATION_MARGIN,
) -> pd.DataFrame:
    """Reference features that the target carries by a combination of features it kept: recombinations with
    no decoder row of their own (an SAE reconstructs a combination of kept features by firing them together,
    so no target row is fitted by reference rows).

    ``counts`` are ``featdiff.dictionaries.stats.cofiring`` of the reference and the target on paired tokens
    for the reference features ``rows`` (those no target feature reuses). ``carriers`` are target features
    that reuse (or split) a reference feature, ``carrier_match`` that feature; ``own`` the target's other
    live features; ``tgt_decoder`` the target's decoder and ``reference_decoder`` the reference's decoder
    rows of ``rows``. On the tokens where reference feature s fires, carrier i's excess is its firing rate
    there minus its matched reference feature's rate on the same tokens, less the same difference on the
    other tokens (a carrier that fires more everywhere is not carrying s). s is an absorbed recombination of
    the ``min_components``-``max_components`` carriers with the largest excess when

    - each excess is >= ``threshold`` and s fires on at least ``min_tokens`` tokens;
    - no ``own`` target feature is as tied to s's tokens (its firing rate there less its rate elsewhere >=
      ``own_rate`` or >= the best carrier's excess), and none points along the shift below (its decoder row
      at cosine >= ``max_shift_cosine`` with it, whatever it fires elsewhere): then s has a feature of its
      own, novel, recombined or drifted, not absorbed;
    - the direction the target's activations take on s's tokens (its mean there minus its mean on the
      others, the *shift*) is a recombination of those carriers by the definition of ``recombination``: their
      decoder rows fit it with cosine >= ``fit_threshold``, by at least ``margin`` more than the single
      carrier row that fits it best (a target that replaced s by a new direction on its tokens moves them
      along a direction no kept features fit);
    - the shift is not s's own direction: its cosine with s's reference decoder row is below
      ``max_shift_cosine`` (a target SAE that merely lacks a row for a feature the target kept fires
      neighbouring features there, along s).

    Every condition reads the target's own activations and the dictionaries, so a reference replica compared
    on the reference's activations is held to the same test (it can fail there: the null measures it).

    Returns one row per absorbed reference feature: reference_feature, n_tokens, components (list of
    (reference feature, excess) of the carriers, largest excess first).

    Examples
    --------
    Reference feature 0 fires on tokens 0-49; the target fires its features 1 and 2 (which reuse reference
    features 1 and 2) there, and the reference does not:

    >>> import torch
    >>> n = 200
    >>> zr = torch.zeros(n, 3); zr[:50, 0] = 1; zr[100:150, 1] = 1; zr[120:170, 2] = 1
    >>> zt = torch.zeros(n, 3); zt[:50, 1:] = 1; zt[100:150, 1] = 1; zt[120:170, 2] = 1
    >>> rows = torch.tensor([0])
    >>> xr, xt = zr.double(), zt.double()  # activations along the features' directions
    >>> counts = {"n": torch.tensor(float(n)), "on": zr[:, rows].sum(0).double(),
    ...           "ref_all": zr.sum(0).double(), "tgt_all": zt.sum(0).double(),
    ...           "ref_on": (zr[:, rows].T @ zr).double(), "tgt_on": (zr[:, rows].T @ zt).double(),
    ...           "ref_x_on": zr[:, rows].T.double() @ xr, "tgt_x_on": zr[:, rows].T.double() @ xt,
    ...           "ref_x_all": xr.sum(0), "tgt_x_all": xt.sum(0)}
    >>> eye = torch.eye(3)
    >>> none = np.array([], int)
    >>> t = absorbed_recombination(counts, np.array([0]), np.array([1, 2]), np.array([1, 2]), none, eye, eye[[0]])
    >>> t.reference_feature.tolist(), [[c for c, _ in comps] for comps in t.components]
    ([0], [[1, 2]])
    """
    cols = {"reference_feature": [], "n_tokens": [], "components": []}
    n = float(counts["n"])
    on = counts["on"].numpy()
    if len(rows) and len(carriers) >= min_components and n > 0:
        ref_on = counts["ref_on"].numpy()
        tgt_on = counts["tgt_on"].numpy()
        ref_all, tgt_all = counts["ref_all"].numpy(), counts["tgt_all"].numpy()
        shift = _shift(counts, "tgt")
        T = unit_decoder(tgt_decoder).double()
        C = T[torch.as_tensor(carriers, dtype=torch.long)]
        R = unit_decoder(reference_decoder).double()
        own_cos = torch.nn.functional.cosine_similarity(shift, R, dim=1).numpy()
        # per row: the best |cosine| of an own target row with the shift (a row of its own for s's tokens)
        unit_shift = shift / shift.norm(dim=1, keepdim=True).clamp_min(1e-12)
        own_dir = (
            (unit_shift @ T[torch.as_tensor(own, dtype=torch.long)].T).abs().amax(1).numpy()
            if len(own)
            else np.zeros(len(rows))
        )
        for r, s in enumerate(rows):
            if on[r] < max(min_tokens, 1) or on[r] >= n:
                continue
            off = n - on[r]
            if not abs(own_cos[r]) < max_shift_cosine:
                continue
            t_in, b_in = tgt_on[r, carriers], ref_on[r, carrier_match]
            t_out, b_out = tgt_all[carriers] - t_in, ref_all[carrier_match] - b_in
            excess = (t_in - b_in) / on[r] - (t_out - b_out) / off
            eligible = np.flatnonzero(excess >= threshold)
            best = eligible[np.argsort(-excess[eligible], kind="stable")]
            # a feature of its own: one that fires on s's tokens more than elsewhere, by at least
            # ``own_rate`` or by as much as the best carrier
            own_in = tgt_on[r, own] / on[r] if len(own) else np.zeros(1)
            own_out = (tgt_all[own] - tgt_on[r, own]) / off if len(own) else np.zeros(1)
            has_own = len(best) and (own_in - own_out).max() >= min(own_rate, excess[best[0]])
            has_own = has_own or own_dir[r] >= max_shift_cosine
            if len(best) < min_components or has_own:
                continue
            chosen = _fitted_by(shift[r], C, best, min_components, max_components, fit_threshold, margin)
            if len(chosen):
                chosen = chosen[np.argsort(-excess[chosen], kind="stable")]
                cols["reference_feature"].append(int(s))
                cols["n_tokens"].append(int(on[r]))
                cols["components"].append([(int(carrier_match[i]), float(excess[i])) for i in chosen])
    return pd.DataFrame(
        {
            "reference_feature": np.asarray(cols["reference_feature"], dtype=np.int64),
            "n_tokens": np.asarray(cols["n_tokens"], dtype=np.int64),
            "components": cols["components"],
        }
    )


def _fitted_by(
    x: Tensor,
    C: Tensor,
    eligible: np.ndarray,
    min_components: int,
    max_components: int,
    fit_threshold: float,
    margin: float,
) -> np.ndarray:
    """The fewest (``min_components``-``max_components``) of the ``eligible`` rows of unit ``C`` whose best
    least-squares fit of ``x`` (``subset_fit``) has cosine >= ``fit_threshold`` and >= ``margin`` above the
    best single row of ``C``; empty if none."""
    single = float((C @ x).abs().max() / x.norm().clamp_min(1e-12))
    k = min(max_components, len(eligible))
    idx, _, cos = subset_fit(x[None].float(), C[torch.as_tensor(eligible)].float(), k)
    for m in range(min_components, k + 1):
        if cos[0, m - 1] >= fit_threshold and cos[0, m - 1] - single >= margin:
            return eligible[idx[0, m - 1, :m]]
    return np.zeros(0, dtype=np.int64)


def _shift(counts: dict[str, Tensor], key: str) -> Tensor:
    """Per conditioning row: the mean activation on the row's tokens minus the mean on the others."""
    n, on = counts["n"].double(), counts["on"].double().clamp_min(1)[:, None]
    off = (n - counts["on"].double()).clamp_min(1)[:, None]
    x_on = counts[f"{key}_x_on"].double()
    return x_on / on - (counts[f"{key}_x_all"].double()[None] - x_on) / off
