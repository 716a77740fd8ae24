"""``fd.align`` (``solver="auto"``: dense up to 8,192 live features) against scipy's dense solver on the same
cosines, at sizes where the dense matrix fits: random dictionaries (no structure) and noisy copies (many
near-equal cosines, as between partly trained SAEs). Best of ``--repeats`` each, in alternating order, in
one process; run it under both thread settings:

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_align_dense.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_align_dense.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import align_vs_scipy  # noqa: E402  (the same timing and optimum check)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2304, 8192])
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    g = torch.Generator().manual_seed(0)
    for n in args.sizes:
        d = 576 if n <= 2304 else 512
        W = torch.randn(n, d, generator=g)
        noisy = W + 0.5 * torch.randn(n, d, generator=g)
        align_vs_scipy(f"noisy copy {n}", W, noisy[torch.randperm(n, generator=g)], args.repeats)
        align_vs_scipy(f"random {n}", W, torch.randn(n, d, generator=g), args.repeats)


if __name__ == "__main__":
    main()
