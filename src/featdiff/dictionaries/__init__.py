"""Sparse dictionaries of activations: one SAE per checkpoint (sae-lens) or one shared crosscoder."""

from featdiff.dictionaries.sae import (
    SAETrainConfig,
    decoder_directions,
    default_k,
    encode,
    explained_variance,
    firing_frequency,
    l0,
    load_sae,
    sae_from_dictionary,
    save_sae,
    train_saes,
)

__all__ = [
    "SAETrainConfig",
    "decoder_directions",
    "default_k",
    "encode",
    "explained_variance",
    "firing_frequency",
    "l0",
    "load_sae",
    "sae_from_dictionary",
    "save_sae",
    "train_saes",
]
