"""The comparison: its table and config, each feature's status, replica floors, scoring, diagnostics, and the
one-call pipelines that run every stage."""

from featdiff.comparison.config import CompareConfig
from featdiff.comparison.pipeline import compare_activations, compare_checkpoints
from featdiff.comparison.scoring import compare_crosscoder, compare_dictionaries, correct_fractions
from featdiff.comparison.table import Comparison

__all__ = [
    "CompareConfig",
    "Comparison",
    "compare_activations",
    "compare_checkpoints",
    "compare_crosscoder",
    "compare_dictionaries",
    "correct_fractions",
]
