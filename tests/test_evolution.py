"""Tests of featdiff.analyses.evolution (feature evolution over checkpoints) and featdiff.analyses.generalization."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from featdiff.analyses.evolution import (
    EVOLUTION_COLUMNS,
    direction_overlap,
    feature_evolution,
    plot_feature_evolution,
    shared_dictionary_scores,
    top_specific_features,
    train_evolution_crosscoders,
)
from featdiff.analyses.generalization import generalization_features, sample_codes
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.errors import FeatdiffError

D = 6


def planted_cc(specific: list[torch.Tensor], d_sae: int = 8, seed: int = 0) -> Crosscoder:
    """A (base, rl) crosscoder whose first len(specific) features are rl-specific with the given directions."""
    g = torch.Generator().manual_seed(seed)
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=D, d_sae=d_sae, k=2, seed=seed))
    with torch.no_grad():
        shared = torch.randn(d_sae, D, generator=g)
        cc.W_dec[0] = shared
        cc.W_dec[1] = shared
        for i, v in enumerate(specific):
            cc.W_dec[0, i] = 0.01 * shared[i]
            cc.W_dec[1, i] = v
    return cc


E = torch.eye(D)


def test_direction_overlap_hand_computed():
    a = E[:3]
    b = torch.stack([E[0], 0.6 * E[1] + 0.8 * E[2], -E[2]])
    # Hungarian pairs e0-b0 (cos 1), e2-b1 (0.8), e1-b2 (0): two of three reach 0.7
    assert direction_overlap(a, b) == pytest.approx(2 / 3)
    assert direction_overlap(a, a) == 1.0
    assert direction_overlap(a, b, threshold=0.9) == pytest.approx(1 / 3)
    assert direction_overlap(a, b, match="max") == pytest.approx(2 / 3)
    # max (not one-to-one): both rows match the single e0 in b
    assert direction_overlap(E[:1].repeat(2, 1), E[:1], match="max") == 1.0
    assert direction_overlap(E[:1].repeat(2, 1), E[:1]) == 0.5
    assert math.isnan(direction_overlap(E[:0], E[:2]))


def test_top_specific_features_skips_dead():
    cc = planted_cc([E[0], E[1], E[2]])
    assert sorted(top_specific_features(cc, k=3)) == [0, 1, 2]
    top = top_specific_features(cc, k=3, live=[1, 2, 3, 4, 5, 6, 7])
    assert 0 not in top and {1, 2} <= set(top)


def test_evolution_on_hand_made_series():
    # sft: specific set settles at step 1; rl: one direction changes at every step
    sft = {
        0: planted_cc([E[0], E[3], E[4]]),
        1: planted_cc([E[0], E[1], E[2]], seed=1),
        2: planted_cc([E[2], E[1], E[0]], seed=2),
    }
    rl = {
        0: planted_cc([E[0], E[1], E[2]]),
        1: planted_cc([E[0], E[1], E[3]], seed=1),
        2: planted_cc([E[0], E[1], E[4]], seed=2),
    }
    table = feature_evolution({"sft": sft, "rl": rl}, k=3)
    assert list(table.columns) == EVOLUTION_COLUMNS
    t = table.set_index(["run", "step"])
    assert math.isnan(t.loc[("sft", 0), "overlap_prev"])
    assert t.loc[("sft", 0), "overlap_final"] == pytest.approx(1 / 3)
    assert t.loc[("sft", 1), "overlap_prev"] == pytest.approx(1 / 3)
    assert t.loc[("sft", 1), "overlap_final"] == 1.0  # same directions, other indices and order
    assert t.loc[("sft", 2), "overlap_final"] == 1.0
    assert t.loc[("rl", 1), "overlap_prev"] == pytest.approx(2 / 3)
    assert t.loc[("rl", 0), "overlap_final"] == pytest.approx(2 / 3)
    assert t.loc[("rl", 2), "overlap_prev"] == pytest.approx(2 / 3)
    fig = plot_feature_evolution(table)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_evolution_shared_dictionary_scores():
    series = {
        "rl": {
            10: torch.tensor([5.0, 4, 3, 0, 0]),
            20: torch.tensor([5.0, 0, 3, 4, 0]),
            30: pd.Series([0.0, 0, 3, 4, 5]),
        }
    }
    t = feature_evolution(series, k=3).set_index("step")
    assert t.loc[20, "overlap_prev"] == pytest.approx(2 / 3)  # {0,1,2} vs {0,2,3}
    assert t.loc[10, "overlap_final"] == pytest.approx(1 / 3)  # {0,1,2} vs {2,3,4}
    assert t.loc[20, "overlap_final"] == pytest.approx(2 / 3)


def test_evolution_bad_inputs():
    with pytest.raises(FeatdiffError):
        feature_evolution({}, k=3)
    with pytest.raises(FeatdiffError, match="'k'"):
        feature_evolution({"rl": {0: torch.ones(3)}}, k=0)
    with pytest.raises(FeatdiffError, match="mixes"):
        feature_evolution({"rl": {0: torch.ones(8), 1: planted_cc([E[0]])}}, k=2)
    with pytest.raises(FeatdiffError, match="2-model"):
        feature_evolution({"rl": {0: "nope"}}, k=2)
    with pytest.raises(FeatdiffError, match="'match'"):
        feature_evolution({"rl": {0: torch.ones(3)}}, match="greedy")


def test_train_evolution_crosscoders_runs_and_is_seeded():
    cfg = dict(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=11, act_fn="relu", tokenizer_name=None
    )
    base = HookedTransformer(HookedTransformerConfig(**cfg, seed=0))
    runs = {"rl": {s: HookedTransformer(HookedTransformerConfig(**cfg, seed=s)) for s in (1, 2)}}
    tokens = torch.randint(0, 11, (32, 8), generator=torch.Generator().manual_seed(0))
    a = train_evolution_crosscoders(
        base, runs, tokens, "blocks.0.hook_resid_post", d_sae=16, k=2, n_steps=10, progress=False
    )
    b = train_evolution_crosscoders(
        base, runs, tokens, "blocks.0.hook_resid_post", d_sae=16, k=2, n_steps=10, progress=False
    )
    cc, live = a["rl"][1]
    assert cc.names == ["base", "rl"] and len(live) > 0
    assert torch.equal(a["rl"][2].crosscoder.W_dec, b["rl"][2].crosscoder.W_dec)
    pd.testing.assert_frame_equal(feature_evolution(a, k=4), feature_evolution(b, k=4))


def test_shared_dictionary_scores():
    cfg = dict(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=11, act_fn="relu", tokenizer_name=None
    )
    base = HookedTransformer(HookedTransformerConfig(**cfg, seed=0))
    other = HookedTransformer(HookedTransformerConfig(**cfg, seed=1))
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=16, k=2, sparsity="l1", seed=0))
    with torch.no_grad():
        cc.W_enc.mul_(10.0)
    tokens = torch.randint(0, 11, (8, 8), generator=torch.Generator().manual_seed(0))
    scores = shared_dictionary_scores(cc, base, {0: base, 1: other}, tokens, "blocks.0.hook_resid_post")
    assert torch.equal(scores[0], torch.zeros(16))  # the base in the tuned slot: no difference
    assert scores[1].abs().max() > 0
    table = feature_evolution({"rl": scores}, k=4)
    assert table.overlap_final.iloc[-1] == 1.0


# ---------------------------------------------------------------------------- generalization features


def correctness_table(ref_correct: dict, tuned_correct: dict) -> pd.DataFrame:
    rows = []
    for ckpt, table in (("base", ref_correct), ("rl", tuned_correct)):
        for task, flags in table.items():
            rows += [(ckpt, task, i, bool(c)) for i, c in enumerate(flags)]
    return pd.DataFrame(rows, columns=["checkpoint", "task", "sample", "correct"])


def test_generalization_features_hand_computed():
    ref = {t: torch.zeros(4, 5) for t in ("a", "b", "c")}
    tuned = {
        # critical samples of a: 0, 1 -> scores [1, 0.5, 0.1, 0.3, -1]; max 1, cut 0.2 -> {0, 1, 3}
        "a": torch.tensor([[2.0, 1, 0.2, 0.6, -2], [0, 0, 0, 0, 0], [9, 9, 9, 9, 9], [9, 9, 9, 9, 9]]),
        # critical sample of b: 3 -> scores [4, 0, 1, 0.7, 0]; max 4, cut 0.8 -> {0, 2}
        "b": torch.tensor([[9.0, 9, 9, 9, 9], [9, 9, 9, 9, 9], [9, 9, 9, 9, 9], [4, 0, 1, 0.7, 0]]),
        "c": torch.ones(4, 5),  # no critical samples: does not vote
    }
    corr = correctness_table(
        {"a": [0, 0, 1, 0], "b": [1, 1, 0, 0], "c": [1, 1, 1, 1]},
        {"a": [1, 1, 1, 0], "b": [1, 1, 0, 1], "c": [1, 1, 1, 1]},
    )
    # heldout_fraction=0: every critical sample scores (the arithmetic under test; the default holds half out)
    res = generalization_features(ref, tuned, corr, fraction=0.2, heldout_fraction=0.0)
    assert res.selected("a") == [0, 1, 3]
    assert res.selected("b") == [0, 2]
    assert res.selected("c") == []
    assert res.feature_ids == [0]
    assert list(res.features.columns) == ["feature", "min_score", "mean_score"]
    assert res.features.loc[0, "min_score"] == pytest.approx(1.0)
    assert res.features.loc[0, "mean_score"] == pytest.approx(2.5)
    ov = res.overlaps.set_index(["task_a", "task_b"])
    assert list(res.overlaps.columns) == ["task_a", "task_b", "n_a", "n_b", "n_shared", "jaccard"]
    assert ov.loc[("a", "b"), "n_shared"] == 1 and ov.loc[("a", "b"), "jaccard"] == pytest.approx(1 / 4)
    assert ov.loc[("a", "c"), "n_shared"] == 0
    assert ov.loc[("all", "all"), "n_shared"] == 1 and ov.loc[("all", "all"), "n_a"] == 4
    tasks = res.tasks.set_index("task")
    assert tasks.loc["a", "n_critical"] == 2 and tasks.loc["b", "n_critical"] == 1
    assert not tasks.loc["c", "votes"]
    assert res.critical.values.tolist() == [["a", 0], ["a", 1], ["b", 3]]
    assert list(res.scores.columns) == ["task", "feature", "score", "selected"]
    assert len(res.scores) == 15
    # a higher fraction keeps fewer features
    assert generalization_features(ref, tuned, corr, fraction=0.6, heldout_fraction=0.0).selected("a") == [0]


def test_generalization_bad_inputs():
    ref = {"a": torch.zeros(2, 3)}
    corr = correctness_table({"a": [0, 0]}, {"a": [1, 1]})
    with pytest.raises(FeatdiffError, match="fraction"):
        generalization_features(ref, ref, corr, fraction=1.5)
    with pytest.raises(FeatdiffError, match="'sft' is not in correctness"):
        generalization_features(ref, ref, corr, tuned="sft")
    with pytest.raises(FeatdiffError, match="lacks the columns"):
        generalization_features(ref, ref, corr.drop(columns="correct"))
    with pytest.raises(FeatdiffError, match="outside"):
        generalization_features({"a": torch.zeros(1, 3)}, {"a": torch.zeros(1, 3)}, corr)
    with pytest.raises(FeatdiffError, match="both"):
        generalization_features(ref, {}, corr)


def test_sample_codes_answer_positions():
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu", tokenizer_name=None, seed=0
    )
    model = HookedTransformer(cfg)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=12))
    prompts, answers = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[7, 8], [9, 10]])
    got = sample_codes(sae, model, prompts, answers, hook="blocks.0.hook_resid_post")
    _, cache = model.run_with_cache(
        torch.cat([prompts, answers[:, :1]], 1), names_filter="blocks.0.hook_resid_post"
    )
    f = sae.encode(cache["blocks.0.hook_resid_post"])[:, 2:4].mean(1)  # positions predicting answer tokens
    torch.testing.assert_close(got, f * sae.W_dec.detach().norm(dim=-1))
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=12, k=2, sparsity="l1"))
    other = HookedTransformer(cfg)
    codes_rl = sample_codes(
        cc, model, prompts, answers, hook="blocks.0.hook_resid_post", model_name="rl", others={"base": other}
    )
    assert codes_rl.shape == (2, 12)
    with pytest.raises(FeatdiffError, match="'positions'"):
        sample_codes(sae, model, prompts, answers, positions="all", hook="blocks.0.hook_resid_post")
