"""Quiet, readable output: bars write a few whole lines to a log file, dependency warnings show once."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import featdiff.core.output as output

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter with stderr piped (not a TTY), as when output goes to a log file."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=240,
    )


def test_log_bar_writes_a_line_per_tenth_not_per_update(monkeypatch):
    monkeypatch.setattr(output, "interactive", lambda: False)
    buf = io.StringIO()
    bar = output.progress_bar(total=1000, desc="work", file=buf)
    assert isinstance(bar, output.LogBar)
    for i in range(1000):
        bar.update(1)
        if i % 10 == 0:
            bar.set_postfix(i=i)  # a refresh on every tenth update
    bar.close()
    text = buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 10 <= len(lines) <= 12, lines  # start, each tenth, the end
    assert lines[0].startswith("work:   0%") and lines[-1].startswith("work: 100%")


def test_interactive_bars_are_tqdm_auto(monkeypatch):
    monkeypatch.setattr(output, "interactive", lambda: True)
    bar = output.progress_bar(total=3, file=io.StringIO())
    assert not isinstance(bar, output.LogBar)
    bar.close()


def test_train_saes_writes_a_bounded_log():
    res = _run(
        """
        import torch, featdiff as fd
        g = torch.Generator().manual_seed(0)
        acts = fd.ActivationSet.from_tensors({"base": torch.randn(512, 8, generator=g)})
        fd.train_saes(acts, k=2, d_sae=16, n_steps=400, batch_size=64)
        print("ok")
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
    bar_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("train_saes")]
    assert "\r" not in res.stderr
    assert 2 <= len(bar_lines) <= 12, res.stderr[-3000:]  # 400 steps, at most a dozen lines
    assert "100%" in bar_lines[-1] and "400/400" in bar_lines[-1]


def test_transformer_lens_deprecation_shows_once_for_several_models(tmp_path):
    res = _run(
        f"""
        import warnings
        import featdiff as fd
        from transformer_lens import HookedTransformer
        cfg = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fd.save_model(HookedTransformer(cfg), {str(tmp_path / "m")!r})
        models = [fd.load_model({str(tmp_path / "m")!r}) for _ in range(3)]
        print(len(models))
        """,
        "-W", "always::DeprecationWarning",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "3"
    # shown (not hidden), but once for three models, even under an "always" filter
    assert res.stderr.count("HookedTransformer is deprecated") == 1, res.stderr[-3000:]


def test_dependency_warnings_once_keeps_other_messages():
    output._SHOWN.discard((UserWarning, "featdiff test: first"))
    output._SHOWN.discard((UserWarning, "featdiff test: second"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with output.dependency_warnings_once():
                warnings.warn("featdiff test: first", UserWarning, stacklevel=1)
                warnings.warn("featdiff test: second", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["featdiff test: first", "featdiff test: second"]
