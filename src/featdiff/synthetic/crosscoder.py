"""Known-answer data for crosscoders: atoms shared by every checkpoint, and atoms specific to one.

Every token draws one sparse code over all atoms. A shared atom adds ``code * u^m`` to every checkpoint
m (u^m the same unit direction, or a slightly rotated copy per checkpoint); an m-specific atom adds
``code * v`` to checkpoint m only. So a crosscoder should find the shared atoms with decoder rows in
every checkpoint and the m-specific atoms with a decoder row in m alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.stats import unit_decoder
from featdiff.errors import FeatdiffError
from featdiff.metrics.crosscoder import mas


def plant_shared_specific(
    names: Sequence[str] = ("base", "rl", "sft"),
    d_in: int = 32,
    n_shared: int = 24,
    n_specific: Mapping[str, int] | None = None,
    k: float = 4.0,
    seed: int = 0,
    n_tokens: int = 8192,
    rotation: float = 0.0,
    noise: float = 0.0,
    scales: Mapping[str, float] | None = None,
) -> tuple[ActivationSet, pd.DataFrame]:
    """Paired activations built from shared and checkpoint-specific atoms, and the truth about each atom.

    Each atom fires independently with probability ``k / n_atoms`` (so about ``k`` atoms per token),
    with a code uniform in [0.5, 1.5]. ``n_specific`` defaults to 6 atoms for every checkpoint except
    the first. ``rotation`` mixes a per-checkpoint random direction into each shared atom (0: identical);
    ``noise`` adds isotropic Gaussian noise; ``scales`` multiplies a checkpoint's activations (to test the
    normalisation).

    Returns the ActivationSet and a DataFrame with one row per atom: ``atom`` (int), ``category`` (str:
    "shared" or the checkpoint name), ``frequency`` (float, fraction of tokens where it fires). The atom
    directions are in ``truth.attrs["directions"]``: {checkpoint: Float[Tensor, "n_atoms d_in"]}, unit rows,
    zero rows where the atom is absent from that checkpoint (scales not applied).

    Examples
    --------
    >>> acts, truth = plant_shared_specific(d_in=8, n_shared=4, n_specific={"rl": 2}, n_tokens=100)
    >>> acts.names, acts.n_tokens, truth["category"].value_counts().to_dict()
    (['base', 'rl', 'sft'], 100, {'shared': 4, 'rl': 2})
    >>> truth.attrs["directions"]["base"].shape
    torch.Size([6, 8])
    """
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise FeatdiffError(f"plant_shared_specific needs at least 2 distinct checkpoint names; got {names}.")
    if n_specific is None:
        n_specific = {n: 6 for n in names[1:]}
    unknown = sorted(set(n_specific) - set(names))
    if unknown:
        raise FeatdiffError(f"n_specific names {unknown} are not among the checkpoints {names}.")
    scales = dict(scales or {})
    if n_shared < 0 or any(v < 0 for v in n_specific.values()) or d_in <= 0 or n_tokens <= 0:
        raise FeatdiffError("d_in, n_tokens must be positive and the atom counts non-negative.")
    categories = ["shared"] * n_shared + [n for n in names for _ in range(n_specific.get(n, 0))]
    n_atoms = len(categories)
    if n_atoms == 0:
        raise FeatdiffError("Plant at least one atom (n_shared or n_specific).")
    if not 0 < k <= n_atoms:
        raise FeatdiffError(f"k (atoms per token) must be in (0, {n_atoms}]; got {k}.")

    g = torch.Generator().manual_seed(seed)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    atoms = unit(torch.randn(n_atoms, d_in, generator=g))
    directions = {}
    for name in names:
        dirs = torch.zeros(n_atoms, d_in)
        jitter = unit(torch.randn(n_shared, d_in, generator=g))
        dirs[:n_shared] = unit(atoms[:n_shared] + rotation * jitter)
        for i, c in enumerate(categories):
            if c == name:
                dirs[i] = atoms[i]
        directions[name] = dirs

    fires = torch.rand(n_tokens, n_atoms, generator=g) < k / n_atoms
    codes = fires * (0.5 + torch.rand(n_tokens, n_atoms, generator=g))
    tensors = {}
    for name in names:
        x = codes @ directions[name]
        if noise > 0:
            x = x + noise * torch.randn(n_tokens, d_in, generator=g)
        tensors[name] = x * float(scales.get(name, 1.0))
    truth = pd.DataFrame(
        {"atom": range(n_atoms), "category": categories, "frequency": fires.float().mean(0).numpy()}
    )
    truth.attrs["directions"] = directions
    return ActivationSet.from_tensors(tensors, hook="synthetic.hook_planted"), truth


def planted_recovery(cc, truth: pd.DataFrame, min_cos: float = 0.9) -> dict[str, float]:
    """Per planted category, the fraction of atoms a crosscoder recovered.

    An atom is recovered when the crosscoder feature whose decoder row (in the atom's own checkpoint; the
    first checkpoint for shared atoms) is most similar to it has cosine >= ``min_cos`` and the atom's MAS
    category (MAS of its decoder norms: "shared" or the checkpoint's name).

    Examples
    --------
    >>> from featdiff.dictionaries.crosscoder import train_crosscoder
    >>> acts, truth = plant_shared_specific(d_in=8, n_shared=4, n_specific={"rl": 2}, n_tokens=512)
    >>> cc = train_crosscoder(acts, d_sae=16, k=2, n_steps=5, progress=False)
    >>> sorted(planted_recovery(cc, truth))
    ['rl', 'shared']
    """
    dirs, cat = truth.attrs["directions"], mas(cc)["category"]
    hits: dict[str, list[bool]] = {}
    for atom, category in zip(truth["atom"], truth["category"], strict=True):
        name = cc.names[0] if category == "shared" else category
        cos = unit_decoder(cc.decoder(name)) @ dirs[name][atom].float()
        j = int(cos.argmax())
        hits.setdefault(category, []).append(bool(cos[j] >= min_cos and cat[j] == category))
    return {c: sum(v) / len(v) for c, v in hits.items()}
