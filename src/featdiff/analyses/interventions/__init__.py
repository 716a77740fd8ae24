"""Interventions: feature edits inside one model's forward pass (edit.py, edit_hooks.py), greedy generation
under an edit (generation.py), matched random controls and p-values (controls.py), and the task effect of
edits against their controls (evaluate.py)."""

from featdiff.analyses.interventions.controls import (
    ALTERNATIVES,
    N_CONTROLS,
    add_holm,
    default_alternative,
    empirical_p_value,
    feature_codes,
    holm,
    live_features,
    matched_controls,
    random_features,
)
from featdiff.analyses.interventions.edit import (
    CODES,
    EDIT_SITE,
    MODES,
    FeatureEdit,
    dictionary_d_sae,
    dictionary_hook,
    dictionary_kind,
    feature_edit_hook_name,
)
from featdiff.analyses.interventions.edit_hooks import edit_features, hooks, other_activations
from featdiff.analyses.interventions.evaluate import EVAL_COLUMNS, evaluate_intervention
from featdiff.analyses.interventions.generation import exact_match, generate_greedy

__all__ = [
    "ALTERNATIVES",
    "CODES",
    "EDIT_SITE",
    "EVAL_COLUMNS",
    "MODES",
    "N_CONTROLS",
    "FeatureEdit",
    "add_holm",
    "default_alternative",
    "dictionary_d_sae",
    "dictionary_hook",
    "dictionary_kind",
    "edit_features",
    "empirical_p_value",
    "evaluate_intervention",
    "exact_match",
    "feature_codes",
    "feature_edit_hook_name",
    "generate_greedy",
    "holm",
    "hooks",
    "live_features",
    "matched_controls",
    "other_activations",
    "random_features",
]
