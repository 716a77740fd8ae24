"""One crosscoder shared by every checkpoint: its config, the model, and its training."""

from featdiff.dictionaries.crosscoder.model import Crosscoder, CrosscoderConfig, stack, train_crosscoder

__all__ = ["Crosscoder", "CrosscoderConfig", "stack", "train_crosscoder"]
