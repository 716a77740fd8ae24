"""The scripts a GPU session runs must not rot: device time is short, so each runs here on the CPU at tiny sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res.stdout


def test_gpu_check_runs_on_the_cpu():
    out = run_script("benchmarks/gpu_check.py", "--device", "cpu", "--small")
    assert "FAIL" not in out
    assert out.count("PASS") == 7
    assert "all checks passed" in out


@pytest.mark.parametrize("no_model", [False, True])
def test_gpu_scale_runs_on_the_cpu(no_model):
    out = run_script(
        "benchmarks/gpu_scale.py", "--device", "cpu", "--small", *(["--no-model"] if no_model else [])
    )
    assert "| train_saes (4 SAEs) |" in out and "| train_crosscoder (3 models) |" in out
    assert ("| collect (3 checkpoints) |" in out) != no_model
    assert "total" in out
