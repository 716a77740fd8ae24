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


def test_no_module_grows_past_1000_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "src").rglob("*.py")}
    assert max(sizes.values()) < 1000, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


# The layers of the package, lowest first (docs/architecture.md draws them). A module may import modules of
# its own layer or lower ones, never higher ones; package __init__ files only re-export their children.
LAYERS = [
    ["_version", "constants", "errors", "_config", "_io", "_threads", "_output", "_checkpoint", "_shards"],
    ["models"],
    ["corpus"],
    ["activations", "activation_stream", "activation_formats"],
    ["dictionaries.stats"],
    ["dictionaries._batched"],
    ["dictionaries.sae", "dictionaries.crosscoder"],
    ["cards"],
    ["dictionaries.formats"],
    ["distributed"],
    ["align"],
    ["metrics.reuse", "metrics.recombination", "metrics.coverage", "metrics.crosscoder", "metrics.registry", "metrics.uncertainty"],
    ["synthetic.planted", "synthetic.crosscoder"],
    ["figures"],
    ["comparison", "diagnostics"],
    ["statuses"],
    ["_replicas"],
    ["score", "interventions", "evolution"],
    ["generalization"],
    ["pipeline"],
    ["report"],
    ["lab.task", "lab.config", "lab.suite", "lab.decoding", "lab.train", "lab.evaluation", "lab.store"],
    ["lab.analysis"],
    ["", "lab", "dictionaries", "metrics", "synthetic"],  # the package namespaces (re-exports only)
    ["cli", "__main__", "compare", "analysis"],  # the command line; deprecated module paths (shims)
]
# Deprecated aliases that must reach up until they are removed (0.3): Crosscoder.nrn() & co.
ALLOWED_UPWARD = {("dictionaries.crosscoder", "metrics.crosscoder")}


def _imports() -> dict[str, set[str]]:
    """module -> featdiff modules it imports (module level or inside functions), from the source."""
    import ast

    pkg = ROOT / "src" / "featdiff"
    names = {}
    for p in pkg.rglob("*.py"):
        parts = p.relative_to(pkg).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    out = {}
    for name, p in names.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "featdiff":
                base = node.module[len("featdiff") :].lstrip(".")
                mods = [f"{base}.{a.name}".lstrip(".") for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                mods = [a.name[len("featdiff") :].lstrip(".") for a in node.names if a.name.startswith("featdiff")]
            for m in mods:
                if m in names:  # the longest name that is a module: `from featdiff.x import y` -> x.y or x
                    deps.add(m)
                    break
        deps.discard(name)
        out[name] = deps
    return out


def test_every_module_has_a_layer():
    layered = {m for layer in LAYERS for m in layer}
    assert sorted(set(_imports()) - layered) == []


def test_no_module_imports_a_higher_layer():
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = sorted(
        (m, d)
        for m, deps in _imports().items()
        for d in deps
        if level[d] > level[m] and (m, d) not in ALLOWED_UPWARD
    )
    assert upward == []


def test_no_import_cycles():
    graph = {m: deps - {d for a, d in ALLOWED_UPWARD if a == m} for m, deps in _imports().items()}
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
        if m not in state and m not in ("", "lab", "dictionaries", "metrics", "synthetic"):
            visit(m, [m])
    # the package namespaces re-export their children and are imported by nothing inside their own package
    # except through the shims; report cycles among real modules only
    assert [c for c in cycles if not set(c) & {"", "lab", "dictionaries", "metrics", "synthetic"}] == []


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
