"""Deprecated module path (featdiff < 0.2): the comparison now lives in ``featdiff.comparison`` (the table),
``featdiff.comparison.scoring`` (compare_dictionaries, compare_crosscoder) and ``featdiff.comparison.pipeline``
(compare_checkpoints); every name is also at the top, ``featdiff.<name>``. Importing from here works for
one release with a DeprecationWarning."""

import importlib
import warnings

_MOVED = {
    "CompareConfig": "featdiff.comparison",
    "Comparison": "featdiff.comparison",
    "FEATURE_COLUMNS": "featdiff.comparison",
    "STATUSES": "featdiff.comparison",
    "SUMMARY_COLUMNS": "featdiff.comparison",
    "code_stats": "featdiff.dictionaries.stats",
    "compare_checkpoints": "featdiff.comparison.pipeline",
    "compare_crosscoder": "featdiff.comparison.scoring",
    "compare_dictionaries": "featdiff.comparison.scoring",
    "correct_fractions": "featdiff.comparison.scoring",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'featdiff.compare' has no attribute {name!r}")
    warnings.warn(
        f"featdiff.compare.{name} moved to {_MOVED[name]}.{name} (also featdiff.{name} where public); "
        "featdiff.compare goes away in 0.3.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
