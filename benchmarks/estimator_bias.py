"""Bias and interval coverage of the noise-floor estimators where the floor is low (real models: q ~ 0.15).

A decoder-level simulation, no SAE training: a set of true features (random unit directions in d_in
dimensions); the reference and N replicas each learn each base feature with probability q (plus a few junk
rows), a learned row being a noisy copy of the feature (cosine ``--copy-cosine`` to it, ~0.9 between two
copies); a target with true reuse r, recombination c and novelty 1 - r - c (its recombined features are
combinations of 2-3 base features with coefficients in [0.8, 1], its novel ones new directions) learns its
own features with the same q. A recombination has no component within cosine 0.65 (two components of
similar weight are within 0.71 of each: a reuse by the 0.7 threshold, so in effect all have three). The dictionaries go through the real code path,
``featdiff.compare_dictionaries(saes, replicas=...)`` (decoder-only: no activations, so every row is live),
once; its call of ``summarize_uncertainty`` is then re-run with each estimator (the same profiles, union
flags and floors; the estimator is all that ``CompareConfig(estimator=...)`` changes).

Printed per estimator, q and N (over ``--seeds`` seeds): the mean error (bias) of reuse and recombination
against the truth, and the share of seeds whose 90 % interval covers the truth.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/estimator_bias.py            # ~10 min, 2 cores
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/estimator_bias.py --qs 0.5 --ns 2 --seeds 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import featdiff as fd
from featdiff.comparison import replicas as _replicas
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.metrics.uncertainty import ESTIMATORS


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _copy(rng: np.random.Generator, f: np.ndarray, cosine: float) -> np.ndarray:
    """A noisy copy of unit rows ``f``: cosine ``cosine`` to each."""
    noise = rng.standard_normal(f.shape)
    noise -= (noise * f).sum(-1, keepdims=True) * f
    return cosine * f + np.sqrt(1 - cosine**2) * _unit(noise)


def simulate(q, n_replicas, truth=(0.6, 0.15, 0.25), n_learned=300, d_in=128, junk=0.05, copy_cosine=0.95,
             seed=0) -> tuple[dict, list]:
    """(dictionaries {"base", "target"}, reference replicas): ``n_learned`` expected learned features per
    dictionary (the true feature count is n_learned / q) and ``junk`` x n_learned junk rows each."""
    rng = np.random.default_rng(seed)
    n_true = int(round(n_learned / q))
    base = _unit(rng.standard_normal((n_true, d_in)))
    r, c, _ = truth
    n_r, n_c = int(round(r * n_true)), int(round(c * n_true))
    n_n = n_true - n_r - n_c
    shared = base[rng.choice(n_true, n_r, replace=False)]
    recombined = []
    while len(recombined) < n_c:  # as the planted ones: no component within cosine 0.65 (else it is a reuse)
        m = int(rng.choice([2, 3]))
        comps = base[rng.choice(n_true, m, replace=False)]
        v = _unit(rng.uniform(0.8, 1.0, m) @ comps)
        if (comps @ v).max() < 0.65:
            recombined.append(v)
    own = np.concatenate([shared, _unit(np.asarray(recombined).reshape(-1, d_in)),
                          _unit(rng.standard_normal((n_n, d_in)))])

    def learn(features):
        kept = features[rng.random(len(features)) < q]
        rows = np.concatenate([_copy(rng, kept, copy_cosine),
                               _unit(rng.standard_normal((int(round(junk * n_learned)), d_in)))])
        return sae_from_dictionary(torch.tensor(rows[rng.permutation(len(rows))], dtype=torch.float32), k=4)

    saes = {"base": learn(base), "target": learn(own)}
    return saes, [learn(base) for _ in range(n_replicas)]


def _readings(saes, reps, estimators) -> dict:
    """{estimator: summary columns of the target}: ``compare_dictionaries`` once (the real profiles, union
    flags and floors), then its own call of ``summarize_uncertainty`` re-run with each estimator."""
    calls = []
    real = _replicas.summarize_uncertainty

    def spy(*args):
        calls.append(args)
        return real(*args)

    _replicas.summarize_uncertainty = spy
    try:
        fd.compare_dictionaries(saes, replicas=reps, metrics=[], progress=False)
    finally:
        _replicas.summarize_uncertainty = real
    (args,) = calls  # (target, replicas, target_replicas, q_target, union_null, transfer, fve, estimator, ...)
    return {est: real(*args[:7], est, *args[8:]) for est in estimators}


def run(qs, ns, seeds, truth, n_learned, copy_cosine, estimators=ESTIMATORS) -> pd.DataFrame:
    rows = []
    for q in qs:
        for n in ns:
            for seed in seeds:
                t0 = time.perf_counter()
                saes, reps = simulate(q, n, truth, n_learned, copy_cosine=copy_cosine, seed=seed)
                readings = _readings(saes, reps, estimators)
                for est, s in readings.items():
                    row = {"estimator": est, "q": q, "n_replicas": n, "seed": seed,
                           "seconds": time.perf_counter() - t0, "reuse_floor": s["reuse_floor"]}
                    for col, t in zip(("reuse", "recombination", "novelty"), truth, strict=True):
                        row[col] = s[col]
                        row[f"{col}_error"] = s[col] - t
                        row[f"{col}_covered"] = bool(s[f"{col}_lo"] - 1e-9 <= t <= s[f"{col}_hi"] + 1e-9)
                    row["saturated"] = bool(s["saturated"])
                    rows.append(row)
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["estimator", "n_replicas", "q"])
    return pd.DataFrame({
        "reuse_bias": g["reuse_error"].mean(),
        "reuse_coverage": g["reuse_covered"].mean(),
        "recombination_bias": g["recombination_error"].mean(),
        "recombination_coverage": g["recombination_covered"].mean(),
        "saturated": g["saturated"].mean(),
        "n": g.size(),
    }).round(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qs", type=float, nargs="+", default=[0.1, 0.15, 0.25, 0.5, 0.75, 0.95])
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--truth", type=float, nargs=3, default=[0.6, 0.15, 0.25], help="reuse recombination novelty")
    ap.add_argument("--n-learned", type=int, default=300, help="expected learned features per dictionary")
    ap.add_argument("--copy-cosine", type=float, default=0.95, help="cosine of a learned row to its feature")
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    df = run(args.qs, args.ns, range(args.seeds), tuple(args.truth), args.n_learned, args.copy_cosine,
             args.estimators)
    if args.csv:
        df.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table(df).to_string())


if __name__ == "__main__":
    main()
