"""One crosscoder shared by every checkpoint: its config, the model, and its training."""

from featdiff.dictionaries.crosscoder.config import (
    CrosscoderConfig,
    default_crosscoder_k,
    default_crosscoder_lr,
)
from featdiff.dictionaries.crosscoder.model import Crosscoder, is_crosscoder, stack
from featdiff.dictionaries.crosscoder.train import train_crosscoder

__all__ = [
    "Crosscoder",
    "CrosscoderConfig",
    "default_crosscoder_k",
    "default_crosscoder_lr",
    "is_crosscoder",
    "stack",
    "train_crosscoder",
]
