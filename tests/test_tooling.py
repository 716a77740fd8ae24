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
        [ruff, "check", "src", "tests", "examples", "benchmarks"], cwd=ROOT, capture_output=True, text=True
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
