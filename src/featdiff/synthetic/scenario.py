"""A known-answer scenario: planted dictionaries, the shared codes that drive every checkpoint, and the
exact truth about every target feature (the named scenarios are featdiff.synthetic.scenarios').

A scenario plants a base dictionary of random unit atoms and one or more targets built from it, and
draws **one shared code matrix** over latent *slots* (one per base atom, plus "ghost" slots only targets
read), so the checkpoints' activations are paired by token as real ones are: ``x^c = Z^c @ D^c + noise``
with ``Z^c`` a fixed function of the shared codes (a kept feature reads its slot, a split child reads its
slot on one partition of the tokens, a merged feature reads two slots, ...). ``exact_sae`` makes an SAE
that reads a planted dictionary exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.core.config import check_int
from featdiff.errors import FeatdiffError

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
        check_int("Scenario.codes", "n_tokens", n_tokens)
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
        >>> from featdiff.synthetic.scenarios import make_scenario
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
