"""Analyses built on the comparison: feature evolution over checkpoints, generalization features,
interventions (feature edits and their effect), and the crosscoder view of a lab."""

from featdiff.analyses.crosscoder_view import CrosscoderView, CrosscoderViewConfig, crosscoder_view
from featdiff.analyses.evolution import feature_evolution, plot_feature_evolution
from featdiff.analyses.generalization import generalization_features, sample_codes
from featdiff.analyses.interventions import FeatureEdit, edit_features, evaluate_intervention, generate_greedy

__all__ = [
    "CrosscoderView",
    "CrosscoderViewConfig",
    "FeatureEdit",
    "crosscoder_view",
    "edit_features",
    "evaluate_intervention",
    "feature_evolution",
    "generalization_features",
    "generate_greedy",
    "plot_feature_evolution",
    "sample_codes",
]
