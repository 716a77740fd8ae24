"""Deprecated module path (featdiff < 0.2): the crosscoder view of the lab lives in ``featdiff.analyses.crosscoder_view``
(and at the top, ``featdiff.crosscoder_view``). Importing from here works for one release with a
DeprecationWarning."""

import importlib
import warnings


def __getattr__(name: str):
    module = importlib.import_module("featdiff.analyses.crosscoder_view")
    if not hasattr(module, name):
        raise AttributeError(f"module 'featdiff.analysis' has no attribute {name!r}")
    warnings.warn(
        f"featdiff.analysis.{name} moved to featdiff.analyses.crosscoder_view.{name}; featdiff.analysis goes away in 0.3.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
