"""Matched random controls of an edit and their p-values: the codes an edit reads, the live features,
controls matched by firing frequency, empirical one-sided p-values, Holm's correction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.analyses.interventions.edit_hooks import check_model_hook, other_activations
from featdiff.core.config import check_int
from featdiff.errors import FeatdiffError, check_choice
from featdiff.models.hooks import stop_layer

ALTERNATIVES = ("less", "greater")
N_CONTROLS = 20


def feature_codes(
    model: Any, edit: FeatureEdit, tokens: Int[Tensor, "batch pos"], batch_size: int = 64
) -> Float[Tensor, "batch pos d_sae"]:
    """Codes of the edit's dictionary on ``model``'s activations at the edit's hook (no edit applied)."""
    check_model_hook(model, edit.hook)
    stop = stop_layer(edit.hook)
    chunks = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            t = tokens[start : start + batch_size]
            _, cache = model.run_with_cache(t, names_filter=edit.hook, stop_at_layer=stop)
            others = other_activations(edit, t) if edit.needs_others else None
            chunks.append(edit.encode(cache[edit.hook], others))
    return torch.cat(chunks)


def live_features(model: Any, edit: FeatureEdit, tokens: Int[Tensor, "batch pos"]) -> list[int]:
    """Features of the edit's dictionary that fire at least once on ``tokens`` (in ``model``)."""
    f = feature_codes(model, edit, tokens)
    return torch.nonzero((f.reshape(-1, f.shape[-1]) != 0).any(0)).flatten().tolist()


def random_features(pool: Sequence[int], n: int, exclude: Sequence[int] = (), seed: int = 0) -> list[int]:
    """``n`` features drawn without replacement from ``pool`` minus ``exclude`` (seeded).

    Examples
    --------
    >>> random_features(range(10), 3, exclude=[0, 1], seed=0) == random_features(range(10), 3, exclude=[0, 1], seed=0)
    True
    """
    ex = set(int(k) for k in exclude)
    cand = sorted(set(int(k) for k in pool) - ex)
    if len(cand) < n:
        raise FeatdiffError(
            f"Cannot draw {n} random control features from {len(cand)} live features outside the edit; "
            "pass more evaluation prompts or a smaller feature set."
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(cand), generator=g)[:n]
    return sorted(cand[i] for i in perm.tolist())


def matched_controls(
    features: Sequence[int],
    frequency: Sequence[float] | Tensor,
    pool: Sequence[int],
    n_controls: int = N_CONTROLS,
    width: int = 10,
    seed: int = 0,
) -> list[list[int]]:
    """``n_controls`` random feature sets of ``len(features)`` features that fire as often as ``features``.

    Each edited feature k gets, in every control set, a partner drawn uniformly from the ``width`` features
    of ``pool`` (minus ``features``) whose firing frequency is nearest to k's on a log scale (the next
    nearest when those are taken by the set's other partners). So a control set removes about as much
    activity as the edit, feature for feature. ``frequency``: the firing frequency of every feature
    (indexed by feature id). Seeded; set i is the same for the same inputs and seed.

    Examples
    --------
    >>> freq = [0.5, 0.4, 0.01, 0.02, 0.45, 0.011, 0.6, 0.009]
    >>> sets = matched_controls([0, 2], freq, pool=range(8), n_controls=3, width=2, seed=0)
    >>> [len(c) for c in sets], all(0 not in c and 2 not in c for c in sets)
    ([2, 2, 2], True)
    >>> all(sorted(freq[k] > 0.1 for k in c) == [False, True] for c in sets)  # one frequent, one rare
    True
    """
    import numpy as np

    feats = [int(k) for k in features]
    if isinstance(frequency, Tensor):
        freq = frequency.detach().cpu().double().numpy()
    else:
        freq = np.asarray(frequency, dtype=float)
    check_int("matched_controls", "width", width)
    check_int("matched_controls", "n_controls", n_controls, minimum=0)
    bad = [k for k in [*feats, *pool] if not 0 <= int(k) < len(freq)]
    if bad:
        raise FeatdiffError(
            f"Features {bad[:5]} have no firing frequency; 'frequency' has {len(freq)} entries."
        )
    cand = np.array(sorted(set(int(k) for k in pool) - set(feats)), dtype=np.int64)
    if len(cand) < len(feats):
        raise FeatdiffError(
            f"Cannot draw {len(feats)} matched control features from {len(cand)} live features outside "
            "the edit; pass more evaluation prompts or a smaller feature set."
        )
    logf = np.log(np.clip(freq, 1e-12, None))
    order = {k: cand[np.argsort(np.abs(logf[cand] - logf[k]), kind="stable")] for k in feats}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_controls):
        taken: set[int] = set()
        for k in rng.permutation(feats):
            free = [int(j) for j in order[int(k)] if int(j) not in taken][:width]
            taken.add(free[int(rng.integers(len(free)))])
        out.append(sorted(taken))
    return out


def empirical_p_value(observed: float, controls: Sequence[float], alternative: str = "greater") -> float:
    """Empirical p-value of ``observed`` against control draws: (1 + #as extreme) / (1 + n_controls).

    ``alternative="greater"``: the effect is that ``observed`` is larger than chance (a control is as
    extreme when it is >= observed); ``"less"``: smaller (control <= observed). Ties count against the
    effect, so the p-value is conservative; its smallest value is 1 / (1 + n_controls). NaN without
    controls.

    Examples
    --------
    >>> empirical_p_value(0.9, [0.1] * 19)
    0.05
    >>> empirical_p_value(0.2, [0.1, 0.3, 0.2, 0.5], alternative="less")
    0.6
    """
    check_choice("alternative", alternative, ALTERNATIVES, where="empirical_p_value")
    c = [float(x) for x in controls]
    if not c:
        return float("nan")
    obs = float(observed)
    hits = sum(x >= obs for x in c) if alternative == "greater" else sum(x <= obs for x in c)
    return (1 + hits) / (1 + len(c))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (Holm 1979: step-down Bonferroni, family-wise error rate at any dependence).

    The m finite p-values sorted ascending, p_(1) <= ... <= p_(m), are adjusted to
    ``min(1, max_{j <= i} (m - j + 1) p_(j))`` and returned in the input's order; NaN stays NaN and is
    not counted in m. Written by hand: scipy.stats.false_discovery_control is Benjamini-Hochberg (false
    discovery rate), not Holm, and statsmodels is not a dependency.

    Examples
    --------
    By hand: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 give 0.04, 0.09, 0.08, 0.20; the running
    maximum makes the third 0.09.

    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03, 0.20])]
    [0.04, 0.09, 0.09, 0.2]
    >>> holm([0.5, float("nan"), 0.3])  # two tests: 0.3 * 2 = 0.6, then max(0.6, 0.5 * 1)
    [0.6, nan, 0.6]
    """
    p = [float(x) for x in p_values]
    finite = sorted((x, i) for i, x in enumerate(p) if math.isfinite(x))
    m, out, running = len(finite), [math.nan] * len(p), 0.0
    for rank, (x, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * x))
        out[i] = running
    return out


def add_holm(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` with ``p_holm`` (Holm-adjusted ``p_value``, ``holm``) and ``n_tests`` (the number of
    finite p-values in the row's family) set; a family is all rows with one value of the ``by`` columns
    (``()``: the whole table). Rows without a p-value get NaN and 0. Returns a copy.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"subset": ["a", "a", "b", "a"], "p_value": [0.01, 0.04, 0.3, float("nan")]})
    >>> r = add_holm(t, by=["subset"])
    >>> r.p_holm.tolist(), r.n_tests.tolist()
    ([0.02, 0.04, 0.3, nan], [2, 2, 1, 0])
    """
    out = table.copy()
    out["p_holm"] = math.nan
    out["n_tests"] = 0
    groups = out.groupby(list(by), sort=False, dropna=False).groups if by else {None: out.index}
    for idx in groups.values():
        p = out.loc[idx, "p_value"]
        out.loc[idx, "p_holm"] = holm(p.tolist())
        out.loc[idx, "n_tests"] = int(p.notna().sum())
    out.loc[out["p_value"].isna(), "n_tests"] = 0
    return out.astype({"p_holm": "float64", "n_tests": "int64"})


def default_alternative(edit: FeatureEdit) -> str:
    """The direction an edit of carrier features is expected to move accuracy: ``"less"`` for an
    ablation or a scale below 1, ``"greater"`` for amplification."""
    return "less" if edit.mode == "ablate" or float(edit.alpha) < 1 else "greater"
