"""The metric tables: pinned columns, properties that every metric must have, and slow references."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import make_sae, planted_saes

from featdiff import FeatdiffError
from featdiff.alignment.matching import align
from featdiff.comparison.scoring import compare_dictionaries
from featdiff.comparison.table import FEATURE_COLUMNS, SUMMARY_COLUMNS
from featdiff.metrics.recombination import omp, recombination
from featdiff.metrics.registry import available_metrics
from featdiff.metrics.reuse import base_coverage, drift, reuse


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_tables_have_pinned_columns(planted):
    W = unit(torch.randn(10, 8))
    al = align(W, W)
    assert list(reuse(al).columns) == ["feature", "match", "similarity", "reused"]
    assert list(drift(al).columns) == ["feature", "match", "drift", "freq_shift"]
    assert list(recombination(al).columns) == [
        "feature",
        "recombined",
        "n_components",
        "fit_cosine",
        "components",
    ]
    cmp = compare_dictionaries(planted_saes(planted), planted.sample(2000), progress=False)
    assert list(cmp.features.columns[: len(FEATURE_COLUMNS)]) == FEATURE_COLUMNS
    assert list(cmp.summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert list(cmp.summary.index) == ["rl", "sft"]
    assert cmp.features["feature"].dtype == np.int64
    assert set(cmp.features["status"].unique()) <= {"reused", "recombined", "novel", "dead"}


def test_an_sae_against_itself_is_fully_reused_with_zero_drift(planted):
    sae = make_sae(planted.dictionaries["base"], k=8)
    acts = planted.sample(3000).select(["base"])
    pair = type(acts)({"base": acts["base"], "copy": acts["base"]})
    cmp = compare_dictionaries({"base": sae, "copy": sae}, pair, progress=False)
    row = cmp.summary.loc["copy"]
    assert row["reuse_raw"] == 1.0 and row["novelty_raw"] == 0.0 and row["recombination_raw"] == 0.0
    assert row["drift"] == pytest.approx(0.0, abs=1e-6)
    assert row["freq_shift"] == pytest.approx(0.0, abs=1e-9)
    assert row["base_coverage"] == 1.0
    assert row["transfer_fve"] == pytest.approx(row["reference_fve"])
    for name in available_metrics().index:  # every registered metric is finite on the identity case
        assert np.isfinite(row[name]), name


def test_permuting_target_features_permutes_rows_and_nothing_else(planted):
    saes = planted_saes(planted)
    acts = planted.sample(3000)
    perm = torch.randperm(planted.n_atoms)
    permuted = dict(saes)
    permuted["rl"] = make_sae(planted.dictionaries["rl"][perm], k=8)
    a = compare_dictionaries(saes, acts, progress=False)
    b = compare_dictionaries(permuted, acts, progress=False)
    pd.testing.assert_frame_equal(a.summary, b.summary, check_exact=False, rtol=1e-6)
    fa = a.features[a.features.checkpoint == "rl"].set_index("feature")
    fb = b.features[b.features.checkpoint == "rl"].set_index("feature")
    fb.index = pd.Index(perm.numpy()[fb.index], name="feature")
    fb = fb.sort_index()
    cols = ["status", "match", "similarity", "drift", "freq_shift", "n_components"]
    pd.testing.assert_frame_equal(fa[cols], fb[cols], check_exact=False, rtol=1e-5)


def test_drift_and_frequency_shift_by_hand():
    ref = torch.eye(3)
    tgt = torch.tensor([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    d = drift(align(ref, tgt), torch.tensor([0.1, 0.2, 0.4]), torch.tensor([0.2, 0.2, 0.2]), eps=0.0)
    assert d["match"].tolist() == [0, 2, 1]
    np.testing.assert_allclose(d["drift"], [0.2, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(d["freq_shift"], [np.log(2), np.log(2), 0.0], atol=1e-6)
    assert base_coverage(align(ref, tgt)) == 1.0
    assert base_coverage(align(ref, tgt[:1])) == pytest.approx(1 / 3)


def _omp_reference(x, atoms, m):
    """Slow, obvious OMP: greedy selection, least squares over the chosen atoms at every step."""
    chosen, r = [], x.copy()
    for _ in range(m):
        scores = np.abs(atoms @ r)
        scores[chosen] = -1
        chosen.append(int(scores.argmax()))
        c, *_ = np.linalg.lstsq(atoms[chosen].T, x, rcond=None)
        r = x - atoms[chosen].T @ c
    fit = atoms[chosen].T @ c
    return chosen, c, fit @ x / (np.linalg.norm(fit) * np.linalg.norm(x))


def test_batched_omp_matches_the_slow_reference():
    atoms = unit(torch.randn(30, 12))
    x = torch.randn(20, 12)
    idx, coef, cos = omp(x, atoms, 3)
    for i in range(20):
        chosen, c, cs = _omp_reference(x[i].double().numpy(), atoms.double().numpy(), 3)
        assert idx[i].tolist() == chosen
        np.testing.assert_allclose(coef[i, 2, :3], c, atol=1e-8)
        assert cos[i, 2] == pytest.approx(cs, abs=1e-10)


def test_recombination_lists_components_with_coefficients():
    ref = unit(torch.randn(20, 16))
    combo = 0.9 * ref[3] + 0.8 * ref[7] + 0.7 * ref[11]
    tgt = torch.cat([ref[:3], combo[None]])
    rc = recombination(align(ref, tgt)).set_index("feature")
    assert rc.loc[3, "recombined"] and rc.loc[3, "n_components"] == 3
    comps = dict(rc.loc[3, "components"])
    assert set(comps) == {3, 7, 11}
    norm = float(combo.norm())
    np.testing.assert_allclose([comps[3], comps[7], comps[11]], np.array([0.9, 0.8, 0.7]) / norm, atol=1e-5)
    assert not rc.loc[0, "recombined"]  # reused rows are never recombined


def test_brute_force_agrees_on_two_component_recombination():
    """Targets that no single reference row reuses: OMP calls them recombined exactly when the best
    2- or 3-row fit (brute force over all subsets) reaches the 0.9 threshold and no 1-row fit does."""
    ref = unit(torch.randn(12, 24))
    tgt = unit(
        torch.stack(
            [
                ref[1] + ref[4] + 0.9 * ref[7],  # three rows: recombined
                ref[2] - 0.9 * ref[9] + 0.8 * ref[10],  # negative coefficients count too
                ref[0] + ref[3] + ref[5] + ref[6],  # four rows: no fit by three reaches 0.9
                torch.randn(24),  # a new direction
            ]
        )
    )
    al = align(ref, tgt, method="max")
    rc = recombination(al, fit_threshold=0.9)
    A, X = ref.double().numpy(), tgt.double().numpy()
    checked = []
    for j in np.flatnonzero(al.similarity < 0.7):
        best = {
            m: max(_omp_cos(X[j], A[list(c)]) for c in itertools.combinations(range(12), m))
            for m in (1, 2, 3)
        }
        want = best[1] < 0.9 and max(best[2], best[3]) >= 0.9
        if abs(max(best[2], best[3]) - 0.9) > 0.02:  # greedy OMP may differ from brute force at the margin
            assert rc.loc[j, "recombined"] == want, j
            checked.append(want)
    assert True in checked and False in checked


def _omp_cos(x, atoms):
    c, *_ = np.linalg.lstsq(atoms.T, x, rcond=None)
    fit = atoms.T @ c
    return fit @ x / (np.linalg.norm(fit) * np.linalg.norm(x))


def test_nan_activations_raise():
    from featdiff.activations.activations import ActivationSet

    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    with pytest.raises(FeatdiffError, match="NaN"):
        ActivationSet.from_tensors({"base": x})
