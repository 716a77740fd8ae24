"""Time `featdiff demo` from nothing (fresh cache) and with the lab cached, against its budgets.

Run: python benchmarks/bench_demo.py [--small] [--no-crosscoder] [--keep]

Each run is a fresh process (`python -m featdiff demo --quiet`), as a user would start it, so imports count.
Budgets: 5 minutes from nothing, 90 s with the lab cached. Baseline measured in the same run: the lab
build alone (pretrain + SFT + GRPO + evaluation, the timings the cold run records in lab.json), i.e. the
part of a cold run that caching removes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_COLD_S = 300.0
BUDGET_WARM_S = 90.0


def run_demo(out: Path, cache: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "featdiff", "demo", "--quiet", "--out", str(out), "--cache-dir", str(cache)]
    t = time.perf_counter()
    proc = subprocess.run(cmd + extra, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"featdiff demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the small lab (checks the script, not the budget)")
    p.add_argument("--no-crosscoder", action="store_true", help="time the demo without the crosscoder view")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (cache and report)")
    args = p.parse_args()
    extra = (["--small"] if args.small else []) + (["--no-crosscoder"] if args.no_crosscoder else [])

    root = Path(tempfile.mkdtemp(prefix="featdiff-bench-"))
    cache, out = root / "cache", root / "report"
    try:
        cold = run_demo(out, cache, extra)
        warm = run_demo(out, cache, extra)
        (lab,) = (cache / "lab").iterdir()
        timings = json.loads((lab / "lab.json").read_text())["timings"]
        build = sum(timings.values())
        report_ok = (out / "report.html").is_file()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"featdiff demo {' '.join(extra)} on {os.cpu_count()} CPUs ({sys.platform}); report written: {report_ok}"
    )
    print(
        f"  lab build alone (baseline)  {build:7.1f} s   "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
    print(
        f"  from nothing (fresh cache)  {cold:7.1f} s   {cold / BUDGET_COLD_S:5.2f} x budget {BUDGET_COLD_S:.0f} s"
        f"   {cold / build:5.2f} x lab build"
    )
    print(
        f"  lab cached                  {warm:7.1f} s   {warm / BUDGET_WARM_S:5.2f} x budget {BUDGET_WARM_S:.0f} s"
        f"   {warm / build:5.2f} x lab build"
    )
    print(f"  saved by the cache          {cold - warm:7.1f} s   {(cold - warm) / build:5.2f} x lab build")
    if not args.small:
        ok = cold <= BUDGET_COLD_S and warm <= BUDGET_WARM_S
        print("  within budget" if ok else "  OVER BUDGET")


if __name__ == "__main__":
    main()
