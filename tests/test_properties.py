"""Properties of every registered metric, of ``align`` and of ``compare_dictionaries`` (hypothesis).

Small random dictionaries (unit rows, d_in 4-16, 4-32 features) whose target mixes near-copies of reference
rows, sums of two reference rows and fresh random rows, so every status occurs. Each property holds for any
such pair:

- permuting the target's features changes nothing but indices (match, similarity and every per-feature column
  permute; the summary, intervals included, is unchanged);
- a dictionary against itself is fully reused with zero drift (reuse_raw 1, drift 0, recombination and
  novelty 0, every registered metric at its identity value);
- scaling decoder rows by positive factors changes no cosine metric;
- the summary's fractions lie in [0, 1] and reuse + recombination + novelty = 1 (raw, and corrected where
  a replica gives a floor; without one the corrected columns are NaN: there is no corrected reading);
- finite input gives no NaN or inf where a quantity is defined.

The NaNs that are legitimate (the quantity is undefined, not lost): without activations, ``freq_shift``,
``transfer_fve``, ``reference_fve``, ``target_fve``, ``frequency`` and ``svcca`` (they need activations);
without replicas, the ``*_floor`` columns, ``noise_floor_reuse`` and the corrected fractions ``reuse``,
``recombination``, ``novelty`` with their intervals (there is no base-vs-base comparison);
per feature, ``similarity`` of unmatched features (``match`` -1), ``drift`` of features that are not reused,
``freq_shift`` of features that are neither reused nor split, ``fit_cosine`` of features no recombination
fit was tried on; ``drift`` / ``freq_shift`` in the summary when no feature is reused.

Derandomized (the same examples every run, for CI); ``FEATDIFF_HYPOTHESIS=explore`` draws fresh, more
examples.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import featdiff as fd
from featdiff.alignment.matching import METHODS
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.errors import FeatdiffWarning

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "explore", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROPS = settings(settings.get_profile(os.environ.get("FEATDIFF_HYPOTHESIS", "ci")))

FRACTIONS = ("reuse", "recombination", "novelty")
COSINE_FEATURE_COLUMNS = ["status", "match", "similarity", "drift", "n_components", "fit_cosine"]
# summary columns defined (finite) whenever activations are given and some target feature is live
DEFINED_WITH_ACTS = [
    *(f"{c}_raw" for c in FRACTIONS), "split", "base_coverage", "transfer_fve", "reference_fve",
    "target_fve", "n_features", "n_scored", "n_dead",
]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


@dataclass
class Pair:
    ref: torch.Tensor  # (d_ref, d_in) unit rows
    tgt: torch.Tensor  # (d_tgt, d_in) unit rows
    k: int
    x: torch.Tensor  # (n_tokens, d_in) activations, shared by both checkpoints' names
    seed: int


@st.composite
def pairs(draw) -> Pair:
    """A reference dictionary and a target mixing copies (+ noise), sums of two and random rows of it."""
    d_in = draw(st.integers(4, 16))
    d_ref = draw(st.integers(4, 32))
    d_tgt = draw(st.integers(4, 32))
    k = draw(st.integers(1, 4))
    noise = draw(st.sampled_from([0.01, 0.05, 0.3]))  # > 0: no exact ties
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    ref = _unit(torch.randn(d_ref, d_in, generator=g))
    kind = torch.randint(0, 3, (d_tgt,), generator=g)
    i, j = torch.randint(0, d_ref, (2, d_tgt), generator=g)
    copy = ref[i] + noise * torch.randn(d_tgt, d_in, generator=g)
    mix = ref[i] + ref[j]
    fresh = torch.randn(d_tgt, d_in, generator=g)
    rows = torch.where((kind == 0)[:, None], copy, torch.where((kind == 1)[:, None], mix, fresh))
    rows = torch.where(rows.norm(dim=1, keepdim=True) > 1e-3, rows, fresh)  # a row minus itself
    rows = rows + 0.01 * torch.randn(d_tgt, d_in, generator=g)  # no two equal rows: no exact ties
    x = torch.randn(256, d_in, generator=g)
    return Pair(ref, _unit(rows), k, x, seed)


def _compare(ref, tgt, k, x=None, W_enc=None, metrics=None, replicas=None, architecture="topk"):
    kw = {"k": k} if architecture == "topk" else {"architecture": architecture}
    saes = {
        "base": sae_from_dictionary(ref, W_enc=None if W_enc is None else W_enc[0], **kw),
        "rl": sae_from_dictionary(tgt, W_enc=None if W_enc is None else W_enc[1], **kw),
    }
    acts = None if x is None else fd.ActivationSet({"base": x, "rl": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatdiffWarning)
        return fd.compare_dictionaries(saes, acts, progress=False, metrics=metrics, replicas=replicas)


def _assert_same_summary(a: pd.Series, b: pd.Series, atol: float = 1e-5) -> None:
    assert list(a.index) == list(b.index)
    for col in a.index:
        x, y = a[col], b[col]
        if isinstance(x, (float, np.floating)) or isinstance(y, (float, np.floating)):
            x, y = float(x), float(y)
            assert (np.isnan(x) and np.isnan(y)) or abs(x - y) <= atol, (col, x, y)
        else:
            assert (pd.isna(x) and pd.isna(y)) or x == y, (col, x, y)


def _metric_names() -> list[str]:
    return list(fd.available_metrics().index)


# ------------------------------------------------------------------------------------------ alignment


@PROPS
@given(pairs(), st.sampled_from([m for m in METHODS if m != "index"]), st.randoms(use_true_random=False))  # index pairs by position
def test_align_permuting_features_permutes_the_matching(p, method, rnd):
    perm_t = np.array(rnd.sample(range(len(p.tgt)), len(p.tgt)))
    perm_r = np.array(rnd.sample(range(len(p.ref)), len(p.ref)))
    al = fd.align(p.ref, p.tgt, method=method)
    # target rows permuted: target feature j of the new is feature perm_t[j] of the old
    al_t = fd.align(p.ref, p.tgt[perm_t], method=method)
    np.testing.assert_allclose(al_t.similarity, al.similarity[perm_t], atol=1e-5)
    # reference rows permuted: reference feature i of the new is feature perm_r[i] of the old
    al_r = fd.align(p.ref[perm_r], p.tgt, method=method)
    np.testing.assert_allclose(al_r.similarity, al.similarity, atol=1e-5)
    ok = al.match >= 0
    assert (al_t.match[ok[perm_t]] >= 0).all() and ok.sum() == (al_t.match >= 0).sum() == (al_r.match >= 0).sum()
    # the matched reference rows are the same rows (indices differ; a tie may pick an equal-cosine row)
    cos_t = (p.ref[al_t.match[ok[perm_t]]] * p.tgt[perm_t][ok[perm_t]]).sum(1).numpy()
    np.testing.assert_allclose(cos_t, al_t.similarity[ok[perm_t]], atol=1e-5)
    assert np.array_equal(perm_r[al_r.match[ok]], al.match[ok]) or np.allclose(
        al_r.similarity.sum(), al.similarity.sum(), atol=1e-5
    )
    assert al.similarity[ok].max() <= 1.0 and al.similarity[ok].min() >= -1.0


@PROPS
@given(pairs(), st.randoms(use_true_random=False))
def test_align_on_activations_is_blind_to_feature_order(p, rnd):
    perm = np.array(rnd.sample(range(len(p.tgt)), len(p.tgt)))
    acts = fd.ActivationSet({"base": p.x, "rl": p.x})
    ref = sae_from_dictionary(p.ref, k=p.k)

    def run(tgt):
        return fd.align(ref, sae_from_dictionary(tgt, k=p.k), on="activations", activations=acts,
                        target_name="rl")

    al, al_t = run(p.tgt), run(p.tgt[perm])
    assert np.array_equal(al_t.tgt_live, al.tgt_live[perm])
    np.testing.assert_allclose(al_t.similarity, al.similarity[perm], atol=1e-5)
    assert np.array_equal(al_t.match, al.match[perm])
    live = al.tgt_live & (al.match >= 0)
    assert np.isfinite(al.similarity[live]).all() and (np.abs(al.similarity[live]) <= 1).all()
    self_al = fd.align(ref, ref, on="activations", activations=fd.ActivationSet({"base": p.x, "target": p.x}))
    fired = self_al.tgt_live
    assert np.array_equal(self_al.match[fired], np.flatnonzero(fired))
    np.testing.assert_allclose(self_al.similarity[fired], 1.0, atol=1e-5)


@PROPS
@given(pairs())
def test_align_sparse_solver_reaches_the_dense_optimum(p):
    dense = fd.align(p.ref, p.tgt, solver="dense")
    sparse = fd.align(p.ref, p.tgt, solver="sparse")
    assert sparse.exact
    np.testing.assert_allclose(np.nansum(sparse.similarity), np.nansum(dense.similarity), atol=1e-4)
    assert (sparse.match >= 0).sum() == (dense.match >= 0).sum() == min(len(p.ref), len(p.tgt))
    assert len(set(sparse.match[sparse.match >= 0])) == (sparse.match >= 0).sum()  # one-to-one


@PROPS
@given(pairs(), st.sampled_from(["hungarian", "max"]))
def test_align_against_itself_matches_every_feature_to_itself(p, method):
    al = fd.align(p.ref, p.ref, method=method)
    assert np.array_equal(al.match, np.arange(len(p.ref)))
    np.testing.assert_allclose(al.similarity, 1.0, atol=1e-5)
    assert al.similarity.max() <= 1.0  # a cosine, never 1 + rounding


@PROPS
@given(pairs(), st.floats(0.1, 10.0), st.integers(0, 2**16))
def test_align_is_blind_to_the_scale_of_decoder_rows(p, spread, seed):
    g = torch.Generator().manual_seed(seed)
    s_ref = spread ** torch.rand(len(p.ref), 1, generator=g)
    s_tgt = spread ** torch.rand(len(p.tgt), 1, generator=g)
    al = fd.align(p.ref, p.tgt)
    al_s = fd.align(p.ref * s_ref, p.tgt * s_tgt)
    np.testing.assert_allclose(al_s.similarity, al.similarity, atol=1e-5)
    assert np.array_equal(al_s.match, al.match) or np.isclose(
        np.nansum(al_s.similarity), np.nansum(al.similarity), atol=1e-5
    )


# ------------------------------------------------------------------------------ compare_dictionaries


@PROPS
@given(pairs(), st.booleans(), st.randoms(use_true_random=False))
def test_compare_permuting_target_features_changes_nothing_but_indices(p, with_acts, rnd):
    perm = np.array(rnd.sample(range(len(p.tgt)), len(p.tgt)))
    x = p.x if with_acts else None
    W_enc = (p.ref.T, p.tgt.T)
    a = _compare(p.ref, p.tgt, p.k, x, W_enc=W_enc)
    b = _compare(p.ref, p.tgt[perm], p.k, x, W_enc=(p.ref.T, p.tgt[perm].T))
    _assert_same_summary(a.summary.loc["rl"], b.summary.loc["rl"])
    fa = a.features.set_index("feature").loc[perm].reset_index(drop=True)
    fb = b.features.drop(columns="feature")
    fa, fb = fa[fb.columns], fb
    for col in fb.columns:
        if col == "components":  # (reference feature, weight) pairs: the same features, weights to float noise
            for ca, cb in zip(fa[col], fb[col], strict=True):
                ca, cb = sorted(ca), sorted(cb)
                assert [i for i, _ in ca] == [i for i, _ in cb]
                np.testing.assert_allclose([w for _, w in ca], [w for _, w in cb], atol=1e-9)
        elif pd.api.types.is_float_dtype(fb[col]):
            np.testing.assert_allclose(fa[col].to_numpy(float), fb[col].to_numpy(float), atol=1e-5, err_msg=col)
        else:
            assert fa[col].tolist() == fb[col].tolist(), col


@PROPS
@given(pairs(), st.booleans(), st.randoms(use_true_random=False))
def test_compare_permuting_reference_features_relabels_matches_only(p, with_acts, rnd):
    perm = np.array(rnd.sample(range(len(p.ref)), len(p.ref)))  # new reference feature i = old perm[i]
    x = p.x if with_acts else None
    a = _compare(p.ref, p.tgt, p.k, x, W_enc=(p.ref.T, p.tgt.T))
    b = _compare(p.ref[perm], p.tgt, p.k, x, W_enc=(p.ref[perm].T, p.tgt.T))
    _assert_same_summary(a.summary.loc["rl"], b.summary.loc["rl"])
    fa, fb = a.features, b.features
    assert fa["status"].tolist() == fb["status"].tolist()
    ok = fb["match"].to_numpy() >= 0
    assert np.array_equal(ok, fa["match"].to_numpy() >= 0)
    assert np.array_equal(perm[fb["match"].to_numpy()[ok]], fa["match"].to_numpy()[ok])
    for ca, cb in zip(fa["components"], fb["components"], strict=True):  # (reference feature, weight) pairs
        ca, cb = sorted(ca), sorted((int(perm[i]), w) for i, w in cb)
        assert [i for i, _ in ca] == [i for i, _ in cb]
        np.testing.assert_allclose([w for _, w in ca], [w for _, w in cb], atol=1e-5)
    for col in ("similarity", "drift", "freq_shift", "fit_cosine", "frequency"):
        np.testing.assert_allclose(fa[col].to_numpy(float), fb[col].to_numpy(float), atol=1e-5, err_msg=col)


@PROPS
@given(pairs(), st.booleans())
def test_compare_a_dictionary_against_itself_is_fully_reused_with_zero_drift(p, with_acts):
    x = p.x if with_acts else None
    cmp = _compare(p.ref, p.ref, p.k, x)
    s = cmp.summary.loc["rl"]
    assert s["n_scored"] > 0
    for col, want in [("reuse_raw", 1.0), ("recombination_raw", 0.0), ("novelty_raw", 0.0), ("split", 0.0),
                      ("base_coverage", 1.0)]:
        assert s[col] == pytest.approx(want, abs=1e-9), col
    assert s[["reuse", "recombination", "novelty"]].isna().all() and s["uncorrected"]  # no replica: no floor
    assert 0.0 <= s["drift"] <= 1e-6
    f = cmp.features
    live = f["status"] != "dead"
    assert (f.loc[live, "status"] == "reused").all()
    assert np.array_equal(f.loc[live, "match"], f.loc[live, "feature"])
    np.testing.assert_allclose(f.loc[live, "drift"], 0.0, atol=1e-6)
    if with_acts:
        assert s["freq_shift"] == pytest.approx(0.0, abs=1e-9)
        assert s["transfer_fve"] == pytest.approx(s["reference_fve"], abs=1e-5)
        assert s["target_fve"] == pytest.approx(s["reference_fve"], abs=1e-9)
    # every registered metric at its identity value where it has one
    if "mmcs" in s.index:
        assert s["mmcs"] == pytest.approx(1.0, abs=1e-5)
    if with_acts and "svcca" in s.index:
        assert s["svcca"] == pytest.approx(1.0, abs=1e-4)


@PROPS
@given(pairs(), st.floats(0.1, 10.0), st.integers(0, 2**16), st.booleans())
def test_compare_scaling_decoder_rows_changes_no_cosine_metric(p, spread, seed, with_acts):
    g = torch.Generator().manual_seed(seed)
    s_ref = spread ** torch.rand(len(p.ref), 1, generator=g)
    s_tgt = spread ** torch.rand(len(p.tgt), 1, generator=g)
    x = p.x if with_acts else None
    # ReLU SAEs whose encoder undoes the scale: codes / s times rows * s reconstruct the same, so frequencies
    # and contributions (which features are live) are unchanged; only the decoder rows' lengths differ
    a = _compare(p.ref, p.tgt, p.k, x, W_enc=(p.ref.T, p.tgt.T), metrics=["mmcs"], architecture="standard")
    b = _compare(
        p.ref * s_ref, p.tgt * s_tgt, p.k, x, W_enc=(p.ref.T / s_ref.T, p.tgt.T / s_tgt.T), metrics=["mmcs"],
        architecture="standard",
    )
    cosine = [*(f"{c}_raw" for c in FRACTIONS), "split", "drift", "base_coverage", "mmcs",
              "freq_shift", "n_scored", "n_dead"]
    _assert_same_summary(a.summary.loc["rl", cosine], b.summary.loc["rl", cosine])
    fa, fb = a.features, b.features
    assert fa["status"].tolist() == fb["status"].tolist()
    assert fa["match"].tolist() == fb["match"].tolist()
    for col in ("similarity", "drift", "fit_cosine", "freq_shift"):
        np.testing.assert_allclose(fa[col].to_numpy(float), fb[col].to_numpy(float), atol=1e-5, err_msg=col)


@PROPS
@given(pairs(), st.booleans(), st.booleans())
def test_compare_fractions_lie_in_0_1_and_sum_to_1(p, with_acts, with_replica):
    x = p.x if with_acts else None
    replicas = None
    if with_replica:  # a second base dictionary: the corrected fractions and the floors are computed
        g = torch.Generator().manual_seed(p.seed + 1)
        replicas = [sae_from_dictionary(_unit(p.ref + 0.2 * torch.randn(p.ref.shape, generator=g)), k=p.k)]
    s = _compare(p.ref, p.tgt, p.k, x, replicas=replicas).summary.loc["rl"]
    if not with_replica:  # no floor: no corrected reading
        assert np.isnan([s[c] for c in FRACTIONS]).all() and s["uncorrected"]
    for suffix in ("", "_raw") if with_replica and not s["uncorrected"] else ("_raw",):
        vals = np.array([s[f"{c}{suffix}"] for c in FRACTIONS], dtype=float)
        assert np.isfinite(vals).all() and (vals >= 0).all() and (vals <= 1).all(), (suffix, vals)
        assert vals.sum() == pytest.approx(1.0, abs=1e-9), suffix
    assert 0 <= s["split"] <= s["reuse_raw"] + 1e-12
    assert 0 <= s["base_coverage"] <= 1
    for c in FRACTIONS if with_replica and not s["uncorrected"] else (f"{c}_raw" for c in FRACTIONS):
        assert s[f"{c}_lo"] - 1e-9 <= s[f"{c}_hi"], c
        assert 0 <= s[f"{c}_lo"] and s[f"{c}_hi"] <= 1, c
    if with_replica:
        floors = np.array([s[f"{c}_floor"] for c in FRACTIONS], dtype=float)
        assert np.isfinite(floors).all() and floors.sum() == pytest.approx(1.0, abs=1e-9)


@PROPS
@given(pairs())
def test_compare_no_nan_where_a_quantity_is_defined(p):
    cmp = _compare(p.ref, p.tgt, p.k, p.x)
    s = cmp.summary.loc["rl"]
    assert s["n_scored"] > 0  # with k >= 1 some feature fires on 256 random tokens
    for col in [*DEFINED_WITH_ACTS, *_metric_names()]:
        assert np.isfinite(float(s[col])), col
    f = cmp.features
    reused = f["status"] == "reused"
    if reused.any():
        assert np.isfinite(s["drift"]) and np.isfinite(s["freq_shift"])
    for col in s.index:  # no inf anywhere
        v = s[col]
        assert not (isinstance(v, (float, np.floating)) and np.isinf(v)), col
    assert np.isfinite(f["frequency"]).all()
    matched = f["match"] >= 0
    assert np.isfinite(f.loc[matched, "similarity"]).all()
    assert np.isfinite(f.loc[reused, "drift"]).all() and f.loc[~reused, "drift"].isna().all()
    assert np.isfinite(f.loc[f["status"].isin(["reused", "split"]), "freq_shift"]).all()
    assert np.isfinite(f.loc[f["status"] == "recombined", "fit_cosine"]).all()
    assert (f.loc[f["status"] == "recombined", "n_components"] >= 2).all()
    num = f.select_dtypes("number")
    assert not np.isinf(num.to_numpy(float)).any()


# ------------------------------------------------------------------------------ every registered metric


@PROPS
@given(pairs(), st.randoms(use_true_random=False))
def test_every_registered_metric_is_invariant_to_feature_order_and_finite(p, rnd):
    names = _metric_names()
    assert {"mmcs", "svcca"} <= set(names)
    perm = np.array(rnd.sample(range(len(p.tgt)), len(p.tgt)))
    a = _compare(p.ref, p.tgt, p.k, p.x, W_enc=(p.ref.T, p.tgt.T), metrics=names)
    b = _compare(p.ref, p.tgt[perm], p.k, p.x, W_enc=(p.ref.T, p.tgt[perm].T), metrics=names)
    summary_cols = [n for n in names if n in a.summary.columns]
    for n in summary_cols:
        assert np.isfinite(a.summary.loc["rl", n]), n
        assert a.summary.loc["rl", n] == pytest.approx(b.summary.loc["rl", n], abs=1e-5), n
    feature_cols = [c for c in a.features.columns if c in names]  # per-feature metrics (Series results)
    for c in feature_cols:
        fa = a.features.set_index("feature").loc[perm, c].to_numpy(float)
        np.testing.assert_allclose(fa, b.features[c].to_numpy(float), atol=1e-5, err_msg=c)
