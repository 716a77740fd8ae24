"""The noise-floor estimators: unbiased where the floor is low, recomputable from printed columns, finite
with target replicas, and every bound flagged (featdiff.metrics.uncertainty, docs/metrics.md)."""

import numpy as np
import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.metrics.uncertainty import Profile, summarize_uncertainty, union_reused


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _learned(rng, features, q, n_junk, cosine=0.95):
    """An SAE that learned each of ``features`` with probability q (a noisy copy at ``cosine``) + junk rows."""
    kept = features[rng.random(len(features)) < q]
    noise = rng.standard_normal(kept.shape)
    noise -= (noise * kept).sum(-1, keepdims=True) * kept
    rows = np.concatenate([cosine * kept + np.sqrt(1 - cosine**2) * _unit(noise),
                           _unit(rng.standard_normal((n_junk, features.shape[1])))])
    return sae_from_dictionary(torch.tensor(rows[rng.permutation(len(rows))], dtype=torch.float32), k=4)


def _floor_case(q, n_replicas, reuse=0.6, n_learned=400, seed=0):
    """The issue's simulation: a target that shares ``reuse`` of its features with the base (the rest new
    directions), every dictionary learning each of its features with probability q."""
    rng = np.random.default_rng(seed)
    n_true = int(n_learned / q)
    base = _unit(rng.standard_normal((n_true, 128)))
    n_shared = int(reuse * n_true)
    own = np.concatenate([base[:n_shared], _unit(rng.standard_normal((n_true - n_shared, 128)))])
    saes = {"base": _learned(rng, base, q, 20), "target": _learned(rng, own, q, 20)}
    return saes, [_learned(rng, base, q, 20) for _ in range(n_replicas)]


def _old_union(saes, reps) -> float:
    """What the old design printed: the target matched against all N + 1 base dictionaries at once, over
    each replica against the N others."""
    rows = [sae.W_dec.detach() for sae in (saes["base"], *reps)]
    T = saes["target"].W_dec.detach()
    target = union_reused(T, np.ones(len(T), bool), rows, 0.7).mean()
    null = [
        union_reused(rows[i], np.ones(len(rows[i]), bool), rows[:i] + rows[i + 1 :], 0.7).mean()
        for i in range(1, len(rows))
    ]
    return float(target / np.mean(null))


def test_union_reuse_is_unbiased_where_matching_all_dictionaries_was_not():
    """N = 2, true reuse 0.6, q = 0.5: matched against the reference and both replicas (N + 1 dictionaries,
    the old design) the target read ~0.7 (inflation (1 - 0.5^3) / (1 - 0.5^2) = 1.17); matched against N of
    them, as each replica is, it reads 0.6 within the sampling noise, and its interval covers 0.6."""
    new, old = [], []
    for seed in (1, 2, 3):
        saes, reps = _floor_case(0.5, 2, seed=seed)
        s = fd.compare_dictionaries(saes, replicas=reps, metrics=[], progress=False).summary.loc["target"]
        assert s["reuse_lo"] <= 0.6 <= s["reuse_hi"]
        assert not s["saturated"] and not s["uncorrected"]
        new.append(s["reuse"])
        old.append(_old_union(saes, reps))
    assert np.mean(new) == pytest.approx(0.6, abs=0.04), new
    assert np.mean(old) > 0.67, old  # the old design, on the same dictionaries


def test_union_with_one_replica_is_defined():
    saes, reps = _floor_case(0.5, 1, seed=1)
    s = fd.compare_dictionaries(saes, replicas=reps, metrics=[], progress=False).summary.loc["target"]
    assert np.isfinite(s["reuse_union"]) and np.isfinite(s["reuse_union_floor"])
    assert s["reuse"] == pytest.approx(0.6, abs=0.08)


@pytest.mark.parametrize("estimator", ["union", "ratio", "mixture", "calibrated"])
def test_printed_fractions_recompute_from_printed_columns(estimator):
    """docs/metrics.md's formula per estimator, in summary columns only."""
    saes, reps = _floor_case(0.5, 2, seed=2)
    s = fd.compare_dictionaries(saes, replicas=reps, metrics=[], progress=False, estimator=estimator).summary
    s = s.loc["target"]
    q_r, q_c = s["reuse_floor"], s["recombination_floor"]
    r = s["reuse_union"] / s["reuse_union_floor"] if estimator == "union" else s["reuse_raw"] / q_r
    d = s["recombination_detection"] if estimator == "calibrated" else q_r
    c = (s["recombination_raw"] - r * q_c) / d
    r = min(max(r, 0.0), 1.0)
    c = min(max(c, 0.0), 1.0 - r)
    assert (s["reuse"], s["recombination"], s["novelty"]) == pytest.approx((r, c, 1 - r - c), abs=1e-12)


def test_target_replicas_give_finite_intervals():
    """A target's replicas carry their own union flags: no draw is NaN, the interval stays where the
    target's is (it was [0.29, 0.81] around 0.77 when their draws fell back to raw)."""
    rng = np.random.default_rng(3)
    saes, reps = _floor_case(0.5, 2, seed=3)
    base_like = [saes["target"]]  # a replica of the target: the target's features, learned again
    own = saes["target"].W_dec.detach().numpy()
    base_like.append(_learned(rng, _unit(own), 0.9, 5, cosine=0.97))
    one = fd.compare_dictionaries(saes, replicas=reps, metrics=[], progress=False).summary.loc["target"]
    two = fd.compare_dictionaries(
        saes, replicas={"base": reps, "target": base_like[1:]}, metrics=[], progress=False
    ).summary.loc["target"]
    assert np.isfinite([two["reuse_lo"], two["reuse_hi"]]).all()
    assert two["reuse_lo"] > one["reuse_lo"] - 0.1 and two["reuse_hi"] < one["reuse_hi"] + 0.1


def _profile(status, union=None):
    status = np.asarray(status, np.int8)
    return Profile(status, np.ones(4, bool), np.full(3, 0.1), np.full(3, 0.1), union)


def test_bounds_and_fallbacks_are_flagged():
    rng = np.random.default_rng(0)
    tgt = _profile(rng.choice(3, 300, p=[0.5, 0.1, 0.4]))
    # a floor of 0: no finite correction: no corrected reading (NaN), the raw one's interval, said so
    s = summarize_uncertainty(tgt, [_profile(np.full(300, 2))], estimator="ratio")
    assert s["uncorrected"] and not s["saturated"]
    assert np.isnan([s["reuse"], s["reuse_lo"], s["reuse_hi"], s["novelty"]]).all()
    assert s["reuse_raw_lo"] < tgt.fractions()[0] < s["reuse_raw_hi"]
    # raw above the floor: clipped at 1, the point and the interval's upper end say so
    s = summarize_uncertainty(tgt, [_profile(rng.choice(3, 300, p=[0.45, 0.05, 0.5]))], estimator="ratio")
    assert s["reuse"] == 1.0 and s["saturated"] and s["interval_saturated"] and not s["uncorrected"]
    # well inside: no flag
    s = summarize_uncertainty(tgt, [_profile(rng.choice(3, 300, p=[0.9, 0.0, 0.1]))], estimator="ratio")
    assert not (s["saturated"] or s["interval_saturated"] or s["uncorrected"])
    # no replicas: uncorrected, and nothing to tell the target from
    s = summarize_uncertainty(tgt, [])
    assert s["uncorrected"] and s["indistinguishable_from_reference"] is pd_na()


def pd_na():
    import pandas as pd

    return pd.NA


def test_indistinguishable_means_not_below_the_floor_beyond_noise():
    rng = np.random.default_rng(1)
    floor = [_profile(rng.choice(3, 400, p=[0.6, 0.0, 0.4])) for _ in range(2)]
    same = _profile(rng.choice(3, 400, p=[0.58, 0.0, 0.42]))  # within noise of the floor
    above = _profile(rng.choice(3, 400, p=[0.9, 0.0, 0.1]))  # a target closer than a replica: no change
    below = _profile(rng.choice(3, 400, p=[0.45, 0.0, 0.55]))  # clearly fewer reused
    read = {n: summarize_uncertainty(p, floor)["indistinguishable_from_reference"]
            for n, p in {"same": same, "above": above, "below": below}.items()}
    assert read == {"same": True, "above": True, "below": False}


def test_faint_latents_have_their_own_status_and_count():
    """A latent that fires but carries too little energy is ``faint`` (counted in n_faint, not scored);
    one that never fires is ``dead``."""
    W = torch.eye(8)
    saes = {"base": sae_from_dictionary(W, k=8), "rl": sae_from_dictionary(W, k=8)}
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(500, 8)
    x[:, :5] = torch.rand(500, 5, generator=g) + 0.5
    x[:, 5] = 1e-3 * torch.rand(500, generator=g)  # fires everywhere, negligible energy
    acts = fd.ActivationSet.from_tensors({"base": x, "rl": x.clone()})
    cmp = fd.compare_dictionaries(saes, acts, progress=False, metrics=[])
    st = cmp.features.set_index("feature")["status"].astype(str)
    assert st.loc[5] == "faint" and st.loc[6] == "dead" and st.loc[7] == "dead"
    s = cmp.summary.loc["rl"]
    assert (s["n_scored"], s["n_faint"], s["n_dead"]) == (5, 1, 2)
    assert s["reuse_raw"] == 1.0  # the fractions are over the 5 scored features


def test_report_marks_a_clipped_interval_end():
    import pandas as pd

    from featdiff.report.html import _with_interval

    row = pd.Series({"reuse": 0.95, "reuse_lo": 0.8, "reuse_hi": 1.0, "saturated": False, "interval_saturated": True})
    assert _with_interval(row, "reuse") == "0.950 [0.80, 1.00]*"
    assert _with_interval(row.drop("interval_saturated"), "reuse") == "0.950 [0.80, 1.00]"
