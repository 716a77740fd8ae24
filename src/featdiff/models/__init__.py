"""The models being compared: loading and saving checkpoints, hook names, the checkpoints' compatibility."""

from featdiff.models.folder import load_prompts, save_model
from featdiff.models.hooks import check_compatible, default_hook, hook_layer, hook_name, stop_layer
from featdiff.models.load import load_model

__all__ = [
    "check_compatible",
    "default_hook",
    "hook_layer",
    "hook_name",
    "load_model",
    "load_prompts",
    "save_model",
    "stop_layer",
]
