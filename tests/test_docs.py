"""The Python code in README.md and docs/*.md runs, so the docs cannot rot."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):  # blocks of one page share a namespace, as cells of a notebook
        exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
    if path.name == "README.md":
        assert len(blocks) >= 2
        s = namespace["cmp"].summary
        assert list(s.index) == ["rl", "sft"]
        assert s[["reuse_raw", "recombination_raw", "novelty_raw"]].sum(1).round(6).eq(1).all()
