import subprocess
import sys

import featdiff

# featdiff.__all__, group by group as its comments say (the pipeline; the stages in data-flow order; the tables
# and configs; the extension points; the namespaces; the error and the version), each group sorted
GROUPS = [
    ["compare_checkpoints"],
    ["hook_name", "load_model", "save_model"],
    [
        "ActivationSet",
        "ActivationStream",
        "OnDiskActivationSet",
        "TextCorpus",
        "collect_activations",
        "from_sae_lens_cache",
    ],
    [
        "Crosscoder",
        "load_crosscoder",
        "load_sae",
        "sae_from_dictionary",
        "save_sae",
        "save_saes",
        "train_crosscoder",
        "train_saes",
    ],
    ["align", "mmcs", "svcca"],
    ["base_coverage", "decoder_cosine", "drift", "latent_scaling", "mas", "nrn", "recombination", "reuse"],
    ["compare_activations", "compare_crosscoder", "compare_dictionaries"],
    ["export_features", "feature_card", "feature_cards"],
    [
        "crosscoder_view",
        "edit_features",
        "evaluate_intervention",
        "feature_evolution",
        "generalization_features",
        "generate_greedy",
        "plot_feature_evolution",
    ],
    [
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
    ],
    ["MetricContext", "available_metrics", "register_metric", "unregister_metric"],
    ["distributed", "lab", "synthetic"],
    ["FeatdiffError", "__version__"],
]


def test_public_namespace_is_pinned():
    assert featdiff.__all__ == [name for group in GROUPS for name in group]
    assert all(group == sorted(group) for group in GROUPS)
    assert len(set(featdiff.__all__)) == len(featdiff.__all__)
    for name in featdiff.__all__:
        assert hasattr(featdiff, name), name


def test_the_groups_of_all_are_commented_in_the_source():
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", root / "tools" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mkdocs_hooks", hooks)
    spec.loader.exec_module(hooks)
    groups = hooks.api_groups("featdiff")
    assert [names for _, names in groups] == GROUPS
    assert all(title for title, _ in groups)
    assert groups[0][1] == ["compare_checkpoints"]  # the API page opens on the pipeline


def test_stage_helpers_stay_in_their_packages():
    # not for users at the top, still public in their stage's package
    from featdiff.analyses import sample_codes
    from featdiff.models import check_compatible, default_hook, load_prompts

    assert all(callable(f) for f in (sample_codes, check_compatible, default_hook, load_prompts))
    helpers = {"correct_fractions", "sample_codes", "check_compatible", "default_hook", "load_prompts"}
    assert not helpers & set(featdiff.__all__)


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


def _public_objects():
    """Every public function and class (with its public methods and properties) that featdiff and its
    namespaces in __all__ export: what help() shows a user."""
    import inspect

    def members(obj):
        yield obj
        if inspect.isclass(obj):
            for name, v in vars(obj).items():
                if not name.startswith("_"):
                    yield v.fget if isinstance(v, property) else v

    for name in featdiff.__all__:
        obj = getattr(featdiff, name)
        inner = [getattr(obj, n) for n in getattr(obj, "__all__", [])] if inspect.ismodule(obj) else [obj]
        for o in inner:
            for m in members(o):
                if (inspect.isroutine(m) or inspect.isclass(m)) and isinstance(m.__doc__, str):
                    yield f"{name}.{getattr(m, '__qualname__', m)}", m


def test_public_docstrings_fit_110_columns_and_the_entry_points_have_parameters():
    objs = dict(_public_objects())
    assert len(objs) > 100
    long = [(n, len(line)) for n, o in objs.items() for line in o.__doc__.splitlines() if len(line) > 110]
    assert not long, long
    for fn in (featdiff.compare_checkpoints, featdiff.compare_activations, featdiff.compare_dictionaries):
        doc = fn.__doc__
        assert "Parameters\n    ----------" in doc and "Examples\n    --------" in doc, fn.__name__
        import inspect

        undocumented = [p for p in inspect.signature(fn).parameters if p not in doc.split("Examples")[0]]
        assert not undocumented, (fn.__name__, undocumented)
