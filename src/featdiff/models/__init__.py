"""The models being compared: loading and saving checkpoints, hook names, the checkpoints' compatibility."""

from featdiff.models.models import (
    check_compatible,
    default_hook,
    hook_layer,
    hook_name,
    load_model,
    load_prompts,
    save_model,
    stop_layer,
)

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
