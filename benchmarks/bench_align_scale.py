"""Alignment of large dictionaries: featdiff's sparse, certified solver against scipy's dense one (by hand).

    .venv/bin/python benchmarks/bench_align_scale.py [--sizes 2048 8192 32768] [--d-in 4096]

Each size runs in a fresh process (so peak memory is that size's). Two d_sae x d_in dictionaries, the target
a noisy permutation of the reference (as a post-trained SAE is of its base). Where the dense matrix fits
(<= 8192) the same run also times scipy's linear_sum_assignment on it and prints featdiff's total as a
fraction of the dense optimum; every size prints whether the sparse optimum was certified exact.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, d_in: int, noise: float) -> dict:
    import numpy as np
    import torch

    from featdiff.alignment.matching import align

    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(n, d_in, generator=g), dim=1)
    perm = torch.randperm(n, generator=g)
    tgt = torch.nn.functional.normalize(ref[perm] + noise * torch.randn(n, d_in, generator=g) / d_in**0.5, dim=1)
    t = time.perf_counter()
    al = align(ref, tgt, solver="sparse")
    out = {"n": n, "d_in": d_in, "sparse_s": time.perf_counter() - t, "exact": bool(al.exact)}
    out["total"] = float(np.nansum(al.similarity))
    if n <= 8192:
        from scipy.optimize import linear_sum_assignment

        t = time.perf_counter()
        sim = (tgt @ ref.T).double().numpy()
        r, c = linear_sum_assignment(sim, maximize=True)
        out["dense_s"] = time.perf_counter() - t
        out["dense_total"] = float(sim[r, c].sum())
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 32768])
    ap.add_argument("--d-in", type=int, default=4096)
    ap.add_argument("--noise", type=float, default=1.0, help="noise norm relative to a unit decoder row")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.d_in, args.noise)))
        return
    print(f"d_in={args.d_in}, target = noisy permutation of the reference (noise {args.noise})")
    for n in args.sizes:
        res = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--d-in", str(args.d_in), "--noise", str(args.noise)],
            capture_output=True, text=True, check=True,
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        line = f"{n:6d} x {n:<6d} sparse {r['sparse_s']:7.1f} s  exact={r['exact']}  peak {r['peak_rss_gb']:.2f} GB"
        if "dense_s" in r:
            line += (
                f"  | scipy dense {r['dense_s']:6.1f} s  (sparse/dense time {r['sparse_s'] / r['dense_s']:.2f}, "
                f"total {r['total'] / r['dense_total']:.6f} of the dense optimum)"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
