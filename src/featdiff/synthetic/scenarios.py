"""Named known-answer scenarios: every way post-training can change a feature, with the exact truth.

Each scenario plants a base dictionary of random unit atoms and one or more targets built from it, and
draws **one shared code matrix** over latent *slots* (one per base atom, plus "ghost" slots only targets
read), so the checkpoints' activations are paired by token as real ones are: ``x^c = Z^c @ D^c + noise``
with ``Z^c`` a fixed function of the shared codes (a kept feature reads its slot, a split child reads its
slot on one partition of the tokens, a merged feature reads two slots, ...).

The truth is assigned **by construction**, never by running featdiff's own definitions on the planted
dictionaries. Each construction is chosen so that the definitions (docs/metrics.md: reused = matched at
decoder cosine >= 0.7; recombined = not reused and fitted by 2-3 reference rows at cosine >= 0.9; a split
counts toward reuse; fractions are over the target's live dictionary features) give one definite answer:

| change (``kind``) | construction | truth |
|---|---|---|
| kept | the base atom rotated by ``angle`` (20 deg) | reused |
| replaced_new | a new direction far from every base atom, on its tokens | novel |
| replaced_recombination | 3 kept base atoms combined (cos < 0.65 with each), on its tokens | recombined |
| absorbed | no row: 3 kept target features fire together on its tokens | no target feature |
| split | 2-3 children at cos 0.9 / 0.8 with it, on partitions of its tokens | reused, split |
| merged | atoms a, b -> one row at cos 0.8 with a, on both atoms' tokens | reused |
| frequency_down / _up | the kept direction on a subset (x0.3) / superset (x3) of its tokens | reused |
| absorbing_child | the child's row takes in the parent's direction (cos 0.86 with the child) | reused |
| absorbed_parent | the parent's kept row, silent where its child fires | reused |

(docs/scenarios.md gives every construction and why its answer is definite.)

An absorbed base atom is not one of the target's dictionary features, so it is in no fraction: it is
listed in ``absorbed`` (reference feature, components). A merged-away atom likewise has no target feature.

Scenarios (``SCENARIOS``): kept, replaced_new, replaced_recombination, absorbed, split, merged,
frequency_shift, feature_absorption, dense, rare, mix, contrast and contrast_mirror (the paper's contrast
and its mirror image: an RL-like target that reuses and an SFT-like one that replaces, then with the roles
swapped). ``TUNING`` and ``HELD_OUT`` split them into two fixed halves: thresholds may be chosen on
``TUNING`` (seeds 0-3) only; ``HELD_OUT`` (and seeds >= 4) is run once, after the code is final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.errors import FeatdiffError, check_choice
from featdiff.synthetic.planted import _best_fit_cosine, _power_law_frequencies, _unit

TRUTH_COLUMNS = ["checkpoint", "feature", "status", "kind", "source", "components", "frequency_ratio"]
ABSORBED_COLUMNS = ["checkpoint", "reference_feature", "components"]
WIDTHS = {"0.5x": 0.5, "1x": 1.0, "2x": 2.0, "4x": 4.0}
EXACT_THRESHOLD = 0.3


@dataclass
class Scenario:
    """A named scenario: planted dictionaries, the rule that turns the shared codes into each checkpoint's
    codes, and the truth about every target feature.

    ``dictionaries``: checkpoint -> (n_features, d_in) unit rows (the reference first); ``truth``: one row
    per target feature (TRUTH_COLUMNS: ``status`` the answer DESIGN's definitions give, reused | split |
    recombined | novel; ``kind`` the change that made it; ``source`` the base atom it comes from or -1;
    ``components`` (base atom, coefficient) of a recombination; ``frequency_ratio`` its firing frequency
    over its source's); ``absorbed``: base atoms a target carries by firing kept features together
    (ABSORBED_COLUMNS). ``frequencies``: firing probability of every slot (the first ``n_atoms`` are the
    base atoms'); ``parents``: per slot, the slot it fires only with (-1: none).
    """

    name: str
    description: str
    dictionaries: dict[str, Float[Tensor, "n_features d_in"]]
    truth: pd.DataFrame
    absorbed: pd.DataFrame
    frequencies: np.ndarray
    parents: np.ndarray
    terms: dict[str, list[list[tuple]]] = field(repr=False)
    reference: str = "base"
    noise: float = 0.05
    magnitude: tuple[float, float] = (0.5, 1.5)
    seed: int = 0
    params: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.dictionaries)

    @property
    def targets(self) -> list[str]:
        return [n for n in self.dictionaries if n != self.reference]

    @property
    def d_in(self) -> int:
        return int(self.dictionaries[self.reference].shape[1])

    @property
    def n_atoms(self) -> int:
        """The planted count: the number of base atoms (the reference's dictionary features)."""
        return int(self.dictionaries[self.reference].shape[0])

    @property
    def widths(self) -> dict[str, int]:
        """SAE widths at 0.5x, 1x, 2x and 4x the planted count, for trained-SAE benchmarks."""
        return {k: max(1, int(round(v * self.n_atoms))) for k, v in WIDTHS.items()}

    @property
    def fractions(self) -> pd.DataFrame:
        """True fractions per target over its dictionary features: reuse (reused + split), recombination,
        novelty (they sum to 1)."""
        t = self.truth
        c = pd.crosstab(t["checkpoint"], t["status"], normalize="index")
        c = c.reindex(columns=["reused", "split", "recombined", "novel"], fill_value=0.0)
        out = pd.DataFrame(
            {"reuse": c["reused"] + c["split"], "recombination": c["recombined"], "novelty": c["novel"]}
        )
        out.index.name = "checkpoint"
        return out.loc[[n for n in self.targets if n in out.index]]

    def codes(self, n_tokens: int, seed: int = 1) -> tuple[Tensor, Tensor]:
        """The shared codes over the slots (n_tokens, n_slots) and the shared uniforms (same shape) that
        partition a split atom's tokens and thin a less frequent one."""
        if not isinstance(n_tokens, int) or n_tokens <= 0:
            raise FeatdiffError(f"n_tokens must be a positive integer; got {n_tokens!r}.")
        g = torch.Generator().manual_seed(seed)
        n_slots = len(self.frequencies)
        freq = torch.as_tensor(self.frequencies, dtype=torch.float32)
        active = torch.rand(n_tokens, n_slots, generator=g) < freq
        for c in np.flatnonzero(self.parents >= 0):  # a child fires only where its parent fires
            active[:, c] &= active[:, int(self.parents[c])]
        lo, hi = self.magnitude
        Z = active * (lo + (hi - lo) * torch.rand(n_tokens, n_slots, generator=g))
        U = torch.rand(n_tokens, n_slots, generator=g)
        return Z, U

    def checkpoint_codes(self, name: str, Z: Tensor, U: Tensor) -> Float[Tensor, "n_tokens n_features"]:
        """Checkpoint ``name``'s codes over its dictionary features, from the shared ``codes``."""
        out = torch.zeros(len(Z), len(self.terms[name]))
        for f, terms in enumerate(self.terms[name]):
            for slot, weight, gate in terms:
                z = Z[:, slot] * weight
                if gate[0] == "part":
                    z = z * (torch.floor(U[:, slot] * gate[2]) == gate[1])
                elif gate[0] == "keep":
                    z = z * (U[:, slot] < gate[1])
                elif gate[0] == "unless":
                    z = z * (Z[:, gate[1]] == 0)
                out[:, f] += z
        return out

    def sample(self, n_tokens: int = 20_000, seed: int = 1) -> ActivationSet:
        """Paired activations of every checkpoint on ``n_tokens`` tokens (one shared code matrix).

        Examples
        --------
        >>> s = make_scenario("split", d_in=64, n_atoms=32)
        >>> acts = s.sample(500)
        >>> acts.names, acts.n_tokens, acts.d_model
        (['base', 'target'], 500, 64)
        """
        Z, U = self.codes(n_tokens, seed)
        g = torch.Generator().manual_seed(seed + 10_000)
        acts = {}
        for name, D in self.dictionaries.items():
            x = self.checkpoint_codes(name, Z, U) @ D
            if self.noise > 0:
                x = x + self.noise * torch.randn(x.shape, generator=g) / self.d_in**0.5
            acts[name] = x
        meta = {"scenario": self.name, "scenario_seed": self.seed, "sample_seed": seed}
        return ActivationSet(acts, hook="planted", meta=meta)

    def exact_saes(self, threshold: float = EXACT_THRESHOLD) -> dict:
        """One exact SAE per checkpoint (``exact_sae``: W_dec = D, W_enc = D.T, b_enc = -threshold)."""
        return {n: exact_sae(D, threshold) for n, D in self.dictionaries.items()}


def exact_sae(W_dec: Float[Tensor, "d_sae d_in"], threshold: float = EXACT_THRESHOLD):
    """An SAE made exactly from a planted dictionary: W_dec = D, W_enc = D.T, b_enc = -``threshold`` (a
    ReLU SAE whose matched filters fire where an atom is present and stay silent on the interference of the
    others; a top-k SAE with b_enc = 0 instead fires its features on much of the data).

    Examples
    --------
    >>> sae = exact_sae(torch.eye(3), threshold=0.3)
    >>> sae.encode(torch.tensor([[1.0, 0.2, 0.0]])).detach()
    tensor([[0.7000, 0.0000, 0.0000]])
    """
    from featdiff.dictionaries.sae import sae_from_dictionary

    if not threshold >= 0:
        raise FeatdiffError(f"exact_sae needs a threshold >= 0; got {threshold!r}.")
    sae = sae_from_dictionary(W_dec, architecture="standard")
    with torch.no_grad():
        sae.b_enc.fill_(-float(threshold))
    return sae


# ---- construction ------------------------------------------------------------------------------------


def _rotate(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` with unit ``v`` (rotated towards a random orthogonal direction)."""
    u = rng.standard_normal(len(v))
    u = _unit(u - (u @ v) * v)
    return cosine * v + math.sqrt(max(0.0, 1 - cosine**2)) * u


def _novel(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for _ in range(2000):
        v = _unit(rng.standard_normal(base.shape[1]))
        if np.abs(base @ v).max() < 0.5 and _best_fit_cosine(v, base) < 0.8:
            return v
    raise FeatdiffError(
        f"Could not draw a new direction far from {len(base)} base atoms in d_in={base.shape[1]}; use a "
        "larger d_in or fewer atoms."
    )


def _recombination(base: np.ndarray, pool: np.ndarray, drawn: set, rng: np.random.Generator):
    """A positive combination of 3 atoms of ``pool``: cosine < 0.65 with every base atom (not reused) and
    a triple not drawn before."""
    if len(pool) < 3:
        raise FeatdiffError("A recombination needs at least 3 kept base atoms; keep more atoms.")
    for _ in range(2000):
        idx = rng.choice(pool, size=3, replace=False)
        coef = rng.uniform(0.8, 1.0, size=3)
        v = _unit(coef @ base[idx])
        if np.abs(base @ v).max() < 0.65 and frozenset(idx.tolist()) not in drawn:
            drawn.add(frozenset(idx.tolist()))
            return v, idx, coef
    raise FeatdiffError(
        "Could not draw a recombination below cosine 0.65 with every base atom; use a larger d_in."
    )


FATES = (
    "kept",
    "replaced_new",
    "replaced_recombination",
    "absorbed",
    "split",
    "merged",
    "frequency_down",
    "frequency_up",
)


def _assign(n_atoms: int, plan: dict[str, float], rng: np.random.Generator, exclude=()) -> np.ndarray:
    """A fate per base atom with the planned fractions (``kept`` takes the rest), at random slots."""
    unknown = set(plan) - set(FATES)
    if unknown:
        raise FeatdiffError(f"Unknown fates {sorted(unknown)}; allowed: {list(FATES)}.")
    free = np.setdiff1d(rng.permutation(n_atoms), np.asarray(exclude, dtype=np.int64), assume_unique=False)
    free = free[rng.permutation(len(free))]
    fate = np.full(n_atoms, "kept", dtype=object)
    start = 0
    for name in FATES[1:]:
        n = int(round(plan.get(name, 0.0) * n_atoms))
        if name == "merged":
            n -= n % 2  # merged atoms come in pairs
        fate[free[start : start + n]] = name
        start += n
    if start > len(free):
        raise FeatdiffError(f"The fates {plan} take more than all {n_atoms} atoms.")
    return fate


class _Builder:
    """Collects one target's features (direction, code terms) and truth rows."""

    def __init__(self, name: str, base: np.ndarray, freqs: list, rng: np.random.Generator, angle: float):
        self.name, self.base, self.freqs, self.rng = name, base, freqs, rng
        self.kept_cosine = math.cos(math.radians(angle))
        self.rows: list[np.ndarray] = []
        self.terms: list[list[tuple]] = []
        self.truth: list[dict] = []
        self.absorbed: list[dict] = []

    def add(self, v, terms, status, kind, source=-1, components=(), ratio=1.0) -> int:
        self.rows.append(np.asarray(v, dtype=float))
        self.terms.append(list(terms))
        f = len(self.rows) - 1
        self.truth.append(
            {
                "checkpoint": self.name,
                "feature": f,
                "status": status,
                "kind": kind,
                "source": int(source),
                "components": [(int(i), float(c)) for i, c in components],
                "frequency_ratio": float(ratio),
            }
        )
        return f

    def ghost(self, frequency: float) -> int:
        """A new slot that only targets read (extra firing on other tokens)."""
        self.freqs.append(frequency)
        return len(self.freqs) - 1


ALL = ("all",)


def _target(
    name: str,
    base: np.ndarray,
    freqs: list,
    rng: np.random.Generator,
    fate: np.ndarray,
    angle: float,
    split_cosine: float,
    merge_cosine: float,
    frequency_factors: tuple[float, float],
    n_children: tuple[int, ...] = (2, 3),
) -> _Builder:
    """Build one target from a fate per base atom (see the module's table)."""
    b = _Builder(name, base, freqs, rng, angle)
    kept = np.flatnonzero(fate == "kept")
    kept_feature: dict[int, int] = {}
    for s in kept:
        v = _rotate(base[s], b.kept_cosine, rng)
        kept_feature[int(s)] = b.add(v, [(int(s), 1.0, ALL)], "reused", "kept", s)
    drawn: set = set()
    for s in np.flatnonzero(fate == "replaced_new"):
        b.add(_novel(base, rng), [(int(s), 1.0, ALL)], "novel", "replaced_new", s)
    for s in np.flatnonzero(fate == "replaced_recombination"):
        v, idx, coef = _recombination(base, kept, drawn, rng)
        b.add(v, [(int(s), 1.0, ALL)], "recombined", "replaced_recombination", s, zip(idx, coef, strict=True))
    for s in np.flatnonzero(fate == "split"):
        k = int(rng.choice(n_children))
        for c in range(k):
            cos = split_cosine if c == 0 else split_cosine - 0.1
            b.add(
                _rotate(base[s], cos, rng),
                [(int(s), 1.0, ("part", c, k))],
                "reused" if c == 0 else "split",
                "split",
                s,
                ratio=1.0 / k,
            )
    pairs = rng.permutation(np.flatnonzero(fate == "merged")).reshape(-1, 2)
    for a, c in pairs:
        other = _unit(base[c] - (base[c] @ base[a]) * base[a])
        v = merge_cosine * base[a] + math.sqrt(1 - merge_cosine**2) * other
        ratio = (freqs[a] + freqs[c]) / freqs[a]
        b.add(v, [(int(a), 1.0, ALL), (int(c), 1.0, ALL)], "reused", "merged", a, ratio=ratio)
    down, up = frequency_factors
    for s in np.flatnonzero(fate == "frequency_down"):
        v = _rotate(base[s], b.kept_cosine, rng)
        b.add(v, [(int(s), 1.0, ("keep", down))], "reused", "frequency_down", s, ratio=down)
    for s in np.flatnonzero(fate == "frequency_up"):
        g = b.ghost(min(1.0, (up - 1) * freqs[s]))
        v = _rotate(base[s], b.kept_cosine, rng)
        b.add(v, [(int(s), 1.0, ALL), (g, 1.0, ALL)], "reused", "frequency_up", s, ratio=up)
    # absorbed: no row of its own; the target's kept features fire together on the atom's tokens, with
    # weights that make their decoded sum a unit combination of the kept (rotated) rows
    for s in np.flatnonzero(fate == "absorbed"):
        if len(kept) < 3:
            raise FeatdiffError("An absorbed atom needs at least 3 kept base atoms; keep more atoms.")
        for _ in range(2000):
            idx = rng.choice(kept, size=3, replace=False)
            coef = rng.uniform(0.8, 1.0, size=3)
            rows = np.stack([b.rows[kept_feature[int(i)]] for i in idx])
            v = coef @ rows
            if np.abs(base @ _unit(v)).max() < 0.65 and frozenset(idx.tolist()) not in drawn:
                drawn.add(frozenset(idx.tolist()))
                break
        else:
            raise FeatdiffError("Could not draw an absorbed recombination; use a larger d_in.")
        norm = float(np.linalg.norm(v))
        for i, c in zip(idx, coef, strict=True):
            b.terms[kept_feature[int(i)]].append((int(s), float(c) / norm, ALL))
        comps = [(int(i), float(c)) for i, c in zip(idx, coef, strict=True)]
        b.absorbed.append({"checkpoint": name, "reference_feature": int(s), "components": comps})
    return b


def _frequencies(n_atoms: int, k: float, rng: np.random.Generator, kind: str = "uniform", exponent=1.0):
    check_choice("frequencies", kind, ("uniform", "power_law"), "make_scenario")
    if kind == "uniform":
        lo = 0.5 * k / n_atoms
        return rng.uniform(lo, 3 * lo, size=n_atoms)
    return _power_law_frequencies(n_atoms, k, exponent, rng)


def _scenario(name, description, base, freqs, parents, builders, seed, noise, params) -> Scenario:
    freqs = np.asarray(freqs, dtype=float)
    parents = np.concatenate([parents, np.full(len(freqs) - len(parents), -1, dtype=np.int64)])
    n = len(base)
    dictionaries = {"base": torch.from_numpy(base).float()}
    terms = {"base": [[(s, 1.0, ALL)] for s in range(n)]}
    truth, absorbed = [], []
    for b in builders:
        dictionaries[b.name] = torch.from_numpy(np.stack(b.rows)).float()
        terms[b.name] = b.terms
        truth += b.truth
        absorbed += b.absorbed
    return Scenario(
        name=name,
        description=description,
        dictionaries=dictionaries,
        truth=pd.DataFrame(truth, columns=TRUTH_COLUMNS),
        absorbed=pd.DataFrame(absorbed, columns=ABSORBED_COLUMNS),
        frequencies=freqs,
        parents=parents,
        terms=terms,
        noise=noise,
        seed=seed,
        params=params,
    )


def _check(d_in: int, n_atoms: int) -> None:
    if not (isinstance(d_in, int) and isinstance(n_atoms, int)) or d_in < 16 or n_atoms < 16:
        raise FeatdiffError(
            f"A scenario needs integers d_in >= 16 and n_atoms >= 16; got {d_in!r}, {n_atoms!r}."
        )


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
    _check(d_in, n_atoms)
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
        return _feature_absorption(base, rng, parents, params)
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


def _feature_absorption(base, rng, parents, params) -> Scenario:
    """Parent/child pairs: the child slot fires only where its parent's does (on half of its tokens). The
    target keeps every other atom (15 % replaced by new directions); its child row is unit(c + alpha p)
    (cosine 1/sqrt(1 + alpha^2) >= 0.7 with the child: reused) and its parent row (kept, rotated) does not
    fire where the child does (frequency ratio < 1)."""
    n = len(base)
    freqs = list(_frequencies(n, params["k"], rng))
    n_pairs = max(1, int(round(0.15 * n)))
    order = rng.permutation(n)
    par, chi = order[:n_pairs], order[n_pairs : 2 * n_pairs]
    for p, c in zip(par, chi, strict=True):
        freqs[p] = max(freqs[p], 2 * freqs[c])  # a general parent, a specific child
        parents[c] = p
        freqs[c] = 0.5  # fires on half of the parent's tokens
    fate = _assign(n, {"replaced_new": 0.15}, rng, exclude=np.concatenate([par, chi]))
    b = _Builder("target", base, freqs, rng, params["angle"])
    alpha = params["absorption_alpha"]
    pairs = dict(zip(par.tolist(), chi.tolist(), strict=True))
    children = set(chi.tolist())
    for s in range(n):
        if s in children:
            continue
        if s in pairs:
            c = pairs[s]
            v = _rotate(base[s], b.kept_cosine, rng)
            ratio = 1 - freqs[c]
            b.add(v, [(s, 1.0, ("unless", c))], "reused", "absorbed_parent", s, ratio=ratio)
            w = base[c] + alpha * base[s]
            b.add(_unit(w), [(c, float(np.linalg.norm(w)), ALL)], "reused", "absorbing_child", c)
        elif fate[s] == "replaced_new":
            b.add(_novel(base, rng), [(s, 1.0, ALL)], "novel", "replaced_new", s)
        else:
            b.add(_rotate(base[s], b.kept_cosine, rng), [(s, 1.0, ALL)], "reused", "kept", s)
    return _scenario(
        "feature_absorption", DESCRIPTIONS["feature_absorption"], base, freqs, parents, [b], params["seed"],
        params["noise"], params,
    )


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
