"""Tests of featdiff.analyses.interventions: error-preserving feature edits, generation, the intervention table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from featdiff.analyses.interventions import (
    EVAL_COLUMNS,
    FeatureEdit,
    edit_features,
    evaluate_intervention,
    feature_codes,
    generate_greedy,
    holm,
    hooks,
    live_features,
    random_features,
)
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.errors import FeatdiffError

HOOK = "blocks.0.hook_resid_post"
D, D_SAE, VOCAB = 16, 32, 20


def make_model(seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        d_vocab=VOCAB,
        act_fn="relu",
        tokenizer_name=None,
        seed=seed,
    )
    return HookedTransformer(cfg).eval()


def make_tokens(n: int = 6, pos: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, pos), generator=torch.Generator().manual_seed(seed))


def resid(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    return cache[HOOK]


def make_sae(model: HookedTransformer, seed: int = 0) -> StandardSAE:
    """A random (imperfect) SAE with feature 0 planted on the mean activation direction, firing everywhere."""
    g = torch.Generator().manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=D, d_sae=D_SAE))
    u = resid(model, make_tokens()).reshape(-1, D).mean(0)
    u = u / u.norm()
    with torch.no_grad():
        sae.W_enc[:] = torch.randn(D, D_SAE, generator=g) / D**0.5
        sae.W_dec[:] = torch.randn(D_SAE, D, generator=g) / D**0.5
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, 0] = u
        sae.W_dec[0] = u
    return sae


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = make_model()
    return model, make_sae(model), make_tokens()


def test_noop_edits_leave_logits_identical(setup):
    model, sae, tokens = setup
    clean = model(tokens)
    for edit in (
        FeatureEdit(sae, [], hook=HOOK),
        FeatureEdit(sae, [0, 3, 5], mode="scale", alpha=1.0, hook=HOOK),
    ):
        with edit_features(model, edit):
            assert torch.equal(model(tokens), clean)
        assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=hooks(model, edit)), clean)


def test_ablating_planted_feature_changes_output(setup):
    model, sae, tokens = setup
    clean = model(tokens)
    with edit_features(model, FeatureEdit(sae, [0], mode="ablate", hook=HOOK)):
        edited = model(tokens)
    assert (edited - clean).abs().max() > 1e-3
    assert torch.equal(model(tokens), clean)  # the hook is gone after the block


def test_error_is_preserved(setup):
    model, sae, tokens = setup
    h = resid(model, tokens)
    f = sae.encode(h)
    assert (sae.decode(f) - h).norm() > 0.1 * h.norm()  # the SAE is imperfect
    assert torch.equal(FeatureEdit(sae, [0, 1], mode="scale", alpha=1.0, hook=HOOK).apply(h), h)
    dead = [k for k in range(D_SAE) if (f[..., k] == 0).all()]
    if dead:  # an edit of features that never fire changes nothing, exactly
        assert torch.equal(FeatureEdit(sae, dead[:2], hook=HOOK).apply(h), h)
    edit = FeatureEdit(sae, [0, 2], mode="ablate", hook=HOOK)
    h2 = edit.apply(h)
    f2 = f.clone()
    f2[..., [0, 2]] = 0
    # the reconstruction error h - decode(f) is the same before and after the edit
    torch.testing.assert_close(h2 - sae.decode(f2), h - sae.decode(f), atol=1e-5, rtol=1e-5)


def test_scale_adds_hand_computed_amount(setup):
    model, sae, tokens = setup
    h = resid(model, tokens)
    f0 = sae.encode(h)[..., 0]
    h2 = FeatureEdit(sae, [0], mode="scale", alpha=3.0, hook=HOOK).apply(h)
    expected = h + 2.0 * f0[..., None] * sae.W_dec[0].detach()
    torch.testing.assert_close(h2, expected, atol=1e-5, rtol=1e-5)


def _make_crosscoder(seed: int = 0) -> Crosscoder:
    cc = Crosscoder(
        CrosscoderConfig(names=["base", "rl"], d_in=D, d_sae=D_SAE, k=4, sparsity="l1", seed=seed, hook=HOOK)
    )
    with torch.no_grad():
        cc.W_enc.mul_(10.0)
        cc.norm_scale[:] = torch.tensor([0.5, 2.0])
    return cc


def test_crosscoder_joint_and_single_modes():
    base, rl = make_model(0), make_model(1)
    cc = _make_crosscoder()
    tokens = make_tokens()
    h_rl, h_base = resid(rl, tokens), resid(base, tokens)
    feats = [0, 1, 2, 3]
    for codes in ("joint", "single"):
        other = h_base if codes == "joint" else torch.zeros_like(h_base)
        f = cc.encode(torch.stack([other, h_rl], dim=-2).reshape(-1, 2, D)).reshape(*h_rl.shape[:2], D_SAE)
        assert (f[..., feats] != 0).any()
        if codes == "joint":
            joint_f = f
        else:
            assert not torch.allclose(f, joint_f)  # the approximation differs from the exact codes
        expected_h = h_rl - f[..., feats] @ cc.decoder("rl")[feats]
        expected = rl.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda h, hook, e=expected_h: e)])
        edit = FeatureEdit(cc, feats, model_name="rl", others={"base": base}, codes=codes)
        assert edit.hook == HOOK  # taken from the crosscoder
        with edit_features(rl, edit):
            got = rl(tokens)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feature_codes(rl, edit, tokens), f, atol=1e-5, rtol=1e-5)


def test_generation_with_hook(setup):
    model, sae, tokens = setup
    prompts = tokens[:, :3]
    plain = generate_greedy(model, prompts, 4)
    manual = prompts.clone()
    edit = FeatureEdit(sae, [0], mode="scale", alpha=8.0, hook=HOOK)
    for _ in range(4):  # the hook must be active on every step
        nxt = model.run_with_hooks(manual, fwd_hooks=hooks(model, edit))[:, -1].argmax(-1)
        manual = torch.cat([manual, nxt[:, None]], 1)
    assert torch.equal(generate_greedy(model, prompts, 4, edit=edit), manual[:, 3:])
    assert torch.equal(generate_greedy(model, prompts, 4, fwd_hooks=hooks(model, edit)), manual[:, 3:])
    assert torch.equal(generate_greedy(model, prompts, 4, edit=FeatureEdit(sae, [], hook=HOOK)), plain)
    # prompts of different lengths come back in their order
    mixed = generate_greedy(model, [prompts[0], tokens[1, :4], prompts[2]], 4)
    assert torch.equal(mixed[[0, 2]], plain[[0, 2]])
    # joint crosscoder codes during generation (no KV cache: the other model sees every token)
    base, rl = make_model(0), make_model(1)
    cc_edit = FeatureEdit(_make_crosscoder(), [0, 1], model_name="rl", others={"base": base})
    assert generate_greedy(rl, prompts, 3, edit=cc_edit).shape == (len(prompts), 3)


def test_evaluate_intervention_table(setup):
    model, sae, tokens = setup
    prompts = tokens[:, :3]
    answers = generate_greedy(model, prompts, 2)  # the model's own answers: accuracy 1 without the edit
    tasks = {"copy": (prompts, answers), "other": (prompts[:4], answers[:4])}
    edit = FeatureEdit(sae, [0], mode="scale", alpha=50.0, hook=HOOK)
    table = evaluate_intervention(
        model, edit, tasks, critical={"copy": [0, 1, 2]}, n_random=2, progress=False
    )
    assert list(table.columns) == EVAL_COLUMNS
    assert set(table.condition) == {"none", "edit", "random"}
    none = table[table.condition == "none"]
    assert (none.accuracy == 1.0).all()
    assert table.set_index(["condition", "subset", "task"]).loc[("edit", "critical", "copy"), "n"] == 3
    assert len(table[(table.subset == "critical")]) == 3  # only 'copy' has a critical subset
    edited = table[(table.condition == "edit") & (table.subset == "full")].accuracy
    assert (edited < 1.0).any()  # the planted feature, amplified 50x, breaks the answers
    assert pd.api.types.is_integer_dtype(table.n)
    # p-values: one Holm family per subset (critical: copy; full: copy and other), the floor 1/(1+2)
    edits = table[table.condition == "edit"].set_index(["subset", "task"])
    assert edits.n_tests.to_dict() == {("critical", "copy"): 1, ("full", "copy"): 2, ("full", "other"): 2}
    assert edits.loc[("critical", "copy"), "p_holm"] == edits.loc[("critical", "copy"), "p_value"]
    full = edits.loc["full"]
    assert full.p_holm.tolist() == pytest.approx(holm(full.p_value.tolist()))
    assert (full.p_holm >= full.p_value).all() and np.allclose(edits.p_min, 1 / 3)
    rest = table[table.condition != "edit"]
    assert rest[["p_min", "p_value", "p_holm"]].isna().all().all() and (rest.n_tests == 0).all()
    # per-task checker and generation length (the lab's tasks check a longer completion)
    seen = []

    def check(pred, ans):
        seen.append(pred.shape[1])
        return torch.ones(len(ans), dtype=torch.bool)

    t2 = evaluate_intervention(
        model, edit, tasks, checker={"copy": check}, n_new_tokens={"copy": 3}, n_random=0, progress=False
    )
    t2 = t2.set_index(["condition", "subset", "task"]).accuracy
    assert t2[("edit", "full", "copy")] == 1.0 and seen == [3, 3]
    assert t2[("edit", "full", "other")] < 1.0  # exact match of 2 tokens as before


def test_random_control_is_seeded_and_live(setup):
    model, sae, tokens = setup
    edit = FeatureEdit(sae, [0, 1], hook=HOOK)
    live = live_features(model, edit, tokens)
    assert 0 in live
    draw = random_features(live, 2, exclude=[0, 1], seed=3)
    assert draw == random_features(live, 2, exclude=[0, 1], seed=3)
    assert set(draw) <= set(live) - {0, 1}
    with pytest.raises(FeatdiffError, match="random control"):
        random_features([0, 1, 2], 2, exclude=[0, 1])


def test_bad_inputs_raise(setup):
    model, sae, tokens = setup
    with pytest.raises(FeatdiffError, match="out of range"):
        FeatureEdit(sae, [D_SAE], hook=HOOK)
    with pytest.raises(FeatdiffError, match="'mode'"):
        FeatureEdit(sae, [0], mode="zero", hook=HOOK)
    with pytest.raises(FeatdiffError, match="'codes'"):
        FeatureEdit(sae, [0], codes="both", hook=HOOK)
    with pytest.raises(FeatdiffError, match="does not record its hook"):
        FeatureEdit(sae, [0])
    with pytest.raises(FeatdiffError, match="does not exist"):
        with edit_features(model, FeatureEdit(sae, [0], hook="blocks.7.hook_resid_post")):
            pass
    with pytest.raises(FeatdiffError, match="does not exist"):
        hooks(model, FeatureEdit(sae, [0], hook="blocks.0.hook_nonsense"))
    with pytest.raises(FeatdiffError, match="must be a sae-lens SAE"):
        FeatureEdit(torch.nn.Linear(2, 2), [0], hook=HOOK)
    cc = _make_crosscoder()
    with pytest.raises(FeatdiffError, match="model_name"):
        FeatureEdit(cc, [0])
    with pytest.raises(FeatdiffError, match="'others' lacks"):
        FeatureEdit(cc, [0], model_name="rl")
    joint = FeatureEdit(cc, [0], model_name="rl", others={"base": make_model(0)})
    with pytest.raises(FeatdiffError, match="edit_features"):
        hooks(model, joint)  # joint codes need the token ids
    with pytest.raises(FeatdiffError, match="n_new_tokens"):
        generate_greedy(model, tokens, 0)
    with pytest.raises(FeatdiffError, match="critical"):
        evaluate_intervention(
            model, FeatureEdit(sae, [0], hook=HOOK), {"t": (tokens, tokens[:, :1])}, critical={"u": [0]}
        )


# ---- causal tests without selection bias ---------------------------------------------------------


def test_holm_against_hand_computed_values():
    from featdiff.analyses.interventions import add_holm

    # Holm (1979) by hand: sorted 0.005, 0.01, 0.03, 0.04, 0.5 times 5, 4, 3, 2, 1 = 0.025, 0.04, 0.09,
    # 0.08, 0.5; the running maximum lifts 0.08 to 0.09
    assert holm([0.04, 0.5, 0.005, 0.03, 0.01]) == pytest.approx([0.09, 0.5, 0.025, 0.09, 0.04])
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])  # 0.3 * 2, then max(0.6, 0.4)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and np.isnan(holm([float("nan")])[0])
    # a single test is not adjusted; NaN rows do not count as tests
    t = pd.DataFrame({"g": ["x", "y", "y", "y"], "p_value": [0.2, 0.01, float("nan"), 0.02]})
    out = add_holm(t, by=["g"])
    assert out.p_holm.tolist()[0] == 0.2 and out.n_tests.tolist() == [1, 2, 0, 2]
    assert out.p_holm.tolist()[1:2] + out.p_holm.tolist()[3:] == pytest.approx([0.02, 0.02])
    assert add_holm(t).n_tests.tolist() == [3, 3, 0, 3]  # one family: the whole table


def test_empirical_p_value_counts_ties_against_the_effect():
    from featdiff.analyses.interventions import empirical_p_value

    assert empirical_p_value(0.9, [0.1] * 20) == pytest.approx(1 / 21)
    assert empirical_p_value(0.5, [0.1, 0.5, 0.7, 0.2]) == pytest.approx(3 / 5)  # 0.5 and 0.7 are >= 0.5
    assert empirical_p_value(0.2, [0.1, 0.3, 0.2, 0.5], alternative="less") == pytest.approx(3 / 5)
    assert empirical_p_value(0.0, [0.4] * 9, alternative="less") == pytest.approx(0.1)
    assert np.isnan(empirical_p_value(0.3, []))
    with pytest.raises(FeatdiffError, match="'alternative'"):
        empirical_p_value(0.3, [0.1], alternative="two-sided")


def test_matched_controls_match_size_and_firing_rate():
    from featdiff.analyses.interventions import matched_controls

    rng = np.random.default_rng(0)
    freq = 10 ** rng.uniform(-4, -0.5, size=300)  # firing frequencies over 3.5 decades
    features = [int(k) for k in np.argsort(freq)[[5, 150, 290]]]  # one rare, one middling, one frequent
    pool = [k for k in range(300) if k % 7]  # the live features
    sets = matched_controls(features, freq, pool, n_controls=25, width=6, seed=1)
    assert len(sets) == 25 and all(len(c) == len(features) for c in sets)
    assert all(len(set(c)) == 3 and not set(c) & set(features) and set(c) <= set(pool) for c in sets)
    assert sets == matched_controls(features, freq, pool, n_controls=25, width=6, seed=1)
    assert sets != matched_controls(features, freq, pool, n_controls=25, width=6, seed=2)
    cand = np.array(sorted(set(pool) - set(features)))
    logf = np.log(freq)
    for k in features:  # every set has one partner of k among the 6 (+2 taken by the others) nearest
        near = set(cand[np.argsort(np.abs(logf[cand] - logf[k]))[:8]].tolist())
        assert all(set(c) & near for c in sets)
    # the sets' total activity is close to the edit's: within 10 % on average (uniform draws: a factor ~10)
    ratio = np.mean([freq[c].sum() / freq[features].sum() for c in sets])
    assert 0.9 < ratio < 1.1
    uniform = np.mean([freq[rng.choice(cand, 3, replace=False)].sum() for _ in range(200)])
    assert abs(uniform / freq[features].sum() - 1) > 0.3
    with pytest.raises(FeatdiffError, match="matched control"):
        matched_controls(features, freq, pool=features + [0], n_controls=2)


def _projection_task(model, sae):
    """A constructed task whose answer is 'the activation keeps its component along feature 0's direction'.

    A sample is correct when the projection of the (edited) activation on u = W_dec[0] at the last prompt
    position keeps at least half its unedited value: ablating feature 0 removes it (a known effect),
    ablating another feature moves it by a little.
    """
    u = sae.W_dec[0].detach()
    prompts = make_tokens(n=24, pos=5, seed=7)

    def proj(m, p):
        _, cache = m.run_with_cache(p, names_filter="blocks.1.hook_resid_pre")
        return cache["blocks.1.hook_resid_pre"][:, -1] @ u

    with torch.no_grad():
        unedited = proj(model, prompts)

    def eval_fn(m, p, answers):
        return proj(m, p) > 0.5 * unedited

    return {"proj": (prompts, torch.zeros(len(prompts), 1, dtype=torch.long))}, eval_fn, unedited


def test_p_value_small_for_a_known_effect_and_not_for_a_null_feature(setup):
    model, sae, _ = setup
    tasks, eval_fn, unedited = _projection_task(model, sae)
    assert (unedited > 0).all()  # the premise: every sample is 'correct' without an edit
    kw = dict(eval_fn=eval_fn, n_random=20, progress=False, seed=0)
    known = evaluate_intervention(model, FeatureEdit(sae, [0], hook=HOOK), tasks, **kw).set_index("condition")
    assert known.loc["none", "accuracy"] == 1.0 and known.loc["edit", "accuracy"] == 0.0
    assert known.loc["random", "accuracy"] > 0.8 and (known["n_controls"] == 20).all()
    assert known.loc["edit", "p_value"] == pytest.approx(1 / 21)  # no control does as much
    assert known[["p_value"]].drop("edit").isna().all().all()
    pvals = []
    for k in (3, 9, 17):  # null features: ablating one of them is what a random control does
        null = evaluate_intervention(model, FeatureEdit(sae, [k], hook=HOOK), tasks, **kw)
        pvals.append(float(null.loc[null.condition == "edit", "p_value"].iloc[0]))
    assert min(pvals) > 0.2, pvals
    # the direction: amplifying feature 0 does not lower accuracy, so 'less' gives p = 1
    amp = FeatureEdit(sae, [0], mode="scale", alpha=3.0, hook=HOOK)
    t = evaluate_intervention(model, amp, tasks, alternative="less", **kw)
    assert float(t.loc[t.condition == "edit", "p_value"].iloc[0]) == pytest.approx(1.0)


def test_evaluate_intervention_matches_controls_to_firing_rate(setup):
    model, sae, tokens = setup
    tasks, eval_fn, _ = _projection_task(model, sae)
    f = feature_codes(model, FeatureEdit(sae, [], hook=HOOK), tokens)
    freq = (f.reshape(-1, D_SAE) > 0).float().mean(0)
    live = torch.nonzero(freq > 0).flatten().tolist()
    edit = FeatureEdit(sae, [0], hook=HOOK)
    t = evaluate_intervention(
        model,
        edit,
        tasks,
        eval_fn=eval_fn,
        n_random=4,
        live=live,
        frequency=freq,
        match_width=1,
        progress=False,
    )
    # with match_width=1 every control is the live feature nearest to feature 0 in frequency: one set, 4 times
    from featdiff.analyses.interventions import matched_controls

    (nearest,) = matched_controls([0], freq, live, n_controls=1, width=1)[0]
    single = evaluate_intervention(
        model, edit.with_features([nearest]), tasks, eval_fn=eval_fn, n_random=0, progress=False
    )
    acc = t.set_index("condition")["accuracy"]
    assert acc["random"] == pytest.approx(float(single.loc[single.condition == "edit", "accuracy"].iloc[0]))
    assert int(t["n_controls"].iloc[0]) == 4


def test_generalization_split_keeps_selection_and_heldout_disjoint():
    from featdiff.analyses.generalization import generalization_features, split_samples

    n, d = 40, 6
    g = torch.Generator().manual_seed(0)
    ref = {"a": torch.zeros(n, d)}
    tuned = {"a": torch.rand(n, d, generator=g)}
    rows = [(c, "a", s, c == "rl" and s < 30) for c in ("base", "rl") for s in range(n)]  # 30 critical
    corr = pd.DataFrame(rows, columns=["checkpoint", "task", "sample", "correct"])
    res = generalization_features(ref, tuned, corr, heldout_fraction=0.4, seed=3)
    sel, held = res.selection_samples("a"), res.heldout("a")
    assert len(sel) == 18 and len(held) == 12 and not set(sel) & set(held)
    assert sorted(sel + held) == list(range(30))
    assert (sel, held) == split_samples(range(30), 0.4, seed=3)
    task = res.tasks.set_index("task").loc["a"]
    assert (task.n_critical, task.n_selection, task.n_heldout) == (30, 18, 12)
    # the scores come from the selection samples only
    score = res.scores.set_index("feature")["score"].to_numpy()
    np.testing.assert_allclose(score, tuned["a"][sel].double().mean(0).numpy(), rtol=1e-12)
    assert not np.allclose(score, tuned["a"][:30].double().mean(0).numpy())
    # another seed, another split; heldout_fraction=0 is the in-sample selection
    assert generalization_features(ref, tuned, corr, heldout_fraction=0.4, seed=4).heldout("a") != held
    assert generalization_features(ref, tuned, corr, heldout_fraction=0.0).heldout("a") == []
    # the default holds half of each task's critical samples out of the selection
    default = generalization_features(ref, tuned, corr)
    assert (default.heldout("a"), default.selection_samples("a")) == split_samples(range(30), 0.5, seed=0)[::-1]
    assert len(default.heldout("a")) == 15
    with pytest.warns(UserWarning, match="min_critical"):
        generalization_features(ref, tuned, corr, heldout_fraction=0.1)  # 3 held out < 10
    with pytest.raises(FeatdiffError, match="heldout_fraction"):
        generalization_features(ref, tuned, corr, heldout_fraction=1.0)
