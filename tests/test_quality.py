"""The SAEs' own quality (featdiff.comparison.quality): known answers for L0, FVE, dead / dense shares, CE loss
recovered and KL; the summary columns of every route; the warning for a much worse target SAE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

D_MODEL = 16


_TRAINED: dict = {}


def _tokens(n: int = 48, seed: int = 0) -> torch.Tensor:
    """Counting sequences mod 20 from random starts, with a random token in 1 of 4 positions: a trained model
    predicts most next tokens, so ablating its residual stream costs loss (a random model's would not)."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.randint(0, 20, (n, 1), generator=g) + torch.arange(8)) % 20
    noise = torch.rand(n, 8, generator=g) < 0.25
    return torch.where(noise, torch.randint(0, 20, (n, 8), generator=g), t)


def _model(seed: int = 0):
    """A tiny HookedTransformer trained for 150 steps on ``_tokens`` (cached per seed; a copy each call)."""
    import copy

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if seed not in _TRAINED:
        cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=8, d_head=4, n_heads=4, d_vocab=20,
                                      act_fn="relu", tokenizer_name=None, seed=seed, d_mlp=32)  # fmt: skip
        model = HookedTransformer(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        data = _tokens(512, seed=100 + seed)
        for step in range(150):
            loss = model(data[(step % 16) * 32 : (step % 16 + 1) * 32], return_type="loss")
            opt.zero_grad()
            loss.backward()
            opt.step()
        _TRAINED[seed] = model.eval()
    return copy.deepcopy(_TRAINED[seed])


def _perfect(d_in: int = D_MODEL, keep: int | None = None):
    """A ReLU SAE that reconstructs x exactly (latents +e_i and -e_i), or only its first ``keep`` coordinates."""
    from featdiff.dictionaries.sae import sae_from_dictionary

    keep = d_in if keep is None else keep
    eye = torch.eye(d_in)[:keep]
    W_dec = torch.cat([eye, -eye])
    return sae_from_dictionary(W_dec, W_enc=W_dec.T.clone(), architecture="standard")


def _zero(d_in: int = D_MODEL):
    from featdiff.dictionaries.sae import sae_from_dictionary

    return sae_from_dictionary(torch.zeros(2 * d_in, d_in), W_enc=torch.zeros(d_in, 2 * d_in), k=1)


# ------------------------------------------------------------------------------------ activation-only


def test_exact_sae_on_planted_sparse_codes_gives_fve_1_and_the_planted_l0():
    from featdiff.dictionaries.quality import quality_chunks
    from featdiff.dictionaries.sae import sae_from_dictionary
    from featdiff.metrics.quality import quality_summary

    g = torch.Generator().manual_seed(0)
    D = torch.linalg.qr(torch.randn(32, 24, generator=g))[0].T  # 24 orthonormal atoms in 32 dimensions
    n = 3000
    n_active = torch.randint(1, 5, (n,), generator=g)  # 1..4 atoms per token
    rank = torch.rand(n, 24, generator=g).argsort(1).argsort(1)  # a random order of the atoms per token
    codes = torch.where(rank < n_active[:, None], 0.5 + torch.rand(n, 24, generator=g), torch.zeros(n, 24))
    x = codes @ D
    sae = sae_from_dictionary(D, architecture="jumprelu")  # W_enc = D.T
    with torch.no_grad():
        sae.threshold.fill_(0.25)  # float rounding leaves ~1e-7 on the inactive atoms: not a firing
    q = quality_summary(quality_chunks(sae, x, n_chunks=20))
    assert q["fve"] == pytest.approx(1.0, abs=1e-6)
    assert q["l0"] == pytest.approx(float(n_active.double().mean()), abs=1e-12)
    assert q["l0_lo"] < q["l0"] < q["l0_hi"]  # the chunks' L0 varies: a real interval around the mean
    assert q["dead_share"] == 0.0
    # each atom fires on about 2.5 / 24 ~ 10.4 % of the tokens: near SAEBench's 10 % line, so measured
    planted_freq = (codes != 0).float().mean(0)
    assert q["dense_share"] == pytest.approx(float((planted_freq > 0.1).float().mean()))


def test_dead_and_dense_shares_of_a_constructed_sae():
    from featdiff.dictionaries.quality import quality_chunks
    from featdiff.dictionaries.sae import sae_from_dictionary
    from featdiff.metrics.quality import quality_summary

    # 8 latents on 8 axes; 100 tokens: latent 0 fires on all, 1 on 50, 2 on exactly 10 (not above 10 %),
    # 3 on 11, 4 and 5 once, 6 and 7 never (dead)
    x = torch.zeros(100, 8)
    x[:, 0] = 1.0
    x[:50, 1] = 1.0
    x[:10, 2] = 1.0
    x[20:31, 3] = 1.0
    x[99, 4] = x[98, 5] = 1.0
    sae = sae_from_dictionary(torch.eye(8), architecture="standard")
    chunks = quality_chunks(sae, x, n_chunks=10)
    q = quality_summary(chunks)
    assert q["dead_share"] == 2 / 8
    assert q["dense_share"] == 3 / 8  # latents 0, 1, 3
    assert quality_summary(chunks, dense_threshold=0.005)["dense_share"] == 6 / 8  # 4 and 5 now too
    assert "dead_share_lo" not in q  # no interval: a chunk resample can only miss firings
    assert q["l0"] == pytest.approx((100 + 50 + 10 + 11 + 2) / 100)


def test_compare_dictionaries_gets_the_activation_columns_and_no_lm_columns(planted):
    from tests.conftest import planted_saes

    from featdiff.comparison.scoring import compare_dictionaries

    saes = planted_saes(planted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = compare_dictionaries(saes, planted.sample(2000), progress=False)
    s = cmp.summary
    for side in ("reference", "target"):
        for col in ("l0", "l0_lo", "l0_hi", "fve_lo", "fve_hi", "dead_share", "dense_share"):
            assert f"{side}_{col}" in s.columns
        assert f"{side}_ce_recovered" not in s.columns and f"{side}_kl_div" not in s.columns
    # the planted SAEs' L0 is the planted mean number of active atoms (at most k per token)
    assert (s["reference_l0"] <= 2 * planted.meta["k"] + 1e-9).all()
    assert (s["reference_fve_lo"] <= s["reference_fve"]).all() and (s["reference_fve"] <= s["reference_fve_hi"]).all()
    assert set(cmp.meta["quality"]) == set(saes)


# ------------------------------------------------------------------------------------ the LM splice


def test_zeroed_decoder_recovers_nothing_and_a_perfect_reconstruction_everything():
    from featdiff.dictionaries.splice import splice_sequences
    from featdiff.metrics.quality import quality_summary, sequence_chunks

    model, tokens = _model(), _tokens()
    mask = torch.ones_like(tokens, dtype=torch.bool)
    sums = splice_sequences(model, {"zero": _zero(), "perfect": _perfect(), "half": _perfect(keep=8)}, tokens,
                            mask, "blocks.0.hook_resid_post")  # fmt: skip
    q = {k: quality_summary(lm=sequence_chunks(v, 10)) for k, v in sums.items()}
    assert sums["zero"]["n_ce"].sum() == 48 * 6  # positions 1..6 of each sequence (0 is dropped, 7 has no next)
    assert q["zero"]["ce_zero"] > q["zero"]["ce_clean"] + 0.01  # ablating the residual stream costs loss
    assert q["zero"]["ce_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert q["zero"]["kl_div"] > 0.01
    assert q["perfect"]["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert q["perfect"]["kl_div"] == pytest.approx(0.0, abs=1e-6)
    # half the coordinates: in between, and worse than perfect by a clear margin
    assert 0.0 < q["half"]["ce_recovered"] < 0.95
    assert q["half"]["kl_div"] > 10 * q["perfect"]["kl_div"]
    assert q["half"]["ce_recovered_lo"] <= q["half"]["ce_recovered"] <= q["half"]["ce_recovered_hi"]


def test_padding_and_outliers_are_not_spliced():
    from featdiff.dictionaries.splice import splice_sequences

    model, tokens = _model(), _tokens(8)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 6:] = False  # right padding: 5 kept positions (1..5), CE at 1..4
    s = splice_sequences(model, {"zero": _zero()}, tokens, mask, "blocks.0.hook_resid_post")["zero"]
    assert s["n_kl"].tolist() == [5.0] * 8 and s["n_ce"].tolist() == [4.0] * 8
    s = splice_sequences(model, {"zero": _zero()}, tokens, mask, "blocks.0.hook_resid_post", max_norm=0.0)["zero"]
    assert s["n_kl"].sum() == 0 and s["kl"].sum() == 0  # every position above max_norm: nothing replaced


# ------------------------------------------------------------------------------------ compare_checkpoints


def _compare(saes, **kw):
    from featdiff.comparison.pipeline import compare_checkpoints

    base, rl = _model(), _model()
    rl.load_state_dict(base.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = compare_checkpoints(base, rl, tokens=_tokens(64), saes=saes, progress=False, **kw)
    return cmp, [str(w.message) for w in caught]


def test_compare_checkpoints_summary_has_every_quality_column():
    cmp, _ = _compare({"base": _perfect(), "rl": _perfect()}, replicas=[_perfect()])
    s = cmp.summary.loc["rl"]
    for side in ("reference", "target"):
        assert s[f"{side}_fve"] == pytest.approx(1.0, abs=1e-6)
        assert s[f"{side}_l0"] == pytest.approx(D_MODEL, abs=1e-9)  # one of +e_i / -e_i per coordinate
        assert s[f"{side}_dead_share"] == 0.0
        assert s[f"{side}_ce_recovered"] == pytest.approx(1.0, abs=1e-4)
        assert s[f"{side}_kl_div"] == pytest.approx(0.0, abs=1e-6)
        for q in ("l0", "fve", "dense_share", "ce_recovered", "kl_div"):
            assert s[f"{side}_{q}_lo"] <= s[f"{side}_{q}_hi"]
    from featdiff.comparison.table import QUALITY_SUMMARY_COLUMNS

    assert set(QUALITY_SUMMARY_COLUMNS) <= set(cmp.summary.columns)
    assert set(cmp.meta["quality"]) == {"base", "rl", "base replica 1"}
    assert cmp.meta["quality"]["base replica 1"]["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert not any("much worse" in w for w in cmp.meta["warnings"])


def test_warning_fires_for_a_much_worse_target_sae_and_not_for_a_good_one():
    cmp, issued = _compare({"base": _perfect(), "rl": _perfect(keep=8)})
    s = cmp.summary.loc["rl"]
    assert s["reference_fve"] - s["target_fve"] > 0.1
    assert s["reference_ce_recovered"] - s["target_ce_recovered"] > 0.1
    worse = [w for w in cmp.meta["warnings"] if "much worse" in w]
    assert len(worse) == 2 and all(w.startswith("rl:") and "'novel'" in w for w in worse)
    assert "max_fve_drop=0.1" in worse[0] and "max_ce_recovered_drop=0.1" in worse[1]
    assert sorted(w for w in issued if "much worse" in w) == sorted(worse)  # each issued once
    # margins wide enough to tolerate it: no warning
    from featdiff.comparison.config import CompareConfig

    cfg = CompareConfig(diagnostics={"max_fve_drop": 0.9, "max_ce_recovered_drop": 1.5})
    cmp, _ = _compare({"base": _perfect(), "rl": _perfect(keep=8)}, config=cfg)
    assert not any("much worse" in w for w in cmp.meta["warnings"])


def test_lm_eval_tokens_caps_and_zero_skips_the_splice():
    from featdiff.comparison.config import CompareConfig

    cmp, _ = _compare({"base": _perfect(), "rl": _perfect()}, config=CompareConfig(lm_eval_tokens=0))
    assert "target_ce_recovered" not in cmp.summary and "target_l0" in cmp.summary
    cmp, _ = _compare({"base": _perfect(), "rl": _perfect()}, config=CompareConfig(lm_eval_tokens=20))
    assert cmp.meta["quality"]["base"]["n_lm_tokens"] == 2 * 7  # two held-out sequences of 8 (16 <= 20 < 24), 7 replaced each


def test_held_out_windows_are_the_held_out_sequences():
    from featdiff.comparison.quality import held_out_windows

    tokens = _tokens(10)
    ids, mask = held_out_windows(tokens, {"base": _model()}, torch.tensor([7, 2, 2, 5]))
    assert torch.equal(ids, tokens[[2, 5, 7]]) and bool(mask.all())


def test_crosscoder_route_reports_quality_per_checkpoint():
    from featdiff.comparison.pipeline import compare_checkpoints

    base, rl = _model(0), _model(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = compare_checkpoints(base, rl, tokens=_tokens(64), method="crosscoder", d_sae=32, k=4,
                                  train_kwargs={"n_steps": 30}, progress=False)  # fmt: skip
    s = cmp.summary.loc["rl"]
    assert s["reference_l0"] == s["target_l0"]  # one shared code
    assert s["target_fve"] == pytest.approx(cmp.meta["quality"]["rl"]["fve"], abs=1e-6)  # evaluate: float32
    for col in ("target_ce_recovered", "reference_ce_recovered", "target_kl_div", "reference_kl_div"):
        assert np.isfinite(s[col])
    assert s["target_kl_div"] > 0  # a 30-step crosscoder reconstructs far from perfectly


def test_quality_table_lists_every_dictionary_reference_first():
    from featdiff.comparison.quality import quality_table

    cmp, _ = _compare({"base": _perfect(), "rl": _perfect(keep=8)}, replicas=[_perfect()])
    t = quality_table(cmp.meta)
    assert t.index.tolist() == ["base", "rl", "base replica 1"]
    assert t.loc["rl", "fve"] < t.loc["base", "fve"] - 0.1
    assert {"l0", "fve_lo", "dead_share", "dense_share", "ce_recovered", "kl_div_hi"} <= set(t.columns)


def test_the_report_shows_the_quality_table_and_the_warning(tmp_path):
    from featdiff.comparison.table import Comparison
    from featdiff.report.html import write_html_report

    cmp, _ = _compare({"base": _perfect(), "rl": _perfect(keep=8)})
    page = write_html_report(tmp_path / "r.html", cmp, cards=0).read_text()
    assert "SAE quality per checkpoint" in page and "<th>CE recovered</th>" in page
    assert f"{cmp.meta['quality']['base']['fve']:.3f} [" in page  # the value and its interval
    assert page.count("its SAE is much worse than the base SAE") == 2
    loaded = Comparison.load(cmp.to_dir(tmp_path / "cmp", figures=False))  # meta.json keeps the records
    assert loaded.meta["quality"]["rl"]["ce_recovered"] == pytest.approx(cmp.meta["quality"]["rl"]["ce_recovered"])
