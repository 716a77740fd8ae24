"""featdiff.comparison.diagnostics: each check fires where the reading is weak, stays silent where it is not, and
says what to change; compare_dictionaries emits them as FeatdiffWarnings and keeps them in meta."""

from __future__ import annotations

import math
import types

import pandas as pd
import pytest
import torch

import featdiff as fd
from featdiff.comparison.diagnostics import diagnose, emit_warnings
from featdiff.dictionaries.health import SETTLE_TOLERANCE, SETTLE_WINDOW, loss_settling
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.errors import FeatdiffError, FeatdiffWarning


def summary(**cols) -> pd.DataFrame:
    base = {"n_features": [100], "n_scored": [100], "n_dead": [0], "noise_floor_reuse": [0.8]}
    return pd.DataFrame({**base, **cols}, index=pd.Index(["rl"], name="checkpoint"))


def fake_cmp(s: pd.DataFrame, dictionaries=None, **meta):
    return types.SimpleNamespace(
        summary=s, meta={"reference": "base", **meta}, dictionaries=dictionaries or {}
    )


def test_a_clean_reading_gives_no_warning():
    assert diagnose(summary()) == []
    assert (
        diagnose(fake_cmp(summary(), n_eval_tokens=1000, reference_n_features=100, reference_n_scored=90)) == []
    )


def test_dead_latents_warn_above_the_share_and_say_what_to_change():
    assert diagnose(summary(n_scored=[50], n_dead=[50])) == []  # exactly half: not above
    (msg,) = diagnose(summary(n_scored=[49], n_dead=[51]))
    assert msg.startswith("rl: 51% of its dictionary's 100 latents (51) are not scored: never fired")
    assert "over the 49 scored ones" in msg and "smaller d_sae (about 49)" in msg
    # faint latents (fired, below min_contribution) are not scored either, and the message counts each kind
    (msg,) = diagnose(summary(n_scored=[49], n_dead=[30], n_faint=[21]))
    assert "(51) are not scored: 30 never fired (dead) and 21 fired but carried less than" in msg
    assert diagnose(summary(n_scored=[49], n_dead=[51]), max_dead_fraction=0.6) == []
    # the reference's own dead count comes from meta
    msgs = diagnose(fake_cmp(summary(), reference_n_features=2304, reference_n_scored=788))
    assert len(msgs) == 1 and msgs[0].startswith(
        "base (reference): 66% of its dictionary's 2,304 latents (1,516)"
    )


def test_a_low_noise_floor_warns_with_the_correction_factor():
    assert diagnose(summary(noise_floor_reuse=[0.34])) == []  # 1 / 0.34 = 2.9x
    (msg,) = diagnose(summary(noise_floor_reuse=[0.127]))
    assert "share only 12.7% of their scored features" in msg and "multiplies raw fractions by 7.9" in msg
    (msg,) = diagnose(summary(noise_floor_reuse=[0.0]))
    assert "the correction is undefined (q = 0)" in msg
    assert diagnose(summary(noise_floor_reuse=[float("nan")])) == []  # no floor measured: nothing to say
    # the contract's reuse_floor wins over noise_floor_reuse where both exist
    assert diagnose(summary(noise_floor_reuse=[0.1], reuse_floor=[0.9])) == []


def test_few_evaluation_tokens_per_live_feature():
    s = summary(n_features=[2304], n_scored=[1851], n_dead=[453])
    (msg,) = diagnose(fake_cmp(s, n_eval_tokens=4800))
    assert msg.startswith("rl: 4,800 evaluation tokens for 1,851 scored features (2.6 per feature")
    assert "at least 18,510 tokens" in msg
    assert diagnose(fake_cmp(s, n_eval_tokens=18_510)) == []


def test_loss_settling_on_known_curves():
    # the one rule of SAEs and crosscoders: the fall across the last 20 % of the steps before the decay
    assert (SETTLE_WINDOW, SETTLE_TOLERANCE) == (0.2, 0.02)
    assert loss_settling([1.0] * 100) == 0.0
    falling = [1.0 / (1 + 0.05 * i) for i in range(100)]  # steps [80, 90) vs [90, 100): 8.7 % lower
    assert loss_settling(falling) == pytest.approx(0.0875, abs=1e-3)
    # only the part before the lr decay counts: a drop after `end` is annealing, not "still learning"
    annealed = [1.0] * 90 + [0.9] * 10
    assert loss_settling(annealed, end=90) == 0.0 and loss_settling(annealed) == pytest.approx(0.1)
    assert math.isnan(loss_settling([1.0] * 7))  # too short to tell: not settled


def test_training_records_are_read_from_the_dictionaries():
    def sae_with(losses, n_steps=None, decay_start=None):
        sae = sae_from_dictionary(torch.eye(4), k=1)
        sae.featdiff_train = {
            "losses": losses,
            "n_steps": n_steps or len(losses),
            "lr_decay_start": decay_start,
        }
        return sae

    dicts = {
        "base": sae_with([1.0] * 100, decay_start=80),
        "rl": sae_with([1.0 / (1 + 0.05 * i) for i in range(100)], decay_start=80),
        "sft": sae_with([1.0] * 10),
    }
    msgs = diagnose(fake_cmp(summary(), dicts))
    assert [m.split(":")[0] for m in msgs] == ["rl", "sft"]
    # steps [64, 72) vs [72, 80), the last 20 % of the 80 before the decay
    assert "still fell by 8.4% over the last 20% of the steps before the learning-rate decay" in msgs[0]
    assert "only 10 steps" in msgs[1] and "train longer" in msgs[1]


def test_train_saes_records_feed_the_check():
    g = torch.Generator().manual_seed(0)
    acts = fd.ActivationSet.from_tensors({"base": torch.randn(512, 8, generator=g)})
    short = fd.train_saes(acts, k=2, n_steps=8, batch_size=128, progress=False)["base"]
    assert short.featdiff_train["lr_decay_start"] == 8 - int(0.2 * 8)
    (msg,) = diagnose(fake_cmp(summary(), {"base": short}))
    assert msg.startswith("base: its dictionary trained for only 8 steps")


def test_compare_dictionaries_emits_and_stores_the_warnings():
    W = torch.eye(8)
    saes = {"base": sae_from_dictionary(W, k=2), "rl": sae_from_dictionary(W, k=2)}
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(400, 8)
    x[:, :3] = torch.rand(400, 3, generator=g) + 0.1  # only latents 0-2 ever fire: 5 of 8 dead
    acts = fd.ActivationSet.from_tensors({"base": x, "rl": x.clone()})
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
    replica = sae_from_dictionary(Q, k=2)
    with pytest.warns(FeatdiffWarning) as rec:
        cmp = fd.compare_dictionaries(saes, acts, replicas=[replica], progress=False)
    msgs = cmp.meta["warnings"]
    assert [str(w.message) for w in rec if w.category is FeatdiffWarning] == msgs
    assert (cmp.meta["reference_n_features"], cmp.meta["reference_n_scored"]) == (8, 3)
    assert [m.split(":")[0] for m in msgs] == ["base (reference)", "rl", "noise floor"]
    assert "62% of its dictionary's 8 latents (5) are not scored: 5 never fired on the 400 evaluation tokens" in msgs[0]
    assert "share only 0.0% of their scored features, so the correction is undefined (q = 0)" in msgs[2]


def test_emit_warnings_and_bad_input():
    cmp = fake_cmp(summary(noise_floor_reuse=[0.2]))
    with pytest.warns(FeatdiffWarning, match="multiplies raw fractions by 5.0"):
        assert emit_warnings(cmp) == cmp.meta["warnings"] and len(cmp.meta["warnings"]) == 1
    with pytest.raises(FeatdiffError, match="needs a Comparison or its summary DataFrame; got dict"):
        diagnose({})
    with pytest.raises(FeatdiffError, match="'max_correction' parameter of DiagnosticsConfig"):
        diagnose(summary(), max_correction=-1)
    with pytest.raises(FeatdiffError, match=r"Unknown DiagnosticsConfig keys \['max_corection'\]"):
        diagnose(summary(), max_corection=10)


def test_warnings_name_the_callers_line_and_alike_ones_are_grouped():
    """A diagnostic from deep in the pipeline points at the line that called featdiff (this file), and the
    same warning for two checkpoints is issued once, with a count."""
    import warnings

    import torch

    import featdiff as fd
    from featdiff.dictionaries.sae import sae_from_dictionary

    W = torch.eye(16)
    saes = {n: sae_from_dictionary(W, k=2) for n in ("base", "rl", "sft")}
    x = torch.rand(40, 16)  # 40 evaluation tokens for 16 live features: the few-tokens check fires
    acts = fd.ActivationSet.from_tensors({n: x for n in saes})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = fd.compare_dictionaries(saes, acts, progress=False)
    few = [w for w in caught if "evaluation tokens" in str(w.message)]
    assert len(few) == 1 and "[2 alike: rl, sft]" in str(few[0].message), [str(w.message) for w in caught]
    assert few[0].filename == __file__
    assert sum("evaluation tokens" in m for m in cmp.meta["warnings"]) == 2  # meta keeps each
