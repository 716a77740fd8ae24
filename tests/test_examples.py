"""Every script in examples/ runs (in small mode, on a temporary cache, in a temporary folder)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
# tests/test_compare.py runs custom_metric.py already; its metrics are unregistered afterwards anyway.
REGISTERS = {"custom_metric.py": ["sharpness", "code_correlation"]}


def test_there_are_examples():
    assert "lab_walkthrough.py" in {p.name for p in EXAMPLES}


SLOW = {"real_family.py"}  # fine-tunes two models and runs `featdiff compare` in a subprocess (~30 s)


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in EXAMPLES],
    ids=[p.name for p in EXAMPLES],
)
def test_example_runs(script, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import featdiff as fd

    monkeypatch.setenv("FEATDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATDIFF_EXAMPLE_SMALL", "1")
    monkeypatch.setenv("FEATDIFF_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])  # a script's own options, not pytest's
    before = set(fd.available_metrics().index)
    try:
        namespace = runpy.run_path(str(script), run_name="__main__")
    finally:
        for name in REGISTERS.get(script.name, []):
            if name in set(fd.available_metrics().index) - before:
                fd.unregister_metric(name)
        plt.close("all")
    if script.name == "custom_metric.py":
        s = namespace["cmp"].summary
        assert "sharpness" in s.columns and s["sharpness"].between(0, 1).all()
    if script.name == "lab_walkthrough.py":
        assert (tmp_path / "out" / "report.html").is_file()
        assert (tmp_path / "cache" / "lab").is_dir()
        assert list(namespace["accuracy"]["checkpoint"]) == ["base", "rl", "sft"]
    if script.name == "real_family.py":  # a tiny Llama family through `featdiff compare` in a subprocess
        cmp = fd.Comparison.load(tmp_path / "out" / "report")
        assert list(cmp.summary.index) == ["recipes", "code"] and (tmp_path / "out" / "report" / "report.html").is_file()
        assert cmp.meta["activations"]["text"]["format"] == "jsonl" and cmp.meta["activations"]["text"]["n_tokens"] == 3000
        assert cmp.summary[["reuse_raw", "recombination_raw", "novelty_raw"]].sum(1).round(6).eq(1).all()
        assert all(last < 0.9 * first for first, last in namespace["fine_tune_loss"].values())  # the fine-tunes learned
        assert (namespace["tuned"]["code"] / "tokenizer.json").is_file()
