"""Shared builders with small defaults; every test is seeded."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


def pytest_configure(config):
    # The suite's models and dictionaries are tiny: one thread is faster than two (less sync overhead).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_sae(W_dec: torch.Tensor | None = None, d_in: int = 16, d_sae: int = 64, k: int = 4, seed: int = 0):
    """A sae-lens TopK SAE built from a dictionary (random unit rows by default)."""
    from featdiff.dictionaries.sae import sae_from_dictionary

    if W_dec is None:
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    return sae_from_dictionary(W_dec, k=k)


def planted_saes(planted, k: int | None = None) -> dict:
    """SAEs built directly from the planted dictionaries (the known-answer upper bound)."""
    k = k or max(1, int(round(2 * planted.meta["k"])))
    return {n: make_sae(D, k=k) for n, D in planted.dictionaries.items()}


@pytest.fixture
def planted():
    from featdiff.synthetic import plant_checkpoints

    return plant_checkpoints(d_in=32, n_atoms=128, seed=0)
