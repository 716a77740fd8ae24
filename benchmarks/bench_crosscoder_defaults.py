"""Does train_crosscoder, with its defaults, find planted shared and checkpoint-specific atoms? (run by hand)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_crosscoder_defaults.py
    .venv/bin/python benchmarks/bench_crosscoder_defaults.py --d-in 16 32 --seeds 0 --train '{"k": 32}'

For each d_in and seed it plants activations with ``plant_shared_specific`` (three checkpoints base / rl /
sft; ``d_in`` shared atoms, ``max(2, d_in // 8)`` atoms specific to each checkpoint, about
``max(3, d_in / 8)`` atoms active per token, shared atoms rotated by 0.1 per checkpoint, noise 0.02,
16,384 tokens), trains ``train_crosscoder(acts, seed=seed)`` with the defaults (plus ``--train``
overrides) and prints, per planted category, the fraction of atoms recovered (``planted_recovery``: the
best-matching decoder row has cosine >= 0.9 and the right MAS category), with the run's diagnostics.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.synthetic.crosscoder import plant_shared_specific, planted_recovery


def plant(d_in: int, seed: int, n_tokens: int = 16384, activity: float | None = None):
    n_spec = max(2, d_in // 8)
    return plant_shared_specific(
        names=("base", "rl", "sft"),
        d_in=d_in,
        n_shared=d_in,
        n_specific={"base": n_spec, "rl": n_spec, "sft": n_spec},
        k=activity if activity is not None else max(3.0, d_in / 8),
        n_tokens=n_tokens,
        rotation=0.1,
        noise=0.02,
        seed=seed,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--activity", type=float, default=None, help="planted atoms per token (default d_in/8, >= 3)"
    )
    ap.add_argument("--train", type=json.loads, default={}, help="train_crosscoder overrides, as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cols = [
        "d_in",
        "seed",
        "shared",
        "base",
        "rl",
        "sft",
        "k",
        "n_steps",
        "dead_frac",
        "settled",
        "warnings",
        "s",
    ]
    print(" ".join(f"{c:>8}" for c in cols), flush=True)
    worst = 1.0
    for d_in in args.d_in:
        for seed in args.seeds:
            acts, truth = plant(d_in, seed, activity=args.activity)
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cc = train_crosscoder(acts, seed=seed, progress=False, **args.train)
            elapsed = time.perf_counter() - t
            rec = planted_recovery(cc, truth)
            worst = min(worst, *rec.values())
            dg = cc.diagnostics
            row = [d_in, seed, *(f"{rec[c]:.2f}" for c in ("shared", "base", "rl", "sft")), cc.cfg.k]
            row += [
                dg["n_steps"],
                f"{dg['dead_fraction']:.2f}",
                dg["loss_settled"],
                len(caught),
                f"{elapsed:.0f}",
            ]
            print(" ".join(f"{v!s:>8}" for v in row), flush=True)
    print(f"worst category recovery: {worst:.2f}")


if __name__ == "__main__":
    main()
