"""The scripts a GPU session runs must not rot: device time is short, so each runs here on the CPU at tiny sizes."""

from __future__ import annotations

import os
import re
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


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("no_model", [False, True])
def test_gpu_scale_runs_on_the_cpu(no_model):
    # --small: d_model 64, d_sae 256, a middle-layer hook 3 blocks deep; the model holds 2 of them
    out = run_script(
        "benchmarks/gpu_scale.py", "--device", "cpu", "--small", "--n-blocks", "2",
        *(["--no-model"] if no_model else []),
    )  # fmt: skip
    rows = {m[1]: m[3] for m in re.finditer(r"^\| (.+?) \| (-|[\d.]+) \| (.+) \|$", out, re.M)}
    assert set(rows) == {"collect (3 checkpoints)", "train_saes (1 SAE)", "train_saes (4 SAEs)",
                         "train_crosscoder (3 models)"}  # fmt: skip
    for stage in ("train_saes (1 SAE)", "train_saes (4 SAEs)", "train_crosscoder (3 models)"):
        m = re.match(r"([\d,]+) samples/s, ([\d.e-]+) TFLOP/s = (\d+)% of", rows[stage])
        assert m and _number(m[1]) > 0 and float(m[2]) > 0, rows[stage]
    hours = dict(re.findall(r"^  (collection|5 SAEs|crosscoder|total) +(.+)$", out, re.M))
    assert set(hours) == {"collection", "5 SAEs", "crosscoder", "total"}
    dict_h = [float(hours[k].removesuffix(" h")) for k in ("5 SAEs", "crosscoder")]
    sae_rate = _number(rows["train_saes (4 SAEs)"].split(" samples/s")[0])
    cc_rate = _number(rows["train_crosscoder (3 models)"].split(" samples/s")[0])
    assert abs(dict_h[0] - 5 * 50e6 / sae_rate / 3600) <= 0.01 * dict_h[0]  # 5 SAEs at the 4-SAE rate
    assert abs(dict_h[1] - 50e6 / cc_rate / 3600) <= 0.01 * dict_h[1]
    if no_model:
        assert rows["collect (3 checkpoints)"] == "not measured (--no-model)"
        assert hours["collection"] == "not measured"
        assert hours["total"].endswith(" h (the dictionaries only)")
        assert abs(float(hours["total"].split()[0]) - sum(dict_h)) <= 0.02 * sum(dict_h)
    else:
        collect = rows["collect (3 checkpoints)"]
        m = re.match(r"([\d,]+) tokens/s through 3 blocks \(([\d,]+) measured through 2\)", collect)
        assert m, collect
        full, measured = _number(m[1]), _number(m[2])
        assert abs(full - measured * 2 / 3) <= 1  # the full depth's rate: 2 of 3 blocks measured
        coll_h = float(hours["collection"].removesuffix(" h"))
        assert abs(coll_h - 150e6 / full / 3600) <= 0.01 * coll_h  # 50M tokens x 3 checkpoints
        total = float(hours["total"].removesuffix(" h"))
        assert abs(total - coll_h - sum(dict_h)) <= 0.02 * total
    assert "gpu_scale finished in" in out
