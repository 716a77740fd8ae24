import subprocess
import sys

import featdiff


def test_public_namespace_is_pinned():
    assert sorted(featdiff.__all__) == [
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
        "export_features",
        "feature_card",
        "feature_cards",
        "feature_evolution",
        "from_sae_lens_cache",
        "generalization_features",
        "generate_greedy",
        "hook_name",
        "lab",
        "latent_scaling",
        "load_crosscoder",
        "load_model",
        "load_prompts",
        "load_sae",
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
        "save_saes",
        "svcca",
        "synthetic",
        "train_crosscoder",
        "train_saes",
        "unregister_metric",
    ]
    for name in featdiff.__all__:
        assert hasattr(featdiff, name), name


def test_import_does_no_heavy_work():
    code = (
        "import sys, featdiff; "
        "heavy = [m for m in ('sae_lens', 'transformer_lens', 'transformers', 'matplotlib') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_are_value_errors():
    assert issubclass(featdiff.FeatdiffError, ValueError)
