"""Known answers: SAEs trained with the library's defaults on activations from planted dictionaries recover
the planted fractions of reused, recombined and novel features (after the noise-floor correction), with
intervals that cover them; the estimators and intervals of featdiff.metrics.uncertainty on known inputs."""

import numpy as np
import pandas as pd
import pytest
import torch

import featdiff as fd
from featdiff.metrics.uncertainty import DEFAULT_ESTIMATOR, Profile, correct, summarize_uncertainty
from featdiff.synthetic import plant_checkpoints
from featdiff.synthetic.planted import known_answer_table

CASES = {
    "rl_vs_sft": (
        0,
        {
            "rl": {"reused": 0.8, "recombined": 0.1, "novel": 0.1},
            "sft": {"reused": 0.5, "recombined": 0.2, "novel": 0.3},
        },
    ),
    "extremes": (
        3,
        {
            "a": {"reused": 0.3, "recombined": 0.3, "novel": 0.4},
            "b": {"reused": 0.95, "recombined": 0.05, "novel": 0.0},
            "c": {"reused": 0.6, "recombined": 0.0, "novel": 0.4},
        },
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_default_pipeline_recovers_planted_fractions_within_01(case):
    seed, targets = CASES[case]
    planted = plant_checkpoints(d_in=32, targets=targets, seed=seed)
    train = planted.sample(100_000, seed=seed + 1)
    held_out = planted.sample(10_000, seed=seed + 2)
    saes = fd.train_saes(train, seed=seed, extra={"base_seed1": ("base", seed + 1)}, progress=False)
    replica = saes.pop("base_seed1")
    cmp = fd.compare_dictionaries(saes, held_out, replicas=[replica], progress=False)
    cols = ["reuse", "recombination", "novelty"]
    truth = planted.fractions.loc[list(targets)].to_numpy()
    corrected = cmp.summary.loc[list(targets), cols].to_numpy()
    raw = cmp.summary.loc[list(targets), [f"{c}_raw" for c in cols]].to_numpy()
    assert np.abs(corrected - truth).max() <= 0.1, cmp.summary[cols + ["noise_floor_reuse"]]
    # with the default min_contribution the raw fractions are already close, and the correction (one
    # replica here) keeps them so; scoring every latent that fires (DESIGN's "live"), the raw fractions
    # undercount reuse and the correction is what gets there
    assert np.abs(corrected - truth).mean() <= np.abs(raw - truth).mean() + 0.01
    assert 0.6 < cmp.summary["noise_floor_reuse"].iloc[0] < 1.0
    every = fd.compare_dictionaries(saes, held_out, replicas=[replica], progress=False, min_contribution=0)
    raw0 = every.summary.loc[list(targets), [f"{c}_raw" for c in cols]].to_numpy()
    corrected0 = every.summary.loc[list(targets), cols].to_numpy()
    assert np.abs(corrected0 - truth).max() <= 0.1
    assert np.abs(corrected0 - truth).mean() < np.abs(raw0 - truth).mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_saes_recover_fractions_within_002(seed):
    targets = {
        "rl": {"reused": 0.75, "recombined": 0.15, "novel": 0.1},
        "sft": {"reused": 0.45, "recombined": 0.25, "novel": 0.3},
    }
    planted = plant_checkpoints(d_in=32, targets=targets, seed=seed)
    saes = {n: fd.sae_from_dictionary(D, k=8) for n, D in planted.dictionaries.items()}
    cmp = fd.compare_dictionaries(saes, planted.sample(5000, seed=seed + 1), progress=False)
    got = cmp.summary[["reuse_raw", "recombination_raw", "novelty_raw"]].to_numpy()  # no replicas: raw only
    assert np.abs(got - planted.fractions.to_numpy()).max() <= 0.02


def test_recombine_from_kept_plants_absorbable_atoms():
    p = plant_checkpoints(d_in=32, recombine_from="kept", seed=0)
    t = p.truth[(p.truth.checkpoint == "sft") & (p.truth.status == "recombined")]
    kept = set(p.truth[(p.truth.checkpoint == "sft") & (p.truth.status == "reused")].atom)
    assert all({i for i, _ in comps} <= kept for comps in t.components)
    p2 = plant_checkpoints(d_in=32, seed=0)
    t2 = p2.truth[(p2.truth.checkpoint == "sft") & (p2.truth.status == "recombined")]
    kept2 = set(p2.truth[(p2.truth.checkpoint == "sft") & (p2.truth.status == "reused")].atom)
    assert all(not ({i for i, _ in comps} & kept2) for comps in t2.components)
    # a recombined atom is never "reused" by one of its components
    D, B = p2.dictionaries["sft"], p2.dictionaries["base"]
    for atom, comps in zip(t2.atom, t2.components, strict=True):
        assert max(float(D[atom] @ B[i]) for i, _ in comps) < 0.7


def test_planted_generator_rejects_bad_fractions():
    with pytest.raises(fd.FeatdiffError, match="sum to 1"):
        plant_checkpoints(targets={"rl": {"reused": 0.5, "novel": 0.3}})
    with pytest.raises(fd.FeatdiffError, match="recombine_from"):
        plant_checkpoints(recombine_from="nowhere")


def test_planted_categories_are_exact():
    targets = {
        "split": {"reused": 0.6, "split": 0.2, "recombined": 0.1, "novel": 0.1},
        "same": "identical",
        "disjoint": {"novel": 1.0},
    }
    p = plant_checkpoints(d_in=32, n_atoms=60, targets=targets, frequencies="power_law", seed=0)
    c = p.categories
    np.testing.assert_allclose(c.loc["split"], [0.6, 0.2, 0.1, 0.1])
    np.testing.assert_allclose(p.fractions.loc["split"], [0.8, 0.1, 0.1])  # split counts toward reuse
    assert torch.equal(p.dictionaries["same"], p.dictionaries["base"])
    np.testing.assert_allclose(p.fractions.loc["disjoint"], [0.0, 0.0, 1.0])
    B, S = p.dictionaries["base"], p.dictionaries["split"]
    t = p.truth[p.truth.checkpoint == "split"]
    for atom, src in zip(t[t.status == "split"].atom, t[t.status == "split"].source, strict=True):
        assert float(S[atom] @ B[src]) == pytest.approx(0.99, abs=1e-6)  # a near-duplicate of a base atom...
        assert t.set_index("atom").loc[src, "status"] == "reused"  # ...that the target keeps
    assert (B[list(t[t.status == "novel"].atom)] @ p.dictionaries["disjoint"].T).abs().max() < 1.0
    # power-law frequencies keep the mean activity and spread over more than an order of magnitude
    f = p.frequencies
    assert float(f.sum()) == pytest.approx(4.0, rel=1e-5) and float(f.max() / f.min()) > 20
    codes = p.codes(20_000)
    assert float((codes > 0).sum(1).float().mean()) == pytest.approx(4.0, rel=0.05)


def test_estimators_by_hand():
    raw, null = np.array([0.3, 0.1, 0.6]), np.array([0.6, 0.1, 0.3])
    # every estimator subtracts the recombination floor: a shared feature looks recombined with the null's
    # probability 0.1, so 0.5 * 0.1 of the raw 0.1 is not a recombination
    for est in ("ratio", "mixture"):
        np.testing.assert_allclose(correct(raw, null, est)[:3], [0.5, (0.1 - 0.05) / 0.6, 1 - 0.5 - 0.05 / 0.6])
    np.testing.assert_allclose(correct(raw, null, "symmetric", q_target=0.9)[0], 0.3 / np.sqrt(0.54))
    np.testing.assert_allclose(correct(raw, null, "union", union=(0.4, 0.8))[:2], [0.5, (0.1 - 0.05) / 0.6])
    r, c, n, sat = correct(np.array([0.7, 0.1, 0.2]), null, "ratio")
    assert (r, c, n) == pytest.approx((1.0, 0.0, 0.0)) and sat  # clipped, and it says so
    assert not correct(raw, null, "mixture")[3]


# what a feature of each true kind looks like, (status, union flag) -> probability: a shared feature with
# the base-vs-base profile (reused 0.8, recombined 0.05, novel 0.15; matched many-to-one in the base
# dictionaries 0.85 of the time, always when reused), a recombined one found with probability 0.8 (q_r)
_LOOKS = {
    "shared": {(0, 1): 0.8, (1, 0): 0.05, (2, 1): 0.05, (2, 0): 0.1},
    "recombined": {(1, 0): 0.8, (2, 0): 0.2},
    "novel": {(2, 0): 1.0},
}


def _profile(rng, n, truth, p_cov, d_mean):
    """The Profile of ``n`` features of true kinds ``truth`` (shared, recombined, novel), seen as _LOOKS says."""
    kinds = rng.choice(3, n, p=truth)
    status, union = np.empty(n, np.int8), np.empty(n)
    for k, looks in enumerate(_LOOKS.values()):
        sel = kinds == k
        outcome = rng.choice(len(looks), int(sel.sum()), p=list(looks.values()))
        status[sel] = np.array([o[0] for o in looks])[outcome]
        union[sel] = np.array([o[1] for o in looks])[outcome]
    n_reused = int((status == 0).sum())
    return Profile(
        status=status,
        covered=rng.random(n) < p_cov,
        drift=rng.normal(d_mean, 0.05, n_reused),
        freq_shift=np.abs(rng.normal(0.3, 0.2, n_reused)),
        union_reused=union,
    )


@pytest.mark.parametrize("estimator", ["union", "mixture"])
def test_intervals_cover_the_truth_of_simulated_draws(estimator):
    """Draws from known feature-level probabilities: the 90 % intervals of the default estimator (``union``)
    and of ``mixture`` cover the true values in about 90 % of 60 draws (>= 80 %), and are narrower with more
    features."""
    assert estimator in ("union", "mixture") and DEFAULT_ESTIMATOR == "union"
    rng = np.random.default_rng(0)
    truth = np.array([0.6, 0.2, 0.2])  # true fractions of the target
    hits = {c: 0 for c in ("reuse", "recombination", "novelty", "drift")}
    widths = {}
    for n in (300, 3000):
        for _ in range(60 if n == 300 else 5):
            tgt = _profile(rng, n, truth, 0.5, 0.1)
            reps = [_profile(rng, n, [1.0, 0.0, 0.0], 0.8, 0.05) for _ in range(2)]
            s = summarize_uncertainty(tgt, reps, seed=int(rng.integers(1 << 30)), estimator=estimator)
            if n == 300:
                for c, t in zip(("reuse", "recombination", "novelty", "drift"), (*truth, 0.1), strict=True):
                    hits[c] += s[f"{c}_lo"] <= t <= s[f"{c}_hi"]
            widths.setdefault(n, []).append(s["reuse_hi"] - s["reuse_lo"])
    assert all(h / 60 >= 0.8 for h in hits.values()), hits
    assert np.mean(widths[3000]) < 0.5 * np.mean(widths[300])


def _grid_cell(targets, seed, min_contribution=None, **plant):
    """One known-answer cell through the default pipeline (train_saes + compare_dictionaries with two
    reference replicas, as compare_checkpoints does), shortened: 300k samples instead of 1M."""
    p = plant_checkpoints(d_in=32, n_atoms=128, targets=targets, k=4, seed=seed, **plant)
    train, held_out = p.sample(60_000, seed=seed + 1), p.sample(10_000, seed=seed + 2)
    extra = {f"rep{i}": ("base", seed + 1 + i) for i in range(2)}
    saes = fd.train_saes(train, d_sae=128, k=4, seed=seed, extra=extra, n_samples=300_000, progress=False)
    reps = [saes.pop("rep0"), saes.pop("rep1")]
    kw = {} if min_contribution is None else {"min_contribution": min_contribution}
    cmp = fd.compare_dictionaries(saes, held_out, replicas=reps, metrics=[], progress=False, **kw)
    return cmp, known_answer_table(cmp.summary, p)


GRID = {
    # uniform frequencies; a mixed target, one identical to the base, one sharing nothing with it
    "mixed_identical_disjoint": (
        {
            "mixed": {"reused": 0.6, "recombined": 0.2, "novel": 0.2},
            "same": "identical",
            "disjoint": {"novel": 1.0},
        },
        {},
    ),
    # feature splitting: near-duplicates (cosine 0.99) of kept atoms count toward reuse, not novelty
    "split": ({"split": {"reused": 0.55, "split": 0.15, "recombined": 0.15, "novel": 0.15}}, {}),
}


@pytest.mark.slow
def test_grid_cell_mixed_identical_disjoint_within_tolerance_and_covered():
    cmp, t = _grid_cell(*GRID["mixed_identical_disjoint"][:1], seed=0)
    assert t["within"].all(), t
    assert t["covered"].mean() >= 0.8, t
    s = cmp.summary
    assert (s["reuse_floor"] == s["noise_floor_reuse"]).all() and s["reuse_floor"].between(0.5, 1).all()
    assert s.loc["same", "indistinguishable_from_reference"]
    assert not s.loc["disjoint", "indistinguishable_from_reference"]
    assert not s.loc["mixed", "indistinguishable_from_reference"]
    assert s.loc["disjoint", "reuse_hi"] < 0.1 and s.loc["disjoint", "base_coverage_hi"] < 0.1


@pytest.mark.slow
def test_grid_cell_split_counts_near_duplicates_as_reuse():
    # Known failures, not asserted (docs/metrics.md, the grid): recombination is found at about half its
    # planted 0.15 (its interval misses it) and novelty reads 0.25 against 0.15, just outside its tolerance.
    # Asserted: reuse within tolerance and covered, and novelty nearer the truth than when every latent that
    # fires is scored (0.30 then): the unused latents the SAE leaves are not scored (min_contribution).
    cmp, t = _grid_cell(*GRID["split"][:1], seed=0, min_contribution=0.01)
    t = t.set_index("category")
    assert t.loc["reuse", "within"] and t.loc["reuse", "covered"], t
    # few near-duplicates are learned apart: 9 latents called split when every latent is scored, 2 now
    assert cmp.summary.loc["split", "split"] > 0
    every = _grid_cell(*GRID["split"][:1], seed=0, min_contribution=0)[1].set_index("category")
    assert abs(t.loc["novelty", "error"]) < abs(every.loc["novelty", "error"]) - 0.03, (t, every)


def test_tolerance_is_relative_to_category_size():
    p = plant_checkpoints(
        d_in=16, n_atoms=40, targets={"rl": {"reused": 0.8, "recombined": 0.1, "novel": 0.1}}
    )
    s = pd.DataFrame({"reuse": [0.9], "recombination": [0.0], "novelty": [0.1]}, index=["rl"])
    t = known_answer_table(s, p).set_index("category")
    assert not t.loc["recombination", "within"]  # a category of 0.1 is not recovered at 0.0
    assert t.loc["reuse", "within"] and t.loc["novelty", "within"]


@pytest.mark.slow
def test_wide_sae_unused_latents_are_not_scored_as_novel():
    # The grid's width-2x cell (benchmarks/known_answer_grid.py): 128 latents for 64 planted atoms. The
    # latents that sit on no atom fire rarely and carry ~0.1 % of the decoded energy together; scored,
    # they read as novel (novelty ~0.44 against 0.16 planted). CompareConfig(min_contribution=0.01) leaves them
    # out; the default (0) keeps docs/design.md's "fired at least once".
    targets = {"mixed": {"reused": 0.7, "recombined": 0.15, "novel": 0.15}}
    p = plant_checkpoints(d_in=32, n_atoms=64, targets=targets, k=4, seed=0)
    train, held_out = p.sample(100_000, seed=1), p.sample(10_000, seed=2)
    extra = {f"rep{i}": ("base", 1 + i) for i in range(2)}
    saes = fd.train_saes(train, d_sae=128, k=4, seed=0, extra=extra, progress=False)
    reps = [saes.pop("rep0"), saes.pop("rep1")]
    cmp = fd.compare_dictionaries(
        saes, held_out, replicas=reps, metrics=[], progress=False, min_contribution=0.01
    )
    t = known_answer_table(cmp.summary, p)
    assert t["within"].all(), t
    assert t["covered"].mean() >= 0.8, t
    s = cmp.summary.loc["mixed"]
    assert s["n_dead"] + s["n_faint"] > 20  # the unused latents: counted, not scored
    assert s["n_faint"] > 0 and s["n_scored"] + s["n_faint"] + s["n_dead"] == s["n_features"]
    every = fd.compare_dictionaries(
        saes, held_out, replicas=reps, metrics=[], progress=False, min_contribution=0
    )
    t0 = known_answer_table(every.summary, p).set_index("category")
    assert not t0.loc["novelty", "within"], t0  # what scoring every latent that fires gives
