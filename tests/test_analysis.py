"""Tests of featdiff.analyses.crosscoder_view: the crosscoder view of a (small) lab."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from featdiff.analyses.crosscoder_view import (
    FIGURE_NAMES,
    META_FILE,
    TABLE_COLUMNS,
    CrosscoderView,
    CrosscoderViewConfig,
    crosscoder_view,
)
from featdiff.errors import FeatdiffError


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    import dataclasses

    from featdiff.lab import LabConfig, build

    # 160 eval prompts per task (32 in LabConfig.small(); the build's cost is the training, not this) give
    # the small lab a few critical samples per task, enough to split into selection and held-out parts
    c = LabConfig.small()
    c = dataclasses.replace(c, tasks=dataclasses.replace(c.tasks, n_eval=160))
    return build(c, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def view(lab_dir) -> CrosscoderView:
    return crosscoder_view(lab_dir, CrosscoderViewConfig.small(), progress=False)


@pytest.fixture(scope="module")
def critical_task(lab_dir) -> str:
    """The small lab's task with the most critical samples (base wrong, rl right)."""
    from featdiff.lab import accuracy

    c = accuracy(lab_dir, "samples")
    w = c.pivot_table(index=["task", "sample"], columns="checkpoint", values="correct", aggfunc="first")
    counts = (~w["base"].astype(bool) & w["rl"].astype(bool)).groupby(level="task").sum()
    if counts.max() == 0:
        pytest.skip("the small lab has no critical sample on any task")
    return str(counts.idxmax())


@pytest.fixture(scope="module")
def edited_view(lab_dir, critical_task) -> CrosscoderView:
    cfg = CrosscoderViewConfig.small().replace(generalization_tasks=(critical_task,), evolution="none")
    return crosscoder_view(lab_dir, cfg, progress=False, seed=1)


# ---- config --------------------------------------------------------------------------------------


def test_config_round_trip_and_rejects_unknown_keys():
    c = CrosscoderViewConfig.small().replace(generalization_tasks=("sort",))
    assert CrosscoderViewConfig.from_dict(c.to_dict()) == c
    assert CrosscoderViewConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(FeatdiffError, match=r"Unknown CrosscoderViewConfig keys \['d_sea'\].*allowed keys"):
        CrosscoderViewConfig.from_dict({"d_sea": 8})


@pytest.mark.parametrize(
    "bad",
    [
        {"evolution": "both"},
        {"d_sae": 0},
        {"k": 64, "d_sae": 32},
        {"fraction": 1.5},
        {"answer_format": "chat"},
        {"nrn_shared": (0.8, 0.2)},
        {"n_random": -1},
        {"n_random_full": -1},
        {"generalization_groups": ("far",)},
        {"control": "uniform"},
        {"heldout_fraction": 1.0},
        {"min_critical": 0},
        {"match_width": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(FeatdiffError):
        CrosscoderViewConfig(**bad)


def test_bad_inputs_raise(lab_dir, tmp_path):
    with pytest.raises(FeatdiffError, match="CrosscoderViewConfig"):
        crosscoder_view(lab_dir, {"d_sae": 8}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(FeatdiffError, match="not a lab folder"):
        crosscoder_view(tmp_path, CrosscoderViewConfig.small(), progress=False)
    cfg = CrosscoderViewConfig.small().replace(generalization_tasks=("nope",), evolution="none")
    with pytest.raises(FeatdiffError, match="not tasks of this lab"):
        crosscoder_view(lab_dir, cfg, progress=False)


# ---- the view ------------------------------------------------------------------------------------


def test_tables_have_pinned_columns(view, edited_view):
    for v in (view, edited_view):
        assert set(v.tables) == set(TABLE_COLUMNS)
        for name, cols in TABLE_COLUMNS.items():
            assert list(v.tables[name].columns) == cols, name
    assert TABLE_COLUMNS["interventions"] == [
        "edit",
        "model",
        "mode",
        "alpha",
        "n_features",
        "condition",
        "subset",
        "task",
        "group",
        "n_selection",
        "accuracy",
        "n",
        "n_controls",
        "p_min",
        "p_value",
        "p_holm",
        "n_tests",
        "few_samples",
    ]


def test_mas_and_nrn_are_sane(view):
    m = view.tables["mas"]
    assert len(m) == CrosscoderViewConfig.small().d_sae
    np.testing.assert_allclose(m[["base", "rl", "sft"]].sum(axis=1), 1.0, atol=1e-6)
    assert set(m["category"]) <= {"base", "rl", "sft", "shared", "dead"}
    assert (m.loc[m["dead"], "category"] == "dead").all()
    cats = view.tables["mas_categories"]
    assert list(dict.fromkeys(cats["view"])) == ["base+rl+sft", "rl vs base", "sft vs base"]
    np.testing.assert_allclose(cats.groupby("view")["fraction"].sum(), 1.0)
    assert (cats.groupby("view")["n_features"].sum() == (~m["dead"]).sum()).all()
    nrn = view.tables["nrn"]
    assert sorted(set(nrn["checkpoint"])) == ["rl", "sft"]
    live = nrn.loc[~nrn["dead"], "nrn"]
    assert live.notna().all() and live.between(0, 1).all()
    assert nrn.loc[nrn["dead"], "nrn"].isna().all()
    ev = view.tables["crosscoder_eval"]
    assert list(ev["checkpoint"]) == ["base", "rl", "sft"] and (ev["fve"] <= 1).all()


def test_evolution_has_five_steps_per_run(view):
    t = view.tables["evolution"]
    assert t.groupby("run").size().to_dict() == {"rl": 5, "sft": 5}
    for _, r in t.groupby("run"):
        assert list(r["checkpoint_index"]) == [1, 2, 3, 4, 5]
        assert r["step"].is_monotonic_increasing
        assert np.isnan(r["overlap_prev"].iloc[0]) and r["overlap_final"].iloc[-1] == 1.0
    vals = t[["overlap_prev", "overlap_final", "noise_floor"]].stack().dropna()
    assert vals.between(0, 1).all()


def test_no_voting_task_gives_empty_tables_with_a_note(view):
    # In the small lab rl does not beat the base on its near-domain task: nothing votes, nothing is edited.
    if len(view.meta["generalization_tasks"]):
        pytest.skip("rl beats the base on a near-domain task of this small lab")
    assert view.tables["generalization_features"].empty
    assert view.tables["interventions"].empty
    assert view.meta["n_generalization_features"] == 0
    notes = " ".join(view.meta["notes"])
    assert "generalization" in notes and "interventions: skipped" in notes
    assert "interventions" not in view.figures


def test_interventions_table(edited_view, critical_task):
    gt = edited_view.tables["generalization_tasks"]
    assert list(gt["task"]) == [critical_task] and gt["n_critical"].iloc[0] > 0
    feats = edited_view.tables["generalization_features"]
    assert len(feats) == edited_view.meta["n_generalization_features"] > 0
    t = edited_view.tables["interventions"]
    assert set(t["condition"]) == {"none", "edit", "random"}
    assert set(t["subset"]) == {"critical", "full"}
    assert set(t["edit"]) == {"ablate_in_rl", "amplify_in_base"}
    assert t["accuracy"].between(0, 1).all()
    assert (t["n_features"] == len(feats)).all()
    crit = t[(t.subset == "critical") & (t.condition == "none") & (t.task == critical_task)]
    # by definition rl gets every critical sample right and the base none
    assert crit.set_index("model")["accuracy"].to_dict() == {"rl": 1.0, "base": 0.0}
    assert "sort" in set(t["task"])  # the in-domain task is evaluated too
    assert edited_view.tables["evolution"].empty and "evolution" not in edited_view.figures


def test_interventions_are_scored_on_samples_that_did_not_select_the_features(edited_view, critical_task):
    cfg = CrosscoderViewConfig.small()
    gt = edited_view.tables["generalization_tasks"].set_index("task").loc[critical_task]
    assert gt.n_selection + gt.n_heldout == gt.n_critical and gt.n_heldout >= 1 and gt.n_selection >= 1
    assert abs(gt.n_heldout - cfg.heldout_fraction * gt.n_critical) <= 1
    samples = edited_view.meta["intervention_samples"]
    assert set(samples) == {critical_task, "sort"}
    for task, s in samples.items():
        assert not set(s["selection"]) & set(s["critical"]), task  # the scored sets never meet
        assert not set(s["selection"]) & set(s["full"]), task
    assert len(samples[critical_task]["selection"]) == gt.n_selection
    if critical_task != "sort":
        assert samples["sort"]["selection"] == []  # the in-domain task did not vote
    t = edited_view.tables["interventions"]
    crit = t[(t.subset == "critical") & (t.task == critical_task)]
    assert (crit["n"] == min(gt.n_heldout, cfg.n_critical)).all()
    assert (crit["n_selection"] == gt.n_selection).all()
    assert (t.loc[t.task == "sort", "n_selection"] == len(samples["sort"]["selection"])).all()
    assert (crit["few_samples"] == (crit["n"] < cfg.min_critical)).all()
    # one empirical p-value per edit row, from n_random controls: in [1 / (1 + n), 1]
    edits = t[t.condition == "edit"]
    assert (t.loc[t.subset == "critical", "n_controls"] == cfg.n_random).all()
    assert (t.loc[t.subset == "full", "n_controls"] == cfg.n_random_full).all()
    assert edits["p_value"].between(1 / (1 + edits["n_controls"]) - 1e-12, 1).all()
    assert t.loc[t.condition != "edit", "p_value"].isna().all()
    # Holm over one family per subset: both edits, every task; never below the raw p or n_tests * p_min
    from featdiff.analyses.interventions import holm

    for subset, fam in edits.groupby("subset"):
        assert (fam.n_tests == len(fam)).all() and len(fam) == 2 * fam.task.nunique(), subset
        np.testing.assert_allclose(fam.p_holm, holm(fam.p_value.tolist()))
        assert (fam.p_holm >= fam.p_value).all() and (fam.p_holm >= np.minimum(1, fam.n_tests * fam.p_min) - 1e-12).all()
    np.testing.assert_allclose(edits.p_min, 1 / (1 + edits.n_controls))
    assert (t.loc[t.condition != "edit", "n_tests"] == 0).all()
    # the notes state the held-out effect with n and p, from the table's numbers
    e = crit[(crit.edit == "ablate_in_rl") & (crit.condition == "edit")].iloc[0]
    line = [
        n
        for n in edited_view.meta["notes"]
        if n.startswith(f"interventions: ablate_in_rl ({int(e.n_features)}")
    ]
    line = [n for n in line if f" on {critical_task}:" in n]
    assert len(line) == 1 and f"n = {int(e.n)};" in line[0] and f"p = {e.p_value:.3f}" in line[0]
    assert f"Holm over {int(e.n_tests)} tests: {e.p_holm:.3f}" in line[0]
    assert f"1.00 -> {e.accuracy:.2f}" in line[0]


def test_to_dir_writes_tables_and_figures(view, tmp_path):
    out = view.to_dir(tmp_path / "view")
    for name, table in view.tables.items():
        back = pd.read_csv(out / f"{name}.csv")
        assert list(back.columns) == list(table.columns) and len(back) == len(table)
    assert set(view.figures) == set(FIGURE_NAMES) - {"interventions"}
    for name in view.figures:
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["hook"] == view.meta["hook"] and "total_s" in meta["timings"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # into an existing report folder: other files stay
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html></html>")
    view.to_dir(report, atomic=False)
    assert (report / "index.html").exists() and (report / "mas.csv").exists()


def test_same_seed_same_numbers(lab_dir, edited_view, critical_task):
    cfg = CrosscoderViewConfig.small().replace(generalization_tasks=(critical_task,), evolution="none")
    again = crosscoder_view(lab_dir, cfg, progress=False, seed=1)
    for name in ("mas", "generalization_features", "interventions"):
        pd.testing.assert_frame_equal(again.tables[name], edited_view.tables[name])


def test_shared_dictionary_evolution(lab_dir):
    cfg = CrosscoderViewConfig.small().replace(evolution="shared", generalization_groups=())
    t = crosscoder_view(lab_dir, cfg, progress=False).tables["evolution"]
    assert t.groupby("run").size().to_dict() == {"rl": 5, "sft": 5}
    assert t["noise_floor"].isna().all()
    assert t["overlap_final"].between(0, 1).all()
