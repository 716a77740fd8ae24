"""Tooling keeps the shape honest: ruff is clean and the package never imports the tests."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [ruff, "check", "src", "tests", "examples", "benchmarks", "tools"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_does_not_import_tests():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src" / "featdiff").rglob("*.py")
        if "from tests" in p.read_text() or "import tests" in p.read_text()
    ]
    assert offenders == []


# No module over 600 lines, each holding one idea (issue 17); no exception.
MAX_LINES = 600


def test_no_module_grows_past_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "src").rglob("*.py")}
    assert {f: n for f, n in sorted(sizes.items()) if n > MAX_LINES} == {}


# The layers of the package, lowest first, in the order data flows (docs/architecture.md draws them). A
# module may import modules of its own layer or lower ones, never higher ones. A package's namespace
# (its __init__) re-exports its children only and sits just above them; modules import from the module
# that defines a name.
LAYERS = [
    ["_version", "constants", "errors"],
    ["core.config", "core.io", "core.threads", "core.output"],
    ["core.runstate"],
    ["core"],
    ["models.hooks"],
    ["models.folder"],
    ["models.hf", "models.gguf"],
    ["models.load"],
    ["models"],
    # the lab builds checkpoints from models (a source of models); its analysis is analyses.crosscoder_view
    ["lab.task"],
    ["lab.config"],
    ["lab.suite", "lab.decoding"],
    ["lab.train", "lab.evaluation"],
    ["lab.store"],
    ["lab"],
    ["activations.shards", "activations.corpus", "activations.folder"],
    ["activations.tokens", "activations.capture", "activations.activations"],
    ["activations.collect", "activations.stream", "activations.formats"],
    ["activations"],
    ["dictionaries.stats", "dictionaries.health"],
    ["dictionaries.quality", "dictionaries.splice"],
    ["dictionaries.batched", "dictionaries.crosscoder.config"],
    ["dictionaries.sae", "dictionaries.crosscoder.model"],
    ["dictionaries.crosscoder.train", "dictionaries.finetune"],
    ["dictionaries.crosscoder"],
    ["dictionaries.formats"],
    ["dictionaries"],
    ["distributed.ranks"],
    ["distributed.collect", "distributed.train"],
    ["distributed"],
    ["alignment.matching"],
    ["alignment"],
    ["metrics.reuse", "metrics.recombination", "metrics.coverage", "metrics.crosscoder", "metrics.registry", "metrics.uncertainty"],
    ["metrics.quality"],
    ["metrics"],
    ["synthetic.planted", "synthetic.crosscoder", "synthetic.scenario"],
    ["synthetic.constructions"],
    ["synthetic.scenarios"],
    ["synthetic"],
    # the report's views of single objects (drawn by the table's own methods: Comparison.plot, feature_card)
    ["report.figures", "report.card_html", "report.compact"],
    ["report.cards"],
    ["comparison.config"],
    ["comparison.quality"],
    ["comparison.table", "comparison.diagnostics"],
    ["comparison.statuses", "comparison.width", "comparison.finetune"],
    ["comparison.replicas"],
    ["comparison.scoring"],
    ["comparison.pipeline"],
    ["comparison"],
    # the report's documents of a whole comparison
    ["report.quality_html"],
    ["report.html", "report.export"],
    ["report"],
    ["analyses.interventions.edit", "analyses.evolution"],
    ["analyses.interventions.edit_hooks"],
    ["analyses.interventions.generation", "analyses.interventions.controls"],
    ["analyses.interventions.evaluate"],
    ["analyses.interventions"],
    ["analyses.generalization"],
    ["analyses.crosscoder_view.config"],
    ["analyses.crosscoder_view.view", "analyses.crosscoder_view.tables", "analyses.crosscoder_view.intervention_table"],
    ["analyses.crosscoder_view.run"],
    ["analyses.crosscoder_view"],
    ["analyses"],
    [""],  # featdiff: the public API
    ["cli_args", "cli", "__main__"],
]


def _modules() -> dict[str, Path]:
    pkg = ROOT / "src" / "featdiff"
    names = {}
    for p in pkg.rglob("*.py"):
        parts = p.relative_to(pkg).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return names


def _type_only(tree) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    import ast

    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _import_nodes():
    """(module, the featdiff module it imports from, the names it imports) for every import in the package."""
    import ast

    names = _modules()
    for name, p in names.items():
        tree = ast.parse(p.read_text())
        skip = _type_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "featdiff":
                base = node.module[len("featdiff") :].lstrip(".")
                for a in node.names:
                    child = f"{base}.{a.name}".lstrip(".")
                    yield (name, child, []) if child in names else (name, base, [a.name])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "featdiff":
                        yield name, a.name[len("featdiff") :].lstrip("."), []


def _imports() -> dict[str, set[str]]:
    """module -> featdiff modules it imports (module level or inside functions), from the source."""
    out = {name: set() for name in _modules()}
    for name, target, _ in _import_nodes():
        if target != name:
            out[name].add(target)
    return out


def test_every_module_has_a_layer():
    layered = {m for layer in LAYERS for m in layer}
    assert sorted(set(_imports()) - layered) == []


def test_no_module_imports_a_higher_layer():
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = sorted((m, d) for m, deps in _imports().items() for d in deps if level[d] > level[m])
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def _package(module: str) -> str:
    return module if module in _PACKAGES else module.rpartition(".")[0]


_PACKAGES = {m for m, p in _modules().items() if p.name == "__init__.py"}


def test_no_module_imports_another_packages_private_name():
    # `_x` (a name, or a module in the path) is private to the package that holds it and its subpackages
    offenders = []
    for name, target, imported in _import_nodes():
        parts = target.split(".") if target else []
        holders = [".".join(parts[:i]) for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
        holders += [target if target in _PACKAGES else _package(target) for n in imported if n.startswith("_") and not n.startswith("__")]
        mine = _package(name)
        for holder in holders:
            if not (mine == holder or mine.startswith(holder + ".") or holder == ""):
                offenders.append((name, target, imported))
    assert sorted(set((a, b, tuple(c)) for a, b, c in offenders)) == []


def test_modules_import_names_from_the_module_that_defines_them():
    # a package's namespace (its __init__) only re-exports; a module reads a name from its defining module,
    # so no module depends on a whole namespace (and no namespace is a bridge between two modules)
    offenders = sorted(
        {
            (name, target, tuple(imported))
            for name, target, imported in _import_nodes()
            if imported and target in _PACKAGES and name not in _PACKAGES
        }
    )
    assert offenders == []


def test_import_featdiff_leaves_the_heavy_libraries_unloaded():
    # import time itself is measured in benchmarks/bench_import.py; here: nothing slow is imported eagerly
    heavy = ["sae_lens", "transformer_lens", "transformers", "matplotlib", "scipy.optimize"]
    code = f"import sys, featdiff; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        m for layer in LAYERS for m in layer if m and "." not in m and m not in page and not m.startswith("__")
    ]
    missing += [m.split(".")[-1] for layer in LAYERS for m in layer if "." in m and m.split(".")[-1] not in page]
    assert missing == []
