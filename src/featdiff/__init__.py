"""featdiff: what post-training did to a model's features, feature by feature.

Examples
--------
>>> import featdiff as fd
>>> cmp = fd.compare_checkpoints(base, rl, sft, tokens=tokens)   # doctest: +SKIP
>>> cmp.summary                                                  # doctest: +SKIP
"""

from featdiff import distributed, lab, synthetic  # noqa: E402
from featdiff._version import __version__
from featdiff.activations.activations import ActivationSet, OnDiskActivationSet  # noqa: E402
from featdiff.activations.collect import collect_activations  # noqa: E402
from featdiff.activations.corpus import TextCorpus  # noqa: E402
from featdiff.activations.formats import from_sae_lens_cache  # noqa: E402
from featdiff.activations.stream import ActivationStream  # noqa: E402
from featdiff.alignment.matching import Alignment, align, mmcs, svcca  # noqa: E402
from featdiff.analyses.crosscoder_view import CrosscoderView, CrosscoderViewConfig, crosscoder_view  # noqa: E402
from featdiff.analyses.evolution import feature_evolution, plot_feature_evolution  # noqa: E402
from featdiff.analyses.generalization import generalization_features, sample_codes  # noqa: E402
from featdiff.analyses.interventions import (  # noqa: E402
    FeatureEdit,
    edit_features,
    evaluate_intervention,
    generate_greedy,
)
from featdiff.comparison.pipeline import WidthCheck, compare_activations, compare_checkpoints  # noqa: E402
from featdiff.comparison.scoring import compare_crosscoder, compare_dictionaries, correct_fractions  # noqa: E402
from featdiff.comparison.table import CompareConfig, Comparison  # noqa: E402
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder  # noqa: E402
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.formats import load_crosscoder, load_sae, save_sae, save_saes
from featdiff.dictionaries.sae import SAETrainConfig, sae_from_dictionary, train_saes  # noqa: E402
from featdiff.errors import FeatdiffError  # noqa: E402
from featdiff.metrics.crosscoder import decoder_cosine, latent_scaling, mas, nrn  # noqa: E402
from featdiff.metrics.recombination import recombination  # noqa: E402
from featdiff.metrics.registry import (  # noqa: E402
    MetricContext,
    available_metrics,
    register_metric,
    unregister_metric,
)
from featdiff.metrics.reuse import base_coverage, drift, reuse  # noqa: E402
from featdiff.models.folder import load_prompts, save_model  # noqa: E402
from featdiff.models.hooks import check_compatible, default_hook, hook_name  # noqa: E402
from featdiff.models.load import load_model  # noqa: E402
from featdiff.report.cards import FeatureCard, feature_card, feature_cards  # noqa: E402
from featdiff.report.export import export_features  # noqa: E402

__all__ = [
    "ActivationSet",
    "ActivationStream",
    "Alignment",
    "CompareConfig",
    "Comparison",
    "Crosscoder",
    "CrosscoderConfig",
    "CrosscoderView",
    "CrosscoderViewConfig",
    "FeatdiffError",
    "FeatureCard",
    "FeatureEdit",
    "MetricContext",
    "OnDiskActivationSet",
    "SAETrainConfig",
    "WidthCheck",
    "TextCorpus",
    "__version__",
    "align",
    "available_metrics",
    "base_coverage",
    "check_compatible",
    "collect_activations",
    "compare_activations",
    "compare_checkpoints",
    "compare_crosscoder",
    "compare_dictionaries",
    "correct_fractions",
    "crosscoder_view",
    "decoder_cosine",
    "default_hook",
    "distributed",
    "drift",
    "edit_features",
    "evaluate_intervention",
    "feature_card",
    "feature_cards",
    "feature_evolution",
    "from_sae_lens_cache",
    "generalization_features",
    "generate_greedy",
    "hook_name",
    "lab",
    "latent_scaling",
    "load_model",
    "load_prompts",
    "load_crosscoder",
    "load_sae",
    "save_saes",
    "export_features",
    "mas",
    "mmcs",
    "nrn",
    "plot_feature_evolution",
    "recombination",
    "register_metric",
    "reuse",
    "sae_from_dictionary",
    "sample_codes",
    "save_model",
    "save_sae",
    "svcca",
    "synthetic",
    "train_crosscoder",
    "train_saes",
    "unregister_metric",
]
