"""The models being compared: loading and saving checkpoints, hook names, the checkpoints' compatibility."""

from featdiff.models.models import _load_featdiff_dir as load_featdiff_dir  # noqa: F401 - see below
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

# ``load_featdiff_dir`` (read a featdiff model folder) is used by ``featdiff.lab.store``; models.py still
# spells it privately (phase 2 of issue 17 renames it there and drops this alias). Not in ``__all__``.
