"""Sparse dictionaries of activations: one SAE per checkpoint (sae-lens) or one shared crosscoder."""

from featdiff.dictionaries.formats import (
    load_sae,  # every format (sae-lens, releases, ...)
    save_sae,
)
from featdiff.dictionaries.sae import SAETrainConfig, default_k, sae_from_dictionary, train_saes
from featdiff.dictionaries.stats import (
    code_stats,
    encode,
    explained_variance,
    firing_frequency,
    l0,
    unit_decoder,
)

__all__ = [
    "SAETrainConfig",
    "code_stats",
    "default_k",
    "encode",
    "explained_variance",
    "firing_frequency",
    "l0",
    "load_sae",
    "sae_from_dictionary",
    "save_sae",
    "train_saes",
    "unit_decoder",
]

