"""The narrow-reference diagnostic (featdiff.metrics.coverage, featdiff.comparison.diagnostics): a reference SAE that
lacks features of its own activations is detected through the targets' latents that fire on the
reference's activations but have no match in its dictionary."""

from __future__ import annotations

import json
import types
import warnings

import pandas as pd
import pytest
import torch

import featdiff as fd
from featdiff.comparison.diagnostics import diagnose
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.errors import FeatdiffWarning
from featdiff.metrics.coverage import paired_correlation, reference_misses
from featdiff.synthetic import plant_checkpoints
from featdiff.synthetic.planted import known_answer_table

NARROW = "lacks features of its own activations"


def _cmp(misses: dict, q: float):
    s = pd.DataFrame(
        {"n_features": [64], "n_scored": [64], "n_dead": [0], "reuse_floor": [q]},
        index=pd.Index(["rl"], name="checkpoint"),
    )
    return types.SimpleNamespace(summary=s, meta={"reference": "base", "reference_misses": {"rl": misses}})


def test_narrow_reference_message_needs_an_excess_over_the_floor_and_significance():
    # 8 of 24 base-present latents missed against 17 % between replicas: 16 points over, p = 0.04
    (msg,) = diagnose(_cmp({"n_present": 24, "n_missed": 8}, q=0.83))
    assert msg.startswith("rl: 8 of its 24 features that also fire on base's own activations (33%)")
    assert "against 17% between base SAEs" in msg and "larger d_sae" in msg and NARROW in msg
    assert diagnose(_cmp({"n_present": 24, "n_missed": 6}, q=0.83)) == []  # 8 points over: within 0.1
    assert diagnose(_cmp({"n_present": 4, "n_missed": 2}, q=0.9)) == []  # 40 points over, p = 0.05: too few
    assert diagnose(_cmp({"n_present": 200, "n_missed": 110}, q=0.45)) == []  # a low floor explains it
    assert diagnose(_cmp({"n_present": 24, "n_missed": 8}, q=0.83), max_missed_excess=0.2) == []
    assert diagnose(_cmp({"n_present": 0, "n_missed": 0}, q=0.83)) == []
    # the reference reconstructs the missed latents' energy (the lab's SFT: 2 % left): variants it holds
    assert diagnose(_cmp({"n_present": 166, "n_missed": 128, "missed_unexplained": 0.02}, q=0.51)) == []
    (msg,) = diagnose(_cmp({"n_present": 24, "n_missed": 8, "missed_unexplained": 0.16}, q=0.83))
    assert "leaves 16% of their energy in its activations unreconstructed" in msg


def test_reference_misses_counts_present_latents_without_a_match():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, generator=g) * (torch.rand(500, 3, generator=g) < 0.3)
    y = x.clone()
    y[:, 2] = x[torch.randperm(500, generator=g), 2]  # feature 2 fires on other tokens in the target
    sae = sae_from_dictionary(torch.eye(3), k=3)
    corr = paired_correlation(sae, y, x)
    assert corr[0] == pytest.approx(1.0) and corr[1] == pytest.approx(1.0) and abs(corr[2]) < 0.2
    m = reference_misses(sae, y, x, {0: "reused", 1: "novel", 2: "novel"}, reference_sae=sae)
    assert (m["n_present"], m["n_missed"]) == (2, 1)  # latent 2 is not in the reference's activations
    assert m["missed_unexplained"] == pytest.approx(0.0, abs=1e-6)  # the reference reconstructs latent 1
    half = sae_from_dictionary(torch.eye(3)[[0, 2]], k=2)  # a reference without latent 1
    assert reference_misses(sae, y, x, {1: "novel"}, reference_sae=half)["missed_unexplained"] == pytest.approx(1.0)
    assert reference_misses(sae, y, x, {0: "dead", 1: "reused", 2: "novel"})["n_present"] == 1


def _planted_warnings(d_sae: int, seed: int = 0) -> tuple[list[str], dict]:
    targets = {
        "mixed": {"reused": 0.7, "recombined": 0.15, "novel": 0.15},
        "sft_like": {"reused": 0.45, "recombined": 0.2, "novel": 0.35},
    }
    p = plant_checkpoints(d_in=32, n_atoms=64, targets=targets, k=4, seed=seed)
    train, held_out = p.sample(100_000, seed=seed + 1), p.sample(10_000, seed=seed + 2)
    # the grid's planting (two targets); only the mixed target's SAE is trained and compared
    train = fd.ActivationSet({n: train.acts[n] for n in ("base", "mixed")})
    held_out = fd.ActivationSet({n: held_out.acts[n] for n in ("base", "mixed")})
    extra = {f"rep{i}": ("base", seed + 1 + i) for i in range(2)}
    # the sae-lens engine: the batched default misses as many (8 of 24, 15 % unexplained) but its base
    # replicas' floor leaves 33 % within the check's margin at seed 0 (issue 18; docs/metrics.md's grid)
    saes = fd.train_saes(train, d_sae=d_sae, k=4, seed=seed, extra=extra, progress=False, engine="sae-lens")
    reps = [saes.pop("rep0"), saes.pop("rep1")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = fd.compare_dictionaries(saes, held_out, replicas=reps, metrics=[], progress=False)
    issued = [str(w.message) for w in caught if issubclass(w.category, FeatdiffWarning)]
    assert [w for w in issued if NARROW in w] == [w for w in cmp.meta["warnings"] if NARROW in w]
    return [w for w in cmp.meta["warnings"] if NARROW in w], cmp.meta["reference_misses"]["mixed"]


@pytest.mark.slow
def test_narrow_reference_warns_at_half_the_planted_width():
    # 32 latents for 64 planted atoms: the base SAE holds ~30 % of the atoms; the target's SAE learns base
    # atoms the reference lacks (docs/metrics.md, the known-answer grid: 8 of 24 missed against 17 %)
    narrow, m = _planted_warnings(32)
    assert len(narrow) == 1 and narrow[0].startswith("mixed: "), narrow
    assert m["n_missed"] / m["n_present"] > 0.25 and m["missed_unexplained"] > 0.1, m


@pytest.mark.slow
def test_narrow_reference_is_silent_at_the_planted_width():
    wide, m = _planted_warnings(64)
    assert wide == [], wide
    assert m["n_missed"] / m["n_present"] < 0.12 and m["n_present"] > 30, m


@pytest.mark.slow
def test_compare_activations_widens_a_narrow_reference_and_then_reads_the_planted_answer():
    # the known-answer grid's width-0.5x cell through the library's route: 32 latents for 64 planted atoms
    # cannot tell recombination from novelty (docs/metrics.md), so the SAEs are trained again at 64
    targets = {
        "mixed": {"reused": 0.7, "recombined": 0.15, "novel": 0.15},
        "sft_like": {"reused": 0.45, "recombined": 0.2, "novel": 0.35},
    }
    p = plant_checkpoints(d_in=32, n_atoms=64, targets=targets, k=4, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = fd.compare_activations(
            p.sample(100_000, seed=1), held_out=p.sample(10_000, seed=2), d_sae=32, k=4, metrics=[], progress=False,
            train_kwargs={"engine": "sae-lens"},  # calibrated on it; under the batched default the check widens
        )  # (reduction 0.45) but does not name the narrow target: a recalibration issue 18 leaves open
    (w,) = cmp.meta["widened"]
    assert w["d_sae"] == 32 and w["narrow"] == ["mixed"] and w["unexplained_reduction"] > 0.3, w
    assert w["reference_scored_share"] >= 0.9, w
    assert cmp.meta["sae"]["d_sae"] == 64 and cmp.dictionaries["mixed"].cfg.d_sae == 64
    assert any("tables are at d_sae 64" in str(m.message) for m in caught)
    assert cmp.meta["warnings"][0].startswith("d_sae 32 was too narrow")
    t = known_answer_table(cmp.summary, p)
    assert t.within.all(), t  # at 32 recombination read 0.03 against 0.156 (the grid, seed 0)


def test_widen_trains_every_sae_again_at_twice_the_width(monkeypatch, tmp_path):
    import featdiff.comparison.diagnostics as diagnostics

    calls = []
    monkeypatch.setattr(diagnostics, "narrow_reference", lambda cmp: calls.append(1) or {"rl": "narrow"})
    g = torch.Generator().manual_seed(0)
    acts = fd.ActivationSet.from_tensors({"base": torch.randn(600, 8, generator=g), "rl": torch.randn(600, 8, generator=g)})
    kw = dict(d_sae=16, k=2, n_replicas=1, metrics=[], progress=False, train_kwargs={"n_steps": 20, "batch_size": 64})
    with pytest.warns(FeatdiffWarning, match="tables are at d_sae 64"):
        cmp = fd.compare_activations(acts, widen=2, **kw)
    assert len(calls) == 2  # checked at 16 and 32, widened both times; 64 is the last round
    assert [(w["d_sae"], w["narrow"]) for w in cmp.meta["widened"]] == [(16, ["rl"]), (32, ["rl"])]
    rounds = cmp.meta["width_check"]  # every round, the last (unchecked) one too
    assert [(r["round"], r["d_sae"], r.get("probe_d_sae")) for r in rounds] == [(0, 16, 32), (1, 32, 64), (2, 64, None)]
    assert [r["decision"] for r in rounds] == [
        "widen to d_sae 32 (narrow reference: rl)",
        "widen to d_sae 64 (narrow reference: rl)",
        "last round: no check",
    ]
    for r in rounds:  # each round's cost and its readings at that width
        assert r["wall_s"] == pytest.approx(r["train_s"] + r["score_s"] + r.get("probe_s", 0.0)) and r["wall_s"] > 0
        assert set(r["summary"]) == {"rl"} and 0 <= r["summary"]["rl"]["reuse_raw"] <= 1
    assert rounds[-1]["summary"]["rl"] == {c: float(cmp.summary.loc["rl", c]) for c in rounds[-1]["summary"]["rl"]}
    assert cmp.meta["width_check_config"] == fd.WidthCheck().to_dict()
    back = fd.Comparison.load(cmp.to_dir(tmp_path / "report", figures=False))  # meta.json keeps them
    assert back.meta["widened"] == cmp.meta["widened"] and back.meta["width_check"] == cmp.meta["width_check"]
    assert {s.cfg.d_sae for s in [*cmp.dictionaries.values(), *cmp.extras["replica_saes"]["base"]]} == {64}
    calls.clear()
    kept = fd.compare_activations(acts, widen=0, **kw)
    assert kept.meta["sae"]["d_sae"] == 16 and "widened" not in kept.meta and not calls  # no check at all
    assert "width_check" not in kept.meta
    with pytest.raises(fd.FeatdiffError, match="'widen' parameter of compare_activations must be an integer >= 0"):
        fd.compare_activations(acts, widen=-1, **kw)
    with pytest.raises(fd.FeatdiffError, match="no checkpoint 'sft'"):
        fd.compare_activations(acts, reference="sft", **kw)


def test_width_check_thresholds_are_settable(monkeypatch):
    import featdiff.comparison.diagnostics as diagnostics

    calls = []
    monkeypatch.setattr(diagnostics, "narrow_reference", lambda cmp: calls.append(1) or {"rl": "narrow"})
    g = torch.Generator().manual_seed(0)
    acts = fd.ActivationSet.from_tensors({"base": torch.randn(600, 8, generator=g), "rl": torch.randn(600, 8, generator=g)})
    kw = dict(d_sae=16, k=2, n_replicas=0, metrics=[], progress=False, train_kwargs={"n_steps": 20, "batch_size": 64})
    # the narrow-reference trigger off, and no reduction is enough: the width kept
    never = fd.WidthCheck(min_scored=1.0, min_reduction=1.0, narrow_reference=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = fd.compare_activations(acts, config=fd.CompareConfig(width_check=never), **kw)
    assert not [w for w in caught if "too narrow" in str(w.message)]  # no widening
    (r,) = cmp.meta["width_check"]
    live = r["reference_scored_share"]
    assert not calls and cmp.meta["sae"]["d_sae"] == 16 and r["narrow"] == []
    if live < 1.0:  # below min_scored: no probe
        assert r["decision"] == "keep: scored share below min_scored=1" and r["probe_d_sae"] is None
    else:
        assert r["decision"].startswith("keep: unexplained-variance reduction") and r["probe_d_sae"] == 32
    assert cmp.meta["width_check_config"] == never.to_dict()
    # every scored share probes (min_scored=0); a reduction of 100 % is never reached: probed, not widened
    probe_all = {"min_scored": 0.0, "min_reduction": 1.0, "narrow_reference": False, "factor": 3}
    probed = fd.compare_activations(acts, config=fd.CompareConfig(width_check=probe_all), **kw)
    (r,) = probed.meta["width_check"]
    assert r["probe_d_sae"] == 48 and r["unexplained_reduction"] < 1.0 and probed.meta["sae"]["d_sae"] == 16
    assert r["decision"] == "keep: unexplained-variance reduction below min_reduction=1"
    assert r["wall_s"] == pytest.approx(r["train_s"] + r["score_s"] + r["probe_s"]) and r["probe_s"] > 0
    # any reduction is enough (min_reduction=0): widened by the factor, the probe kept as the reference SAE
    with pytest.warns(FeatdiffWarning, match="3 times as wide"):
        wide = fd.compare_activations(
            acts, config=fd.CompareConfig(width_check=fd.WidthCheck(**{**probe_all, "min_reduction": 0.0})), **kw
        )
    assert wide.meta["sae"]["d_sae"] == 48 and [r["d_sae"] for r in wide.meta["width_check"]] == [16, 48]
    assert wide.meta["width_check"][0]["reference_fve"] == pytest.approx(probed.meta["width_check"][0]["reference_fve"])
    for bad, match in (({"min_scored": 1.5}, "min_scored"), ({"factor": 1}, "factor"), ({"narrow_reference": "yes"}, "narrow_reference")):
        with pytest.raises(fd.FeatdiffError, match=match):
            fd.WidthCheck(**bad)
    with pytest.raises(fd.FeatdiffError, match="Unknown WidthCheck keys"):
        fd.CompareConfig(width_check={"min_lve": 0.5})
    with pytest.raises(fd.FeatdiffError, match="'width_check' parameter of CompareConfig must be a WidthCheck"):
        fd.CompareConfig(width_check=2)
    # nested in CompareConfig, the width check round-trips through plain JSON types
    cfg = fd.CompareConfig(width_check=never)
    assert fd.CompareConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["width_check"] == never.to_dict() and fd.CompareConfig().width_check == fd.WidthCheck()
