"""Activations of the checkpoints, paired by token: in memory, on disk (shards), streamed, or converted."""

from featdiff.activations.activations import ActivationSet, OnDiskActivationSet, collect_activations
from featdiff.activations.activations import _outliers as outliers  # noqa: F401 - see below
from featdiff.activations.activations import _prepare_tokens as prepare_tokens  # noqa: F401 - see below
from featdiff.activations.formats import from_sae_lens_cache
from featdiff.activations.stream import ActivationStream

__all__ = ["ActivationSet", "ActivationStream", "OnDiskActivationSet", "collect_activations", "from_sae_lens_cache"]

# ``prepare_tokens`` and ``outliers`` (token preparation, the outlier-row rule) are shared with
# ``featdiff.distributed.collect``; activations.py still spells them privately (phase 2 of issue 17 renames
# them there and drops these aliases). Helpers of the stage, not in ``__all__``.
