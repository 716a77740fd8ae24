"""How a scenario's targets are built from its base atoms, one construction per change (``kind``).

The truth is assigned **by construction**, never by running featdiff's own definitions on the planted
dictionaries. Each construction is chosen so that the definitions (docs/metrics.md: reused = matched at
decoder cosine >= 0.7; recombined = not reused and fitted by 2-3 reference rows at cosine >= 0.9; a split
counts toward reuse; fractions are over the target's live dictionary features) give one definite answer:

| change (``kind``) | construction | truth |
|---|---|---|
| kept | the base atom rotated by ``angle`` (20 deg) | reused |
| replaced_new | a new direction far from every base atom, on its tokens | novel |
| replaced_recombination | 3 kept base atoms combined (cos < 0.65 with each), on its tokens | recombined |
| absorbed | no row: 3 kept target features fire together on its tokens, each with its own magnitude | no target feature |
| split | 2-3 children at cos 0.9 / 0.8 with it, on partitions of its tokens | reused, split |
| merged | atoms a, b -> one row at cos 0.8 with a, on both atoms' tokens | reused |
| frequency_down / _up | the kept direction on a subset (x0.3) / superset (x3) of its tokens | reused |
| absorbing_child | the child's row takes in the parent's direction (cos 0.86 with the child) | reused |
| absorbed_parent | the parent's kept row, silent where its child fires | reused |

(docs/scenarios.md gives every construction and why its answer is definite.)

An absorbed base atom is not one of the target's dictionary features, so it is in no fraction: it is
listed in ``absorbed`` (reference feature, components). A merged-away atom likewise has no target feature.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from featdiff.errors import FeatdiffError, check_choice
from featdiff.synthetic.planted import _best_fit_cosine, _power_law_frequencies, _unit
from featdiff.synthetic.scenario import ABSORBED_COLUMNS, TRUTH_COLUMNS, Scenario


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
        self.ghost_parents: dict[int, int] = {}

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

    def ghost(self, frequency: float, parent: int = -1) -> int:
        """A new slot that only targets read: extra firing on other tokens, or (``parent`` >= 0) firing on
        the parent slot's tokens with a magnitude of its own."""
        self.freqs.append(frequency)
        if parent >= 0:
            self.ghost_parents[len(self.freqs) - 1] = int(parent)
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
    # absorbed: no row of its own; the target's kept features fire together on the atom's tokens, each with
    # a magnitude of its own (a ghost slot per component that fires exactly where the atom does), so the
    # activations span the components' plane rather than one direction. With one shared magnitude they would
    # be, token for token, those of a replaced recombination, which an SAE reads as one new row.
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
            g = b.ghost(1.0, parent=int(s))
            b.terms[kept_feature[int(i)]].append((g, float(c) / norm, ALL))
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
    for b in builders:
        for g, p in b.ghost_parents.items():
            parents[g] = p
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


def _feature_absorption(base, rng, parents, params, description: str) -> Scenario:
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
        "feature_absorption", description, base, freqs, parents, [b], params["seed"],
        params["noise"], params,
    )
