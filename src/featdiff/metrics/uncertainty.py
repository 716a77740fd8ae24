"""Intervals, base-vs-base floors and corrected fractions of a comparison's summary.

A comparison of a target dictionary T with the reference R is one draw: other seeds give other SAEs and
other numbers. Replicas of R (SAEs trained on the same data with other seeds) measure what R-vs-R gives
(the floor of every column) and how much it varies; a bootstrap over features (and over token chunks for
variance explained) measures how much a column varies with the finite set of features scored. Everything
here works on per-feature arrays that ``compare_dictionaries`` extracts from its tables (``profile_of``).

Estimators of the true fractions (docs/metrics.md compares them on the known-answer grid):

- ``ratio``: reuse = reuse_raw / q, recombination = recombination_raw / q, q the R-vs-replica reuse.
- ``symmetric``: the same with q = sqrt(q_ref * q_tgt), q_tgt the target-vs-target-replica reuse (needs a
  target replica; without one it equals ``ratio``).
- ``union``: reuse counts target features matched (cosine >= threshold, many-to-one) to any feature of R or
  of its replicas, divided by the same for each replica against the union of the others.
- ``mixture``: a full null-profile correction. A feature T really shares with R is seen as reused,
  recombined or novel with the base-vs-base probabilities (q_r, q_c, q_n) of a replica; a really
  recombined one is found with probability q_r, else it looks novel; a really novel one looks novel. So
  reuse = reuse_raw / q_r and recombination = (recombination_raw - reuse * q_c) / q_r.
- ``calibrated``: the mixture, but a really recombined feature is found with the rate measured by
  injection (``recombination_detection``): combinations of 2-3 features of a reference replica, built as
  the planted ones are, fitted on the reference's features; recombination = (recombination_raw - reuse *
  q_c) / q_det.

A corrected value is clipped to [0, 1] (recombination to [0, 1 - reuse]) and the column ``saturated``
says when that happened: the data then say "at least/at most this", not the clipped number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from featdiff.dictionaries.stats import best_match, new_stats, stream_codes, unit_decoder, update_stats
from featdiff.errors import FeatdiffError, check_choice

INTERVAL_LEVEL = 0.9
N_BOOTSTRAP = 400
N_TOKEN_CHUNKS = 20
ESTIMATORS = ("ratio", "symmetric", "union", "mixture", "calibrated")
DEFAULT_ESTIMATOR = "union"
FRACTION_COLUMNS = ("reuse", "recombination", "novelty", "base_coverage")
MEAN_COLUMNS = ("drift", "freq_shift", "transfer_fve")
# status codes of live features in a Profile
_REUSED, _RECOMBINED, _NOVEL = 0, 1, 2


@dataclass
class Profile:
    """Per-feature outcome of one comparison with the reference (live features only).

    ``status``: 0 reused (or split), 1 recombined, 2 novel per live target feature; ``covered``: per live
    reference feature, whether a target feature reuses it; ``drift`` / ``freq_shift``: values of the
    reused features; ``union_reused``: per live target feature, matched at >= threshold to any feature of
    the reference or its replicas (None unless computed); ``recombination_detection``: for a reference
    replica, the rate at which injected recombinations of its features are found (``calibrated``).
    """

    status: np.ndarray
    covered: np.ndarray
    drift: np.ndarray
    freq_shift: np.ndarray
    union_reused: np.ndarray | None = None
    recombination_detection: float | None = None

    def fractions(self) -> tuple[float, float, float]:
        n = len(self.status)
        if not n:
            return (float("nan"),) * 3
        return tuple(float((self.status == s).sum() / n) for s in (_REUSED, _RECOMBINED, _NOVEL))


def profile_of(table: pd.DataFrame, ref_live: np.ndarray) -> Profile:
    """The Profile of one target's feature table (``compare_dictionaries``'s per-feature rows).

    Examples
    --------
    >>> t = pd.DataFrame({"status": ["reused", "split", "novel", "dead"], "match": [0, -1, -1, -1],
    ...                   "drift": [0.1, np.nan, np.nan, np.nan], "freq_shift": [0.2, np.nan, np.nan, np.nan]})
    >>> p = profile_of(t, np.array([True, True]))
    >>> p.status.tolist(), p.covered.tolist(), [round(x, 3) for x in p.fractions()]
    ([0, 0, 2], [True, False], [0.667, 0.0, 0.333])
    """
    status = table["status"].astype(str).to_numpy()
    live = ~np.isin(status, ["dead", "absorbed"])  # an absorbed reference feature is no target feature
    code = np.select(
        [np.isin(status, ["reused", "split"]), status == "recombined"], [_REUSED, _RECOMBINED], _NOVEL
    )[live]
    reused = status == "reused"
    matched = set(table.loc[reused, "match"].astype(int).tolist())
    live_ref = np.flatnonzero(ref_live)
    return Profile(
        status=code.astype(np.int8),
        covered=np.isin(live_ref, list(matched)),
        drift=table.loc[reused, "drift"].to_numpy(dtype=float),
        freq_shift=table.loc[reused, "freq_shift"].dropna().to_numpy(dtype=float),
    )


def union_reused(
    tgt_decoder: torch.Tensor, tgt_live: np.ndarray, decoders: list[torch.Tensor], threshold: float
) -> np.ndarray:
    """Per live target feature: is its best cosine to any row of ``decoders`` (the reference and its
    replicas, live rows only) >= ``threshold``?"""
    T = unit_decoder(tgt_decoder)[torch.as_tensor(np.flatnonzero(tgt_live))]
    U = torch.cat([unit_decoder(D) for D in decoders])
    if not len(T) or not len(U):
        return np.zeros(len(T), bool)
    return (best_match(T, U)[0] >= threshold).numpy()


def correct(
    raw: np.ndarray,
    null: np.ndarray,
    estimator: str = DEFAULT_ESTIMATOR,
    q_target: np.ndarray | float | None = None,
    union: tuple | None = None,
    q_detect: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Corrected (reuse, recombination, novelty, saturated) from raw fractions ``raw[..., 3]`` and the
    base-vs-base profile ``null[..., 3]`` (reuse, recombination, novelty of a reference replica).

    ``q_target`` is the target-vs-target-replica reuse (``symmetric``); ``union`` is (the target's union
    reuse, the replicas' union reuse) (``union``). Arrays broadcast (one row per bootstrap draw).

    Examples
    --------
    >>> r, c, n, sat = correct(np.array([0.3, 0.1, 0.6]), np.array([0.6, 0.1, 0.3]), "ratio")
    >>> [round(float(x), 4) for x in (r, c, n)], bool(sat)
    ([0.5, 0.1667, 0.3333], False)
    >>> r, c, n, sat = correct(np.array([0.3, 0.1, 0.6]), np.array([0.6, 0.1, 0.3]), "mixture")
    >>> [round(float(x), 4) for x in (r, c, n)], bool(sat)
    ([0.5, 0.0833, 0.4167], False)
    >>> bool(correct(np.array([0.5, 0.1, 0.4]), np.array([0.4, 0.1, 0.5]), "ratio")[3])
    True
    """
    check_choice("estimator", estimator, ESTIMATORS, "correct")
    raw, null = np.asarray(raw, float), np.asarray(null, float)
    q = null[..., 0]
    if estimator == "symmetric" and q_target is not None:
        q = np.sqrt(q * np.asarray(q_target, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = raw[..., 0] / q
        c = raw[..., 1] / q
        if estimator == "union" and union is not None:
            r = np.asarray(union[0], float) / np.asarray(union[1], float)
        if estimator in ("mixture", "calibrated"):
            qc = q if estimator == "mixture" or q_detect is None else np.asarray(q_detect, float)
            c = (raw[..., 1] - r * null[..., 1]) / qc
    bad = ~np.isfinite(r) | ~np.isfinite(c)
    r = np.where(bad, raw[..., 0], r)
    c = np.where(bad, raw[..., 1], c)
    rc = np.clip(r, 0.0, 1.0)
    cc = np.clip(c, 0.0, 1.0 - rc)
    saturated = (np.abs(rc - r) > 1e-12) | (np.abs(cc - c) > 1e-12)
    return rc, cc, 1.0 - rc - cc, saturated


def fve_chunks(dictionary, x: torch.Tensor, n_chunks: int = N_TOKEN_CHUNKS, batch_size: int = 4096) -> dict:
    """Per contiguous token chunk: n, squared reconstruction error, sum and sum of squares of ``x`` (the
    sufficient statistics of the fraction of variance explained, to bootstrap over tokens; accumulated by
    featdiff.dictionaries.stats, the one implementation of variance explained)."""
    bounds = np.linspace(0, len(x), min(n_chunks, len(x)) + 1).astype(int)
    out = {"n": [], "err": [], "sum": [], "sumsq": []}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        stats = new_stats(dictionary.W_dec.shape[0], x.shape[1])
        for xb, f in stream_codes(dictionary, x[a:b], batch_size):
            update_stats(stats, xb, f, dictionary.decode(f))
        out["n"].append(stats["n"])
        out["err"].append(float(stats["sse"]))
        out["sum"].append(stats["sum"].numpy())
        out["sumsq"].append(float(stats["sumsq"]))
    return {k: np.asarray(v, float) for k, v in out.items()}


def _fve(n, err, s, ss) -> np.ndarray:
    """FVE from chunk sums (the last axis of ``n`` etc. is summed; ``s`` has one more, d_in)."""
    n_t, e_t, ss_t = n.sum(-1), err.sum(-1), ss.sum(-1)
    s_t = s.sum(-2)
    total = ss_t - (s_t**2).sum(-1) / n_t
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - e_t / total, np.nan)


def _boot_mean(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    if not len(values):
        return np.full(n_boot, np.nan)
    values = np.sort(values)  # the same draws whatever the order of the features
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(1)


def _boot_fractions(status: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, 3) fractions of reused / recombined / novel over features resampled with replacement."""
    if not len(status):
        return np.full((n_boot, 3), np.nan)
    counts = rng.multinomial(len(status), np.bincount(status, minlength=3) / len(status), size=n_boot)
    return counts / len(status)


def _boot_share(flags: np.ndarray | None, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    if flags is None or not len(flags):
        return np.full(n_boot, np.nan)
    return rng.binomial(len(flags), flags.mean(), size=n_boot) / len(flags)


def summarize_uncertainty(
    target: Profile,
    replicas: list[Profile],
    target_replicas: list[Profile] | None = None,
    q_target: list[float] | None = None,
    union_null: list[float] | None = None,
    transfer: dict | None = None,
    reference_fve: float = float("nan"),
    estimator: str = DEFAULT_ESTIMATOR,
    level: float = INTERVAL_LEVEL,
    n_bootstrap: int = N_BOOTSTRAP,
    correct_fractions: bool = True,
    seed: int = 0,
    recombination_detection: list[float] | None = None,
) -> dict:
    """The summary columns of one target: corrected reuse / recombination / novelty, ``saturated``,
    ``indistinguishable_from_reference``, and ``<col>_lo``, ``<col>_hi``, ``<col>_floor`` for every
    fraction and mean column (``FRACTION_COLUMNS``, ``MEAN_COLUMNS``), and ``<col>_raw_lo`` / ``_hi`` for
    the three uncorrected fractions.

    ``target`` is the target's Profile against the reference; ``replicas`` the Profiles of the reference's
    replicas against the reference (the base-vs-base comparisons: their columns, averaged, are the
    floors); ``target_replicas`` the Profiles of the target's own replicas against the reference (their
    spread widens the interval); ``q_target`` the reuse of each target replica against the target
    (``symmetric``); ``union_null`` each reference replica's union reuse against the reference and the
    other replicas (``union``; the target's union reuse is ``target.union_reused``); ``transfer`` the
    reference dictionary's ``fve_chunks`` on the target's activations. Intervals are percentile intervals
    at ``level`` of ``n_bootstrap`` draws, each of which picks one SAE of the target (itself or a replica)
    and one reference replica at random and resamples their features (and the token chunks) with
    replacement.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tgt = Profile(rng.choice(3, 200, p=[.5, .1, .4]).astype(np.int8), rng.random(200) < .5,
    ...               rng.random(100) * .2, rng.random(100))
    >>> rep = Profile(rng.choice(3, 200, p=[.8, .02, .18]).astype(np.int8), rng.random(200) < .8,
    ...               rng.random(160) * .1, rng.random(160) * .5)
    >>> s = summarize_uncertainty(tgt, [rep])
    >>> bool(s["reuse_lo"] < s["reuse"] < s["reuse_hi"]), round(s["reuse_floor"], 3)
    (True, 0.81)
    """
    check_choice("estimator", estimator, ESTIMATORS, "summarize_uncertainty")
    if not 0 < level < 1:
        raise FeatdiffError(f"The interval level must be in (0, 1); got {level}.")
    rng = np.random.default_rng(seed)
    B = n_bootstrap
    sources = [target, *(target_replicas or [])]
    out: dict = {}
    raw = np.asarray(target.fractions())

    # bootstrap draws of the target's raw quantities: each draw one of the target's SAEs, features resampled
    pick = rng.integers(0, len(sources), size=B)
    boot_raw = np.empty((B, 3))
    boot_cov = np.empty(B)
    boot_drift = np.empty(B)
    boot_shift = np.empty(B)
    boot_union = np.full(B, np.nan)
    for i, src in enumerate(sources):
        sel = pick == i
        m = int(sel.sum())
        if not m:
            continue
        boot_raw[sel] = _boot_fractions(src.status, rng, m)
        boot_cov[sel] = _boot_share(src.covered, rng, m)
        boot_drift[sel] = _boot_mean(src.drift, rng, m)
        boot_shift[sel] = _boot_mean(src.freq_shift, rng, m)
        boot_union[sel] = _boot_share(src.union_reused, rng, m)
    boot_fve = np.full(B, np.nan)
    if transfer is not None:
        idx = rng.integers(0, len(transfer["n"]), size=(B, len(transfer["n"])))
        boot_fve = _fve(
            transfer["n"][idx], transfer["err"][idx], transfer["sum"][idx], transfer["sumsq"][idx]
        )
        out["transfer_fve"] = float(_fve(transfer["n"], transfer["err"], transfer["sum"], transfer["sumsq"]))

    # the base-vs-base profile: each draw one reference replica, its features resampled
    null = np.asarray([r.fractions() for r in replicas]) if replicas else np.full((0, 3), np.nan)
    boot_null = np.full((B, 3), np.nan)
    boot_union_null = np.full(B, np.nan)
    if replicas:
        rpick = rng.integers(0, len(replicas), size=B)
        for i, rep in enumerate(replicas):
            sel = rpick == i
            m = int(sel.sum())
            if not m:
                continue
            boot_null[sel] = _boot_fractions(rep.status, rng, m)
            if union_null is not None:
                boot_union_null[sel] = union_null[i]
    q_t = float(np.mean(q_target)) if q_target else None
    boot_qt = rng.choice(np.asarray(q_target, float), size=B) if q_target else None
    if recombination_detection is None:
        found = [p.recombination_detection for p in replicas if p.recombination_detection is not None]
        recombination_detection = [x for x in found if np.isfinite(x)] or None
    q_det = float(np.mean(recombination_detection)) if recombination_detection else None
    boot_qd = (
        rng.choice(np.asarray(recombination_detection, float), size=B) if recombination_detection else None
    )
    union_point = None
    if target.union_reused is not None and union_null:
        union_point = (float(target.union_reused.mean()), float(np.mean(union_null)))

    if replicas and correct_fractions:
        r, c, n, sat = correct(raw, null.mean(0), estimator, q_t, union_point, q_det)
        br, bc, bn, _ = correct(
            boot_raw,
            boot_null,
            estimator,
            boot_qt,
            (boot_union, boot_union_null) if union_point is not None else None,
            boot_qd,
        )
    else:
        (r, c, n), sat = raw, False
        br, bc, bn = boot_raw[:, 0], boot_raw[:, 1], boot_raw[:, 2]
    out.update(reuse=float(r), recombination=float(c), novelty=float(n), saturated=bool(sat))

    a = (1 - level) / 2
    boots = {
        "reuse": br,
        "recombination": bc,
        "novelty": bn,
        "base_coverage": boot_cov,
        "drift": boot_drift,
        "freq_shift": boot_shift,
        "transfer_fve": boot_fve,
        # the measured fractions' own intervals: where a correction saturates, these still say how sure
        "reuse_raw": boot_raw[:, 0],
        "recombination_raw": boot_raw[:, 1],
        "novelty_raw": boot_raw[:, 2],
    }
    for col, b in boots.items():
        ok = b[np.isfinite(b)]
        lo, hi = np.quantile(ok, [a, 1 - a]) if len(ok) else (np.nan, np.nan)
        out[f"{col}_lo"], out[f"{col}_hi"] = float(lo), float(hi)

    def floor(values) -> float:
        v = [x for x in values if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    out["reuse_floor"] = floor(null[:, 0])
    out["recombination_floor"] = floor(null[:, 1])
    out["novelty_floor"] = floor(null[:, 2])
    out["base_coverage_floor"] = floor(
        [float(p.covered.mean()) if len(p.covered) else np.nan for p in replicas]
    )
    out["drift_floor"] = floor([float(p.drift.mean()) if len(p.drift) else np.nan for p in replicas])
    out["freq_shift_floor"] = floor(
        [float(p.freq_shift.mean()) if len(p.freq_shift) else np.nan for p in replicas]
    )
    out["transfer_fve_floor"] = float(reference_fve) if replicas else float("nan")
    if replicas:
        floor_lo = float(np.nanquantile(boot_null[:, 0], a))
        out["indistinguishable_from_reference"] = bool(raw[0] >= floor_lo)
    else:
        out["indistinguishable_from_reference"] = pd.NA
    return out


def recombination_detection(
    replica_decoder: torch.Tensor,
    replica_live: np.ndarray,
    reference_decoder: torch.Tensor,
    reference_live: np.ndarray,
    fit_threshold: float,
    reuse_threshold: float,
    max_components: int = 3,
    min_components: int = 2,
    n: int = 400,
    seed: int = 0,
) -> float:
    """The rate at which a recombination is found: ``n`` positive combinations of 2-3 live replica
    features (coefficients in [0.8, 1], no single component at cosine >= 0.65, as the planted ones), each
    called recombined when it is not reused by a reference feature (best cosine < ``reuse_threshold``)
    and OMP on the live reference features fits it with 2..``max_components`` of them at
    ``fit_threshold``. A replica and the reference learn the same features imperfectly: this is the
    share of true recombinations of shared features that survives that imperfection.

    Examples
    --------
    >>> D = torch.nn.functional.normalize(torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    >>> live = np.ones(64, bool)
    >>> recombination_detection(D, live, D, live, 0.9, 0.7) > 0.9  # identical dictionaries find them all
    True
    """
    from featdiff.metrics.recombination import fit_components

    rng = np.random.default_rng(seed)
    R = unit_decoder(replica_decoder).double()[torch.from_numpy(np.flatnonzero(replica_live))]
    A = unit_decoder(reference_decoder).double()[torch.from_numpy(np.flatnonzero(reference_live))]
    if len(R) < 3 or len(A) < 2:
        return float("nan")
    combos = []
    for _ in range(20 * n):
        m = int(rng.choice([2, 3]))
        idx = rng.choice(len(R), size=m, replace=False)
        v = torch.from_numpy(rng.uniform(0.8, 1.0, size=m)) @ R[idx]
        v = v / v.norm()
        if float((R[idx] @ v).max()) < 0.65:
            combos.append(v)
        if len(combos) == n:
            break
    if not combos:
        return float("nan")
    V = torch.stack(combos)
    reused = (V @ A.T).max(1).values >= reuse_threshold
    rc = fit_components(
        V, np.arange(len(V)), A, np.arange(len(A)), fit_threshold, max_components, min_components
    )
    return float((rc["recombined"].to_numpy() & ~reused.numpy()).mean())
