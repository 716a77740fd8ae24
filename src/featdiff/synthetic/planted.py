"""Activations from planted dictionaries whose true reuse / recombination / novelty is known.

A base dictionary of random unit atoms; each target checkpoint keeps some atoms (slightly rotated),
replaces others by near-duplicates of base atoms it also keeps (split), by sparse combinations of 2-3 base
atoms (recombined) or by new directions (novel); a target may also be an exact copy of the base.
Every token draws one sparse code over the atom *slots*, shared by all checkpoints, so the activations are
paired by construction: ``x^c = code @ D^c + noise``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.errors import FeatdiffError, check_choice

STATUSES = ("reused", "recombined", "novel")
CATEGORIES = ("reused", "split", "recombined", "novel")  # split counts toward reuse
FREQUENCIES = ("uniform", "power_law")
DEFAULT_TARGETS = {
    "rl": {"reused": 0.8, "recombined": 0.1, "novel": 0.1},
    "sft": {"reused": 0.5, "recombined": 0.2, "novel": 0.3},
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _best_fit_cosine(v: np.ndarray, atoms: np.ndarray, max_atoms: int = 3) -> float:
    """Cosine of v with its greedy (OMP) fit by at most ``max_atoms`` rows of ``atoms``."""
    chosen: list[int] = []
    residual = v.copy()
    fit = np.zeros_like(v)
    for _ in range(max_atoms):
        chosen.append(int(np.argmax(np.abs(atoms @ residual))))
        basis = atoms[chosen].T
        coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
        fit = basis @ coef
        residual = v - fit
    return float(fit @ v / (np.linalg.norm(fit) * np.linalg.norm(v) + 1e-12))


def _power_law_frequencies(n_atoms: int, k: float, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Firing probabilities proportional to rank^-exponent, shuffled, capped at 1, summing to ``k``."""
    w = np.arange(1, n_atoms + 1, dtype=float) ** -exponent
    f = np.zeros(n_atoms)
    free = np.ones(n_atoms, bool)
    for _ in range(n_atoms):  # water-filling: cap at 1 and spread the excess over the others
        f[free] = w[free] * (k - f[~free].sum()) / w[free].sum()
        over = free & (f > 1)
        if not over.any():
            break
        f[over], free[over] = 1.0, False
    return f[rng.permutation(n_atoms)]


@dataclass
class PlantedCheckpoints:
    """Planted dictionaries of a base and its targets, and the truth about every target atom."""

    dictionaries: dict[str, Float[Tensor, "n_atoms d_in"]]
    truth: pd.DataFrame
    frequencies: Float[Tensor, " n_atoms"]
    noise: float = 0.0
    seed: int = 0
    magnitude: tuple[float, float] = (0.5, 1.5)
    meta: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.dictionaries)

    @property
    def d_in(self) -> int:
        return next(iter(self.dictionaries.values())).shape[1]

    @property
    def n_atoms(self) -> int:
        return next(iter(self.dictionaries.values())).shape[0]

    @property
    def fractions(self) -> pd.DataFrame:
        """True fractions per target: columns reuse, recombination, novelty (they sum to 1; split atoms
        count toward reuse, as the ``split`` status does in a Comparison)."""
        c = self.categories
        out = pd.DataFrame(
            {"reuse": c["reused"] + c["split"], "recombination": c["recombined"], "novelty": c["novel"]}
        )
        return out

    @property
    def categories(self) -> pd.DataFrame:
        """True fraction of every category per target: columns reused, split, recombined, novel."""
        t = self.truth
        out = pd.crosstab(t["checkpoint"], t["status"], normalize="index")
        out = out.reindex(columns=list(CATEGORIES), fill_value=0.0)
        out.index.name = "checkpoint"
        out.columns.name = None
        return out.loc[[n for n in self.names if n in out.index]]

    def codes(self, n_tokens: int, seed: int = 1) -> Float[Tensor, "n_tokens n_atoms"]:
        """Sparse non-negative codes over the atom slots (shared by every checkpoint)."""
        if n_tokens <= 0:
            raise FeatdiffError(f"n_tokens must be positive; got {n_tokens}.")
        g = torch.Generator().manual_seed(seed)
        active = torch.rand(n_tokens, self.n_atoms, generator=g) < self.frequencies
        lo, hi = self.magnitude
        mags = lo + (hi - lo) * torch.rand(n_tokens, self.n_atoms, generator=g)
        return active * mags

    def sample(self, n_tokens: int, seed: int = 1) -> ActivationSet:
        """Paired activations of every checkpoint on ``n_tokens`` tokens.

        Examples
        --------
        >>> planted = plant_checkpoints(d_in=16, n_atoms=32, seed=0)
        >>> acts = planted.sample(100)
        >>> acts.names, acts.n_tokens, acts.d_model
        (['base', 'rl', 'sft'], 100, 16)
        """
        code = self.codes(n_tokens, seed)
        g = torch.Generator().manual_seed(seed + 10_000)
        acts = {}
        for name, D in self.dictionaries.items():
            x = code @ D
            if self.noise > 0:
                x = x + self.noise * torch.randn(x.shape, generator=g) / self.d_in**0.5
            acts[name] = x
        return ActivationSet(acts, hook="planted", meta={"planted_seed": self.seed, "sample_seed": seed})


def plant_checkpoints(
    d_in: int = 64,
    n_atoms: int | None = None,
    targets: dict[str, dict[str, float]] | None = None,
    k: float = 4.0,
    kept_cosine: float = 0.95,
    n_components: tuple[int, ...] = (2, 3),
    noise: float = 0.05,
    seed: int = 0,
    reference: str = "base",
    recombine_from: str = "dropped",
    frequencies: str = "uniform",
    power_law_exponent: float = 1.0,
    split_cosine: float = 0.99,
) -> PlantedCheckpoints:
    """Plant a base dictionary and targets with known fractions of reused, recombined and novel atoms.

    ``targets`` maps a checkpoint name to fractions ``{"reused", "recombined", "novel"}`` of its atoms
    (they must sum to 1). ``k`` is the mean number of active atoms per token; ``kept_cosine`` is the
    cosine between a kept atom and its base atom (a small rotation); a recombined atom is a positive
    combination of 2-3 base atoms with cosine < 0.7 to each of them (so it is not "reused"), drawn from the
    base atoms the target drops (``recombine_from="dropped"``: features merged into one, which an SAE
    must learn as a unit) or keeps (``"kept"``: then an SAE may rebuild it from its kept components, a
    form of feature absorption, and recombination is under-counted); a novel atom is a random direction
    that no 3 base atoms fit with cosine >= 0.8. A split atom (fraction ``"split"``) is a near-duplicate,
    cosine ``split_cosine``, of a base atom that the target also keeps (feature splitting; it counts toward
    reuse). A target given as the string ``"identical"`` is an exact copy of the base; ``{"novel": 1.0}``
    shares nothing with it. ``truth.status`` names every target atom's category (reused, split,
    recombined, novel), so ``fractions`` / ``categories`` are exact.

    ``frequencies="uniform"`` draws every atom's firing probability in [k/2, 3k/2] / n_atoms;
    ``"power_law"`` makes it proportional to rank^-``power_law_exponent`` (a few frequent atoms, a long
    tail of rare ones; shuffled over the slots, capped at 1), with the same mean number ``k`` of active
    atoms per token.

    Examples
    --------
    >>> p = plant_checkpoints(d_in=16, n_atoms=40,
    ...                       targets={"rl": {"reused": .5, "recombined": .25, "novel": .25}})
    >>> p.fractions.round(2).to_dict("index")
    {'rl': {'reuse': 0.5, 'recombination': 0.25, 'novelty': 0.25}}
    >>> q = plant_checkpoints(d_in=16, n_atoms=40,
    ...                       targets={"same": "identical", "sp": {"reused": .8, "split": .2}})
    >>> same = bool((q.dictionaries["same"] == q.dictionaries["base"]).all())
    >>> q.categories.round(2).to_dict("index")["sp"], same
    ({'reused': 0.8, 'split': 0.2, 'recombined': 0.0, 'novel': 0.0}, True)
    """
    n_atoms = 4 * d_in if n_atoms is None else n_atoms
    targets = DEFAULT_TARGETS if targets is None else targets
    if reference in targets:
        raise FeatdiffError(f"A target may not be named like the reference {reference!r}.")
    if n_atoms < 4 or d_in < 4:
        raise FeatdiffError(f"plant_checkpoints needs d_in >= 4 and n_atoms >= 4; got {d_in}, {n_atoms}.")
    check_choice("recombine_from", recombine_from, ("dropped", "kept"), "plant_checkpoints")
    check_choice("frequencies", frequencies, FREQUENCIES, "plant_checkpoints")
    if not 0.7 <= split_cosine <= 1:
        raise FeatdiffError(f"split_cosine must be in [0.7, 1] (a near-duplicate); got {split_cosine}.")
    if not 0 < k < n_atoms:
        raise FeatdiffError(f"k (active atoms per token) must be in (0, n_atoms); got {k}.")
    rng = np.random.default_rng(seed)
    base = _unit(rng.standard_normal((n_atoms, d_in)))
    dictionaries = {reference: base}
    rows = []
    for name, fr in targets.items():
        if isinstance(fr, str) and fr == "identical":
            dictionaries[name] = base.copy()
            rows += [
                {"checkpoint": name, "atom": s, "status": "reused", "source": s, "components": []}
                for s in range(n_atoms)
            ]
            continue
        unknown = set(fr) - set(CATEGORIES) if isinstance(fr, dict) else {fr}
        if unknown or abs(sum(fr.values()) - 1) > 1e-6:
            raise FeatdiffError(
                f"Fractions of target {name!r} must use keys {list(CATEGORIES)} and sum to 1 (or be the "
                f"string 'identical'); got {fr}."
            )
        counts = {s: int(round(fr.get(s, 0.0) * n_atoms)) for s in STATUSES[1:]}
        counts["reused"] = n_atoms - sum(counts.values())
        slots = rng.permutation(n_atoms)
        fate = np.empty(n_atoms, dtype=object)
        fate[slots[: counts["reused"]]] = "reused"
        fate[slots[counts["reused"] : counts["reused"] + counts["recombined"]]] = "recombined"
        fate[slots[counts["reused"] + counts["recombined"] :]] = "novel"
        n_split = int(round(fr.get("split", 0.0) * n_atoms))
        if n_split:
            kept = np.flatnonzero(fate == "reused")
            if n_split >= len(kept):
                raise FeatdiffError(
                    f"Target {name!r} splits {n_split} atoms but keeps only {len(kept)}; a split atom "
                    "duplicates a kept one: raise its 'reused' fraction."
                )
            split_slots = kept[rng.permutation(len(kept))[:n_split]]
            fate[split_slots] = "split"
            sources = rng.choice(np.setdiff1d(kept, split_slots), n_split)
            split_src = dict(zip(split_slots.tolist(), sources.tolist(), strict=True))
        pool = np.flatnonzero((fate == "reused") == (recombine_from == "kept"))
        if counts["recombined"] and len(pool) < max(n_components):
            raise FeatdiffError(
                f"Target {name!r} recombines atoms but has only {len(pool)} {recombine_from} base atoms "
                f"to build them from; lower its 'reused' fraction or use recombine_from='kept'."
            )
        D = np.empty_like(base)
        drawn: set[frozenset] = set()
        for s in range(n_atoms):
            row = {"checkpoint": name, "atom": s, "status": fate[s], "source": -1, "components": []}
            if fate[s] == "split":
                src = int(split_src[s])
                u = rng.standard_normal(d_in)
                u = _unit(u - (u @ base[src]) * base[src])
                D[s] = split_cosine * base[src] + np.sqrt(1 - split_cosine**2) * u
                row["source"] = src
            elif fate[s] == "reused":
                u = rng.standard_normal(d_in)
                u = _unit(u - (u @ base[s]) * base[s])
                D[s] = kept_cosine * base[s] + np.sqrt(1 - kept_cosine**2) * u
                row["source"] = s
            elif fate[s] == "recombined":
                for _ in range(1000):
                    m = int(rng.choice(n_components))
                    idx = rng.choice(pool, size=m, replace=False)
                    coef = rng.uniform(0.8, 1.0, size=m)
                    v = _unit(coef @ base[idx])
                    # not "reused" by any one component, and not a second copy of a combination
                    # already drawn (two slots with the same direction are one feature, not two)
                    if (base[idx] @ v).max() < 0.65 and frozenset(idx.tolist()) not in drawn:
                        break
                else:
                    raise FeatdiffError(f"Could not draw recombined atoms for {name!r}; use a larger d_in.")
                D[s] = v
                drawn.add(frozenset(idx.tolist()))
                row["components"] = [(int(i), float(c)) for i, c in zip(idx, coef, strict=True)]
            else:
                for _ in range(1000):
                    v = _unit(rng.standard_normal(d_in))
                    if np.abs(base @ v).max() < 0.5 and _best_fit_cosine(v, base) < 0.8:
                        break
                else:
                    raise FeatdiffError(
                        f"Could not draw novel atoms far from {n_atoms} base atoms in d_in={d_in}; "
                        "use a larger d_in or fewer atoms."
                    )
                D[s] = v
            rows.append(row)
        dictionaries[name] = D
    if frequencies == "uniform":
        lo = 0.5 * k / n_atoms
        freqs = torch.from_numpy(rng.uniform(lo, 3 * lo, size=n_atoms)).float()
    else:
        freqs = torch.from_numpy(_power_law_frequencies(n_atoms, k, power_law_exponent, rng)).float()
    return PlantedCheckpoints(
        dictionaries={n: torch.from_numpy(D).float() for n, D in dictionaries.items()},
        truth=pd.DataFrame(rows, columns=["checkpoint", "atom", "status", "source", "components"]),
        frequencies=freqs,
        noise=noise,
        seed=seed,
        meta={
            "k": k,
            "kept_cosine": kept_cosine,
            "reference": reference,
            "frequencies": frequencies,
            "split_cosine": split_cosine,
        },
    )


def known_answer_table(summary: pd.DataFrame, planted: PlantedCheckpoints) -> pd.DataFrame:
    """Score a Comparison summary against the planted truth: one row per (checkpoint, category) with
    truth, estimate, lo, hi, error, tolerance, within (|error| <= tolerance) and covered (lo <= truth <= hi).
    Categories: reuse, recombination, novelty; the corrected reading where the summary has one, else (no
    floor: the corrected columns are NaN) the raw one (``<col>_raw``). The tolerance is relative to the category's size:
    min(0.1, truth / 3) where truth >= 0.15; 2/3 of the truth where 0 < truth < 0.15 (a category of 0.1
    must be found at >= 0.034: 0.0 does not pass); 0.1 where the truth is 0.

    Examples
    --------
    >>> p = plant_checkpoints(d_in=16, n_atoms=40, targets={"rl": {"reused": .5, "recombined": .25, "novel": .25}})
    >>> s = pd.DataFrame({"reuse": [.5], "recombination": [0.0], "novelty": [.5]}, index=["rl"])
    >>> known_answer_table(s, p)[["category", "truth", "within"]].to_dict("list")
    {'category': ['reuse', 'recombination', 'novelty'], 'truth': [0.5, 0.25, 0.25], 'within': [True, False, False]}
    """
    truth = planted.fractions
    rows = []
    for name in summary.index:
        if name not in truth.index:
            continue
        for col in truth.columns:
            read = col
            if not np.isfinite(float(summary.loc[name, col])) and f"{col}_raw" in summary:
                read = f"{col}_raw"  # no noise floor: no corrected reading, the raw one
            t, e = float(truth.loc[name, col]), float(summary.loc[name, read])
            lo = float(summary.loc[name, f"{read}_lo"]) if f"{read}_lo" in summary else float("nan")
            hi = float(summary.loc[name, f"{read}_hi"]) if f"{read}_hi" in summary else float("nan")
            err = e - t
            tol = 0.1 if t == 0 else (min(0.1, t / 3) if t >= 0.15 else 2 * t / 3)
            rows.append(
                {
                    "checkpoint": name,
                    "category": col,
                    "truth": t,
                    "estimate": e,
                    "lo": lo,
                    "hi": hi,
                    "error": err,
                    "tolerance": tol,
                    "within": bool(abs(err) <= tol + 1e-9),
                    "covered": bool(lo - 1e-9 <= t <= hi + 1e-9),
                }
            )
    return pd.DataFrame(rows)
