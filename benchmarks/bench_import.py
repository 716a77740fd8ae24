"""How long `import featdiff` takes beyond `import torch` (the budget: under one second more).

Run: .venv/bin/python benchmarks/bench_import.py  (each measurement in a fresh interpreter; median of 5)
"""

import statistics
import subprocess
import sys

CODE = (
    "import time; t = time.perf_counter(); import torch; t1 = time.perf_counter(); import featdiff; "
    "print(t1 - t, time.perf_counter() - t1)"
)


def main() -> None:
    runs = [
        tuple(map(float, subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()))
        for _ in range(5)
    ]
    torch_s = statistics.median(r[0] for r in runs)
    extra_s = statistics.median(r[1] for r in runs)
    print(f"import torch: {torch_s:.2f} s; import featdiff on top: {extra_s:.2f} s "
          f"(ratio {extra_s / torch_s:.2f}; budget: < 1 s more) -> {'ok' if extra_s < 1 else 'OVER BUDGET'}")


if __name__ == "__main__":
    main()
