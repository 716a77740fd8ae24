"""Sparse dictionaries of activations: one SAE per checkpoint (sae-lens) or one shared crosscoder."""

import warnings

from featdiff.dictionaries.formats import load_sae  # every format (sae-lens, releases, ...)
from featdiff.dictionaries.sae import (
    SAETrainConfig,
    default_k,
    sae_from_dictionary,
    save_sae,
    train_saes,
)
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


def __getattr__(name: str):
    if name == "decoder_directions":  # renamed in 0.2; the old name works for one release
        warnings.warn(
            "featdiff.dictionaries.decoder_directions is deprecated; use featdiff.dictionaries.unit_decoder.",
            DeprecationWarning,
            stacklevel=2,
        )
        return unit_decoder
    raise AttributeError(f"module 'featdiff.dictionaries' has no attribute {name!r}")
