"""The report and the printed key table say what this run measured: raw, floor and interval beside every
corrected value, indistinguishable checkpoints said to be so, warnings shown, no canned conclusion."""

from __future__ import annotations

import re
import types

import numpy as np
import pandas as pd
import pytest

from featdiff.cli import _print_key_table
from featdiff.report.html import findings, key_table, key_table_text, write_html_report

CANNED = ["typically", "RL keeps", "SFT adds", "and forgets", "the most reuse a checkpoint identical"]


def contract_summary(rl_same: bool = True, sft_same: bool = False) -> pd.DataFrame:
    """A summary with the contract's columns: rl saturated at 1.0 from raw 0.42 against a floor of 0.42."""
    rows = {
        "rl": dict(reuse=1.0, reuse_raw=0.42, reuse_floor=0.42, reuse_lo=0.85, reuse_hi=1.0, saturated=True,
                   indistinguishable_from_reference=rl_same, recombination=0.0, recombination_raw=0.03,
                   novelty=0.0, novelty_raw=0.55, drift=0.21, drift_lo=0.19, drift_hi=0.23, drift_floor=0.24,
                   transfer_fve=0.81, transfer_fve_lo=0.79, transfer_fve_hi=0.83, transfer_fve_floor=0.88,
                   noise_floor_reuse=0.42, n_scored=230, n_dead=26, n_features=256),
        "sft": dict(reuse=0.45, reuse_raw=0.19, reuse_floor=0.42, reuse_lo=0.38, reuse_hi=0.52, saturated=False,
                    indistinguishable_from_reference=sft_same, recombination=0.07, recombination_raw=0.03,
                    novelty=0.48, novelty_raw=0.78, drift=0.25, drift_lo=0.22, drift_hi=0.28, drift_floor=0.24,
                    transfer_fve=0.52, transfer_fve_lo=0.49, transfer_fve_hi=0.55, transfer_fve_floor=0.88,
                    noise_floor_reuse=0.42, n_scored=228, n_dead=28, n_features=256),
    }  # fmt: skip
    out = pd.DataFrame(rows).T.infer_objects()
    out.index.name = "checkpoint"
    return out


def cmp_of(summary: pd.DataFrame, **meta) -> types.SimpleNamespace:
    features = pd.DataFrame(
        {"checkpoint": ["rl", "sft"], "feature": [0, 0], "status": ["reused", "novel"], "drift": [0.1, np.nan]}
    )
    return types.SimpleNamespace(
        summary=summary, features=features, meta={"reference": "base", "interval_level": 0.9, **meta}
    )


ACC = pd.DataFrame(
    {"checkpoint": ["base", "rl", "sft"], "in_domain": [0.3, 0.9, 0.95], "out_of_domain": [0.99, 0.97, 0.27]}
)


def test_findings_say_rl_is_indistinguishable_and_what_sft_measured():
    rl, sft = findings(cmp_of(contract_summary()), ACC)[:2]
    assert rl.startswith("rl: raw reuse 0.420 (90% interval of the corrected reuse 0.85-1.00) against a")
    assert "base-vs-base floor of 0.420: the data cannot tell rl's features from base's" in rl
    assert "The correction hit a bound (saturated): read the raw values." in rl
    assert "drift 0.210 (floor 0.240)" in rl and "transfer_fve 0.810 (floor 0.880)" in rl
    assert sft.startswith("sft: raw reuse 0.190")
    assert "below the floor beyond noise" in sft and "so sft differs from base beyond SAE noise" in sft
    assert "reuse 0.450 (raw 0.190), recombination 0.070 (raw 0.030), novelty 0.480 (raw 0.780)" in sft
    assert "saturated" not in sft
    acc_lines = findings(cmp_of(contract_summary()), ACC)[2:]
    assert acc_lines == ["in-domain accuracy: base 0.300, sft 0.950, rl 0.900.",
                         "out-of-domain accuracy: base 0.990, sft 0.270, rl 0.970."]  # fmt: skip


def test_findings_state_the_references_own_live_and_dead_counts():
    s = contract_summary()
    s["reference_fve"] = 0.912
    lines = findings(cmp_of(s, reference_n_features=256, reference_n_scored=229, n_eval_tokens=2863))
    assert lines[0] == (
        "base (reference): 229 of its dictionary's 256 latents fired on the 2,863 evaluation tokens (27 dead); "
        "it explains 0.912 of its own activations' variance."
    )
    assert lines[1].startswith("rl: raw reuse")


def test_the_sentences_follow_the_data_not_a_template():
    flipped = findings(cmp_of(contract_summary(rl_same=False, sft_same=True)))
    assert "so rl differs from base beyond SAE noise" in flipped[0]  # raw 0.42 vs floor 0.42, but told so
    assert "cannot tell sft's features from base's" in flipped[1]
    old = contract_summary().drop(columns=[c for c in contract_summary() if c.endswith(("_lo", "_hi", "_floor"))])
    old = old.drop(columns=["indistinguishable_from_reference", "saturated"])
    (rl, _) = findings(cmp_of(old))
    assert "(interval not available in this Comparison) against a base-vs-base floor of 0.420" in rl
    assert "whether rl differs from base beyond SAE noise was not tested (no floor interval)" in rl
    assert "drift 0.210 (no floor)" in rl


def test_key_table_text_puts_raw_floor_and_interval_beside_each_corrected_value():
    t = key_table_text(cmp_of(contract_summary()))
    assert list(t.columns) == ["rl", "sft"]
    assert t.loc["reuse, raw", "rl"] == "0.420" and t.loc["reuse, floor (base vs base)", "rl"] == "0.420"
    assert t.loc["reuse, corrected", "rl"] == "1.000* [0.85, 1.00]"  # saturated: starred, never alone
    assert t.loc["reuse, corrected", "sft"] == "0.450 [0.38, 0.52]"
    assert t.loc["drift", "sft"] == "0.250 [0.22, 0.28]" and t.loc["drift, floor (base vs base)", "sft"] == "0.240"
    assert t.loc["vs base"].tolist() == ["indistinguishable", "distinguishable"]
    num = key_table(cmp_of(contract_summary()))
    assert {"reuse_raw", "reuse_floor", "reuse_lo", "reuse_hi", "indistinguishable_from_reference"} <= set(num)
    assert num.loc["rl", "reuse_raw"] == pytest.approx(0.42) and np.isnan(num.loc["base", "reuse"])


def test_html_report_states_the_measurement_and_the_warnings(tmp_path):
    warns = ["rl: 66% of its dictionary's 2,304 latents (1,516) never fired; use a smaller d_sae."]
    page = write_html_report(tmp_path / "r.html", cmp_of(contract_summary(), warnings=warns), ACC).read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "the data cannot tell rl&#x27;s features from base&#x27;s" in text
    assert "so sft differs from base beyond SAE noise" in text
    assert "Warnings: where these numbers are weak" in text and "66% of its dictionary" in text
    assert "1.000* [0.85, 1.00]" in text and "Brackets: 90% intervals." in text
    assert "reuse between two base SAEs trained on the same data with different seeds (q)" in text
    for canned in CANNED:
        assert canned not in text, canned


def test_html_report_shows_every_round_of_the_width_check(tmp_path):
    rounds = [
        {"round": 0, "d_sae": 32, "train_s": 3.0, "score_s": 1.0, "probe_s": 2.5, "wall_s": 6.5,
         "summary": {"rl": {"reuse": 0.61, "recombination": 0.03, "novelty": 0.36}},
         "reference_scored_share": 1.0, "reference_fve": 0.70, "probe_fve": 0.82, "unexplained_reduction": 0.4,
         "narrow": [], "probe_d_sae": 64, "decision": "widen to d_sae 64"},
        {"round": 1, "d_sae": 64, "train_s": 5.0, "score_s": 1.5, "wall_s": 6.5,
         "summary": {"rl": {"reuse": 0.70, "recombination": 0.15, "novelty": 0.15}}, "decision": "last round: no check"},
    ]  # fmt: skip
    config = {"min_scored": 0.9, "min_reduction": 0.2, "narrow_reference": True, "factor": 2}
    cmp = cmp_of(contract_summary(), width_check=rounds, width_check_config=config)
    text = " ".join(re.sub(r"<[^>]+>", " ", write_html_report(tmp_path / "r.html", cmp).read_text()).split())
    assert "Width check" in text and "scored share is at least 0.9" in text and "by at least 0.2" in text
    assert "widen to d_sae 64" in text and "last round: no check" in text
    assert "0.610 / 0.030 / 0.360" in text and "0.700 / 0.150 / 0.150" in text  # the first round's readings kept
    assert "6.500" in text  # its seconds
    plain = write_html_report(tmp_path / "p.html", cmp_of(contract_summary())).read_text()
    assert "Width check" not in plain  # no check ran (widen=0 or an older Comparison)


@pytest.mark.parametrize("seed", range(4))
def test_no_fixed_conclusion_whatever_the_data(tmp_path, seed):
    rng = np.random.default_rng(seed)
    s = contract_summary(rl_same=bool(rng.integers(2)), sft_same=bool(rng.integers(2)))
    s["reuse_raw"] = rng.uniform(0, 1, 2)
    page = write_html_report(tmp_path / "r.html", cmp_of(s), ACC).read_text()
    for canned in CANNED:
        assert canned not in page, canned
    for name, raw in s["reuse_raw"].items():
        assert f"{name}: raw reuse {raw:.3f}" in page
    assert "Diagnostics: not recorded in this Comparison." in page  # no meta["warnings"]: said so


def test_printed_key_table_shows_raw_floor_interval_and_findings(capsys):
    _print_key_table(cmp_of(contract_summary(), warnings=["noise floor: q is low; train longer."]), ACC)
    out = capsys.readouterr().out
    assert "1.000* [0.85, 1.00]" in out and "reuse, floor (base vs base)" in out
    assert "- rl: raw reuse 0.420" in out and "cannot tell rl's features from base's" in out
    assert "1 warning(s) about this run" in out and "! noise floor: q is low" in out
    assert "[lo, hi] = 90% interval" in out
    for canned in CANNED:
        assert canned not in out
