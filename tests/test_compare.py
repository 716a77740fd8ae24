import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import make_sae, planted_saes

from featdiff import FeatdiffError
from featdiff.comparison.config import CompareConfig
from featdiff.comparison.scoring import compare_dictionaries, correct_fractions
from featdiff.comparison.table import Comparison

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_dictionaries_recover_planted_fractions_within_002(seed):
    from featdiff.synthetic import plant_checkpoints

    targets = {
        "rl": {"reused": 0.85, "recombined": 0.05, "novel": 0.10},
        "sft": {"reused": 0.40, "recombined": 0.25, "novel": 0.35},
        "dpo": {"reused": 0.60, "recombined": 0.30, "novel": 0.10},
    }
    planted = plant_checkpoints(d_in=48, n_atoms=160, targets=targets, seed=seed)
    cmp = compare_dictionaries(planted_saes(planted), planted.sample(6000, seed=seed + 1), progress=False)
    assert cmp.summary[["reuse", "recombination", "novelty"]].isna().all().all()  # no replicas: no floor
    got = cmp.summary[["reuse_raw", "recombination_raw", "novelty_raw"]]
    want = planted.fractions.loc[got.index]
    assert np.abs(got.to_numpy() - want.to_numpy()).max() <= 0.02, (got, want)
    # per feature: the status of each planted atom is recovered
    truth = planted.truth.set_index(["checkpoint", "atom"])["status"]
    f = cmp.features.set_index(["checkpoint", "feature"])
    agree = (f["status"].astype(str) == truth.reindex(f.index)).mean()
    assert agree >= 0.98
    # recombined atoms name their true components
    rec = planted.truth[planted.truth.status == "recombined"].set_index(["checkpoint", "atom"])
    hits = [
        {i for i, _ in f.loc[key, "components"]} == {i for i, _ in comps}
        for key, comps in rec["components"].items()
        if f.loc[key, "status"] == "recombined"
    ]
    assert np.mean(hits) >= 0.95


def test_noise_floor_correction_by_hand():
    assert correct_fractions(0.3, 0.1, 0.6) == pytest.approx((0.5, 1 / 6, 1 / 3))
    assert correct_fractions(0.9, 0.1, 0.5) == pytest.approx((1.0, 0.0, 0.0))
    assert correct_fractions(0.3, 0.1, float("nan")) == pytest.approx((0.3, 0.1, 0.6))


def test_noise_floor_enters_the_summary(planted):
    saes = planted_saes(planted)
    acts = planted.sample(3000)
    # a replica that shares only half of the base atoms exactly
    D = planted.dictionaries["base"].clone()
    half = len(D) // 2
    D[half:] = torch.nn.functional.normalize(torch.randn(len(D) - half, D.shape[1]), dim=1)
    cmp = compare_dictionaries(saes, acts, replicas=[make_sae(D, k=8)], progress=False)
    nf = cmp.summary["noise_floor_reuse"]
    assert (nf > 0.45).all() and (nf < 0.6).all()
    s = cmp.summary
    # the default (union): the target's union share over the replicas' (docs/metrics.md)
    np.testing.assert_allclose(s["reuse"], np.minimum(1, s["reuse_union"] / s["reuse_union_floor"]))
    np.testing.assert_allclose(s[["reuse", "recombination", "novelty"]].sum(1), 1.0)
    s = compare_dictionaries(saes, acts, replicas=[make_sae(D, k=8)], progress=False, estimator="ratio").summary
    np.testing.assert_allclose(s["reuse"], np.minimum(1, s["reuse_raw"] / nf))


def test_round_trip_is_exact(planted, tmp_path):
    cmp = compare_dictionaries(planted_saes(planted), planted.sample(2000), progress=False)
    out = cmp.to_dir(tmp_path / "cmp")
    assert (out / "figures" / "comparison.png").stat().st_size > 1000
    meta = json.loads((out / "meta.json").read_text())
    assert meta["reference"] == "base" and meta["format_version"] == 1
    back = Comparison.load(out)
    pd.testing.assert_frame_equal(cmp.summary, back.summary, check_exact=True)
    pd.testing.assert_frame_equal(cmp.features, back.features, check_exact=True)
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_plot_has_status_bars_and_drift_histograms(planted):
    import matplotlib.pyplot as plt

    cmp = compare_dictionaries(planted_saes(planted), planted.sample(2000), progress=False)
    fig = cmp.plot()
    ax0, ax1 = fig.axes[:2]
    assert len(ax0.patches) == 3 * 2  # 3 statuses x 2 checkpoints
    heights = [p.get_height() for p in ax0.patches]
    assert heights[0] == pytest.approx(cmp.summary["reuse_raw"].iloc[0])  # no floor: the bar is raw
    assert ax1.has_data()
    plt.close(fig)


def test_saved_plot_keeps_its_labels_and_legends_inside(planted, tmp_path):
    """cmp.plot() saved as is (no bbox_inches) shows every axis label, title and legend whole."""
    import matplotlib.pyplot as plt

    cmp = compare_dictionaries(planted_saes(planted), planted.sample(2000), progress=False)
    fig = cmp.plot()
    fig.savefig(tmp_path / "cmp.png")
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    parts = [t for ax in fig.axes for t in (ax.xaxis.label, ax.yaxis.label, ax.title, ax.get_legend()) if t]
    assert any(p is fig.axes[1].xaxis.label and "drift" in p.get_text() for p in parts)
    for p in parts:
        e = p.get_window_extent(renderer)
        assert box.x0 <= e.x0 and e.x1 <= box.x1 and box.y0 <= e.y0 and e.y1 <= box.y1, (p, e, box)
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    label = fig.axes[1].xaxis.label.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted())
    assert tight.x0 <= label.x0 and label.x1 <= tight.x1 and label.x1 <= fig.get_figwidth()
    plt.close(fig)


def test_matching_on_activations_agrees_with_decoder_on_planted(planted):
    saes = planted_saes(planted)
    acts = planted.sample(4000)
    dec = compare_dictionaries(saes, acts, progress=False)
    act = compare_dictionaries(saes, acts, on="activations", progress=False)
    # activation matching pairs each target atom with the base atom of its slot
    f = act.features[act.features.checkpoint == "rl"]
    live = f[f.status != "dead"]
    assert (live["match"] == live["feature"]).mean() > 0.95
    assert act.meta["config"]["on"] == "activations"
    assert not dec.summary.equals(act.summary)


def test_bad_inputs_raise(planted, tmp_path):
    saes = planted_saes(planted)
    with pytest.raises(FeatdiffError, match="reference"):
        compare_dictionaries(saes, reference="chat", progress=False)
    with pytest.raises(FeatdiffError, match="Unknown metric 'drfit'"):
        compare_dictionaries(saes, metrics=["drfit"], progress=False)
    with pytest.raises(FeatdiffError, match="missing checkpoints"):
        compare_dictionaries(saes, planted.sample(100).select(["base"]), progress=False)
    with pytest.raises(FeatdiffError, match="Unknown CompareConfig keys"):
        CompareConfig.from_dict({"reuse_treshold": 0.5})
    with pytest.raises(FeatdiffError, match="method"):
        CompareConfig(method="greedy")
    with pytest.raises(FeatdiffError, match="not a Comparison folder"):
        Comparison.load(tmp_path)


def test_custom_metric_example_runs():
    import featdiff as fd

    try:
        ns = runpy.run_path(str(ROOT / "examples" / "custom_metric.py"), run_name="__main__")
    finally:
        for name in ("sharpness", "code_correlation"):
            if name in fd.available_metrics().index:
                fd.unregister_metric(name)
    cmp = ns["cmp"]
    assert "sharpness" in cmp.summary.columns and "code_correlation" in cmp.features.columns
    assert cmp.summary["sharpness"].between(0, 1).all()
    f = cmp.features
    reused = f.loc[f.status == "reused", "code_correlation"]
    novel = f.loc[f.status == "novel", "code_correlation"]
    # a reused feature fires on the tokens its base feature fired on; a novel one does not
    assert reused.notna().all() and reused.mean() > 0.5 and reused.mean() > novel.mean() + 0.3


def test_register_metric_rejects_duplicates_and_bad_returns(planted):
    import featdiff as fd

    @fd.register_metric("bad_metric")
    def bad_metric(ctx):
        return "oops"

    try:
        with pytest.raises(FeatdiffError, match="already registered"):
            fd.register_metric("bad_metric", fn=lambda ctx: 1.0)
        with pytest.raises(FeatdiffError, match="must return a float"):
            compare_dictionaries(planted_saes(planted), progress=False)
    finally:
        fd.unregister_metric("bad_metric")
    with pytest.raises(FeatdiffError, match="Unknown metric"):
        fd.unregister_metric("bad_metric")


def test_more_bad_inputs_name_the_problem(planted, tmp_path):
    import featdiff as fd

    saes = planted_saes(planted)
    cmp = compare_dictionaries(saes, planted.sample(500), progress=False)
    out = cmp.to_dir(tmp_path / "cmp", figures=False)
    (out / "features.parquet").write_bytes(b"not parquet")
    with pytest.raises(FeatdiffError, match="Cannot read the Comparison folder"):
        Comparison.load(out)
    with pytest.raises(FeatdiffError, match="must be a number"):
        CompareConfig(reuse_threshold="0.7")

    @fd.register_metric("reuse_raw")
    def clashing(ctx):
        return 0.5

    try:
        with pytest.raises(FeatdiffError, match="would overwrite the summary columns"):
            compare_dictionaries(saes, progress=False)
    finally:
        fd.unregister_metric("reuse_raw")
    wide = {n: make_sae(torch.eye(48), k=4) for n in ("base", "rl")}
    with pytest.raises(FeatdiffError, match="'base' has d_in=48 but its activations have d_model=32"):
        compare_dictionaries(wide, planted.sample(200), progress=False)


def test_replicas_give_intervals_floors_and_the_reference_counts(planted):
    from featdiff.comparison.table import UNCERTAINTY_COLUMNS

    saes = planted_saes(planted)
    acts = planted.sample(3000)
    # two replicas of the base that each share all but a quarter of its atoms exactly
    reps = []
    for seed in (1, 2):
        D = planted.dictionaries["base"].clone()
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(D), generator=g)[: len(D) // 4]
        D[idx] = torch.nn.functional.normalize(torch.randn(len(idx), D.shape[1], generator=g), dim=1)
        reps.append(make_sae(D, k=8))
    cmp = compare_dictionaries(saes, acts, replicas=reps, progress=False)
    s = cmp.summary
    assert set(UNCERTAINTY_COLUMNS) <= set(s.columns)
    assert cmp.meta["interval_level"] == 0.9 and cmp.meta["n_replicas"] == {"base": 2}
    np.testing.assert_allclose(s["reuse_floor"], s["noise_floor_reuse"])
    assert s["reuse_floor"].between(0.7, 0.8).all()  # 3/4 of the atoms shared, a few more by chance
    for col in ("reuse", "recombination", "novelty", "base_coverage", "drift", "transfer_fve"):
        assert (s[f"{col}_lo"] <= s[col] + 1e-9).all() and (s[col] <= s[f"{col}_hi"] + 1e-9).all(), col
    assert (s["reuse_hi"] - s["reuse_lo"]).between(0.01, 0.4).all()
    np.testing.assert_allclose(s["transfer_fve_floor"], s["reference_fve"])
    assert (s["reference_n_scored"] + s["reference_n_dead"] == planted.n_atoms).all()
    np.testing.assert_allclose(s[["reuse", "recombination", "novelty"]].sum(1), 1.0)
    with pytest.raises(FeatdiffError, match="replicas"):
        compare_dictionaries(saes, acts, replicas={"dpo": reps}, progress=False)
