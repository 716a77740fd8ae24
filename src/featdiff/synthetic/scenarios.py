"""The named known-answer scenarios (``SCENARIOS``): every way post-training can change a feature, each a
plan of changes over the base atoms (built by featdiff.synthetic.constructions, docs/scenarios.md).

Scenarios (``SCENARIOS``): kept, replaced_new, replaced_recombination, absorbed, split, merged,
frequency_shift, feature_absorption, dense, rare, mix, contrast and contrast_mirror (the paper's contrast
and its mirror image: an RL-like target that reuses and an SFT-like one that replaces, then with the roles
swapped). ``TUNING`` and ``HELD_OUT`` split them into two fixed halves: thresholds may be chosen on
``TUNING`` (seeds 0-3) only; ``HELD_OUT`` (and seeds >= 4) is run once, after the code is final.
"""

from __future__ import annotations

import numpy as np

from featdiff.core.config import check_int
from featdiff.errors import FeatdiffError, check_choice
from featdiff.synthetic.constructions import _assign, _feature_absorption, _frequencies, _scenario, _target
from featdiff.synthetic.planted import _unit
from featdiff.synthetic.scenario import Scenario

# one plan per named scenario: {target: {fate: fraction}} (kept takes the rest), and frequency settings
PLANS: dict[str, dict] = {
    "kept": {"targets": {"target": {}}},
    "replaced_new": {"targets": {"target": {"replaced_new": 0.4}}},
    "replaced_recombination": {"targets": {"target": {"replaced_recombination": 0.25}}},
    "absorbed": {"targets": {"target": {"absorbed": 0.2, "replaced_new": 0.15}}},
    "split": {"targets": {"target": {"split": 0.25, "replaced_new": 0.15}}},
    "merged": {"targets": {"target": {"merged": 0.3, "replaced_new": 0.15}}},
    "frequency_shift": {"targets": {"target": {"frequency_down": 0.25, "frequency_up": 0.25}}},
    "dense": {
        "targets": {"target": {"replaced_new": 0.25, "replaced_recombination": 0.15}},
        "dense": 0.15,
    },
    "rare": {"targets": {"target": {"replaced_new": 0.25, "replaced_recombination": 0.1}}, "rare": 0.3},
    "mix": {
        "targets": {
            "target": {
                "replaced_new": 0.15,
                "replaced_recombination": 0.08,
                "absorbed": 0.05,
                "split": 0.05,
                "merged": 0.06,
                "frequency_down": 0.05,
                "frequency_up": 0.05,
            }
        },
        "frequencies": "power_law",
    },
    "contrast": {
        "targets": {
            "rl": {"replaced_new": 0.08, "replaced_recombination": 0.12},
            "sft": {"replaced_new": 0.45, "replaced_recombination": 0.05},
        }
    },
    "contrast_mirror": {
        "targets": {
            "rl": {"replaced_new": 0.45, "replaced_recombination": 0.05},
            "sft": {"replaced_new": 0.08, "replaced_recombination": 0.12},
        }
    },
}

DESCRIPTIONS = {
    "kept": "every base atom kept, rotated by `angle`: reuse 1",
    "replaced_new": "40 % of the atoms replaced by new directions on the same tokens: novel",
    "replaced_recombination": "25 % replaced by a combination of 3 kept atoms on the same tokens: recombined",
    "absorbed": "20 % absorbed (the target fires 3 kept features together, no row of its own; listed in "
    "`absorbed`, in no fraction), 15 % replaced by new directions",
    "split": "25 % split into 2-3 children (cosine 0.9 / 0.8 with the parent) on partitions of its tokens "
    "(reuse), 15 % replaced by new directions",
    "merged": "30 % merged in pairs into one row (cosine 0.8 with one parent, reused; the other has no "
    "target feature), 15 % replaced by new directions",
    "frequency_shift": "every direction kept; 25 % fire on a subset (x0.3) and 25 % on a superset (x3) "
    "of their tokens: reuse 1",
    "feature_absorption": "parent/child pairs (the child fires only with its parent); the target's child "
    "row absorbs the parent's direction and its parent does not fire there: both reused; 15 % replaced by "
    "new directions",
    "dense": "15 % of the atoms dense (firing on 20-40 % of tokens), spread over kept, replaced (25 % new "
    "directions) and recombined (15 %) atoms",
    "rare": "30 % of the atoms very rare (1 in 1,000 tokens): the 25 % replaced by new directions and some "
    "kept ones; 10 % replaced by recombinations",
    "mix": "every change at once in realistic proportions, power-law frequencies",
    "contrast": "the paper's contrast: an RL-like target that reuses (80 % kept) and an SFT-like one that "
    "replaces (50 % kept, 45 % new directions)",
    "contrast_mirror": "the contrast's mirror image: the RL-like target replaces and the SFT-like one reuses",
}

SCENARIOS: tuple[str, ...] = (
    "kept",
    "replaced_new",
    "replaced_recombination",
    "absorbed",
    "split",
    "merged",
    "frequency_shift",
    "feature_absorption",
    "dense",
    "rare",
    "mix",
    "contrast",
    "contrast_mirror",
)
"""The names of every scenario (``make_scenario``'s ``name``)."""
# fixed halves (issue 16, item 4): thresholds are chosen on TUNING (seeds 0-3) only; HELD_OUT (and seeds >= 4)
# is run once, after the code is final. Each half holds kept, replaced, recombined and frequency cases.
TUNING: tuple[str, ...] = (
    "kept",
    "replaced_recombination",
    "split",
    "frequency_shift",
    "dense",
    "mix",
    "contrast",
)
"""The tuning half of ``SCENARIOS``: thresholds may be chosen on these (seeds 0-3) only."""
HELD_OUT: tuple[str, ...] = (
    "replaced_new",
    "absorbed",
    "merged",
    "feature_absorption",
    "rare",
    "contrast_mirror",
)
"""The held-out half of ``SCENARIOS``: run once (with seeds >= 4), after the code is final, reported apart."""


def make_scenario(
    name: str,
    *,
    d_in: int = 256,
    n_atoms: int = 64,
    seed: int = 0,
    angle: float = 20.0,
    k: float = 4.0,
    split_cosine: float = 0.9,
    merge_cosine: float = 0.8,
    frequency_factors: tuple[float, float] = (0.3, 3.0),
    dense_frequency: tuple[float, float] = (0.2, 0.4),
    rare_frequency: float = 1e-3,
    absorption_alpha: float = 0.6,
    noise: float = 0.05,
) -> Scenario:
    """The named scenario (one of ``SCENARIOS``) at the given settings.

    ``d_in`` / ``n_atoms``: activation width and number of base atoms; ``seed``: the dictionaries'
    draw; ``angle`` (degrees, < 45): rotation of a kept atom; ``k``: mean active atoms per token (uniform
    frequencies in [k/2, 3k/2] / n_atoms, power-law in ``mix``); ``split_cosine`` (>= 0.8): the first
    child's cosine with its parent (the others 0.1 lower); ``merge_cosine`` (> 0.7): a merged row's cosine
    with the atom it is matched to; ``frequency_factors``: (down, up) frequency ratios; ``dense_frequency``
    / ``rare_frequency``: firing probability of dense / rare atoms; ``absorption_alpha`` (< 1): how much
    of the parent's direction an absorbing child's row carries; ``noise``: Gaussian noise norm.

    Examples
    --------
    >>> s = make_scenario("replaced_new", d_in=64, n_atoms=32)
    >>> s.fractions.round(3).to_dict("index")
    {'target': {'reuse': 0.594, 'recombination': 0.0, 'novelty': 0.406}}
    >>> s.widths
    {'0.5x': 16, '1x': 32, '2x': 64, '4x': 128}
    >>> make_scenario("absorbed", d_in=64, n_atoms=32).absorbed.shape[0]
    6
    """
    check_choice("name", name, SCENARIOS, "make_scenario")
    check_int("make_scenario", "d_in", d_in, minimum=16)
    check_int("make_scenario", "n_atoms", n_atoms, minimum=16)
    if not 0 <= angle < 45:
        raise FeatdiffError(
            f"angle must be in [0, 45) degrees (a kept atom has cosine > 0.7); got {angle!r}."
        )
    if not 0.8 <= split_cosine <= 1 or not 0.7 < merge_cosine <= 1 or not 0 < absorption_alpha < 1:
        raise FeatdiffError(
            "make_scenario needs 0.8 <= split_cosine <= 1, 0.7 < merge_cosine <= 1 and "
            f"0 < absorption_alpha < 1; got {split_cosine}, {merge_cosine}, {absorption_alpha}."
        )
    params = {
        "d_in": d_in, "n_atoms": n_atoms, "seed": seed, "angle": angle, "k": k, "split_cosine": split_cosine,
        "merge_cosine": merge_cosine, "frequency_factors": tuple(frequency_factors),
        "dense_frequency": tuple(dense_frequency), "rare_frequency": rare_frequency,
        "absorption_alpha": absorption_alpha, "noise": noise,
    }
    rng = np.random.default_rng(seed)
    base = _unit(rng.standard_normal((n_atoms, d_in)))
    parents = np.full(n_atoms, -1, dtype=np.int64)
    if name == "feature_absorption":
        return _feature_absorption(base, rng, parents, params, DESCRIPTIONS["feature_absorption"])
    plan = PLANS[name]
    freqs = list(_frequencies(n_atoms, k, rng, plan.get("frequencies", "uniform")))
    if "dense" in plan:
        dense = rng.choice(n_atoms, int(round(plan["dense"] * n_atoms)), replace=False)
        for s in dense:
            freqs[s] = float(rng.uniform(*dense_frequency))
    fates = {t: _assign(n_atoms, fr, rng) for t, fr in plan["targets"].items()}
    if "rare" in plan:
        # the rare atoms: every replaced one (specialised features are rare) and kept ones up to the share
        fate = next(iter(fates.values()))
        replaced = np.flatnonzero(fate == "replaced_new")
        n_more = max(0, int(round(plan["rare"] * n_atoms)) - len(replaced))
        more = rng.choice(np.flatnonzero(fate == "kept"), n_more, replace=False)
        for s in np.concatenate([replaced, more]):
            freqs[s] = float(rare_frequency)
    kw = dict(
        angle=angle, split_cosine=split_cosine, merge_cosine=merge_cosine, frequency_factors=frequency_factors
    )
    builders = [_target(t, base, freqs, rng, fates[t], **kw) for t in plan["targets"]]
    return _scenario(name, DESCRIPTIONS[name], base, freqs, parents, builders, seed, noise, params)


def all_scenarios(names=SCENARIOS, **params) -> dict[str, Scenario]:
    """Every named scenario (or those ``names``) at the same settings (``make_scenario``'s keywords).

    Examples
    --------
    >>> sorted(TUNING + HELD_OUT) == sorted(SCENARIOS)
    True
    >>> list(all_scenarios(["kept", "merged"], d_in=64, n_atoms=32))
    ['kept', 'merged']
    """
    return {n: make_scenario(n, **params) for n in names}
