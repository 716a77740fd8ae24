"""featdiff: what post-training did to a model's features, feature by feature.

Examples
--------
>>> import featdiff as fd
>>> cmp = fd.compare_checkpoints(base, rl, sft, tokens=tokens)   # doctest: +SKIP
>>> cmp.summary                                                  # doctest: +SKIP

The public names, in ``__all__``, come in groups: the pipeline (one call), then each stage in the order the
data flows (models, activations, dictionaries, alignment, metrics, comparison, report, analyses), the
tables and configs those return and take, the extension points, and the namespaces of the lab, the
synthetic checkpoints and the distributed runs. Each stage's helpers stay in its package
(``featdiff.models``, ``featdiff.activations``, ...); docs/architecture.md draws the tree.
"""

from featdiff import distributed, lab, synthetic
from featdiff._version import __version__
from featdiff.activations.activations import ActivationSet, OnDiskActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.activations.corpus import TextCorpus
from featdiff.activations.formats import from_sae_lens_cache
from featdiff.activations.stream import ActivationStream
from featdiff.alignment.matching import Alignment, align, mmcs, svcca
from featdiff.analyses.crosscoder_view.config import CrosscoderViewConfig
from featdiff.analyses.crosscoder_view.run import crosscoder_view
from featdiff.analyses.crosscoder_view.view import CrosscoderView
from featdiff.analyses.evolution import feature_evolution, plot_feature_evolution
from featdiff.analyses.generalization import generalization_features
from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.analyses.interventions.edit_hooks import edit_features
from featdiff.analyses.interventions.evaluate import evaluate_intervention
from featdiff.analyses.interventions.generation import generate_greedy
from featdiff.comparison.config import CompareConfig, WidthCheck
from featdiff.comparison.pipeline import compare_activations, compare_checkpoints
from featdiff.comparison.scoring import compare_crosscoder, compare_dictionaries
from featdiff.comparison.table import Comparison
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.formats import load_crosscoder, load_sae, save_sae, save_saes
from featdiff.dictionaries.sae import SAETrainConfig, sae_from_dictionary, train_saes
from featdiff.errors import FeatdiffError
from featdiff.metrics.crosscoder import decoder_cosine, latent_scaling, mas, nrn
from featdiff.metrics.recombination import recombination
from featdiff.metrics.registry import MetricContext, available_metrics, register_metric, unregister_metric
from featdiff.metrics.reuse import base_coverage, drift, reuse
from featdiff.models.folder import save_model
from featdiff.models.hooks import hook_name
from featdiff.models.load import load_model
from featdiff.report.cards import FeatureCard, feature_card, feature_cards
from featdiff.report.export import export_features

__all__ = [
    # the pipeline: checkpoints in, a Comparison out (load, collect, train, align, score)
    "compare_checkpoints",
    # models: load and save checkpoints, name their hooks
    "hook_name",
    "load_model",
    "save_model",
    # activations: the same tokens through every checkpoint, paired by token
    "ActivationSet",
    "ActivationStream",
    "OnDiskActivationSet",
    "TextCorpus",
    "collect_activations",
    "from_sae_lens_cache",
    # dictionaries: SAEs (sae-lens) and crosscoders, trained or loaded
    "Crosscoder",
    "load_crosscoder",
    "load_sae",
    "sae_from_dictionary",
    "save_sae",
    "save_saes",
    "train_crosscoder",
    "train_saes",
    # alignment: each target feature matched to the reference's
    "align",
    "mmcs",
    "svcca",
    # metrics: reuse, drift, recombination, coverage; a crosscoder's MAS, NRN, decoder cosine, latent scaling
    "base_coverage",
    "decoder_cosine",
    "drift",
    "latent_scaling",
    "mas",
    "nrn",
    "recombination",
    "reuse",
    # comparison: the pipeline from activations, or the scoring of dictionaries you already have
    "compare_activations",
    "compare_crosscoder",
    "compare_dictionaries",
    # report: feature cards, the per-feature JSON (the HTML report is Comparison.to_dir)
    "export_features",
    "feature_card",
    "feature_cards",
    # analyses: features over checkpoints, generalization features, feature edits, a lab's crosscoder view
    "crosscoder_view",
    "edit_features",
    "evaluate_intervention",
    "feature_evolution",
    "generalization_features",
    "generate_greedy",
    "plot_feature_evolution",
    # tables and configs: what the stages return and take
    "Alignment",
    "CompareConfig",
    "Comparison",
    "CrosscoderConfig",
    "CrosscoderView",
    "CrosscoderViewConfig",
    "FeatureCard",
    "FeatureEdit",
    "SAETrainConfig",
    "WidthCheck",
    # extension points: your own metrics join every Comparison
    "MetricContext",
    "available_metrics",
    "register_metric",
    "unregister_metric",
    # namespaces: the lab (base, SFT and RL checkpoints to study), planted checkpoints, runs under torchrun
    "distributed",
    "lab",
    "synthetic",
    # errors: the error every check raises, and the version
    "FeatdiffError",
    "__version__",
]
