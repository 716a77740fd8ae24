"""How many training firings a planted feature needs before the default SAE route learns it: the `kept`
scenario's base (d_in 64, 64 atoms) with firing frequencies log-spaced from 2e-4 to 0.12, 50,000 training
tokens, `fd.train_saes` at 1x and 4x the atom count; per atom, its expected firings and the best cosine of a
trained decoder row (learned: >= 0.7). The table is in docs/metrics.md ("The scenario library").

    OMP_NUM_THREADS=1 python benchmarks/learnability.py --seeds 0 1 --widths 1x 4x      # ~4 min
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import torch

import featdiff as fd
from featdiff.synthetic.scenarios import make_scenario

BINS = [0, 25, 50, 100, 200, 400, 800, np.inf]


def run(seed: int, width: str, n_train: int = 50_000) -> pd.DataFrame:
    s = make_scenario("kept", d_in=64, n_atoms=64, k=4, seed=seed)
    rng = np.random.default_rng(100 + seed)
    f = np.exp(rng.uniform(np.log(2e-4), np.log(0.12), size=s.n_atoms))
    f *= 4 / f.sum() if f.sum() > 4 else 1.0  # at most k = 4 atoms active per token on average
    s.frequencies = f
    train = s.sample(n_train, seed=seed + 1)
    base = fd.ActivationSet({"base": train["base"]}, hook="planted")
    sae = fd.train_saes(base, d_sae=s.widths[width], k=4, seed=seed, progress=False)["base"]
    W = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    cos = (s.dictionaries["base"] @ W.T).max(1).values.numpy()
    return pd.DataFrame({"seed": seed, "width": width, "firings": n_train * f, "cosine": cos})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--widths", nargs="*", default=["1x", "4x"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the short runs' settling warnings
    d = pd.concat([run(seed, w) for seed in args.seeds for w in args.widths], ignore_index=True)
    d["learned"] = d.cosine >= 0.7
    d["firings_bin"] = pd.cut(d.firings, BINS)
    print(d.groupby(["width", "firings_bin"], observed=True).learned.agg(["mean", "size"]).round(2).to_string())


if __name__ == "__main__":
    main()
