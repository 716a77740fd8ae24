"""Activations of the checkpoints, paired by token: in memory, on disk (shards), streamed, or converted."""

from featdiff.activations.activations import ActivationSet, OnDiskActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.activations.corpus import TextCorpus
from featdiff.activations.formats import from_sae_lens_cache
from featdiff.activations.stream import ActivationStream

__all__ = [
    "ActivationSet",
    "ActivationStream",
    "OnDiskActivationSet",
    "TextCorpus",
    "collect_activations",
    "from_sae_lens_cache",
]
