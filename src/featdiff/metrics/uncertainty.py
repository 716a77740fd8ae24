"""Intervals, base-vs-base floors and corrected fractions of a comparison's summary.

A comparison of a target dictionary T with the reference R is one draw: other seeds give other SAEs and
other numbers. Replicas of R (SAEs trained on the same data with other seeds) measure what R-vs-R gives
(the floor of every column) and how much it varies; a bootstrap over features (and over token chunks for
variance explained) measures how much a column varies with the finite set of features scored. Everything
here works on per-feature arrays that ``compare_dictionaries`` extracts from its tables (``profile_of``).

Estimators of the true fractions (docs/metrics.md gives each as a formula in summary columns and measures
their bias, benchmarks/estimator_bias.py). q_r, q_c are the base-vs-base (reference-vs-replica) reuse and
recombination (``reuse_floor``, ``recombination_floor``); in every estimator a feature the target shares
with the reference looks recombined as often as a replica's does, so recombination = (recombination_raw -
reuse * q_c) / d, with d = q_r unless said otherwise, and novelty = 1 - reuse - recombination:

- ``ratio`` (= ``mixture``, its older name): reuse = reuse_raw / q_r.
- ``symmetric``: q = sqrt(q_r * q_t), q_t the target-vs-target-replica reuse (``reuse_target_floor``; needs
  a target replica, else it equals ``ratio``): reuse = reuse_raw / q, d = q.
- ``union``: reuse = ``reuse_union`` / ``reuse_union_floor``: the share of the target's live features
  matched (cosine >= threshold, many-to-one) to some feature of N of the N + 1 base dictionaries (the
  reference and its N replicas; averaged over the N + 1 leave-one-out subsets), over the same share of each
  replica against the N others.
- ``calibrated``: reuse as ``ratio``; d = the rate at which injected combinations of 2-3 features of a
  reference replica are found recombined against the reference (``recombination_detection``).

A corrected value is clipped to [0, 1] (recombination to [0, 1 - reuse]) and the column ``saturated``
says when that happened: the data then say "at least/at most this", not the clipped number;
``interval_saturated`` says the same of an interval end, and ``uncorrected`` that there is no corrected
reading (no replicas, or no finite correction): the corrected columns are then NaN, the ``*_raw`` ones
carry the reading.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from featdiff.dictionaries.stats import best_match, new_stats, stream_codes, unit_decoder, update_stats
from featdiff.errors import FeatdiffError, check_choice

INTERVAL_LEVEL = 0.9
N_BOOTSTRAP = 400
N_TOKEN_CHUNKS = 20
ESTIMATORS = ("ratio", "symmetric", "union", "mixture", "calibrated")
# the shares the estimators correct with: summary columns, so a printed fraction can be recomputed
SHARE_COLUMNS = ("reuse_union", "reuse_union_floor", "reuse_target_floor", "recombination_detection")
FLAG_COLUMNS = ("saturated", "interval_saturated", "uncorrected", "indistinguishable_from_reference")
DEFAULT_ESTIMATOR = "union"
FRACTION_COLUMNS = ("reuse", "recombination", "novelty", "base_coverage")
MEAN_COLUMNS = ("drift", "freq_shift", "transfer_fve")
# statuses that are counted, not scored (featdiff.comparison.table.STATUSES)
UNSCORED = ("dead", "faint", "absorbed")  # absorbed: a reference feature with no target row (CompareConfig.absorbed)
# status codes of live features in a Profile
_REUSED, _RECOMBINED, _NOVEL = 0, 1, 2


@dataclass
class Profile:
    """Per-feature outcome of one comparison with the reference (live features only).

    ``status``: 0 reused (or split), 1 recombined, 2 novel per live target feature; ``covered``: per live
    reference feature, whether a target feature reuses it; ``drift`` / ``freq_shift``: values of the
    reused features; ``union_reused``: per live target feature, the share of the base dictionary subsets
    (``union_reused``) holding a feature at >= threshold to it (None unless computed);
    ``recombination_detection``: for a reference replica, the rate at which injected recombinations of its
    features are found (``calibrated``).
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
    """The Profile of one target's feature table (``compare_dictionaries``'s per-feature rows): its scored
    features (every status but ``UNSCORED``'s: ``dead``, never fired; ``faint``, fired but below
    ``min_contribution``).

    Examples
    --------
    >>> t = pd.DataFrame({"status": ["reused", "split", "novel", "dead", "faint"], "match": [0] + [-1] * 4,
    ...                   "drift": [0.1] + [np.nan] * 4, "freq_shift": [0.2] + [np.nan] * 4})
    >>> p = profile_of(t, np.array([True, True]))
    >>> p.status.tolist(), p.covered.tolist(), [round(x, 3) for x in p.fractions()]
    ([0, 0, 2], [True, False], [0.667, 0.0, 0.333])
    """
    status = table["status"].astype(str).to_numpy()
    live = ~np.isin(status, UNSCORED)
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
    tgt_decoder: torch.Tensor,
    tgt_live: np.ndarray,
    decoders: list[torch.Tensor],
    threshold: float,
    size: int | None = None,
) -> np.ndarray:
    """Per live target feature, the share of the subsets of ``size`` of ``decoders`` (the live rows of the
    reference and of its replicas, one tensor per dictionary) that hold a row at cosine >= ``threshold`` to
    it (many-to-one matching). ``size=None`` is the one subset of all of them (a bool per feature).

    The ``union`` estimator matches a target against N of the N + 1 dictionaries (every leave-one-out
    subset, averaged) because each of the N replicas is matched against the N others: matched against all
    N + 1, a target feature would find a counterpart more often than a replica's does, by about
    (1 - (1 - q)^(N + 1)) / (1 - (1 - q)^N) where each dictionary learns a feature with probability q.

    Examples
    --------
    >>> D = torch.eye(4)
    >>> union_reused(D, np.ones(4, bool), [D[:2], D[1:3]], 0.7).tolist()
    [True, True, True, False]
    >>> union_reused(D, np.ones(4, bool), [D[:2], D[1:3]], 0.7, size=1).tolist()
    [0.5, 1.0, 0.5, 0.0]
    """
    T = unit_decoder(tgt_decoder)[torch.as_tensor(np.flatnonzero(tgt_live))]
    best = np.zeros((len(T), len(decoders)))
    for j, D in enumerate(decoders):
        if len(T) and len(D):
            best[:, j] = best_match(T, unit_decoder(D))[0].numpy()
        else:
            best[:, j] = -np.inf
    found = best >= threshold
    if size is None or size >= len(decoders):
        return found.any(1) if len(decoders) else np.zeros(len(T), bool)
    from itertools import combinations

    subsets = list(combinations(range(len(decoders)), size))
    return np.mean([found[:, list(sub)].any(1) for sub in subsets], axis=0) if subsets else np.zeros(len(T))


def _divide(a, b) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(a, float) / np.asarray(b, float)


def unclipped(
    raw: np.ndarray,
    null: np.ndarray,
    estimator: str = DEFAULT_ESTIMATOR,
    q_target: np.ndarray | float | None = None,
    union: tuple | None = None,
    q_detect: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's (reuse, recombination) before any clipping (may be outside [0, 1] or not finite).

    With q_r, q_c the base-vs-base reuse and recombination (``null[..., :2]``): reuse = reuse_raw / q
    (q = q_r; ``symmetric``: sqrt(q_r q_t)), or for ``union`` the target's union share over the replicas'
    (``union``); recombination = (recombination_raw - reuse q_c) / d, where d is q (``calibrated``:
    ``q_detect`` where given): a feature the target shares with the reference looks recombined as often as
    a replica's does (the recombination floor), and a true recombination is found with probability d.
    """
    check_choice("estimator", estimator, ESTIMATORS, "correct")
    raw, null = np.asarray(raw, float), np.asarray(null, float)
    q = null[..., 0]
    if estimator == "symmetric" and q_target is not None:
        q = np.sqrt(q * np.asarray(q_target, float))
    r = _divide(raw[..., 0], q)
    if estimator == "union" and union is not None:
        r = _divide(union[0], union[1])
    d = q
    if estimator == "calibrated" and q_detect is not None:
        d = np.asarray(q_detect, float)
    with np.errstate(invalid="ignore"):
        c = _divide(raw[..., 1] - r * null[..., 1], d)
    return r, c


def correct(
    raw: np.ndarray,
    null: np.ndarray,
    estimator: str = DEFAULT_ESTIMATOR,
    q_target: np.ndarray | float | None = None,
    union: tuple | None = None,
    q_detect: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Corrected (reuse, recombination, novelty, saturated) from raw fractions ``raw[..., 3]`` and the
    base-vs-base profile ``null[..., 3]`` (reuse, recombination, novelty of a reference replica):
    ``unclipped``'s values, reuse clipped to [0, 1] and recombination to [0, 1 - reuse]; ``saturated``
    says a clip moved a value. Where a correction is not finite (a floor of 0) the raw fractions are
    returned (``summarize_uncertainty`` then reports no corrected reading: NaN, flagged ``uncorrected``).

    ``q_target`` is the target-vs-target-replica reuse (``symmetric``); ``union`` is (the target's union
    reuse, the replicas' union reuse) (``union``); ``q_detect`` the injected recombinations' detection rate
    (``calibrated``). Arrays broadcast (one row per bootstrap draw).

    Examples
    --------
    >>> r, c, n, sat = correct(np.array([0.3, 0.1, 0.6]), np.array([0.6, 0.1, 0.3]), "ratio")
    >>> [round(float(x), 4) for x in (r, c, n)], bool(sat)
    ([0.5, 0.0833, 0.4167], False)
    >>> raw, null = np.array([0.3, 0.1, 0.6]), np.array([0.6, 0.1, 0.3])
    >>> r, c, n, sat = correct(raw, null, "union", union=(0.4, 0.8))
    >>> [round(float(x), 4) for x in (r, c, n)], bool(sat)
    ([0.5, 0.0833, 0.4167], False)
    >>> bool(correct(np.array([0.5, 0.1, 0.4]), np.array([0.4, 0.1, 0.5]), "ratio")[3])
    True
    """
    raw = np.asarray(raw, float)
    r, c = unclipped(raw, null, estimator, q_target, union, q_detect)
    bad = ~np.isfinite(r) | ~np.isfinite(c)
    r = np.where(bad, raw[..., 0], r)
    c = np.where(bad, raw[..., 1], c)
    rc, cc, sat = _clip(r, c)
    return rc, cc, np.where(bad, raw[..., 2], np.clip(1.0 - rc - cc, 0.0, None)), sat


def _clip(r, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rc = np.clip(r, 0.0, 1.0)
    cc = np.clip(c, 0.0, 1.0 - rc)
    with np.errstate(invalid="ignore"):
        saturated = (np.abs(rc - r) > 1e-12) | (np.abs(cc - c) > 1e-12)
    return rc, cc, saturated


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


def _boot_profile(p: Profile, rng: np.random.Generator, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, 3) fractions of reused / recombined / novel and (n_boot,) union shares of ``p``'s live
    features resampled with replacement, the same resample for both (they are read together)."""
    n = len(p.status)
    if not n:
        return np.full((n_boot, 3), np.nan), np.full(n_boot, np.nan)
    union = np.asarray(p.union_reused, float) if p.union_reused is not None else None
    if union is not None and len(union) != n:
        union = None
    # the same draws whatever the order of the features: sorted by what is read from them
    order = np.lexsort((np.zeros(n) if union is None else union, p.status))
    status = p.status[order]
    union = None if union is None else union[order]
    out, share = np.empty((n_boot, 3)), np.full(n_boot, np.nan)
    for a in range(0, n_boot, 64):  # in blocks: n_boot x n indices at once can be large
        idx = rng.integers(0, n, size=(min(64, n_boot - a), n))
        st = status[idx]
        out[a : a + len(idx)] = np.stack([(st == k).mean(1) for k in (_REUSED, _RECOMBINED, _NOVEL)], 1)
        if union is not None:
            share[a : a + len(idx)] = union[idx].mean(1)
    return out, share


def _boot_share(flags: np.ndarray | None, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    if flags is None or not len(flags):
        return np.full(n_boot, np.nan)
    return rng.binomial(len(flags), flags.mean(), size=n_boot) / len(flags)


def _finite_mean(values) -> float:
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _union_share(p: Profile) -> float:
    return float(np.mean(p.union_reused)) if p.union_reused is not None and len(p.union_reused) else np.nan


def summarize_uncertainty(
    target: Profile,
    replicas: list[Profile],
    target_replicas: list[Profile] | None = None,
    q_target: list[float] | None = None,
    union_null: list | None = None,
    transfer: dict | None = None,
    reference_fve: float = float("nan"),
    estimator: str = DEFAULT_ESTIMATOR,
    level: float = INTERVAL_LEVEL,
    n_bootstrap: int = N_BOOTSTRAP,
    correct_fractions: bool = True,
    seed: int = 0,
    recombination_detection: list[float] | None = None,
) -> dict:
    """The summary columns of one target: corrected reuse / recombination / novelty, the flags
    ``saturated``, ``interval_saturated``, ``uncorrected`` and ``indistinguishable_from_reference``, the
    shares the correction used (``reuse_union``, ``reuse_union_floor``, ``reuse_target_floor``,
    ``recombination_detection``), and ``<col>_lo``, ``<col>_hi``, ``<col>_floor`` for every fraction and
    mean column (``FRACTION_COLUMNS``, ``MEAN_COLUMNS``), and ``<col>_raw_lo`` / ``_hi`` for the three
    uncorrected fractions.

    ``target`` is the target's Profile against the reference; ``replicas`` the Profiles of the reference's
    replicas against the reference (the base-vs-base comparisons: their columns, averaged, are the
    floors); ``target_replicas`` the Profiles of the target's own replicas against the reference (their
    spread widens the interval); ``q_target`` the reuse of each target replica against the target
    (``symmetric``); ``union_null`` per reference replica, its live features' union flags against the
    reference and the other replicas (``union``; default: each replica Profile's ``union_reused``; the
    target's are ``target.union_reused``; where either is missing, ``union`` reads as ``ratio``, as it does
    without replicas); ``transfer`` the reference dictionary's ``fve_chunks`` on the
    target's activations. Intervals are percentile intervals at ``level`` of ``n_bootstrap`` draws, each of
    which picks one SAE of the target (itself or a replica) and one reference replica at random and
    resamples their features (with their union flags) and the token chunks with replacement.

    Flags: ``saturated``, the point estimate was clipped (reuse to [0, 1], recombination to [0, 1 - reuse]);
    ``interval_saturated``, an end of the corrected reuse, recombination or novelty interval was (the draws
    there were clipped, so the end is a bound, not a measurement); ``uncorrected``, there is no corrected
    reading (no replicas, ``correct_fractions=False``, or a correction that is not finite: a floor of 0):
    the corrected columns and their intervals are then NaN and only the ``*_raw`` ones carry the reading
    (a column named ``reuse`` is always a corrected reading). Draws whose correction is 0 / 0 are left out of the intervals; x / 0 is unbounded and clips.
    ``indistinguishable_from_reference``: the upper end of the ``level`` interval of reuse_raw - reuse_floor
    (each draw: the target's raw reuse minus a reference replica's) is >= 0, i.e. the data do not show the
    target reusing fewer of the reference's features than the reference's own replicas do.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tgt = Profile(rng.choice(3, 200, p=[.5, .1, .4]).astype(np.int8), rng.random(200) < .5,
    ...               rng.random(100) * .2, rng.random(100))
    >>> rep = Profile(rng.choice(3, 200, p=[.8, .02, .18]).astype(np.int8), rng.random(200) < .8,
    ...               rng.random(160) * .1, rng.random(160) * .5)
    >>> s = summarize_uncertainty(tgt, [rep], estimator="ratio")
    >>> bool(s["reuse_lo"] < s["reuse"] < s["reuse_hi"]), round(s["reuse_floor"], 3)
    (True, 0.81)
    >>> s["saturated"], s["uncorrected"], s["indistinguishable_from_reference"]
    (False, False, False)
    """
    check_choice("estimator", estimator, ESTIMATORS, "summarize_uncertainty")
    if not 0 < level < 1:
        raise FeatdiffError(f"The interval level must be in (0, 1); got {level}.")
    rng = np.random.default_rng(seed)
    B = n_bootstrap
    sources = [target, *(target_replicas or [])]
    replicas = list(replicas)
    if union_null is not None:  # per replica: its union flags (an array) or, as before, its share (a float)
        replicas = [
            replace(rep, union_reused=np.asarray(u) if np.ndim(u) else np.full(len(rep.status), float(u)))
            for rep, u in zip(replicas, union_null, strict=True)
        ]
    out: dict = {}
    raw = np.asarray(target.fractions())

    # bootstrap draws of the target's raw quantities: each draw one of the target's SAEs, features resampled
    pick = rng.integers(0, len(sources), size=B)
    boot_raw = np.full((B, 3), np.nan)
    boot_cov = np.full(B, np.nan)
    boot_drift = np.full(B, np.nan)
    boot_shift = np.full(B, np.nan)
    boot_union = np.full(B, np.nan)
    for i, src in enumerate(sources):
        sel = pick == i
        m = int(sel.sum())
        if not m:
            continue
        boot_raw[sel], boot_union[sel] = _boot_profile(src, rng, m)
        boot_cov[sel] = _boot_share(src.covered, rng, m)
        boot_drift[sel] = _boot_mean(src.drift, rng, m)
        boot_shift[sel] = _boot_mean(src.freq_shift, rng, m)
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
            if m:
                boot_null[sel], boot_union_null[sel] = _boot_profile(rep, rng, m)
    if recombination_detection is None:
        found = [p.recombination_detection for p in replicas if p.recombination_detection is not None]
        recombination_detection = [x for x in found if np.isfinite(x)] or None
    boot_qt = rng.choice(np.asarray(q_target, float), size=B) if q_target else None
    boot_qd = (
        rng.choice(np.asarray(recombination_detection, float), size=B) if recombination_detection else None
    )
    # every share a correction uses is a column (docs/metrics.md gives each estimator's formula in them)
    floors = np.array([_finite_mean(null[:, k]) for k in range(3)]) if replicas else np.full(3, np.nan)
    out["reuse_union"] = _union_share(target)
    out["reuse_union_floor"] = _finite_mean(_union_share(p) for p in replicas)
    out["reuse_target_floor"] = _finite_mean(q_target or [])
    out["recombination_detection"] = _finite_mean(recombination_detection or [])
    union_point = (out["reuse_union"], out["reuse_union_floor"])
    has_union = np.isfinite(union_point[0]) and np.isfinite(union_point[1])
    q_t = out["reuse_target_floor"] if q_target else None
    q_det = out["recombination_detection"] if recombination_detection else None

    uncorrected = not (replicas and correct_fractions)
    if not uncorrected:
        r, c = unclipped(raw, floors, estimator, q_t, union_point if has_union else None, q_det)
        uncorrected = not (np.isfinite(r) and np.isfinite(c))
    if uncorrected:  # no corrected reading: the corrected columns are NaN, the *_raw columns carry it
        r, c, sat = np.nan, np.nan, False
        br, bc = np.full(B, np.nan), np.full(B, np.nan)
        boot_sat = np.zeros(B, bool)
    else:
        r, c, sat = _clip(r, c)
        br, bc = unclipped(
            boot_raw,
            boot_null,
            estimator,
            boot_qt,
            (boot_union, boot_union_null) if has_union else None,
            boot_qd,
        )
        br = np.where(np.isnan(br) | np.isnan(bc), np.nan, br)  # 0 / 0: undefined, left out
        bc = np.where(np.isnan(br), np.nan, bc)
        br, bc, boot_sat = _clip(br, bc)
    n = np.nan if uncorrected else max(0.0, 1.0 - float(r) - float(c))  # (a float's rounding below 0)
    out.update(
        reuse=float(r),
        recombination=float(c),
        novelty=float(n),
        saturated=bool(sat),
        uncorrected=bool(uncorrected),
    )

    a = (1 - level) / 2
    boots = {
        "reuse": br,
        "recombination": bc,
        "novelty": np.clip(1.0 - br - bc, 0.0, None),
        "base_coverage": boot_cov,
        "drift": boot_drift,
        "freq_shift": boot_shift,
        "transfer_fve": boot_fve,
        # the measured fractions' own intervals: where a correction saturates, these still say how sure
        "reuse_raw": boot_raw[:, 0],
        "recombination_raw": boot_raw[:, 1],
        "novelty_raw": boot_raw[:, 2],
    }
    interval_saturated = False
    for col, b in boots.items():
        ok = np.isfinite(b)
        lo, hi = np.quantile(b[ok], [a, 1 - a], method="inverted_cdf") if ok.any() else (np.nan, np.nan)
        out[f"{col}_lo"], out[f"{col}_hi"] = float(lo), float(hi)
        if col in ("reuse", "recombination", "novelty") and ok.any():
            # an end is saturated when the draw it falls on (or one equal to it) was clipped
            for end in (lo, hi):
                interval_saturated |= bool((boot_sat[ok] & (np.abs(b[ok] - end) <= 1e-12)).any())
    out["interval_saturated"] = interval_saturated

    out["reuse_floor"], out["recombination_floor"], out["novelty_floor"] = (float(x) for x in floors)
    out["base_coverage_floor"] = _finite_mean(
        [float(p.covered.mean()) if len(p.covered) else np.nan for p in replicas]
    )
    out["drift_floor"] = _finite_mean([float(p.drift.mean()) if len(p.drift) else np.nan for p in replicas])
    out["freq_shift_floor"] = _finite_mean(
        [float(p.freq_shift.mean()) if len(p.freq_shift) else np.nan for p in replicas]
    )
    out["transfer_fve_floor"] = float(reference_fve) if replicas else float("nan")
    diff = boot_raw[:, 0] - boot_null[:, 0]
    diff = diff[np.isfinite(diff)]
    if replicas and len(diff):
        out["indistinguishable_from_reference"] = bool(np.quantile(diff, 1 - a, method="inverted_cdf") >= 0)
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
    extra_reference: torch.Tensor | None = None,
) -> float:
    """The rate at which a recombination is found: ``n`` positive combinations of 2-3 live replica
    features (coefficients in [0.8, 1], no single component at cosine >= 0.65, as the planted ones), each
    called recombined when it is not reused by a reference feature (best cosine < ``reuse_threshold``)
    and OMP on the live reference features fits it with 2..``max_components`` of them at
    ``fit_threshold``. A replica and the reference learn the same features imperfectly: this is the
    share of true recombinations of shared features that survives that imperfection. ``extra_reference``:
    more rows the fit may use, those no live reference row reuses (cosine < ``reuse_threshold``), as a
    target's fit does (the other replicas' live rows; featdiff.metrics.recombination.recombination).

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
    if extra_reference is not None and len(extra_reference) and len(A):
        extra = unit_decoder(extra_reference).double()
        A = torch.cat([A, extra[best_match(extra, A)[0] < reuse_threshold]])
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
